package balancer

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

// picker has proxy.Picker's method set; the balancer must satisfy it
// without importing proxy.
type picker interface {
	Pick(ctx context.Context, c *mesh.Cluster, req mesh.PickRequest) (mesh.Endpoint, error)
	Report(c *mesh.Cluster, ep mesh.Endpoint, o mesh.Outcome)
}

// sink has health.Sink's method set.
type sink interface {
	SetHealthy(ep netip.AddrPort, healthy bool)
}

var (
	_ picker = (*Balancer)(nil)
	_ sink   = (*Balancer)(nil)
)

// Locality weights inside one priority (SEMANTICS 2.4): X weight 100 with a
// varying healthy share, Y weight 200 all healthy; the EDF schedule must
// match the effective-weight share within 0.5 points over 10^5 picks.
func TestLocalityWeightedPicks(t *testing.T) {
	for _, xHealthy := range []int{100, 70, 69, 50, 25, 0} {
		e := newEnv(t, "us-east1/us-east1-a", 7)
		x := eps(0, 100, "us-east1/us-east1-b")
		y := eps(1000, 100, "us-east1/us-east1-c")
		for i := range y {
			y[i].Weight = 2
		}
		for i := xHealthy; i < 100; i++ {
			x[i].Health = mesh.HealthUnhealthy
		}
		c := e.install(t, append(x, y...), mesh.TrafficPolicy{
			LoadBalancer:     mesh.LoadBalancer{Locality: &mesh.LocalityLB{Failover: []mesh.Failover{{From: "us-east1", To: "eu-west1"}}}},
			OutlierDetection: &mesh.OutlierDetection{},
		})
		if st := e.state(c); len(st.prios) != 1 || st.prios[0].locs == nil {
			t.Fatalf("want one priority with locality weighting, got %d priorities", len(st.prios))
		}
		const n = 100000
		got := e.counts(t, c, n, mesh.PickRequest{})
		var xn int
		for a, k := range got {
			if a.Addr().As4()[2] < 3 { // addr(0..99)
				xn += k
			}
		}
		ex := effectiveLocalityWeight(100, uint32(xHealthy), 100, defaultOverprovisioning)
		ey := effectiveLocalityWeight(200, 100, 100, defaultOverprovisioning)
		near(t, "X share at "+strconv.Itoa(xHealthy)+"% healthy", pct(xn, n), 100*ex/(ex+ey), 0.5)
	}
}

// distribute 80/20 and 99/1 within 1 point; unlisted localities get nothing.
func TestDistributePicks(t *testing.T) {
	for _, split := range [][2]uint32{{80, 20}, {99, 1}} {
		e := newEnv(t, "r1/z1/s1", 11)
		all := append(append(eps(0, 3, "r1/z1/s1"), eps(100, 5, "r1/z2/s1")...), eps(200, 2, "r2/z1")...)
		c := e.install(t, all, mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{Locality: &mesh.LocalityLB{
			Distribute: []mesh.Distribute{{From: "r1/z1/*", To: map[string]uint32{"r1/z1/*": split[0], "r1/z2/*": split[1]}}}}}})
		const n = 100000
		got := e.counts(t, c, n, mesh.PickRequest{})
		var a, b, other int
		for ad, k := range got {
			switch n := ad.Addr().As4()[3]; {
			case n < 100:
				a += k
			case n < 200:
				b += k
			default:
				other += k
			}
		}
		near(t, "first locality", pct(a, n), float64(split[0]), 1)
		near(t, "second locality", pct(b, n), float64(split[1]), 1)
		if other != 0 {
			t.Errorf("unlisted locality got %d picks", other)
		}
		if !strings.Contains(e.logs.String(), "distribute drops localities that have endpoints: r2/z1") {
			t.Errorf("no distribute warning:\n%s", e.logs.String())
		}
	}
}

