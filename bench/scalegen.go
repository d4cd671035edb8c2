package bench

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/eastwest-gw/eastwest/mesh"
)

// scaleGen describes the generated mesh: services x ports x endpoints, in
// at most 100 namespaces, every endpoint a 127.x address (nothing listens:
// the scale run opens no socket to them).
type scaleGen struct {
	services, ports, eps int
}

// scaleNetwork is the gateway's and every endpoint's network.
const scaleNetwork = "network1"

var scaleZones = [...]string{"us-east1-a", "us-east1-b", "us-east1-c"}

func (g scaleGen) namespaces() int { return max(1, min(100, g.services)) }
func (g scaleGen) ns(i int) string { return "ns-" + strconv.Itoa(i%g.namespaces()) }
func (g scaleGen) name(i int) string {
	return "svc-" + strconv.Itoa(i)
}
func (g scaleGen) host(i int) string    { return g.name(i) + "." + g.ns(i) + ".svc.cluster.local" }
func (g scaleGen) svcPort(p int) uint16 { return uint16(9080 + p) }
func (g scaleGen) epPort(p int) uint16  { return uint16(8080 + p) }
func (g scaleGen) zone(j int) string    { return scaleZones[j%len(scaleZones)] }

// epAddr is endpoint j of service i: distinct for up to 2^24 endpoints.
func (g scaleGen) epAddr(i, j int) netip.Addr {
	idx := i*g.eps + j + 1
	return netip.AddrFrom4([4]byte{127, byte(idx >> 16), byte(idx >> 8), byte(idx)})
}

func (g scaleGen) workload(i, j int) string { return g.name(i) + "-" + strconv.Itoa(j) }

func (g scaleGen) key(i, p int) mesh.Key { return mesh.Key{Host: g.host(i), Port: g.svcPort(p)} }

// policy is what mesh/xds makes of the cluster xdsCluster builds: Istio's
// defaults plus a DestinationRule with consecutive5xxErrors.
func scalePolicy() mesh.TrafficPolicy {
	off := false
	five, zero := uint32(5), int32(0)
	return mesh.TrafficPolicy{
		ConnectTimeout: 10 * time.Second,
		LoadBalancer:   mesh.LoadBalancer{Simple: mesh.LBLeastRequest, Locality: &mesh.LocalityLB{Enabled: &off}},
		OutlierDetection: &mesh.OutlierDetection{
			Consecutive5xxErrors: &five, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second,
			MinHealthPercent: &zero,
		},
	}
}

// endpoints are the mesh endpoints of service i, port p, as mesh/xds
// translates xdsCLA. movedPort, when non-zero, replaces the last
// endpoint's port (an EDS update).
func (g scaleGen) endpoints(i, p int, movedPort uint16) []mesh.Endpoint {
	out := make([]mesh.Endpoint, 0, g.eps)
	for z := range scaleZones {
		for j := z; j < g.eps; j += len(scaleZones) {
			port := g.epPort(p)
			if movedPort != 0 && j == g.eps-1 {
				port = movedPort
			}
			out = append(out, mesh.Endpoint{
				Addr:      netip.AddrPortFrom(g.epAddr(i, j), port),
				Locality:  mesh.Locality{Region: "us-east1", Zone: g.zone(j)},
				Weight:    1,
				Network:   scaleNetwork,
				Workload:  g.workload(i, j),
				Namespace: g.ns(i),
				Labels:    map[string]string{"app": g.name(i), "version": "v1", "topology.istio.io/cluster": "Kubernetes"},
			})
		}
	}
	return out
}

