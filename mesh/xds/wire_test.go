package xds

import (
	"reflect"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/eastwest-gw/eastwest/mesh"
)

// slowCLA is the reference path: proto.Unmarshal and translateEndpoints.
func slowCLA(b []byte) (string, []mesh.Endpoint, error) {
	var cla endpointv3.ClusterLoadAssignment
	if err := proto.Unmarshal(b, &cla); err != nil {
		return "", nil, err
	}
	eps, err := translateEndpoints(&cla, "network1")
	return cla.GetClusterName(), eps, err
}

// sameAsSlow decodes b on both paths; when the fast one answers, the slow
// one must give the same answer. It returns whether the fast one answered.
func sameAsSlow(t testing.TB, b []byte) bool {
	t.Helper()
	name, eps, ok := newCLADecoder("network1").decode(b)
	if !ok {
		return false
	}
	sname, seps, err := slowCLA(b)
	if err != nil {
		t.Fatalf("fast path accepted what the slow one rejects (%v): %x", err, b)
	}
	if name != sname || !reflect.DeepEqual(eps, seps) {
		t.Fatalf("fast path: %q %+v\nslow path: %q %+v\nbytes %x", name, eps, sname, seps, b)
	}
	return true
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// field is the wire form of a length-delimited field.
func field(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

func lbEndpointOn(addr string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}}}
}

// cat concatenates serialized messages: proto reads that as one message,
// the later fields merged into the earlier.
func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// fastCorpus is CLAs the wire decoder must read itself: shaped like
// istiod's, and edge cases of proto's merge rules (concatenated messages
// merge).
func fastCorpus(t testing.TB) map[string][]byte {
	richMeta := workloadMetadata("w-1;ns;app;v2;Kubernetes")
	richMeta.FilterMetadata["envoy.transport_socket_match"] = &structpb.Struct{Fields: map[string]*structpb.Value{
		"tlsMode": structpb.NewStringValue("istio"),
		"nested":  structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"workload": structpb.NewNumberValue(3)}}),
		"list":    structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewBoolValue(true), structpb.NewNullValue()}}),
	}}
	rich := testCLA(v1Name, "10.0.0.1", "2001:db8::1", "::ffff:10.0.0.3")
	rich.Endpoints[0].LbEndpoints[0].Metadata = richMeta
	rich.Endpoints[1].LbEndpoints[0].HealthStatus = corev3.HealthStatus_DRAINING
	udp := lbEndpointOn("10.0.0.9", 53)
	udp.GetEndpoint().GetAddress().GetSocketAddress().Protocol = corev3.SocketAddress_UDP
	noAddr := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{}}}
	rich.Endpoints[2].LbEndpoints = append(rich.Endpoints[2].LbEndpoints, udp, noAddr)
	onlySkipped := &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{udp}}}}
	noWorkloadKey := testCLA("c", "10.0.0.1")
	noWorkloadKey.Endpoints[0].LbEndpoints[0].Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{"other": structpb.NewStringValue("x")}}}}
	numberWorkload := testCLA("c", "10.0.0.1")
	numberWorkload.Endpoints[0].LbEndpoints[0].Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{"workload": structpb.NewNumberValue(1)}}}}

	lbe := func(m proto.Message) []byte { return mustMarshal(t, m) }
	a, b := lbEndpointOn("10.0.0.1", 80), lbEndpointOn("10.0.0.2", 8080)
	b.LoadBalancingWeight = wrapperspb.UInt32(7)
	b.HealthStatus = corev3.HealthStatus_UNHEALTHY
	b.Metadata = workloadMetadata("second;ns2;;;")
	a.Metadata = workloadMetadata("first;ns1;app;v1;c1")
	// istio entry replaced by a later map entry without workload.
	emptyIstio := mustMarshal(t, &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {}}})
	loc := mustMarshal(t, &corev3.Locality{Region: "r1", Zone: "z1"})
	loc2 := mustMarshal(t, &corev3.Locality{Zone: "z2", SubZone: "s2"})
	prio := protowire.AppendVarint(protowire.AppendTag(nil, 5, protowire.VarintType), 3)

	str := func(num protowire.Number, v string) []byte { return field(num, []byte(v)) }
	workloadEntry := func(w string) []byte { return field(1, cat(str(1, "workload"), field(2, str(3, w)))) }
	twice := field(3, field(1, cat(str(1, "istio"), field(2, cat(workloadEntry("x;ns;a;v1;c"), workloadEntry("y;ns2;b;;"))))))
	plain := lbEndpointOn("10.0.0.4", 82)

	return map[string][]byte{
		"workload listed twice":            field(2, field(2, cat(lbe(plain), twice))),
		"istiod shaped":                    mustMarshal(t, benchCLA(v1Name, 7, 10)),
		"rich":                             mustMarshal(t, rich),
		"no endpoints":                     mustMarshal(t, &endpointv3.ClusterLoadAssignment{ClusterName: "c"}),
		"empty locality":                   mustMarshal(t, &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}),
		"only skipped":                     mustMarshal(t, onlySkipped),
		"no workload key":                  mustMarshal(t, noWorkloadKey),
		"number workload":                  mustMarshal(t, numberWorkload),
		"empty message":                    nil,
		"two CLAs merged":                  cat(mustMarshal(t, testCLA("first", "10.0.0.1")), mustMarshal(t, testCLA("second", "10.0.0.2"))),
		"lb endpoint merge":                field(2, field(2, cat(lbe(a), lbe(b)))),
		"metadata replaced":                field(2, field(2, cat(lbe(a), field(3, emptyIstio)))),
		"locality after endpoints, merged": field(2, cat(field(2, lbe(a)), field(1, loc), prio, field(2, lbe(lbEndpointOn("10.0.0.3", 81))), field(1, loc2))),
	}
}