// LEAST_REQUEST with equal weights is P2C on active connections.
func TestLeastRequestP2C(t *testing.T) {
	e := newEnv(t, "", 5)
	c := e.install(t, eps(0, 2, "r1/z1"), mesh.TrafficPolicy{})
	busy := c.Endpoints[0]
	for range 10 {
		e.b.Report(c, busy, mesh.ConnectOK)
	}
	got := e.counts(t, c, 10000, mesh.PickRequest{})
	// P2C with replacement: the busy host only wins when both samples are it.
	near(t, "busy host share", pct(got[busy.Addr], 10000), 25, 2)
	for range 10 {
		e.b.Report(c, busy, mesh.Released)
	}
	got = e.counts(t, c, 10000, mesh.PickRequest{})
	near(t, "released host share", pct(got[busy.Addr], 10000), 50, 2)
}

// LEAST_REQUEST with unequal weights: EDF on weight/(active+1).
func TestLeastRequestWeighted(t *testing.T) {
	e := newEnv(t, "", 5)
	all := eps(0, 2, "r1/z1")
	all[0].Weight, all[1].Weight = 1, 3
	c := e.install(t, all, mesh.TrafficPolicy{})
	got := e.counts(t, c, 40000, mesh.PickRequest{})
	near(t, "weight-3 host share, idle", pct(got[addr(1)], 40000), 75, 0.5)
	for range 5 { // weight 3 / 6 = 0.5 against 1 / 1
		e.b.Report(c, all[1], mesh.ConnectOK)
	}
	got = e.counts(t, c, 30000, mesh.PickRequest{})
	near(t, "weight-3 host share with 5 active", pct(got[addr(1)], 30000), 100.0/3, 0.5)
}

func TestRoundRobinAndRandom(t *testing.T) {
	e := newEnv(t, "", 5)
	c := e.install(t, eps(0, 3, "r1/z1"), mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{Simple: mesh.LBRoundRobin}})
	var seq []netip.AddrPort
	for range 6 {
		ep, err := e.b.Pick(t.Context(), c, mesh.PickRequest{})
		if err != nil {
			t.Fatal(err)
		}
		seq = append(seq, ep.Addr)
	}
	if seq[0] == seq[1] || seq[1] == seq[2] || seq[0] == seq[2] || seq[3] != seq[0] || seq[4] != seq[1] || seq[5] != seq[2] {
		t.Errorf("round robin sequence %v is not a cycle over 3 hosts", seq)
	}
	w := eps(0, 2, "r1/z1")
	w[1].Weight = 4
	c = e.install(t, w, mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{Simple: mesh.LBRoundRobin}})
	got := e.counts(t, c, 10000, mesh.PickRequest{})
	near(t, "weighted round robin", pct(got[addr(1)], 10000), 80, 0.1)

	c = e.install(t, eps(0, 4, "r1/z1"), mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{Simple: mesh.LBRandom}})
	got = e.counts(t, c, 40000, mesh.PickRequest{})
	for a, k := range got {
		near(t, "random share of "+a.String(), pct(k, 40000), 25, 1.5)
	}
}

func sourceIP(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), uint16(40000+i))
}

