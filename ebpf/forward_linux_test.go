package ebpf

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// requireEBPF skips a kernel-path test where the kernel path is missing,
// and fails it instead when EASTWEST_REQUIRE_EBPF=1 (CI runs as root).
func requireEBPF(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvForce) == "splice" {
		t.Skipf("kernel path forced off by %s=splice", EnvForce)
	}
	err := Probe()
	if err == nil {
		return
	}
	if os.Getenv("EASTWEST_REQUIRE_EBPF") == "1" {
		t.Fatalf("kernel path required (EASTWEST_REQUIRE_EBPF=1): %v", err)
	}
	t.Skipf("kernel path unavailable: %v", err)
}

var modes = []struct {
	name string
	mode Mode
}{{"auto", Auto}, {"sockmap", Sockmap}, {"splice", Splice}}

func newForwarder(t testing.TB, o Options) *Forwarder {
	t.Helper()
	if o.Mode != Splice {
		requireEBPF(t)
	}
	f, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if f.Mode() != o.Mode {
		t.Fatalf("mode %v, want %v", f.Mode(), o.Mode)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

type result struct {
	sent, received int64
	err            error
}

// gateway plays client -> gateway -> upstream on loopback: it accepts a
// client, dials the upstream listener and hands both to f.Submit. The
// upstream side of each pair arrives on Upstream, results on Done.
type gateway struct {
	Addr     string
	Upstream chan *net.TCPConn
	Done     chan result
	Delay    time.Duration // before Submit, so client bytes queue first
	// submitted holds the gateway-side address of each upstream conn
	// whose Submit has returned, so dial can wait for the insertion.
	submitted sync.Map
}

func startGateway(t testing.TB, f *Forwarder, delay time.Duration) *gateway {
	t.Helper()
	front := listen(t)
	back := listen(t)
	g := &gateway{Addr: front.Addr().String(), Upstream: make(chan *net.TCPConn, 8192),
		Done: make(chan result, 8192), Delay: delay}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := back.AcceptTCP()
			if err != nil {
				return
			}
			g.Upstream <- c
		}
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := front.AcceptTCP()
			if err != nil {
				return
			}
			u, err := net.DialTCP("tcp", nil, back.Addr().(*net.TCPAddr))
			if err != nil {
				c.Close()
				g.Done <- result{err: err}
				continue
			}
			if g.Delay > 0 {
				time.Sleep(g.Delay)
			}
			f.Submit(context.Background(), c, u, nil, func(s, r int64, err error) { g.Done <- result{s, r, err} })
			g.submitted.Store(u.LocalAddr().String(), true)
		}
	}()
	t.Cleanup(func() {
		front.Close()
		back.Close()
		wg.Wait()
	})
	return g
}

