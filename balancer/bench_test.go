package balancer

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/eastwest-gw/eastwest/mesh"
)

// benchCluster spreads n endpoints over three localities with the worked
// example's policy (failover, outlier detection, least request).
func benchCluster(tb testing.TB, n int, pol mesh.TrafficPolicy) (*Balancer, *mesh.Cluster) {
	tb.Helper()
	e := newEnv(tb, "us-east1/us-east1-b", 1)
	e.b.rng = nil // production random source
	var all []mesh.Endpoint
	locs := []string{"us-east1/us-east1-b", "us-east1/us-east1-c", "eu-west1/eu-west1-a"}
	for i := range n {
		all = append(all, eps(i, 1, locs[i%len(locs)])...)
	}
	return e.b, e.install(tb, all, pol)
}

var benchPolicies = []struct {
	name string
	pol  mesh.TrafficPolicy
}{
	{"least_request", workedPolicy(100, nil)},
	{"round_robin", mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{Simple: mesh.LBRoundRobin}}},
	{"ring_hash", mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{ConsistentHash: &mesh.ConsistentHash{UseSourceIP: true}}}},
	{"maglev", mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{ConsistentHash: &mesh.ConsistentHash{UseSourceIP: true, Maglev: true}}}},
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{10, 10000} {
		for _, p := range benchPolicies {
			b.Run(fmt.Sprintf("endpoints=%d/%s", n, p.name), func(b *testing.B) {
				bal, c := benchCluster(b, n, p.pol)
				req := mesh.PickRequest{Source: sourceIP(7)}
				ctx := b.Context()
				b.ReportAllocs()
				for b.Loop() {
					if _, err := bal.Pick(ctx, c, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// Pick must not allocate, on every policy, with tried hosts, in panic and
// when failing.
func TestPickAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts are checked in the full run")
	}
	for _, p := range benchPolicies {
		bal, c := benchCluster(t, 30, p.pol)
		tried := mesh.PickRequest{Source: sourceIP(3), Tried: []netip.AddrPort{addr(0), addr(3), addr(6)}}
		for _, req := range []mesh.PickRequest{{Source: sourceIP(1)}, tried, {}} {
			if n := testing.AllocsPerRun(200, func() {
				if _, err := bal.Pick(t.Context(), c, req); err != nil {
					t.Fatal(err)
				}
				bal.Report(c, c.Endpoints[0], mesh.ConnectOK)
				bal.Report(c, c.Endpoints[0], mesh.Released)
			}); n != 0 {
				t.Errorf("%s: %v allocs per Pick+Report, want 0", p.name, n)
			}
		}
	}
	e := newEnv(t, "", 1)
	all := eps(0, 2, "r1/z1")
	all[0].Health, all[1].Health = mesh.HealthUnhealthy, mesh.HealthUnhealthy
	c := e.install(t, all, mesh.TrafficPolicy{OutlierDetection: &mesh.OutlierDetection{}})
	if n := testing.AllocsPerRun(100, func() { _, _ = e.b.Pick(t.Context(), c, mesh.PickRequest{}) }); n != 0 {
		t.Errorf("failing Pick: %v allocs, want 0", n)
	}
}
