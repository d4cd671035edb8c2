package istioyaml

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

const reviewsHost = "reviews.default.svc.cluster.local"

func TestDemoMesh(t *testing.T) {
	res := mustLoad(t, []string{"testdata/demo/mesh.yaml"}, Options{Network: "network2"})
	snap := res.Snapshot
	want := []string{
		"outbound_.9080_._.ratings.default.svc.cluster.local",
		"outbound_.9080_._.reviews.default.svc.cluster.local",
		"outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		"outbound_.9080_.v2_.reviews.default.svc.cluster.local",
	}
	if got := clusterNames(snap); !slices.Equal(got, want) {
		t.Fatalf("clusters %v, want %v", got, want)
	}
	tests := []struct {
		name, host, subset string
		want               []string
	}{
		{"all of reviews", reviewsHost, "", []string{"127.0.0.1:19081", "127.0.0.1:19082", "127.0.0.1:19083"}},
		{"reviews v1", reviewsHost, "v1", []string{"127.0.0.1:19081", "127.0.0.1:19082"}},
		{"reviews v2", reviewsHost, "v2", []string{"127.0.0.1:19083"}},
		{"ratings", "ratings.default.svc.cluster.local", "", []string{"127.0.0.1:19091"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := lookup(t, snap, tt.host, 9080, tt.subset)
			if got := addrs(c); !slices.Equal(got, tt.want) {
				t.Errorf("endpoints %v, want %v", got, tt.want)
			}
			if tt.host == reviewsHost && c.Policy.LoadBalancer.Simple != mesh.LBLeastRequest {
				t.Errorf("simple = %q, want LEAST_REQUEST", c.Policy.LoadBalancer.Simple)
			}
		})
	}
	v2 := lookup(t, snap, reviewsHost, 9080, "v2").Endpoints[0]
	if v2.Workload != "reviews-v2-a" || v2.Namespace != "default" || v2.Locality != (mesh.Locality{Region: "region2", Zone: "zone1"}) ||
		v2.Weight != 1 || v2.Labels["version"] != "v2" || v2.Network != "network2" {
		t.Errorf("reviews-v2-a endpoint %+v", v2)
	}
	if r := lookup(t, snap, "ratings.default.svc.cluster.local", 9080, "").Endpoints[0]; r.Workload != "ratings-0" {
		t.Errorf("inline endpoint workload %q, want ratings-0", r.Workload)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings %v, want none", res.Warnings)
	}
	if c, reason := snap.LookupHost("ratings.default.svc.cluster.local"); c == nil {
		t.Errorf("LookupHost(ratings) = %v", reason)
	}
	// The version is a content hash: stable for the same bytes, new for
	// others.
	again := mustLoad(t, []string{"testdata/demo/mesh.yaml"}, Options{Network: "network2"})
	other := mustLoad(t, []string{"testdata/demo/mesh.yaml"}, Options{Network: "network1"})
	if snap.Version == "" || again.Snapshot.Version != snap.Version || other.Snapshot.Version == snap.Version {
		t.Errorf("versions %q, %q (same input), %q (other network)", snap.Version, again.Snapshot.Version, other.Snapshot.Version)
	}
}