func listen(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// dial returns the client end and the upstream end of a new pair, once
// Submit has returned for it: bytes the test writes next meet the path
// the forwarder chose, not the pre-insertion drain.
func (g *gateway) dial(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", g.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var u *net.TCPConn
	select {
	case u = <-g.Upstream:
		t.Cleanup(func() { u.Close() })
	case <-time.After(5 * time.Second):
		t.Fatal("upstream connection never arrived")
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, ok := g.submitted.LoadAndDelete(u.RemoteAddr().String()); ok {
			return c.(*net.TCPConn), u
		}
		if time.Now().After(end) {
			t.Fatal("Submit never returned for the pair")
		}
	}
}

func (g *gateway) result(t testing.TB) result {
	t.Helper()
	select {
	case r := <-g.Done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("pair never ended")
	}
	return result{}
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func deadline(t testing.TB, cs ...*net.TCPConn) {
	t.Helper()
	for _, c := range cs {
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	}
}

// Bulk upload, echo by the upstream, half-close both ways: byte-exact.
func TestBulkHalfClose(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newForwarder(t, Options{Mode: m.mode})
			g := startGateway(t, f, 0)
			for run := range 20 {
				data := randomBytes(t, 1<<20+run*4099)
				c, u := g.dial(t)
				deadline(t, c, u)
				echo := make(chan error, 1)
				go func() {
					_, err := io.Copy(u, u) // bare TCPConn: read until FIN, echo
					if err == nil {
						err = u.CloseWrite()
					}
					echo <- err
				}()
				werr := make(chan error, 1)
				go func() {
					_, err := c.Write(data)
					if err == nil {
						err = c.CloseWrite()
					}
					werr <- err
				}()
				got, err := io.ReadAll(c)
				if err != nil {
					t.Fatalf("run %d: client read: %v", run, err)
				}
				if err := <-werr; err != nil {
					t.Fatalf("run %d: client write: %v", run, err)
				}
				if err := <-echo; err != nil {
					t.Fatalf("run %d: upstream echo: %v", run, err)
				}
				if sha256.Sum256(got) != sha256.Sum256(data) {
					t.Fatalf("run %d: got %d bytes, sent %d, hashes differ", run, len(got), len(data))
				}
				r := g.result(t)
				if r.err != nil {
					t.Fatalf("run %d: forward: %v", run, r.err)
				}
				if r.received != int64(len(data)) || r.sent != int64(len(data)) {
					t.Fatalf("run %d: sent %d received %d, want %d each", run, r.sent, r.received, len(data))
				}
			}
		})
	}
}

// The client half-closes while the upstream is in the middle of a download
// (SOCKMAP.md pitfall 3: the zero-length FIN skb must not EPIPE anyone).
func TestHalfCloseDuringDownload(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newForwarder(t, Options{Mode: m.mode})
			g := startGateway(t, f, 0)
			for run := range 5 {
				c, u := g.dial(t)
				deadline(t, c, u)
				data := randomBytes(t, 8<<20)
				up := make(chan error, 1)
				go func() {
					_, err := u.Write(data)
					if err == nil {
						err = u.CloseWrite()
					}
					if err == nil {
						var rest []byte
						rest, err = io.ReadAll(u)
						if err == nil && string(rest) != "req" {
							err = errors.New("upstream got " + strconv.Quote(string(rest)))
						}
					}
					up <- err
				}()
				buf := make([]byte, 64<<10)
				n, err := io.ReadFull(c, buf)
				if err != nil {
					t.Fatalf("run %d: first read: %v", run, err)
				}
				if _, err := c.Write([]byte("req")); err != nil {
					t.Fatal(err)
				}
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				rest, err := io.ReadAll(c)
				if err != nil {
					t.Fatalf("run %d: client read after half-close: %v", run, err)
				}
				if !bytes.Equal(append(buf[:n:n], rest...), data) {
					t.Fatalf("run %d: download corrupted: %d of %d bytes", run, n+len(rest), len(data))
				}
				if err := <-up; err != nil {
					t.Fatalf("run %d: upstream: %v", run, err)
				}
				if r := g.result(t); r.err != nil {
					t.Fatalf("run %d: forward: %v", run, r.err)
				}
			}
		})
	}
}

// Client bytes that arrive before the pair is inserted (pitfall 4).
func TestPreQueuedBytes(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newForwarder(t, Options{Mode: m.mode})
			g := startGateway(t, f, 50*time.Millisecond)
			c, err := net.Dial("tcp", g.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("early bytes")); err != nil {
				t.Fatal(err)
			}
			u := <-g.Upstream
			defer u.Close()
			deadline(t, c.(*net.TCPConn), u)
			buf := make([]byte, 11)
			if _, err := io.ReadFull(u, buf); err != nil {
				t.Fatalf("early bytes never forwarded: %v", err)
			}
			if string(buf) != "early bytes" {
				t.Fatalf("got %q", buf)
			}
			c.Close()
			u.Close()
			g.result(t)
		})
	}
}

