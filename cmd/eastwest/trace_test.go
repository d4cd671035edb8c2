package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is a real OTLP/HTTP trace endpoint that decodes what the
// gateway exports.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil || req.URL.Path != "/v1/traces" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var msg coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range msg.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (r *otlpReceiver) find(name string) *tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

func TestTracesReachAnOTLPReceiver(t *testing.T) {
	recv := &otlpReceiver{}
	collector := httptest.NewServer(recv)
	defer collector.Close()

	ca := testpki.NewCA(t)
	b1 := testnet.NewTLSBackend(t, "reviews-v1", ca.ServerConfig(t, serverID), testnet.Hello)
	b2 := testnet.NewTLSBackend(t, "reviews-v2", ca.ServerConfig(t, serverID), testnet.Hello)
	dir := writeFiles(t, map[string]string{"mesh.yaml": meshYAML(b1, b2)})
	sf := filepath.Join(dir, "settings.yaml")
	if err := os.WriteFile(sf, []byte(fmt.Sprintf(settingsYAML, filepath.Join(dir, "mesh.yaml"), testForwarder())), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGatewayEnv(t, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL,
		"OTEL_BSP_SCHEDULE_DELAY=50", "OTEL_SERVICE_NAME=eastwest-test", "OTEL_TRACES_SAMPLER=always_on",
	}, "--config", sf)

	const sniName = "outbound_.9080_.v1_.reviews.default.svc.cluster2.global"
	raw, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, ca.ClientConfig(t, clientID, sniName, serverID))
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	c.Close()

	var span *tracepb.Span
	deadline := time.Now().Add(10 * time.Second)
	for span = recv.find("eastwest.connection"); span == nil; span = recv.find("eastwest.connection") {
		if time.Now().After(deadline) {
			t.Fatalf("no span reached the receiver\n%s", g.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	attrs := map[string]string{}
	for _, kv := range span.GetAttributes() {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			attrs[kv.GetKey()] = v.GetStringValue()
		default:
			attrs[kv.GetKey()] = fmt.Sprint(v.GetIntValue())
		}
	}
	for k, want := range map[string]string{
		"tls.server_name":           sniName,
		"eastwest.cluster":          "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		"eastwest.endpoint":         b1.AddrPort().String(),
		"eastwest.connect_attempts": "1",
		"eastwest.response_flags":   "-",
	} {
		if attrs[k] != want {
			t.Errorf("span attribute %s = %q, want %q (all: %v)", k, attrs[k], want, attrs)
		}
	}
	if attrs["eastwest.bytes_received"] == "0" || attrs["eastwest.bytes_sent"] == "0" {
		t.Errorf("span bytes: %v", attrs)
	}
	events := map[string]bool{}
	for _, e := range span.GetEvents() {
		events[e.GetName()] = true
	}
	for _, e := range []string{"client_hello", "pick", "connect_attempt"} {
		if !events[e] {
			t.Errorf("span lacks event %s (has %v)", e, events)
		}
	}
}
