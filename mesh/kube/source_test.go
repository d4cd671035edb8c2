package kube_test

import (
	"context"
	"errors"
	"log/slog"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/kube"
)

// reviewsObjects is a Service with two TCP ports and a UDP one, its
// EndpointSlice with zone hints, and two labelled Nodes.
func reviewsObjects() (*corev1.Service, *corev1.Node, *corev1.Node, []slicePort) {
	svc := service("default", "reviews", nil, tcpPort("http-web", 9080, 8080), tcpPort("tcp-admin", 9443, 8443), udpPort("dns", 53))
	ports := []slicePort{{"http-web", 8080, corev1.ProtocolTCP}, {"tcp-admin", 8443, corev1.ProtocolTCP}, {"dns", 5353, corev1.ProtocolUDP}}
	return svc, node("node-a", "region1", "zone-a", "rack1"), node("node-b", "region1", "zone-b", ""), ports
}

func TestSnapshotFromServiceSlicesAndNodes(t *testing.T) {
	svc, na, nb, ports := reviewsObjects()
	sl := endpointSlice("default", "reviews-abc", "reviews", ports,
		ep{addr: "10.0.0.1", node: "node-a", zone: "zone-x", ready: yes, pod: "reviews-v1-7b9f8c6d54-x2k9p"},
		ep{addr: "10.0.0.2", node: "node-b", zone: "zone-b"},                // ready unset: ready
		ep{addr: "10.0.0.3", node: "node-gone", zone: "zone-c", ready: yes}, // unknown node: the endpoint's zone
		ep{addr: "10.0.0.4", node: "node-a", ready: no},
		ep{addr: "10.0.0.5", node: "node-a", ready: no, terminating: yes}, // serving but terminating
	)
	cs := fake.NewClientset(svc, sl, na, nb)
	src, rec := start(t, cs, kube.Options{Network: "network2"})
	snap := rec.last()
	h := host("default", "reviews")

	var names []string
	for _, c := range snap.Clusters() {
		names = append(names, c.Name)
	}
	want := []string{"outbound_.9080_._." + h, "outbound_.9443_._." + h}
	if !slices.Equal(names, want) {
		t.Fatalf("clusters %v, want %v", names, want)
	}
	web := lookup(t, snap, h, 9080)
	if got, want := addrs(web), []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"}; !slices.Equal(got, want) {
		t.Fatalf("9080 endpoints %v, want %v (not-ready and terminating left out)", got, want)
	}
	if got, want := addrs(lookup(t, snap, h, 9443)), []string{"10.0.0.1:8443", "10.0.0.2:8443", "10.0.0.3:8443"}; !slices.Equal(got, want) {
		t.Fatalf("9443 endpoints %v, want %v", got, want)
	}
	tests := []struct {
		addr     string
		locality mesh.Locality
		workload string
	}{
		{"10.0.0.1:8080", mesh.Locality{Region: "region1", Zone: "zone-a", Subzone: "rack1"}, "reviews-v1"}, // the node wins over the endpoint's zone
		{"10.0.0.2:8080", mesh.Locality{Region: "region1", Zone: "zone-b"}, "reviews"},
		{"10.0.0.3:8080", mesh.Locality{Zone: "zone-c"}, "reviews"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			e := endpointAt(t, web, tt.addr)
			if e.Locality != tt.locality {
				t.Errorf("locality %+v, want %+v", e.Locality, tt.locality)
			}
			if e.Workload != tt.workload || e.Namespace != "default" || e.Network != "network2" || e.Labels["app"] != "reviews" || e.Health != mesh.HealthHealthy {
				t.Errorf("endpoint %+v: want workload %s, namespace default, network2, app=reviews, healthy", e, tt.workload)
			}
		})
	}
	if web.Service.Namespace != "default" || !web.Service.Exported || web.Service.MeshExternal {
		t.Errorf("service %+v: want exported, mesh-internal, namespace default", web.Service)
	}
	if got := web.Service.Ports; len(got) != 3 || got[0].Protocol != "HTTP" || got[1].Protocol != "TCP" || got[2].Protocol != "UDP" {
		t.Errorf("service ports %+v: want HTTP, TCP and UDP", got)
	}
	if _, r := snap.Lookup(h, 53, ""); r != mesh.ReasonUnknownPort {
		t.Errorf("UDP port lookup: %s, want unknown_port", r)
	}
	if _, r := snap.Lookup(host("default", "ratings"), 9080, ""); r != mesh.ReasonUnknownHost {
		t.Errorf("unknown service lookup: %s, want unknown_host", r)
	}
	st := src.Stats()
	if !st.Synced || st.Services != 1 || st.Clusters != 2 || st.Endpoints != 6 || st.SkippedPorts != 1 || st.Snapshots < 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestClusterDomain(t *testing.T) {
	svc := service("shop", "cart", nil, tcpPort("grpc", 7070, 7070))
	sl := endpointSlice("shop", "cart-1", "cart", []slicePort{{"grpc", 7070, corev1.ProtocolTCP}}, ep{addr: "10.1.0.1"})
	_, rec := start(t, fake.NewClientset(svc, sl), kube.Options{ClusterDomain: "Corp.Example."})
	lookup(t, rec.last(), "cart.shop.svc.corp.example", 7070)
}

