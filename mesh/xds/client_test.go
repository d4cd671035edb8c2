package xds

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/eastwest-gw/eastwest/internal/testpki"
	"github.com/eastwest-gw/eastwest/mesh"
)

const (
	v1Name = "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
	v2Name = "outbound_.9080_.v2_.reviews.default.svc.cluster.local"
	rtName = "outbound_.9080_._.ratings.default.svc.cluster.local"
)

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func workloadMetadata(w string) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{"workload": structpb.NewStringValue(w)}},
	}}
}

// testNode is the node of the fixture README.
func testNode() NodeInfo {
	return NodeInfo{
		IP: "127.0.0.1", PodName: "eastwest-1", Namespace: "istio-system", ClusterID: "Kubernetes",
		Network: "network1", Labels: map[string]string{"istio": "eastwestgateway"},
		Locality: mesh.Locality{Region: "us-east1", Zone: "us-east1-b"}, IstioVersion: "1.29.0",
	}
}

const testNodeID = "router~127.0.0.1~eastwest-1.istio-system~istio-system.svc.cluster.local"

// testServer is an in-process ADS server backed by go-control-plane's
// snapshot cache, recording every request it receives.
type testServer struct {
	addr  string
	cache cachev3.SnapshotCache
	srv   *grpc.Server

	mu   sync.Mutex
	reqs []seenReq
}

// seenReq is a SotW or delta request as the server received it.
type seenReq struct {
	node              *corev3.Node
	typeURL, version  string
	nonce, errMsg     string
	hasErr            bool
	names, sub, unsub []string
}

type serverOpts struct {
	addr  string // "" picks a free port
	tls   *tls.Config
	token string // required bearer token, if any
	cache cachev3.SnapshotCache
	// onOpen sees each stream's context (peer, metadata).
	onOpen func(ctx context.Context)
	// noDelta makes the server answer delta streams Unimplemented.
	noDelta bool
}

// sotwOnly hides the delta ADS method, as an older server would.
type sotwOnly struct{ serverv3.Server }

func (sotwOnly) DeltaAggregatedResources(discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "delta xDS not implemented")
}

func startServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	if o.addr == "" {
		o.addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", o.addr)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: lis.Addr().String(), cache: o.cache}
	if ts.cache == nil {
		ts.cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	}
	cb := serverv3.CallbackFuncs{StreamOpenFunc: func(ctx context.Context, _ int64, _ string) error {
		if o.onOpen != nil {
			o.onOpen(ctx)
		}
		return nil
	}, StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
		ts.add(seenReq{node: r.GetNode(), typeURL: r.GetTypeUrl(), version: r.GetVersionInfo(), nonce: r.GetResponseNonce(),
			hasErr: r.GetErrorDetail() != nil, errMsg: r.GetErrorDetail().GetMessage(), names: r.GetResourceNames()})
		return nil
	}, StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
		ts.add(seenReq{node: r.GetNode(), typeURL: r.GetTypeUrl(), nonce: r.GetResponseNonce(),
			hasErr: r.GetErrorDetail() != nil, errMsg: r.GetErrorDetail().GetMessage(),
			sub: r.GetResourceNamesSubscribe(), unsub: r.GetResourceNamesUnsubscribe()})
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	var xds discoveryv3.AggregatedDiscoveryServiceServer = serverv3.NewServer(ctx, ts.cache, cb)
	if o.noDelta {
		xds = sotwOnly{xds.(serverv3.Server)}
	}
	var opts []grpc.ServerOption
	if o.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.tls)))
	}
	if o.token != "" {
		opts = append(opts, grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			md, _ := metadata.FromIncomingContext(ss.Context())
			if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+o.token {
				return status.Error(codes.Unauthenticated, "bad token")
			}
			return h(srv, ss)
		}))
	}
	ts.srv = grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(ts.srv, xds)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ts.srv.Serve(lis)
	}()
	stop := func() {
		ts.srv.Stop()
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return ts
}

func (ts *testServer) add(r seenReq) {
	r.node = proto.Clone(r.node).(*corev3.Node)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.reqs = append(ts.reqs, r)
}

func (ts *testServer) requests() []seenReq {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]seenReq(nil), ts.reqs...)
}