func TestCLADecoderFastPath(t *testing.T) {
	for name, data := range fastCorpus(t) {
		t.Run(name, func(t *testing.T) {
			if !sameAsSlow(t, data) {
				t.Fatal("fast path declined")
			}
		})
	}
	// What a real istiod sent takes the fast path.
	_, eds := loadFixture(t)
	for i, r := range eds.GetResources() {
		if !sameAsSlow(t, r.GetValue()) {
			t.Fatalf("fixture resource %d: fast path declined", i)
		}
	}
	// The decoder shares label maps and strings between endpoints; the
	// values stay right.
	_, eps, _ := newCLADecoder("network1").decode(mustMarshal(t, benchCLA(v1Name, 7, 10)))
	if eps[0].Labels["app"] != "app" || eps[0].Locality.Region != "us-east1" {
		t.Fatalf("endpoint 0: %+v", eps[0])
	}
}

func TestCLADecoderFallsBack(t *testing.T) {
	withPolicy := testCLA("c", "10.0.0.1")
	withPolicy.Policy = &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(140)}
	named := testCLA("c", "10.0.0.1")
	named.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "http"}
	byName := testCLA("c", "10.0.0.1")
	byName.Endpoints[0].LbEndpoints[0].HostIdentifier = &endpointv3.LbEndpoint_EndpointName{EndpointName: "e"}
	extra := testCLA("c", "10.0.0.1")
	extra.Endpoints[0].LbEndpoints[0].GetEndpoint().AdditionalAddresses = []*endpointv3.Endpoint_AdditionalAddress{{}}
	typed := testCLA("c", "10.0.0.1")
	typed.Endpoints[0].LbEndpoints[0].Metadata.TypedFilterMetadata = map[string]*anypb.Any{"x": {}}
	highPrio := testCLA("c", "10.0.0.1")
	highPrio.Endpoints[0].Priority = 129
	badPercent := testCLA("c", "10.0.0.1")
	badPercent.Endpoints[0].Proximity = wrapperspb.UInt32(1)
	for name, data := range map[string][]byte{
		"policy":           mustMarshal(t, withPolicy),
		"named port":       mustMarshal(t, named),
		"endpoint name":    mustMarshal(t, byName),
		"extra addresses":  mustMarshal(t, extra),
		"typed metadata":   mustMarshal(t, typed),
		"priority 129":     mustMarshal(t, highPrio),
		"proximity":        mustMarshal(t, badPercent),
		"hostname address": mustMarshal(t, testCLA("c", "reviews.default")),
		"bad UTF-8 name":   field(1, []byte{0xff}),
		"truncated":        mustMarshal(t, testCLA("c", "10.0.0.1"))[:20],
		"name as varint":   protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1),
		"percent":          mustMarshal(t, &typev3.Percent{Value: 1}),
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, ok := newCLADecoder("network1").decode(data); ok {
				t.Fatal("fast path answered")
			}
		})
	}
}

