package ebpf

import (
	"context"
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
	ctx              context.Context // nil: no context to watch
	client, upstream *net.TCPConn
	peeked           int64
	done             func(sent, received int64, err error)

	id       uint64
	cc, uc   uint64 // socket cookies, kernel path only
	inMap    bool   // the sockets are in sock_hash (until closed)
	inKernel bool   // watched by the kernel goroutine; guarded by kernel.mu
	dirs     [2]kdir
	u        [2]*udir // splice-path directions, once on that path

	userSent, userRecv atomic.Int64
	userLeft           atomic.Int32
	ended              atomic.Bool
	once               sync.Once
}

// kdir is one direction's kernel-path state, owned by the watcher.
type kdir struct {
	src, dst    *net.TCPConn
	srcC, dstC  uint64
	side        int         // 0 client to upstream, 1 upstream to client
	st          forwardStat // the verdict's counters at the last scan; guarded by kernel.mu
	base        uint64      // dst bytes_acked+SIOCOUTQ at insertion
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
		if f.pk != nil && (p.u[0] != nil || p.u[1] != nil) {
			f.pk.forget(p)
		}
		f.mu.Lock()
		delete(f.live, p)
		f.unwatchCtx(p)
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

// kick makes the kernel run the verdict over bytes that arrived on the
// socket after drain and before insertion (pitfall 4): setting
// SO_RCVLOWAT calls tcp_data_ready, which is the psock's data_ready after
// insertion. Taking the socket lock also makes it a
// barrier: every verdict that started before it has finished.
func kick(c *net.TCPConn) error {
	return control(c, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1)
	})
}

// established reports whether c is still in TCP_ESTABLISHED, the only
// connected state sock_hash accepts.
func established(c *net.TCPConn) bool {
	var state uint8
	err := control(c, func(fd int) error {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			state = ti.State
		}
		return err
	})
	return err == nil && state == unix.BPF_TCP_ESTABLISHED
}

// drainMax bounds what drain moves before insertion: a pair with more
// queued than that is a bulk flow already, and user space keeps it.
const drainMax = 4 * bufSize

// drain moves every byte already queued on src to dst from user space,
// before src enters sock_hash, and reports whether it met src's EOF.
//
// Why not let the kick push them through the verdict: on Linux 6.18 the
// verdict is fed by tcp_read_skb, which hands over whole skbs and ignores
// copied_seq. When the caller read part of the head skb (the ClientHello,
// read with exact lengths, shares one skb with the payload the client sent
// in the same write), the bytes already read are forwarded a second time
// (measured: the hello came back twice through an echo upstream). Reading
// until EAGAIN leaves no skb partly read; bytes that come later arrive in
// new skbs, which the verdict sees whole and only once.
func (f *Forwarder) drain(src, dst *net.TCPConn, count *atomic.Int64) (eof bool, err error) {
	b := bufPool.Get().(*[bufSize]byte)
	defer bufPool.Put(b)
	for moved := 0; ; {
		if moved >= drainMax {
			// The last read may have stopped inside an skb: the pair
			// must not enter the map now.
			return false, fmt.Errorf("%w: more than %d bytes queued before insertion", errFallback, drainMax)
		}
		var n int
		var rerr error
		if err := control(src, func(fd int) error {
			n, _, rerr = unix.Recvfrom(fd, b[:], unix.MSG_DONTWAIT)
			return nil
		}); err != nil {
			return false, fmt.Errorf("drain queued bytes: %w", err)
		}
		switch {
		case rerr == unix.EINTR:
			continue
		case rerr == unix.EAGAIN:
			return false, nil
		case rerr != nil:
			return false, fmt.Errorf("drain queued bytes: read: %w", rerr)
		case n == 0:
			return true, nil
		}
		if _, err := dst.Write(b[:n]); err != nil {
			return false, fmt.Errorf("drain queued bytes: write: %w", err)
		}
		moved += n
		count.Add(int64(n))
		f.userBytes.Add(int64(n))
	}
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
