package ebpf

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

const (
	fastScan   = 2 * time.Millisecond  // while any kernel pair moves bytes or drains
	slowScan   = 50 * time.Millisecond // otherwise
	bulkWindow = 100 * time.Millisecond
	bulkAfter  = 3 // windows in a row above BulkRate
)

// kernel owns the verdict program, its maps, the private epoll set and
// the one goroutine that watches every pair in the kernel path.
type kernel struct {
	f    *Forwarder
	objs forwardObjects
	wakeEpoll

	mu     sync.Mutex
	nextID uint64
	pairs  map[uint64]*pair // in the kernel path
	// dirs maps a source socket's cookie to its direction, from insertion
	// until the pair's entries are deleted; readStats stores each
	// direction's counters in it, so no per-scan map is rebuilt.
	dirs map[uint64]*kdir
	keys []uint64
	vals []forwardStat

	doneRed [2]atomic.Uint64 // redirected bytes of ended pairs: 0 client, 1 upstream
	stopped chan struct{}
}

// insertGap, when a test sets it, is a pause in nanoseconds between the
// upstream's and the client's insertion: it widens the window in which
// upstream bytes are passed and the pair starts in the in-map user path.
var insertGap atomic.Int64

func newKernel(f *Forwarder) (*kernel, error) {
	k := &kernel{f: f, pairs: make(map[uint64]*pair), dirs: make(map[uint64]*kdir),
		keys: make([]uint64, 512), vals: make([]forwardStat, 512), stopped: make(chan struct{})}
	if err := loadForwardObjects(&k.objs, nil); err != nil {
		return nil, fmt.Errorf("load verdict program: %w", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: k.objs.SockHash.FD(),
		Program: k.objs.StreamVerdict, Attach: cebpf.AttachSkSKBStreamVerdict}); err != nil {
		k.objs.Close()
		return nil, fmt.Errorf("attach verdict program: %w", err)
	}
	var err error
	if k.wakeEpoll, err = newWakeEpoll(); err != nil {
		k.objs.Close()
		return nil, err
	}
	go k.run()
	return k, nil
}

// The epoll data carries the pair id and the side, never the fd: a closed
// fd's number is reused.
func putID(ev *unix.EpollEvent, id uint64, side int32) {
	ev.Fd = int32(id)
	ev.Pad = int32(id>>32)<<1 | side
}

func getID(ev *unix.EpollEvent) (uint64, int) {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad)>>1)<<32, int(ev.Pad & 1)
}

func (k *kernel) close() error {
	k.wake()
	<-k.stopped
	k.wakeEpoll.close()
	err := link.RawDetachProgram(link.RawDetachProgramOptions{Target: k.objs.SockHash.FD(),
		Program: k.objs.StreamVerdict, Attach: cebpf.AttachSkSKBStreamVerdict})
	if cerr := k.objs.Close(); err == nil {
		err = cerr
	}
	return err
}

