package health_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/balancer"
	"github.com/eastwest-gw/eastwest/health"
	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
	"github.com/eastwest-gw/eastwest/proxy"
)

// sidecar is an endpoint that keeps accepting traffic (it answers with its
// name) while its readiness endpoint says whether the app behind it is
// alive: the case passive outlier detection cannot see.
type sidecar struct {
	name  string
	ready atomic.Bool
}

func (s *sidecar) start(t *testing.T, ip string, trafficPort, readyPort int) {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, trafficPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.WriteString(c, s.name+"\n")
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, c) // unread bytes would make close a reset
				c.Close()
			}()
		}
	}()
	s.ready.Store(true)
	hs := &http.Server{Addr: fmt.Sprintf("%s:%d", ip, readyPort), ReadHeaderTimeout: time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if !s.ready.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})}
	rl, err := net.Listen("tcp", hs.Addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(rl) }()
	t.Cleanup(func() { hs.Close() })
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// An endpoint whose /healthz/ready turns 503 stops getting new connections
// within period x failureThreshold plus a period, and gets them again within
// period x successThreshold plus a period after it turns 200; no client
// connection fails meanwhile.
func TestReadinessFlipThroughGateway(t *testing.T) {
	const (
		period  = 200 * time.Millisecond
		failThr = 2
		succThr = 2
		slack   = time.Second // a loaded CI machine; the bound itself is logged
	)
	trafficPort, readyPort := freePort(t), freePort(t)
	a, b := &sidecar{name: "a"}, &sidecar{name: "b"}
	a.start(t, "127.0.0.1", trafficPort, readyPort)
	b.start(t, "127.0.0.2", trafficPort, readyPort) // another loopback address: same ports, another host
	yaml := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: tcp, protocol: TCP}]
  endpoints:
  - {address: 127.0.0.1, ports: {tcp: %[1]d}, serviceAccount: reviews}
  - {address: 127.0.0.2, ports: {tcp: %[1]d}, serviceAccount: reviews}
`, trafficPort)
	res, err := istioyaml.LoadBytes(context.Background(), "mesh.yaml", []byte(yaml), istioyaml.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store := mesh.NewStore(res.Snapshot)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bal := balancer.New(balancer.Options{Logger: slog.New(slog.DiscardHandler)})
	store.Subscribe(bal.Update)
	cfg, err := health.CheckConfig{Host: "reviews.default.svc.cluster.local",
		HTTPGet:  &health.HTTPGetAction{Path: "/healthz/ready", Port: uint16(readyPort)},
		Interval: period, Timeout: period, FailureThreshold: failThr, SuccessThreshold: succThr,
	}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	hc := health.New(health.Options{Sink: bal, Logger: slog.New(slog.DiscardHandler)})
	store.Subscribe(func(s *mesh.Snapshot) { hc.Update(health.TargetsFor(s, []health.CheckConfig{cfg})) })
	go hc.Run(ctx)
	srv, err := proxy.New(proxy.Config{Address: "127.0.0.1:0", Listeners: 1}, proxy.Deps{Store: store, Picker: bal, Forwarder: proxy.SpliceForwarder{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	defer func() { _ = srv.Shutdown(context.Background(), 0) }()
	hello := testnet.ClientHello(t, testpki.NewCA(t), "outbound_.9080_._.reviews.default.svc.cluster.local")

	// count sends n connections and tallies who answered; any failure fails.
	count := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			c, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(hello); err != nil {
				t.Fatal(err)
			}
			out, err := io.ReadAll(c)
			c.Close()
			if err != nil || len(out) == 0 {
				t.Fatalf("client connection failed: %q %v", out, err)
			}
			got[strings.TrimSpace(string(out))]++
		}
		return got
	}
	waitUntil := func(what string, bound time.Duration, cond func(map[string]int) bool) {
		t.Helper()
		start := time.Now()
		for {
			if cond(count(10)) {
				t.Logf("%s after %v (bound %v)", what, time.Since(start).Round(time.Millisecond), bound)
				if d := time.Since(start); d > bound+slack {
					t.Fatalf("%s took %v, want within %v", what, d, bound)
				}
				return
			}
			if time.Since(start) > bound+5*slack {
				t.Fatalf("%s: never happened", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitUntil("both endpoints in use", 3*period, func(m map[string]int) bool { return m["a"] > 0 && m["b"] > 0 })

	a.ready.Store(false)
	waitUntil("a out of rotation", period*failThr+period, func(m map[string]int) bool { return m["a"] == 0 })
	if m := count(30); m["a"] != 0 {
		t.Fatalf("unready endpoint still got connections: %v", m)
	}
	a.ready.Store(true)
	waitUntil("a back in rotation", period*succThr+period, func(m map[string]int) bool { return m["a"] > 0 })
}