// RST from either side resets the other and ends the pair; so does a full
// close while the other side still sends.
func TestResetAndClose(t *testing.T) {
	for _, m := range modes {
		for _, tc := range []struct {
			name       string
			clientSide bool
			rst        bool
		}{
			{"rst-client", true, true}, {"rst-upstream", false, true},
			{"close-client", true, false}, {"close-upstream", false, false},
		} {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				f := newForwarder(t, Options{Mode: m.mode})
				g := startGateway(t, f, 0)
				c, u := g.dial(t)
				deadline(t, c, u)
				quitter, sender := c, u
				if !tc.clientSide {
					quitter, sender = u, c
				}
				// Traffic in the kernel path first.
				if _, err := sender.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(quitter, make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				if tc.rst {
					_ = quitter.SetLinger(0)
				}
				quitter.Close()
				// The other side keeps sending until its socket errors.
				chunk := make([]byte, 32<<10)
				var werr error
				for i := 0; i < 2000 && werr == nil; i++ {
					_, werr = sender.Write(chunk)
				}
				if werr == nil {
					_, werr = sender.Read(chunk)
				}
				if werr == nil || errors.Is(werr, os.ErrDeadlineExceeded) {
					t.Fatalf("the surviving side never saw its peer go away (%v); pairs: kernel %d, user %d, hand-offs %d",
						werr, f.activeKernel.Load(), f.activeUser.Load(), f.handoffCap.Load()+f.handoffBulk.Load())
				}
				r := g.result(t)
				if tc.rst && r.err == nil && m.mode != Splice {
					t.Errorf("reset not reported: %+v", r)
				}
			})
		}
	}
}

// memUsage returns this process's RSS and the machine's MemAvailable.
func memUsage(t testing.TB) (rss, avail int64) {
	t.Helper()
	for _, f := range []struct {
		path, key string
		into      *int64
	}{{"/proc/self/status", "VmRSS:", &rss}, {"/proc/meminfo", "MemAvailable:", &avail}} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, f.key) {
				*f.into = kib(l)
			}
		}
	}
	return rss, avail
}

func kib(l string) int64 {
	f := strings.Fields(l)
	n, _ := strconv.ParseInt(f[1], 10, 64)
	return n << 10
}

// A fast writer behind a stalled reader: memory stays near the cap, and
// every byte arrives once the reader resumes (pitfall 1).
func TestStalledReaderBounded(t *testing.T) {
	const cap = 1 << 20
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newForwarder(t, Options{Mode: m.mode, QueueCap: cap})
			g := startGateway(t, f, 0)
			c, u := g.dial(t)
			deadline(t, c, u)
			runtime.GC()
			rss0, avail0 := memUsage(t)
			var sent int64
			h := sha256.New()
			chunk := randomBytes(t, 64<<10)
			stop := time.Now().Add(5 * time.Second)
			for time.Now().Before(stop) {
				_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				n, err := c.Write(chunk)
				h.Write(chunk[:n])
				sent += int64(n)
				if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("client write: %v", err)
				}
			}
			rss1, avail1 := memUsage(t)
			t.Logf("%s: %d MiB pushed while stalled; RSS %+d MiB, MemAvailable %+d MiB (machine-wide, noisy)",
				m.name, sent>>20, (rss1-rss0)>>20, (avail1-avail0)>>20)
			// Every byte pushed and not yet read sits in some queue between
			// the client and the stalled reader, so the pushed count bounds
			// the kernel memory held; without the cap it passes 700 MiB
			// (pitfall 1). RSS bounds the process's own buffers.
			if limit := int64(cap + 48<<20); sent > limit {
				t.Errorf("%d MiB pushed into a stalled pair, limit %d MiB", sent>>20, limit>>20)
			}
			if grown, limit := rss1-rss0, int64(cap+32<<20); grown > limit {
				t.Errorf("RSS grew by %d MiB, limit %d MiB", grown>>20, limit>>20)
			}
			if m.mode != Splice && f.handoffCap.Load()+f.handoffBulk.Load() == 0 {
				t.Errorf("no hand-off to user space for a stalled reader")
			}
			_ = c.SetWriteDeadline(time.Time{})
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			rh := sha256.New()
			n, err := io.Copy(rh, u)
			if err != nil {
				t.Fatalf("upstream read: %v", err)
			}
			if n != sent || !bytes.Equal(rh.Sum(nil), h.Sum(nil)) {
				t.Fatalf("upstream got %d bytes, client sent %d (or hashes differ)", n, sent)
			}
			u.CloseWrite()
			if r := g.result(t); r.err != nil {
				t.Fatalf("forward: %v", r.err)
			}
		})
	}
}

