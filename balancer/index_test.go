package balancer

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/eastwest-gw/eastwest/mesh"
)

// bigMesh builds n one-port clusters of per endpoints each, with distinct
// addresses, through mesh.Build.
func bigMesh(tb testing.TB, n, per int, pol mesh.TrafficPolicy) *mesh.Snapshot {
	tb.Helper()
	svcs := make([]*mesh.Service, n)
	cl := make([]*mesh.Cluster, n)
	for i := range n {
		svcs[i] = &mesh.Service{Host: fmt.Sprintf("svc%d.ns.svc.cluster.local", i), Namespace: "ns", Exported: true,
			Ports: []mesh.Port{{Number: 8080, Protocol: "TCP"}}}
		cl[i] = &mesh.Cluster{Key: mesh.Key{Host: svcs[i].Host, Port: 8080}, Service: svcs[i],
			Endpoints: eps(i*per, per, "r1/z1"), Policy: pol}
	}
	snap, err := mesh.Build(mesh.Spec{Version: "big", Services: svcs, Clusters: cl})
	if err != nil {
		tb.Fatalf("mesh.Build: %v", err)
	}
	return snap
}

// moved returns a copy of c whose last endpoint has a new port, as the
// scale benchmark's one-cluster EDS update does.
func moved(c *mesh.Cluster, port uint16) *mesh.Cluster {
	n := *c
	n.Endpoints = slices.Clone(c.Endpoints)
	last := &n.Endpoints[len(n.Endpoints)-1]
	last.Addr = netip.AddrPortFrom(last.Addr.Addr(), port)
	return &n
}

func reconfigured(b *Balancer) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reconfigured
}

// An update that changes one cluster of 20,000 (Snapshot.Update) compiles
// that cluster only: every other cluster keeps its picking structure, the
// name map is not copied, and the index follows the moved endpoint.
func TestUpdateTouchesOnlyChangedCluster(t *testing.T) {
	const n = 20000
	e := newEnv(t, "", 1)
	snap := bigMesh(t, n, 1, mesh.TrafficPolicy{})
	e.b.Update(snap)
	if got := reconfigured(e.b); got != n {
		t.Fatalf("first Update compiled %d clusters, want %d", got, n)
	}
	list := snap.Clusters()
	before := make([]*lbState, n)
	for i, c := range list {
		before[i] = e.state(c)
	}
	names := e.b.clusters.Load()

	target := list[n/2]
	old := target.Endpoints[0].Addr
	e.b.SetHealthy(old, false)
	c2 := moved(target, 9090)
	snap2, err := snap.Update("one", c2)
	if err != nil {
		t.Fatalf("Snapshot.Update: %v", err)
	}
	e.b.Update(snap2)

	if got := reconfigured(e.b) - n; got != 1 {
		t.Errorf("one-cluster update compiled %d clusters, want 1", got)
	}
	if e.b.clusters.Load() != names {
		t.Error("name map replaced although no cluster came or went")
	}
	for i, c := range snap2.Clusters() {
		if c == c2 {
			continue
		}
		if e.state(c) != before[i] {
			t.Fatalf("cluster %s rebuilt by an update of %s", c.Name, c2.Name)
		}
	}
	ep, err := e.b.Pick(t.Context(), c2, mesh.PickRequest{})
	if err != nil || ep.Addr != c2.Endpoints[0].Addr {
		t.Errorf("Pick = %v, %v; want %v", ep.Addr, err, c2.Endpoints[0].Addr)
	}
	e.b.mu.Lock()
	defer e.b.mu.Unlock()
	if e.b.byAddr.has(old) {
		t.Errorf("index still has %v after it left its only cluster", old)
	}
	if _, ok := e.b.hc[old]; ok {
		t.Errorf("health verdict of %v kept after it left the mesh", old)
	}
	if got := e.b.byAddr.clusters(c2.Endpoints[0].Addr, nil); len(got) != 1 || got[0].src != c2 {
		t.Errorf("index of the new address = %v, want the updated cluster", got)
	}
	if len(e.b.byAddr.one) != n || len(e.b.byAddr.more) != 0 {
		t.Errorf("index holds %d addresses (%d shared), want %d (0)", len(e.b.byAddr.one), len(e.b.byAddr.more), n)
	}
}

// The allocations of a one-cluster update do not grow with the number of
// clusters: a rebuild of the index or of the name map would add at least
// one allocation per cluster.
func TestUpdateAllocsIndependentOfMeshSize(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts are checked in the full run")
	}
	allocs := func(n int) float64 {
		e := newEnv(t, "", 1)
		snap := bigMesh(t, n, 2, workedPolicy(100, nil))
		e.b.Update(snap)
		target := snap.Clusters()[n/2]
		a, err := snap.Update("a", moved(target, 9090))
		if err != nil {
			t.Fatal(err)
		}
		bb, err := snap.Update("b", moved(target, 9091))
		if err != nil {
			t.Fatal(err)
		}
		flip := false
		return testing.AllocsPerRun(50, func() {
			flip = !flip
			if flip {
				e.b.Update(a)
			} else {
				e.b.Update(bb)
			}
		})
	}
	small, big := allocs(100), allocs(10000)
	if big > small+2 {
		t.Errorf("one-cluster update: %v allocs with 10000 clusters, %v with 100: cost grows with the mesh", big, small)
	}
}