// waitReq waits (bounded) until the server has received a request
// matching ok, and returns the last such request.
func (ts *testServer) waitReq(t testing.TB, what string, ok func(seenReq) bool) seenReq {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		reqs := ts.requests()
		for i := len(reqs) - 1; i >= 0; i-- {
			if ok(reqs[i]) {
				return reqs[i]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never received %s; got %+v", what, reqs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// modes runs a test once per protocol.
var modes = []struct {
	name  string
	delta bool
}{{"sotw", false}, {"delta", true}}

// set installs a snapshot for the test node: the given SNI-DNAT clusters
// plus a non-SNI-DNAT cluster the client must ignore, and CLAs.
func (ts *testServer) set(t testing.TB, version string, clusters []string, clas ...*endpointv3.ClusterLoadAssignment) {
	t.Helper()
	var cs []types.Resource
	for _, n := range clusters {
		cs = append(cs, istioCluster(n))
	}
	other := istioCluster("outbound|9080||reviews.default.svc.cluster.local")
	cs = append(cs, other)
	var es []types.Resource
	for _, c := range clas {
		es = append(es, c)
	}
	snap, err := cachev3.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ClusterType: cs, resource.EndpointType: es,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.cache.SetSnapshot(context.Background(), testNodeID, snap); err != nil {
		t.Fatal(err)
	}
}

// sink collects snapshots the client publishes.
type sink struct {
	store *mesh.Store
	ch    chan *mesh.Snapshot
	n     atomic.Int64
}

func newSink() *sink {
	empty, _ := mesh.Build(mesh.Spec{})
	return &sink{store: mesh.NewStore(empty), ch: make(chan *mesh.Snapshot, 100)}
}

func (s *sink) apply(snap *mesh.Snapshot) {
	s.store.Swap(snap)
	s.n.Add(1)
	select {
	case s.ch <- snap:
	default:
	}
}

// waitFor waits (bounded) until a published snapshot satisfies ok.
func (s *sink) waitFor(t testing.TB, what string, ok func(*mesh.Snapshot) bool) *mesh.Snapshot {
	t.Helper()
	if snap := s.store.Load(); ok(snap) {
		return snap
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case snap := <-s.ch:
			if ok(snap) {
				return snap
			}
		case <-deadline:
			t.Fatalf("no snapshot with %s within 10s", what)
			return nil
		}
	}
}

func endpointsAre(subset string, addrs ...string) func(*mesh.Snapshot) bool {
	return func(snap *mesh.Snapshot) bool {
		c, _ := snap.Lookup("reviews.default.svc.cluster.local", 9080, subset)
		if c == nil || len(c.Endpoints) != len(addrs) {
			return false
		}
		for i, a := range addrs {
			if c.Endpoints[i].Addr.Addr().String() != a {
				return false
			}
		}
		return true
	}
}

// runClient runs a client until the test ends.
func runClient(t testing.TB, o Options, s *sink) *Client {
	t.Helper()
	o.Node = testNode()
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	if o.Backoff == (Backoff{}) {
		o.Backoff = Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	}
	c := New(o, s.apply)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func waitStats(t testing.TB, c *Client, what string, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := c.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never had %s: %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClientFollowsServer(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testClientFollowsServer(t, m.delta) })
	}
}

func testClientFollowsServer(t *testing.T, delta bool) {
	ts := startServer(t, serverOpts{})
	ts.set(t, "1", []string{v1Name, v2Name, rtName},
		testCLA(v1Name, "10.0.0.1", "10.0.0.2"), testCLA(v2Name, "10.0.1.1"), testCLA(rtName, "10.0.2.1"))
	s := newSink()
	c := runClient(t, Options{Address: ts.addr, Insecure: true, Delta: delta}, s)

	snap := s.waitFor(t, "v1 endpoints", endpointsAre("v1", "10.0.0.1", "10.0.0.2"))
	if len(snap.Clusters()) != 3 {
		t.Fatalf("%d clusters, want 3 (the pipe-named cluster is ignored)", len(snap.Clusters()))
	}
	cl, _ := snap.Lookup("reviews.default.svc.cluster.local", 9080, "v1")
	ep := cl.Endpoints[0]
	if ep.Locality != (mesh.Locality{Region: "us-east1", Zone: "us-east1-b", Subzone: "rack1"}) || ep.Weight != 3 ||
		ep.Workload != "reviews-v1-a" || ep.Labels["version"] != "v1" || cl.Endpoints[1].Priority != 1 {
		t.Fatalf("endpoint = %+v / %+v", ep, cl.Endpoints[1])
	}
	if cl.Policy.LoadBalancer.Simple != mesh.LBLeastRequest || cl.Policy.OutlierDetection == nil {
		t.Fatalf("policy = %+v", cl.Policy)
	}

	// An endpoint change is followed.
	start := time.Now()
	ts.set(t, "2", []string{v1Name, v2Name, rtName},
		testCLA(v1Name, "10.0.0.3"), testCLA(v2Name, "10.0.1.1"), testCLA(rtName, "10.0.2.1"))
	s.waitFor(t, "v1 moved to 10.0.0.3", endpointsAre("v1", "10.0.0.3"))
	t.Logf("EDS change applied after %v", time.Since(start))

	// A removed cluster disappears.
	ts.set(t, "3", []string{v1Name, rtName}, testCLA(v1Name, "10.0.0.3"), testCLA(rtName, "10.0.2.1"))
	s.waitFor(t, "v2 gone", func(s *mesh.Snapshot) bool {
		c, _ := s.Lookup("reviews.default.svc.cluster.local", 9080, "v2")
		return c == nil && len(s.Clusters()) == 2
	})
	st := waitStats(t, c, "connected", func(s Stats) bool { return s.Connected })
	if st.NACKs != 0 || st.Connects != 1 || st.Delta != delta {
		t.Fatalf("stats = %+v", st)
	}
	// The client subscribes only to SNI-DNAT clusters' endpoints, and drops
	// the removed one.
	if delta {
		ts.waitReq(t, "an EDS unsubscribe of v2", func(r seenReq) bool {
			return r.typeURL == typeEndpoint && slices.Equal(r.unsub, []string{v2Name})
		})
		return
	}
	waitStats(t, c, "version 3 ACKed", func(s Stats) bool { return s.ClusterVersion == "3" && s.EndpointVersion == "3" })
	ts.waitReq(t, "the EDS ACK of version 3 for ratings and v1", func(r seenReq) bool {
		return r.typeURL == typeEndpoint && r.version == "3" && slices.Equal(r.names, []string{rtName, v1Name})
	})
}

// TestClientSubscribesEDSBeforeCDSAck: the EDS subscription leaves before
// the clusters are decoded (and so before the CDS ACK), once, and a
// cluster that fails validation is dropped from it afterwards.
func TestClientSubscribesEDSBeforeCDSAck(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ts := startServer(t, serverOpts{})
			ts.set(t, "1", []string{v1Name, v2Name}, testCLA(v1Name, "10.0.0.1"), testCLA(v2Name, "10.0.1.1"))
			s := newSink()
			runClient(t, Options{Address: ts.addr, Insecure: true, Delta: m.delta}, s)
			s.waitFor(t, "v2 endpoints", endpointsAre("v2", "10.0.1.1"))
			ts.waitReq(t, "the CDS ACK", func(r seenReq) bool { return r.typeURL == typeCluster && r.nonce != "" })
			var subs, ack int
			for i, r := range ts.requests() {
				switch {
				case r.typeURL == typeCluster && r.nonce != "" && ack == 0:
					ack = i
				case r.typeURL == typeEndpoint && (len(r.sub) > 0 || len(r.unsub) > 0 || !m.delta && r.nonce == ""):
					if ack != 0 {
						t.Fatalf("EDS subscription after the CDS ACK: %+v", ts.requests())
					}
					subs++
				}
			}
			if subs != 1 {
				t.Fatalf("%d EDS subscriptions, want 1: %+v", subs, ts.requests())
			}

			// A new cluster that passes the scan but not validation is
			// subscribed ahead, then dropped.
			bad := istioCluster("outbound_.9080_.v3_.reviews.default.svc.cluster.local")
			bad.ConnectTimeout = durationpb.New(-time.Second)
			snap, err := cachev3.NewSnapshot("2", map[resource.Type][]types.Resource{
				resource.ClusterType:  {istioCluster(v1Name), istioCluster(v2Name), bad},
				resource.EndpointType: {testCLA(v1Name, "10.0.0.1"), testCLA(v2Name, "10.0.1.1")},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := ts.cache.SetSnapshot(context.Background(), testNodeID, snap); err != nil {
				t.Fatal(err)
			}
			ts.waitReq(t, "the EDS subscription with the invalid cluster", func(r seenReq) bool {
				return r.typeURL == typeEndpoint && (slices.Contains(r.sub, bad.GetName()) || slices.Contains(r.names, bad.GetName()))
			})
			ts.waitReq(t, "the EDS subscription without the invalid cluster", func(r seenReq) bool {
				if r.typeURL != typeEndpoint {
					return false
				}
				if m.delta {
					return slices.Equal(r.unsub, []string{bad.GetName()})
				}
				return r.nonce != "" && slices.Equal(r.names, []string{v1Name, v2Name}) && r.version == "2"
			})
		})
	}
}

