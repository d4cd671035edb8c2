package xds

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	_ "github.com/cncf/xds/go/udpa/type/v1" // TypedStruct in the fixture
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/eastwest-gw/eastwest/mesh"
)

func TestParseClusterName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    mesh.Key
		notSNI  bool
		wantErr bool
	}{
		{name: "subset", in: "outbound_.9080_.v1_.reviews.default.svc.cluster.local", want: mesh.Key{Host: "reviews.default.svc.cluster.local", Port: 9080, Subset: "v1"}},
		{name: "no subset", in: "outbound_.9443_._.ratings.default.svc.cluster.local", want: mesh.Key{Host: "ratings.default.svc.cluster.local", Port: 9443}},
		{name: "subset with underscore", in: "outbound_.80_.canary_a_.web.ns.svc.cluster.local", want: mesh.Key{Host: "web.ns.svc.cluster.local", Port: 80, Subset: "canary_a"}},
		{name: "pipe form", in: "outbound|9080|v1|reviews.default.svc.cluster.local", notSNI: true},
		{name: "blackhole", in: "BlackHoleCluster", notSNI: true},
		{name: "port zero", in: "outbound_.0_._.a.b.svc.cluster.local", wantErr: true},
		{name: "port too big", in: "outbound_.65536_._.a.b.svc.cluster.local", wantErr: true},
		{name: "leading zero", in: "outbound_.080_._.a.b.svc.cluster.local", wantErr: true},
		{name: "no subset part", in: "outbound_.80_.a.b.svc.cluster.local", wantErr: true},
		{name: "no port part", in: "outbound_.", wantErr: true},
		{name: "empty host", in: "outbound_.80_._.", wantErr: true},
		{name: "upper case host", in: "outbound_.80_._.Reviews.default", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseClusterName(tt.in)
			switch {
			case tt.notSNI:
				if !errors.Is(err, errNotSNIDNAT) {
					t.Fatalf("err = %v, want errNotSNIDNAT", err)
				}
			case tt.wantErr:
				if err == nil || errors.Is(err, errNotSNIDNAT) {
					t.Fatalf("err = %v, want a malformed-name error", err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want || got.String() != tt.in {
					t.Fatalf("got %+v (%s), want %+v", got, got, tt.want)
				}
			}
		})
	}
}

// FuzzParseClusterName: a name that parses names exactly the key it parsed
// to (cluster names come off the network).
func FuzzParseClusterName(f *testing.F) {
	for _, s := range []string{
		"outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		"outbound_.9443_._.ratings.default.svc.cluster.local",
		"outbound|9080||ratings.default.svc.cluster.local",
		"outbound_.1_._.x", "outbound_._._.", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseClusterName(s)
		if err != nil {
			return
		}
		if k.String() != s {
			t.Fatalf("%q parsed to %+v which prints %q", s, k, k.String())
		}
		if k.Port == 0 || k.Host == "" {
			t.Fatalf("%q: zero port or empty host", s)
		}
	})
}

// loadFixture reads what a real istiod 1.29 sent an east-west gateway.
func loadFixture(t testing.TB) (cds, eds *discoveryv3.DiscoveryResponse) {
	t.Helper()
	cds, eds = &discoveryv3.DiscoveryResponse{}, &discoveryv3.DiscoveryResponse{}
	b, err := os.ReadFile("testdata/istiod-1.29/cds.txt")
	if err != nil {
		t.Fatal(err)
	}
	if err := prototext.Unmarshal(b, cds); err != nil {
		t.Fatalf("cds.txt: %v", err)
	}
	b, err = os.ReadFile("testdata/istiod-1.29/eds.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(b, eds); err != nil {
		t.Fatalf("eds.json: %v", err)
	}
	return cds, eds
}

