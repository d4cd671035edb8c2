package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Load modes.
const (
	ModeThroughput  = "throughput"   // Conns streams of raw bytes for Duration, counted by the sink
	ModeLatency     = "latency"      // 64 B ping-pong on one connection for Duration
	ModeConnRate    = "connrate"     // Workers loops of connect, hello, one echo, close
	ModeConnRateTLS = "connrate-tls" // the same with a full TLS 1.3 handshake instead of the raw hello
	ModeIdle        = "idle"         // hold Conns established connections, read the proxy's cost
)

// Default Istio names and ALPN the load tool sends.
const (
	DefaultSNI    = "outbound_.9080_._.sink.default.svc.cluster.local"
	DefaultTLSSNI = "outbound_.9443_._.sink.default.svc.cluster.local"
)

// IstioALPN is what a sidecar offers on mesh mTLS connections.
var IstioALPN = []string{"istio-peer-exchange", "istio"}

// LoadConfig is one run of the load tool.
type LoadConfig struct {
	Mode       string
	Addr       string        // raw-mode target, host:port
	TLSAddr    string        // TLS-mode target; Addr when empty
	SNI        string        // raw-mode SNI; DefaultSNI when empty
	TLSSNI     string        // TLS-mode SNI; DefaultTLSSNI when empty
	Conns      int           // throughput streams or idle connections
	Workers    int           // connection-rate workers; 32 when 0
	Duration   time.Duration // timed modes
	MsgSize    int           // ping and echo size; 64 when 0
	PKIDir     string        // certificates for TLS mode (EnsurePKI)
	PID        int           // proxy process to measure; 0 for none
	MetricsURL string        // Prometheus endpoint with go_goroutines; optional
	Settle     time.Duration // idle: wait before reading the proxy's memory; 1 s when 0
}

// Latency is a percentile summary in microseconds.
type Latency struct {
	Samples            int
	P50, P90, P99, Max float64
}

// LoadResult is what one run measured. Error is set when anything received
// was wrong or any operation failed; the numbers are then not to be used.
type LoadResult struct {
	Mode    string  `json:"mode"`
	Conns   int     `json:"conns,omitempty"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`

	Bytes int64   `json:"bytes,omitempty"` // verified by the sink's count
	Gbps  float64 `json:"gbps,omitempty"`

	RTT *Latency `json:"rtt,omitempty"`

	Connections int64    `json:"connections,omitempty"`
	ConnPerSec  float64  `json:"connPerSec,omitempty"`
	Setup       *Latency `json:"setup,omitempty"`

	Held              int     `json:"held,omitempty"`
	RSSKiBPerConn     float64 `json:"rssKiBPerConn,omitempty"`
	PSSKiBPerConn     float64 `json:"pssKiBPerConn,omitempty"`
	FDsPerConn        float64 `json:"fdsPerConn,omitempty"`
	Goroutines        int     `json:"goroutines,omitempty"`
	GoroutinesPerConn float64 `json:"goroutinesPerConn,omitempty"`

	ProxyCPUSeconds  float64 `json:"proxyCPUSeconds,omitempty"`
	CPUSecPerGB      float64 `json:"cpuSecPerGB,omitempty"`
	CPUMicrosPerConn float64 `json:"cpuMicrosPerConn,omitempty"`
}

// loader holds what every mode shares.
type loader struct {
	cfg   LoadConfig
	hello []byte // raw-mode ClientHello
	tls   *tls.Config
	dial  net.Dialer
}

