package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// OTLPReceiver is the smallest real OTLP/HTTP trace endpoint: it reads each
// export request, counts its spans without decoding them into messages,
// discards it and answers success, as a collector on another host would.
// A traced target that exports to it pays for marshalling and sending every
// span, which an address that refuses (the exporter backing off and
// dropping spans) would not show. GET /stats returns OTLPStats as JSON.
type OTLPReceiver struct {
	ln  net.Listener
	srv *http.Server
	wg  sync.WaitGroup

	requests, spans, bytes, bad atomic.Int64
}

// OTLPStats is what an OTLPReceiver received so far.
type OTLPStats struct {
	Requests int64 `json:"requests"`
	Spans    int64 `json:"spans"`
	Bytes    int64 `json:"bytes"`
	// Bad counts requests that were not a trace export it could read.
	Bad int64 `json:"bad"`
}

// NewOTLPReceiver listens on addr (host:port, port 0 picks one) and serves
// until Close.
func NewOTLPReceiver(addr string) (*OTLPReceiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("otlp receiver: %w", err)
	}
	r := &OTLPReceiver{ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.export)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r.Stats())
	})
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		_ = r.srv.Serve(ln)
	}()
	return r, nil
}

// Addr is the receiver's address; exporters post to http://Addr/v1/traces.
func (r *OTLPReceiver) Addr() string { return r.ln.Addr().String() }

// Stats returns the counts so far.
func (r *OTLPReceiver) Stats() OTLPStats {
	return OTLPStats{Requests: r.requests.Load(), Spans: r.spans.Load(), Bytes: r.bytes.Load(), Bad: r.bad.Load()}
}

// Close stops serving.
func (r *OTLPReceiver) Close() error {
	err := r.srv.Close()
	r.wg.Wait()
	return err
}

func (r *OTLPReceiver) export(w http.ResponseWriter, req *http.Request) {
	// A few requests a second of up to a few hundred KiB each: ReadAll's
	// garbage is not worth a pool.
	body, err := io.ReadAll(req.Body)
	if err != nil {
		r.bad.Add(1)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n, err := countSpans(body)
	if err != nil || req.Header.Get("Content-Encoding") != "" {
		// Compressed bodies are not counted: the gateway sends none.
		r.bad.Add(1)
	}
	r.requests.Add(1)
	r.spans.Add(int64(n))
	r.bytes.Add(int64(len(body)))
	// An empty ExportTraceServiceResponse: full success.
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// Field numbers of the OTLP messages on the way to a span
// (opentelemetry/proto/collector/trace/v1 and trace/v1).
const (
	otlpResourceSpans = 1 // ExportTraceServiceRequest.resource_spans
	otlpScopeSpans    = 2 // ResourceSpans.scope_spans
	otlpSpans         = 2 // ScopeSpans.spans
)

// countSpans counts the spans of an ExportTraceServiceRequest by walking
// the wire format, so that counting costs the receiver next to nothing.
func countSpans(b []byte) (int, error) {
	n := 0
	err := eachField(b, otlpResourceSpans, func(rs []byte) error {
		return eachField(rs, otlpScopeSpans, func(ss []byte) error {
			return eachField(ss, otlpSpans, func([]byte) error { n++; return nil })
		})
	})
	return n, err
}

// eachField calls f with the bytes of every length-delimited field num of
// the message b, skipping the others.
func eachField(b []byte, num protowire.Number, f func([]byte) error) error {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return protowire.ParseError(l)
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return protowire.ParseError(l)
			}
			if err := f(v); err != nil {
				return err
			}
			b = b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return protowire.ParseError(l)
		}
		b = b[l:]
	}
	return nil
}

// fetchOTLPStats reads a receiver's counts over its /stats endpoint.
func fetchOTLPStats(addr string) (OTLPStats, error) {
	var s OTLPStats
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/stats")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("otlp receiver stats: %s", resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}
