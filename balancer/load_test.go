package balancer

import (
	"math"
	"slices"
	"testing"
	"testing/quick"
)

// pc builds a prioCount from percentages of 100 hosts.
func pc(healthy, degraded uint32) prioCount {
	return prioCount{total: 100, healthy: healthy, degraded: degraded}
}

// LB-1: the SEMANTICS 2.2 table, code values (not the Envoy doc's).
func TestPriorityLoadLB1(t *testing.T) {
	tests := []struct {
		name       string
		counts     []prioCount
		threshold  uint32
		health     []uint32
		load       []uint32
		panic      []bool
		totalPanic bool
	}{
		{"100/100", []prioCount{pc(100, 0), pc(100, 0)}, 50, []uint32{100, 100}, []uint32{100, 0}, []bool{false, false}, false},
		{"72/100", []prioCount{pc(72, 0), pc(100, 0)}, 50, []uint32{100, 100}, []uint32{100, 0}, []bool{false, false}, false},
		{"71/100", []prioCount{pc(71, 0), pc(100, 0)}, 50, []uint32{99, 100}, []uint32{99, 1}, []bool{false, false}, false},
		{"50/100", []prioCount{pc(50, 0), pc(100, 0)}, 50, []uint32{70, 100}, []uint32{70, 30}, []bool{false, false}, false},
		{"25/100", []prioCount{pc(25, 0), pc(100, 0)}, 50, []uint32{35, 100}, []uint32{35, 65}, []bool{false, false}, false},
		{"25/25/100", []prioCount{pc(25, 0), pc(25, 0), pc(100, 0)}, 50, []uint32{35, 35, 100}, []uint32{35, 35, 30}, []bool{false, false, false}, false},
		// NTA 98: before panic (threshold 0) the remainder goes to P0.
		{"25/25/20 no panic", []prioCount{pc(25, 0), pc(25, 0), pc(20, 0)}, 0, []uint32{35, 35, 28}, []uint32{37, 35, 28}, []bool{false, false, false}, false},
		// Default threshold: every priority < 50% healthy, total panic, load by host count.
		{"25/25/20 total panic", []prioCount{pc(25, 0), pc(25, 0), pc(20, 0)}, 50, []uint32{35, 35, 28}, []uint32{34, 33, 33}, []bool{true, true, true}, true},
		{"5/65", []prioCount{pc(5, 0), pc(65, 0)}, 50, []uint32{7, 91}, []uint32{8, 92}, []bool{true, false}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var health []uint32
			for _, c := range tt.counts {
				h, _ := availability(c, defaultOverprovisioning)
				health = append(health, h)
			}
			if !slices.Equal(health, tt.health) {
				t.Errorf("health = %v, want %v", health, tt.health)
			}
			l := computeLoads(tt.counts, defaultOverprovisioning, tt.threshold)
			if !slices.Equal(l.healthy, tt.load) {
				t.Errorf("load = %v, want %v", l.healthy, tt.load)
			}
			if !slices.Equal(l.panic, tt.panic) || l.totalPanic != tt.totalPanic {
				t.Errorf("panic = %v total %v, want %v total %v", l.panic, l.totalPanic, tt.panic, tt.totalPanic)
			}
		})
	}
}

// LB-2: degraded hosts get load only after healthy capacity runs out.
func TestPriorityLoadDegradedLB2(t *testing.T) {
	tests := []struct {
		name                    string
		healthy, degraded       uint32
		healthyLoad, degradedLd uint32
		panic                   bool
	}{
		{"100/0/0", 100, 0, 100, 0, false},
		{"71/0/29", 71, 0, 100, 0, false},
		{"71/29/0", 71, 29, 99, 1, false},
		{"25/65/10", 25, 65, 35, 65, false},
		{"5/0/95 panic", 5, 0, 100, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := computeLoads([]prioCount{pc(tt.healthy, tt.degraded)}, defaultOverprovisioning, envoyPanicThreshold)
			if l.healthy[0] != tt.healthyLoad || l.degraded[0] != tt.degradedLd || l.panic[0] != tt.panic {
				t.Errorf("got healthy %d degraded %d panic %v, want %d %d %v",
					l.healthy[0], l.degraded[0], l.panic[0], tt.healthyLoad, tt.degradedLd, tt.panic)
			}
		})
	}
}