// Ring hash and Maglev on the source IP: stable per source, and removing a
// host moves only about its share of sources.
func TestConsistentHash(t *testing.T) {
	for _, maglev := range []bool{false, true} {
		name := map[bool]string{false: "ring", true: "maglev"}[maglev]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, "", 9)
			c := e.install(t, eps(0, 10, "r1/z1"), mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{
				ConsistentHash: &mesh.ConsistentHash{UseSourceIP: true, Maglev: maglev}}})
			const sources = 2000
			before := make([]netip.AddrPort, sources)
			perHost := map[netip.AddrPort]int{}
			for i := range sources {
				src := sourceIP(i)
				for k := range 3 { // same IP, other ports: same host
					s := netip.AddrPortFrom(src.Addr(), src.Port()+uint16(k))
					ep, err := e.b.Pick(t.Context(), c, mesh.PickRequest{Source: s})
					if err != nil {
						t.Fatal(err)
					}
					if k == 0 {
						before[i] = ep.Addr
						perHost[ep.Addr]++
					} else if ep.Addr != before[i] {
						t.Fatalf("source %v: %v then %v", src.Addr(), before[i], ep.Addr)
					}
				}
			}
			if len(perHost) != 10 {
				t.Errorf("sources reached %d hosts, want 10", len(perHost))
			}
			removed := addr(3)
			e.b.SetHealthy(removed, false)
			moved, movedOff := 0, 0
			for i := range sources {
				ep, err := e.b.Pick(t.Context(), c, mesh.PickRequest{Source: sourceIP(i)})
				if err != nil {
					t.Fatal(err)
				}
				if ep.Addr == removed {
					t.Fatal("picked the unhealthy host")
				}
				if ep.Addr != before[i] {
					moved++
					if before[i] != removed {
						movedOff++
					}
				}
			}
			// The removed host's sources (about 10%) must move. The ring is
			// rebuilt with more points per surviving host (Envoy's scale
			// depends on the smallest normalized weight), so some sources
			// also move between survivors; bound that share.
			if moved < perHost[removed] || pct(moved, sources) > 25 {
				t.Errorf("%d of %d sources moved (%d had the removed host)", moved, sources, perHost[removed])
			}
			if pct(movedOff, sources) > 10 {
				t.Errorf("%d sources moved off surviving hosts", movedOff)
			}
		})
	}
}

// TCP-2: tried hosts are avoided while any other routable host remains;
// with everything tried, a routable host is still returned.
func TestTriedAvoided(t *testing.T) {
	for _, pol := range []mesh.TrafficPolicy{
		{},
		{LoadBalancer: mesh.LoadBalancer{Simple: mesh.LBRoundRobin}},
		{LoadBalancer: mesh.LoadBalancer{ConsistentHash: &mesh.ConsistentHash{UseSourceIP: true}}},
		{LoadBalancer: mesh.LoadBalancer{ConsistentHash: &mesh.ConsistentHash{UseSourceIP: true, Maglev: true}}},
	} {
		e := newEnv(t, "us-east1/a", 3)
		// The only untried host sits in a priority with no load.
		all := append(eps(0, 3, "us-east1/a"), eps(10, 1, "eu-west1/a")...)
		pol.OutlierDetection = &mesh.OutlierDetection{}
		c := e.install(t, all, pol)
		tried := []netip.AddrPort{addr(0), addr(1), addr(2)}
		for i := range 200 {
			ep, err := e.b.Pick(t.Context(), c, mesh.PickRequest{Source: sourceIP(i), Attempt: 3, Tried: tried})
			if err != nil {
				t.Fatal(err)
			}
			if ep.Addr != addr(10) {
				t.Fatalf("policy %+v: picked tried %v although %v remains", pol.LoadBalancer, ep.Addr, addr(10))
			}
		}
		got := e.counts(t, c, 500, mesh.PickRequest{Tried: append(tried, addr(10))})
		if len(got) == 0 {
			t.Fatal("no pick with every host tried")
		}
		two := e.counts(t, c, 500, mesh.PickRequest{Tried: tried[:1]})
		if two[addr(0)] != 0 {
			t.Errorf("policy %+v: tried host picked %d times", pol.LoadBalancer, two[addr(0)])
		}
	}
}