// meshSpec is the whole mesh as mesh values, the input of mesh.Build.
func (g scaleGen) meshSpec() mesh.Spec {
	spec := mesh.Spec{Version: "direct"}
	pol := scalePolicy()
	for i := range g.services {
		svc := &mesh.Service{Host: g.host(i), Namespace: g.ns(i), Exported: true}
		for p := range g.ports {
			svc.Ports = append(svc.Ports, mesh.Port{Number: g.svcPort(p), Protocol: "TCP"})
		}
		spec.Services = append(spec.Services, svc)
		for p := range g.ports {
			spec.Clusters = append(spec.Clusters, &mesh.Cluster{Key: g.key(i, p), Service: svc,
				Endpoints: g.endpoints(i, p, 0), Policy: pol})
		}
	}
	return spec
}

// xdsCluster is an SNI-DNAT cluster shaped like istiod's (the same as
// mesh/xds's test clusters).
func xdsCluster(name string) *clusterv3.Cluster {
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

// xdsCLA is the ClusterLoadAssignment of service i, port p, grouped by
// zone and carrying istio.workload metadata as istiod sends it.
func (g scaleGen) xdsCLA(i, p int, movedPort uint16) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: g.key(i, p).String()}
	for z, zone := range scaleZones {
		lle := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Region: "us-east1", Zone: zone}}
		for j := z; j < g.eps; j += len(scaleZones) {
			port := g.epPort(p)
			if movedPort != 0 && j == g.eps-1 {
				port = movedPort
			}
			w := g.workload(i, j) + ";" + g.ns(i) + ";" + g.name(i) + ";v1;Kubernetes"
			lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
					Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: g.epAddr(i, j).String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}},
				LoadBalancingWeight: wrapperspb.UInt32(1),
				Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
					"istio": {Fields: map[string]*structpb.Value{"workload": structpb.NewStringValue(w)}},
				}},
			})
		}
		if len(lle.LbEndpoints) == 0 {
			continue
		}
		lle.LoadBalancingWeight = wrapperspb.UInt32(uint32(len(lle.LbEndpoints)))
		cla.Endpoints = append(cla.Endpoints, lle)
	}
	return cla
}

// xdsResources are every cluster and every CLA, in cluster order.
func (g scaleGen) xdsResources() (clusters, clas []types.Resource) {
	for i := range g.services {
		for p := range g.ports {
			clusters = append(clusters, xdsCluster(g.key(i, p).String()))
			clas = append(clas, g.xdsCLA(i, p, 0))
		}
	}
	return clusters, clas
}

// writeYAML writes one file per namespace: a ServiceEntry per service
// (MESH_INTERNAL, STATIC, workloadSelector app) and its WorkloadEntries.
// It returns the number of files and bytes written.
func (g scaleGen) writeYAML(dir string) (files int, size int64, err error) {
	per := make([]strings.Builder, g.namespaces())
	for i := range g.services {
		b := &per[i%g.namespaces()]
		fmt.Fprintf(b, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: %s, namespace: %s}\nspec:\n"+
			"  hosts: [%s]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n", g.name(i), g.ns(i), g.host(i))
		for p := range g.ports {
			fmt.Fprintf(b, "  - {number: %d, name: tcp-%d, protocol: TCP}\n", g.svcPort(p), p)
		}
		fmt.Fprintf(b, "  workloadSelector:\n    labels: {app: %s}\n", g.name(i))
		for j := range g.eps {
			fmt.Fprintf(b, "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: %s, namespace: %s}\nspec:\n"+
				"  address: %s\n  ports: {", g.workload(i, j), g.ns(i), g.epAddr(i, j))
			for p := range g.ports {
				if p > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(b, "tcp-%d: %d", p, g.epPort(p))
			}
			fmt.Fprintf(b, "}\n  labels: {app: %s, version: v1}\n  locality: us-east1/%s\n  network: %s\n  serviceAccount: %s\n",
				g.name(i), g.zone(j), scaleNetwork, g.name(i))
		}
		b.WriteString("---\n")
	}
	for n := range per {
		data := per[n].String()
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("ns-%d.yaml", n)), []byte(data), 0o600); err != nil {
			return files, size, fmt.Errorf("write mesh YAML: %w", err)
		}
		files++
		size += int64(len(data))
	}
	return files, size, nil
}
