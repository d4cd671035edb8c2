package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"
)

// slack absorbs scheduling delays of a loaded test machine (two cores
// shared by several jobs) on top of the bounds; the check counts are exact
// and the measured times are logged.
const slack = time.Second

// An endpoint whose /healthz/ready turns 503 is failed within
// period × failureThreshold + one period, and readmitted within
// period × successThreshold + one period once it answers 200 again.
func TestHTTPReadinessEndToEnd(t *testing.T) {
	for _, retriable := range []bool{false, true} {
		name := "503 fails at once"
		if retriable {
			name = "503 retriable counts to failureThreshold"
		}
		t.Run(name, func(t *testing.T) {
			checkGoroutines(t)
			srv := newStatusServer(t, "127.0.0.1")
			sink := newRecordSink()
			log, logs := testLogger()
			reg := prometheus.NewRegistry()
			c := New(Options{Sink: sink, Logger: log, Registerer: reg})
			const period, failures, successes = 100 * time.Millisecond, 3, 2
			cfg := CheckConfig{Host: "*", Interval: period, Timeout: 80 * time.Millisecond,
				FailureThreshold: failures, SuccessThreshold: successes,
				HTTPGet: &HTTPGetAction{Path: IstioReadinessPath, Port: srv.addr.Port()}}
			if retriable {
				cfg.HTTPGet.RetriableStatuses = []StatusRange{{503, 504}}
			}
			ep := netip.AddrPortFrom(srv.addr.Addr(), 9080) // the traffic port; the check goes to srv
			c.Update([]Target{{Endpoint: ep, Cluster: "outbound_.9080_._.reviews", Config: cfg}})
			if sink.state(ep) {
				t.Fatal("routable before the first check")
			}
			runChecker(t, c)
			sink.waitState(t, ep, true, 2*time.Second)

			// The schedule is what is under test, so count checks as well as
			// time: a starved machine stretches wall time, not the count.
			srv.status.Store(http.StatusServiceUnavailable)
			t0, h0 := time.Now(), srv.hits.Load()
			failedAt := sink.waitState(t, ep, false, 5*time.Second)
			checks := srv.hits.Load() - h0
			bound, maxChecks := period*failures+period, int64(failures+1)
			if !retriable {
				maxChecks = 2 // a 503 fails at once; one check may have been in flight
			}
			t.Logf("unhealthy after %v and %d checks (bound %v)", failedAt.Sub(t0), checks, bound)
			if d := failedAt.Sub(t0); d > bound+slack || checks > maxChecks {
				t.Errorf("unhealthy after %v and %d checks, want within %v and %d checks", d, checks, bound, maxChecks)
			}

			srv.status.Store(http.StatusOK)
			t0, h0 = time.Now(), srv.hits.Load()
			healthyAt := sink.waitState(t, ep, true, 5*time.Second)
			checks = srv.hits.Load() - h0
			bound, maxChecks = period*successes+period, successes+1
			t.Logf("healthy after %v and %d checks (bound %v)", healthyAt.Sub(t0), checks, bound)
			if d := healthyAt.Sub(t0); d > bound+slack || checks > maxChecks {
				t.Errorf("healthy after %v and %d checks, want within %v and %d checks", d, checks, bound, maxChecks)
			}
			if !strings.Contains(logs.String(), `reason="status 503"`) || !strings.Contains(logs.String(), "to=unhealthy") {
				t.Errorf("no transition line with the reason:\n%s", logs)
			}
			m := gather(t, reg)
			cl := "outbound_.9080_._.reviews"
			if m["envoy_cluster_health_check_attempt"][cl] < 4 || m["envoy_cluster_health_check_failure"][cl] < 1 ||
				m["envoy_cluster_health_check_healthy"][cl] != 1 || m["envoy_cluster_health_check_network_failure"][cl] != 0 {
				t.Errorf("metrics %v", m)
			}
		})
	}
}