// BenchmarkUpdateOneCluster is the scale benchmark's EDS update: one
// cluster of n changes through Snapshot.Update. Time and allocations should
// not depend on n.
func BenchmarkUpdateOneCluster(b *testing.B) {
	for _, n := range []int{200, 20000} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			e := newEnv(b, "", 1)
			snap := bigMesh(b, n, 10, workedPolicy(100, nil))
			e.b.Update(snap)
			rng := rand.New(rand.NewPCG(1, 2))
			list := snap.Clusters()
			b.ReportAllocs()
			port := uint16(10000)
			for b.Loop() {
				b.StopTimer()
				port++
				next, err := snap.Update("u", moved(list[rng.IntN(n)], port))
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				e.b.Update(next)
			}
		})
	}
}

func TestDiffClusters(t *testing.T) {
	mk := func(name string) *mesh.Cluster { return &mesh.Cluster{Name: name} }
	a, b, c, d := mk("a"), mk("b"), mk("c"), mk("d")
	b2, c2 := mk("b"), mk("c")
	states := map[string]*clusterState{}
	for _, n := range []string{"a", "b", "c", "d"} {
		states[n] = &clusterState{name: n}
	}
	type want struct {
		touched []*mesh.Cluster
		fresh   []bool
		removed []string
		kept    []*mesh.Cluster
		ok      bool
	}
	tests := []struct {
		name       string
		prev, list []*mesh.Cluster
		want       want
	}{
		{"same", []*mesh.Cluster{a, b, c}, []*mesh.Cluster{a, b, c}, want{ok: true}},
		{"first install", nil, []*mesh.Cluster{a, b}, want{touched: []*mesh.Cluster{a, b}, fresh: []bool{true, true}, ok: true}},
		{"one changed", []*mesh.Cluster{a, b, c}, []*mesh.Cluster{a, b2, c}, want{touched: []*mesh.Cluster{b2}, fresh: []bool{false}, ok: true}},
		{"added in the middle", []*mesh.Cluster{a, c}, []*mesh.Cluster{a, b, c}, want{touched: []*mesh.Cluster{b}, fresh: []bool{true}, ok: true}},
		{"removed in the middle", []*mesh.Cluster{a, b, c}, []*mesh.Cluster{a, c}, want{removed: []string{"b"}, ok: true}},
		{"removed at both ends", []*mesh.Cluster{a, b, c, d}, []*mesh.Cluster{b, c}, want{removed: []string{"a", "d"}, ok: true}},
		{"removed, changed and added", []*mesh.Cluster{a, b, c}, []*mesh.Cluster{c2, d}, want{touched: []*mesh.Cluster{c2, d}, fresh: []bool{false, true}, removed: []string{"a", "b"}, ok: true}},
		{"all gone", []*mesh.Cluster{a, b}, nil, want{removed: []string{"a", "b"}, ok: true}},
		{"duplicate name keeps the first", []*mesh.Cluster{a, b, c}, []*mesh.Cluster{a, b2, b, c},
			want{touched: []*mesh.Cluster{b2}, fresh: []bool{false}, kept: []*mesh.Cluster{a, b2, c}, ok: true}},
		{"unsorted", []*mesh.Cluster{a, b, c}, []*mesh.Cluster{b2, a, c}, want{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok := diffClusters(tt.prev, tt.list, states)
			if ok != tt.want.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.want.ok)
			}
			var touched []*mesh.Cluster
			var fresh []bool
			for _, ch := range d.touched {
				touched = append(touched, ch.c)
				fresh = append(fresh, ch.cs == nil)
				if ch.cs != nil && ch.cs != states[ch.c.Name] {
					t.Errorf("%s: state of another name", ch.c.Name)
				}
			}
			var removed []string
			for _, cs := range d.removed {
				removed = append(removed, cs.name)
			}
			added := 0
			for _, f := range fresh {
				if f {
					added++
				}
			}
			if !slices.Equal(touched, tt.want.touched) || !slices.Equal(fresh, tt.want.fresh) || d.added != added ||
				!slices.Equal(removed, tt.want.removed) || !slices.Equal(d.kept, tt.want.kept) {
				t.Errorf("diff = touched %v fresh %v added %d removed %v kept %v; want %+v", touched, fresh, d.added, removed, d.kept, tt.want)
			}
		})
	}
}

