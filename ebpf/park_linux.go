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
// pair on the user path costs its two sockets and a little heap, as in
// the kernel path, not two parked goroutines. Directions of pairs still
// in the sockmap are also looked at every maxRecheck, since their
// wakeups come from the psock (see minRecheck).
type parker struct {
	f *Forwarder
	wakeEpoll

	mu          sync.Mutex
	closed      bool
	next        uint64
	dirs        map[uint64]*udir
	inMap       int // parked directions of pairs in the sockmap
	lastRecheck time.Time
	done        chan struct{}
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
	var ready, stale []*udir
	timeout := -1
	for {
		n, err := unix.EpollWait(pk.epfd, events, timeout)
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
			// A direction resumed by a recheck may still be armed: its
			// event then finds it running and is ignored.
			if d := pk.dirs[id]; d != nil && pk.unpark(d) {
				ready = append(ready, d)
			}
		}
		if pk.inMap > 0 && time.Since(pk.lastRecheck) >= maxRecheck {
			pk.lastRecheck = time.Now()
			for _, d := range pk.dirs {
				if d.inMap && d.parked {
					stale = append(stale, d)
				}
			}
		}
		pk.resume(ready)
		pk.mu.Unlock()
		// Kicks take each socket's lock: not under pk.mu.
		ready = ready[:0]
		by := time.Now().Add(-wakeupSlack)
		lost := 0
		for _, d := range stale {
			if ok, l := recheck(d.src, by); ok {
				ready = append(ready, d)
				if l {
					lost++
				}
			}
		}
		if len(ready) > 0 {
			pk.mu.Lock()
			if !pk.closed {
				kept := ready[:0]
				for _, d := range ready {
					if pk.unpark(d) {
						kept = append(kept, d)
					}
				}
				pk.f.lostWakeups.Add(int64(lost))
				pk.resume(kept)
			}
			pk.mu.Unlock()
		}
		clear(stale)
		stale = stale[:0]
		clear(ready)
		ready = ready[:0]
		pk.mu.Lock()
		timeout = -1
		if pk.inMap > 0 {
			timeout = int(max(time.Until(pk.lastRecheck.Add(maxRecheck)), time.Millisecond) / time.Millisecond)
		}
		pk.mu.Unlock()
	}
}

// unpark marks a parked d as running and reports whether it was parked.
// Called with pk.mu held.
func (pk *parker) unpark(d *udir) bool {
	if !d.parked {
		return false
	}
	d.parked = false
	if d.inMap {
		pk.inMap--
	}
	return true
}

// resume gives each of ds a goroutine again. Called with pk.mu held, so
// Close cannot be waiting on f.wg yet (stop sets closed under the same
// lock first).
func (pk *parker) resume(ds []*udir) {
	pk.f.wg.Add(len(ds))
	for _, d := range ds {
		go d.run()
	}
}

// recheck kicks the verdict over anything TCP still holds on c, a socket
// in the sockmap whose wait ran out, and reports whether bytes or EOF wait
// on it. They count as a lost wakeup only if TCP received the last data
// before by (TCP_INFO's last_data_recv, in ms): bytes that came just as
// the wait ran out, before the goroutine ran, are a race, not a loss.
func recheck(c *net.TCPConn, by time.Time) (ready, lost bool) {
	_ = kick(c)
	var ago uint32
	_ = control(c, func(fd int) error {
		ready = peekByte(uintptr(fd)) == 0
		if ready {
			if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				ago = ti.Last_data_recv
			}
		}
		return nil
	})
	if !ready {
		return false, false
	}
	return true, time.Now().Add(-time.Duration(ago) * time.Millisecond).Before(by)
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
	d.parked = true
	if d.inMap {
		if pk.inMap == 0 {
			// The first one: rechecks start now, and the goroutine
			// must learn its new timeout.
			pk.lastRecheck = time.Now()
			pk.wake()
		}
		pk.inMap++
	}
	return true
}

// forget drops the directions of an ended pair; closing its sockets took
// them out of the epoll set.
func (pk *parker) forget(p *pair) {
	pk.mu.Lock()
	for _, d := range p.u {
		if d != nil && d.id != 0 {
			delete(pk.dirs, d.id)
			pk.unpark(d)
		}
	}
	pk.mu.Unlock()
}

