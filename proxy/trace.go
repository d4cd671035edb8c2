package proxy

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// connTrace records one connection as a span with events for the
// ClientHello, the pick and each connect attempt. A nil *connTrace (tracing
// off) makes every method a no-op, so the connection path pays one nil check.
type connTrace struct {
	span trace.Span
}

func (s *Server) startTrace(start time.Time) *connTrace {
	if s.tracer == nil {
		return nil
	}
	_, span := s.tracer.Start(context.Background(), "eastwest.connection",
		trace.WithTimestamp(start), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("eastwest.listener", s.cfg.Name)))
	return &connTrace{span: span}
}

func (t *connTrace) hello(size int, sni, cluster string) {
	if t == nil {
		return
	}
	t.span.AddEvent("client_hello", trace.WithAttributes(
		attribute.Int("tls.client_hello.bytes", size),
		attribute.String("tls.server_name", sni),
		attribute.String("eastwest.cluster", cluster)))
}

func (t *connTrace) pick(endpoint string, attempt int) {
	if t == nil {
		return
	}
	t.span.AddEvent("pick", trace.WithAttributes(attribute.String("eastwest.endpoint", endpoint), attribute.Int("eastwest.attempt", attempt)))
}

func (t *connTrace) connect(endpoint string, took time.Duration, err error) {
	if t == nil {
		return
	}
	attrs := []attribute.KeyValue{attribute.String("eastwest.endpoint", endpoint), attribute.Int64("eastwest.connect_us", took.Microseconds())}
	if err != nil {
		attrs = append(attrs, attribute.String("error", err.Error()))
	}
	t.span.AddEvent("connect_attempt", trace.WithAttributes(attrs...))
}

func (t *connTrace) end(r *logRecord) {
	if t == nil {
		return
	}
	t.span.SetAttributes(
		attribute.String("tls.server_name", r.sni),
		attribute.String("eastwest.cluster", r.cluster),
		attribute.String("eastwest.endpoint", r.upstream),
		attribute.Int("eastwest.connect_attempts", r.attempts),
		attribute.Int64("eastwest.bytes_received", r.recv),
		attribute.Int64("eastwest.bytes_sent", r.sent),
		attribute.Int64("eastwest.duration_ms", time.Since(r.start).Milliseconds()),
		attribute.String("eastwest.response_flags", r.flags),
		attribute.String("eastwest.termination_details", r.details),
	)
	if r.flags != "-" {
		t.span.SetStatus(codes.Error, r.details)
	}
	t.span.End()
}