// add puts p in the kernel path: peer entries first, then the upstream
// socket, then the client socket (pitfall 5), then the kick (pitfall 4).
// errFallback means the pair should go to user space untouched.
func (k *kernel) add(p *pair) error {
	var err error
	if err = control(p.client, func(fd int) (err error) {
		p.cc, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		return err
	}); err != nil {
		return fmt.Errorf("%w: client cookie: %w", errFallback, err)
	}
	if err = control(p.upstream, func(fd int) (err error) {
		p.uc, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		return err
	}); err != nil {
		return fmt.Errorf("%w: upstream cookie: %w", errFallback, err)
	}
	p.dirs[0] = kdir{src: p.client, dst: p.upstream, srcC: p.cc, dstC: p.uc}
	p.dirs[1] = kdir{src: p.upstream, dst: p.client, srcC: p.uc, dstC: p.cc, side: 1}
	// Bytes already queued go first, from user space, before any socket
	// enters the map; base is measured after, so it counts them.
	for i, count := range []*atomic.Int64{&p.userRecv, &p.userSent} {
		d := &p.dirs[i]
		eof, err := k.f.drain(d.src, d.dst, count)
		if err != nil {
			return err
		}
		if eof {
			// A FIN is queued: the socket is in CLOSE_WAIT, which
			// sock_hash refuses; user space finishes the pair.
			return fmt.Errorf("%w: %s already sent its FIN", errFallback, sideName(i))
		}
	}
	// A FIN that came in after the drain: refuse the pair now rather than
	// have the upstream in the map and the client refused (errInMap).
	for i, c := range []*net.TCPConn{p.client, p.upstream} {
		if !established(c) {
			return fmt.Errorf("%w: %s no longer established", errFallback, sideName(i))
		}
	}
	for i := range p.dirs {
		d := &p.dirs[i]
		if d.base, err = taken(d.dst); err != nil {
			return fmt.Errorf("%w: %w", errFallback, err)
		}
		d.winStart = time.Now()
	}
	capb := uint64(k.f.o.QueueCap)
	k.mu.Lock()
	k.dirs[p.cc], k.dirs[p.uc] = &p.dirs[0], &p.dirs[1]
	k.mu.Unlock()
	undo := func() {
		k.mu.Lock()
		delete(k.dirs, p.cc)
		delete(k.dirs, p.uc)
		k.mu.Unlock()
		_ = k.objs.Pairs.Delete(p.cc)
		_ = k.objs.Pairs.Delete(p.uc)
		_ = k.objs.Stats.Delete(p.cc)
		_ = k.objs.Stats.Delete(p.uc)
	}
	for i := range p.dirs {
		d := &p.dirs[i] // not a copy: readStats writes d.st from now on
		if err := k.objs.Stats.Put(d.srcC, forwardStat{}); err != nil {
			undo()
			return fmt.Errorf("%w: stats entry: %w", errFallback, err)
		}
		// The upstream goes into sock_hash before the client, so its gate
		// starts closed: a redirect to a client not yet in the map is
		// dropped by the kernel, bytes already ACKed (measured: a whole
		// echoed reply lost). A byte passed in that window hands the pair
		// to user space, in order; the gate opens once the client is in.
		if err := k.objs.Pairs.Put(d.srcC, forwardPair{Peer: d.dstC, Cap: capb, Stop: uint32(i)}); err != nil {
			undo()
			return fmt.Errorf("%w: peer entry: %w", errFallback, err)
		}
	}
	if err := control(p.upstream, func(fd int) error { return k.objs.SockHash.Put(p.uc, uint64(fd)) }); err != nil {
		undo()
		return fmt.Errorf("%w: insert upstream: %w", errFallback, err)
	}
	if gap := insertGap.Load(); gap > 0 {
		time.Sleep(time.Duration(gap))
	}
	if err := control(p.client, func(fd int) error { return k.objs.SockHash.Put(p.cc, uint64(fd)) }); err != nil {
		// The upstream is in the map for good; with no peer entry active
		// for the client the verdict passes its bytes, so stop both and
		// let user space copy (in-map rules).
		p.inMap = true
		k.setStop(p)
		// Upstream bytes the verdict redirected before the gate closed
		// went to a client outside the map: the kernel dropped them.
		if red := k.stat(p.uc).Redirected; red != 0 {
			return fmt.Errorf("insert client: %w; %d upstream bytes lost to the missing peer", err, red)
		}
		return errInMap
	}
	p.inMap = true
	if err := k.objs.Pairs.Put(p.uc, forwardPair{Peer: p.cc, Cap: capb}); err != nil {
		// The gate stays closed: the verdict passes every upstream byte
		// and the pair goes to user space at its first scan.
		k.f.o.Logger.Debug("sockmap: upstream gate stays closed", "err", err)
	}
	k.mu.Lock()
	k.nextID++
	p.id = k.nextID
	p.inKernel = true
	k.pairs[p.id] = p
	k.mu.Unlock()
	k.f.activeKernel.Add(1)
	for side, c := range []*net.TCPConn{p.client, p.upstream} {
		ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR | unix.EPOLLET}
		putID(&ev, p.id, int32(side))
		_ = control(c, func(fd int) error { return unix.EpollCtl(k.epfd, unix.EPOLL_CTL_ADD, fd, &ev) })
	}
	_ = kick(p.upstream)
	_ = kick(p.client)
	k.wake()
	return nil
}

