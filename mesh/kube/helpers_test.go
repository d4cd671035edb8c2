package kube_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/kube"
)

// waitLimit bounds every wait for a snapshot: far above the 100 ms
// debounce, so only a real failure (never slowness) trips it.
const waitLimit = 10 * time.Second

// recorder is the apply func: it keeps every snapshot and when it came.
type recorder struct {
	mu    sync.Mutex
	snaps []*mesh.Snapshot
	at    []time.Time
}

func (r *recorder) apply(s *mesh.Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps = append(r.snaps, s)
	r.at = append(r.at, time.Now())
}

func (r *recorder) last() *mesh.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.snaps) == 0 {
		return nil
	}
	return r.snaps[len(r.snaps)-1]
}

func (r *recorder) times() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.at)
}

// waitFor polls the latest snapshot until ok accepts it.
func (r *recorder) waitFor(t testing.TB, what string, ok func(*mesh.Snapshot) bool) *mesh.Snapshot {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		if s := r.last(); s != nil && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot with %s within %s; last: %s", what, waitLimit, describe(r.last()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// describe prints a snapshot's clusters and endpoints for failure messages.
func describe(s *mesh.Snapshot) string {
	if s == nil {
		return "none"
	}
	out := s.Version + ":"
	for _, c := range s.Clusters() {
		out += " " + c.Name + "["
		for i, e := range c.Endpoints {
			if i > 0 {
				out += " "
			}
			out += e.Addr.String() + "@" + e.Locality.String()
		}
		out += "]"
	}
	return out
}

// start runs a source over cs until the test ends and waits for its first
// snapshot. Each snapshot goes to also, then to the recorder.
func start(t testing.TB, cs kubernetes.Interface, o kube.Options, also ...func(*mesh.Snapshot)) (*kube.Source, *recorder) {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	rec := &recorder{}
	src := kube.New(cs, o, func(s *mesh.Snapshot) {
		for _, f := range also {
			f(s)
		}
		rec.apply(s)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %s of cancel", waitLimit)
		}
	})
	deadline := time.Now().Add(waitLimit)
	for !src.Stats().Synced {
		select {
		case err := <-done:
			t.Fatalf("Run returned before the first snapshot: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("source not synced within %s: %+v", waitLimit, src.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return src, rec
}

func host(ns, name string) string { return name + "." + ns + ".svc.cluster.local" }

func service(ns, name string, annotations map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    ports,
		},
	}
}

func tcpPort(name string, port, target int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(target)}
}

func udpPort(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(port)}
}

// ep describes one EndpointSlice endpoint.
type ep struct {
	addr, node, zone, pod string
	ready, terminating    *bool
}

var (
	yes = ptr(true)
	no  = ptr(false)
)

func ptr[T any](v T) *T { return &v }

// slicePort is one EndpointSlice port.
type slicePort struct {
	name  string
	port  int32
	proto corev1.Protocol
}

// endpointSlice builds a slice the way the EndpointSlice controller does:
// labelled with its service, ports named after the service ports, zone
// hints set for topology-aware routing.
func endpointSlice(ns, name, svc string, ports []slicePort, eps ...ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range ports {
		sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: ptr(p.name), Port: ptr(p.port), Protocol: ptr(p.proto)})
	}
	for _, e := range eps {
		ke := discoveryv1.Endpoint{
			Addresses:  []string{e.addr},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.ready, Terminating: e.terminating},
		}
		if e.node != "" {
			ke.NodeName = ptr(e.node)
		}
		if e.zone != "" {
			ke.Zone = ptr(e.zone)
			ke.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: e.zone}}}
		}
		if e.pod != "" {
			ke.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod}
		}
		sl.Endpoints = append(sl.Endpoints, ke)
	}
	return sl
}

func node(name, region, zone, subzone string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	for k, v := range map[string]string{kube.LabelRegion: region, kube.LabelZone: zone, kube.LabelSubzone: subzone} {
		if v != "" {
			n.Labels[k] = v
		}
	}
	return n
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// addrs returns a cluster's endpoint addresses, sorted.
func addrs(c *mesh.Cluster) []string {
	var out []string
	for _, e := range c.Endpoints {
		out = append(out, e.Addr.String())
	}
	slices.Sort(out)
	return out
}

// endpointAt finds the endpoint with address a.
func endpointAt(t testing.TB, c *mesh.Cluster, a string) mesh.Endpoint {
	t.Helper()
	want := netip.MustParseAddrPort(a)
	for _, e := range c.Endpoints {
		if e.Addr == want {
			return e
		}
	}
	t.Fatalf("cluster %s has no endpoint %s: %v", c.Name, a, addrs(c))
	return mesh.Endpoint{}
}

func lookup(t testing.TB, s *mesh.Snapshot, h string, port uint16) *mesh.Cluster {
	t.Helper()
	c, reason := s.Lookup(h, port, "")
	if c == nil {
		t.Fatalf("Lookup(%s, %d) failed: %s (%s)", h, port, reason, describe(s))
	}
	return c
}

// hasAddrs reports whether cluster (host, port) exists with exactly want.
func hasAddrs(h string, port uint16, want ...string) func(*mesh.Snapshot) bool {
	slices.Sort(want)
	return func(s *mesh.Snapshot) bool {
		c, _ := s.Lookup(h, port, "")
		return c != nil && slices.Equal(addrs(c), want)
	}
}

func reasonIs(h string, port uint16, want mesh.Reason) func(*mesh.Snapshot) bool {
	return func(s *mesh.Snapshot) bool {
		_, r := s.Lookup(h, port, "")
		return r == want
	}
}

func mustDo(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(fmt.Errorf("%s: %w", what, err))
	}
}