func TestClientNodeShape(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.set(t, "1", []string{v1Name}, testCLA(v1Name, "10.0.0.1"))
	s := newSink()
	runClient(t, Options{Address: ts.addr, Insecure: true}, s)
	s.waitFor(t, "v1 endpoints", endpointsAre("v1", "10.0.0.1"))

	reqs := ts.requests()
	first := reqs[0]
	if first.typeURL != typeCluster {
		t.Fatalf("first request is for %s, want CDS", first.typeURL)
	}
	n := first.node
	if n.GetId() != testNodeID {
		t.Fatalf("node id %q, want %q", n.GetId(), testNodeID)
	}
	md := n.GetMetadata().GetFields()
	for k, want := range map[string]string{"NAMESPACE": "istio-system", "CLUSTER_ID": "Kubernetes", "NETWORK": "network1", "ISTIO_VERSION": "1.29.0"} {
		if got := md[k].GetStringValue(); got != want {
			t.Errorf("metadata %s = %q, want %q", k, got, want)
		}
	}
	if got := md["LABELS"].GetStructValue().GetFields()["istio"].GetStringValue(); got != "eastwestgateway" {
		t.Errorf("LABELS.istio = %q", got)
	}
	if l := n.GetLocality(); l.GetRegion() != "us-east1" || l.GetZone() != "us-east1-b" {
		t.Errorf("locality = %v", l)
	}
}

