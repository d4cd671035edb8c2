package ebpf

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"

	cebpf "github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

const (
	bufSize   = 32 << 10 // read/write chunk for small reads
	spliceMin = 64 << 10 // readable bytes from which splice(2) pays off
	pipeSize  = 1 << 20
)

// bufPool holds pointers to fixed-size buffers: no allocation per chunk.
var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// bigSize is the read size of a handed-off pair in the sockmap once a read
// fills a small buffer: it cannot splice (pitfall 7), so fewer, larger
// copies are what is left to save CPU per byte.
const bigSize = 256 << 10

var bigPool = sync.Pool{New: func() any { return new([bigSize]byte) }}

// chunk is a pooled buffer of either size, held while one read's bytes
// move.
type chunk struct {
	small *[bufSize]byte
	big   *[bigSize]byte
}

func getChunk(big bool) (chunk, []byte) {
	if big {
		b := bigPool.Get().(*[bigSize]byte)
		return chunk{big: b}, b[:]
	}
	b := bufPool.Get().(*[bufSize]byte)
	return chunk{small: b}, b[:]
}

func (c chunk) put() {
	if c.big != nil {
		bigPool.Put(c.big)
	} else {
		bufPool.Put(c.small)
	}
}

// pipePool keeps idle pipes for splice(2) between sockets that are not in
// the sockmap. A pipe is held only while bytes move.
type pipePool struct {
	mu   sync.Mutex
	free [][2]int
}

func (pp *pipePool) get() ([2]int, error) {
	pp.mu.Lock()
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free = pp.free[:n-1]
		pp.mu.Unlock()
		return p, nil
	}
	pp.mu.Unlock()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return p, err
	}
	_, _ = unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, pipeSize)
	return p, nil
}

// put returns an empty pipe; a pipe that may hold bytes is closed.
func (pp *pipePool) put(p [2]int, empty bool) {
	pp.mu.Lock()
	if empty && len(pp.free) < 64 {
		pp.free = append(pp.free, p)
		pp.mu.Unlock()
		return
	}
	pp.mu.Unlock()
	unix.Close(p[0])
	unix.Close(p[1])
}

func (pp *pipePool) drain() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for _, p := range pp.free {
		unix.Close(p[0])
		unix.Close(p[1])
	}
	pp.free = nil
}

// startUser copies both directions of p in user space, one goroutine per
// direction still open while bytes move, none once it idles (parker).
// inMap says the sockets are in the sockmap with their gate closed: then
// bytes are read with read(2) only (pitfall 7), after every byte the
// kernel redirected has reached the peer.
func (f *Forwarder) startUser(p *pair, inMap bool) {
	n := int32(0)
	for i := range p.dirs {
		if !(inMap && p.dirs[i].shut) {
			n++
		}
	}
	p.userLeft.Store(n)
	if n == 0 {
		p.finish(nil, false)
		return
	}
	for i := range p.dirs {
		if inMap && p.dirs[i].shut {
			continue
		}
		d, err := p.newUdir(i, inMap)
		if err != nil {
			p.finish(err, true)
			return
		}
		p.u[i] = d
	}
	for _, d := range p.u {
		if d != nil {
			f.wg.Add(1)
			go d.run()
		}
	}
}

// dirDone ends a direction whose source sent its FIN: the FIN goes on to
// dst, and the last direction to end finishes the pair.
func (p *pair) dirDone(dst *net.TCPConn) {
	if err := dst.CloseWrite(); err != nil {
		p.finish(err, true)
		return
	}
	if p.userLeft.Add(-1) == 0 {
		p.finish(nil, false)
	}
}

// waitTaken waits until the peer's send queue has taken every byte the
// verdict redirected in direction i, for as long as it takes: user-space
// bytes written earlier would overtake them.
func (p *pair) waitTaken(i int) error {
	d := &p.dirs[i]
	k := p.f.k
	for !p.ended.Load() {
		red := k.stat(d.srcC).Redirected
		t, err := taken(d.dst)
		if err != nil {
			return err
		}
		if t-d.base >= red {
			return nil
		}
		// A peer that was reset or closed never takes the rest: the
		// kernel dropped those bytes, so the pair ends with a reset.
		for _, c := range []*net.TCPConn{d.src, d.dst} {
			if gone(c) {
				return fmt.Errorf("waiting for the peer to take redirected bytes: %w", unix.ECONNRESET)
			}
		}
		time.Sleep(time.Millisecond)
	}
	return ErrClosed
}

