package kube_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/kube"
)

var (
	drV1      = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
	drV1beta1 = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1beta1", Resource: "destinationrules"}
)

// istio is a fake API server with Istio's DestinationRule CRD installed
// (as served versions; the dynamic client serves both).
type istio struct {
	cs     *fake.Clientset
	dyn    *dynamicfake.FakeDynamicClient
	client *kube.Client
}

// newIstio serves objs and rules; versions are the CRD versions discovery
// reports (none: the CRD is not installed).
func newIstio(objs []runtime.Object, versions []string, rules ...*unstructured.Unstructured) *istio {
	cs := fake.NewClientset(objs...)
	for _, v := range versions {
		cs.Resources = append(cs.Resources, &metav1.APIResourceList{
			GroupVersion: "networking.istio.io/" + v,
			APIResources: []metav1.APIResource{{Name: "destinationrules", Namespaced: true, Kind: "DestinationRule"}},
		})
	}
	var ros []runtime.Object
	for _, r := range rules {
		ros = append(ros, r)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{drV1: "DestinationRuleList", drV1beta1: "DestinationRuleList"}, ros...)
	return &istio{cs: cs, dyn: dyn, client: &kube.Client{Interface: cs, Dynamic: dyn}}
}

// rule builds a DestinationRule from the YAML of its spec, as the API
// server would serve it (JSON numbers as int64).
func rule(t testing.TB, version, ns, name, spec string) *unstructured.Unstructured {
	t.Helper()
	var s any
	if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatalf("rule %s/%s: %v", ns, name, err)
	}
	b, err := json.Marshal(map[string]any{
		"apiVersion": "networking.istio.io/" + version, "kind": "DestinationRule",
		"metadata": map[string]any{"namespace": ns, "name": name}, "spec": s,
	})
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	return u
}

func pod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
}

// reviewsMesh is the bookinfo reviews Service with a v1 and a v2 pod and
// an endpoint without a pod reference.
func reviewsMesh() []runtime.Object {
	svc := service("default", "reviews", nil, tcpPort("http-web", 9080, 8080))
	sl := endpointSlice("default", "reviews-1", "reviews", []slicePort{{"http-web", 8080, corev1.ProtocolTCP}},
		ep{addr: "10.0.0.1", node: "node-a", pod: "reviews-v1-7b9f8c6d54-x2k9p"},
		ep{addr: "10.0.0.2", node: "node-a", pod: "reviews-v2-5d8f6c9b77-bq4zt"},
		ep{addr: "10.0.0.3", node: "node-a"})
	return []runtime.Object{svc, sl, node("node-a", "region1", "zone-a", ""),
		pod("default", "reviews-v1-7b9f8c6d54-x2k9p", map[string]string{"app": "reviews", "version": "v1"}),
		pod("default", "reviews-v2-5d8f6c9b77-bq4zt", map[string]string{"app": "reviews", "version": "v2"}),
	}
}

const reviewsRule = `
host: reviews
trafficPolicy:
  connectionPool:
    tcp: {maxConnections: 100, connectTimeout: 2s}
  outlierDetection: {consecutive5xxErrors: 3, interval: 10s, baseEjectionTime: 30s}
  loadBalancer:
    simple: ROUND_ROBIN
    localityLbSetting:
      failover: [{from: region1, to: region2}]
subsets:
- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 5}
`

// subsetAddrs reports whether cluster (host, port, subset) exists with
// exactly want.
func subsetAddrs(h string, port uint16, subset string, want ...string) func(*mesh.Snapshot) bool {
	slices.Sort(want)
	return func(s *mesh.Snapshot) bool {
		c, _ := s.Lookup(h, port, subset)
		return c != nil && slices.Equal(addrs(c), want)
	}
}

func lookupSubset(t testing.TB, s *mesh.Snapshot, h string, port uint16, subset string) *mesh.Cluster {
	t.Helper()
	c, reason := s.Lookup(h, port, subset)
	if c == nil {
		t.Fatalf("Lookup(%s, %d, %q) failed: %s (%s)", h, port, subset, reason, describe(s))
	}
	return c
}