// FuzzCLADecoder holds the wire decoder to proto.Unmarshal plus
// translateEndpoints: whatever it accepts, they accept with the same result.
func FuzzCLADecoder(f *testing.F) {
	rich := testCLA(v1Name, "10.0.0.1", "2001:db8::1")
	rich.Endpoints[0].LbEndpoints[0].Metadata.FilterMetadata["m"] = &structpb.Struct{Fields: map[string]*structpb.Value{
		"s": structpb.NewStructValue(&structpb.Struct{}), "l": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(1)}})}}
	for _, m := range []proto.Message{benchCLA(v1Name, 1, 4), rich, &endpointv3.ClusterLoadAssignment{ClusterName: "c"}} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range fastCorpus(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) { sameAsSlow(t, data) })
}

// edsNamesAhead guesses from a scan what applyClusters will subscribe to,
// and does not guess the same rejected resource wrong twice.
func TestEDSNamesAhead(t *testing.T) {
	static := istioCluster(rtName)
	static.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	static.EdsClusterConfig = nil
	dns := istioCluster("outbound_.80_._.dns.default.svc.cluster.local")
	dns.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	svcName := istioCluster("outbound_.80_._.svc.default.svc.cluster.local")
	svcName.EdsClusterConfig.ServiceName = "eds-name"
	noSvcName := istioCluster("outbound_.81_._.svc.default.svc.cluster.local")
	noSvcName.EdsClusterConfig.ServiceName = ""
	invalid := istioCluster("outbound_.82_._.svc.default.svc.cluster.local")
	invalid.ConnectTimeout = durationpb.New(-time.Second) // fails Validate, not the scan
	res := []*anypb.Any{mustAny(t, istioCluster(v1Name)), mustAny(t, static), mustAny(t, dns), mustAny(t, svcName),
		mustAny(t, noSvcName), mustAny(t, invalid), mustAny(t, istioCluster("outbound|9080||reviews.default.svc.cluster.local"))}

	st := newState("network1")
	want := []string{"eds-name", "outbound_.81_._.svc.default.svc.cluster.local", v1Name}
	if got := st.edsNamesAhead(res); !slices.Equal(got, append(slices.Clone(want[:2]), invalid.GetName(), v1Name)) {
		t.Fatalf("first guess %v", got)
	}
	if _, _, err := st.applyClusters("1", res); err == nil || !slices.Equal(st.edsNames, want) {
		t.Fatalf("applyClusters: err %v, names %v, want %v", err, st.edsNames, want)
	}
	if got := st.edsNamesAhead(res); !slices.Equal(got, want) {
		t.Fatalf("second guess %v, want %v", got, want)
	}
	// A bad update of an accepted cluster keeps the cluster, and its
	// subscription.
	badV1 := istioCluster(v1Name)
	badV1.ConnectTimeout = durationpb.New(-time.Second)
	res[0] = mustAny(t, badV1)
	if _, _, err := st.applyClusters("2", res); err == nil || !slices.Equal(st.edsNames, want) {
		t.Fatalf("bad update: err %v, names %v", err, st.edsNames)
	}
	if got := st.edsNamesAhead(res); !slices.Equal(got, want) {
		t.Fatalf("guess after a bad update %v, want %v", got, want)
	}
}