// gather returns metric name → cluster_name → value.
func gather(tb testing.TB, reg *prometheus.Registry) map[string]map[string]float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, mf := range mfs {
		out[mf.GetName()] = map[string]float64{}
		for _, m := range mf.GetMetric() {
			var cl string
			for _, l := range m.GetLabel() {
				if l.GetName() == "cluster_name" {
					cl = l.GetValue()
				}
			}
			out[mf.GetName()][cl] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

func TestDegradedHeaderEndToEnd(t *testing.T) {
	srv := newStatusServer(t, "127.0.0.1")
	srv.header.Set("x-envoy-degraded", "1")
	sink := newRecordSink()
	c := New(Options{Sink: sink})
	cfg := CheckConfig{Host: "*", Interval: 50 * time.Millisecond, HTTPGet: &HTTPGetAction{Path: IstioReadinessPath, Port: srv.addr.Port()}}
	ep := netip.AddrPortFrom(srv.addr.Addr(), 9080)
	c.Update([]Target{{Endpoint: ep, Cluster: "c", Config: cfg}})
	runChecker(t, c)
	sink.waitState(t, ep, true, 2*time.Second)
	sink.mu.Lock()
	deg := sink.degraded[ep]
	sink.mu.Unlock()
	if !deg {
		t.Fatal("x-envoy-degraded did not mark the endpoint degraded")
	}
}

// A gRPC endpoint reporting NOT_SERVING is removed; SERVING brings it back.
func TestGRPCEndToEnd(t *testing.T) {
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := grpchealth.NewServer()
	hs.SetServingStatus("api", healthpb.HealthCheckResponse_SERVING)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(ln)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-served
	})
	addr := netip.MustParseAddrPort(ln.Addr().String())

	sink := newRecordSink()
	log, logs := testLogger()
	c := New(Options{Sink: sink, Logger: log})
	cfg := CheckConfig{Host: "*", Interval: 50 * time.Millisecond, Timeout: 200 * time.Millisecond, GRPC: &GRPCAction{Service: "api"}}
	c.Update([]Target{{Endpoint: addr, Cluster: "grpc", Config: cfg}})
	runChecker(t, c)
	sink.waitState(t, addr, true, 3*time.Second)
	hs.SetServingStatus("api", healthpb.HealthCheckResponse_NOT_SERVING)
	sink.waitState(t, addr, false, 3*time.Second)
	if !strings.Contains(logs.String(), "grpc status NOT_SERVING") {
		t.Errorf("no NOT_SERVING reason:\n%s", logs)
	}
	hs.SetServingStatus("api", healthpb.HealthCheckResponse_SERVING)
	sink.waitState(t, addr, true, 3*time.Second)
}

// runCheck runs one check of cfg against addr on a fresh prober.
func runCheck(tb testing.TB, cfg CheckConfig, addr netip.AddrPort, tlsConf *tls.Config) result {
	tb.Helper()
	cfg, err := cfg.WithDefaults()
	if err != nil {
		tb.Fatal(err)
	}
	tr := newTransports(tlsConf)
	defer tr.close()
	p := newProber(&cfg, cfg.checkAddr(addr), tr)
	defer p.close()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	return p.check(ctx)
}

// lineServer answers each connection with reply (after reading a chunk
// when wantRead), then holds it open until the test ends.
func lineServer(tb testing.TB, reply []byte, hold bool) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				buf := make([]byte, 64)
				_, _ = conn.Read(buf)
				for i := range reply { // byte by byte: the matcher must reassemble
					_, _ = conn.Write(reply[i : i+1])
				}
				if hold {
					<-done
				}
			}()
		}
	}()
	tb.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

func TestTCPCheck(t *testing.T) {
	ping := "50494e47" // PING
	tests := []struct {
		name   string
		addr   func(t *testing.T) netip.AddrPort
		tcp    TCPSocketAction
		want   outcome
		reason string
	}{
		{"connect", func(t *testing.T) netip.AddrPort { return lineServer(t, nil, false) }, TCPSocketAction{}, passed, "connected"},
		{"refused", func(t *testing.T) netip.AddrPort { return testnet.RefusingAddr(t) }, TCPSocketAction{}, failNetwork, "connection refused"},
		{"send and receive in order", func(t *testing.T) netip.AddrPort { return lineServer(t, []byte("+PONG v2 OK\r\n"), true) },
			TCPSocketAction{Send: ping, Receive: []string{"504f4e47", "4f4b"}}, passed, "expected bytes received"},
		{"wrong answer then close", func(t *testing.T) netip.AddrPort { return lineServer(t, []byte("-ERR\r\n"), false) },
			TCPSocketAction{Send: ping, Receive: []string{"504f4e47"}}, failNetwork, "closed before the expected bytes"},
		{"blocks out of order", func(t *testing.T) netip.AddrPort { return lineServer(t, []byte("OK PONG"), true) },
			TCPSocketAction{Send: ping, Receive: []string{"504f4e47", "4f4b"}}, failTimeout, "timeout waiting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.addr(t)
			tcp := tt.tcp
			r := runCheck(t, CheckConfig{Timeout: 200 * time.Millisecond, TCPSocket: &tcp}, addr, nil)
			if r.outcome != tt.want || !strings.Contains(r.reason, tt.reason) {
				t.Fatalf("got %v %q, want %v %q", r.outcome, r.reason, tt.want, tt.reason)
			}
		})
	}
}

