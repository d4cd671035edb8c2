package balancer

import (
	"slices"
	"strings"
	"testing"

	"github.com/eastwest-gw/eastwest/mesh"
)

func TestLbPriority(t *testing.T) {
	gw := mesh.ParseLocality("r1/z1/s1")
	tests := []struct {
		ep   string
		want uint32
	}{
		{"r1/z1/s1", 0}, {"r1/z1/s2", 1}, {"r1/z1", 1}, {"r1/z2/s1", 2}, {"r2/z1/s1", 3}, {"", 3},
	}
	for _, tt := range tests {
		if got := lbPriority(gw, mesh.ParseLocality(tt.ep)); got != tt.want {
			t.Errorf("lbPriority(%q) = %d, want %d", tt.ep, got, tt.want)
		}
	}
}

func TestLocalityMatch(t *testing.T) {
	l := mesh.ParseLocality("r1/z1/s1")
	tests := []struct {
		rule string
		want bool
	}{
		{"r1", true}, {"r1/*", true}, {"r1/z1/*", true}, {"r1/z1/s1", true}, {"*", true},
		{"r2", false}, {"r1/z2", false}, {"r1/z1/s2", false}, {"", false}, {"*/z1", true}, {"*/z2", false},
	}
	for _, tt := range tests {
		if got := localityMatch(l, tt.rule); got != tt.want {
			t.Errorf("localityMatch(%q) = %v, want %v", tt.rule, got, tt.want)
		}
	}
}

func groupsOf(locs ...string) []group {
	out := make([]group, len(locs))
	for i, l := range locs {
		out[i] = group{locality: mesh.ParseLocality(l), weight: 1, eps: []int{i}}
	}
	return out
}

func prios(groups []group) []uint32 {
	var out []uint32
	for _, g := range groups {
		out = append(out, g.priority)
	}
	return out
}

// SEMANTICS 2.6: failover multiplies by 5, only the first matching "from"
// counts, then compaction.
func TestApplyLocalityFailover(t *testing.T) {
	gw := mesh.ParseLocality("us-east1/us-east1-b")
	tests := []struct {
		name     string
		locs     []string
		failover []mesh.Failover
		want     []uint32
	}{
		{"worked example 2.7", []string{"us-east1/us-east1-b", "us-east1/us-east1-c", "eu-west1/eu-west1-a", "asia-ne1/asia-ne1-a"},
			[]mesh.Failover{{From: "us-east1", To: "eu-west1"}}, []uint32{0, 1, 2, 3}},
		{"no failover list", []string{"us-east1/us-east1-b", "eu-west1/a", "asia-ne1/a"}, nil, []uint32{0, 1, 1}},
		{"first from wins", []string{"us-east1/us-east1-b", "eu-west1/a", "asia-ne1/a"},
			[]mesh.Failover{{From: "us-east1", To: "asia-ne1"}, {From: "us-east1", To: "eu-west1"}}, []uint32{0, 2, 1}},
		{"other from ignored", []string{"us-east1/us-east1-b", "eu-west1/a"},
			[]mesh.Failover{{From: "us-west1", To: "asia-ne1"}}, []uint32{0, 1}},
		{"compaction of gaps", []string{"eu-west1/a", "asia-ne1/a"},
			[]mesh.Failover{{From: "us-east1", To: "eu-west1"}}, []uint32{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := groupsOf(tt.locs...)
			applyLocalityFailover(gw, g, tt.failover)
			if got := prios(g); !slices.Equal(got, tt.want) {
				t.Errorf("priorities = %v, want %v", got, tt.want)
			}
		})
	}
	// Existing priorities are kept by the *5: P1/p0 sorts after P0/p3.
	g := groupsOf("us-east1/us-east1-b", "asia-ne1/a")
	g[0].priority = 1
	applyLocalityFailover(gw, g, nil)
	if got := prios(g); !slices.Equal(got, []uint32{1, 0}) {
		t.Errorf("with existing priorities: %v, want [1 0]", got)
	}
}