// No healthy host, panic disabled (Istio default with outlierDetection):
// the error wraps ErrNoHealthyUpstream and matches any sentinel with the
// same text, as proxy.ErrNoHealthyUpstream.
func TestNoHealthyUpstream(t *testing.T) {
	e := newEnv(t, "", 3)
	all := eps(0, 2, "r1/z1")
	for i := range all {
		all[i].Health = mesh.HealthUnhealthy
	}
	c := e.install(t, all, mesh.TrafficPolicy{OutlierDetection: &mesh.OutlierDetection{}})
	_, err := e.b.Pick(t.Context(), c, mesh.PickRequest{})
	proxySentinel := errors.New("no healthy upstream")
	if !errors.Is(err, ErrNoHealthyUpstream) || !errors.Is(err, proxySentinel) {
		t.Fatalf("err = %v, want it to match both sentinels", err)
	}
	if errors.Is(err, errors.New("something else")) {
		t.Error("matches an unrelated error")
	}
	if s := e.b.Stats()[0]; s.UpstreamCxNoneHealthy != 1 || s.MembershipHealthy != 0 || s.MembershipTotal != 2 {
		t.Errorf("stats %+v", s)
	}
	// Without outlierDetection Envoy's threshold 50 applies: panic routes
	// to the unhealthy hosts.
	c = e.install(t, all, mesh.TrafficPolicy{})
	if _, err := e.b.Pick(t.Context(), c, mesh.PickRequest{}); err != nil {
		t.Errorf("panic mode: %v", err)
	}
	// An empty cluster.
	c = e.install(t, nil, mesh.TrafficPolicy{})
	if _, err := e.b.Pick(t.Context(), c, mesh.PickRequest{}); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Errorf("empty cluster: %v", err)
	}
}

// A cluster the balancer has not seen (Pick racing Update) gets a simple
// choice over its endpoints.
func TestUnknownClusterFallback(t *testing.T) {
	e := newEnv(t, "", 3)
	all := eps(0, 3, "r1/z1")
	all[0].Health = mesh.HealthDraining
	c, _ := cluster(t, all, mesh.TrafficPolicy{})
	got := e.counts(t, c, 300, mesh.PickRequest{Tried: []netip.AddrPort{addr(1)}})
	if got[addr(2)] != 300 {
		t.Errorf("fallback picks %v, want all to %v", got, addr(2))
	}
	all[2].Health = mesh.HealthUnhealthy
	c, _ = cluster(t, all, mesh.TrafficPolicy{})
	if ep, err := e.b.Pick(t.Context(), c, mesh.PickRequest{Tried: []netip.AddrPort{addr(1)}}); err != nil || ep.Addr != addr(1) {
		t.Errorf("all tried: %v %v, want %v", ep.Addr, err, addr(1))
	}
}

// Degraded hosts (active check or EDS) take load only when healthy
// capacity runs out (LB-2).
func TestDegraded(t *testing.T) {
	e := newEnv(t, "", 3)
	c := e.install(t, eps(0, 4, "r1/z1"), mesh.TrafficPolicy{})
	e.b.SetDegraded(addr(0), true)
	if got := e.counts(t, c, 2000, mesh.PickRequest{}); got[addr(0)] != 0 {
		t.Errorf("degraded host picked %d times while 3/4 healthy (health 100)", got[addr(0)])
	}
	e.b.SetDegraded(addr(1), true)
	e.b.SetDegraded(addr(2), true) // healthy 1/4: health 35, degraded min(100, 105)
	st := e.state(c)
	if st.loads.healthy[0] != 35 || st.loads.degraded[0] != 65 {
		t.Errorf("loads %v/%v, want 35/65", st.loads.healthy, st.loads.degraded)
	}
	if s := e.b.Stats()[0]; s.MembershipDegraded != 3 || s.MembershipHealthy != 1 {
		t.Errorf("stats %+v", s)
	}
}

// Update keeps outlier, health and connection state of surviving endpoints,
// and health verdicts reported before an endpoint appears apply once it does.
func TestUpdateKeepsState(t *testing.T) {
	e := newEnv(t, "", 3)
	pol := odPolicy(mesh.OutlierDetection{})
	c := e.install(t, eps(0, 3, "r1/z1"), pol)
	e.fail(c, c.Endpoints[0], 5)
	e.b.Report(c, c.Endpoints[1], mesh.ConnectOK)
	e.b.SetHealthy(addr(5), false) // not in the cluster yet
	e.b.SetHealthy(addr(2), false)
	c2 := e.install(t, eps(0, 6, "r1/z1"), pol)
	if !isEjected(e, c2, 0) {
		t.Error("ejection lost on Update")
	}
	if a := hostOf(e, c2, 1).active.Load(); a != 1 {
		t.Errorf("active connections = %d, want 1", a)
	}
	got := e.counts(t, c2, 3000, mesh.PickRequest{})
	if got[addr(2)] != 0 || got[addr(5)] != 0 || got[addr(0)] != 0 {
		t.Errorf("picks %v: unhealthy or ejected hosts chosen", got)
	}
	// Released for the old cluster pointer still reaches the host.
	e.b.Report(c, c.Endpoints[1], mesh.Released)
	if a := hostOf(e, c2, 1).active.Load(); a != 0 {
		t.Errorf("active connections after Released = %d, want 0", a)
	}
}