func TestFixtureIstiod129(t *testing.T) {
	cds, eds := loadFixture(t)
	st := newState("network1")
	changed, subChanged, err := st.applyClusters(cds.GetVersionInfo(), cds.GetResources())
	if err != nil || !changed || !subChanged {
		t.Fatalf("applyClusters: changed %v sub %v err %v", changed, subChanged, err)
	}
	wantNames := []string{
		"outbound_.9080_._.ratings.default.svc.cluster.local",
		"outbound_.9080_._.reviews.default.svc.cluster.local",
		"outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		"outbound_.9080_.v2_.reviews.default.svc.cluster.local",
		"outbound_.9080_.v3_.reviews.default.svc.cluster.local",
		"outbound_.9443_._.ratings.default.svc.cluster.local",
	}
	if strings.Join(st.edsNames, ",") != strings.Join(wantNames, ",") {
		t.Fatalf("EDS subscription = %v, want %v", st.edsNames, wantNames)
	}
	if st.ready() {
		t.Fatal("ready before EDS")
	}
	if _, err := st.applyAssignments(eds.GetVersionInfo(), eds.GetResources()); err != nil {
		t.Fatalf("applyAssignments: %v", err)
	}
	if !st.ready() {
		t.Fatalf("not ready after EDS: warming %v", st.warming)
	}
	snap, err := st.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(snap.Clusters()); got != 6 {
		t.Fatalf("%d clusters, want 6", got)
	}
	if snap.Services() != 2 {
		t.Fatalf("%d services, want 2 (MESH_EXTERNAL api.example.com gets no SNI-DNAT cluster)", snap.Services())
	}
	c, reason := snap.Lookup("reviews.default.svc.cluster.local", 9080, "v1")
	if reason != mesh.ReasonNone {
		t.Fatalf("lookup: %v", reason)
	}
	p := c.Policy
	if p.LoadBalancer.Simple != mesh.LBLeastRequest || p.ConnectTimeout != 10*time.Second || p.MaxConnections != 0 {
		t.Fatalf("policy = %+v", p)
	}
	od := p.OutlierDetection
	if od == nil || od.Consecutive5xxErrors == nil || *od.Consecutive5xxErrors != 5 ||
		od.Interval != 10*time.Second || od.BaseEjectionTime != 30*time.Second ||
		od.MinHealthPercent == nil || *od.MinHealthPercent != 0 || od.ConsecutiveGatewayErrors != nil {
		t.Fatalf("outlier detection = %+v", od)
	}
	if c.Service.Namespace != "default" || !c.Service.Exported || c.Service.MeshExternal {
		t.Fatalf("service = %+v", c.Service)
	}
	r, _ := snap.Lookup("ratings.default.svc.cluster.local", 9443, "")
	if r == nil || r.Policy.OutlierDetection != nil {
		t.Fatalf("ratings 9443: %+v", r)
	}
	if _, reason := snap.LookupHost("ratings.default.svc.cluster.local"); reason != mesh.ReasonAmbiguousPort {
		t.Fatalf("ratings has two ports, LookupHost reason = %v", reason)
	}
}

// istioCluster is an SNI-DNAT cluster shaped like istiod 1.29's (cds.txt).
func istioCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
			ServiceName: name,
		},
		ConnectTimeout: durationpb.New(10 * time.Second),
		LbPolicy:       clusterv3.Cluster_LEAST_REQUEST,
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: wrapperspb.UInt32(4294967295), MaxPendingRequests: wrapperspb.UInt32(4294967295),
			MaxRequests: wrapperspb.UInt32(4294967295), MaxRetries: wrapperspb.UInt32(4294967295),
		}}},
		OutlierDetection: &clusterv3.OutlierDetection{
			Consecutive_5Xx:          wrapperspb.UInt32(5),
			Interval:                 durationpb.New(10 * time.Second),
			BaseEjectionTime:         durationpb.New(30 * time.Second),
			EnforcingConsecutive_5Xx: wrapperspb.UInt32(100),
			EnforcingSuccessRate:     wrapperspb.UInt32(0),
		},
		CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{}},
	}
}