func TestDestinationRuleSubsetsAndPolicy(t *testing.T) {
	is := newIstio(reviewsMesh(), []string{"v1"}, rule(t, "v1", "default", "reviews", reviewsRule))
	src, rec := start(t, is.client, kube.Options{})
	h := host("default", "reviews")
	snap := rec.last()

	// The first snapshot already has the subsets.
	if got, want := addrs(lookupSubset(t, snap, h, 9080, "v1")), []string{"10.0.0.1:8080"}; !slices.Equal(got, want) {
		t.Fatalf("v1 endpoints %v, want %v", got, want)
	}
	if got, want := addrs(lookupSubset(t, snap, h, 9080, "v2")), []string{"10.0.0.2:8080"}; !slices.Equal(got, want) {
		t.Fatalf("v2 endpoints %v, want %v", got, want)
	}
	base := lookup(t, snap, h, 9080)
	if got, want := addrs(base), []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"}; !slices.Equal(got, want) {
		t.Fatalf("base endpoints %v, want %v", got, want)
	}
	if c := lookupSubset(t, snap, h, 9080, "v1"); c.Name != "outbound_.9080_.v1_.reviews.default.svc.cluster.local" {
		t.Errorf("subset cluster name %q", c.Name)
	}
	if e := endpointAt(t, base, "10.0.0.1:8080"); e.Labels["version"] != "v1" || e.Labels["app"] != "reviews" {
		t.Errorf("endpoint labels %v, want the pod's", e.Labels)
	}
	if e := endpointAt(t, base, "10.0.0.3:8080"); e.Labels["app"] != "reviews" || len(e.Labels) != 1 {
		t.Errorf("endpoint without a pod: labels %v, want the selector's", e.Labels)
	}

	p := base.Policy
	if p.MaxConnections != 100 || p.ConnectTimeout != 2*time.Second || p.LoadBalancer.Simple != mesh.LBRoundRobin {
		t.Errorf("base policy %+v: want maxConnections 100, connectTimeout 2s, ROUND_ROBIN", p)
	}
	if od := p.OutlierDetection; od == nil || od.Consecutive5xxErrors == nil || *od.Consecutive5xxErrors != 3 ||
		od.Interval != 10*time.Second || od.BaseEjectionTime != 30*time.Second {
		t.Errorf("base outlier detection %+v", p.OutlierDetection)
	}
	if l := p.LoadBalancer.Locality; l == nil || !slices.Equal(l.Failover, []mesh.Failover{{From: "region1", To: "region2"}}) {
		t.Errorf("base locality LB %+v", p.LoadBalancer.Locality)
	}
	if v1 := lookupSubset(t, snap, h, 9080, "v1").Policy; v1.MaxConnections != 100 || v1.OutlierDetection == nil {
		t.Errorf("v1 policy %+v: want the rule's", v1)
	}
	// Istio merges per component: v2's connectionPool replaces the rule's
	// whole (no connectTimeout), its outlier detection is inherited.
	if v2 := lookupSubset(t, snap, h, 9080, "v2").Policy; v2.MaxConnections != 5 || v2.ConnectTimeout != 0 || v2.OutlierDetection == nil {
		t.Errorf("v2 policy %+v: want maxConnections 5, no connectTimeout, the rule's outlier detection", v2)
	}
	if st := src.Stats(); !st.DestinationRulesWatched || st.DestinationRules != 1 || st.InvalidDestinationRules != 0 || st.Clusters != 3 {
		t.Errorf("stats %+v", st)
	}

	// Relabelling a pod moves it between subsets.
	ctx := context.Background()
	_, err := is.cs.CoreV1().Pods("default").Update(ctx, pod("default", "reviews-v2-5d8f6c9b77-bq4zt", map[string]string{"app": "reviews", "version": "v1"}), metav1.UpdateOptions{})
	mustDo(t, "relabel pod", err)
	rec.waitFor(t, "both pods in v1", subsetAddrs(h, 9080, "v1", "10.0.0.1:8080", "10.0.0.2:8080"))
	rec.waitFor(t, "v2 empty", subsetAddrs(h, 9080, "v2"))

	// An endpoint whose Pod the cache does not have yet joins its subset
	// when the Pod arrives.
	sl := endpointSlice("default", "reviews-1", "reviews", []slicePort{{"http-web", 8080, corev1.ProtocolTCP}},
		ep{addr: "10.0.0.1", node: "node-a", pod: "reviews-v1-7b9f8c6d54-x2k9p"},
		ep{addr: "10.0.0.2", node: "node-a", pod: "reviews-v2-5d8f6c9b77-bq4zt"},
		ep{addr: "10.0.0.3", node: "node-a"},
		ep{addr: "10.0.0.4", node: "node-a", pod: "reviews-v2-5d8f6c9b77-zzzzz"})
	_, err = is.cs.DiscoveryV1().EndpointSlices("default").Update(ctx, sl, metav1.UpdateOptions{})
	mustDo(t, "add endpoint", err)
	rec.waitFor(t, "the new endpoint", hasAddrs(h, 9080, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080"))
	if _, r := rec.last().Lookup(h, 9080, "v2"); r != mesh.ReasonNone || len(addrs(lookupSubset(t, rec.last(), h, 9080, "v2"))) != 0 {
		t.Fatalf("v2 before its Pod is known: %s %s", r, describe(rec.last()))
	}
	_, err = is.cs.CoreV1().Pods("default").Create(ctx, pod("default", "reviews-v2-5d8f6c9b77-zzzzz", map[string]string{"app": "reviews", "version": "v2"}), metav1.CreateOptions{})
	mustDo(t, "create pod", err)
	rec.waitFor(t, "the new pod in v2", subsetAddrs(h, 9080, "v2", "10.0.0.4:8080"))

	// Deleting the rule removes the subsets and the policy.
	mustDo(t, "delete rule", is.dyn.Resource(drV1).Namespace("default").Delete(ctx, "reviews", metav1.DeleteOptions{}))
	snap = rec.waitFor(t, "no subsets", func(s *mesh.Snapshot) bool {
		_, r := s.Lookup(h, 9080, "v1")
		return r == mesh.ReasonUnknownSubset
	})
	if p := lookup(t, snap, h, 9080).Policy; !isDefault(p) {
		t.Errorf("policy after deletion %+v, want the default", p)
	}
	// Stats follow apply: wait for them too.
	waitStats(t, src, "no rule, one cluster", func(st kube.Stats) bool { return st.DestinationRules == 0 && st.Clusters == 1 })

	// A new rule applies without a restart.
	_, err = is.dyn.Resource(drV1).Namespace("default").Create(ctx, rule(t, "v1", "default", "reviews-2", `
host: reviews.default.svc.cluster.local
subsets: [{name: canary, labels: {version: v1}}]
`), metav1.CreateOptions{})
	mustDo(t, "create rule", err)
	rec.waitFor(t, "the canary subset", subsetAddrs(h, 9080, "canary", "10.0.0.1:8080", "10.0.0.2:8080"))
}

// waitStats polls the source's statistics until ok accepts them.
func waitStats(t testing.TB, src *kube.Source, what string, ok func(kube.Stats) bool) {
	t.Helper()
	for deadline := time.Now().Add(waitLimit); !ok(src.Stats()); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stats never showed %s: %+v", what, src.Stats())
		}
	}
}