// A random walk of snapshots (clusters coming, going and changing, with
// shared addresses, through Build and Snapshot.Update) and health verdicts:
// after every Update the kept index, names and verdicts equal what a
// rebuild from scratch gives, and every host carries its verdict.
func TestIncrementalUpdateMatchesRebuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	e := newEnv(t, "r1/z1", 5)
	svc := func(i int) *mesh.Service {
		return &mesh.Service{Host: fmt.Sprintf("s%d.ns.svc.cluster.local", i), Namespace: "ns", Exported: true,
			Ports: []mesh.Port{{Number: 8080, Protocol: "TCP"}}}
	}
	svcs := make([]*mesh.Service, 12)
	for i := range svcs {
		svcs[i] = svc(i)
	}
	// Addresses come from a pool of 24 so that clusters share them.
	randEps := func() []mesh.Endpoint {
		out := make([]mesh.Endpoint, rng.IntN(5))
		for i := range out {
			out[i] = mesh.Endpoint{Addr: addr(rng.IntN(24)), Locality: mesh.ParseLocality("r1/z1"), Network: "network1"}
		}
		return out
	}
	newCluster := func(i int) *mesh.Cluster {
		pol := mesh.TrafficPolicy{}
		if rng.IntN(2) == 0 {
			pol = odPolicy(mesh.OutlierDetection{})
		}
		return &mesh.Cluster{Key: mesh.Key{Host: svcs[i].Host, Port: 8080}, Service: svcs[i], Endpoints: randEps(), Policy: pol}
	}
	cur := map[int]*mesh.Cluster{}
	verdicts := map[netip.AddrPort]bool{} // what SetHealthy said and the balancer must remember
	var snap *mesh.Snapshot
	for step := range 400 {
		switch op := rng.IntN(10); {
		case op < 2 || snap == nil: // add or remove clusters: Build, reusing the others
			for range 1 + rng.IntN(3) {
				i := rng.IntN(len(svcs))
				if cur[i] != nil && rng.IntN(2) == 0 {
					delete(cur, i)
				} else {
					cur[i] = newCluster(i)
				}
			}
			var list []*mesh.Cluster
			for _, c := range cur {
				list = append(list, c)
			}
			var err error
			if snap, err = mesh.Build(mesh.Spec{Version: "b", Services: svcs, Clusters: list}); err != nil {
				t.Fatal(err)
			}
		case op < 7 && len(cur) > 0: // endpoint changes: Snapshot.Update
			var changed []*mesh.Cluster
			for i, c := range cur {
				if rng.IntN(3) == 0 {
					n := *c
					n.Endpoints = randEps()
					cur[i] = &n
					changed = append(changed, &n)
				}
			}
			var err error
			if snap, err = snap.Update("u", changed...); err != nil {
				t.Fatal(err)
			}
		default: // health verdicts on known and unknown addresses
			for range 1 + rng.IntN(3) {
				a := addr(rng.IntN(30))
				healthy := rng.IntN(2) == 0
				e.b.SetHealthy(a, healthy)
				verdicts[a] = !healthy
			}
			continue
		}
		e.b.Update(snap)
		want := map[netip.AddrPort][]string{}
		for _, c := range snap.Clusters() {
			seen := map[netip.AddrPort]bool{}
			for _, ep := range c.Endpoints {
				if !seen[ep.Addr] {
					seen[ep.Addr] = true
					want[ep.Addr] = append(want[ep.Addr], c.Name)
				}
			}
		}
		for a := range verdicts {
			if _, ok := want[a]; !ok {
				delete(verdicts, a)
			}
		}
		checkState(t, e.b, step, snap, want, verdicts)
	}
}

func checkState(t *testing.T, b *Balancer, step int, snap *mesh.Snapshot, want map[netip.AddrPort][]string, verdicts map[netip.AddrPort]bool) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	names := *b.clusters.Load()
	if len(names) != len(snap.Clusters()) {
		t.Fatalf("step %d: %d cluster states, want %d", step, len(names), len(snap.Clusters()))
	}
	for _, c := range snap.Clusters() {
		if cs := names[c.Name]; cs == nil || cs.src != c {
			t.Fatalf("step %d: state of %s is not the snapshot's cluster", step, c.Name)
		}
	}
	if len(b.byAddr.one) != len(want) {
		t.Fatalf("step %d: index has %d addresses, want %d", step, len(b.byAddr.one), len(want))
	}
	for a, w := range want {
		var got []string
		for _, cs := range b.byAddr.clusters(a, nil) {
			got = append(got, cs.name)
			h := cs.topo.byAddr[a]
			if h == nil {
				t.Fatalf("step %d: index lists %s for %v, which it does not have", step, cs.name, a)
			}
			if failed := h.flags&flagFailedActive != 0; failed != verdicts[a] {
				t.Fatalf("step %d: %v in %s failed=%v, last verdict failed=%v", step, a, cs.name, failed, verdicts[a])
			}
		}
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Fatalf("step %d: index of %v = %v, want %v", step, a, got, w)
		}
	}
	for a, s := range b.hc {
		if _, ok := want[a]; !ok {
			t.Fatalf("step %d: verdict for %v kept, no cluster has it", step, a)
		}
		if s.failed != verdicts[a] {
			t.Fatalf("step %d: verdict for %v failed=%v, want %v", step, a, s.failed, verdicts[a])
		}
	}
	for a, failed := range verdicts {
		if _, ok := b.hc[a]; !ok && failed {
			t.Fatalf("step %d: failed verdict for %v lost", step, a)
		}
	}
}