func TestTranslatePolicy(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(c *clusterv3.Cluster)
		check  func(t *testing.T, p mesh.TrafficPolicy)
		errIs  error
		anyErr bool
	}{
		{name: "istio default", check: func(t *testing.T, p mesh.TrafficPolicy) {
			if p.LoadBalancer.Simple != mesh.LBLeastRequest || p.LoadBalancer.Locality == nil || *p.LoadBalancer.Locality.Enabled {
				t.Fatalf("lb = %+v", p.LoadBalancer)
			}
		}},
		{name: "round robin", mod: func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN }, check: func(t *testing.T, p mesh.TrafficPolicy) {
			if p.LoadBalancer.Simple != mesh.LBRoundRobin {
				t.Fatal(p.LoadBalancer.Simple)
			}
		}},
		{name: "random", mod: func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RANDOM }, check: func(t *testing.T, p mesh.TrafficPolicy) {
			if p.LoadBalancer.Simple != mesh.LBRandom {
				t.Fatal(p.LoadBalancer.Simple)
			}
		}},
		{name: "ring hash", mod: func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(2048)}}
		}, check: func(t *testing.T, p mesh.TrafficPolicy) {
			ch := p.LoadBalancer.ConsistentHash
			if ch == nil || ch.Maglev || !ch.UseSourceIP || ch.MinimumRingSize != 2048 {
				t.Fatalf("%+v", ch)
			}
		}},
		{name: "maglev", mod: func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(251)}}
		}, check: func(t *testing.T, p mesh.TrafficPolicy) {
			ch := p.LoadBalancer.ConsistentHash
			if ch == nil || !ch.Maglev || ch.TableSize != 251 {
				t.Fatalf("%+v", ch)
			}
		}},
		{name: "load_balancing_policy extension", mod: func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG
			c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
				{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "x", TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/unknown.Policy"}}},
				{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "rr", TypedConfig: &anypb.Any{TypeUrl: lbExtRoundRobin}}},
			}}
		}, check: func(t *testing.T, p mesh.TrafficPolicy) {
			if p.LoadBalancer.Simple != mesh.LBRoundRobin {
				t.Fatal(p.LoadBalancer.Simple)
			}
		}},
		{name: "circuit breaker", mod: func(c *clusterv3.Cluster) {
			c.CircuitBreakers.Thresholds[0].MaxConnections = wrapperspb.UInt32(100)
		}, check: func(t *testing.T, p mesh.TrafficPolicy) {
			if p.MaxConnections != 100 {
				t.Fatal(p.MaxConnections)
			}
		}},
		{name: "panic threshold absent means Envoy's 50", mod: func(c *clusterv3.Cluster) { c.CommonLbConfig = nil }, check: func(t *testing.T, p mesh.TrafficPolicy) {
			if *p.OutlierDetection.MinHealthPercent != 50 {
				t.Fatal(*p.OutlierDetection.MinHealthPercent)
			}
		}},
		{name: "gateway and local origin errors", mod: func(c *clusterv3.Cluster) {
			od := c.OutlierDetection
			od.ConsecutiveGatewayFailure = wrapperspb.UInt32(3)
			od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
			od.Consecutive_5Xx = wrapperspb.UInt32(0)
			od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
			od.SplitExternalLocalOriginErrors = true
			od.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(2)
			od.EnforcingConsecutiveLocalOriginFailure = wrapperspb.UInt32(100)
			od.MaxEjectionPercent = wrapperspb.UInt32(30)
			od.MaxEjectionTime = durationpb.New(time.Minute)
			c.CommonLbConfig.HealthyPanicThreshold = &typev3.Percent{Value: 25}
		}, check: func(t *testing.T, p mesh.TrafficPolicy) {
			od := p.OutlierDetection
			if *od.ConsecutiveGatewayErrors != 3 || *od.Consecutive5xxErrors != 0 || !od.SplitExternalLocalOrigin ||
				*od.ConsecutiveLocalOriginErrors != 2 || *od.MaxEjectionPercent != 30 || od.MaxEjectionTime != time.Minute ||
				*od.MinHealthPercent != 25 {
				t.Fatalf("%+v", od)
			}
		}},
		{name: "max below base ejection time", mod: func(c *clusterv3.Cluster) {
			c.OutlierDetection.MaxEjectionTime = durationpb.New(time.Second)
		}, anyErr: true},
		{name: "bad connect timeout", mod: func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(-time.Second) }, anyErr: true},
		{name: "strict dns unsupported", mod: func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		}, errIs: errUnsupported},
		{name: "static with inline endpoints", mod: func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
			c.EdsClusterConfig = nil
			c.LoadAssignment = testCLA(c.Name, "10.0.0.1")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := istioCluster("outbound_.9080_.v1_.reviews.default.svc.cluster.local")
			if tt.mod != nil {
				tt.mod(c)
			}
			info, err := translateCluster(c, "network1")
			switch {
			case tt.errIs != nil:
				if !errors.Is(err, tt.errIs) {
					t.Fatalf("err = %v, want %v", err, tt.errIs)
				}
				return
			case tt.anyErr:
				if err == nil || errors.Is(err, errUnsupported) {
					t.Fatalf("err = %v, want a malformed-cluster error", err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, info.policy)
			}
		})
	}
}

