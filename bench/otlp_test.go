package bench_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/eastwest-gw/eastwest/bench"
)

// The receiver counts exactly the spans a real OTLP/HTTP exporter sent,
// across scopes and batches.
func TestOTLPReceiverCountsSpans(t *testing.T) {
	r, err := bench.NewOTLPReceiver("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL("http://"+r.Addr()+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithMaxExportBatchSize(7)),
		sdktrace.WithResource(resource.Empty()))
	const perScope = 20
	for _, scope := range []string{"a", "b"} {
		tr := tp.Tracer(scope)
		for range perScope {
			_, span := tr.Start(context.Background(), "s", trace.WithSpanKind(trace.SpanKindServer))
			span.AddEvent("e")
			span.End()
		}
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	if st.Spans != 2*perScope || st.Bad != 0 || st.Requests < 2*perScope/7 || st.Bytes == 0 {
		t.Fatalf("receiver stats %+v, want %d spans and nothing bad", st, 2*perScope)
	}
}