// RunLoad runs one mode against cfg.Addr. It returns an error only for a
// bad configuration; failures of the target are in LoadResult.Error.
func RunLoad(ctx context.Context, cfg LoadConfig) (*LoadResult, error) {
	if cfg.TLSAddr == "" {
		cfg.TLSAddr = cfg.Addr
	}
	if cfg.SNI == "" {
		cfg.SNI = DefaultSNI
	}
	if cfg.TLSSNI == "" {
		cfg.TLSSNI = DefaultTLSSNI
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 32
	}
	if cfg.MsgSize <= 0 {
		cfg.MsgSize = 64
	}
	if cfg.Settle <= 0 {
		cfg.Settle = time.Second
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 1
	}
	if cfg.MsgSize < 8 || cfg.MsgSize > 1024 {
		return nil, fmt.Errorf("msg size %d: want 8..1024", cfg.MsgSize)
	}
	l := &loader{cfg: cfg, dial: net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}}
	hello, err := CaptureClientHello(ctx, &tls.Config{ServerName: cfg.SNI, NextProtos: IstioALPN, InsecureSkipVerify: true})
	if err != nil {
		return nil, fmt.Errorf("capture ClientHello: %w", err)
	}
	l.hello = hello
	if cfg.Mode == ModeConnRateTLS {
		if l.tls, err = ClientTLS(cfg.PKIDir, cfg.TLSSNI); err != nil {
			return nil, err
		}
	}
	res := &LoadResult{Mode: cfg.Mode, Conns: cfg.Conns}
	var cpu0 ProcStats
	if cfg.PID > 0 && cfg.Mode != ModeIdle {
		if cpu0, err = ReadProcTree(cfg.PID); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	switch cfg.Mode {
	case ModeThroughput:
		err = l.throughput(ctx, res)
	case ModeLatency:
		err = l.latency(ctx, res)
	case ModeConnRate, ModeConnRateTLS:
		res.Conns = cfg.Workers
		err = l.connRate(ctx, res)
	case ModeIdle:
		err = l.idle(ctx, res)
	default:
		return nil, fmt.Errorf("unknown mode %q", cfg.Mode)
	}
	if res.Seconds == 0 {
		res.Seconds = time.Since(start).Seconds()
	}
	if err != nil {
		res.Error = err.Error()
		return res, nil
	}
	if cfg.PID > 0 && cfg.Mode != ModeIdle {
		cpu1, err := ReadProcTree(cfg.PID)
		if err != nil {
			res.Error = fmt.Sprintf("proxy after the run: %v", err)
			return res, nil
		}
		res.ProxyCPUSeconds = (cpu1.CPU - cpu0.CPU).Seconds()
		if res.Bytes > 0 {
			res.CPUSecPerGB = res.ProxyCPUSeconds / (float64(res.Bytes) / 1e9)
		}
		if res.Connections > 0 {
			res.CPUMicrosPerConn = res.ProxyCPUSeconds * 1e6 / float64(res.Connections)
		}
	}
	return res, nil
}

