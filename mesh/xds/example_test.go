package xds_test

import (
	"context"
	"log/slog"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/xds"
)

// The client feeds a mesh.Store; the proxy and balancer read the store.
func ExampleNew() {
	empty, _ := mesh.Build(mesh.Spec{})
	store := mesh.NewStore(empty)
	c := xds.New(xds.Options{
		Address:   "istiod.istio-system.svc:15012",
		CAFile:    "/var/run/secrets/istio/root-cert.pem",
		TokenFile: "/var/run/secrets/tokens/istio-token",
		Node: xds.NodeInfo{
			IP: "10.0.0.7", PodName: "eastwest-7d9c", Namespace: "istio-system",
			ClusterID: "Kubernetes", Network: "network1",
			Labels:   map[string]string{"istio": "eastwestgateway"},
			Locality: mesh.ParseLocality("us-east1/us-east1-b"),
		},
		Logger: slog.Default(),
	}, store.Swap)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx) }()
	_ = c.Stats().Connected
}