// A sustained flow in Auto moves to user space in the middle of the
// stream without losing, duplicating or reordering a byte.
func TestAutoBulkHandoff(t *testing.T) {
	f := newForwarder(t, Options{Mode: Auto, BulkRate: 1 << 20, QueueCap: 256 << 20})
	g := startGateway(t, f, 0)
	for run := range 3 {
		c, u := g.dial(t)
		deadline(t, c, u)
		chunk := randomBytes(t, 256<<10)
		h := sha256.New()
		got := make(chan []byte, 1)
		go func() {
			rh := sha256.New()
			_, _ = io.Copy(rh, u)
			got <- rh.Sum(nil)
		}()
		for end := time.Now().Add(700 * time.Millisecond); time.Now().Before(end); {
			if _, err := c.Write(chunk); err != nil {
				t.Fatal(err)
			}
			h.Write(chunk)
			time.Sleep(time.Millisecond) // a steady flow, not one burst
		}
		c.CloseWrite()
		if !bytes.Equal(<-got, h.Sum(nil)) {
			t.Fatalf("run %d: stream changed across the hand-off", run)
		}
		u.CloseWrite()
		if r := g.result(t); r.err != nil {
			t.Fatalf("run %d: forward: %v", run, r.err)
		}
	}
	t.Logf("hand-offs: bulk %d, queue cap %d", f.handoffBulk.Load(), f.handoffCap.Load())
	if f.handoffBulk.Load() == 0 {
		t.Fatal("no bulk hand-off")
	}
}

func countFDs(t testing.TB) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// pairEnds are the client and upstream ends of one pair through g.
type pairEnds struct{ c, u *net.TCPConn }

// openPairs opens n pairs through g, one at a time; the caller closes them.
func (g *gateway) openPairs(t *testing.T, n int) []pairEnds {
	t.Helper()
	ends := make([]pairEnds, 0, n)
	for range n {
		c, err := net.Dial("tcp", g.Addr)
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, pairEnds{c.(*net.TCPConn), <-g.Upstream})
	}
	return ends
}