func TestUDPOnlyServiceHasNoCluster(t *testing.T) {
	svc := service("kube-system", "dns", nil, udpPort("dns", 53))
	sl := endpointSlice("kube-system", "dns-1", "dns", []slicePort{{"dns", 53, corev1.ProtocolUDP}}, ep{addr: "10.2.0.1"})
	src, rec := start(t, fake.NewClientset(svc, sl), kube.Options{})
	snap := rec.last()
	if n := len(snap.Clusters()); n != 0 || snap.Services() != 1 {
		t.Fatalf("%d clusters, %d services; want none and the service known", n, snap.Services())
	}
	if _, r := snap.Lookup(host("kube-system", "dns"), 53, ""); r != mesh.ReasonUnknownPort {
		t.Fatalf("lookup: %s, want unknown_port", r)
	}
	if st := src.Stats(); st.SkippedPorts != 1 {
		t.Fatalf("SkippedPorts %d, want 1", st.SkippedPorts)
	}
}

func TestEndpointTurningNotReadyLeaves(t *testing.T) {
	svc, na, nb, ports := reviewsObjects()
	sl := endpointSlice("default", "reviews-abc", "reviews", ports,
		ep{addr: "10.0.0.1", node: "node-a", ready: yes}, ep{addr: "10.0.0.2", node: "node-b", ready: yes})
	cs := fake.NewClientset(svc, sl, na, nb)
	_, rec := start(t, cs, kube.Options{})
	h := host("default", "reviews")
	rec.waitFor(t, "both endpoints", hasAddrs(h, 9080, "10.0.0.1:8080", "10.0.0.2:8080"))

	ctx := context.Background()
	sl.Endpoints[0].Conditions.Ready = no
	_, err := cs.DiscoveryV1().EndpointSlices("default").Update(ctx, sl, metav1.UpdateOptions{})
	mustDo(t, "mark not ready", err)
	rec.waitFor(t, "10.0.0.1 gone", hasAddrs(h, 9080, "10.0.0.2:8080"))
	rec.waitFor(t, "10.0.0.1 gone from the second port", hasAddrs(h, 9443, "10.0.0.2:8443"))

	sl.Endpoints[0].Conditions.Ready = yes
	_, err = cs.DiscoveryV1().EndpointSlices("default").Update(ctx, sl, metav1.UpdateOptions{})
	mustDo(t, "mark ready", err)
	rec.waitFor(t, "10.0.0.1 back", hasAddrs(h, 9080, "10.0.0.1:8080", "10.0.0.2:8080"))

	// Deleting the slice leaves the clusters, empty: the service is still
	// declared, so the gateway refuses fast instead of saying unknown.
	mustDo(t, "delete slice", cs.DiscoveryV1().EndpointSlices("default").Delete(ctx, sl.Name, metav1.DeleteOptions{}))
	rec.waitFor(t, "no endpoints", hasAddrs(h, 9080))
}

