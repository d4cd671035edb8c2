package proxy

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// connTrace collects what a connection's span will say: the ClientHello and
// each pick and connect attempt, as plain values. The span itself is made
// in one go when the connection ends (end), with the times recorded here,
// so that a connection open for hours holds these few words rather than a
// live SDK span, and so the SDK's work (locks, option and attribute
// slices, events) happens once per connection rather than at every step.
// A nil *connTrace (tracing off) makes every method a no-op, so the
// connection path pays one nil check.
type connTrace struct {
	srv       *Server
	helloAt   time.Time
	helloSize int
	attempts  []attemptTrace
	first     [1]attemptTrace // attempts' storage for the usual single attempt
}

type attemptTrace struct {
	endpoint string
	at       time.Time     // when it was picked and the dial began
	took     time.Duration // how long the dial took
	err      error
}

// newTracer is the listener's tracer. The listener's name is an attribute
// of the instrumentation scope, sent once per export batch, rather than of
// each span: eight span attributes or fewer let the SDK deduplicate them
// without allocating a map, and every attribute costs each span a few
// allocations again when it is exported.
func newTracer(tp trace.TracerProvider, listener string) trace.Tracer {
	return tp.Tracer("github.com/eastwest-gw/eastwest/proxy",
		trace.WithInstrumentationAttributes(attribute.String("eastwest.listener", listener)))
}

func (s *Server) startTrace() *connTrace {
	if s.tracer == nil {
		return nil
	}
	t := &connTrace{srv: s}
	t.attempts = t.first[:0]
	return t
}

// hello records the complete ClientHello of size bytes, read by at.
func (t *connTrace) hello(size int, at time.Time) {
	if t == nil {
		return
	}
	t.helloSize, t.helloAt = size, at
}

// pick records that the next attempt dials endpoint from at.
func (t *connTrace) pick(endpoint string, at time.Time) {
	if t == nil {
		return
	}
	t.attempts = append(t.attempts, attemptTrace{endpoint: endpoint, at: at})
}

// connect records how the dial of the last pick ended.
func (t *connTrace) connect(took time.Duration, err error) {
	if t == nil || len(t.attempts) == 0 {
		return
	}
	a := &t.attempts[len(t.attempts)-1]
	a.took, a.err = took, err
}

// spanScratch holds the options and attributes handed to the SDK while a
// span is built. The SDK copies what it keeps, so one set serves every
// call, and slices of it cost no allocation where variadic arguments to an
// interface method would.
type spanScratch struct {
	start  [2]trace.SpanStartOption
	evOpts [2]trace.EventOption
	kv     [9]attribute.KeyValue
}

var scratchPool = sync.Pool{New: func() any { return new(spanScratch) }}

// serverKind is built once: the conversion to an interface allocates.
var serverKind = trace.WithSpanKind(trace.SpanKindServer)

// event adds an event at at with attributes kv, through sc's slices.
func (sc *spanScratch) event(span trace.Span, name string, at time.Time, kv []attribute.KeyValue) {
	sc.evOpts[0], sc.evOpts[1] = trace.WithTimestamp(at), trace.WithAttributes(kv...)
	span.AddEvent(name, sc.evOpts[:]...)
	sc.evOpts = [2]trace.EventOption{}
}

// end makes the connection's span: the SNI, the rewritten host, the
// endpoint, attempts, bytes, duration and response flags as attributes
// (termination details too unless the end was normal), and the events
// client_hello (tls.client_hello.bytes), then per attempt pick
// (eastwest.endpoint) and connect_attempt (eastwest.connect_us, and error
// when it failed). Events carry only what the span does not already say:
// every attribute costs each span a few allocations to record and as many
// again to export.
func (t *connTrace) end(r *logRecord) {
	if t == nil {
		return
	}
	sc := scratchPool.Get().(*spanScratch)
	defer scratchPool.Put(sc)
	sc.start[0], sc.start[1] = trace.WithTimestamp(r.start), serverKind
	_, span := t.srv.tracer.Start(context.Background(), "eastwest.connection", sc.start[:]...)
	sc.start[0] = nil
	if !span.IsRecording() {
		// Not sampled: nothing to record, nothing will be exported.
		span.End()
		return
	}
	kv := sc.kv[:0]
	if !t.helloAt.IsZero() {
		kv = append(kv, attribute.Int("tls.client_hello.bytes", t.helloSize))
		sc.event(span, "client_hello", t.helloAt, kv)
	}
	for i := range t.attempts {
		a := &t.attempts[i]
		kv = append(sc.kv[:0], attribute.String("eastwest.endpoint", a.endpoint))
		sc.event(span, "pick", a.at, kv)
		kv = append(sc.kv[:0], attribute.Int64("eastwest.connect_us", a.took.Microseconds()))
		if a.err != nil {
			kv = append(kv, attribute.String("error", a.err.Error()))
		}
		sc.event(span, "connect_attempt", a.at.Add(a.took), kv)
	}
	kv = append(sc.kv[:0],
		attribute.String("tls.server_name", r.sni),
		attribute.String("eastwest.cluster", r.cluster),
		attribute.String("eastwest.endpoint", r.upstream),
		attribute.Int("eastwest.connect_attempts", r.attempts),
		attribute.Int64("eastwest.bytes_received", r.recv),
		attribute.Int64("eastwest.bytes_sent", r.sent),
		attribute.Int64("eastwest.duration_ms", time.Since(r.start).Milliseconds()),
		attribute.String("eastwest.response_flags", r.flags),
	)
	if r.details != "-" {
		// Most connections end normally ("-"); saying so would cost every
		// span a ninth attribute.
		kv = append(kv, attribute.String("eastwest.termination_details", r.details))
	}
	span.SetAttributes(kv...)
	sc.kv = [9]attribute.KeyValue{} // let the strings go with the connection
	if r.flags != "-" {
		span.SetStatus(codes.Error, r.details)
	}
	span.End()
}