// rawConn dials Addr and writes the ClientHello, the command and extra in
// one write, as a sidecar's first flight.
func (l *loader) rawConn(ctx context.Context, cmd byte, extra []byte) (*net.TCPConn, error) {
	c, err := l.dial.DialContext(ctx, "tcp", l.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	first := make([]byte, 0, len(l.hello)+1+len(extra))
	first = append(append(append(first, l.hello...), cmd), extra...)
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(first); err != nil {
		c.Close()
		return nil, fmt.Errorf("write hello: %w", err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c.(*net.TCPConn), nil
}

func (l *loader) throughput(ctx context.Context, res *LoadResult) error {
	n := l.cfg.Conns
	conns := make([]*net.TCPConn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := l.rawConn(ctx, CmdDiscard, nil)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	payload := make([]byte, 256<<10)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	start := time.Now()
	end := start.Add(l.cfg.Duration)
	var total atomic.Int64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			errs[i] = stream(c, payload, end, &total)
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	res.Bytes = total.Load()
	res.Gbps = float64(res.Bytes) * 8 / res.Seconds / 1e9
	return nil
}

// stream writes payload until end, half-closes, and checks the sink's count.
func stream(c *net.TCPConn, payload []byte, end time.Time, total *atomic.Int64) error {
	_ = c.SetWriteDeadline(end.Add(10 * time.Second))
	var sent int64
	for time.Now().Before(end) {
		n, err := c.Write(payload)
		sent += int64(n)
		if err != nil {
			return fmt.Errorf("stream after %d bytes: %w", sent, err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("stream: close write: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("stream: read the sink's count (sent %d): %w", sent, err)
	}
	if n := int64(binary.BigEndian.Uint64(got[:])); n != sent {
		return fmt.Errorf("stream: sink counted %d bytes, sent %d", n, sent)
	}
	if err := expectEOF(c); err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	total.Add(sent)
	return nil
}

func expectEOF(c net.Conn) error {
	var b [1]byte
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(b[:])
	if n > 0 {
		return errors.New("unexpected bytes after the reply")
	}
	if !errors.Is(err, io.EOF) {
		return fmt.Errorf("want end of stream: %w", err)
	}
	return nil
}

// ping writes one message marked with seq and checks the echo.
func ping(c net.Conn, seq uint64, msg, got []byte) error {
	binary.BigEndian.PutUint64(msg, seq)
	for i := 8; i < len(msg); i++ {
		msg[i] = byte(seq) + byte(i)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("ping %d: write: %w", seq, err)
	}
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("ping %d: read echo: %w", seq, err)
	}
	if !bytes.Equal(msg, got) {
		return fmt.Errorf("ping %d: echo differs from what was sent", seq)
	}
	return nil
}

func (l *loader) latency(ctx context.Context, res *LoadResult) error {
	c, err := l.rawConn(ctx, CmdEcho, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	msg, got := make([]byte, l.cfg.MsgSize), make([]byte, l.cfg.MsgSize)
	const warmup = 100
	samples := make([]time.Duration, 0, 1<<16)
	start := time.Now()
	end := start.Add(l.cfg.Duration)
	for seq := uint64(0); seq < warmup+10 || time.Now().Before(end); seq++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		t0 := time.Now()
		if err := ping(c, seq, msg, got); err != nil {
			return err
		}
		if seq >= warmup {
			samples = append(samples, time.Since(t0))
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("close write: %w", err)
	}
	if err := expectEOF(c); err != nil {
		return err
	}
	res.RTT = summarize(samples)
	return nil
}

func (l *loader) connRate(ctx context.Context, res *LoadResult) error {
	start := time.Now()
	end := start.Add(l.cfg.Duration)
	var (
		mu      sync.Mutex
		all     []time.Duration
		firstEr error
		errs    int
	)
	var wg sync.WaitGroup
	for w := range l.cfg.Workers {
		wg.Go(func() {
			msg, got := make([]byte, l.cfg.MsgSize), make([]byte, l.cfg.MsgSize)
			lat := make([]time.Duration, 0, 4096)
			var err error
			for seq := uint64(w) << 40; time.Now().Before(end) && ctx.Err() == nil; seq++ {
				t0 := time.Now()
				if l.tls != nil {
					err = l.oneTLS(ctx, seq, msg, got)
				} else {
					err = l.oneRaw(ctx, seq, msg, got)
				}
				if err != nil {
					break
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			all = append(all, lat...)
			if err != nil {
				errs++
				if firstEr == nil {
					firstEr = err
				}
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	if firstEr != nil {
		return fmt.Errorf("%d of %d workers failed, first: %w", errs, l.cfg.Workers, firstEr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	res.Connections = int64(len(all))
	res.ConnPerSec = float64(len(all)) / res.Seconds
	res.Setup = summarize(all)
	return nil
}

func (l *loader) oneRaw(ctx context.Context, seq uint64, msg, got []byte) error {
	binary.BigEndian.PutUint64(msg, seq)
	for i := 8; i < len(msg); i++ {
		msg[i] = byte(seq) ^ byte(i)
	}
	c, err := l.rawConn(ctx, CmdEcho, msg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("connection %d: read echo: %w", seq, err)
	}
	if !bytes.Equal(msg, got) {
		return fmt.Errorf("connection %d: echo differs from what was sent", seq)
	}
	return nil
}

func (l *loader) oneTLS(ctx context.Context, seq uint64, msg, got []byte) error {
	raw, err := l.dial.DialContext(ctx, "tcp", l.cfg.TLSAddr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	c := tls.Client(raw, l.tls)
	defer c.Close()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(hctx); err != nil {
		return fmt.Errorf("connection %d: TLS handshake: %w", seq, err)
	}
	if cs := c.ConnectionState(); cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != "istio-peer-exchange" {
		return fmt.Errorf("connection %d: negotiated version %x ALPN %q, want TLS 1.3 and istio-peer-exchange", seq, cs.Version, cs.NegotiatedProtocol)
	}
	return ping(c, seq, msg, got)
}

func (l *loader) idle(ctx context.Context, res *LoadResult) error {
	if _, err := RaiseFileLimit(); err != nil {
		return err
	}
	var before ProcStats
	var err error
	if l.cfg.PID > 0 {
		if before, err = ReadProcTree(l.cfg.PID); err != nil {
			return err
		}
	}
	g0 := 0
	if l.cfg.MetricsURL != "" {
		if g0, err = Goroutines(ctx, l.cfg.MetricsURL); err != nil {
			return err
		}
	}
	n := l.cfg.Conns
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	// forAll runs f for every connection on Workers goroutines; it returns
	// the first error and how many workers failed.
	forAll := func(f func(i int) error) error {
		var next atomic.Int64
		var mu sync.Mutex
		var first error
		failed := 0
		var wg sync.WaitGroup
		for range l.cfg.Workers {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
					if err := f(i); err != nil {
						mu.Lock()
						if first == nil {
							first = err
						}
						failed++
						mu.Unlock()
						return
					}
				}
			})
		}
		wg.Wait()
		if first != nil {
			return fmt.Errorf("%d of %d workers failed, first: %w", failed, l.cfg.Workers, first)
		}
		return ctx.Err()
	}
	var held atomic.Int64
	err = forAll(func(i int) error {
		msg, got := make([]byte, l.cfg.MsgSize), make([]byte, l.cfg.MsgSize)
		c, err := l.rawConn(ctx, CmdEcho, nil)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = c
		if err := ping(c, uint64(i), msg, got); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		held.Add(1)
		return nil
	})
	res.Held = int(held.Load())
	if err != nil {
		return fmt.Errorf("held %d of %d connections: %w", res.Held, n, err)
	}
	select {
	case <-time.After(l.cfg.Settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	if l.cfg.PID > 0 {
		after, err := ReadProcTree(l.cfg.PID)
		if err != nil {
			return err
		}
		res.RSSKiBPerConn = float64(after.RSSKiB-before.RSSKiB) / float64(n)
		res.PSSKiBPerConn = float64(after.PSSKiB-before.PSSKiB) / float64(n)
		res.FDsPerConn = float64(after.FDs-before.FDs) / float64(n)
	}
	if l.cfg.MetricsURL != "" {
		g, err := Goroutines(ctx, l.cfg.MetricsURL)
		if err != nil {
			return err
		}
		res.Goroutines = g
		res.GoroutinesPerConn = float64(g-g0) / float64(n)
	}
	// Every connection must still carry bytes after the measurement.
	return forAll(func(i int) error {
		msg, got := make([]byte, l.cfg.MsgSize), make([]byte, l.cfg.MsgSize)
		if err := ping(conns[i], uint64(i)+1<<32, msg, got); err != nil {
			return fmt.Errorf("connection %d after the hold: %w", i, err)
		}
		return nil
	})
}

// summarize returns percentiles of d in microseconds.
func summarize(d []time.Duration) *Latency {
	if len(d) == 0 {
		return &Latency{}
	}
	slices.Sort(d)
	q := func(p float64) float64 {
		i := int(p * float64(len(d)-1))
		return float64(d[i]) / 1e3
	}
	return &Latency{Samples: len(d), P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: float64(d[len(d)-1]) / 1e3}
}