func TestServiceDeletionRemovesClusters(t *testing.T) {
	svc, na, nb, ports := reviewsObjects()
	sl := endpointSlice("default", "reviews-abc", "reviews", ports, ep{addr: "10.0.0.1", node: "node-a"})
	other := service("default", "ratings", nil, tcpPort("tcp", 9080, 9080))
	cs := fake.NewClientset(svc, sl, na, nb, other)
	_, rec := start(t, cs, kube.Options{})
	if n := len(rec.last().Clusters()); n != 3 {
		t.Fatalf("%d clusters at start, want 3: %s", n, describe(rec.last()))
	}
	mustDo(t, "delete service", cs.CoreV1().Services("default").Delete(context.Background(), "reviews", metav1.DeleteOptions{}))
	snap := rec.waitFor(t, "reviews unknown", reasonIs(host("default", "reviews"), 9080, mesh.ReasonUnknownHost))
	if n := len(snap.Clusters()); n != 1 {
		t.Fatalf("%d clusters after the deletion, want ratings only: %s", n, describe(snap))
	}
	lookup(t, snap, host("default", "ratings"), 9080)

	// A new service appears with its endpoints.
	_, err := cs.CoreV1().Services("default").Create(context.Background(), service("default", "reviews", nil, tcpPort("tcp", 9080, 8080)), metav1.CreateOptions{})
	mustDo(t, "create service", err)
	rec.waitFor(t, "reviews back", hasAddrs(host("default", "reviews"), 9080))
}

func TestNodeLabelChangeMovesLocality(t *testing.T) {
	svc, na, nb, ports := reviewsObjects()
	sl := endpointSlice("default", "reviews-abc", "reviews", ports, ep{addr: "10.0.0.1", node: "node-a"})
	cs := fake.NewClientset(svc, sl, na, nb)
	_, rec := start(t, cs, kube.Options{})
	na.Labels[kube.LabelZone] = "zone-z"
	_, err := cs.CoreV1().Nodes().Update(context.Background(), na, metav1.UpdateOptions{})
	mustDo(t, "relabel node", err)
	rec.waitFor(t, "the new zone", func(s *mesh.Snapshot) bool {
		c, _ := s.Lookup(host("default", "reviews"), 9080, "")
		return c != nil && len(c.Endpoints) == 1 && c.Endpoints[0].Locality == mesh.Locality{Region: "region1", Zone: "zone-z", Subzone: "rack1"}
	})
}

