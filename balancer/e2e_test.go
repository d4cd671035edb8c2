package balancer_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/balancer"
	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
	"github.com/eastwest-gw/eastwest/proxy"
)

var _ proxy.Picker = (*balancer.Balancer)(nil)

// nameServer is an endpoint that answers every connection with its name and
// closes: the gateway never reads past the ClientHello, so the endpoints
// need no TLS and thousands of connections stay cheap.
type nameServer struct {
	name string
	addr netip.AddrPort
	mu   sync.Mutex
	ln   net.Listener
	wg   sync.WaitGroup
}

func startName(t *testing.T, name string, addr string) *nameServer {
	t.Helper()
	s := &nameServer{name: name}
	if err := s.start(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

func (s *nameServer) start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ln = ln
	s.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, s.name+"\n")
			_ = c.(*net.TCPConn).CloseWrite()
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	return nil
}

func (s *nameServer) stop() {
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// gateway runs the real proxy with the real balancer over YAML loaded by
// the real loader.
func gateway(t *testing.T, yaml string, locality string) (addr string, hello []byte) {
	t.Helper()
	res, err := istioyaml.LoadBytes(context.Background(), "mesh.yaml", []byte(yaml), istioyaml.Options{Network: "network2"})
	if err != nil {
		t.Fatal(err)
	}
	store := mesh.NewStore(res.Snapshot)
	ctx, cancel := context.WithCancel(context.Background())
	b := balancer.New(balancer.Options{Locality: mesh.ParseLocality(locality), Network: "network2", Logger: slog.New(slog.DiscardHandler)})
	store.Subscribe(b.Update)
	go b.Run(ctx)
	srv, err := proxy.New(proxy.Config{Address: "127.0.0.1:0", Listeners: 1, MaxConnectAttempts: 3, ConnectTimeout: time.Second},
		proxy.Deps{Store: store, Picker: b, Forwarder: proxy.SpliceForwarder{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() {
		cancel()
		_ = srv.Shutdown(context.Background(), 0)
	})
	// One real ClientHello with Istio's SNI and ALPN, replayed by every client.
	return srv.Addr(), testnet.ClientHello(t, testpki.NewCA(t), "outbound_.9080_._.reviews.default.svc.cluster.local")
}

// through sends the hello through the gateway and returns who answered, or
// an error if the client connection failed.
func through(addr string, hello []byte) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(hello); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	name := strings.TrimSpace(string(b))
	if name == "" {
		return "", fmt.Errorf("connection closed with no answer")
	}
	return name, nil
}

func endpointYAML(name string, s *nameServer, locality string) string {
	return fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %s, namespace: default}
spec: {address: 127.0.0.1, ports: {tcp: %d}, labels: {app: reviews}, locality: %s, network: network2, serviceAccount: reviews}
`, name, s.addr.Port(), locality)
}

const serviceYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: tcp, protocol: TCP}]
  workloadSelector: {labels: {app: reviews}}
`

func TestDistributeThroughGateway(t *testing.T) {
	local := startName(t, "local", "127.0.0.1:0")
	remote := startName(t, "remote", "127.0.0.1:0")
	other := startName(t, "other", "127.0.0.1:0")
	yaml := serviceYAML + endpointYAML("local", local, "region1/zone1/a") + endpointYAML("remote", remote, "region2/zone1/a") +
		endpointYAML("other", other, "region3/zone1/a") + `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        distribute:
        - from: region1/zone1/*
          to: {"region1/zone1/*": 99, "region2/zone1/*": 1}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}
`
	addr, hello := gateway(t, yaml, "region1/zone1/a")
	const n = 2000
	counts := map[string]int{}
	for range n {
		name, err := through(addr, hello)
		if err != nil {
			t.Fatalf("client connection failed: %v", err)
		}
		counts[name]++
	}
	localPct := 100 * float64(counts["local"]) / n
	remotePct := 100 * float64(counts["remote"]) / n
	if localPct < 97 || localPct > 100 || remotePct < 0 || remotePct > 3 || counts["other"] != 0 {
		t.Fatalf("split %v over %d connections: local %.1f%% remote %.1f%%, want 99/1 within 2 points and none to region3", counts, n, localPct, remotePct)
	}
	t.Logf("distribute 99/1 gave %v", counts)
}

func TestFailoverAndReadmissionThroughGateway(t *testing.T) {
	l1 := startName(t, "local-1", "127.0.0.1:0")
	l2 := startName(t, "local-2", "127.0.0.1:0")
	zone2 := startName(t, "zone2", "127.0.0.1:0")
	region2 := startName(t, "region2", "127.0.0.1:0")
	yaml := serviceYAML + endpointYAML("local-1", l1, "region1/zone1/a") + endpointYAML("local-2", l2, "region1/zone1/a") +
		endpointYAML("zone2", zone2, "region1/zone2/a") + endpointYAML("region2", region2, "region2/zone1/a") + `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting: {enabled: true}
    outlierDetection: {consecutive5xxErrors: 2, interval: 200ms, baseEjectionTime: 1s, maxEjectionPercent: 100}
`
	addr, hello := gateway(t, yaml, "region1/zone1/a")
	run := func(n int) (map[string]int, int) {
		counts := map[string]int{}
		var failed atomic.Int32
		for range n {
			name, err := through(addr, hello)
			if err != nil {
				failed.Add(1)
				continue
			}
			counts[name]++
		}
		return counts, int(failed.Load())
	}
	before, failed := run(40)
	if failed != 0 || before["local-1"]+before["local-2"] != 40 {
		t.Fatalf("before: %v, %d failed; want everything in the gateway's own locality", before, failed)
	}
	// Kill the whole local locality: connect retries on untried hosts cover
	// the detection window, so no client fails, and ejection moves traffic
	// to the next priority (same region, other zone).
	l1Addr, l2Addr := l1.addr.String(), l2.addr.String()
	l1.stop()
	l2.stop()
	during, failed := run(40)
	if failed != 0 {
		t.Fatalf("%d client connections failed during the switch (%v)", failed, during)
	}
	if during["zone2"] < 30 {
		t.Fatalf("after killing the local endpoints: %v, want most on zone2 (next priority)", during)
	}
	// They come back on the same addresses and are readmitted after their
	// ejection time.
	if err := l1.start(l1Addr); err != nil {
		t.Fatal(err)
	}
	if err := l2.start(l2Addr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		after, failed := run(20)
		if failed != 0 {
			t.Fatalf("%d failed after the endpoints came back", failed)
		}
		if after["local-1"]+after["local-2"] == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("traffic did not return to the local locality: %v", after)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
