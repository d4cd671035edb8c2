package health_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"time"

	"github.com/eastwest-gw/eastwest/balancer"
	"github.com/eastwest-gw/eastwest/health"
	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
)

// The balancer is the Sink (HC-3), with degraded verdicts too.
var (
	_ health.Sink         = (*balancer.Balancer)(nil)
	_ health.DegradedSink = (*balancer.Balancer)(nil)
)

// groupsFrom converts istioyaml's WorkloadGroups (the YAML loader's Result)
// to health Groups; cmd/eastwest does the same. The probe fields are the
// Kubernetes probe's on both sides.
func groupsFrom(wgs []istioyaml.WorkloadGroup) []health.Group {
	var out []health.Group
	for _, wg := range wgs {
		p := wg.Probe
		if p == nil {
			continue
		}
		labels := maps.Clone(wg.Metadata.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, wg.Template.Labels)
		cfg := health.CheckConfig{InitialDelaySeconds: p.InitialDelaySeconds, TimeoutSeconds: p.TimeoutSeconds,
			PeriodSeconds: p.PeriodSeconds, SuccessThreshold: p.SuccessThreshold, FailureThreshold: p.FailureThreshold}
		switch {
		case p.HTTPGet != nil:
			h := &health.HTTPGetAction{Path: p.HTTPGet.Path, Port: uint16(p.HTTPGet.Port), Host: p.HTTPGet.Host, Scheme: p.HTTPGet.Scheme}
			for _, hd := range p.HTTPGet.HTTPHeaders {
				h.HTTPHeaders = append(h.HTTPHeaders, health.HTTPHeader{Name: hd.Name, Value: hd.Value})
			}
			cfg.HTTPGet = h
		case p.TCPSocket != nil:
			cfg.TCPSocket = &health.TCPSocketAction{Port: uint16(p.TCPSocket.Port)}
		case p.GRPC != nil:
			cfg.GRPC = &health.GRPCAction{Port: uint16(p.GRPC.Port), Service: p.GRPC.Service}
		case p.Exec != nil:
			cfg.Exec = &health.ExecAction{Command: p.Exec.Command}
		}
		out = append(out, health.Group{Name: wg.Name, Namespace: wg.Namespace, Labels: labels, Probe: cfg})
	}
	return out
}

const vmMesh = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: billing, namespace: vms}
spec:
  hosts: [billing.vms.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: billing}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: billing, namespace: vms}
spec:
  metadata: {labels: {app: billing}}
  template: {serviceAccount: billing, network: network2}
  probe:
    periodSeconds: 5
    httpGet: {path: /ready, port: 8080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: billing-vm-1, namespace: vms}
spec:
  address: 10.2.0.7
  labels: {app: billing}
  serviceAccount: billing
  network: network2
`

// A WorkloadGroup's probe checks the WorkloadEntries its labels select.
func ExampleTargetsFor_workloadGroup() {
	res, err := istioyaml.LoadBytes(context.Background(), "vms.yaml", []byte(vmMesh), istioyaml.Options{Network: "network2"})
	if err != nil {
		fmt.Println(err)
		return
	}
	// No settings entry: only the group's probe applies.
	for _, t := range health.TargetsFor(res.Snapshot, nil, groupsFrom(res.WorkloadGroups)...) {
		cfg, _ := t.Config.WithDefaults()
		fmt.Println(t.Cluster, t.Endpoint, cfg.HTTPGet.Path, cfg.HTTPGet.Port, cfg.Interval)
	}
	// Output:
	// outbound_.8080_._.billing.vms.svc.cluster.local 10.2.0.7:8080 /ready 8080 5s
}

// Wiring, as cmd/eastwest does it: the balancer is the Sink, every snapshot
// refreshes the targets.
func ExampleNew() {
	bal := balancer.New(balancer.Options{Logger: slog.New(slog.DiscardHandler)})
	hc := health.New(health.Options{
		Sink: bal,
		OnUnhealthy: func(_ netip.AddrPort, _ time.Duration) {
			// ask the proxy to close connections to ep over window (HC-6)
		},
	})
	cfgs := []health.CheckConfig{{Host: "*"}} // the sidecar readiness default everywhere (HC-2)
	res, err := istioyaml.LoadBytes(context.Background(), "vms.yaml", []byte(vmMesh), istioyaml.Options{Network: "network2"})
	if err != nil {
		fmt.Println(err)
		return
	}
	bal.Update(res.Snapshot)
	hc.Update(health.TargetsFor(res.Snapshot, cfgs))
	// go hc.Run(ctx)
	fmt.Println(hc.Pending(), "checks pending")
	// Output: 1 checks pending
}
