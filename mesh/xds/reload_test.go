package xds

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/eastwest-gw/eastwest/balancer"
	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/proxy"
)

// claOn is testCLA with real ports.
func claOn(name string, addrs []string, ports []uint32) *endpointv3.ClusterLoadAssignment {
	cla := testCLA(name, addrs...)
	for i, le := range cla.Endpoints {
		le.Priority = 0
		sa := le.LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress()
		sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: ports[i]}
	}
	return cla
}

// Reload under load through xDS: 500 new connections per second for 20 s
// while istiod's snapshot changes every 100 ms. Every client connection
// succeeds and every byte comes back.
func TestReloadUnderLoadThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s load test")
	}
	const (
		rate     = 500
		duration = 20 * time.Second
	)
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	ports := make([]uint32, len(ips))
	for i, ip := range ips {
		ports[i] = uint32(testnet.TCPEcho(t, ip).Port())
	}
	ts := startServer(t, serverOpts{})
	ts.set(t, "0", []string{rtName}, claOn(rtName, ips[:2], ports[:2]))

	empty, err := mesh.Build(mesh.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	store := mesh.NewStore(empty)
	bal := balancer.New(balancer.Options{Logger: slog.New(slog.DiscardHandler)})
	store.Subscribe(bal.Update)
	s := newSink()
	s.store = store
	runClient(t, Options{Address: ts.addr, Insecure: true}, s)
	s.waitFor(t, "first snapshot", func(sn *mesh.Snapshot) bool { return len(sn.Clusters()) == 1 })

	srv, err := proxy.New(proxy.Config{Address: "127.0.0.1:0", Listeners: 2}, proxy.Deps{Store: store, Picker: bal, Forwarder: proxy.SpliceForwarder{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	defer func() { _ = srv.Shutdown(context.Background(), time.Second) }()

	msg := append(testnet.ClientHello(t, testpki.NewCA(t), rtName), bytes.Repeat([]byte("eastwest"), 512)...)

	stop := make(chan struct{})
	var versions atomic.Int64
	var swg sync.WaitGroup
	swg.Add(1)
	go func() { // istiod's endpoints flip every 100 ms
		defer swg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for v := 1; ; v++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			lo := v % 2
			ts.set(t, fmt.Sprint(v), []string{rtName}, claOn(rtName, ips[lo:lo+2], ports[lo:lo+2]))
			versions.Add(1)
		}
	}()

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / rate)
	for end := time.Now().Add(duration); time.Now().Before(end); {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := testnet.EchoThrough(srv.Addr(), msg); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			ok.Add(1)
		}()
	}
	tick.Stop()
	wg.Wait()
	close(stop)
	swg.Wait()
	t.Logf("%d connections ok, %d failed, %d xDS versions, %d snapshots applied", ok.Load(), failed.Load(), versions.Load(), s.n.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d connections failed while xDS changed; first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load() < rate*int64(duration/time.Second)*8/10 || s.n.Load() < 50 {
		t.Fatalf("the load or the updates did not happen: %d connections, %d snapshots", ok.Load(), s.n.Load())
	}
}
