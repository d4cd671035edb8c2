package istioyaml

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

// fixtureDir holds what a real istiod 1.29 sent an east-west gateway for
// the YAML in its input folder (see its README.md).
const fixtureDir = "../../../shared/fixtures/istiod-1.29-eastwest"

func fixture(tb testing.TB) string {
	tb.Helper()
	if _, err := os.Stat(filepath.Join(fixtureDir, "input")); err != nil {
		tb.Skipf("istiod fixture not found at %s (it lives outside the module): %v", fixtureDir, err)
	}
	return fixtureDir
}

// edsEndpoint is one endpoint of an eds.json ClusterLoadAssignment.
type edsEndpoint struct {
	addr     string
	locality string
	weight   uint32
}

// readEDS reads eds.json: cluster name -> endpoints.
func readEDS(tb testing.TB, path string) map[string][]edsEndpoint {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var doc struct {
		Resources []struct {
			ClusterName string `json:"clusterName"`
			Endpoints   []struct {
				Locality struct {
					Region, Zone, SubZone string
				} `json:"locality"`
				LbEndpoints []struct {
					Endpoint struct {
						Address struct {
							SocketAddress struct {
								Address   string `json:"address"`
								PortValue int    `json:"portValue"`
							} `json:"socketAddress"`
						} `json:"address"`
					} `json:"endpoint"`
					LoadBalancingWeight uint32 `json:"loadBalancingWeight"`
				} `json:"lbEndpoints"`
			} `json:"endpoints"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		tb.Fatalf("eds.json: %v", err)
	}
	out := map[string][]edsEndpoint{}
	for _, r := range doc.Resources {
		out[r.ClusterName] = []edsEndpoint{}
		for _, group := range r.Endpoints {
			loc := mesh.Locality{Region: group.Locality.Region, Zone: group.Locality.Zone, Subzone: group.Locality.SubZone}
			for _, e := range group.LbEndpoints {
				sa := e.Endpoint.Address.SocketAddress
				out[r.ClusterName] = append(out[r.ClusterName], edsEndpoint{
					addr: fmt.Sprintf("%s:%d", sa.Address, sa.PortValue), locality: loc.String(), weight: e.LoadBalancingWeight})
			}
		}
	}
	return out
}

var sniDNATName = regexp.MustCompile(`(?m)^\s*name: "(outbound_\.[^";]+)"$`)

// TestFixtureIstiod loads the YAML a real istiod was given and compares the
// clusters with what it sent the gateway (node NETWORK network1, NAMESPACE
// istio-system).
func TestFixtureIstiod(t *testing.T) {
	dir := fixture(t)
	res := mustLoad(t, []string{filepath.Join(dir, "input")}, Options{Network: "network1", Namespace: "istio-system"})
	snap := res.Snapshot

	// Same SNI-DNAT cluster names as cds.txt, and as eds.json.
	cds, err := os.ReadFile(filepath.Join(dir, "cds.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range sniDNATName.FindAllStringSubmatch(string(cds), -1) {
		want = append(want, m[1])
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if got := clusterNames(snap); !slices.Equal(got, want) {
		t.Errorf("clusters\n got %v\nwant %v (cds.txt)", got, want)
	}
	eds := readEDS(t, filepath.Join(dir, "eds.json"))
	var edsNames []string
	for name := range eds {
		if sniDNATName.MatchString(`name: "` + name + `"`) {
			edsNames = append(edsNames, name)
		}
	}
	slices.Sort(edsNames)
	if got := clusterNames(snap); !slices.Equal(got, edsNames) {
		t.Errorf("clusters\n got %v\nwant %v (eds.json)", got, edsNames)
	}

	// Every endpoint istiod sent for an SNI-DNAT cluster is ours, with the
	// same locality and weight.
	for _, c := range snap.Clusters() {
		ours := map[string]edsEndpoint{}
		for _, e := range c.Endpoints {
			ours[e.Addr.String()] = edsEndpoint{addr: e.Addr.String(), locality: e.Locality.String(), weight: e.Weight}
		}
		for _, e := range eds[c.Name] {
			if got, ok := ours[e.addr]; !ok || got != e {
				t.Errorf("%s: istiod sent %+v, we have %+v", c.Name, e, got)
			}
		}
	}

	// The endpoint sets the fixture README's rules give: only mTLS-capable
	// endpoints (a serviceAccount) of network1. eds.json's reviews
	// clusters were captured before istiod had pushed the WorkloadEntries,
	// so they are checked here rather than against it.
	tests := []struct {
		host   string
		port   uint16
		subset string
		want   []edsEndpoint
	}{
		{"ratings.default.svc.cluster.local", 9080, "", nil}, // inline endpoint without mTLS
		{"ratings.default.svc.cluster.local", 9443, "", nil},
		{"reviews.default.svc.cluster.local", 9080, "", []edsEndpoint{{"127.0.0.1:19081", "us-east1/us-east1-b/rack1", 3}}},
		{"reviews.default.svc.cluster.local", 9080, "v1", []edsEndpoint{{"127.0.0.1:19081", "us-east1/us-east1-b/rack1", 3}}},
		{"reviews.default.svc.cluster.local", 9080, "v2", nil}, // reviews-v2-a has no serviceAccount
		{"reviews.default.svc.cluster.local", 9080, "v3", nil}, // reviews-v3-remote is in network2
	}
	for _, tt := range tests {
		t.Run(mesh.Key{Host: tt.host, Port: tt.port, Subset: tt.subset}.String(), func(t *testing.T) {
			c := lookup(t, snap, tt.host, tt.port, tt.subset)
			var got []edsEndpoint
			for _, e := range c.Endpoints {
				got = append(got, edsEndpoint{e.Addr.String(), e.Locality.String(), e.Weight})
				if e.Health != mesh.HealthUnknown || e.Network != "network1" || e.Namespace != "default" {
					t.Errorf("endpoint %+v: want health unknown, network1, namespace default", e)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("endpoints %+v, want %+v", got, tt.want)
			}
		})
	}

	// The DestinationRule's policy as cds.txt shows it: outlier detection
	// 5 x 5xx, 10 s, 30 s, locality LB on, algorithm left to the default.
	for _, subset := range []string{"", "v1", "v2", "v3"} {
		c := lookup(t, snap, "reviews.default.svc.cluster.local", 9080, subset)
		od := c.Policy.OutlierDetection
		if od == nil || od.Consecutive5xxErrors == nil || *od.Consecutive5xxErrors != 5 || od.Interval != 10*time.Second || od.BaseEjectionTime != 30*time.Second {
			t.Errorf("%s outlier detection %+v", c.Name, od)
		}
		if l := c.Policy.LoadBalancer.Locality; l == nil || l.Enabled == nil || !*l.Enabled {
			t.Errorf("%s locality LB %+v, want enabled", c.Name, l)
		}
		if c.Policy.LoadBalancer.Simple != mesh.LBUnspecified {
			t.Errorf("%s simple = %q, want unspecified (LEAST_REQUEST by default)", c.Name, c.Policy.LoadBalancer.Simple)
		}
	}
	if _, reason := snap.Lookup("api.example.com", 443, ""); reason != mesh.ReasonNotExported {
		t.Errorf("MESH_EXTERNAL api.example.com: reason %v, want not_exported", reason)
	}
	for _, w := range [][]string{
		{"gateway.yaml", "Gateway istio-system/cross-network-gateway", "ignored"},
		{"ratings.yaml", "ServiceEntry default/ratings", "1 endpoint(s) dropped: not mTLS-capable"},
		{"reviews.yaml", "ServiceEntry default/reviews", "1 endpoint(s) dropped: not mTLS-capable"},
		{"reviews.yaml", "ServiceEntry default/reviews", "1 endpoint(s) dropped: in a network other"},
	} {
		if !hasWarning(res.Warnings, w...) {
			t.Errorf("no warning with %q in %v", w, res.Warnings)
		}
	}
	if len(res.Files) != 3 {
		t.Errorf("files %v, want the 3 input files", res.Files)
	}
}
