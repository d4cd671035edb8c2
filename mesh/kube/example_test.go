package kube_test

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/kube"
)

// A Service with one TCP port and one ready pod becomes one SNI-DNAT
// cluster. A real gateway passes kube.NewClient("", "eastwest") and
// store.Swap instead of the fake client and the channel.
func Example() {
	svc := service("default", "reviews", nil, tcpPort("tcp", 9080, 8080))
	sl := endpointSlice("default", "reviews-1", "reviews", []slicePort{{"tcp", 8080, corev1.ProtocolTCP}},
		ep{addr: "10.0.0.1", node: "node-a"})
	client := fake.NewClientset(svc, sl, node("node-a", "region1", "zone-a", ""))

	snaps := make(chan *mesh.Snapshot, 1)
	ctx, cancel := context.WithCancel(context.Background())
	src := kube.New(client, kube.Options{Network: "network2", Logger: slog.New(slog.DiscardHandler)}, func(s *mesh.Snapshot) {
		select {
		case snaps <- s:
		default:
		}
	})
	done := make(chan error)
	go func() { done <- src.Run(ctx) }()

	snap := <-snaps
	c, _ := snap.Lookup("reviews.default.svc.cluster.local", 9080, "")
	fmt.Println(c.Name)
	for _, e := range c.Endpoints {
		fmt.Println(e.Addr, e.Locality)
	}
	cancel()
	fmt.Println(<-done)
	// Output:
	// outbound_.9080_._.reviews.default.svc.cluster.local
	// 10.0.0.1:8080 region1/zone-a
	// <nil>
}