func TestClientKeepsSnapshotAcrossServerRestart(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testClientKeepsSnapshotAcrossServerRestart(t, m.delta) })
	}
}

func testClientKeepsSnapshotAcrossServerRestart(t *testing.T, delta bool) {
	ts := startServer(t, serverOpts{})
	ts.set(t, "1", []string{v1Name, v2Name}, testCLA(v1Name, "10.0.0.1"), testCLA(v2Name, "10.0.1.1"))
	s := newSink()
	c := runClient(t, Options{Address: ts.addr, Insecure: true, Delta: delta}, s)
	s.waitFor(t, "v1 endpoints", endpointsAre("v1", "10.0.0.1"))
	s.waitFor(t, "v2 endpoints", endpointsAre("v2", "10.0.1.1"))
	published := s.n.Load()

	ts.srv.Stop()
	waitStats(t, c, "disconnected", func(s Stats) bool { return !s.Connected })
	if !endpointsAre("v1", "10.0.0.1")(s.store.Load()) || s.n.Load() != published {
		t.Fatal("the last good snapshot was replaced while istiod was down")
	}

	// istiod comes back on the same address, with a changed endpoint and
	// without v2, which went away while the client was disconnected.
	ts2 := startServer(t, serverOpts{addr: ts.addr})
	ts2.set(t, "7", []string{v1Name}, testCLA(v1Name, "10.0.0.2"))
	snap := s.waitFor(t, "v1 endpoints after restart", endpointsAre("v1", "10.0.0.2"))
	if len(snap.Clusters()) != 1 {
		t.Fatalf("clusters after restart: %v", snap.Clusters())
	}
	st := waitStats(t, c, "second connection", func(s Stats) bool { return s.Connected && s.Connects == 2 })
	if st.Delta != delta {
		t.Fatalf("stats = %+v", st)
	}
}

func TestClientNACKsMalformedKeepsRest(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testClientNACKsMalformedKeepsRest(t, m.delta) })
	}
}