// Many idle pairs in the kernel path cost no goroutine each, and closing
// them leaves no map entry, fd or goroutine behind.
func TestManyPairsNoGoroutines(t *testing.T) {
	const n = 1000
	f := newForwarder(t, Options{Mode: Sockmap})
	g := startGateway(t, f, 0)
	fds0, gr0 := countFDs(t), runtime.NumGoroutine()
	ends := g.openPairs(t, n)
	// One round trip per pair proves each is forwarding.
	for i, e := range ends {
		deadline(t, e.c, e.u)
		if _, err := e.c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	one := make([]byte, 1)
	for i, e := range ends {
		if _, err := io.ReadFull(e.u, one); err != nil || one[0] != byte(i) {
			t.Fatalf("pair %d: %v %v", i, one, err)
		}
	}
	if got := runtime.NumGoroutine() - gr0; got > 20 {
		t.Errorf("%d goroutines for %d kernel pairs", got, n)
	}
	if k := f.activeKernel.Load(); k != n {
		t.Errorf("%d pairs in the kernel path, want %d", k, n)
	}
	for _, e := range ends {
		e.c.Close()
		e.u.Close()
	}
	for range n {
		if r := g.result(t); r.err != nil {
			t.Logf("pair ended with %v", r.err)
		}
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= gr0+2 && countFDs(t) <= fds0 })
	var key uint64
	var st forwardStat
	if f.k.objs.Stats.Iterate().Next(&key, &st) {
		t.Errorf("stats entry %d left behind", key)
	}
	var pr forwardPair
	if f.k.objs.Pairs.Iterate().Next(&key, &pr) {
		t.Errorf("pairs entry %d left behind", key)
	}
	if f.activeKernel.Load() != 0 || f.activeUser.Load() != 0 {
		t.Errorf("active pairs left: kernel %d user %d", f.activeKernel.Load(), f.activeUser.Load())
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("condition never held: goroutines %d fds %d", runtime.NumGoroutine(), countFDs(t))
}

// rawPair connects a client to front and the gateway to back, for tests
// that hand the middle two conns to the forwarder themselves. The client
// and server ends close with the test.
func rawPair(t *testing.T, front, back *net.TCPListener) (client, gw, up, srv *net.TCPConn) {
	t.Helper()
	client, err := net.DialTCP("tcp", nil, front.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if gw, err = front.AcceptTCP(); err != nil {
		t.Fatal(err)
	}
	if up, err = net.DialTCP("tcp", nil, back.Addr().(*net.TCPAddr)); err != nil {
		t.Fatal(err)
	}
	if srv, err = back.AcceptTCP(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	deadline(t, client, srv)
	return client, gw, up, srv
}

// Forward blocks until the pair ends; ctx cancellation ends it at once.
func TestForwardCancel(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newForwarder(t, Options{Mode: m.mode})
			front, back := listen(t), listen(t)
			defer front.Close()
			defer back.Close()
			c, gw, up, srv := rawPair(t, front, back)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan result, 1)
			go func() {
				s, r, err := f.Forward(ctx, gw, up, []byte("hello"))
				done <- result{s, r, err}
			}()
			buf := make([]byte, 5)
			if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "hello" {
				t.Fatalf("peeked bytes: %q %v", buf, err)
			}
			cancel()
			r := <-done
			if !errors.Is(r.err, context.Canceled) || r.received != 5 {
				t.Fatalf("got %+v, want context.Canceled and 5 received", r)
			}
			if _, err := c.Read(buf); err == nil {
				t.Fatal("client conn still open after cancel")
			}
		})
	}
}

func BenchmarkForward(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) { benchForward(b, m.mode) })
	}
}

// benchForward streams 1 MiB per op through a pair: in auto and sockmap
// mode the pair goes to user space in the first ops (bulk rate or queue
// cap), so the figure is mostly the user path's.
func benchForward(b *testing.B, mode Mode) {
	f := newForwarder(b, Options{Mode: mode})
	g := startGateway(b, f, 0)
	c, u := g.dial(b)
	msg := make([]byte, 1<<20)
	go func() { _, _ = io.CopyBuffer(io.Discard, struct{ io.Reader }{u}, make([]byte, 256<<10)) }()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	// CPU per GB of the whole process (writer, gateway and reader): on a
	// shared machine it moves less than wall time does.
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(b.N)*float64(len(msg))/1e9), "cpu-s/GB")
	c.CloseWrite()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// No allocation per forwarded chunk: a 1 MiB write is 32 or more chunks
// of the user path (read/write or splice), so anything allocated per chunk
// shows as at least one allocation per op.
func TestNoAllocationPerChunk(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector (sync.Pool drops items); make test runs this test without -race too")
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			if m.mode != Splice {
				requireEBPF(t)
			}
			r := testing.Benchmark(func(b *testing.B) { benchForward(b, m.mode) })
			t.Logf("%d ops of 1 MiB: %d allocs/op, %d B/op", r.N, r.AllocsPerOp(), r.AllocedBytesPerOp())
			if r.N < 20 {
				t.Fatalf("only %d ops ran", r.N)
			}
			if a := r.AllocsPerOp(); a != 0 {
				t.Fatalf("%d allocations per MiB forwarded, want 0", a)
			}
		})
	}
}