// LB-10: the mode is logged once per change; the foot-gun of failover
// without outlier detection is a warning.
func TestModeLogging(t *testing.T) {
	e := newEnv(t, "r1/z1", 3)
	pol := mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{Locality: &mesh.LocalityLB{Failover: []mesh.Failover{{From: "r1", To: "r2"}}}}}
	e.install(t, eps(0, 2, "r1/z1"), pol)
	e.install(t, eps(0, 3, "r1/z1"), pol)
	logs := e.logs.String()
	if n := strings.Count(logs, "locality_mode=failover-inactive lb_policy"); n != 1 {
		t.Errorf("mode logged %d times, want once:\n%s", n, logs)
	}
	if n := strings.Count(logs, "level=WARN msg=\"balancer: locality failover is configured but the cluster has no outlierDetection"); n != 1 {
		t.Errorf("warning logged %d times, want once:\n%s", n, logs)
	}
}

func TestDebugClustersJSON(t *testing.T) {
	e := newEnv(t, "us-east1/us-east1-b", 3)
	c := e.install(t, workedEndpoints(), workedPolicy(100, nil))
	ejectAll(e, c, 0)
	e.b.SetHealthy(addr(1), false)
	e.b.Report(c, c.Endpoints[2], mesh.ConnectOK)
	raw, err := json.Marshal(e.b.DebugClusters())
	if err != nil {
		t.Fatal(err)
	}
	var got []DebugCluster
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(got[0].Endpoints) != 14 || len(got[0].Priorities) != 4 {
		t.Fatalf("dump %s", raw)
	}
	d := got[0]
	e0, e1, e2 := d.Endpoints[0], d.Endpoints[1], d.Endpoints[2]
	if !e0.Ejected || e0.Outlier != "unhealthy" || e0.EjectionCount != 1 || e1.Active != "unhealthy" ||
		e2.ActiveConnections != 1 || d.LocalityMode != ModeFailover || d.Endpoints[13].Priority != 3 ||
		d.Priorities[0].HealthyLoad != 84 {
		t.Errorf("dump %s", raw)
	}
}

// Run stops when its context ends and sweeps with the real clock.
func TestRunStops(t *testing.T) {
	b := New(Options{Logger: newEnv(t, "", 1).b.log})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		b.Run(ctx)
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// Concurrent picks and reports while snapshots and health change: run with
// -race.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, "us-east1/us-east1-b", 3)
	e.b.rng = nil // the runtime source, as in production
	c := e.install(t, workedEndpoints(), workedPolicy(50, nil))
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				cur := c
				ep, err := e.b.Pick(ctx, cur, mesh.PickRequest{Source: sourceIP(i)})
				if err != nil {
					continue
				}
				if (i+w)%7 == 0 {
					e.b.Report(cur, ep, mesh.ConnectFailed)
					continue
				}
				e.b.Report(cur, ep, mesh.ConnectOK)
				e.b.Report(cur, ep, mesh.Released)
			}
		})
	}
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			_, snap := cluster(t, workedEndpoints(), workedPolicy(50, nil))
			e.b.Update(snap)
			e.b.SetHealthy(addr(i%14), i%2 == 0)
			e.b.tick(e.clock.now().Add(time.Duration(i) * time.Second))
			_ = e.b.DebugClusters()
			_ = e.b.Stats()
		}
	})
	wg.Wait()
}