func TestLoadErrors(t *testing.T) {
	se := func(extra string) string {
		return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: x, namespace: default}
spec:
  hosts: [x.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
` + extra
	}
	const ports = "  ports: [{number: 80, name: tcp, protocol: TCP}]\n"
	dr := func(spec string) string {
		return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec:\n" + spec
	}
	tests := []struct {
		name  string
		files map[string]string
		want  []string // each must be one of the problems, as a substring
	}{
		{"invalid YAML", map[string]string{"a.yaml": "apiVersion: v1\nkind: [\n  - x: y\n z\n"},
			[]string{"a.yaml: invalid YAML: line "}},
		{"unknown field", map[string]string{"a.yaml": se(ports + "  hostz: [a]\n")},
			[]string{`a.yaml: ServiceEntry default/x: line 9: unknown field "hostz"`}},
		{"unknown nested field", map[string]string{"a.yaml": dr("  host: reviews\n  trafficPolicy:\n    outlierDetection: {consecutive5xx: 3}\n")},
			[]string{`a.yaml: DestinationRule default/reviews: line 7: unknown field "consecutive5xx"`}},
		{"unknown Istio kind", map[string]string{"a.yaml": "apiVersion: networking.istio.io/v1\nkind: Frobnicator\nmetadata: {name: f}\n"},
			[]string{"a.yaml: Frobnicator default/f: unsupported kind Frobnicator"}},
		{"Kubernetes kind", map[string]string{"a.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns1}\nspec: {}\n"},
			[]string{`a.yaml: Service ns1/s: unsupported kind Service (apiVersion "v1")`}},
		{"unknown version", map[string]string{"a.yaml": "apiVersion: networking.istio.io/v2\nkind: ServiceEntry\nmetadata: {name: s}\n"},
			[]string{`a.yaml: ServiceEntry default/s: unsupported apiVersion "networking.istio.io/v2"`}},
		{"missing name", map[string]string{"a.yaml": "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {namespace: default}\nspec: {address: 127.0.0.1}\n"},
			[]string{"a.yaml: WorkloadEntry document 1 (line 2): metadata.name is required"}},
		{"missing kind", map[string]string{"a.yaml": "apiVersion: networking.istio.io/v1\nmetadata: {name: x}\n"},
			[]string{"a.yaml: document 1 (line 1): apiVersion and kind are required"}},
		{"endpoint without address", map[string]string{"a.yaml": se(ports + "  endpoints:\n  - {serviceAccount: sa}\n")},
			[]string{"a.yaml: ServiceEntry default/x: endpoints[0].address: is required"}},
		{"WorkloadEntry without address", map[string]string{"a.yaml": weReviews("we1", `""`, "v1", "")},
			[]string{"a.yaml: WorkloadEntry default/we1: address: is required"}},
		{"STATIC inline address not an IP", map[string]string{"a.yaml": se(ports + "  endpoints:\n  - {address: db.example.com}\n")},
			[]string{`a.yaml: ServiceEntry default/x: endpoints[0].address: "db.example.com" is not an IP address, as resolution STATIC requires`}},
		{"STATIC WorkloadEntry address not an IP", map[string]string{"se.yaml": seReviews, "we.yaml": weReviews("vm1", "vm1.example.com", "v1", "")},
			[]string{`we.yaml: WorkloadEntry default/vm1: address "vm1.example.com" is not an IP address, as resolution STATIC of ServiceEntry default/reviews requires`}},
		{"address neither IP nor name", map[string]string{"a.yaml": se(ports + "  endpoints:\n  - {address: 'a b'}\n")},
			[]string{`endpoints[0].address: "a b" is neither an IP address nor a host name`}},
		{"service port out of range", map[string]string{"a.yaml": se("  ports: [{number: 70000, name: tcp, protocol: TCP}]\n")},
			[]string{"a.yaml: ServiceEntry default/x: ports[0].number: 70000 is out of range 1-65535"}},
		{"endpoint port out of range", map[string]string{"a.yaml": se(ports + "  endpoints:\n  - {address: 127.0.0.1, ports: {tcp: 0}}\n")},
			[]string{"a.yaml: ServiceEntry default/x: endpoints[0].ports.tcp: 0 is out of range 1-65535"}},
		{"endpoint port name not declared", map[string]string{"a.yaml": se(ports + "  endpoints:\n  - {address: 127.0.0.1, ports: {http: 8080}}\n")},
			[]string{`endpoints[0].ports: port name "http" is not declared by the ServiceEntry`}},
		{"duplicate port", map[string]string{"a.yaml": se("  ports: [{number: 80, name: a}, {number: 80, name: b}]\n")},
			[]string{"ports[1].number: port 80 is declared twice"}},
		{"no ports", map[string]string{"a.yaml": se("")},
			[]string{"a.yaml: ServiceEntry default/x: ports: at least one port is required"}},
		{"unknown protocol", map[string]string{"a.yaml": se("  ports: [{number: 80, name: a, protocol: QUIC}]\n")},
			[]string{`ports[0].protocol: unknown protocol "QUIC"`}},
		{"bad location", map[string]string{"a.yaml": strings.Replace(se(ports), "MESH_INTERNAL", "INSIDE", 1)},
			[]string{`location: unknown value "INSIDE"`}},
		{"duplicate resource names", map[string]string{"a.yaml": se(ports), "b.yaml": strings.Replace(se(ports), "x.default", "y.default", 1)},
			[]string{"b.yaml: ServiceEntry default/x: duplicate resource name, first declared in "}},
		{"duplicate host", map[string]string{"a.yaml": se(ports), "b.yaml": strings.Replace(se(ports), "name: x,", "name: x2,", 1)},
			[]string{`b.yaml: ServiceEntry default/x2: host "x.default.svc.cluster.local" is already declared by ServiceEntry default/x in `}},
		{"subset selects no endpoints", map[string]string{
			"se.yaml": seReviews, "we.yaml": weReviews("r1", "127.0.0.1", "v1", ""),
			"mesh/reviews.yaml": dr("  host: reviews.default.svc.cluster.local\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v9, labels: {version: v9}}\n")},
			[]string{`reviews.yaml: DestinationRule default/reviews: subset "v9" selects no endpoints`}},
		{"DR without host", map[string]string{"a.yaml": dr("  subsets: [{name: v1}]\n")},
			[]string{"a.yaml: DestinationRule default/reviews: host: is required"}},
		{"bad duration", map[string]string{"a.yaml": dr("  host: reviews\n  trafficPolicy:\n    outlierDetection: {interval: 10}\n")},
			[]string{`a.yaml: DestinationRule default/reviews: trafficPolicy.outlierDetection.interval: invalid duration "10"`}},
		{"duration below 1ms", map[string]string{"a.yaml": dr("  host: reviews\n  trafficPolicy:\n    connectionPool: {tcp: {connectTimeout: 10us}}\n")},
			[]string{"trafficPolicy.connectionPool.tcp.connectTimeout: duration 10us must be at least 1ms"}},
		{"negative numbers", map[string]string{"a.yaml": dr(`  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: -1, idleTimeout: -1s}}
    outlierDetection: {consecutive5xxErrors: -1, maxEjectionPercent: 101}
    portLevelSettings:
    - port: {number: 9080}
      outlierDetection: {consecutiveGatewayErrors: -2}