// setStop closes the gate of both directions and waits, through the
// socket lock, for every verdict already running.
func (k *kernel) setStop(p *pair) {
	capb := uint64(k.f.o.QueueCap)
	_ = k.objs.Pairs.Put(p.cc, forwardPair{Peer: p.uc, Cap: capb, Stop: 1})
	_ = k.objs.Pairs.Put(p.uc, forwardPair{Peer: p.cc, Cap: capb, Stop: 1})
	_ = kick(p.client)
	_ = kick(p.upstream)
}

func (k *kernel) stat(c uint64) forwardStat {
	var s forwardStat
	_ = k.objs.Stats.Lookup(c, &s)
	return s
}

// remove takes p out of the watcher; it reports whether p was there.
func (k *kernel) remove(p *pair) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !p.inKernel {
		return false
	}
	p.inKernel = false
	delete(k.pairs, p.id)
	for _, c := range []*net.TCPConn{p.client, p.upstream} {
		_ = control(c, func(fd int) error { return unix.EpollCtl(k.epfd, unix.EPOLL_CTL_DEL, fd, nil) })
	}
	return true
}

// forget deletes p's map entries once its sockets are closed (closing a
// socket removes it from sock_hash).
func (k *kernel) forget(p *pair, sent, recv uint64) {
	k.doneRed[0].Add(recv)
	k.doneRed[1].Add(sent)
	k.mu.Lock()
	delete(k.dirs, p.cc)
	delete(k.dirs, p.uc)
	k.mu.Unlock()
	_ = k.objs.Pairs.Delete(p.cc)
	_ = k.objs.Pairs.Delete(p.uc)
	k.dropSkips(p.cc)
	k.dropSkips(p.uc)
	_ = k.objs.Stats.Delete(p.cc)
	_ = k.objs.Stats.Delete(p.uc)
}

// dropSkips deletes the skip entries the verdict wrote for cookie c.
func (k *kernel) dropSkips(c uint64) {
	for n := range k.stat(c).Skips {
		_ = k.objs.Skips.Delete(forwardSkipKey{Cookie: c, N: n})
	}
}