func isDefault(p mesh.TrafficPolicy) bool {
	return p.LoadBalancer == (mesh.LoadBalancer{}) && p.OutlierDetection == nil && p.ConnectTimeout == 0 &&
		p.IdleTimeout == 0 && p.MaxConnections == 0 && p.MaxConnectionDuration == 0
}

// TestDestinationRuleHostMatching checks which rule applies to which
// service, as istiod decides at a gateway in istio-system.
func TestDestinationRuleHostMatching(t *testing.T) {
	objs := []runtime.Object{
		service("default", "reviews", nil, tcpPort("tcp", 9080, 9080)),
		service("default", "ratings", nil, tcpPort("tcp", 9080, 9080)),
		service("default", "details", nil, tcpPort("tcp", 9080, 9080)),
		service("shop", "cart", nil, tcpPort("tcp", 80, 80)),
		service("shop", "pay", nil, tcpPort("tcp", 80, 80)),
		service("other", "reviews", nil, tcpPort("tcp", 9080, 9080)),
	}
	maxConns := func(n int) string {
		return "trafficPolicy: {connectionPool: {tcp: {maxConnections: " + itoa32(int32(n)) + "}}}"
	}
	rules := []*unstructured.Unstructured{
		// A short name is the rule's namespace's service.
		rule(t, "v1", "default", "reviews", "host: reviews\n"+maxConns(1)),
		// exportTo "." in default hides it from the gateway's namespace.
		rule(t, "v1", "default", "ratings", "host: ratings\nexportTo: [.]\n"+maxConns(2)),
		// The gateway's namespace wins over the service's.
		rule(t, "v1", "default", "details", "host: details\n"+maxConns(3)),
		rule(t, "v1", "istio-system", "details", "host: details.default.svc.cluster.local\n"+maxConns(4)),
		// An exact host wins over a wildcard of the same namespace.
		rule(t, "v1", "shop", "all", "host: '*.shop.svc.cluster.local'\n"+maxConns(5)),
		rule(t, "v1", "shop", "cart", "host: cart\n"+maxConns(6)),
		// A rule in a third namespace never applies (not the gateway's,
		// not the service's, not the root).
		rule(t, "v1", "third", "other-reviews", "host: reviews.other.svc.cluster.local\n"+maxConns(7)),
		// A workloadSelector rule is for sidecars only.
		rule(t, "v1", "other", "sidecar", "host: reviews\nworkloadSelector: {matchLabels: {app: x}}\n"+maxConns(8)),
	}
	is := newIstio(objs, []string{"v1"}, rules...)
	src, rec := start(t, is.client, kube.Options{})
	snap := rec.last()
	for _, tt := range []struct {
		host string
		port uint16
		want int32
	}{
		{host("default", "reviews"), 9080, 1},
		{host("default", "ratings"), 9080, 0},
		{host("default", "details"), 9080, 4},
		{host("shop", "cart"), 80, 6},
		{host("shop", "pay"), 80, 5},
		{host("other", "reviews"), 9080, 0},
	} {
		if got := lookup(t, snap, tt.host, tt.port).Policy.MaxConnections; got != tt.want {
			t.Errorf("%s: maxConnections %d, want %d", tt.host, got, tt.want)
		}
	}
	// ratings (not exported) and sidecar (workloadSelector) do not apply.
	if st := src.Stats(); st.DestinationRules != 6 || st.InvalidDestinationRules != 0 {
		t.Errorf("stats %+v: want 6 rules that apply, none invalid", st)
	}
}