// LB-5: panic disabled and nothing healthy: 100% to P0, which has no host
// to give.
func TestPriorityLoadNothingAvailable(t *testing.T) {
	l := computeLoads([]prioCount{{total: 3}, {total: 2}}, defaultOverprovisioning, 0)
	if !slices.Equal(l.healthy, []uint32{100, 0}) || l.totalPanic {
		t.Errorf("load = %v totalPanic %v, want [100 0] and no panic", l.healthy, l.totalPanic)
	}
	l = computeLoads([]prioCount{{total: 3}, {total: 2}}, defaultOverprovisioning, 50)
	if !slices.Equal(l.healthy, []uint32{60, 40}) || !l.totalPanic {
		t.Errorf("load = %v totalPanic %v, want [60 40] in total panic", l.healthy, l.totalPanic)
	}
}

// Property: the loads always sum to 100 when any host exists.
func TestPriorityLoadSumsTo100(t *testing.T) {
	f := func(raw []uint16, threshold uint8) bool {
		if len(raw) == 0 {
			return true
		}
		if len(raw) > 8 {
			raw = raw[:8]
		}
		counts := make([]prioCount, len(raw))
		any := false
		for i, r := range raw {
			total := uint32(r % 200)
			healthy := uint32(r>>8) % (total + 1)
			degraded := (uint32(r) * 7) % (total - healthy + 1)
			counts[i] = prioCount{total: total, healthy: healthy, degraded: degraded}
			any = any || total > 0
		}
		l := computeLoads(counts, defaultOverprovisioning, uint32(threshold)%101)
		var sum uint32
		for i := range counts {
			sum += l.healthy[i] + l.degraded[i]
		}
		_ = any
		return sum == 100
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 20000}); err != nil {
		t.Fatal(err)
	}
}

// SEMANTICS 2.4 doc vector: X weight 1, Y weight 2 (100% healthy).
func TestEffectiveLocalityWeightDocVector(t *testing.T) {
	tests := []struct {
		xHealthyPct uint32
		wantX       float64
	}{{100, 33}, {70, 33}, {69, 32}, {50, 26}, {25, 15}, {0, 0}}
	for _, tt := range tests {
		x := effectiveLocalityWeight(1, tt.xHealthyPct, 100, defaultOverprovisioning)
		y := effectiveLocalityWeight(2, 100, 100, defaultOverprovisioning)
		// The doc table is rounded by hand (69% -> 32.57 is printed 32), so
		// allow it a point; the exact share is checked below.
		if got := 100 * x / (x + y); math.Abs(got-tt.wantX) >= 1 {
			t.Errorf("X %d%% healthy: share %.2f, want %v", tt.xHealthyPct, got, tt.wantX)
		}
	}
	if x := effectiveLocalityWeight(1, 69, 100, defaultOverprovisioning); math.Abs(x-0.966) > 1e-9 {
		t.Errorf("eff(X at 69%%) = %v, want 1*1.4*0.69 = 0.966", x)
	}
	// SEMANTICS 2.7 variant: L4 weight 2 all healthy, L5 weight 6 half healthy.
	l4 := effectiveLocalityWeight(2, 2, 2, defaultOverprovisioning)
	l5 := effectiveLocalityWeight(6, 3, 6, defaultOverprovisioning)
	if math.Abs(l4-2.0) > 1e-9 || math.Abs(l5-4.2) > 1e-9 {
		t.Errorf("eff = %v, %v; want 2.0, 4.2", l4, l5)
	}
	if share := 100 * l4 / (l4 + l5); math.Abs(share-32.3) > 0.05 {
		t.Errorf("L4 share %.2f, want 32.3", share)
	}
}
