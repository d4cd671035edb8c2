package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// traceOne records what handle records for a forwarded connection: with
// refused set, the first connect attempt fails with it and a second one
// succeeds.
func traceOne(s *Server, refused error) {
	rec := &logRecord{start: time.Now(), flags: "-", details: "-",
		sni: "outbound_.9080_.v1_.reviews.default.svc.cluster2.global", cluster: "outbound_.9080_.v1_.reviews.default.svc.cluster.local"}
	rec.trace = s.startTrace()
	rec.trace.hello(1536, rec.start.Add(50*time.Microsecond))
	if refused != nil {
		rec.attempts, rec.upstream = 1, "10.0.0.1:9080"
		rec.trace.pick(rec.upstream, rec.start.Add(60*time.Microsecond))
		rec.trace.connect(150*time.Microsecond, refused)
	}
	rec.attempts++
	rec.upstream = "10.0.0.2:9080"
	rec.trace.pick(rec.upstream, rec.start.Add(300*time.Microsecond))
	rec.trace.connect(120*time.Microsecond, nil)
	rec.sent, rec.recv = 4096, 1600
	rec.trace.end(rec)
}

func TestConnectionSpan(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	s := &Server{cfg: Config{Name: "bench"}, tracer: newTracer(tp, "bench")}
	traceOne(s, errors.New("connection refused"))

	spans := sr.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	sp := spans[0]
	if sp.Name() != "eastwest.connection" || sp.SpanKind() != trace.SpanKindServer || sp.Status().Code == codes.Error {
		t.Errorf("span %q kind %v status %v", sp.Name(), sp.SpanKind(), sp.Status())
	}
	scope := sp.InstrumentationScope()
	if v, _ := scope.Attributes.Value("eastwest.listener"); v.AsString() != "bench" {
		t.Errorf("scope attribute eastwest.listener = %q", v.String())
	}
	attrs := map[attribute.Key]string{}
	for _, kv := range sp.Attributes() {
		attrs[kv.Key] = kv.Value.String()
	}
	if len(attrs) > 8 {
		t.Errorf("%d span attributes: over 8 the SDK allocates a map per span to deduplicate them", len(attrs))
	}
	for k, want := range map[attribute.Key]string{
		"tls.server_name":           "outbound_.9080_.v1_.reviews.default.svc.cluster2.global",
		"eastwest.cluster":          "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		"eastwest.endpoint":         "10.0.0.2:9080",
		"eastwest.connect_attempts": "2",
		"eastwest.bytes_sent":       "4096",
		"eastwest.bytes_received":   "1600",
		"eastwest.response_flags":   "-",
	} {
		if got := attrs[k]; got != want {
			t.Errorf("attribute %s = %q, want %q", k, got, want)
		}
	}
	if _, ok := attrs["eastwest.duration_ms"]; !ok {
		t.Error("no eastwest.duration_ms")
	}
	if d, ok := attrs["eastwest.termination_details"]; ok {
		t.Errorf("a normal end carries termination details %q", d)
	}

	// Events in order, at the times the connection recorded, each with
	// only what the span does not already say.
	start := sp.StartTime()
	want := []struct {
		name  string
		at    time.Duration
		attrs string
	}{
		{"client_hello", 50 * time.Microsecond, "tls.client_hello.bytes=1536"},
		{"pick", 60 * time.Microsecond, "eastwest.endpoint=10.0.0.1:9080"},
		{"connect_attempt", 210 * time.Microsecond, "eastwest.connect_us=150 error=connection refused"},
		{"pick", 300 * time.Microsecond, "eastwest.endpoint=10.0.0.2:9080"},
		{"connect_attempt", 420 * time.Microsecond, "eastwest.connect_us=120"},
	}
	events := sp.Events()
	if len(events) != len(want) {
		t.Fatalf("%d events, want %d: %v", len(events), len(want), events)
	}
	for i, e := range events {
		var kvs []string
		for _, kv := range e.Attributes {
			kvs = append(kvs, string(kv.Key)+"="+kv.Value.String())
		}
		got := strings.Join(kvs, " ")
		if e.Name != want[i].name || e.Time.Sub(start) != want[i].at || got != want[i].attrs {
			t.Errorf("event %d: %s at +%v {%s}, want %s at +%v {%s}", i, e.Name, e.Time.Sub(start), got, want[i].name, want[i].at, want[i].attrs)
		}
	}
}

