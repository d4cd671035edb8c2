package balancer

import (
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

func odPolicy(od mesh.OutlierDetection) mesh.TrafficPolicy {
	if od.MaxEjectionPercent == nil {
		od.MaxEjectionPercent = i32(100)
	}
	return mesh.TrafficPolicy{OutlierDetection: &od}
}

func hostOf(e *testEnv, c *mesh.Cluster, id int) *host {
	return e.b.lookup(c).topo.byAddr[addr(id)]
}

func isEjected(e *testEnv, c *mesh.Cluster, id int) bool {
	e.b.mu.Lock()
	defer e.b.mu.Unlock()
	return hostOf(e, c, id).flags&flagFailedOutlier != 0
}

// OD-4: base 30 s, max 300 s, interval 10 s, a host that fails again as soon
// as it is back: ejected 30, 60, 90, ..., 300, 300 s, each unejection on an
// interval tick, so the time spent ejected is in [T, T+interval). Then each
// clean interval decrements the multiplier.
func TestOutlierEjectionSequence(t *testing.T) {
	e := newEnv(t, "", 1)
	c := e.install(t, eps(0, 3, "r1/z1"), odPolicy(mesh.OutlierDetection{Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second}))
	t0 := e.clock.now()
	boundary := t0.Add(10 * time.Second) // the cluster's sweeps run at t0 + k*10s
	tickTo := func(at time.Time) {
		e.clock.set(at)
		e.b.tick(at)
	}
	want := []time.Duration{30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300}
	for i, w := range want {
		w *= time.Second
		ejectAt := boundary.Add(-9 * time.Second) // 1 s after the previous tick
		e.clock.set(ejectAt)
		e.fail(c, c.Endpoints[0], 5)
		if !isEjected(e, c, 0) {
			t.Fatalf("ejection %d: host not ejected after 5 failures", i+1)
		}
		var unejectAt time.Time
		for n := 0; isEjected(e, c, 0); n++ {
			if n > 40 {
				t.Fatalf("ejection %d: still ejected after %d ticks", i+1, n)
			}
			tickTo(boundary)
			unejectAt = boundary
			boundary = boundary.Add(10 * time.Second)
		}
		if d := unejectAt.Sub(ejectAt); d < w || d >= w+10*time.Second {
			t.Errorf("ejection %d: ejected for %v, want [%v, %v)", i+1, d, w, w+10*time.Second)
		}
	}
	e.b.mu.Lock()
	backoff := hostOf(e, c, 0).backoff
	e.b.mu.Unlock()
	if backoff != 11 {
		t.Errorf("multiplier after the sequence = %d, want 11 (capped: 11*30 >= 300+30)", backoff)
	}
	// Decay: each clean interval takes one off.
	for k := range 11 {
		tickTo(boundary)
		boundary = boundary.Add(10 * time.Second)
		e.b.mu.Lock()
		got := hostOf(e, c, 0).backoff
		e.b.mu.Unlock()
		if got != uint32(10-k) {
			t.Fatalf("after %d clean intervals multiplier = %d, want %d", k+1, got, 10-k)
		}
	}
	if s := e.b.Stats()[0].Outlier; s.EjectionsEnforcedTotal != uint64(len(want)) || s.EjectionsActive != 0 {
		t.Errorf("stats %+v, want %d enforced, 0 active", s, len(want))
	}
}

// Unejection happens only on interval ticks, never between them.
func TestOutlierUnejectOnlyOnTicks(t *testing.T) {
	e := newEnv(t, "", 1)
	c := e.install(t, eps(0, 2, "r1/z1"), odPolicy(mesh.OutlierDetection{}))
	t0 := e.clock.now()
	e.fail(c, c.Endpoints[0], 5) // ejected at t0 for 30 s
	// Ticks before the cluster's first boundary do nothing.
	e.b.tick(t0.Add(35 * time.Second / 10))
	for _, at := range []time.Duration{10, 20} {
		e.b.tick(t0.Add(at * time.Second))
		if !isEjected(e, c, 0) {
			t.Fatalf("unejected at %vs, before base ejection time", at)
		}
	}
	// Time passing without a tick does not uneject.
	e.clock.set(t0.Add(31 * time.Second))
	if _, err := e.b.Pick(t.Context(), c, mesh.PickRequest{}); err != nil {
		t.Fatal(err)
	}
	if !isEjected(e, c, 0) {
		t.Fatal("unejected without a tick")
	}
	e.b.tick(t0.Add(30 * time.Second))
	if isEjected(e, c, 0) {
		t.Fatal("still ejected at the 30 s tick")
	}
}

// ConnectOK resets the consecutive counters (SEMANTICS 3.2).
func TestOutlierConnectOKResets(t *testing.T) {
	e := newEnv(t, "", 1)
	c := e.install(t, eps(0, 3, "r1/z1"), odPolicy(mesh.OutlierDetection{}))
	ep := c.Endpoints[0]
	e.fail(c, ep, 4)
	e.b.Report(c, ep, mesh.ConnectOK)
	e.b.Report(c, ep, mesh.Released)
	e.fail(c, ep, 4)
	if isEjected(e, c, 0) {
		t.Fatal("ejected although ConnectOK interrupted the streak")
	}
	e.b.Report(c, ep, mesh.ConnectTimeout)
	if !isEjected(e, c, 0) {
		t.Fatal("not ejected after 5 consecutive failures (the last a timeout)")
	}
}

// Istio mapping (SEMANTICS 3.4): gateway failures are detected but not
// enforced unless consecutiveGatewayErrors is set; consecutive5xxErrors 0
// disables 5xx ejection; split mode uses the local-origin counter.
func TestOutlierIstioMapping(t *testing.T) {
	tests := []struct {
		name     string
		od       mesh.OutlierDetection
		failures int
		ejected  bool
		check    func(OutlierStats) bool
	}{
		{"defaults: 5xx ejects at 5, gateway detected only", mesh.OutlierDetection{}, 5, true, func(s OutlierStats) bool {
			return s.EjectionsDetectedConsecutiveGatewayFailure == 1 && s.EjectionsEnforcedConsecutiveGatewayFailure == 0 &&
				s.EjectionsEnforcedConsecutive5xx == 1 && s.EjectionsTotal == 1
		}},
		{"defaults: 4 failures", mesh.OutlierDetection{}, 4, false, nil},
		{"consecutiveGatewayErrors 2", mesh.OutlierDetection{ConsecutiveGatewayErrors: u32(2)}, 2, true, func(s OutlierStats) bool {
			return s.EjectionsEnforcedConsecutiveGatewayFailure == 1
		}},
		{"consecutive5xxErrors 0 disables", mesh.OutlierDetection{Consecutive5xxErrors: u32(0)}, 20, false, nil},
		{"consecutive5xxErrors 2", mesh.OutlierDetection{Consecutive5xxErrors: u32(2)}, 2, true, nil},
		{"split: local origin default 5", mesh.OutlierDetection{SplitExternalLocalOrigin: true}, 5, true, func(s OutlierStats) bool {
			return s.EjectionsEnforcedConsecutiveLocalOrigin == 1 && s.EjectionsDetectedConsecutive5xx == 0
		}},
		{"split: consecutiveLocalOriginFailures 3", mesh.OutlierDetection{SplitExternalLocalOrigin: true,
			ConsecutiveLocalOriginErrors: u32(3)}, 3, true, nil},
		{"split ignores consecutive5xxErrors", mesh.OutlierDetection{SplitExternalLocalOrigin: true,
			Consecutive5xxErrors: u32(1)}, 4, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "", 1)
			c := e.install(t, eps(0, 3, "r1/z1"), odPolicy(tt.od))
			e.fail(c, c.Endpoints[0], tt.failures)
			if got := isEjected(e, c, 0); got != tt.ejected {
				t.Fatalf("ejected = %v, want %v", got, tt.ejected)
			}
			if s := e.b.Stats()[0].Outlier; tt.check != nil && !tt.check(s) {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// Without outlierDetection nothing is ever ejected.
func TestOutlierOffWithoutPolicy(t *testing.T) {
	e := newEnv(t, "", 1)
	c := e.install(t, eps(0, 3, "r1/z1"), mesh.TrafficPolicy{})
	e.fail(c, c.Endpoints[0], 50)
	if ejected(e.b, c) != 0 {
		t.Fatal("ejected without outlierDetection")
	}
}

// OD-2: close-before-data is a local-origin failure. ConnectOK precedes each
// one, so it keeps its own streak, ended by a connection released without it.
func TestOutlierClosedBeforeData(t *testing.T) {
	e := newEnv(t, "", 1)
	c := e.install(t, eps(0, 3, "r1/z1"), odPolicy(mesh.OutlierDetection{}))
	ep := c.Endpoints[0]
	bad := func(n int) {
		for range n {
			e.b.Report(c, ep, mesh.ConnectOK)
			e.b.Report(c, ep, mesh.ClosedBeforeData)
			e.b.Report(c, ep, mesh.Released)
		}
	}
	bad(4)
	e.b.Report(c, ep, mesh.ConnectOK) // a good connection
	e.b.Report(c, ep, mesh.Released)
	bad(4)
	if isEjected(e, c, 0) {
		t.Fatal("ejected although a good connection broke the streak")
	}
	bad(1)
	if !isEjected(e, c, 0) {
		t.Fatal("not ejected after 5 consecutive closes before data")
	}
	if a := hostOf(e, c, 0).active.Load(); a != 0 {
		t.Errorf("active connections = %d, want 0", a)
	}
}

// An ejected host is not picked outside panic (OD-6), and a passing active
// check readmits it unless HealthReadmitsEjected is off (HC-3).
func TestOutlierEjectedNotPickedAndReadmit(t *testing.T) {
	for _, readmit := range []bool{true, false} {
		e := newEnv(t, "", 1)
		e.b.readmit = readmit
		c := e.install(t, eps(0, 3, "r1/z1"), odPolicy(mesh.OutlierDetection{}))
		e.fail(c, c.Endpoints[0], 5)
		if got := e.counts(t, c, 3000, mesh.PickRequest{}); got[addr(0)] != 0 {
			t.Fatalf("ejected host picked %d times", got[addr(0)])
		}
		e.b.SetHealthy(addr(0), true)
		if got := isEjected(e, c, 0); got == readmit {
			t.Errorf("readmit %v: ejected after a passing check = %v", readmit, got)
		}
		if readmit {
			if got := e.counts(t, c, 3000, mesh.PickRequest{}); got[addr(0)] == 0 {
				t.Error("readmitted host never picked")
			}
		}
	}
}
