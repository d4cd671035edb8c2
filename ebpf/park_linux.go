package ebpf

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// parker holds the directions of user-path pairs that have nothing to
// read: each sits in one private epoll set (one-shot) with no goroutine,
// and gets a goroutine again when its socket turns readable. So an idle
// pair on the splice path costs its two sockets and a little heap, as in
// the kernel path, not two parked goroutines.
type parker struct {
	f *Forwarder
	wakeEpoll

	mu     sync.Mutex
	closed bool
	next   uint64
	dirs   map[uint64]*udir
	done   chan struct{}
}

func newParker(f *Forwarder) (*parker, error) {
	w, err := newWakeEpoll()
	if err != nil {
		return nil, err
	}
	pk := &parker{f: f, wakeEpoll: w, dirs: make(map[uint64]*udir), done: make(chan struct{})}
	go pk.run()
	return pk, nil
}

// stop ends the parker's goroutine; directions still parked stay so until
// their pairs are aborted.
func (pk *parker) stop() {
	pk.mu.Lock()
	if pk.closed {
		pk.mu.Unlock()
		return
	}
	pk.closed = true
	pk.mu.Unlock()
	pk.wake()
	<-pk.done
	pk.wakeEpoll.close()
}

func (pk *parker) run() {
	defer close(pk.done)
	events := make([]unix.EpollEvent, 128)
	var ready []*udir
	for {
		n, err := unix.EpollWait(pk.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			pk.f.o.Logger.Error("user-path parker stopped", "err", err)
			return
		}
		pk.mu.Lock()
		if pk.closed {
			pk.mu.Unlock()
			return
		}
		for i := 0; i < n; i++ {
			id, _ := getID(&events[i])
			if id == 0 {
				pk.drainWake()
				continue
			}
			if d := pk.dirs[id]; d != nil {
				ready = append(ready, d)
			}
		}
		// Under pk.mu, so Close cannot be waiting on f.wg yet (stop
		// sets closed under the same lock first).
		pk.f.wg.Add(len(ready))
		pk.mu.Unlock()
		for _, d := range ready {
			go d.run()
		}
		clear(ready)
		ready = ready[:0]
	}
}

// park arms d's socket in the epoll set and reports whether it did; the
// caller's goroutine must then end without touching d. The lock orders
// everything the goroutine wrote to d before the goroutine that resumes d.
func (pk *parker) park(d *udir) bool {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.closed {
		return false
	}
	if d.id == 0 {
		pk.next++
		d.id = pk.next
		pk.dirs[d.id] = d
	}
	d.op = unix.EPOLL_CTL_MOD
	if !d.armed {
		d.op = unix.EPOLL_CTL_ADD
	}
	d.ev = unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	putID(&d.ev, d.id, 0)
	d.ctlErr = nil
	if err := d.ss.rc.Control(d.ctl); err != nil || d.ctlErr != nil {
		return false
	}
	d.armed = true
	return true
}

// forget drops the directions of an ended pair; closing its sockets took
// them out of the epoll set.
func (pk *parker) forget(p *pair) {
	pk.mu.Lock()
	for _, d := range p.u {
		if d != nil && d.id != 0 {
			delete(pk.dirs, d.id)
		}
	}
	pk.mu.Unlock()
}

// udir is one direction of a pair on the splice path (sockets outside the
// sockmap). Its callbacks are built once, so a chunk allocates nothing.
type udir struct {
	p        *pair
	src, dst *net.TCPConn
	count    *atomic.Int64
	ss       *sock
	sp       *splicer

	id     uint64 // in the parker, once parked
	armed  bool
	op     int
	ev     unix.EpollEvent
	ctlErr error
	ctl    func(fd uintptr)

	buf     []byte
	n       int
	rerr    unix.Errno
	tryRead func(fd uintptr) bool
}

func (p *pair) newUdir(i int) (*udir, error) {
	d := &udir{p: p, src: p.client, dst: p.upstream, count: &p.userRecv}
	if i == 1 {
		d.src, d.dst, d.count = p.upstream, p.client, &p.userSent
	}
	var err error
	if d.ss, err = newSock(d.src); err != nil {
		return nil, err
	}
	dstRC, err := d.dst.SyscallConn()
	if err != nil {
		return nil, err
	}
	d.sp = newSplicer(p.f, d.ss.rc, dstRC)
	d.ctl = func(fd uintptr) { d.ctlErr = unix.EpollCtl(d.p.f.pk.epfd, d.op, int(fd), &d.ev) }
	// Returning true: a read that would block reports EAGAIN instead of
	// parking the goroutine on Go's netpoller.
	d.tryRead = func(fd uintptr) bool {
		d.n, d.rerr = 0, 0
		n, _, e := unix.Syscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(d.buf))), uintptr(len(d.buf)))
		d.n, d.rerr = int(n), e
		return true
	}
	return d, nil
}

// run forwards d until its source ends, it fails, or it has nothing to
// read: then it parks d and its goroutine ends. The caller did f.wg.Add.
func (d *udir) run() {
	defer d.p.f.wg.Done()
	for {
		again, err := d.pump()
		if err != nil {
			d.p.finish(err, true)
			return
		}
		if !again {
			d.p.dirDone(d.dst)
			return
		}
		if d.p.ended.Load() {
			return
		}
		// A direction in use waits on the netpoller, which wakes it
		// faster than the parker would; only one quiet for parkAfter
		// gives its goroutine up.
		_ = d.src.SetReadDeadline(time.Now().Add(parkAfter))
		err = d.ss.waitReadable()
		_ = d.src.SetReadDeadline(time.Time{})
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			d.p.finish(err, true)
			return
		}
		if pk := d.p.f.pk; pk != nil && pk.park(d) {
			return
		}
		// No parker (or the socket is gone): wait on the netpoller.
		if err := d.ss.waitReadable(); err != nil {
			d.p.finish(err, true)
			return
		}
	}
}

// parkAfter is how long a direction on the splice path keeps its
// goroutine with nothing to read.
const parkAfter = 250 * time.Millisecond

// pump moves what src has now: large amounts with splice(2), small ones
// with read/write. It returns again when src has nothing more for now,
// nil at src's EOF.
func (d *udir) pump() (again bool, err error) {
	f := d.p.f
	for {
		if avail := d.ss.queued(); avail >= spliceMin {
			n, err := d.sp.once(avail)
			d.count.Add(n)
			f.userBytes.Add(n)
			if err != nil {
				return false, err
			}
			continue
		}
		b := bufPool.Get().(*[bufSize]byte)
		d.buf = b[:]
		if err := d.ss.rc.Read(d.tryRead); err != nil {
			bufPool.Put(b)
			return false, err
		}
		n, e := d.n, d.rerr
		switch {
		case e == unix.EAGAIN:
			bufPool.Put(b)
			return true, nil
		case e == unix.EINTR:
			bufPool.Put(b)
			continue
		case e != 0:
			bufPool.Put(b)
			return false, e
		case n == 0:
			bufPool.Put(b)
			return false, nil
		}
		_, werr := d.dst.Write(b[:n])
		bufPool.Put(b)
		d.buf = nil
		if werr != nil {
			return false, werr
		}
		d.count.Add(int64(n))
		f.userBytes.Add(int64(n))
	}
}