func testClientNACKsMalformedKeepsRest(t *testing.T, delta bool) {
	ts := startServer(t, serverOpts{})
	bad := "outbound_.0_._.bad.default.svc.cluster.local"
	ts.set(t, "1", []string{v1Name, bad}, testCLA(v1Name, "10.0.0.1"))
	s := newSink()
	c := runClient(t, Options{Address: ts.addr, Insecure: true, Delta: delta}, s)
	snap := s.waitFor(t, "v1 endpoints", endpointsAre("v1", "10.0.0.1"))
	if len(snap.Clusters()) != 1 {
		t.Fatalf("%d clusters, want 1", len(snap.Clusters()))
	}
	st := waitStats(t, c, "a NACK", func(s Stats) bool { return s.NACKs >= 1 })
	if st.ClusterVersion != "" || !strings.Contains(st.LastNACKError, bad) {
		t.Fatalf("stats = %+v", st)
	}
	nack := ts.waitReq(t, "a CDS NACK", func(r seenReq) bool { return r.hasErr })
	if nack.typeURL != typeCluster || nack.version != "" || !strings.Contains(nack.errMsg, bad) || nack.nonce == "" {
		t.Fatalf("server saw NACK %+v", nack)
	}

	// A malformed CLA is NACKed; the cluster keeps its previous endpoints
	// while the others follow.
	ts.set(t, "2", []string{v1Name, rtName}, testCLA(v1Name, "not-an-ip"), testCLA(rtName, "10.0.2.1"))
	snap = s.waitFor(t, "ratings", func(s *mesh.Snapshot) bool {
		c, _ := s.Lookup("ratings.default.svc.cluster.local", 9080, "")
		return c != nil && len(c.Endpoints) == 1
	})
	if !endpointsAre("v1", "10.0.0.1")(snap) {
		t.Fatal("v1 lost its last good endpoints after a bad CLA")
	}
	waitStats(t, c, "an EDS NACK", func(s Stats) bool { return strings.Contains(s.LastNACKError, "not-an-ip") })
	ts.waitReq(t, "an EDS NACK", func(r seenReq) bool {
		return r.typeURL == typeEndpoint && r.hasErr && strings.Contains(r.errMsg, "not-an-ip")
	})
}

// TestClientDeltaFallback: a server without delta xDS gets state of the
// world from a client configured for delta.
func TestClientDeltaFallback(t *testing.T) {
	ts := startServer(t, serverOpts{noDelta: true})
	ts.set(t, "1", []string{v1Name}, testCLA(v1Name, "10.0.0.1"))
	s := newSink()
	c := runClient(t, Options{Address: ts.addr, Insecure: true, Delta: true}, s)
	s.waitFor(t, "v1 endpoints", endpointsAre("v1", "10.0.0.1"))
	if st := c.Stats(); st.Delta || !st.Connected {
		t.Fatalf("stats = %+v", st)
	}
}

func TestClientTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	if err := ca.WritePEM(dir, "gw", "spiffe://cluster.local/ns/istio-system/sa/eastwest"); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, "s3cret\n")
	srvCert, err := ca.Issue("spiffe://cluster.local/ns/istio-system/sa/istiod", "istiod.istio-system.svc")
	if err != nil {
		t.Fatal(err)
	}
	mtlsCfg := &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool, MinVersion: tls.VersionTLS12}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{srvCert}, MinVersion: tls.VersionTLS12}
	files := Options{ServerName: "istiod.istio-system.svc", CAFile: filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "gw.pem"), KeyFile: filepath.Join(dir, "gw-key.pem")}

	tests := []struct {
		name   string
		server serverOpts
		client func(o *Options)
		works  bool
	}{
		{name: "mtls", server: serverOpts{tls: mtlsCfg}, works: true},
		{name: "token over tls", server: serverOpts{tls: tlsCfg, token: "s3cret"},
			client: func(o *Options) { o.CertFile, o.KeyFile, o.TokenFile = "", "", tokenFile }, works: true},
		{name: "mtls without client cert", server: serverOpts{tls: mtlsCfg},
			client: func(o *Options) { o.CertFile, o.KeyFile = "", "" }},
		{name: "wrong server name", server: serverOpts{tls: mtlsCfg},
			client: func(o *Options) { o.ServerName = "evil.example" }},
		{name: "missing token", server: serverOpts{tls: tlsCfg, token: "s3cret"},
			client: func(o *Options) { o.CertFile, o.KeyFile = "", "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, tt.server)
			ts.set(t, "1", []string{v1Name}, testCLA(v1Name, "10.0.0.1"))
			o := files
			o.Address = ts.addr
			if tt.client != nil {
				tt.client(&o)
			}
			s := newSink()
			if tt.works {
				c := runClient(t, o, s)
				s.waitFor(t, "v1 endpoints", endpointsAre("v1", "10.0.0.1"))
				if !c.Stats().Connected {
					t.Fatal("not connected")
				}
				return
			}
			// Refused: the client retries, never connects, publishes nothing.
			var logs syncBuffer
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			c := runClient(t, o, s)
			deadline := time.Now().Add(10 * time.Second)
			for strings.Count(logs.String(), "reconnecting") < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("no retries logged: %s", logs.String())
				}
				time.Sleep(5 * time.Millisecond)
			}
			if st := c.Stats(); st.Connects != 0 || st.Snapshots != 0 || s.n.Load() != 0 {
				t.Fatalf("refused connection delivered data: %+v", st)
			}
		})
	}
}

