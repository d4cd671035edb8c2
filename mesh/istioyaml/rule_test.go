package istioyaml

import (
	"strings"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

func TestCompileDestinationRule(t *testing.T) {
	// The JSON the Kubernetes API serves.
	spec := `{"host":"reviews","trafficPolicy":{"connectionPool":{"tcp":{"maxConnections":100,"connectTimeout":"2s"}},
	"outlierDetection":{"consecutive5xxErrors":3,"interval":"10s"},
	"portLevelSettings":[{"port":{"number":9443},"loadBalancer":{"simple":"RANDOM"}}]},
	"subsets":[{"name":"v1","labels":{"version":"v1"}},
	{"name":"v2","labels":{"version":"v2"},"trafficPolicy":{"connectionPool":{"tcp":{"maxConnections":5}}}}]}`
	r, warns, err := CompileDestinationRule("reviews", "default", []byte(spec), Options{})
	if err != nil || len(warns) > 0 || r == nil {
		t.Fatalf("CompileDestinationRule: %v, %v, %v", r, warns, err)
	}
	if r.Host != reviewsHost || r.Wildcard() || !r.Matches(reviewsHost) || r.Matches("ratings.default.svc.cluster.local") {
		t.Fatalf("host %q: want the short name completed in the rule's namespace", r.Host)
	}
	p := r.Policy(9080)
	if p.MaxConnections != 100 || p.ConnectTimeout != 2*time.Second || p.OutlierDetection == nil || *p.OutlierDetection.Consecutive5xxErrors != 3 {
		t.Errorf("policy %+v", p)
	}
	// A port-level entry replaces every component for its port.
	if p := r.Policy(9443); p.LoadBalancer.Simple != mesh.LBRandom || p.MaxConnections != 0 || p.OutlierDetection != nil {
		t.Errorf("port 9443 policy %+v", p)
	}
	subs := r.Subsets()
	if len(subs) != 2 || subs[0].Name != "v1" || subs[1].Name != "v2" {
		t.Fatalf("subsets %+v", subs)
	}
	if !subs[0].LabelsMatch(map[string]string{"app": "reviews", "version": "v1"}) || subs[0].LabelsMatch(map[string]string{"version": "v2"}) {
		t.Error("v1 label matching")
	}
	if p := subs[1].Policy(9080); p.MaxConnections != 5 || p.ConnectTimeout != 0 || p.OutlierDetection == nil {
		t.Errorf("v2 policy %+v: want its connectionPool, the rule's outlier detection", p)
	}
}

func TestCompileDestinationRuleProblems(t *testing.T) {
	tests := []struct {
		name, spec string
		err        string // "" means valid
		warn       string
		applies    bool
	}{
		{"invalid value", `{"host":"reviews","trafficPolicy":{"connectionPool":{"tcp":{"maxConnections":-1}}}}`,
			"trafficPolicy.connectionPool.tcp.maxConnections: must not be negative", "", false},
		{"wrong type", `{"host":"reviews","trafficPolicy":{"connectionPool":{"tcp":{"maxConnections":"many"}}}}`,
			"cannot unmarshal", "", false},
		{"no host", `{}`, "host: is required", "", false},
		{"bad subset name", `{"host":"reviews","subsets":[{"name":"V1"}]}`, `subsets[0].name: "V1" is not a valid DNS-1123 label`, "", false},
		{"unknown field", `{"host":"reviews","trafficPolicy":{"loadBalancer":{"simple":"RANDOM","fromTheFuture":1}}}`,
			"", `unknown field "fromTheFuture"; ignored`, true},
		{"not exported", `{"host":"reviews","exportTo":["."]}`, "", "not exported to the gateway's namespace istio-system", false},
		{"workload selector", `{"host":"reviews","workloadSelector":{"matchLabels":{"app":"x"}}}`, "", "workloadSelector", false},
		{"ignored part", `{"host":"reviews","trafficPolicy":{"tunnel":{"protocol":"CONNECT"}}}`, "", "tunnel: not applied", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, warns, err := CompileDestinationRule("r", "default", []byte(tt.spec), Options{})
			switch {
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v, want %q", err, tt.err)
			case tt.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.err != "" && !strings.HasPrefix(err.Error(), "DestinationRule default/r: "):
				t.Errorf("error %q does not name the rule", err)
			}
			if (r != nil) != tt.applies {
				t.Errorf("rule %v, want applies=%v", r, tt.applies)
			}
			if tt.warn != "" && !strings.Contains(strings.Join(warns, "\n"), tt.warn) {
				t.Errorf("warnings %q, want %q", warns, tt.warn)
			}
		})
	}
}

// TestPickDestinationRule: the same precedence as Load's, which
// TestDestinationRulePrecedence covers for files.
func TestPickDestinationRule(t *testing.T) {
	compile := func(ns, name, host string) *DestinationRule {
		t.Helper()
		r, _, err := CompileDestinationRule(name, ns, []byte(`{"host":"`+host+`"}`), Options{})
		if err != nil || r == nil {
			t.Fatalf("%s/%s: %v", ns, name, err)
		}
		return r
	}
	svcNS := compile("default", "svc-ns", "reviews")
	gwNS := compile("istio-system", "gw-ns", reviewsHost)
	wild := compile("default", "wild", "*.default.svc.cluster.local")
	wider := compile("default", "wider", "*.svc.cluster.local")
	elsewhere := compile("other", "elsewhere", reviewsHost)
	older := compile("default", "older", "reviews")
	tests := []struct {
		name  string
		rules []*DestinationRule
		want  *DestinationRule
	}{
		{"none", nil, nil},
		{"another namespace never applies", []*DestinationRule{elsewhere}, nil},
		{"the gateway's namespace first", []*DestinationRule{svcNS, gwNS}, gwNS},
		{"exact over wildcard", []*DestinationRule{wild, svcNS}, svcNS},
		{"longer wildcard", []*DestinationRule{wider, wild}, wild},
		{"oldest of equals", []*DestinationRule{older, svcNS}, older},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PickDestinationRule(tt.rules, reviewsHost, "default", Options{}); got != tt.want {
				t.Fatalf("picked %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDestinationRuleWorkloadSelectorMatchLabels: a DestinationRule's
// workloadSelector is Istio's type.v1beta1 selector (matchLabels), not
// ServiceEntry's (labels); Load accepts it and ignores the rule.
func TestDestinationRuleWorkloadSelectorMatchLabels(t *testing.T) {
	res := mustLoadYAML(t, seReviews+"---\n"+weReviews("r1", "10.0.0.1", "v1", "")+`---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sidecars, namespace: default}
spec:
  host: reviews
  workloadSelector:
    matchLabels: {app: ratings}
  subsets: [{name: v1, labels: {version: v1}}]
`, Options{})
	if !hasWarning(res.Warnings, "DestinationRule default/sidecars", "workloadSelector") {
		t.Fatalf("warnings %v: want the workloadSelector one", res.Warnings)
	}
	if _, r := res.Snapshot.Lookup(reviewsHost, 9080, "v1"); r != mesh.ReasonUnknownSubset {
		t.Fatalf("subset lookup: %s, want unknown_subset (the rule is for sidecars)", r)
	}
}