func TestNamespaceScoping(t *testing.T) {
	objects := func() []*corev1.Service {
		return []*corev1.Service{
			service("mesh-a", "plain", nil, tcpPort("tcp", 80, 8080)),
			service("other", "plain", nil, tcpPort("tcp", 80, 8080)),
			service("mesh-a", "dot", map[string]string{kube.AnnotationExportTo: "."}, tcpPort("tcp", 80, 8080)),
			service("istio-system", "dot", map[string]string{kube.AnnotationExportTo: "."}, tcpPort("tcp", 80, 8080)),
			service("mesh-a", "star", map[string]string{kube.AnnotationExportTo: "*"}, tcpPort("tcp", 80, 8080)),
			service("mesh-a", "listed", map[string]string{kube.AnnotationExportTo: "foo, istio-system"}, tcpPort("tcp", 80, 8080)),
			service("mesh-a", "elsewhere", map[string]string{kube.AnnotationExportTo: "foo,bar"}, tcpPort("tcp", 80, 8080)),
			service("mesh-a", "nowhere", map[string]string{kube.AnnotationExportTo: "~"}, tcpPort("tcp", 80, 8080)),
		}
	}
	const (
		ok          = mesh.ReasonNone
		notExported = mesh.ReasonNotExported
		unknown     = mesh.ReasonUnknownHost
	)
	tests := []struct {
		name string
		o    kube.Options
		want map[string]mesh.Reason // host -> lookup result
	}{
		{"all namespaces, annotation only", kube.Options{}, map[string]mesh.Reason{
			host("mesh-a", "plain"): ok, host("other", "plain"): ok, host("mesh-a", "dot"): notExported,
			host("istio-system", "dot"): ok, host("mesh-a", "star"): ok, host("mesh-a", "listed"): ok,
			host("mesh-a", "elsewhere"): notExported, host("mesh-a", "nowhere"): notExported,
		}},
		{"namespace labels", kube.Options{NamespaceLabels: map[string]string{"eastwest": "on"}}, map[string]mesh.Reason{
			host("mesh-a", "plain"): ok, host("other", "plain"): notExported, host("mesh-a", "dot"): notExported,
			host("istio-system", "dot"): ok, host("mesh-a", "star"): ok, host("mesh-a", "nowhere"): notExported,
		}},
		{"namespace list", kube.Options{Namespaces: []string{"mesh-a"}}, map[string]mesh.Reason{
			host("mesh-a", "plain"): ok, host("other", "plain"): unknown, host("istio-system", "dot"): unknown,
			host("mesh-a", "star"): ok, host("mesh-a", "dot"): notExported,
		}},
		{"namespace list and labels", kube.Options{Namespaces: []string{"mesh-a", "other"}, NamespaceLabels: map[string]string{"eastwest": "on"}}, map[string]mesh.Reason{
			host("mesh-a", "plain"): ok, host("other", "plain"): notExported, host("istio-system", "dot"): unknown,
		}},
		{"another gateway namespace", kube.Options{GatewayNamespace: "mesh-a"}, map[string]mesh.Reason{
			host("mesh-a", "dot"): ok, host("istio-system", "dot"): notExported, host("mesh-a", "listed"): notExported,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := []runtime.Object{
				namespace("mesh-a", map[string]string{"eastwest": "on"}),
				namespace("istio-system", map[string]string{"eastwest": "on"}),
				namespace("other", nil),
			}
			for _, s := range objects() {
				objs = append(objs, s)
			}
			_, rec := start(t, fake.NewClientset(objs...), tt.o)
			snap := rec.last()
			for h, want := range tt.want {
				if _, got := snap.Lookup(h, 80, ""); got != want {
					t.Errorf("%s: %q, want %q", h, got, want)
				}
			}
		})
	}

	t.Run("labelling a namespace exports its services", func(t *testing.T) {
		cs := fake.NewClientset(namespace("other", nil), service("other", "plain", nil, tcpPort("tcp", 80, 8080)))
		_, rec := start(t, cs, kube.Options{NamespaceLabels: map[string]string{"eastwest": "on"}})
		h := host("other", "plain")
		if _, r := rec.last().Lookup(h, 80, ""); r != notExported {
			t.Fatalf("before labelling: %s, want not_exported", r)
		}
		_, err := cs.CoreV1().Namespaces().Update(context.Background(), namespace("other", map[string]string{"eastwest": "on"}), metav1.UpdateOptions{})
		mustDo(t, "label namespace", err)
		rec.waitFor(t, "the service exported", reasonIs(h, 80, ok))
	})

	t.Run("annotating a service hides it", func(t *testing.T) {
		svc := service("other", "plain", nil, tcpPort("tcp", 80, 8080))
		cs := fake.NewClientset(svc)
		_, rec := start(t, cs, kube.Options{})
		h := host("other", "plain")
		rec.waitFor(t, "exported", reasonIs(h, 80, ok))
		svc.Annotations = map[string]string{kube.AnnotationExportTo: "."}
		_, err := cs.CoreV1().Services("other").Update(context.Background(), svc, metav1.UpdateOptions{})
		mustDo(t, "annotate service", err)
		rec.waitFor(t, "not exported", reasonIs(h, 80, notExported))
	})
}

