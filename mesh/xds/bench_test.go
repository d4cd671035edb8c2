//go:build unix

package xds

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/eastwest-gw/eastwest/mesh"
)

const (
	benchServices = 10_000
	benchPorts    = 2
	benchEPs      = 10
)

// benchCLA is a CLA of n endpoints over three zones, shaped like istiod's.
func benchCLA(name string, seed, n int) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	zones := []string{"us-east1-a", "us-east1-b", "us-east1-c"}
	for z := range zones {
		lle := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Region: "us-east1", Zone: zones[z]}}
		for i := z; i < n; i += len(zones) {
			ip := fmt.Sprintf("10.%d.%d.%d", (seed>>8)&0xff, seed&0xff, i+1)
			lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
					Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}}}},
				LoadBalancingWeight: wrapperspb.UInt32(1),
				Metadata:            workloadMetadata(fmt.Sprintf("w-%d-%d;ns;app;v1;Kubernetes", seed, i)),
			})
		}
		lle.LoadBalancingWeight = wrapperspb.UInt32(uint32(len(lle.LbEndpoints)))
		cla.Endpoints = append(cla.Endpoints, lle)
	}
	return cla
}

// cpuTime is the process's user+system CPU time: on a shared machine
// wall time per op varies several-fold, CPU time much less.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds a cpu-ms/op metric covering the b.Loop iterations.
func reportCPU(b *testing.B, start time.Duration, n int) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(n)/1e6, "cpu-ms/op")
}

type benchSet struct {
	names    []string
	clusters []*anypb.Any
	clas     []*anypb.Any
}

// newBenchSet is 10,000 services x 2 ports x 10 endpoints, serialized as
// they arrive off the wire.
func newBenchSet(b *testing.B) benchSet {
	b.Helper()
	var s benchSet
	for i := range benchServices {
		for p := range benchPorts {
			name := mesh.Key{Host: fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local", i, i%100), Port: uint16(8080 + p)}.String()
			s.names = append(s.names, name)
			s.clusters = append(s.clusters, mustAny(b, istioCluster(name)))
			s.clas = append(s.clas, mustAny(b, benchCLA(name, i, benchEPs)))
		}
	}
	return s
}

// BenchmarkFullSync: a complete CDS and EDS set turned into a snapshot, as
// on the first connection.
func BenchmarkFullSync(b *testing.B) {
	set := newBenchSet(b)
	b.ReportAllocs()
	n, start := 0, cpuTime(b)
	for b.Loop() {
		n++
		st := newState("network1")
		if _, _, err := st.applyClusters("1", set.clusters); err != nil {
			b.Fatal(err)
		}
		if _, err := st.applyAssignments("1", set.clas); err != nil {
			b.Fatal(err)
		}
		snap, err := st.snapshot()
		if err != nil || len(snap.Clusters()) != benchServices*benchPorts {
			b.Fatalf("snapshot: %v", err)
		}
	}
	reportCPU(b, start, n)
}

// BenchmarkEDSUpdateOneCluster: one cluster's endpoints change; the merge
// and the new snapshot are measured.
func BenchmarkEDSUpdateOneCluster(b *testing.B) {
	set := newBenchSet(b)
	st := newState("network1")
	if _, _, err := st.applyClusters("1", set.clusters); err != nil {
		b.Fatal(err)
	}
	if _, err := st.applyAssignments("1", set.clas); err != nil {
		b.Fatal(err)
	}
	name := set.names[len(set.names)/2]
	variants := []*anypb.Any{mustAny(b, benchCLA(name, 70_000, benchEPs)), mustAny(b, benchCLA(name, 70_001, benchEPs))}
	b.ReportAllocs()
	i, start := 0, cpuTime(b)
	for b.Loop() {
		changed, err := st.applyAssignments("2", variants[i%2:i%2+1])
		if err != nil || !changed {
			b.Fatalf("changed %v err %v", changed, err)
		}
		if _, err := st.snapshot(); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportCPU(b, start, i)
}

// BenchmarkSnapshotOnly isolates mesh.Build plus the cluster slab from the
// EDS merge, to show where an update's time goes.
func BenchmarkSnapshotOnly(b *testing.B) {
	set := newBenchSet(b)
	st := newState("network1")
	if _, _, err := st.applyClusters("1", set.clusters); err != nil {
		b.Fatal(err)
	}
	if _, err := st.applyAssignments("1", set.clas); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	n, start := 0, cpuTime(b)
	for b.Loop() {
		n++
		if _, err := st.snapshot(); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start, n)
}