`)},
			[]string{
				"trafficPolicy.connectionPool.tcp.maxConnections: must not be negative",
				"trafficPolicy.connectionPool.tcp.idleTimeout: duration -1s must not be negative",
				"trafficPolicy.outlierDetection.consecutive5xxErrors: -1 is out of range",
				"trafficPolicy.outlierDetection.maxEjectionPercent: 101 is out of range 0-100",
				"trafficPolicy.portLevelSettings[0].outlierDetection.consecutiveGatewayErrors: -2 is out of range",
			}},
		{"bad subset name and duplicate", map[string]string{"a.yaml": dr("  host: reviews\n  subsets: [{name: V_1}, {name: v2}, {name: v2}]\n")},
			[]string{`subsets[0].name: "V_1" is not a valid DNS-1123 label`, `subsets[2].name: subset "v2" is declared twice`}},
		{"simple and consistentHash", map[string]string{"a.yaml": dr("  host: reviews\n  trafficPolicy:\n    loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}\n")},
			[]string{"trafficPolicy.loadBalancer: simple and consistentHash are mutually exclusive"}},
		{"bad exportTo", map[string]string{"a.yaml": se(ports + "  exportTo: ['~', 'Bad_NS']\n")},
			[]string{`exportTo[1]: "Bad_NS" is not`, `exportTo: "~" (export nowhere) cannot be combined`}},
		{"endpoints and selector", map[string]string{"a.yaml": se(ports + "  endpoints: [{address: 127.0.0.1}]\n  workloadSelector: {labels: {a: b}}\n")},
			[]string{"workloadSelector: endpoints and workloadSelector are mutually exclusive"}},
		{"not a mapping", map[string]string{"a.yaml": "- a\n- b\n"},
			[]string{"a.yaml: document 1 (line 1): line 1: a resource must be a mapping"}},
		{"wrong type", map[string]string{"a.yaml": se("  ports: [{number: eighty}]\n")},
			[]string{"a.yaml: ServiceEntry default/x: line 8: cannot unmarshal"}},
		{"duplicate key", map[string]string{"a.yaml": se(ports + "  resolution: DNS\n")},
			[]string{`a.yaml: ServiceEntry default/x: line 9: mapping key "resolution" already defined at line 7`}},
		{"distribute weights", map[string]string{"a.yaml": dr("  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute: [{from: 'r1/*', to: {'r1/*': 60, 'r2/*': 30}}]\n")},
			[]string{"localityLbSetting.distribute[0].to: weights sum to 90, want 100"}},
		{"maglev table not prime", map[string]string{"a.yaml": dr("  host: reviews\n  trafficPolicy:\n    loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}\n")},
			[]string{"maglev.tableSize: 1000 must be a prime number"}},
		{"portLevelSettings without port", map[string]string{"a.yaml": dr("  host: reviews\n  trafficPolicy:\n    portLevelSettings: [{loadBalancer: {simple: RANDOM}}]\n")},
			[]string{"trafficPolicy.portLevelSettings[0].port: is required"}},
		{"probe with two methods", map[string]string{"a.yaml": "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: g}\nspec:\n  template: {serviceAccount: sa}\n  probe: {tcpSocket: {port: 80}, exec: {command: [true]}}\n"},
			[]string{"a.yaml: WorkloadGroup default/g: probe: only one of httpGet"}},
		{"bad name", map[string]string{"a.yaml": strings.Replace(se(ports), "name: x,", "name: X_1,", 1)},
			[]string{`metadata.name "X_1" is not a valid DNS-1123 subdomain`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeTree(t, tt.files)
			res, err := Load(context.Background(), []string{dir}, Options{})
			if err == nil {
				t.Fatalf("no error; warnings %v", res.Warnings)
			}
			if res != nil {
				t.Errorf("result %+v with an error, want nil", res)
			}
			got := problemsOf(err)
			for _, w := range tt.want {
				found := false
				for _, g := range got {
					if strings.Contains(g, w) {
						found = true
					}
				}
				if !found {
					t.Errorf("no problem contains %q; problems:\n  %s", w, strings.Join(got, "\n  "))
				}
			}
			for _, g := range got {
				if !strings.HasPrefix(g, dir) {
					t.Errorf("problem %q does not start with the file name", g)
				}
			}
			var e *Error
			if !errors.As(err, &e) || e.File == "" {
				t.Errorf("errors.As(*Error) = %v", e)
			}
		})
	}
}

func TestLoadErrorsListsEveryProblem(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"a.yaml": "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec: {hostz: []}\n",
		"b.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b}\nspec: {host: ''}\n",
		"c.yaml": "{{{",
	})
	_, err := Load(context.Background(), []string{dir}, Options{})
	if err == nil {
		t.Fatal("no error")
	}
	got := problemsOf(err)
	for _, want := range []string{"a.yaml: ServiceEntry default/a", "b.yaml: ConfigMap default/b", "b.yaml: DestinationRule default/b: host", "c.yaml: invalid YAML"} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("missing %q in\n  %s", want, strings.Join(got, "\n  "))
		}
	}
}

func TestLoadPaths(t *testing.T) {
	multi := seReviews + "---\n# a comment-only document\n---\n\n---\n" + weReviews("r1", "127.0.0.1", "v1", "") + "...\n"
	tests := []struct {
		name      string
		files     map[string]string
		paths     func(dir string) []string
		wantFiles []string // relative to dir
		wantEPs   []string
		wantErr   string
	}{
		{"multi-document file", map[string]string{"mesh.yaml": multi},
			func(d string) []string { return []string{filepath.Join(d, "mesh.yaml")} },
			[]string{"mesh.yaml"}, []string{"127.0.0.1:19081"}, ""},
		{"folder, recursive and sorted, .yml too, others skipped",
			map[string]string{
				"b/we2.yml": weReviews("r2", "127.0.0.2", "v1", ""), "a/se.yaml": seReviews, "c/notes.txt": "not yaml",
				"a/z/we1.YAML": weReviews("r1", "127.0.0.1", "v1", ""), ".hidden/dup.yaml": seReviews, "..2024_01/dup.yaml": seReviews,
			},
			func(d string) []string { return []string{d} },
			[]string{"a/se.yaml", "a/z/we1.YAML", "b/we2.yml"}, []string{"127.0.0.1:19081", "127.0.0.2:19081"}, ""},
		{"file and folder", map[string]string{"se.yaml": seReviews, "wes/1.yaml": weReviews("r1", "127.0.0.1", "v1", "")},
			func(d string) []string { return []string{filepath.Join(d, "se.yaml"), filepath.Join(d, "wes")} },
			[]string{"se.yaml", "wes/1.yaml"}, []string{"127.0.0.1:19081"}, ""},
		{"a file named twice is read once", map[string]string{"se.yaml": seReviews, "we.yaml": weReviews("r1", "127.0.0.1", "v1", "")},
			func(d string) []string { return []string{filepath.Join(d, "se.yaml"), d} },
			[]string{"se.yaml", "we.yaml"}, []string{"127.0.0.1:19081"}, ""},
		{"explicit file of any name", map[string]string{"mesh.conf": multi},
			func(d string) []string { return []string{filepath.Join(d, "mesh.conf")} },
			[]string{"mesh.conf"}, []string{"127.0.0.1:19081"}, ""},
		{"missing path", nil,
			func(d string) []string { return []string{filepath.Join(d, "nope")} },
			nil, nil, "no such file"},
		{"no paths", nil, func(string) []string { return nil }, nil, nil, "no mesh config paths"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeTree(t, tt.files)
			res, err := Load(context.Background(), tt.paths(dir), Options{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var files []string
			for _, f := range res.Files {
				rel, _ := filepath.Rel(dir, f)
				files = append(files, filepath.ToSlash(rel))
			}
			if !slices.Equal(files, tt.wantFiles) {
				t.Errorf("files %v, want %v", files, tt.wantFiles)
			}
			if got := addrs(lookup(t, res.Snapshot, reviewsHost, 9080, "")); !slices.Equal(got, tt.wantEPs) {
				t.Errorf("endpoints %v, want %v", got, tt.wantEPs)
			}
		})
	}
}

func TestAPIVersions(t *testing.T) {
	base := seReviews + "---\n" + weReviews("r1", "127.0.0.1", "v1", "") +
		"---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}]\n"
	var want []string
	for _, v := range []string{"v1", "v1beta1", "v1alpha3"} {
		t.Run(v, func(t *testing.T) {
			res := mustLoadYAML(t, strings.ReplaceAll(base, "networking.istio.io/v1\n", "networking.istio.io/"+v+"\n"), Options{})
			got := clusterNames(res.Snapshot)
			if len(got) != 4 {
				t.Errorf("clusters %v, want 4 (two TCP ports, each whole and subset v1)", got)
			}
			if want == nil {
				want = got
			} else if !slices.Equal(got, want) {
				t.Errorf("clusters %v, want %v as with v1", got, want)
			}
		})
	}
}

func TestExportTo(t *testing.T) {
	se := func(ns, exportTo string) string {
		return "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s, namespace: " + ns + "}\nspec:\n" +
			"  hosts: [s.example.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: tcp}]\n" +
			"  endpoints: [{address: 127.0.0.1, serviceAccount: sa}]\n" + exportTo
	}
	tests := []struct {
		name, ns, exportTo string
		exported           bool
	}{
		{"unset", "default", "", true},
		{"star", "default", "  exportTo: ['*']\n", true},
		{"dot, other namespace", "default", "  exportTo: ['.']\n", false},
		{"dot, gateway namespace", "istio-system", "  exportTo: ['.']\n", true},
		{"gateway namespace named", "default", "  exportTo: [foo, istio-system]\n", true},
		{"other namespaces", "default", "  exportTo: [foo, bar]\n", false},
		{"nowhere", "default", "  exportTo: ['~']\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustLoadYAML(t, se(tt.ns, tt.exportTo), Options{})
			c, reason := res.Snapshot.Lookup("s.example.internal", 80, "")
			if tt.exported && c == nil {
				t.Errorf("Lookup = %v, want a cluster", reason)
			}
			if !tt.exported && (c != nil || reason != mesh.ReasonNotExported) {
				t.Errorf("Lookup = %v, %v; want not_exported", c, reason)
			}
			if !tt.exported && !hasWarning(res.Warnings, "not exported to the gateway's namespace istio-system") {
				t.Errorf("no warning in %v", res.Warnings)
			}
		})
	}

	// A DestinationRule hidden from the gateway is ignored: no subsets.
	t.Run("DestinationRule", func(t *testing.T) {
		for _, exp := range []string{"['.']", "[other]"} {
			res := mustLoadYAML(t, seReviews+"---\n"+weReviews("r1", "127.0.0.1", "v1", "")+
				"---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: reviews\n  exportTo: "+exp+
				"\n  subsets: [{name: v1, labels: {version: v1}}]\n", Options{})
			if _, reason := res.Snapshot.Lookup(reviewsHost, 9080, "v1"); reason != mesh.ReasonUnknownSubset {
				t.Errorf("exportTo %s: subset lookup %v, want unknown_subset", exp, reason)
			}
			if !hasWarning(res.Warnings, "DestinationRule default/r", "not exported to the gateway's namespace") {
				t.Errorf("exportTo %s: no warning in %v", exp, res.Warnings)
			}
		}
	})
}

func TestMeshExternal(t *testing.T) {
	tests := []struct {
		name, location string
		warn           bool
	}{
		{"explicit", "  location: MESH_EXTERNAL\n", false},
		{"unset means MESH_EXTERNAL", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustLoadYAML(t, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\nspec:\n"+
				"  hosts: [db.example.com]\n  resolution: STATIC\n  ports: [{number: 5432, name: tcp}]\n"+tt.location+
				"  endpoints: [{address: 127.0.0.1, serviceAccount: sa}]\n", Options{})
			snap := res.Snapshot
			if len(snap.Clusters()) != 0 || snap.Services() != 1 {
				t.Errorf("clusters %v, services %d; want none and 1", clusterNames(snap), snap.Services())
			}
			if _, reason := snap.Lookup("db.example.com", 5432, ""); reason != mesh.ReasonNotExported {
				t.Errorf("Lookup reason %v, want not_exported", reason)
			}
			if got := hasWarning(res.Warnings, "location: unset"); got != tt.warn {
				t.Errorf("location warning %v, want %v: %v", got, tt.warn, res.Warnings)
			}
		})
	}
}

func TestEligibility(t *testing.T) {
	doc := seReviews +
		"---\n" + weReviews("local", "127.0.0.1", "v1", "  network: net1\n") +
		"---\n" + weReviews("unset-network", "127.0.0.2", "v1", "") +
		"---\n" + weReviews("remote", "127.0.0.3", "v1", "  network: net2\n") +
		"---\n" + weReviews("remote-no-address", `""`, "v1", "  network: net2\n") +
		"---\n" + strings.Replace(weReviews("tls-label", "127.0.0.4", "v1", "  network: net1\n"), "serviceAccount: bookinfo-reviews", "labels: {app: reviews, security.istio.io/tlsMode: istio}", 1)
	doc = strings.Replace(doc, "  labels: {app: reviews, version: v1}\n  labels: {app: reviews, security", "  labels: {app: reviews, security", 1)
	doc += "---\n" + strings.Replace(weReviews("plain", "127.0.0.5", "v1", "  network: net1\n"), "  serviceAccount: bookinfo-reviews\n", "", 1)
	res := mustLoadYAML(t, doc, Options{Network: "net1"})
	c := lookup(t, res.Snapshot, reviewsHost, 9080, "")
	if got, want := addrs(c), []string{"127.0.0.1:19081", "127.0.0.2:19081", "127.0.0.4:19081"}; !slices.Equal(got, want) {
		t.Errorf("endpoints %v, want %v", got, want)
	}
	for _, w := range []string{"2 endpoint(s) dropped: in a network other than the gateway's (\"net1\")", "1 endpoint(s) dropped: not mTLS-capable"} {
		if !hasWarning(res.Warnings, "ServiceEntry default/reviews", w) {
			t.Errorf("no warning %q in %v", w, res.Warnings)
		}
	}
	// Port mapping: ports[name], else targetPort, else the service port;
	// UDP ports get no cluster.
	for _, tt := range []struct {
		port uint16
		want string
	}{{9080, "127.0.0.1:19081"}, {9443, "127.0.0.1:19443"}} {
		if got := addrs(lookup(t, res.Snapshot, reviewsHost, tt.port, ""))[0]; got != tt.want {
			t.Errorf("port %d: first endpoint %s, want %s", tt.port, got, tt.want)
		}
	}
	if _, reason := res.Snapshot.Lookup(reviewsHost, 53, ""); reason != mesh.ReasonUnknownPort {
		t.Errorf("UDP port lookup %v, want unknown_port", reason)
	}
}

func TestSubsetsAndPolicyMerge(t *testing.T) {
	doc := seReviews +
		"---\n" + weReviews("a", "127.0.0.1", "v1", "  locality: r1/z1\n  weight: 7\n") +
		"---\n" + strings.Replace(weReviews("b", "127.0.0.2", "v1", ""), "version: v1}", "version: v1, track: canary}", 1) +
		"---\n" + weReviews("c", "127.0.0.3", "v2", "") + `---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutiveGatewayErrors: 3, interval: 5s}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 250ms, idleTimeout: 30m, maxConnectionDuration: 1h, tcpKeepalive: {time: 60s}}
      http: {http2MaxRequests: 10}
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 9443}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: canary
    labels: {version: v1, track: canary}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 5}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}
      portLevelSettings:
      - port: {number: 9080}
        outlierDetection: {consecutive5xxErrors: 9}