// readStats copies the stats map into each direction's st, in batches.
// Called with k.mu held.
func (k *kernel) readStats() error {
	var cur cebpf.MapBatchCursor
	for {
		n, err := k.objs.Stats.BatchLookup(&cur, k.keys, k.vals, nil)
		for i := 0; i < n; i++ {
			if d := k.dirs[k.keys[i]]; d != nil {
				d.st = k.vals[i]
			}
		}
		if errors.Is(err, cebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

type ending struct {
	p     *pair
	err   error
	reset bool
}

func (k *kernel) run() {
	defer close(k.stopped)
	events := make([]unix.EpollEvent, 256)
	interval := slowScan
	last := time.Now()
	var ends []ending
	var handoffs []*pair
	for {
		n, err := unix.EpollWait(k.epfd, events, int(interval/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			k.f.o.Logger.Error("sockmap watcher stopped", "err", err)
			return
		}
		k.mu.Lock()
		for i := 0; i < n; i++ {
			id, side := getID(&events[i])
			if id == 0 {
				k.drainWake()
				if k.f.isClosed() {
					k.mu.Unlock()
					return
				}
				continue
			}
			p := k.pairs[id]
			if p == nil {
				continue
			}
			ev := events[i].Events
			src := p.client
			if side == 1 {
				src = p.upstream
			}
			if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				if serr := sockErr(src); serr != nil {
					// RST or error: reset the peer too (pitfall 6).
					ends = append(ends, ending{p, fmt.Errorf("%s: %w", sideName(side), serr), true})
					continue
				}
			}
			if ev&unix.EPOLLRDHUP != 0 {
				p.dirs[side].eof = true
			}
		}
		now := time.Now()
		busy := false
		if n > 0 || now.Sub(last) >= interval {
			last = now
			if err := k.readStats(); err == nil {
				for _, p := range k.pairs {
					b, e, h := k.scan(p, now)
					busy = busy || b
					if e != nil {
						ends = append(ends, *e)
					} else if h {
						handoffs = append(handoffs, p)
					}
				}
			}
		}
		k.mu.Unlock()
		for _, e := range ends {
			e.p.finish(e.err, e.reset)
		}
		for _, p := range handoffs {
			if k.remove(p) {
				k.setStop(p)
				k.f.activeKernel.Add(-1)
				k.f.activeUser.Add(1)
				k.f.startUser(p, true)
			}
		}
		ends, handoffs = ends[:0], handoffs[:0]
		if busy {
			interval = fastScan
		} else {
			interval = slowScan
		}
	}
}

func sideName(side int) string {
	if side == 0 {
		return "client"
	}
	return "upstream"
}

// scan looks at one kernel pair: keeps the cap's view of the peer current,
// propagates FINs once the peer has every byte, and says whether the pair
// should end or move to user space. Called with k.mu held.
func (k *kernel) scan(p *pair, now time.Time) (busy bool, end *ending, handoff bool) {
	for i := range p.dirs {
		d := &p.dirs[i]
		st := d.st
		if st.Lost != 0 {
			return false, &ending{p, fmt.Errorf("%s: %w", sideName(i), errRefed), true}, false
		}
		if st.Passed != 0 {
			k.f.handoffCap.Add(1)
			return true, nil, true
		}
		if st.Redirected == d.lastRed && (!d.eof || d.shut) {
			continue
		}
		busy = true
		t, err := taken(d.dst)
		if err != nil {
			return false, &ending{p, err, true}, false
		}
		rel := t - d.base
		if rel != d.lastTaken {
			d.lastTaken = rel
			_ = k.objs.Pairs.Put(d.srcC, forwardPair{Peer: d.dstC, Cap: uint64(k.f.o.QueueCap), Taken: rel})
		}
		if k.f.mode == Auto && k.f.o.BulkRate > 0 {
			if el := now.Sub(d.winStart); el >= bulkWindow {
				rate := float64(st.Redirected-d.winRed) / el.Seconds()
				if rate > float64(k.f.o.BulkRate) {
					d.bulkWindows++
				} else {
					d.bulkWindows = 0
				}
				d.winStart, d.winRed = now, st.Redirected
				if d.bulkWindows >= bulkAfter {
					k.f.handoffBulk.Add(1)
					return true, nil, true
				}
			}
		}
		d.lastRed = st.Redirected
		if d.eof && !d.shut {
			q, err := inq(d.src)
			if err != nil {
				return false, &ending{p, err, true}, false
			}
			// Pitfall 2: the FIN goes on only once the peer's send queue
			// has taken every byte the verdict redirected and nothing
			// waits on the source.
			if q == 0 && rel >= st.Redirected {
				if err := d.dst.CloseWrite(); err != nil {
					return false, &ending{p, err, true}, false
				}
				d.shut = true
			}
		}
	}
	if p.dirs[0].shut && p.dirs[1].shut {
		return busy, &ending{p, nil, false}, false
	}
	return busy, nil, false
}

func (k *kernel) side(c uint64) (int, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	d := k.dirs[c]
	if d == nil {
		return 0, false
	}
	return d.side, true
}
