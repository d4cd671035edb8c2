package proxy_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/proxy"
)

// firstPicker is the smallest Picker: the first endpoint not yet tried.
type firstPicker struct{}

func (firstPicker) Pick(_ context.Context, c *mesh.Cluster, req mesh.PickRequest) (mesh.Endpoint, error) {
	for _, ep := range c.Endpoints {
		tried := false
		for _, t := range req.Tried {
			tried = tried || t == ep.Addr
		}
		if !tried {
			return ep, nil
		}
	}
	return mesh.Endpoint{}, proxy.ErrNoHealthyUpstream
}

func (firstPicker) Report(*mesh.Cluster, mesh.Endpoint, mesh.Outcome) {}

// A gateway is a snapshot store, a Picker and a Forwarder; cmd/eastwest
// wires the balancer and the eBPF forwarder into the same two seams.
func Example() {
	svc := &mesh.Service{Host: "reviews.default.svc.cluster.local", Namespace: "default", Exported: true,
		Ports: []mesh.Port{{Number: 9080, Protocol: "TCP"}}}
	snap, err := mesh.Build(mesh.Spec{Services: []*mesh.Service{svc}, Clusters: []*mesh.Cluster{{
		Key: mesh.Key{Host: svc.Host, Port: 9080}, Service: svc,
		Endpoints: []mesh.Endpoint{{Addr: netip.MustParseAddrPort("127.0.0.1:19081")}},
	}}})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv, err := proxy.New(proxy.Config{Address: "127.0.0.1:0"}, proxy.Deps{
		Store: mesh.NewStore(snap), Picker: firstPicker{}, Forwarder: proxy.SpliceForwarder{},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := srv.Listen(); err != nil {
		fmt.Println(err)
		return
	}
	go func() { _ = srv.Serve() }()
	fmt.Println("routes", snap.Clusters()[0].Name)
	_ = srv.Shutdown(context.Background(), 0)
	// Output: routes outbound_.9080_._.reviews.default.svc.cluster.local
}