`
	res := mustLoadYAML(t, doc, Options{})
	snap := res.Snapshot
	gw3 := uint32(3)
	tests := []struct {
		port       uint16
		subset     string
		eps        []string
		simple     mesh.LBSimple
		hash       bool
		odGateway  *uint32
		od5xx      uint32
		maxConns   int32
		connectTO  time.Duration
		noPoolNoOD bool
	}{
		{9080, "", []string{"127.0.0.1:19081", "127.0.0.2:19081", "127.0.0.3:19081"}, mesh.LBRoundRobin, false, &gw3, 0, 100, 250 * time.Millisecond, false},
		{9080, "v1", []string{"127.0.0.1:19081", "127.0.0.2:19081"}, mesh.LBRoundRobin, false, &gw3, 0, 100, 250 * time.Millisecond, false},
		// The subset's connectionPool replaces the whole top-level one.
		{9080, "canary", []string{"127.0.0.2:19081"}, mesh.LBRoundRobin, false, &gw3, 0, 5, 0, false},
		// The subset's port-level entry replaces every component.
		{9080, "v2", []string{"127.0.0.3:19081"}, mesh.LBUnspecified, false, nil, 9, 0, 0, false},
		// Top-level port-level entry: only its loadBalancer, defaults for the rest.
		{9443, "", []string{"127.0.0.1:19443", "127.0.0.2:19443", "127.0.0.3:19443"}, mesh.LBRandom, false, nil, 0, 0, 0, true},
		{9443, "v1", []string{"127.0.0.1:19443", "127.0.0.2:19443"}, mesh.LBRandom, false, nil, 0, 0, 0, true},
		// Subset loadBalancer over the port-level-merged top level.
		{9443, "v2", []string{"127.0.0.3:19443"}, mesh.LBUnspecified, true, nil, 0, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(mesh.Key{Host: reviewsHost, Port: tt.port, Subset: tt.subset}.String(), func(t *testing.T) {
			c := lookup(t, snap, reviewsHost, tt.port, tt.subset)
			if got := addrs(c); !slices.Equal(got, tt.eps) {
				t.Errorf("endpoints %v, want %v", got, tt.eps)
			}
			p := c.Policy
			if p.LoadBalancer.Simple != tt.simple {
				t.Errorf("simple %q, want %q", p.LoadBalancer.Simple, tt.simple)
			}
			if (p.LoadBalancer.ConsistentHash != nil) != tt.hash {
				t.Errorf("consistent hash %+v, want set=%v", p.LoadBalancer.ConsistentHash, tt.hash)
			}
			if tt.hash && (!p.LoadBalancer.ConsistentHash.UseSourceIP || !p.LoadBalancer.ConsistentHash.Maglev || p.LoadBalancer.ConsistentHash.TableSize != 65537) {
				t.Errorf("consistent hash %+v", p.LoadBalancer.ConsistentHash)
			}
			if p.MaxConnections != tt.maxConns || p.ConnectTimeout != tt.connectTO {
				t.Errorf("maxConnections %d connectTimeout %v, want %d %v", p.MaxConnections, p.ConnectTimeout, tt.maxConns, tt.connectTO)
			}
			od := p.OutlierDetection
			switch {
			case tt.noPoolNoOD || (tt.odGateway == nil && tt.od5xx == 0):
				if od != nil {
					t.Errorf("outlier detection %+v, want none", od)
				}
			case tt.odGateway != nil:
				if od == nil || od.ConsecutiveGatewayErrors == nil || *od.ConsecutiveGatewayErrors != *tt.odGateway || od.Interval != 5*time.Second {
					t.Errorf("outlier detection %+v", od)
				}
			default:
				if od == nil || od.Consecutive5xxErrors == nil || *od.Consecutive5xxErrors != tt.od5xx || od.ConsecutiveGatewayErrors != nil {
					t.Errorf("outlier detection %+v, want only 5xx=%d", od, tt.od5xx)
				}
			}
		})
	}
	a := lookup(t, snap, reviewsHost, 9080, "v1").Endpoints[0]
	if a.Weight != 7 || a.Locality != (mesh.Locality{Region: "r1", Zone: "z1"}) {
		t.Errorf("endpoint a %+v: want weight 7, locality r1/z1", a)
	}
	c := lookup(t, snap, reviewsHost, 9080, "")
	if c.Policy.IdleTimeout != 30*time.Minute || c.Policy.MaxConnectionDuration != time.Hour {
		t.Errorf("idle %v max duration %v", c.Policy.IdleTimeout, c.Policy.MaxConnectionDuration)
	}
	if _, reason := snap.Lookup(reviewsHost, 9080, "v9"); reason != mesh.ReasonUnknownSubset {
		t.Errorf("unknown subset: %v", reason)
	}
}

func TestOutlierAndLocalityFields(t *testing.T) {
	doc := seReviews + "---\n" + weReviews("a", "127.0.0.1", "v1", "") + `---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_CONN
      localityLbSetting:
        enabled: false
        failover: [{from: us-east1, to: us-west1}]
        failoverPriority: [topology.istio.io/network]
    outlierDetection:
      consecutiveErrors: 1
      consecutive5xxErrors: 0
      consecutiveGatewayErrors: 2
      consecutiveLocalOriginFailures: 3
      splitExternalLocalOriginErrors: true
      interval: 100ms
      baseEjectionTime: 1m
      maxEjectionTime: 5m
      maxEjectionPercent: 100
      minHealthPercent: 25