// syncBuffer is a log sink safe for the source's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestInvalidDestinationRuleIsReported(t *testing.T) {
	objs := append(reviewsMesh(), service("default", "ratings", nil, tcpPort("tcp", 9080, 9080)))
	is := newIstio(objs, []string{"v1"},
		rule(t, "v1", "default", "reviews", reviewsRule),
		rule(t, "v1", "default", "ratings", "host: ratings\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}"),
		// A field from a newer Istio is a warning, not a failure.
		rule(t, "v1", "default", "details", "host: details\ntrafficPolicy: {loadBalancer: {simple: RANDOM, fromTheFuture: 1}}"))
	logs := &syncBuffer{}
	src, rec := start(t, is.client, kube.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	h := host("default", "reviews")
	snap := rec.last()
	lookupSubset(t, snap, h, 9080, "v1")
	if p := lookup(t, snap, host("default", "ratings"), 9080).Policy; !isDefault(p) {
		t.Errorf("ratings policy %+v, want the default", p)
	}
	st := src.Stats()
	if st.DestinationRules != 2 || st.InvalidDestinationRules != 1 || st.DestinationRuleErrors != 1 {
		t.Errorf("stats %+v: want 2 rules, 1 invalid, 1 error", st)
	}
	out := logs.String()
	if !strings.Contains(out, "DestinationRule rejected") || !strings.Contains(out, "default/ratings") || !strings.Contains(out, "maxConnections") {
		t.Errorf("no rejection logged for default/ratings:\n%s", out)
	}
	if !strings.Contains(out, "fromTheFuture") {
		t.Errorf("no warning for the unknown field:\n%s", out)
	}

	// Breaking a rule in use keeps its last valid version.
	ctx := context.Background()
	bad := rule(t, "v1", "default", "reviews", "host: reviews\nsubsets: [{name: V1}]")
	_, err := is.dyn.Resource(drV1).Namespace("default").Update(ctx, bad, metav1.UpdateOptions{})
	mustDo(t, "break rule", err)
	// Both counts are updated by one build, the second after the first.
	waitStats(t, src, "the broken update reported", func(st kube.Stats) bool {
		return st.DestinationRuleErrors >= 2 && st.InvalidDestinationRules >= 2
	})
	snap = rec.last()
	if c, r := snap.Lookup(h, 9080, "v2"); c == nil || c.Policy.MaxConnections != 5 {
		t.Fatalf("after a broken update: v2 %v (%s), want the previous version in force", c, r)
	}
	if st := src.Stats(); st.InvalidDestinationRules != 2 || st.DestinationRules != 2 {
		t.Errorf("stats %+v: want 2 invalid, 2 in force", st)
	}

	// Fixing it applies the fix.
	_, err = is.dyn.Resource(drV1).Namespace("default").Update(ctx, rule(t, "v1", "default", "reviews", "host: reviews\nsubsets: [{name: v3, labels: {version: v3}}]"), metav1.UpdateOptions{})
	mustDo(t, "fix rule", err)
	rec.waitFor(t, "the fixed rule", subsetAddrs(h, 9080, "v3"))
	if _, r := rec.last().Lookup(h, 9080, "v2"); r != mesh.ReasonUnknownSubset {
		t.Errorf("v2 after the fix: %s, want unknown_subset", r)
	}
}