// testCLA is a ClusterLoadAssignment shaped like istiod's: one locality per
// address, weight 3, istio.workload metadata.
func testCLA(name string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for i, a := range addrs {
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Region: "us-east1", Zone: "us-east1-b", SubZone: "rack" + string(rune('1'+i%9))},
			LoadBalancingWeight: wrapperspb.UInt32(3),
			Priority:            uint32(i % 2),
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
					Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: a, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 19081}}}}}},
				HealthStatus:        corev3.HealthStatus_UNKNOWN,
				LoadBalancingWeight: wrapperspb.UInt32(3),
				Metadata:            workloadMetadata("reviews-v1-a;default;reviews;v1;Kubernetes"),
			}},
		})
	}
	return cla
}

func TestTranslateEndpoints(t *testing.T) {
	cla := testCLA("c", "10.0.0.1", "::ffff:10.0.0.2")
	cla.Endpoints[1].LbEndpoints[0].HealthStatus = corev3.HealthStatus_DRAINING
	// A non-IP endpoint (internal address) is skipped, not rejected.
	cla.Endpoints[1].LbEndpoints = append(cla.Endpoints[1].LbEndpoints, &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
			Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{}}}}}})
	eps, err := translateEndpoints(cla, "network1")
	if err != nil {
		t.Fatal(err)
	}
	want := []mesh.Endpoint{
		{Addr: netip.MustParseAddrPort("10.0.0.1:19081"), Locality: mesh.Locality{Region: "us-east1", Zone: "us-east1-b", Subzone: "rack1"},
			Weight: 3, Priority: 0, Health: mesh.HealthUnknown, Network: "network1", Workload: "reviews-v1-a", Namespace: "default"},
		{Addr: netip.MustParseAddrPort("10.0.0.2:19081"), Locality: mesh.Locality{Region: "us-east1", Zone: "us-east1-b", Subzone: "rack2"},
			Weight: 3, Priority: 1, Health: mesh.HealthDraining, Network: "network1", Workload: "reviews-v1-a", Namespace: "default"},
	}
	if len(eps) != len(want) {
		t.Fatalf("%d endpoints, want %d", len(eps), len(want))
	}
	for i := range want {
		got := eps[i]
		if got.Labels["app"] != "reviews" || got.Labels["version"] != "v1" || got.Labels[labelCluster] != "Kubernetes" {
			t.Fatalf("labels = %v", got.Labels)
		}
		got.Labels = nil
		if !reflect.DeepEqual(got, want[i]) {
			t.Fatalf("endpoint %d = %+v, want %+v", i, got, want[i])
		}
	}

	for _, tc := range []struct{ name, addr string }{{"hostname", "reviews.default"}, {"empty", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := translateEndpoints(testCLA("c", tc.addr), "n"); err == nil {
				t.Fatalf("address %q accepted", tc.addr)
			}
		})
	}
}