// Submit with one context for many pairs, as the gateway does: cancelling
// it resets every pair still open, in either path, and a pair that ended
// before leaves no registration behind.
func TestSubmitCancel(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newForwarder(t, Options{Mode: m.mode})
			front, back := listen(t), listen(t)
			defer front.Close()
			defer back.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const n = 4
			done := make(chan result, n)
			clients := make([]*net.TCPConn, n)
			servers := make([]*net.TCPConn, n)
			for i := range n {
				c, gw, up, srv := rawPair(t, front, back)
				clients[i], servers[i] = c, srv
				f.Submit(ctx, gw, up, nil, func(s, r int64, err error) { done <- result{s, r, err} })
			}
			// Pair 0 ends on its own before the cancel.
			clients[0].CloseWrite()
			servers[0].CloseWrite()
			if r := <-done; r.err != nil {
				t.Fatalf("pair ended by its peers: %v", r.err)
			}
			// The others still forward.
			for i := 1; i < n; i++ {
				if _, err := clients[i].Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 4)
				if _, err := io.ReadFull(servers[i], buf); err != nil || string(buf) != "ping" {
					t.Fatalf("pair %d before cancel: %q %v", i, buf, err)
				}
			}
			cancel()
			for i := 1; i < n; i++ {
				select {
				case r := <-done:
					if !errors.Is(r.err, context.Canceled) {
						t.Fatalf("pair ended with %v, want context.Canceled", r.err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("a pair outlived its cancelled context")
				}
			}
			for i := 1; i < n; i++ {
				if _, err := clients[i].Read(make([]byte, 1)); err == nil {
					t.Fatalf("client %d still open after cancel", i)
				}
			}
			f.mu.Lock()
			left := len(f.watch)
			f.mu.Unlock()
			if left != 0 {
				t.Fatalf("%d context registrations left after every pair ended", left)
			}
		})
	}
}

// A pair handed to user space while its sockets stay in the sockmap, then
// idle, gives up its goroutines, still forwards what comes next, and the
// normal wakeups are not counted as lost.
func TestHandedOffPairIdles(t *testing.T) {
	f := newForwarder(t, Options{Mode: Sockmap, QueueCap: 64 << 10})
	g := startGateway(t, f, 0)
	c, u := g.dial(t)
	deadline(t, c, u)
	gr0 := runtime.NumGoroutine() // the pair is in the kernel path: none of its own
	// The reader stays stalled until the pair is over its cap: a reader
	// that keeps up lets the kernel path carry everything, and the test
	// would never reach the in-map user path. The writer goes on until the
	// hand-off, since loopback buffers can absorb several MiB first.
	start := make(chan struct{})
	sum := make(chan []byte, 1)
	var got atomic.Int64
	go func() {
		<-start
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for {
			n, err := u.Read(buf)
			h.Write(buf[:n])
			got.Add(int64(n))
			if err != nil {
				sum <- h.Sum(nil)
				return
			}
		}
	}()
	if f.activeKernel.Load() != 1 {
		t.Fatal("the pair is not in the kernel path")
	}
	chunk := randomBytes(t, 256<<10)
	wrote := make(chan error, 1)
	var chunks int
	go func() {
		defer close(wrote)
		for f.handoffCap.Load() == 0 && chunks < 256 {
			if _, err := c.Write(chunk); err != nil {
				wrote <- err
				return
			}
			chunks++
		}
	}()
	waitFor(t, func() bool { return f.handoffCap.Load() != 0 })
	close(start)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for range chunks {
		h.Write(chunk)
	}
	waitFor(t, func() bool { return got.Load() == int64(chunks*len(chunk)) })
	// The test's reader is the one goroutine left.
	waitFor(t, func() bool { return runtime.NumGoroutine() <= gr0+1 })
	tail := randomBytes(t, 1000)
	if _, err := c.Write(tail); err != nil {
		t.Fatal(err)
	}
	h.Write(tail)
	c.CloseWrite()
	if got := <-sum; !bytes.Equal(got, h.Sum(nil)) {
		t.Fatal("stream changed across the idle hand-off")
	}
	u.CloseWrite()
	if r := g.result(t); r.err != nil {
		t.Fatalf("forward: %v", r.err)
	}
	if n := f.lostWakeups.Load(); n != 0 {
		t.Errorf("%d lost wakeups counted on a pair whose wakeups all came", n)
	}
}

