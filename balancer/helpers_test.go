package balancer

import (
	"bytes"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

// fakeClock is an injectable clock for outlier tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

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

type testEnv struct {
	b     *Balancer
	clock *fakeClock
	logs  *syncBuffer
}

// newEnv returns a Balancer for gateway locality gw with a seeded RNG, a
// fake clock starting at a fixed instant and a captured log.
func newEnv(tb testing.TB, gw string, seed uint64) *testEnv {
	tb.Helper()
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	logs := &syncBuffer{}
	b := New(Options{
		Locality: mesh.ParseLocality(gw),
		Network:  "network1",
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:      clock.now,
		Rand:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	})
	return &testEnv{b: b, clock: clock, logs: logs}
}

// addr returns 10.x.y.z:8080 for the n-th endpoint.
func addr(n int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 8080)
}

// eps returns n endpoints in locality loc, numbered from first.
func eps(first, n int, loc string) []mesh.Endpoint {
	out := make([]mesh.Endpoint, n)
	for i := range out {
		out[i] = mesh.Endpoint{Addr: addr(first + i), Locality: mesh.ParseLocality(loc), Network: "network1"}
	}
	return out
}

// cluster builds a one-cluster snapshot with mesh.Build (which sets Name)
// and returns the cluster and snapshot.
func cluster(tb testing.TB, endpoints []mesh.Endpoint, pol mesh.TrafficPolicy) (*mesh.Cluster, *mesh.Snapshot) {
	tb.Helper()
	svc := &mesh.Service{Host: "reviews.default.svc.cluster.local", Namespace: "default", Exported: true,
		Ports: []mesh.Port{{Number: 9080, Name: "tcp", Protocol: "TCP"}}}
	c := &mesh.Cluster{Key: mesh.Key{Host: svc.Host, Port: 9080}, Service: svc, Endpoints: endpoints, Policy: pol}
	snap, err := mesh.Build(mesh.Spec{Version: "test", Services: []*mesh.Service{svc}, Clusters: []*mesh.Cluster{c}})
	if err != nil {
		tb.Fatalf("mesh.Build: %v", err)
	}
	return c, snap
}

// install builds the cluster and hands it to the balancer.
func (e *testEnv) install(tb testing.TB, endpoints []mesh.Endpoint, pol mesh.TrafficPolicy) *mesh.Cluster {
	tb.Helper()
	c, snap := cluster(tb, endpoints, pol)
	e.b.Update(snap)
	return c
}

func (e *testEnv) state(c *mesh.Cluster) *lbState {
	return e.b.lookup(c).lb.Load()
}

// fail reports n connect failures for ep.
func (e *testEnv) fail(c *mesh.Cluster, ep mesh.Endpoint, n int) {
	for range n {
		e.b.Report(c, ep, mesh.ConnectFailed)
	}
}

// counts picks n times and counts hosts by address.
func (e *testEnv) counts(tb testing.TB, c *mesh.Cluster, n int, req mesh.PickRequest) map[netip.AddrPort]int {
	tb.Helper()
	out := map[netip.AddrPort]int{}
	for range n {
		ep, err := e.b.Pick(tb.Context(), c, req)
		if err != nil {
			tb.Fatalf("Pick: %v", err)
		}
		out[ep.Addr]++
	}
	return out
}

func u32(v uint32) *uint32 { return &v }
func i32(v int32) *int32   { return &v }

func ejected(b *Balancer, c *mesh.Cluster) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, h := range b.lookup(c).topo.hosts {
		if h.flags&flagFailedOutlier != 0 {
			n++
		}
	}
	return n
}

func pct(n, total int) float64 { return 100 * float64(n) / float64(total) }

func near(tb testing.TB, what string, got, want, tol float64) {
	tb.Helper()
	if d := got - want; d > tol || d < -tol {
		tb.Errorf("%s = %.2f, want %.2f ± %.2f", what, got, want, tol)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
