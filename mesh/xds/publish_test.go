package xds

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/eastwest-gw/eastwest/mesh"
)

// Snapshots after the first share every *mesh.Cluster whose CDS and EDS
// resources did not change, so that the balancer (which skips a cluster it
// already has by pointer) recompiles only the changed ones; endpoints and
// policies are always those of the latest resources.
func TestSnapshotReusesUnchangedClusters(t *testing.T) {
	const host = "reviews.default.svc.cluster.local"
	st := newState("network1")
	cds := []*anypb.Any{mustAny(t, istioCluster(v1Name)), mustAny(t, istioCluster(v2Name))}
	if _, _, err := st.applyClusters("1", cds); err != nil {
		t.Fatal(err)
	}
	if _, err := st.applyAssignments("1", []*anypb.Any{mustAny(t, testCLA(v1Name, "10.0.0.1")), mustAny(t, testCLA(v2Name, "10.0.0.2"))}); err != nil {
		t.Fatal(err)
	}
	lookup := func(t *testing.T, snap *mesh.Snapshot, subset string) *mesh.Cluster {
		t.Helper()
		c, why := snap.Lookup(host, 9080, subset)
		if c == nil {
			t.Fatalf("subset %q: %v", subset, why)
		}
		return c
	}
	publish := func(t *testing.T) *mesh.Snapshot {
		t.Helper()
		snap, err := st.snapshot()
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	snap := publish(t)
	v1, v2 := lookup(t, snap, "v1"), lookup(t, snap, "v2")

	steps := []struct {
		name     string
		apply    func(t *testing.T)
		v1, v2   bool // changed
		v1Addr   string
		clusters int
		timeout  time.Duration // of v2
	}{
		{"nothing changed", func(t *testing.T) {}, false, false, "10.0.0.1:19081", 2, 10 * time.Second},
		{"endpoints of v1", func(t *testing.T) {
			if _, err := st.applyAssignments("2", []*anypb.Any{mustAny(t, testCLA(v1Name, "10.0.0.9"))}); err != nil {
				t.Fatal(err)
			}
		}, true, false, "10.0.0.9:19081", 2, 10 * time.Second},
		{"a cluster added", func(t *testing.T) {
			cds = append(cds, mustAny(t, istioCluster(rtName)))
			if _, _, err := st.applyClusters("2", cds); err != nil {
				t.Fatal(err)
			}
			if _, err := st.applyAssignments("3", []*anypb.Any{mustAny(t, testCLA(rtName, "10.0.0.3"))}); err != nil {
				t.Fatal(err)
			}
		}, false, false, "10.0.0.9:19081", 3, 10 * time.Second},
		{"policy of v2", func(t *testing.T) {
			c := istioCluster(v2Name)
			c.ConnectTimeout = durationpb.New(3 * time.Second)
			cds[1] = mustAny(t, c)
			if _, _, err := st.applyClusters("3", cds); err != nil {
				t.Fatal(err)
			}
		}, false, true, "10.0.0.9:19081", 3, 3 * time.Second},
		{"a cluster removed", func(t *testing.T) {
			cds = cds[:2]
			if _, _, err := st.applyClusters("4", cds); err != nil {
				t.Fatal(err)
			}
		}, false, false, "10.0.0.9:19081", 2, 3 * time.Second},
		{"v1 emptied by a delta removal", func(t *testing.T) {
			if !st.removeAssignments([]string{v1Name}) {
				t.Fatal("removal not applied")
			}
		}, true, false, "", 2, 3 * time.Second},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.apply(t)
			prev := snap
			snap = publish(t)
			if snap == prev || snap.Version == prev.Version {
				t.Fatalf("version %q not new", snap.Version)
			}
			if n := len(snap.Clusters()); n != s.clusters {
				t.Fatalf("%d clusters, want %d", n, s.clusters)
			}
			n1, n2 := lookup(t, snap, "v1"), lookup(t, snap, "v2")
			if (n1 != v1) != s.v1 || (n2 != v2) != s.v2 {
				t.Errorf("v1 new %v, v2 new %v; want %v, %v", n1 != v1, n2 != v2, s.v1, s.v2)
			}
			if got := addrs(n1); got != s.v1Addr {
				t.Errorf("v1 endpoints %q, want %q", got, s.v1Addr)
			}
			if got := n2.Policy.ConnectTimeout; got != s.timeout {
				t.Errorf("v2 connect timeout %v, want %v", got, s.timeout)
			}
			if n1.Name != v1Name || n2.Name != v2Name || n1.Service != n2.Service {
				t.Errorf("names %q %q, services %p %p", n1.Name, n2.Name, n1.Service, n2.Service)
			}
			v1, v2 = n1, n2
		})
	}
}

func addrs(c *mesh.Cluster) string {
	s := ""
	for i, e := range c.Endpoints {
		if i > 0 {
			s += ","
		}
		s += e.Addr.String()
	}
	return s
}