func TestRefusedConnectionSpan(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	s := &Server{cfg: Config{Name: "bench"}, tracer: newTracer(tp, "bench")}
	rec := &logRecord{start: time.Now(), flags: "NR", details: "unknown_host", sni: "nope.example"}
	rec.trace = s.startTrace()
	rec.trace.end(rec)

	spans := sr.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	sp := spans[0]
	if sp.Status().Code != codes.Error || sp.Status().Description != "unknown_host" || len(sp.Events()) != 0 {
		t.Errorf("status %v, events %v", sp.Status(), sp.Events())
	}
	var details string
	for _, kv := range sp.Attributes() {
		if kv.Key == "eastwest.termination_details" {
			details = kv.Value.AsString()
		}
	}
	if details != "unknown_host" {
		t.Errorf("termination details %q", details)
	}
}

// A sampler that says no leaves nothing to export and nothing recorded.
func TestUnsampledConnectionSpan(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr), sdktrace.WithSampler(sdktrace.NeverSample()))
	s := &Server{cfg: Config{Name: "bench"}, tracer: newTracer(tp, "bench")}
	traceOne(s, nil)
	if n := len(sr.Ended()); n != 0 {
		t.Fatalf("%d spans recorded", n)
	}
}

// Tracing off is a nil *connTrace: every step is a no-op.
func TestTracingOff(t *testing.T) {
	s := &Server{cfg: Config{Name: "off"}}
	if n := testing.AllocsPerRun(100, func() { traceOne(s, nil) }); n > 1 {
		// One: the logRecord traceOne makes.
		t.Errorf("%.0f allocations per connection with tracing off", n)
	}
}

// BenchmarkConnTrace is tracing's own work for one connection that
// connected at the first attempt (the span, its ClientHello, pick and
// connect events, its end), with nothing else around it:
//
//   - otlp: the SDK's batch span processor exporting over OTLP/HTTP to a
//     loopback receiver that discards each body, as cmd/eastwest does;
//   - sdk: the same with an exporter that drops each batch, so the span
//     and the processor alone;
//   - unsampled: a sampler that keeps nothing (OTEL_TRACES_SAMPLER with a
//     ratio keeps most connections this cheap).
//
// Export blocks rather than drops when the queue is full, so every span is
// in the figure; cpu-ns/op counts the processor's goroutine and the GC too.
func BenchmarkConnTrace(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts func(b *testing.B) []sdktrace.TracerProviderOption
	}{
		{"otlp", func(b *testing.B) []sdktrace.TracerProviderOption {
			recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
			}))
			b.Cleanup(recv.Close)
			exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL+"/v1/traces"))
			if err != nil {
				b.Fatal(err)
			}
			return []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp, sdktrace.WithBlocking())}
		}},
		{"sdk", func(*testing.B) []sdktrace.TracerProviderOption {
			return []sdktrace.TracerProviderOption{sdktrace.WithBatcher(tracetest.NewNoopExporter(), sdktrace.WithBlocking())}
		}},
		{"unsampled", func(*testing.B) []sdktrace.TracerProviderOption {
			return []sdktrace.TracerProviderOption{
				sdktrace.WithBatcher(tracetest.NewNoopExporter(), sdktrace.WithBlocking()),
				sdktrace.WithSampler(sdktrace.NeverSample()),
			}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(tc.opts(b)...)
			s := &Server{cfg: Config{Name: "bench"}, tracer: newTracer(tp, "bench")}
			cpu0 := processCPU()
			b.ReportAllocs()
			for b.Loop() {
				traceOne(s, nil)
			}
			if err := tp.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