func TestOptionsValidation(t *testing.T) {
	good := Options{Address: "127.0.0.1:15012", CAFile: "ca.pem", Node: testNode()}
	tests := []struct {
		name string
		mod  func(o *Options)
		want string
	}{
		{name: "ok", mod: func(*Options) {}},
		{name: "no address", mod: func(o *Options) { o.Address = "" }, want: "Address"},
		{name: "plaintext needs Insecure", mod: func(o *Options) { o.CAFile = "" }, want: "Insecure"},
		{name: "cert without key", mod: func(o *Options) { o.CertFile = "c.pem" }, want: "KeyFile"},
		{name: "no namespace", mod: func(o *Options) { o.Node.Namespace = "" }, want: "Namespace"},
		{name: "no network", mod: func(o *Options) { o.Node.Network = "" }, want: "Network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.mod(&o)
			if tt.want == "" {
				// Valid options: Run would connect; check populate only.
				if _, err := o.populate(); err != nil {
					t.Fatal(err)
				}
				return
			}
			err := New(o, func(*mesh.Snapshot) {}).Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestClientReloadsCertificates: a rotated client certificate is presented
// on the next connection.
func TestClientReloadsCertificates(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	const idA, idB = "spiffe://cluster.local/ns/istio-system/sa/eastwest", "spiffe://cluster.local/ns/istio-system/sa/eastwest-rotated"
	if err := ca.WritePEM(dir, "gw", idA); err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.Issue("spiffe://cluster.local/ns/istio-system/sa/istiod", "istiod.istio-system.svc")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool, MinVersion: tls.VersionTLS12}
	seen := make(chan string, 10)
	onOpen := func(ctx context.Context) {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 && len(ti.State.PeerCertificates[0].URIs) > 0 {
			seen <- ti.State.PeerCertificates[0].URIs[0].String()
		}
	}
	ts := startServer(t, serverOpts{tls: cfg, onOpen: onOpen})
	ts.set(t, "1", []string{v1Name}, testCLA(v1Name, "10.0.0.1"))
	s := newSink()
	runClient(t, Options{Address: ts.addr, ServerName: "istiod.istio-system.svc", CAFile: filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "gw.pem"), KeyFile: filepath.Join(dir, "gw-key.pem")}, s)
	s.waitFor(t, "v1 endpoints", endpointsAre("v1", "10.0.0.1"))
	if got := <-seen; got != idA {
		t.Fatalf("first identity %s, want %s", got, idA)
	}

	if err := ca.WritePEM(dir, "gw", idB); err != nil {
		t.Fatal(err)
	}
	ts.srv.Stop()
	ts2 := startServer(t, serverOpts{addr: ts.addr, tls: cfg, onOpen: onOpen})
	ts2.set(t, "2", []string{v1Name}, testCLA(v1Name, "10.0.0.2"))
	s.waitFor(t, "v1 endpoints after reconnect", endpointsAre("v1", "10.0.0.2"))
	if got := <-seen; got != idB {
		t.Fatalf("identity after rotation %s, want %s", got, idB)
	}
}

// TestClientWarmTimeout: a cluster whose endpoints never come is published
// empty after WarmTimeout, never silently absent.
func TestClientWarmTimeout(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.set(t, "1", []string{v1Name, v2Name}, testCLA(v1Name, "10.0.0.1"))
	s := newSink()
	runClient(t, Options{Address: ts.addr, Insecure: true, WarmTimeout: 100 * time.Millisecond}, s)
	first := s.waitFor(t, "a snapshot", func(s *mesh.Snapshot) bool { return len(s.Clusters()) > 0 })
	if !endpointsAre("v1", "10.0.0.1")(first) || !endpointsAre("v2")(first) {
		t.Fatalf("first snapshot: %v", first.Clusters())
	}
}
