package balancer

import (
	"slices"
	"testing"

	"github.com/eastwest-gw/eastwest/mesh"
)

// workedEndpoints are L1..L4 of SEMANTICS 2.7: 5, 3, 4, 2 endpoints.
func workedEndpoints() []mesh.Endpoint {
	var e []mesh.Endpoint
	e = append(e, eps(0, 5, "us-east1/us-east1-b")...)
	e = append(e, eps(10, 3, "us-east1/us-east1-c")...)
	e = append(e, eps(20, 4, "eu-west1/eu-west1-a")...)
	e = append(e, eps(30, 2, "asia-ne1/asia-ne1-a")...)
	return e
}

func ejectAll(e *testEnv, c *mesh.Cluster, ids ...int) {
	for _, id := range ids {
		e.fail(c, mesh.Endpoint{Addr: addr(id)}, 3)
	}
}

// SEMANTICS 2.7 cases A to C, driven through Report (consecutive5xxErrors 3).
func TestWorkedExampleCases(t *testing.T) {
	e := newEnv(t, "us-east1/us-east1-b", 1)
	c := e.install(t, workedEndpoints(), workedPolicy(100, nil))

	// Case A: 2/5 ejected in P0, 1/3 in P1.
	ejectAll(e, c, 0, 1, 10)
	st := e.state(c)
	if !slices.Equal(st.loads.healthy, []uint32{84, 16, 0, 0}) {
		t.Fatalf("case A load = %v, want [84 16 0 0]", st.loads.healthy)
	}
	got := e.counts(t, c, 20000, mesh.PickRequest{})
	var p0, p1, other int
	for a, n := range got {
		switch {
		case a == addr(2) || a == addr(3) || a == addr(4):
			p0 += n
		case a == addr(11) || a == addr(12):
			p1 += n
		default:
			other += n
		}
	}
	near(t, "case A P0 share", pct(p0, 20000), 84, 1.5)
	near(t, "case A P1 share", pct(p1, 20000), 16, 1.5)
	if other != 0 {
		t.Errorf("case A: %d picks went to ejected hosts or Europe/Asia", other)
	}

	// Case B: all of P0 ejected.
	ejectAll(e, c, 2, 3, 4)
	if st := e.state(c); !slices.Equal(st.loads.healthy, []uint32{0, 93, 7, 0}) {
		t.Fatalf("case B load = %v, want [0 93 7 0]", st.loads.healthy)
	}

	// Case C: one healthy host left, in eu-west1; Istio's threshold 0.
	ejectAll(e, c, 11, 12, 20, 21, 22, 30, 31)
	if st := e.state(c); !slices.Equal(st.loads.healthy, []uint32{0, 0, 100, 0}) || st.loads.totalPanic {
		t.Fatalf("case C (threshold 0) load = %v panic %v, want [0 0 100 0]", st.loads.healthy, st.loads.totalPanic)
	}
	if got := e.counts(t, c, 1000, mesh.PickRequest{}); got[addr(23)] != 1000 {
		t.Errorf("case C (threshold 0): picks %v, want all to %v", got, addr(23))
	}
}

// Case C with Envoy's default threshold 50 (minHealthPercent 50): total
// panic, load by host count [37 21 28 14], ejected hosts selectable.
func TestWorkedExampleCaseCTotalPanic(t *testing.T) {
	e := newEnv(t, "us-east1/us-east1-b", 2)
	c := e.install(t, workedEndpoints(), workedPolicy(100, i32(50)))
	ejectAll(e, c, 0, 1, 2, 3, 4, 10, 11, 12, 20, 21, 22, 30, 31)
	st := e.state(c)
	if !slices.Equal(st.loads.healthy, []uint32{37, 21, 28, 14}) || !st.loads.totalPanic {
		t.Fatalf("load = %v totalPanic %v, want [37 21 28 14] in total panic", st.loads.healthy, st.loads.totalPanic)
	}
	got := e.counts(t, c, 20000, mesh.PickRequest{})
	if len(got) != 14 {
		t.Errorf("total panic reached %d hosts, want all 14", len(got))
	}
	var p0 int
	for i := range 5 {
		p0 += got[addr(i)]
	}
	near(t, "P0 share in total panic", pct(p0, 20000), 37, 1.5)
	if s := e.b.Stats()[0]; s.LBHealthyPanic != 20000 {
		t.Errorf("lb_healthy_panic = %d, want 20000", s.LBHealthyPanic)
	}
}

// Case D: with 14 hosts, ejection stops at max_ejection_percent, checked
// before ejecting: 10% -> 2, 34% -> 5, 50% -> 7, 100% -> 14.
func TestWorkedExampleCaseDMaxEjectionPercent(t *testing.T) {
	for _, tt := range []struct {
		pct  int32 // 0: unset, Istio/Envoy default 10
		want int
	}{{0, 2}, {10, 2}, {34, 5}, {50, 7}, {100, 14}} {
		e := newEnv(t, "us-east1/us-east1-b", 3)
		c := e.install(t, workedEndpoints(), workedPolicy(tt.pct, nil))
		for _, ep := range c.Endpoints {
			e.fail(c, ep, 3)
		}
		if got := ejected(e.b, c); got != tt.want {
			t.Errorf("maxEjectionPercent %d: %d ejected, want %d", tt.pct, got, tt.want)
		}
		s := e.b.Stats()[0].Outlier
		if s.EjectionsActive != uint64(tt.want) || s.EjectionsOverflow != uint64(14-tt.want) {
			t.Errorf("maxEjectionPercent %d: active %d overflow %d, want %d %d", tt.pct, s.EjectionsActive, s.EjectionsOverflow, tt.want, 14-tt.want)
		}
		if tt.pct < 100 && !containsAll(e.logs.String(), "level=WARN", "maxEjectionPercent") ||
			tt.want == 2 && !containsAll(e.logs.String(), "can never fail over") {
			t.Errorf("maxEjectionPercent %d: no foot-gun warning in log:\n%s", tt.pct, e.logs.String())
		}
	}
}