// udir is one direction of a pair on the user path: on the splice path
// (sockets outside the sockmap), or inMap, handed off by the kernel path
// with its sockets still in the sockmap. Its callbacks are built once, so
// a chunk allocates nothing.
type udir struct {
	p        *pair
	i        int
	src, dst *net.TCPConn
	count    *atomic.Int64
	ss       *sock
	sp       *splicer // splice path only

	// inMap only
	inMap  bool
	waited bool      // waitTaken returned
	got    uint64    // bytes read: offset in the passed stream
	big    bool      // the last read filled its buffer: read more at once
	eofAt  time.Time // when a read first found EOF before every passed byte
	sk     skipper

	id     uint64 // in the parker, once parked
	armed  bool
	parked bool // guarded by the parker's mu
	op     int
	ev     unix.EpollEvent
	ctlErr error
	ctl    func(fd uintptr)

	buf     []byte
	n       int
	rerr    unix.Errno
	tryRead func(fd uintptr) bool
}

func (p *pair) newUdir(i int, inMap bool) (*udir, error) {
	d := &udir{p: p, i: i, src: p.client, dst: p.upstream, count: &p.userRecv, inMap: inMap}
	if i == 1 {
		d.src, d.dst, d.count = p.upstream, p.client, &p.userSent
	}
	var err error
	if d.ss, err = newSock(d.src); err != nil {
		return nil, err
	}
	if inMap {
		d.sk = skipper{k: p.f.k, cookie: p.dirs[i].srcC}
	} else {
		dstRC, err := d.dst.SyscallConn()
		if err != nil {
			return nil, err
		}
		d.sp = newSplicer(p.f, d.ss.rc, dstRC)
	}
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
	if d.inMap && !d.waited {
		if err := d.p.waitTaken(d.i); err != nil {
			d.p.finish(err, true)
			return
		}
		d.waited = true
	}
	for {
		var again bool
		var err error
		if d.inMap {
			again, err = d.pumpInMap()
		} else {
			again, err = d.pump()
		}
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
		resume, err := d.idle()
		if err != nil {
			d.p.finish(err, true)
			return
		}
		if !resume {
			return
		}
	}
}

// Steps of a direction's wait before it parks: a direction in use waits
// on the netpoller, which wakes it faster than the parker would; only
// one quiet for parkAfter gives its goroutine up. One in the sockmap
// looks for a lost wakeup after each step.
var (
	spliceSteps = []time.Duration{parkAfter}
	inMapSteps  = []time.Duration{minRecheck, parkAfter - minRecheck}
)

// idle waits until src is readable (resume) or parks d (not resume: the
// goroutine must end without touching d).
func (d *udir) idle() (resume bool, err error) {
	steps := spliceSteps
	if d.inMap {
		steps = inMapSteps
	}
	for _, step := range steps {
		if ok, err := d.waitFor(step); ok || err != nil {
			return ok, err
		}
	}
	if pk := d.p.f.pk; pk != nil && pk.park(d) {
		return false, nil
	}
	// No parker (or the socket is gone): wait on the netpoller.
	for {
		if ok, err := d.waitFor(maxRecheck); ok || err != nil {
			return ok, err
		}
	}
}

// waitFor waits up to step for src to turn readable.
func (d *udir) waitFor(step time.Duration) (bool, error) {
	end := time.Now().Add(step)
	_ = d.src.SetReadDeadline(end)
	err := d.ss.waitReadable()
	_ = d.src.SetReadDeadline(time.Time{})
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false, err
	}
	if !d.inMap {
		return false, nil
	}
	ready, lost := recheck(d.src, end.Add(-wakeupSlack))
	if lost {
		d.p.f.lostWakeups.Add(1)
		d.p.f.o.Logger.Debug("sockmap: bytes waited without a wakeup", "cookie", d.sk.cookie)
	}
	return ready, nil
}

// parkAfter is how long a direction on the user path keeps its goroutine
// with nothing to read.
const parkAfter = 250 * time.Millisecond

// wakeupSlack is how late a wakeup may be before it counts as lost: one
// takes microseconds, but the goroutine that gets it may wait its turn
// for a few milliseconds on a busy machine.
const wakeupSlack = 10 * time.Millisecond

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
