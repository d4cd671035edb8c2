package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/proxy"
	"github.com/eastwest-gw/eastwest/sni"
)

const (
	reviews  = "reviews.default.svc.cluster.local"
	clientID = "spiffe://cluster1.local/ns/default/sa/productpage"
	serverID = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
)

// rrPicker is the simplest real Picker: round robin over the cluster's
// endpoints, skipping hosts already tried while another remains.
type rrPicker struct {
	n       atomic.Uint64
	reports sync.Map // mesh.Outcome -> *atomic.Int64
}

func (p *rrPicker) Pick(_ context.Context, c *mesh.Cluster, req mesh.PickRequest) (mesh.Endpoint, error) {
	eps := c.Endpoints
	if len(eps) == 0 {
		return mesh.Endpoint{}, fmt.Errorf("cluster %s: %w", c.Name, proxy.ErrNoHealthyUpstream)
	}
	start := int(p.n.Add(1))
	for i := range eps {
		ep := eps[(start+i)%len(eps)]
		if !slices.Contains(req.Tried, ep.Addr) {
			return ep, nil
		}
	}
	return eps[start%len(eps)], nil
}

func (p *rrPicker) Report(_ *mesh.Cluster, _ mesh.Endpoint, o mesh.Outcome) {
	v, _ := p.reports.LoadOrStore(o, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (p *rrPicker) count(o mesh.Outcome) int64 {
	v, ok := p.reports.Load(o)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// world is a mesh with the reviews service (v1 on two backends, v2 on one),
// a hidden service and a gateway in front of it.
type world struct {
	store  *mesh.Store
	ca     *testpki.CA
	v1a    *testnet.Backend
	v1b    *testnet.Backend
	v2     *testnet.Backend
	srv    *proxy.Server
	addr   string
	reg    *prometheus.Registry
	picker *rrPicker
	logs   *syncBuffer
}

func endpoint(b *testnet.Backend, version, locality string) mesh.Endpoint {
	return mesh.Endpoint{Addr: b.AddrPort(), Locality: mesh.ParseLocality(locality), Weight: 1,
		Labels: map[string]string{"app": "reviews", "version": version}, Workload: b.Name, Namespace: "default"}
}

func newWorld(t *testing.T, cfg proxy.Config, extra ...mesh.Endpoint) *world {
	t.Helper()
	w := &world{ca: testpki.NewCA(t), reg: prometheus.NewRegistry(), picker: &rrPicker{}, logs: &syncBuffer{}}
	w.v1a = testnet.NewTLSBackend(t, "reviews-v1-a", w.ca.ServerConfig(t, serverID), testnet.Hello)
	w.v1b = testnet.NewTLSBackend(t, "reviews-v1-b", w.ca.ServerConfig(t, serverID), testnet.Hello)
	w.v2 = testnet.NewTLSBackend(t, "reviews-v2-a", w.ca.ServerConfig(t, serverID), testnet.Hello)
	svc := &mesh.Service{Host: reviews, Namespace: "default", Exported: true,
		Ports: []mesh.Port{{Number: 9080, Name: "tcp", Protocol: "TCP"}}}
	hidden := &mesh.Service{Host: "hidden.default.svc.cluster.local", Namespace: "default", Exported: false,
		Ports: []mesh.Port{{Number: 9080, Protocol: "TCP"}}}
	two := &mesh.Service{Host: "two.default.svc.cluster.local", Namespace: "default", Exported: true,
		Ports: []mesh.Port{{Number: 80, Protocol: "HTTP"}, {Number: 443, Protocol: "TLS"}}}
	all := append([]mesh.Endpoint{endpoint(w.v1a, "v1", "r1/z1"), endpoint(w.v1b, "v1", "r1/z2"), endpoint(w.v2, "v2", "r2/z1")}, extra...)
	var v1 []mesh.Endpoint
	for _, e := range all {
		if e.Labels["version"] == "v1" {
			v1 = append(v1, e)
		}
	}
	snap, err := mesh.Build(mesh.Spec{
		Version:  "test",
		Services: []*mesh.Service{svc, hidden, two},
		Clusters: []*mesh.Cluster{
			{Key: mesh.Key{Host: reviews, Port: 9080}, Service: svc, Endpoints: all},
			{Key: mesh.Key{Host: reviews, Port: 9080, Subset: "v1"}, Service: svc, Endpoints: v1},
			{Key: mesh.Key{Host: hidden.Host, Port: 9080}, Service: hidden, Endpoints: all[:1]},
			{Key: mesh.Key{Host: two.Host, Port: 80}, Service: two, Endpoints: all[:1]},
			{Key: mesh.Key{Host: two.Host, Port: 443}, Service: two, Endpoints: all[:1]},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	if cfg.Listeners == 0 {
		cfg.Listeners = 2
	}
	if cfg.Rewrites == nil {
		cfg.Rewrites = []sni.Rule{sni.PresetClusterGlobal, sni.PresetGlobal}
	}
	metrics, err := proxy.NewMetrics(w.reg, "cluster2")
	if err != nil {
		t.Fatal(err)
	}
	w.store = mesh.NewStore(snap)
	w.srv, err = proxy.New(cfg, proxy.Deps{
		Store: w.store, Picker: w.picker, Forwarder: testForwarder(t),
		Logger:    slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AccessLog: proxy.NewAccessLog(w.logs, proxy.AccessLogJSON), Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	w.addr = w.srv.Addr()
	served := make(chan struct{})
	go func() { defer close(served); _ = w.srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = w.srv.Shutdown(ctx, time.Millisecond)
		<-served
	})
	return w
}

// dial makes an mTLS connection through the gateway with the given SNI and
// returns it after the handshake and the backend's name line.
func (w *world) dial(t *testing.T, sniName string) (*tls.Conn, string) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", w.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, w.ca.ClientConfig(t, clientID, sniName, serverID))
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.Handshake(); err != nil {
		c.Close()
		t.Fatalf("handshake through the gateway with SNI %q: %v", sniName, err)
	}
	line := make([]byte, 0, 32)
	b := make([]byte, 1)
	for {
		if _, err := io.ReadFull(c, b); err != nil {
			c.Close()
			t.Fatalf("reading the backend's name: %v", err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	return c, string(line)
}

// roundTrip sends n random bytes and reads the echo concurrently, then
// compares SHA-256 hashes of what went and what came back.
func roundTrip(t *testing.T, c *tls.Conn, n int) {
	t.Helper()
	src := rand.New(rand.NewPCG(uint64(n), 7))
	sentHash := sha256.New()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		left := n
		for left > 0 {
			k := min(left, len(buf))
			for i := range buf[:k] {
				buf[i] = byte(src.Uint32())
			}
			sentHash.Write(buf[:k])
			if _, err := c.Write(buf[:k]); err != nil {
				errc <- err
				return
			}
			left -= k
		}
		errc <- c.CloseWrite()
	}()
	gotHash := sha256.New()
	got, err := io.Copy(gotHash, c)
	if err != nil {
		t.Fatalf("reading echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if got != int64(n) {
		t.Fatalf("echoed %d bytes, sent %d", got, n)
	}
	if !bytes.Equal(sentHash.Sum(nil), gotHash.Sum(nil)) {
		t.Fatalf("echoed bytes differ from sent bytes (%d bytes)", n)
	}
}

func TestMutualTLSEndToEnd(t *testing.T) {
	w := newWorld(t, proxy.Config{})
	sizes := []int{1, 64 << 10, 64 << 20}
	if testing.Short() {
		sizes = sizes[:2]
	}
	for _, tc := range []struct {
		name     string
		sni      string
		backends []string
	}{
		{"istio name", "outbound_.9080_._." + reviews, []string{"reviews-v1-a", "reviews-v1-b", "reviews-v2-a"}},
		{"istio subset v1", "outbound_.9080_.v1_." + reviews, []string{"reviews-v1-a", "reviews-v1-b"}},
		{"istio legacy global", "outbound_.9080_.v1_.reviews.default.svc.cluster2.global", []string{"reviews-v1-a", "reviews-v1-b"}},
		{"plain legacy name", "reviews.default.svc.cluster2.global", []string{"reviews-v1-a", "reviews-v1-b", "reviews-v2-a"}},
		{"upper case", "OUTBOUND_.9080_.V1_.Reviews.Default.svc.cluster.local", []string{"reviews-v1-a", "reviews-v1-b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range sizes {
				c, backend := w.dial(t, tc.sni)
				if !slices.Contains(tc.backends, backend) {
					t.Errorf("SNI %s reached %s, want one of %v", tc.sni, backend, tc.backends)
				}
				// The client verified the server's SPIFFE identity in the
				// handshake (ClientConfig); the session is end to end.
				if st := c.ConnectionState(); st.NegotiatedProtocol != "istio-peer-exchange" {
					t.Errorf("ALPN %q, want istio-peer-exchange from the backend", st.NegotiatedProtocol)
				}
				roundTrip(t, c, n)
				c.Close()
			}
		})
	}
	for _, b := range []*testnet.Backend{w.v1a, w.v1b, w.v2} {
		for _, p := range b.Peers() {
			if p != clientID {
				t.Errorf("backend %s saw client %s, want %s", b.Name, p, clientID)
			}
		}
	}
	if len(w.v1a.Peers())+len(w.v1b.Peers()) == 0 {
		t.Error("no backend verified the client certificate")
	}
}

func TestSubsetReachesOnlyItsEndpoints(t *testing.T) {
	w := newWorld(t, proxy.Config{})
	seen := map[string]int{}
	for range 12 {
		c, name := w.dial(t, "outbound_.9080_.v1_."+reviews)
		seen[name]++
		c.Close()
	}
	if seen["reviews-v2-a"] != 0 || seen["reviews-v1-a"] == 0 || seen["reviews-v1-b"] == 0 {
		t.Fatalf("subset v1 reached %v; want only and both v1 endpoints", seen)
	}
}

// countingConn counts the bytes the client receives.
type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func TestRefusedConnections(t *testing.T) {
	w := newWorld(t, proxy.Config{HelloTimeout: 300 * time.Millisecond})
	istio := []string{"istio-peer-exchange", "istio"}
	good := testnet.ClientHello(t, w.ca, "outbound_.9080_._."+reviews, istio...)
	for _, tc := range []struct {
		name   string
		send   []byte
		reason string
		wait   bool // send, then wait for the gateway to give up
	}{
		{"unknown host", testnet.ClientHello(t, w.ca, "outbound_.9080_._.nope.default.svc.cluster.local", istio...), "unknown_host", false},
		{"unknown port", testnet.ClientHello(t, w.ca, "outbound_.9081_._."+reviews, istio...), "unknown_port", false},
		{"unknown subset", testnet.ClientHello(t, w.ca, "outbound_.9080_.v9_."+reviews, istio...), "unknown_subset", false},
		{"not exported", testnet.ClientHello(t, w.ca, "outbound_.9080_._.hidden.default.svc.cluster.local", istio...), "not_exported", false},
		{"no istio alpn", testnet.ClientHello(t, w.ca, "outbound_.9080_._."+reviews, "h2"), "alpn_mismatch", false},
		{"inbound name", testnet.ClientHello(t, w.ca, "inbound_.9080_._."+reviews, istio...), "bad_name", false},
		{"pipe name", testnet.ClientHello(t, w.ca, "outbound|9080||"+reviews, istio...), "bad_name", false},
		{"ambiguous plain name", testnet.ClientHello(t, w.ca, "two.default.svc.cluster.local", istio...), "ambiguous_port", false},
		{"not tls", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "not_tls", false},
		{"malformed", append([]byte{0x16, 3, 1, 0, 8, 1, 0, 0, 4}, 0xde, 0xad, 0xbe, 0xef), "parse_error", false},
		{"truncated", good[:len(good)/2], "parse_error", false},
		{"never completes", good[:len(good)/2], "hello_timeout", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metricValue(t, w.reg, "eastwest_refused_connections_total", "reason", tc.reason)
			raw, err := net.Dial("tcp", w.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			cc := &countingConn{Conn: raw}
			if _, err := cc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if !tc.wait {
				_ = raw.(*net.TCPConn).CloseWrite()
			}
			// Meanwhile the gateway keeps serving everyone else.
			ok, backend := w.dial(t, "outbound_.9080_._."+reviews)
			roundTrip(t, ok, 1024)
			ok.Close()
			if backend == "" {
				t.Fatal("good client got no backend")
			}
			_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := io.Copy(io.Discard, cc)
			if err != nil && !isReset(err) {
				t.Fatalf("refused connection ended with %v", err)
			}
			if n != 0 || cc.n.Load() != 0 {
				t.Fatalf("gateway sent %d bytes to a refused client, want 0", cc.n.Load())
			}
			waitFor(t, func() bool {
				return metricValue(t, w.reg, "eastwest_refused_connections_total", "reason", tc.reason) == before+1
			}, "refused{reason=%s} to grow by one", tc.reason)
			waitFor(t, func() bool { return strings.Contains(w.logs.String(), tc.reason) }, "a log line with %q", tc.reason)
		})
	}
	if v := metricValue(t, w.reg, "envoy_listener_no_filter_chain_match", "", ""); v < 5 {
		t.Errorf("no_filter_chain_match = %v, want >= 5", v)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "connection reset") }

func TestRefusingEndpointIsSkipped(t *testing.T) {
	dead := mesh.Endpoint{Addr: testnet.RefusingAddr(t), Weight: 1, Labels: map[string]string{"version": "v1"}}
	w := newWorld(t, proxy.Config{MaxConnectAttempts: 3}, dead)
	for range 8 {
		c, _ := w.dial(t, "outbound_.9080_.v1_."+reviews)
		roundTrip(t, c, 100)
		c.Close()
	}
	if w.picker.count(mesh.ConnectFailed) == 0 {
		t.Fatal("the refusing endpoint was never tried; the test proves nothing")
	}
	if v := metricValue(t, w.reg, "envoy_cluster_upstream_cx_connect_fail", "cluster_name", "outbound_.9080_.v1_."+reviews); v == 0 {
		t.Fatal("connect failures not counted")
	}
}

func TestNoEndpointAtAllIsUH(t *testing.T) {
	w := newWorld(t, proxy.Config{MaxConnectAttempts: 2})
	// Every endpoint of the cluster refuses: attempts exhausted, URX.
	w.v1a.Close()
	w.v1b.Close()
	w.v2.Close()
	raw, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, w.ca.ClientConfig(t, clientID, "outbound_.9080_._."+reviews, serverID))
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err == nil {
		t.Fatal("handshake succeeded with every endpoint down")
	}
	waitFor(t, func() bool {
		return metricValue(t, w.reg, "envoy_cluster_upstream_cx_connect_attempts_exceeded", "cluster_name", "outbound_.9080_._."+reviews) == 1
	}, "connect_attempts_exceeded == 1")
	waitFor(t, func() bool { return strings.Contains(w.logs.String(), `"response_flags":"UF,URX"`) }, "an access log line with UF,URX")
}

func TestOverflowIsRefused(t *testing.T) {
	w := newWorld(t, proxy.Config{MaxConnections: 2, HelloTimeout: 5 * time.Second})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte{0x16}) // wakes the deferred accept, never completes
		held = append(held, c)
		defer c.Close()
	}
	waitFor(t, func() bool { return w.srv.Active() == 2 }, "two connections held")
	c, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte{0x16})
	waitFor(t, func() bool {
		return metricValue(t, w.reg, "eastwest_refused_connections_total", "reason", "overflow") == 1
	}, "overflow counted")
	for _, h := range held {
		h.Close()
	}
	waitFor(t, func() bool { return w.srv.Active() == 0 }, "held connections released")
	ok, _ := w.dial(t, "outbound_.9080_._."+reviews)
	roundTrip(t, ok, 10)
	ok.Close()
}

func TestIdleTimeoutCloses(t *testing.T) {
	w := newWorld(t, proxy.Config{IdleTimeout: 300 * time.Millisecond})
	c, _ := w.dial(t, "outbound_.9080_._."+reviews)
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil {
		t.Fatal("read data on an idle connection")
	}
	waitFor(t, func() bool { return strings.Contains(w.logs.String(), "idle_timeout") }, "idle_timeout in the access log")
}

func TestDrainLetsConnectionsFinish(t *testing.T) {
	w := newWorld(t, proxy.Config{})
	const conns = 4
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	started := make(chan struct{}, conns)
	for i := range conns {
		cfg := w.ca.ClientConfig(t, clientID, "outbound_.9080_._."+reviews, serverID)
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw, err := net.Dial("tcp", w.addr)
			if err != nil {
				errs <- err
				return
			}
			defer raw.Close()
			c := tls.Client(raw, cfg)
			if err := c.Handshake(); err != nil {
				errs <- err
				return
			}
			started <- struct{}{}
			// Keep sending for a while after the drain began.
			msg := bytes.Repeat([]byte{byte(i)}, 4096)
			for range 20 {
				if _, err := c.Write(msg); err != nil {
					errs <- fmt.Errorf("write during drain: %w", err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := c.CloseWrite(); err != nil {
				errs <- err
				return
			}
			n, err := io.Copy(io.Discard, c)
			if err != nil {
				errs <- fmt.Errorf("read during drain: %w", err)
				return
			}
			// Every backend name is 12 bytes plus a newline.
			if want := int64(13 + 20*4096); n != want {
				errs <- fmt.Errorf("got %d bytes back, want %d", n, want)
			}
		}()
	}
	for range conns {
		select {
		case <-started:
		case err := <-errs:
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.srv.Shutdown(ctx, 5*time.Second); err != nil {
		t.Fatalf("drain: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := net.DialTimeout("tcp", w.addr, time.Second); err == nil {
		t.Error("listener still accepting after drain")
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, cond func() bool, what string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for "+what, args...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metricValue sums the counter or gauge samples of name whose label k is v
// (every sample when k is empty).
func metricValue(t *testing.T, g prometheus.Gatherer, name, k, v string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := k == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					match = true
				}
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				sum += g.GetValue()
			}
		}
	}
	return sum
}

func TestCloseConnectionsToOneEndpoint(t *testing.T) {
	w := newWorld(t, proxy.Config{})
	var toA, others []*tls.Conn
	for len(toA) < 2 || len(others) < 2 {
		c, name := w.dial(t, "outbound_.9080_._."+reviews)
		defer c.Close()
		if name == "reviews-v1-a" {
			toA = append(toA, c)
		} else {
			others = append(others, c)
		}
	}
	w.srv.CloseConnections(w.v1a.AddrPort(), 200*time.Millisecond)
	for _, c := range toA {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a connection to the unhealthy endpoint stayed open")
		}
	}
	for _, c := range others {
		roundTrip(t, c, 100) // untouched
	}
	waitFor(t, func() bool { return strings.Contains(w.logs.String(), "upstream_unhealthy") }, "upstream_unhealthy in the access log")
}

// DestinationRule connectionPool.tcp.maxConnections: the connection past the
// limit is closed at once with UO; the ones within it are served.
func TestClusterMaxConnectionsIsUO(t *testing.T) {
	w := newWorld(t, proxy.Config{})
	svc := &mesh.Service{Host: reviews, Namespace: "default", Exported: true, Ports: []mesh.Port{{Number: 9080, Protocol: "TCP"}}}
	limited, err := mesh.Build(mesh.Spec{Services: []*mesh.Service{svc}, Clusters: []*mesh.Cluster{{
		Key: mesh.Key{Host: reviews, Port: 9080, Subset: "v1"}, Service: svc,
		Endpoints: []mesh.Endpoint{endpoint(w.v1a, "v1", "r1/z1")},
		Policy:    mesh.TrafficPolicy{MaxConnections: 2},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	w.store.Swap(limited)
	var held []*tls.Conn
	for range 2 {
		c, _ := w.dial(t, "outbound_.9080_.v1_."+reviews)
		defer c.Close()
		held = append(held, c)
	}
	raw, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, w.ca.ClientConfig(t, clientID, "outbound_.9080_.v1_."+reviews, serverID))
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err == nil {
		t.Fatal("a third connection got through a limit of 2")
	}
	waitFor(t, func() bool {
		return metricValue(t, w.reg, "eastwest_refused_connections_total", "reason", "circuit_open") == 1
	}, "circuit_open counted")
	waitFor(t, func() bool { return strings.Contains(w.logs.String(), `"response_flags":"UO"`) }, "UO in the access log")
	held[0].Close()
	waitFor(t, func() bool { return w.srv.Active() == 1 }, "one held connection left")
	ok, _ := w.dial(t, "outbound_.9080_.v1_."+reviews) // room again
	ok.Close()
}