func TestStateMergesPartialEDS(t *testing.T) {
	names := []string{
		"outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		"outbound_.9080_.v2_.reviews.default.svc.cluster.local",
	}
	st := newState("network1")
	var cds []*anypb.Any
	for _, n := range names {
		cds = append(cds, mustAny(t, istioCluster(n)))
	}
	if _, _, err := st.applyClusters("1", cds); err != nil {
		t.Fatal(err)
	}
	if _, err := st.applyAssignments("1", []*anypb.Any{mustAny(t, testCLA(names[0], "10.0.0.1")), mustAny(t, testCLA(names[1], "10.0.0.2"))}); err != nil {
		t.Fatal(err)
	}
	// istiod sends only the changed cluster; a bad CLA keeps its old value.
	bad := testCLA(names[1], "not-an-ip")
	changed, err := st.applyAssignments("2", []*anypb.Any{mustAny(t, testCLA(names[0], "10.0.0.9")), mustAny(t, bad)})
	if !changed || err == nil || !strings.Contains(err.Error(), names[1]) {
		t.Fatalf("changed %v err %v", changed, err)
	}
	if st.edsVersion != "1" {
		t.Fatalf("accepted version %q after a NACK, want 1", st.edsVersion)
	}
	snap, err := st.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"v1": "10.0.0.9:19081", "v2": "10.0.0.2:19081"} {
		c, _ := snap.Lookup("reviews.default.svc.cluster.local", 9080, key)
		if c == nil || len(c.Endpoints) != 1 || c.Endpoints[0].Addr.String() != want {
			t.Fatalf("%s: %+v, want %s", key, c, want)
		}
	}
	// Removing a cluster from CDS drops its endpoints and subscription.
	_, sub, err := st.applyClusters("2", cds[:1])
	if err != nil || !sub || len(st.cla) != 1 || len(st.edsNames) != 1 {
		t.Fatalf("sub %v err %v cla %d names %v", sub, err, len(st.cla), st.edsNames)
	}
	// The same CDS again changes nothing.
	if changed, sub, err := st.applyClusters("3", cds[:1]); changed || sub || err != nil {
		t.Fatalf("re-push: changed %v sub %v err %v", changed, sub, err)
	}
}

// FuzzApplyResources feeds arbitrary resource bytes (as they come off the
// wire) to the CDS and EDS merge: never a panic, and an accepted update
// always yields a snapshot.
func FuzzApplyResources(f *testing.F) {
	c, err := proto.Marshal(istioCluster(v1Name))
	if err != nil {
		f.Fatal(err)
	}
	e, err := proto.Marshal(testCLA(v1Name, "10.0.0.1", "2001:db8::1"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(false, c)
	f.Add(true, e)
	f.Add(true, []byte{0x0a, 0x03, 'a', 'b', 'c'})
	f.Fuzz(func(t *testing.T, eds bool, data []byte) {
		st := newState("network1")
		if _, _, err := st.applyClusters("1", []*anypb.Any{mustAny(t, istioCluster(v1Name))}); err != nil {
			t.Fatal(err)
		}
		if eds {
			if _, err := st.applyAssignments("2", []*anypb.Any{{TypeUrl: typeEndpoint, Value: data}}); err != nil {
				return
			}
		} else if _, _, err := st.applyClusters("2", []*anypb.Any{{TypeUrl: typeCluster, Value: data}}); err != nil {
			return
		}
		if _, err := st.snapshot(); err != nil {
			t.Fatalf("accepted update, snapshot failed: %v", err)
		}
	})
}