func TestWithoutDestinationRuleCRD(t *testing.T) {
	is := newIstio(reviewsMesh(), nil, rule(t, "v1", "default", "reviews", reviewsRule))
	logs := &syncBuffer{}
	src, rec := start(t, is.client, kube.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	snap := rec.last()
	h := host("default", "reviews")
	if got := addrs(lookup(t, snap, h, 9080)); len(got) != 3 {
		t.Fatalf("endpoints %v, want 3", got)
	}
	if _, r := snap.Lookup(h, 9080, "v1"); r != mesh.ReasonUnknownSubset {
		t.Errorf("subset lookup without the CRD: %s, want unknown_subset", r)
	}
	if st := src.Stats(); st.DestinationRulesWatched || st.DestinationRules != 0 {
		t.Errorf("stats %+v: want DestinationRules not watched", st)
	}
	if n := strings.Count(logs.String(), "DestinationRule CRD not installed"); n != 1 {
		t.Errorf("CRD absence logged %d times, want once:\n%s", n, logs.String())
	}
	if acts := is.dyn.Actions(); len(acts) != 0 {
		t.Errorf("dynamic client used without the CRD: %v", acts)
	}
}

// TestDestinationRuleCRDInstalledLater: the source checks again and picks
// the rules up without a restart.
func TestDestinationRuleCRDInstalledLater(t *testing.T) {
	is := newIstio(reviewsMesh(), []string{"v1"}, rule(t, "v1", "default", "reviews", reviewsRule))
	var installed atomic.Bool
	is.cs.PrependReactor("get", "resource", func(k8stesting.Action) (bool, runtime.Object, error) {
		if installed.Load() {
			return false, nil, nil
		}
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: "networking.istio.io"}, "v1")
	})
	rec := &recorder{}
	src := kube.New(is.client, kube.Options{Logger: slog.New(slog.DiscardHandler)}, rec.apply)
	kube.SetCRDPoll(src, 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	h := host("default", "reviews")
	rec.waitFor(t, "the service", hasAddrs(h, 9080, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"))
	if _, r := rec.last().Lookup(h, 9080, "v1"); r != mesh.ReasonUnknownSubset {
		t.Fatalf("subset before the CRD: %s", r)
	}
	installed.Store(true)
	rec.waitFor(t, "the v1 subset", subsetAddrs(h, 9080, "v1", "10.0.0.1:8080"))
	if st := src.Stats(); !st.DestinationRulesWatched {
		t.Errorf("stats %+v", st)
	}
}

func TestDestinationRuleV1beta1(t *testing.T) {
	is := newIstio(reviewsMesh(), []string{"v1beta1"}, rule(t, "v1beta1", "default", "reviews", reviewsRule))
	_, rec := start(t, is.client, kube.Options{})
	if got := addrs(lookupSubset(t, rec.last(), host("default", "reviews"), 9080, "v2")); !slices.Equal(got, []string{"10.0.0.2:8080"}) {
		t.Fatalf("v2 endpoints %v", got)
	}
}

func TestDestinationRulesDisabled(t *testing.T) {
	is := newIstio(reviewsMesh(), []string{"v1"}, rule(t, "v1", "default", "reviews", reviewsRule))
	src, rec := start(t, is.client, kube.Options{DisableDestinationRules: true})
	if _, r := rec.last().Lookup(host("default", "reviews"), 9080, "v1"); r != mesh.ReasonUnknownSubset {
		t.Fatalf("subset lookup with rules disabled: %s", r)
	}
	if acts := is.dyn.Actions(); len(acts) != 0 || src.Stats().DestinationRulesWatched {
		t.Errorf("rules read although disabled: %v", acts)
	}
}

// TestDestinationRulesForbidden: RBAC without pods (or destinationrules)
// must not keep the source from syncing; it runs without rules.
func TestDestinationRulesForbidden(t *testing.T) {
	is := newIstio(reviewsMesh(), []string{"v1"}, rule(t, "v1", "default", "reviews", reviewsRule))
	is.cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("RBAC: no"))
	})
	src, rec := start(t, is.client, kube.Options{})
	h := host("default", "reviews")
	if got := addrs(lookup(t, rec.last(), h, 9080)); len(got) != 3 {
		t.Fatalf("endpoints %v, want 3", got)
	}
	if st := src.Stats(); st.DestinationRulesWatched || !strings.Contains(st.LastWatchError, "pods") {
		t.Errorf("stats %+v: want rules not watched and the pods error", st)
	}
}

