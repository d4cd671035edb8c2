package proxy

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func reusePort(rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		if serr == nil {
			// Wake the accept only once the client has sent something: the
			// ClientHello usually arrives with it.
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// idleFor returns how long neither socket has received data, from the
// kernel's own TCP_INFO clocks, so the forwarding path needs no timestamp
// per chunk.
func idleFor(a, b *net.TCPConn) time.Duration {
	return min(lastRecv(a), lastRecv(b))
}

func lastRecv(c *net.TCPConn) time.Duration {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var ms uint32
	ok := false
	_ = rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			ms, ok = info.Last_data_recv, true
		}
	})
	if !ok {
		return 0 // closed or unknown: never count as idle
	}
	return time.Duration(ms) * time.Millisecond
}

// bytesReceived reads how many bytes each socket has received, from
// TCP_INFO: bytes from the client, and from the upstream (bound for the
// client).
func bytesReceived(client, upstream *net.TCPConn) (fromClient, fromUpstream int64, ok bool) {
	a, ok1 := tcpBytesReceived(client)
	b, ok2 := tcpBytesReceived(upstream)
	return a, b, ok1 && ok2
}

func tcpBytesReceived(c *net.TCPConn) (int64, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int64
	ok := false
	_ = rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			n, ok = int64(info.Bytes_received), true
		}
	})
	return n, ok
}
