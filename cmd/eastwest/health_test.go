package main

import (
	"context"
	"testing"

	"github.com/eastwest-gw/eastwest/health"
	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
)

// A WorkloadGroup's probe in the mesh files checks the WorkloadEntries its
// labels select, through the conversion start and reload use.
func TestWorkloadGroupProbeSelectsEntries(t *testing.T) {
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
spec: {address: 10.2.0.7, labels: {app: billing}, serviceAccount: billing, network: network2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other-vm, namespace: vms}
spec: {address: 10.2.0.8, labels: {app: other}, serviceAccount: other, network: network2}
`
	res, err := istioyaml.LoadBytes(context.Background(), "vms.yaml", []byte(vmMesh), istioyaml.Options{Network: "network2"})
	if err != nil {
		t.Fatal(err)
	}
	targets := health.TargetsFor(res.Snapshot, nil, groupsFrom(res.WorkloadGroups)...)
	if len(targets) != 1 {
		t.Fatalf("%d targets, want the one entry the group selects: %+v", len(targets), targets)
	}
	tg := targets[0]
	cfg, err := tg.Config.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if tg.Endpoint.String() != "10.2.0.7:8080" || tg.Cluster != "outbound_.8080_._.billing.vms.svc.cluster.local" ||
		cfg.HTTPGet == nil || cfg.HTTPGet.Path != "/ready" || cfg.HTTPGet.Port != 8080 || cfg.Interval.String() != "5s" {
		t.Fatalf("target %+v with config %+v", tg, cfg)
	}
}