`
	res := mustLoadYAML(t, doc, Options{})
	p := lookup(t, res.Snapshot, reviewsHost, 9080, "").Policy
	u := func(v uint32) *uint32 { return &v }
	i := func(v int32) *int32 { return &v }
	want := &mesh.OutlierDetection{
		ConsecutiveErrors: u(1), Consecutive5xxErrors: u(0), ConsecutiveGatewayErrors: u(2), ConsecutiveLocalOriginErrors: u(3),
		SplitExternalLocalOrigin: true, Interval: 100 * time.Millisecond, BaseEjectionTime: time.Minute, MaxEjectionTime: 5 * time.Minute,
		MaxEjectionPercent: i(100), MinHealthPercent: i(25),
	}
	if got := p.OutlierDetection; got == nil || *got.ConsecutiveErrors != 1 || *got.Consecutive5xxErrors != 0 || *got.ConsecutiveGatewayErrors != 2 ||
		*got.ConsecutiveLocalOriginErrors != 3 || !got.SplitExternalLocalOrigin || got.Interval != want.Interval || got.BaseEjectionTime != want.BaseEjectionTime ||
		got.MaxEjectionTime != want.MaxEjectionTime || *got.MaxEjectionPercent != 100 || *got.MinHealthPercent != 25 {
		t.Errorf("outlier detection %+v, want %+v", got, want)
	}
	if p.LoadBalancer.Simple != mesh.LBLeastRequest || !hasWarning(res.Warnings, "LEAST_CONN is deprecated") {
		t.Errorf("LEAST_CONN: simple %q, warnings %v", p.LoadBalancer.Simple, res.Warnings)
	}
	l := p.LoadBalancer.Locality
	if l == nil || l.Enabled == nil || *l.Enabled || len(l.Failover) != 1 || l.Failover[0] != (mesh.Failover{From: "us-east1", To: "us-west1"}) ||
		!slices.Equal(l.FailoverPriority, []string{"topology.istio.io/network"}) {
		t.Errorf("locality %+v", l)
	}
}

func TestDestinationRulePrecedence(t *testing.T) {
	dr := func(name, ns, host, simple string) string {
		return "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " + name + ", namespace: " + ns + "}\n" +
			"spec:\n  host: " + host + "\n  trafficPolicy: {loadBalancer: {simple: " + simple + "}}\n"
	}
	base := seReviews + "---\n" + weReviews("a", "127.0.0.1", "v1", "")
	tests := []struct {
		name   string
		drs    string
		want   mesh.LBSimple
		warned []string
	}{
		{"short name in the service namespace", dr("r", "default", "reviews", "RANDOM"), mesh.LBRandom, nil},
		{"short name in another namespace does not match", dr("r", "other", "reviews", "RANDOM"), mesh.LBUnspecified, []string{"DestinationRule other/r", "matches no service"}},
		{"gateway namespace before service namespace",
			dr("svc", "default", reviewsHost, "RANDOM") + dr("gw", "istio-system", reviewsHost, "ROUND_ROBIN"),
			mesh.LBRoundRobin, []string{"DestinationRule default/svc", "DestinationRule istio-system/gw in"}},
		{"first in input order wins within a namespace",
			dr("one", "default", reviewsHost, "RANDOM") + dr("two", "default", reviewsHost, "ROUND_ROBIN"),
			mesh.LBRandom, []string{"DestinationRule default/two", "takes precedence"}},
		{"exact host before wildcard", dr("wild", "default", "'*.svc.cluster.local'", "RANDOM") + dr("exact", "default", reviewsHost, "ROUND_ROBIN"),
			mesh.LBRoundRobin, []string{"DestinationRule default/wild", "takes precedence"}},
		{"wildcard applies", dr("wild", "default", "'*.cluster.local'", "RANDOM"), mesh.LBRandom, nil},
		{"third namespace is never consulted", dr("r", "elsewhere", reviewsHost, "RANDOM"), mesh.LBUnspecified, []string{"DestinationRule elsewhere/r", "only from the gateway's namespace"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustLoadYAML(t, base+tt.drs, Options{})
			if got := lookup(t, res.Snapshot, reviewsHost, 9080, "").Policy.LoadBalancer.Simple; got != tt.want {
				t.Errorf("simple %q, want %q", got, tt.want)
			}
			if tt.warned != nil && !hasWarning(res.Warnings, tt.warned...) {
				t.Errorf("no warning with %q in %v", tt.warned, res.Warnings)
			}
		})
	}
}

func TestDNSResolution(t *testing.T) {
	r := mapResolver{
		"vm.example.internal":  {netip.MustParseAddr("127.0.0.11"), netip.MustParseAddr("::ffff:127.0.0.12")},
		"one.example.internal": {netip.MustParseAddr("127.0.0.13")},
	}
	se := func(resolution, endpoints string) string {
		return "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: vm}\nspec:\n  hosts: [vm.default.svc.cluster.local]\n" +
			"  location: MESH_INTERNAL\n  resolution: " + resolution + "\n  ports: [{number: 80, name: tcp}]\n" + endpoints
	}
	tests := []struct {
		name, doc string
		want      []string
		warning   string
	}{
		{"DNS resolves every address", se("DNS", "  endpoints: [{address: vm.example.internal, serviceAccount: sa}, {address: 127.0.0.20, serviceAccount: sa}]\n"),
			[]string{"127.0.0.11:80", "127.0.0.12:80", "127.0.0.20:80"}, ""},
		{"DNS_ROUND_ROBIN uses the first", se("DNS_ROUND_ROBIN", "  endpoints: [{address: vm.example.internal, serviceAccount: sa}]\n"),
			[]string{"127.0.0.11:80"}, ""},
		{"unresolvable is dropped", se("DNS", "  endpoints: [{address: gone.example.internal, serviceAccount: sa}, {address: one.example.internal, serviceAccount: sa}]\n"),
			[]string{"127.0.0.13:80"}, `resolve "gone.example.internal"`},
		{"non-mTLS names are not even resolved", se("DNS", "  endpoints: [{address: gone.example.internal}]\n"),
			nil, "not mTLS-capable"},
		{"DNS without endpoints", se("DNS", ""), nil, "Istio would resolve the hosts themselves"},
		{"NONE", se("NONE", "  endpoints: [{address: 127.0.0.1, serviceAccount: sa}]\n"), nil, "resolution: NONE"},
		{"unset resolution is NONE", strings.Replace(se("NONE", ""), "  resolution: NONE\n", "", 1), nil, "resolution: NONE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustLoadYAML(t, tt.doc, Options{Resolver: r})
			if got := addrs(lookup(t, res.Snapshot, "vm.default.svc.cluster.local", 80, "")); !slices.Equal(got, tt.want) {
				t.Errorf("endpoints %v, want %v", got, tt.want)
			}
			if tt.warning != "" && !hasWarning(res.Warnings, tt.warning) {
				t.Errorf("no warning %q in %v", tt.warning, res.Warnings)
			}
		})
	}
}

func TestIgnoredKindsAndWorkloadGroup(t *testing.T) {
	doc := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec: {anything: [goes, here]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews-vms, namespace: default, labels: {team: a}}
spec:
  metadata:
    labels: {app: reviews}
    annotations: {note: x}
  template:
    ports: {http: 9080}
    serviceAccount: bookinfo-reviews
    network: net1
  probe:
    initialDelaySeconds: 5
    periodSeconds: 4
    failureThreshold: 2
    httpGet:
      path: /ready
      port: 9080
      scheme: HTTP
      httpHeaders: [{name: Host, value: reviews}]
`
	res := mustLoadYAML(t, doc, Options{})
	for _, w := range []string{"VirtualService default/vs: VirtualService is not used", "PeerAuthentication istio-system/pa", "WorkloadGroup default/reviews-vms: kept for health checks"} {
		if !hasWarning(res.Warnings, w) {
			t.Errorf("no warning %q in %v", w, res.Warnings)
		}
	}
	if len(res.WorkloadGroups) != 1 {
		t.Fatalf("workload groups %+v", res.WorkloadGroups)
	}
	g := res.WorkloadGroups[0]
	p := g.Probe
	if g.Name != "reviews-vms" || g.Namespace != "default" || g.File != "test.yaml" || g.Metadata.Labels["app"] != "reviews" || g.Metadata.Annotations["note"] != "x" ||
		g.Template.Ports["http"] != 9080 || g.Template.ServiceAccount != "bookinfo-reviews" || g.Template.Network != "net1" ||
		p == nil || p.InitialDelaySeconds != 5 || p.PeriodSeconds != 4 || p.FailureThreshold != 2 || p.HTTPGet == nil ||
		p.HTTPGet.Path != "/ready" || p.HTTPGet.Port != 9080 || len(p.HTTPGet.HTTPHeaders) != 1 || p.HTTPGet.HTTPHeaders[0].Value != "reviews" {
		t.Errorf("workload group %+v, probe %+v", g, p)
	}
}

