package balancer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"

	"github.com/eastwest-gw/eastwest/balancer"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/proxy"
)

// The balancer is the proxy's Picker and the health checker's sink.
var _ proxy.Picker = (*balancer.Balancer)(nil)

func Example() {
	svc := &mesh.Service{Host: "reviews.default.svc.cluster.local", Exported: true,
		Ports: []mesh.Port{{Number: 9080, Protocol: "TCP"}}}
	c := &mesh.Cluster{Key: mesh.Key{Host: svc.Host, Port: 9080}, Service: svc, Endpoints: []mesh.Endpoint{
		{Addr: netip.MustParseAddrPort("10.0.0.1:9080"), Locality: mesh.ParseLocality("us-east1/us-east1-b")},
	}, Policy: mesh.TrafficPolicy{OutlierDetection: &mesh.OutlierDetection{}}}
	snap, err := mesh.Build(mesh.Spec{Services: []*mesh.Service{svc}, Clusters: []*mesh.Cluster{c}})
	if err != nil {
		panic(err)
	}
	store := mesh.NewStore(snap)

	b := balancer.New(balancer.Options{
		Locality: mesh.ParseLocality("us-east1/us-east1-b"),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	store.Subscribe(b.Update)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)

	var p proxy.Picker = b
	ep, err := p.Pick(ctx, c, mesh.PickRequest{})
	fmt.Println(ep.Addr, err)
	p.Report(c, ep, mesh.ConnectOK)
	p.Report(c, ep, mesh.Released)

	// An active check fails: no healthy host, and with outlierDetection
	// Istio's minHealthPercent 0 turns panic off, so the pick fails (UH).
	b.SetHealthy(ep.Addr, false)
	_, err = p.Pick(ctx, c, mesh.PickRequest{})
	fmt.Println(err, errors.Is(err, proxy.ErrNoHealthyUpstream))
	// Output:
	// 10.0.0.1:9080 <nil>
	// cluster outbound_.9080_._.reviews.default.svc.cluster.local: no healthy upstream true
}