func TestHTTPCheck(t *testing.T) {
	mux := http.NewServeMux()
	var gotHost, gotUA, gotHeader string
	var mu sync.Mutex
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Probe") != "" {
			mu.Lock()
			gotHost, gotUA, gotHeader = r.Host, r.UserAgent(), r.Header.Get("X-Probe")
			mu.Unlock()
		}
		_, _ = io.Copy(w, bytes.NewReader(make([]byte, 10000)))
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/created", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusCreated) })
	mux.HandleFunc("/immediate", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("x-envoy-immediate-health-check-fail", "true")
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	})
	ca := testpki.NewCA(t)
	cert, err := ca.Issue("spiffe://cluster.local/ns/default/sa/hc", "hc.test")
	if err != nil {
		t.Fatal(err)
	}
	plain := serveHTTP(t, mux, nil)
	secure := serveHTTP(t, mux, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	verify := &tls.Config{RootCAs: ca.Pool, ServerName: "hc.test", MinVersion: tls.VersionTLS12}
	wrongCA := &tls.Config{RootCAs: testpki.NewCA(t).Pool, ServerName: "hc.test", MinVersion: tls.VersionTLS12}

	tests := []struct {
		name    string
		addr    netip.AddrPort
		get     HTTPGetAction
		tls     *tls.Config
		want    outcome
		retry   bool
		reason  string
		timeout time.Duration
	}{
		{name: "200", addr: plain, get: HTTPGetAction{Path: "/ok", Host: "reviews.default", HTTPHeaders: []HTTPHeader{{Name: "X-Probe", Value: "gw"}}}, want: passed, reason: "status 200"},
		{name: "201 not expected by default", addr: plain, get: HTTPGetAction{Path: "/created"}, want: failActive, reason: "status 201"},
		{name: "201 in expectedStatuses", addr: plain, get: HTTPGetAction{Path: "/created", ExpectedStatuses: []StatusRange{{200, 300}}}, want: passed},
		{name: "404 retriable", addr: plain, get: HTTPGetAction{Path: "/nope", RetriableStatuses: []StatusRange{{404, 405}}}, want: failActive, retry: true, reason: "status 404"},
		{name: "redirect not followed", addr: plain, get: HTTPGetAction{Path: "/redirect"}, want: failActive, reason: "status 302"},
		{name: "immediate fail header", addr: plain, get: HTTPGetAction{Path: "/immediate"}, want: failActive, reason: "x-envoy-immediate-health-check-fail"},
		{name: "timeout", addr: plain, get: HTTPGetAction{Path: "/slow"}, want: failTimeout, reason: "timeout", timeout: 100 * time.Millisecond},
		{name: "refused", addr: testnet.RefusingAddr(t), get: HTTPGetAction{Path: "/ok"}, want: failNetwork, reason: "connection refused"},
		{name: "https without verification", addr: secure, get: HTTPGetAction{Path: "/ok", Scheme: "HTTPS"}, want: passed},
		{name: "https verified", addr: secure, get: HTTPGetAction{Path: "/ok", Scheme: "HTTPS"}, tls: verify, want: passed},
		{name: "https wrong CA", addr: secure, get: HTTPGetAction{Path: "/ok", Scheme: "HTTPS"}, tls: wrongCA, want: failNetwork, reason: "certificate"},
		{name: "http to https port", addr: secure, get: HTTPGetAction{Path: "/ok"}, want: failActive, reason: "status 400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			get := tt.get
			get.Port = tt.addr.Port()
			cfg := CheckConfig{HTTPGet: &get, Timeout: tt.timeout}
			if cfg.Timeout == 0 {
				cfg.Timeout = 2 * time.Second
			}
			r := runCheck(t, cfg, netip.AddrPortFrom(tt.addr.Addr(), 9080), tt.tls)
			if r.outcome != tt.want || r.retriable != tt.retry || !strings.Contains(r.reason, tt.reason) {
				t.Fatalf("got %v retriable=%v %q, want %v retriable=%v %q", r.outcome, r.retriable, r.reason, tt.want, tt.retry, tt.reason)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if gotHost != "reviews.default" || gotUA != userAgent || gotHeader != "gw" {
		t.Fatalf("request had Host %q, User-Agent %q, X-Probe %q", gotHost, gotUA, gotHeader)
	}
}

func serveHTTP(tb testing.TB, h http.Handler, tlsConf *tls.Config) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, TLSConfig: tlsConf,
		ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if tlsConf != nil {
			_ = srv.ServeTLS(ln, "", "")
		} else {
			_ = srv.Serve(ln)
		}
	}()
	tb.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}
