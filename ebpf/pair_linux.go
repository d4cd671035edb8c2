package ebpf

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// pair is one client and its upstream. dirs[0] is client to upstream,
// dirs[1] upstream to client.
type pair struct {
	f                *Forwarder
	client, upstream *net.TCPConn
	peeked           int64
	done             func(sent, received int64, err error)

	id       uint64
	cc, uc   uint64 // socket cookies, kernel path only
	inMap    bool   // the sockets are in sock_hash (until closed)
	inKernel bool   // watched by the kernel goroutine; guarded by kernel.mu
	dirs     [2]kdir

	userSent, userRecv atomic.Int64
	userLeft           atomic.Int32
	ended              atomic.Bool
	once               sync.Once
}

// kdir is one direction's kernel-path state, owned by the watcher.
type kdir struct {
	src, dst    *net.TCPConn
	srcC, dstC  uint64
	base        uint64 // dst bytes_acked+SIOCOUTQ at insertion
	eof, shut   bool
	lastRed     uint64
	lastTaken   uint64
	winStart    time.Time
	winRed      uint64
	bulkWindows int
}

func (p *pair) closeConns(reset bool) {
	if reset {
		_ = p.client.SetLinger(0)
		_ = p.upstream.SetLinger(0)
	}
	_ = p.client.Close()
	_ = p.upstream.Close()
}

// abort ends the pair at once with err, resetting both sides.
func (p *pair) abort(err error) { p.finish(err, true) }

// finish ends the pair exactly once: counters read, map entries and fds
// released, done called.
func (p *pair) finish(err error, reset bool) {
	p.once.Do(func() {
		p.ended.Store(true)
		f := p.f
		var kSent, kRecv uint64
		wasKernel := false
		if f.k != nil && p.inMap {
			wasKernel = f.k.remove(p)
			kRecv = f.k.stat(p.cc).Redirected
			kSent = f.k.stat(p.uc).Redirected
		}
		p.closeConns(reset)
		if f.k != nil && p.inMap {
			f.k.forget(p, kSent, kRecv)
		}
		if p.inMap && wasKernel {
			f.activeKernel.Add(-1)
		} else {
			f.activeUser.Add(-1)
		}
		f.mu.Lock()
		delete(f.live, p)
		f.mu.Unlock()
		sent := int64(kSent) + p.userSent.Load()
		recv := p.peeked + int64(kRecv) + p.userRecv.Load()
		p.done(sent, recv, err)
	})
}

// control runs fn on the conn's fd while the conn holds it open, so a
// concurrent Close can never make fn act on a reused descriptor.
func control(c *net.TCPConn, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// taken returns bytes_acked + SIOCOUTQ: every byte the socket's send
// queue has ever taken (SOCKMAP.md pitfall 2).
func taken(c *net.TCPConn) (uint64, error) {
	var v uint64
	err := control(c, func(fd int) error {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return fmt.Errorf("TCP_INFO: %w", err)
		}
		outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err != nil {
			return fmt.Errorf("SIOCOUTQ: %w", err)
		}
		v = ti.Bytes_acked + uint64(outq)
		return nil
	})
	return v, err
}

func inq(c *net.TCPConn) (int, error) {
	var n int
	err := control(c, func(fd int) (err error) {
		n, err = unix.IoctlGetInt(fd, unix.SIOCINQ)
		return err
	})
	return n, err
}

func sockErr(c *net.TCPConn) error {
	var serr int
	err := control(c, func(fd int) (err error) {
		serr, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		return err
	})
	if err != nil {
		return err
	}
	if serr != 0 {
		return unix.Errno(serr)
	}
	return nil
}

// kick makes the kernel run the verdict over bytes that were queued on
// the socket before insertion (pitfall 4) without user space consuming
// them: setting SO_RCVLOWAT calls tcp_data_ready, which is the psock's
// data_ready after insertion. Taking the socket lock also makes it a
// barrier: every verdict that started before it has finished.
func kick(c *net.TCPConn) error {
	return control(c, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1)
	})
}

var (
	errFallback = errors.New("kernel path unavailable for this pair")
	errInMap    = errors.New("pair half in the kernel path: user space copies")
)

// gone reports a socket that was reset or fully closed by its peer.
func gone(c *net.TCPConn) bool {
	var state uint8
	err := control(c, func(fd int) error {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			state = ti.State
		}
		return err
	})
	return err != nil || state == unix.BPF_TCP_CLOSE
}