// Idle pairs on the splice path give up their goroutines once quiet for
// parkAfter, wake up when bytes come either way, and leave nothing behind
// when they close.
func TestIdleSplicePairsPark(t *testing.T) {
	const n = 300
	f := newForwarder(t, Options{Mode: Splice})
	g := startGateway(t, f, 0)
	fds0, gr0 := countFDs(t), runtime.NumGoroutine()
	ends := g.openPairs(t, n)
	roundTrip := func(round byte) {
		t.Helper()
		b := make([]byte, 2)
		for i, e := range ends {
			deadline(t, e.c, e.u)
			if _, err := e.c.Write([]byte{byte(i), round}); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(e.u, b); err != nil || b[0] != byte(i) || b[1] != round {
				t.Fatalf("round %d, pair %d upstream got %v, %v", round, i, b, err)
			}
			if _, err := e.u.Write([]byte{round, byte(i)}); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(e.c, b); err != nil || b[0] != round || b[1] != byte(i) {
				t.Fatalf("round %d, pair %d client got %v, %v", round, i, b, err)
			}
		}
	}
	roundTrip(1)
	parked := func() bool { return runtime.NumGoroutine() <= gr0+10 }
	waitFor(t, parked)
	roundTrip(2) // every direction wakes from the parker
	waitFor(t, parked)
	if f.activeUser.Load() != n {
		t.Fatalf("%d pairs on the user path, want %d", f.activeUser.Load(), n)
	}
	// Half the pairs end with a FIN from the client while parked, the
	// rest with a close from the upstream; each FIN must reach the other
	// side from a parked direction.
	for i, e := range ends {
		if i%2 == 0 {
			e.c.CloseWrite()
			if _, err := e.u.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("pair %d: upstream read %v after the client's FIN, want EOF", i, err)
			}
			e.u.Close()
		} else {
			e.u.Close()
			if _, err := e.c.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("pair %d: client read %v after the upstream closed, want EOF", i, err)
			}
			e.c.Close()
		}
	}
	for range n {
		g.result(t)
	}
	for _, e := range ends {
		e.c.Close()
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= gr0+2 && countFDs(t) <= fds0 })
	f.pk.mu.Lock()
	left := len(f.pk.dirs)
	f.pk.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d parked directions left after every pair ended", left)
	}
}

// recheck tells bytes that waited without a wakeup from bytes that came
// just as a wait ran out, by when TCP received them.
func TestRecheckTellsLostFromLate(t *testing.T) {
	front := listen(t)
	c, err := net.DialTCP("tcp", nil, front.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := front.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ready, lost := recheck(s, time.Now()); ready || lost {
		t.Fatalf("empty socket: ready %v lost %v", ready, lost)
	}
	if _, err := c.Write([]byte("old")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if ready, lost := recheck(s, time.Now().Add(-10*time.Millisecond)); !ready || !lost {
		t.Fatalf("bytes 50 ms old: ready %v lost %v, want both", ready, lost)
	}
	if _, err := io.ReadFull(s, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	by := time.Now().Add(-10 * time.Millisecond)
	if _, err := c.Write([]byte("new")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { n, _ := inq(s); return n == 3 })
	if ready, lost := recheck(s, by); !ready || lost {
		t.Fatalf("bytes just in: ready %v lost %v, want ready only", ready, lost)
	}
}
