package health_test

import (
	"context"
	"fmt"
	"log/slog"
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