// TestDebounceCoalescesBursts sends 100 slice updates as fast as the fake
// API takes them: snapshots must be at least Debounce apart (with slack for
// the build itself), so there are at most elapsed/Debounce + 2 of them,
// and the last one must reflect the last update.
func TestDebounceCoalescesBursts(t *testing.T) {
	const debounce = 200 * time.Millisecond
	svc := service("default", "burst", nil, tcpPort("tcp", 80, 8080))
	sl := endpointSlice("default", "burst-1", "burst", []slicePort{{"tcp", 8080, corev1.ProtocolTCP}}, ep{addr: "10.9.0.0"})
	cs := fake.NewClientset(svc, sl)
	src, rec := start(t, cs, kube.Options{Debounce: debounce})
	before := len(rec.times())

	begin := time.Now()
	const n = 100
	for i := 1; i <= n; i++ {
		sl.Endpoints[0].Addresses = []string{"10.9.0." + strconv.Itoa(i)}
		_, err := cs.DiscoveryV1().EndpointSlices("default").Update(context.Background(), sl, metav1.UpdateOptions{})
		mustDo(t, "update slice", err)
	}
	rec.waitFor(t, "the last update", hasAddrs(host("default", "burst"), 80, "10.9.0."+strconv.Itoa(n)+":8080"))
	elapsed := time.Since(begin)

	at := rec.times()[before:]
	limit := int(elapsed/debounce) + 2
	t.Logf("%d updates in %s gave %d snapshots (limit %d), %d builds", n, elapsed.Round(time.Millisecond), len(at), limit, src.Stats().Builds)
	if len(at) > limit {
		t.Fatalf("%d snapshots for %d updates over %s, want at most %d", len(at), n, elapsed, limit)
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < debounce/2 {
			t.Fatalf("snapshots %d and %d only %s apart, want about %s", i-1, i, gap, debounce)
		}
	}
	// Nothing changed since: no further snapshot, even after a debounce.
	settled := len(rec.times())
	time.Sleep(2 * debounce)
	if got := len(rec.times()); got != settled {
		t.Fatalf("%d snapshots published with nothing changing", got-settled)
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		o    kube.Options
	}{
		{"bad namespace", kube.Options{Namespaces: []string{"Not_A_Namespace"}}},
		{"duplicate namespace", kube.Options{Namespaces: []string{"a", "a"}}},
		{"bad domain", kube.Options{ClusterDomain: "under_score..x"}},
		{"negative debounce", kube.Options{Debounce: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := kube.New(fake.NewClientset(), tt.o, func(*mesh.Snapshot) {})
			if err := src.Run(context.Background()); err == nil {
				t.Fatal("Run accepted invalid options")
			}
		})
	}
}

// TestForbiddenWatchIsReported: without RBAC on nodes the caches never
// sync; the source says why in Stats and still stops cleanly.
func TestForbiddenWatchIsReported(t *testing.T) {
	cs := fake.NewClientset(service("default", "reviews", nil, tcpPort("tcp", 80, 80)))
	cs.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New("RBAC: no"))
	})
	rec := &recorder{}
	src := kube.New(cs, kube.Options{Logger: slog.New(slog.DiscardHandler)}, rec.apply)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	deadline := time.Now().Add(waitLimit)
	for src.Stats().WatchErrors == 0 {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("no watch error counted within %s: %+v", waitLimit, src.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := src.Stats()
	if st.Synced || rec.last() != nil || !strings.Contains(st.LastWatchError, "nodes") {
		t.Fatalf("stats %+v, %d snapshots: want not synced, no snapshot, a nodes error", st, len(rec.times()))
	}
}

// TestRunLeavesNoGoroutines: every informer goroutine ends with Run.
func TestRunLeavesNoGoroutines(t *testing.T) {
	before := goruntime.NumGoroutine()
	cs := fake.NewClientset(service("default", "reviews", nil, tcpPort("tcp", 80, 80)))
	src := kube.New(cs, kube.Options{Namespaces: []string{"default", "other"}, NamespaceLabels: map[string]string{"a": "b"},
		Logger: slog.New(slog.DiscardHandler)}, func(*mesh.Snapshot) {})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	for deadline := time.Now().Add(waitLimit); !src.Stats().Synced; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not synced")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The fake clientset's watchers end asynchronously; give them a moment.
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
}