func TestKubectlOutputLoads(t *testing.T) {
	// What `kubectl get serviceentry -o yaml` prints for one resource.
	doc := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"networking.istio.io/v1"}
  creationTimestamp: "2026-11-22T03:37:37Z"
  generation: 1
  name: reviews
  namespace: default
  resourceVersion: "4242"
  uid: 0b7e3f7e-1111-2222-3333-444455556666
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: tcp, protocol: TCP}]
  endpoints: [{address: 127.0.0.1, serviceAccount: sa}]
status:
  conditions: []
`
	res := mustLoadYAML(t, doc, Options{})
	lookup(t, res.Snapshot, reviewsHost, 9080, "")
}

func TestWildcardHost(t *testing.T) {
	res := mustLoadYAML(t, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: w}\nspec:\n  hosts: ['*.example.com', a.example.com]\n"+
		"  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  endpoints: [{address: 127.0.0.1, serviceAccount: sa}]\n", Options{})
	if !hasWarning(res.Warnings, `wildcard host "*.example.com" cannot be routed`) {
		t.Errorf("no wildcard warning in %v", res.Warnings)
	}
	if _, reason := res.Snapshot.Lookup("*.example.com", 443, ""); reason != mesh.ReasonUnknownHost {
		t.Errorf("wildcard lookup %v, want unknown_host", reason)
	}
	lookup(t, res.Snapshot, "a.example.com", 443, "")
}

func TestContextCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	data := []byte(seReviews + "---\n" + weReviews("a", "127.0.0.1", "v1", ""))
	if _, err := LoadBytes(ctx, "x.yaml", data, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
}

func TestConfigMapMount(t *testing.T) {
	// A mounted ConfigMap: each key is a symlink through ..data to a
	// timestamped folder. Each file must be read once.
	dir := writeTree(t, map[string]string{
		"..2026_11_22_03_37_37.1/se.yaml": seReviews,
		"..2026_11_22_03_37_37.1/we.yaml": weReviews("r1", "127.0.0.1", "v1", ""),
	})
	links := map[string]string{
		"..data":  "..2026_11_22_03_37_37.1",
		"se.yaml": filepath.Join("..data", "se.yaml"),
		"we.yaml": filepath.Join("..data", "we.yaml"),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Skipf("symlinks unavailable: %v", err)
		}
	}
	res := mustLoad(t, []string{dir}, Options{})
	if len(res.Files) != 2 {
		t.Errorf("files %v, want se.yaml and we.yaml once each", res.Files)
	}
	if got := addrs(lookup(t, res.Snapshot, reviewsHost, 9080, "")); !slices.Equal(got, []string{"127.0.0.1:19081"}) {
		t.Errorf("endpoints %v", got)
	}
}

func TestDuplicateEndpoint(t *testing.T) {
	doc := seReviews + "---\n" + weReviews("a", "127.0.0.1", "v1", "") + "---\n" + weReviews("b", "127.0.0.1", "v2", "")
	res := mustLoadYAML(t, doc, Options{})
	c := lookup(t, res.Snapshot, reviewsHost, 9080, "")
	if len(c.Endpoints) != 1 || c.Endpoints[0].Workload != "a" {
		t.Errorf("endpoints %+v, want only workload a", c.Endpoints)
	}
	if !hasWarning(res.Warnings, "WorkloadEntry default/b", "endpoint 127.0.0.1:19081 of "+reviewsHost+" port 9080 is also a") {
		t.Errorf("no duplicate warning in %v", res.Warnings)
	}
}
