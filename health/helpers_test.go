package health

import (
	"bytes"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// fakeClock is an injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// event is one Sink call.
type event struct {
	ep       netip.AddrPort
	degraded bool // SetDegraded rather than SetHealthy
	value    bool
	at       time.Time
}

// recordSink records Sink and DegradedSink calls and the current verdicts.
type recordSink struct {
	mu       sync.Mutex
	events   []event
	healthy  map[netip.AddrPort]bool
	degraded map[netip.AddrPort]bool
	changed  chan struct{}
}

func newRecordSink() *recordSink {
	return &recordSink{healthy: map[netip.AddrPort]bool{}, degraded: map[netip.AddrPort]bool{}, changed: make(chan struct{}, 1)}
}

func (s *recordSink) SetHealthy(ep netip.AddrPort, healthy bool) {
	s.mu.Lock()
	s.events = append(s.events, event{ep: ep, value: healthy, at: time.Now()})
	s.healthy[ep] = healthy
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *recordSink) SetDegraded(ep netip.AddrPort, degraded bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, event{ep: ep, degraded: true, value: degraded, at: time.Now()})
	s.degraded[ep] = degraded
}

// state returns the last verdict for ep; an endpoint never reported is
// healthy, as the balancer assumes.
func (s *recordSink) state(ep netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.healthy[ep]
	return !ok || h
}

func (s *recordSink) count(ep netip.AddrPort, value bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.events {
		if e.ep == ep && !e.degraded && e.value == value {
			n++
		}
	}
	return n
}

// syncBuffer collects log output safely.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger returns a debug logger writing to a buffer.
func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// env is a Checker on a fake clock, driven by step without Run.
type env struct {
	c     *Checker
	clock *fakeClock
	sink  *recordSink
	logs  *syncBuffer
}

func newEnv(tb testing.TB, o Options) *env {
	tb.Helper()
	clock := newFakeClock()
	sink := newRecordSink()
	log, buf := testLogger()
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(1, 2))
	}
	o.Now, o.Sink, o.Logger = clock.now, sink, log
	if o.MaxChecksPerSecond == 0 {
		o.MaxChecksPerSecond = -1
	}
	c := New(o)
	tb.Cleanup(c.closeAll)
	return &env{c: c, clock: clock, sink: sink, logs: buf}
}

// due advances the clock to t and returns the checks it starts.
func (e *env) due(t time.Time) []*probe {
	e.clock.set(t)
	batch, _ := e.c.dispatch(t)
	return batch
}

// next returns the earliest due time in the queue.
func (e *env) next(tb testing.TB) time.Time {
	tb.Helper()
	e.c.mu.Lock()
	defer e.c.mu.Unlock()
	if len(e.c.queue) == 0 {
		tb.Fatal("queue empty")
	}
	return e.c.queue[0].due
}

// runOne advances to the next due time, expects exactly one check to start
// and completes it with r. It returns the time it ran at.
func (e *env) runOne(tb testing.TB, r result) time.Time {
	tb.Helper()
	at := e.next(tb)
	batch := e.due(at)
	if len(batch) != 1 {
		tb.Fatalf("at %v: %d checks started, want 1", at, len(batch))
	}
	e.c.complete(batch[0], r, at)
	return at
}

var (
	pass    = result{outcome: passed, reason: "status 200"}
	netFail = result{outcome: failNetwork, reason: "connection refused"}
	timeout = result{outcome: failTimeout, reason: "timeout"}
	bad     = result{outcome: failActive, reason: "status 503"}
)

func dur(d time.Duration) *time.Duration { return &d }

// exactCfg is a config with Envoy's exact schedule (no spread, no jitter).
func exactCfg() CheckConfig {
	return CheckConfig{Host: "*", Interval: time.Second, InitialJitter: dur(0), SuccessThreshold: 2, FailureThreshold: 3}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// checkGoroutines fails the test if goroutines started during it are still
// running shortly after its other cleanups.
func checkGoroutines(tb testing.TB) {
	tb.Helper()
	before := runtime.NumGoroutine()
	tb.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			tb.Errorf("%d goroutines leaked:\n%s", n-before, buf[:runtime.Stack(buf, true)])
		}
	})
}