func TestFailoverPriorityOf(t *testing.T) {
	proxy := map[string]string{labelNetwork: "n1", labelRegion: "r1", labelZone: "z1", "app": "a"}
	keys := []string{labelNetwork, labelRegion, labelZone}
	tests := []struct {
		name string
		ep   map[string]string
		keys []string
		over map[string]string
		want uint32
	}{
		{"all match", map[string]string{labelNetwork: "n1", labelRegion: "r1", labelZone: "z1"}, keys, nil, 0},
		{"zone differs", map[string]string{labelNetwork: "n1", labelRegion: "r1", labelZone: "z2"}, keys, nil, 1},
		{"region differs", map[string]string{labelNetwork: "n1", labelRegion: "r2", labelZone: "z1"}, keys, nil, 2},
		// Network mismatch does not stop the walk; it adds N.
		{"network differs, rest match", map[string]string{labelNetwork: "n2", labelRegion: "r1", labelZone: "z1"}, keys, nil, 3},
		{"network and zone differ", map[string]string{labelNetwork: "n2", labelRegion: "r1", labelZone: "z2"}, keys, nil, 4},
		{"network and region differ", map[string]string{labelNetwork: "n2", labelRegion: "r2"}, keys, nil, 5},
		// A non-network first label stops at once.
		{"first label differs", map[string]string{"app": "b"}, []string{"app", labelRegion}, nil, 2},
		// key=value overrides the proxy's value.
		{"override matches", map[string]string{"app": "b", labelRegion: "r1"}, []string{"app", labelRegion}, map[string]string{"app": "b"}, 0},
		{"override mismatches", map[string]string{"app": "a", labelRegion: "r1"}, []string{"app", labelRegion}, map[string]string{"app": "b"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failoverPriorityOf(tt.keys, tt.over, proxy, tt.ep); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
	k, o := failoverLabels([]string{"app=b", labelRegion})
	if !slices.Equal(k, []string{"app", labelRegion}) || o["app"] != "b" || len(o) != 1 {
		t.Errorf("failoverLabels = %v %v", k, o)
	}
}

// failoverPriority splits a locality group by label priority; each part
// weighs the sum of its endpoints' weights; then compaction.
func TestApplyFailoverPrioritiesSplits(t *testing.T) {
	e := []mesh.Endpoint{
		{Locality: mesh.ParseLocality("r1/z1"), Weight: 2, Labels: map[string]string{"version": "v1"}},
		{Locality: mesh.ParseLocality("r1/z1"), Weight: 3, Labels: map[string]string{"version": "v2"}},
		{Locality: mesh.ParseLocality("r1/z1"), Weight: 0, Labels: map[string]string{"version": "v1"}},
		{Locality: mesh.ParseLocality("r2/z1"), Labels: map[string]string{"version": "v2"}},
	}
	labels := make([]map[string]string, len(e))
	for i := range e {
		labels[i] = endpointLabels(e[i])
	}
	groups := []group{{locality: e[0].Locality, weight: 6, eps: []int{0, 1, 2}}, {locality: e[3].Locality, weight: 1, eps: []int{3}}}
	proxy := map[string]string{"version": "v1", labelRegion: "r1"}
	out := applyFailoverPriorities(groups, e, labels, proxy, []string{"version", labelRegion})
	type res struct {
		loc    string
		prio   uint32
		weight uint32
		n      int
	}
	var got []res
	for _, g := range out {
		got = append(got, res{g.locality.String(), g.priority, g.weight, len(g.eps)})
	}
	// r1/z1 v1 (match both) = raw 0; r1/z1 v2 = raw 2; r2/z1 v2 = raw 2.
	want := []res{{"r1/z1", 0, 3, 2}, {"r1/z1", 1, 3, 1}, {"r2/z1", 1, 1, 1}}
	if !slices.Equal(got, want) {
		t.Errorf("groups = %v, want %v", got, want)
	}
	// No proxy labels: Istio leaves the groups alone.
	if out := applyFailoverPriorities(groups, e, labels, nil, []string{"version"}); len(out) != 2 {
		t.Errorf("without proxy labels: %d groups, want 2", len(out))
	}
}

// distribute: ceil(orig*to/sum), unlisted localities dropped, a zero "to"
// weight leaves the original weight (Istio only sets positive weights).
func TestApplyLocalityWeights(t *testing.T) {
	gw := mesh.ParseLocality("r1/z1/s1")
	g := groupsOf("r1/z1/s1", "r1/z2/s1", "r1/z2/s2", "r2/z1/s1", "r3/z1")
	g[1].weight, g[2].weight = 1, 2
	g[3].weight = 7
	kept, dropped := applyLocalityWeights(gw, g, []mesh.Distribute{
		{From: "r9/*", To: map[string]uint32{"r9": 100}}, // does not match the gateway
		{From: "r1/z1/*", To: map[string]uint32{"r1/z1/*": 50, "r1/z2/*": 50, "r2/*": 0}},
		{From: "r1/*", To: map[string]uint32{"r1/*": 100}}, // not reached: first match wins
	})
	type res struct {
		loc    string
		weight uint32
	}
	var got []res
	for _, k := range kept {
		got = append(got, res{k.locality.String(), k.weight})
	}
	want := []res{{"r1/z1/s1", 50}, {"r1/z2/s1", 17}, {"r1/z2/s2", 34}, {"r2/z1/s1", 7}}
	if !slices.Equal(got, want) {
		t.Errorf("kept = %v, want %v", got, want)
	}
	if !slices.Equal(dropped, []string{"r3/z1"}) {
		t.Errorf("dropped = %v, want [r3/z1]", dropped)
	}
	// No "from" matches: nothing changes.
	g2 := groupsOf("r1/z1/s1", "r3/z1")
	if kept, dropped := applyLocalityWeights(gw, g2, []mesh.Distribute{{From: "r5", To: map[string]uint32{"r5": 100}}}); len(kept) != 2 || dropped != nil {
		t.Errorf("unmatched from: kept %d dropped %v", len(kept), dropped)
	}
}

// The worked example of SEMANTICS 2.7 through planLocality: priorities,
// locality-weighted LB on, mode failover.
func TestPlanLocalityWorkedExample(t *testing.T) {
	var e []mesh.Endpoint
	e = append(e, eps(0, 5, "us-east1/us-east1-b")...)
	e = append(e, eps(10, 3, "us-east1/us-east1-c")...)
	e = append(e, eps(20, 4, "eu-west1/eu-west1-a")...)
	e = append(e, eps(30, 2, "asia-ne1/asia-ne1-a")...)
	c, _ := cluster(t, e, workedPolicy(100, nil))
	plan := planLocality(c, mesh.ParseLocality("us-east1/us-east1-b"), nil)
	if plan.mode != ModeFailover || !plan.weighted {
		t.Errorf("mode %s weighted %v, want failover, true", plan.mode, plan.weighted)
	}
	got := map[string]uint32{}
	for _, g := range plan.groups {
		got[g.locality.Region+"/"+g.locality.Zone] = g.priority
	}
	want := map[string]uint32{"us-east1/us-east1-b": 0, "us-east1/us-east1-c": 1, "eu-west1/eu-west1-a": 2, "asia-ne1/asia-ne1-a": 3}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: priority %d, want %d", k, got[k], v)
		}
	}
}

func TestPlanLocalityModes(t *testing.T) {
	no := false
	e := append(eps(0, 2, "r1/z1"), eps(10, 2, "r2/z1")...)
	od := &mesh.OutlierDetection{}
	tests := []struct {
		name     string
		gw       string
		pol      mesh.TrafficPolicy
		eps      []mesh.Endpoint
		mode     Mode
		weighted bool
		prios    []uint32 // per endpoint group
		warn     string
	}{
		{"mesh default without OD", "r1/z1", mesh.TrafficPolicy{}, e, ModeNoLocality, false, []uint32{0, 0}, ""},
		{"mesh default with OD", "r1/z1", mesh.TrafficPolicy{OutlierDetection: od}, e, ModeFailover, false, []uint32{0, 1}, ""},
		{"explicit failover without OD", "r1/z1", mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{Locality: &mesh.LocalityLB{
			Failover: []mesh.Failover{{From: "r1", To: "r2"}}}}}, e, ModeFailoverInactive, false, []uint32{0, 0}, "no outlierDetection"},
		{"enabled false", "r1/z1", mesh.TrafficPolicy{OutlierDetection: od, LoadBalancer: mesh.LoadBalancer{Locality: &mesh.LocalityLB{
			Enabled: &no, Failover: []mesh.Failover{{From: "r1", To: "r2"}}}}}, e, ModeNoLocality, false, []uint32{0, 0}, ""},
		{"gateway without locality", "", mesh.TrafficPolicy{OutlierDetection: od}, e, ModeNoLocality, false, []uint32{0, 0}, ""},
		{"distribute", "r1/z1", mesh.TrafficPolicy{LoadBalancer: mesh.LoadBalancer{Locality: &mesh.LocalityLB{
			Distribute: []mesh.Distribute{{From: "r1/*", To: map[string]uint32{"r1/*": 100}}}}}}, e, ModeDistribute, true, []uint32{0}, "distribute drops"},
		{"source priorities", "r1/z1", mesh.TrafficPolicy{}, []mesh.Endpoint{
			{Addr: addr(1), Locality: mesh.ParseLocality("r2/z1"), Priority: 0},
			{Addr: addr(2), Locality: mesh.ParseLocality("r1/z1"), Priority: 1}}, ModeFailover, false, []uint32{0, 1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := cluster(t, tt.eps, tt.pol)
			plan := planLocality(c, mesh.ParseLocality(tt.gw), nil)
			if plan.mode != tt.mode || plan.weighted != tt.weighted {
				t.Errorf("mode %s weighted %v, want %s %v", plan.mode, plan.weighted, tt.mode, tt.weighted)
			}
			if got := prios(plan.groups); !slices.Equal(got, tt.prios) {
				t.Errorf("priorities %v, want %v", got, tt.prios)
			}
			w := strings.Join(plan.warnings, ";")
			if (tt.warn == "") != (w == "") || !strings.Contains(w, tt.warn) {
				t.Errorf("warnings %q, want %q", w, tt.warn)
			}
		})
	}
}

// workedPolicy is the DestinationRule of SEMANTICS 2.7.
func workedPolicy(maxPct int32, minHealth *int32) mesh.TrafficPolicy {
	return mesh.TrafficPolicy{
		LoadBalancer: mesh.LoadBalancer{Simple: mesh.LBLeastRequest, Locality: &mesh.LocalityLB{
			Failover: []mesh.Failover{{From: "us-east1", To: "eu-west1"}}}},
		OutlierDetection: &mesh.OutlierDetection{Consecutive5xxErrors: u32(3), Interval: 10e9, BaseEjectionTime: 30e9,
			MaxEjectionPercent: i32(maxPct), MinHealthPercent: minHealth},
	}
}