// TestRulesLeaveNoGoroutines: the rule and Pod informers and the CRD
// check end with Run.
func TestRulesLeaveNoGoroutines(t *testing.T) {
	for _, tt := range []struct {
		name     string
		versions []string
	}{{"CRD installed", []string{"v1"}}, {"CRD absent", nil}} {
		t.Run(tt.name, func(t *testing.T) {
			before := goruntime.NumGoroutine()
			is := newIstio(reviewsMesh(), tt.versions, rule(t, "v1", "default", "reviews", reviewsRule))
			src := kube.New(is.client, kube.Options{Namespaces: []string{"default", "other"}, Logger: slog.New(slog.DiscardHandler)}, func(*mesh.Snapshot) {})
			kube.SetCRDPoll(src, 10*time.Millisecond)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- src.Run(ctx) }()
			for deadline := time.Now().Add(waitLimit); !src.Stats().Synced; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("not synced")
				}
			}
			if got := src.Stats().DestinationRulesWatched; got != (tt.versions != nil) {
				t.Errorf("DestinationRulesWatched %v", got)
			}
			time.Sleep(30 * time.Millisecond) // let the CRD check run a few times
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			var now int
			for deadline := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Millisecond) {
				if now = goruntime.NumGoroutine(); now <= before {
					return
				}
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<20)
					t.Fatalf("%d goroutines after Run returned, %d before:\n%s", now, before, buf[:goruntime.Stack(buf, true)])
				}
			}
		})
	}
}
