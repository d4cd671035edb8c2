package proxy_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/proxy"
)

// A known sequence of good, unknown and failing connections gives exactly
// the counters and labels a scrape should show.
func TestMetricsAfterKnownSequence(t *testing.T) {
	const (
		good    = 5
		unknown = 3
		failing = 2
	)
	echo := testnet.TCPEcho(t, "127.0.0.1")
	svc := &mesh.Service{Host: "echo.default.svc.cluster.local", Namespace: "default", Exported: true, Ports: []mesh.Port{{Number: 9080, Protocol: "TCP"}}}
	deadSvc := &mesh.Service{Host: "dead.default.svc.cluster.local", Namespace: "default", Exported: true, Ports: []mesh.Port{{Number: 9080, Protocol: "TCP"}}}
	ep := mesh.Endpoint{Addr: echo, Weight: 1, Workload: "echo-v1", Namespace: "default", Labels: map[string]string{"app": "echo", "version": "v1"}}
	snap, err := mesh.Build(mesh.Spec{Services: []*mesh.Service{svc, deadSvc}, Clusters: []*mesh.Cluster{
		{Key: mesh.Key{Host: svc.Host, Port: 9080}, Service: svc, Endpoints: []mesh.Endpoint{ep}},
		{Key: mesh.Key{Host: deadSvc.Host, Port: 9080}, Service: deadSvc, Endpoints: []mesh.Endpoint{{Addr: testnet.RefusingAddr(t), Weight: 1}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	pm, err := proxy.NewMetrics(reg, "cluster2")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Config{Address: "127.0.0.1:0", Listeners: 1, MaxConnectAttempts: 1}, proxy.Deps{
		Store: mesh.NewStore(snap), Picker: &rrPicker{}, Forwarder: testForwarder(t), Metrics: pm,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background(), 0) })

	ca := testpki.NewCA(t)
	istio := []string{"istio"}
	hello := testnet.ClientHello(t, ca, "outbound_.9080_._."+svc.Host, istio...)
	var wantBytes int64
	for i := range good {
		payload := strings.Repeat("x", 1000*(i+1))
		c, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(append(append([]byte(nil), hello...), payload...)); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		n, err := io.Copy(io.Discard, c)
		c.Close()
		if err != nil || n != int64(len(hello)+len(payload)) {
			t.Fatalf("echo returned %d bytes (%v), want %d", n, err, len(hello)+len(payload))
		}
		wantBytes += n
	}
	for range unknown {
		send(t, srv.Addr(), testnet.ClientHello(t, ca, "outbound_.9080_._.nope.default.svc.cluster.local", istio...))
	}
	for range failing {
		send(t, srv.Addr(), testnet.ClientHello(t, ca, "outbound_.9080_._."+deadSvc.Host, istio...))
	}
	waitFor(t, func() bool { return srv.Active() == 0 }, "every connection closed")

	// Scrape the way Prometheus does and parse the text exposition.
	families := scrape(t, reg)
	echoCluster := "outbound_.9080_._." + svc.Host
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"istio_tcp_connections_opened_total", map[string]string{"reporter": "source", "destination_service": svc.Host, "destination_service_name": "echo", "destination_service_namespace": "default", "destination_workload": "echo-v1", "destination_app": "echo", "destination_version": "v1", "destination_cluster": "cluster2", "source_workload": "unknown", "request_protocol": "tcp", "response_flags": "-", "connection_security_policy": "unknown"}, good},
		{"istio_tcp_connections_closed_total", map[string]string{"destination_service": svc.Host, "response_flags": "-"}, good},
		{"istio_tcp_received_bytes_total", map[string]string{"destination_service": svc.Host}, float64(wantBytes)},
		{"istio_tcp_sent_bytes_total", map[string]string{"destination_service": svc.Host}, float64(wantBytes)},
		{"envoy_cluster_upstream_cx_total", map[string]string{"cluster_name": echoCluster}, good},
		{"envoy_cluster_upstream_cx_rx_bytes_total", map[string]string{"cluster_name": echoCluster}, float64(wantBytes)},
		{"envoy_cluster_upstream_cx_tx_bytes_total", map[string]string{"cluster_name": echoCluster}, float64(wantBytes)},
		{"envoy_cluster_upstream_cx_active", map[string]string{"cluster_name": echoCluster}, 0},
		{"envoy_cluster_upstream_cx_connect_fail", map[string]string{"cluster_name": "outbound_.9080_._." + deadSvc.Host}, failing},
		{"envoy_listener_no_filter_chain_match", nil, unknown},
		{"envoy_listener_downstream_cx_total", nil, good + unknown + failing},
		{"envoy_listener_downstream_cx_active", nil, 0},
		{"eastwest_refused_connections_total", map[string]string{"reason": "unknown_host", "listener": "auto-passthrough"}, unknown},
	}
	for _, w := range want {
		got, n := sample(families, w.name, w.labels)
		if n != 1 {
			t.Errorf("%s%v: %d matching series, want 1", w.name, w.labels, n)
			continue
		}
		if got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
	if mf := families["istio_tcp_connections_opened_total"]; mf != nil && len(mf.GetMetric()[0].GetLabel()) != 23 {
		t.Errorf("istio_tcp_connections_opened_total has %d labels, want Istio's 23", len(mf.GetMetric()[0].GetLabel()))
	}
}

func send(t *testing.T, addr string, b []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := io.Copy(io.Discard, c); n != 0 {
		t.Fatalf("refused connection got %d bytes", n)
	}
}

func scrape(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&sb, mf); err != nil {
			t.Fatal(err)
		}
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(strings.NewReader(sb.String()))
	if err != nil {
		t.Fatalf("parsing the exposition: %v", err)
	}
	return families
}

// sample returns the value of the series of name that carry every label in
// want, and how many series matched.
func sample(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, int) {
	mf := families[name]
	if mf == nil {
		return 0, 0
	}
	var v float64
	n := 0
outer:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, val := range want {
			if have[k] != val {
				continue outer
			}
		}
		n++
		switch {
		case m.GetCounter() != nil:
			v = m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			v = m.GetGauge().GetValue()
		}
	}
	return v, n
}