// sock is one socket of a direction in the user path, with its netpoller
// callbacks built once: a closure per wait or per chunk would allocate
// for every chunk forwarded.
type sock struct {
	rc   syscall.RawConn
	err  error
	n    int
	peek func(fd uintptr) bool // for rc.Read: done once src has bytes, EOF or an error
	inq  func(fd uintptr)      // for rc.Control: n = SIOCINQ
}

func newSock(c *net.TCPConn) (*sock, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &sock{rc: rc}
	s.peek = func(fd uintptr) bool {
		switch e := peekByte(fd); e {
		case unix.EAGAIN, unix.EINTR:
			return false
		case 0:
			s.err = nil
		default:
			s.err = e
		}
		return true
	}
	s.inq = func(fd uintptr) {
		n, e := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		s.n, s.err = n, nil
		if e != nil {
			s.n, s.err = 0, e
		}
	}
	return s, nil
}

// peekByte is recv(MSG_PEEK|MSG_DONTWAIT) of one byte on the stack; the
// x/sys wrapper allocates a sockaddr per call.
func peekByte(fd uintptr) unix.Errno {
	var b byte
	_, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b)), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return e
}

// waitReadable parks on Go's netpoller until the socket has bytes, EOF or
// an error, holding no buffer.
func (s *sock) waitReadable() error {
	if err := s.rc.Read(s.peek); err != nil {
		return err
	}
	return s.err
}

// queued returns SIOCINQ, the bytes readable now.
func (s *sock) queued() int {
	if s.rc.Control(s.inq) != nil || s.err != nil {
		return 0
	}
	return s.n
}

// Bounds of the wait for readability of a socket in the sockmap: a
// socket there gets its readiness from the psock, not from TCP, and a
// wakeup that never comes would stall the pair for good with its bytes
// queued (a bench run saw a stream stop this way once). So the wait is
// bounded: minRecheck while the direction holds its goroutine, maxRecheck
// once parked; when it runs out, the kick runs the verdict over anything
// TCP still holds, and bytes found ready that TCP received more than
// wakeupSlack before count as a lost wakeup.
const (
	minRecheck = 50 * time.Millisecond
	maxRecheck = 5 * time.Second
)

