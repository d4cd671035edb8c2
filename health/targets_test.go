package health

import (
	"net/netip"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

func testSnapshot(tb testing.TB) *mesh.Snapshot {
	tb.Helper()
	reviews := &mesh.Service{Host: "reviews.default.svc.cluster.local", Namespace: "default", Exported: true,
		Ports: []mesh.Port{{Number: 9080, Protocol: "TCP"}, {Number: 9081, Protocol: "TCP"}}}
	ratings := &mesh.Service{Host: "ratings.default.svc.cluster.local", Namespace: "default", Exported: true,
		Ports: []mesh.Port{{Number: 9080, Protocol: "TCP"}}}
	db := &mesh.Service{Host: "db.prod.svc.cluster.local", Namespace: "prod", Exported: true,
		Ports: []mesh.Port{{Number: 5432, Protocol: "TCP"}}}
	ep := func(addr, ns string, labels map[string]string) mesh.Endpoint {
		return mesh.Endpoint{Addr: netip.MustParseAddrPort(addr), Namespace: ns, Labels: labels}
	}
	rv := map[string]string{"app": "reviews"}
	snap, err := mesh.Build(mesh.Spec{
		Services: []*mesh.Service{reviews, ratings, db},
		Clusters: []*mesh.Cluster{
			{Key: mesh.Key{Host: reviews.Host, Port: 9080}, Service: reviews, Endpoints: []mesh.Endpoint{ep("10.0.0.1:9080", "default", rv)}},
			{Key: mesh.Key{Host: reviews.Host, Port: 9080, Subset: "v1"}, Service: reviews, Endpoints: []mesh.Endpoint{ep("10.0.0.1:9080", "default", rv)}},
			{Key: mesh.Key{Host: reviews.Host, Port: 9081}, Service: reviews, Endpoints: []mesh.Endpoint{ep("10.0.0.1:9081", "default", rv)}},
			{Key: mesh.Key{Host: ratings.Host, Port: 9080}, Service: ratings, Endpoints: []mesh.Endpoint{
				ep("10.0.0.2:9080", "default", map[string]string{"app": "ratings", "group": "vm"}),
				ep("10.0.0.3:9080", "default", map[string]string{"app": "ratings"}),
			}},
			{Key: mesh.Key{Host: db.Host, Port: 5432}, Service: db, Endpoints: []mesh.Endpoint{ep("10.0.1.1:5432", "prod", map[string]string{"group": "vm"})}},
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return snap
}

func TestTargetsFor(t *testing.T) {
	snap := testSnapshot(t)
	cfgs := []CheckConfig{
		{Host: "*", PeriodSeconds: 1},
		{Host: "*.default.svc.cluster.local", PeriodSeconds: 2},
		{Host: "*.svc.cluster.local", PeriodSeconds: 3},
		{Host: "reviews.default.svc.cluster.local", PeriodSeconds: 4},
		{Host: "reviews.default.svc.cluster.local", Port: 9081, PeriodSeconds: 5},
		{Host: "reviews.default.svc.cluster.local", Port: 1, PeriodSeconds: 6},
	}
	groups := []Group{
		{Name: "vms", Namespace: "default", Labels: map[string]string{"group": "vm"}, Probe: CheckConfig{PeriodSeconds: 7}},
		{Name: "empty", Namespace: "default", Probe: CheckConfig{PeriodSeconds: 8}}, // selects nothing
	}
	got := map[string]int32{}
	for _, tg := range TargetsFor(snap, cfgs, groups...) {
		got[tg.Cluster+" "+tg.Endpoint.String()] = tg.Config.PeriodSeconds
	}
	want := map[string]int32{
		"outbound_.9080_._.reviews.default.svc.cluster.local 10.0.0.1:9080":   4, // exact host beats everything
		"outbound_.9080_.v1_.reviews.default.svc.cluster.local 10.0.0.1:9080": 4,
		"outbound_.9081_._.reviews.default.svc.cluster.local 10.0.0.1:9081":   5, // exact host and port
		"outbound_.9080_._.ratings.default.svc.cluster.local 10.0.0.2:9080":   7, // group beats wildcards
		"outbound_.9080_._.ratings.default.svc.cluster.local 10.0.0.3:9080":   2, // longest suffix
		"outbound_.5432_._.db.prod.svc.cluster.local 10.0.1.1:5432":           3, // group in another namespace
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: periodSeconds %d, want %d", k, got[k], v)
		}
	}
	if ts := TargetsFor(snap, nil); len(ts) != 0 {
		t.Fatalf("no configs: %d targets", len(ts))
	}
	if ts := TargetsFor(nil, cfgs); ts != nil {
		t.Fatal("nil snapshot")
	}
}

// The subset and whole-service clusters of a pod share one check.
func TestTargetsForDedupInChecker(t *testing.T) {
	e := newEnv(t, Options{})
	e.c.Update(TargetsFor(testSnapshot(t), []CheckConfig{{Host: "*", InitialJitter: dur(0), Interval: time.Second}}))
	// 10.0.0.1 (3 clusters, 2 ports), .2, .3 and 10.0.1.1: 4 sidecars.
	if n := len(e.due(e.clock.now())); n != 4 {
		t.Fatalf("%d checks, want 4 (one per sidecar)", n)
	}
}