// pumpInMap moves what src has now, for a pair whose sockets stay in the
// sockmap. It leaves out the spans the verdict marked as fed twice (see
// skipper). At EOF it makes sure every byte the verdict passed was read:
// the psock may still be moving the last ones to the socket.
func (d *udir) pumpInMap() (again bool, err error) {
	f := d.p.f
	for {
		ch, b := getChunk(d.big)
		d.buf = b
		err := d.ss.rc.Read(d.tryRead)
		d.buf = nil
		n, e := d.n, d.rerr
		switch {
		case err != nil:
			ch.put()
			return false, err
		case e == unix.EAGAIN:
			ch.put()
			return true, nil
		case e == unix.EINTR:
			ch.put()
			continue
		case e != 0:
			ch.put()
			return false, e
		case n == 0:
			ch.put()
			passed := f.k.stat(d.sk.cookie).Passed
			if d.got >= passed || d.p.ended.Load() {
				err := d.sk.check()
				d.sk.release()
				return false, err
			}
			// Bytes passed but not yet readable are in the psock's
			// backlog; they come within jiffies. A bound turns bytes
			// that never come into an error instead of a pair that
			// spins here for good.
			if d.eofAt.IsZero() {
				d.eofAt = time.Now()
			} else if time.Since(d.eofAt) > maxRecheck {
				return false, fmt.Errorf("sockmap: EOF with %d of %d passed bytes read after %v", d.got, passed, maxRecheck)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		d.big = n == len(b) || (d.big && n > bufSize)
		out, serr := d.sk.cut(b[:n], d.got)
		d.got += uint64(n)
		var werr error
		if serr == nil && len(out) > 0 {
			_, werr = d.dst.Write(out)
		}
		ch.put()
		if serr != nil {
			return false, serr
		}
		if werr != nil {
			return false, werr
		}
		d.count.Add(int64(len(out)))
		f.userBytes.Add(int64(len(out)))
	}
}

// errRefed says the kernel fed the verdict bytes it could not mark for
// user space to skip: forwarding on would duplicate or lose bytes.
var errRefed = errors.New("sockmap: kernel fed the verdict a byte range twice and the skip was not recorded")

// skipper removes from the passed stream of one socket the spans the
// verdict recorded in the skips map: the old head of an skb the kernel
// fed the verdict a second time, glued to new bytes (bpf/forward.c).
// Entries come in stream order; each is deleted once used.
type skipper struct {
	k      *kernel
	cookie uint64
	n      uint64 // next entry
	cur    forwardSkip
	have   bool
	key    forwardSkipKey // lookup buffer: passed by pointer, no marshalling per chunk
}

// cut returns b, read at offset at of the passed stream, without the
// bytes of recorded spans. The verdict writes an entry before the skb's
// bytes can be read, so every span that touches b is already there.
func (s *skipper) cut(b []byte, at uint64) ([]byte, error) {
	for {
		if !s.have {
			// The lookup runs once per chunk read: unsafe.Pointer
			// key and value make cilium/ebpf skip its marshalling,
			// which allocated on every call.
			s.key = forwardSkipKey{Cookie: s.cookie, N: s.n}
			if err := s.k.objs.Skips.Lookup(unsafe.Pointer(&s.key), unsafe.Pointer(&s.cur)); err != nil {
				if errors.Is(err, cebpf.ErrKeyNotExist) {
					return b, nil
				}
				return b, fmt.Errorf("read skip entry: %w", err)
			}
			s.have = true
		}
		end := at + uint64(len(b))
		if s.cur.Pos >= end {
			return b, nil
		}
		if s.cur.Pos < at {
			// A span starting in an earlier read: its first part was
			// cut there and the entry moved on.
			return b, fmt.Errorf("%w: span at %d behind stream offset %d", errRefed, s.cur.Pos, at)
		}
		from := s.cur.Pos - at
		to := min(s.cur.Pos+s.cur.Len, end) - at
		b = append(b[:from], b[to:]...)
		cutLen := to - from
		s.k.f.refedBytes.Add(int64(cutLen))
		if cutLen == s.cur.Len {
			_ = s.k.objs.Skips.Delete(forwardSkipKey{Cookie: s.cookie, N: s.n})
			s.n++
			s.have = false
			// Later spans are at offsets of the uncut stream.
			at += cutLen
			continue
		}
		// The span goes on into the next read, which starts at end.
		s.cur.Pos += cutLen
		s.cur.Len -= cutLen
		return b, nil
	}
}

// check reports a range the verdict could not record.
func (s *skipper) check() error {
	if st := s.k.stat(s.cookie); st.Lost != 0 {
		return fmt.Errorf("%w (%d times)", errRefed, st.Lost)
	}
	return nil
}

// release deletes the entries of s's socket that were not used.
func (s *skipper) release() {
	for n := s.n; ; n++ {
		if s.k.objs.Skips.Delete(forwardSkipKey{Cookie: s.cookie, N: n}) != nil {
			return
		}
	}
}

// splicer moves one direction's bytes with splice(2) through a pooled
// pipe, held only for one chunk. Its callbacks are built once per
// direction, so a chunk allocates nothing.
type splicer struct {
	f           *Forwarder
	src, dst    syscall.RawConn
	pp          [2]int
	want        int
	in, out     int64
	err         error
	fill, flush func(fd uintptr) bool
}

func newSplicer(f *Forwarder, src, dst syscall.RawConn) *splicer {
	const flags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
	sp := &splicer{f: f, src: src, dst: dst}
	sp.fill = func(fd uintptr) bool {
		sp.in, sp.err = unix.Splice(int(fd), nil, sp.pp[1], nil, sp.want, flags)
		return sp.err != unix.EAGAIN
	}
	sp.flush = func(fd uintptr) bool {
		for sp.out < sp.in {
			n, e := unix.Splice(sp.pp[0], nil, int(fd), nil, int(sp.in-sp.out), flags)
			if e == unix.EAGAIN {
				return false
			}
			if e != nil {
				sp.err = e
				return true
			}
			sp.out += n
		}
		return true
	}
	return sp
}

// once moves up to want readable bytes from src to dst.
func (sp *splicer) once(want int) (int64, error) {
	pp, err := sp.f.pipes.get()
	if err != nil {
		return 0, err
	}
	sp.pp, sp.want, sp.in, sp.out, sp.err = pp, min(want, pipeSize), 0, 0, nil
	err = sp.src.Read(sp.fill)
	if err == nil {
		err = sp.err
	}
	if err != nil || sp.in == 0 {
		sp.f.pipes.put(pp, sp.in == 0)
		return 0, err
	}
	sp.err = nil
	err = sp.dst.Write(sp.flush)
	if err == nil {
		err = sp.err
	}
	sp.f.pipes.put(pp, sp.out == sp.in)
	return sp.out, err
}
