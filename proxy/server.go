package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/sni"
)

// Deps are what a Server uses but does not own. Every field is required
// except Logger, AccessLog, Registerer and ClusterID.
type Deps struct {
	Store     *mesh.Store
	Picker    Picker
	Forwarder Forwarder
	// Logger gets operational messages; nil discards them.
	Logger *slog.Logger
	// AccessLog gets one line per connection; nil writes none.
	AccessLog *AccessLog
	// Metrics records the proxy's series, shared by every listener of the
	// process (NewMetrics); nil means a private, unexported set.
	Metrics *Metrics
	// TracerProvider records a span per connection; nil turns tracing off
	// at the cost of one nil check per connection.
	TracerProvider trace.TracerProvider
}

// Server is one AUTO_PASSTHROUGH listener and the connections it carries.
type Server struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	alog    *AccessLog
	m       *Metrics
	lm      listenerMetrics
	rw      *sni.Rewriter
	tracer  trace.Tracer // nil when tracing is off
	sample  sampler
	dialer  net.Dialer
	helloBf sync.Pool // *[]byte of cfg.MaxHelloBytes

	lns    []*net.TCPListener
	addr   string // resolved listen address
	active atomic.Int64

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining bool
	wg       sync.WaitGroup

	ctx    context.Context // cancelled at the hard drain deadline
	cancel context.CancelFunc
}

// New validates cfg and returns a Server that has not bound yet.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil || deps.Picker == nil || deps.Forwarder == nil {
		return nil, errors.New("proxy: Store, Picker and Forwarder are required")
	}
	discard := slog.New(slog.DiscardHandler)
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger, alog: deps.AccessLog, conns: map[*conn]struct{}{}}
	if s.log == nil {
		s.log = discard
	}
	s.log = s.log.With("listener", cfg.Name)
	s.m = deps.Metrics
	if s.m == nil {
		m, err := NewMetrics(prometheus.NewRegistry(), "")
		if err != nil {
			return nil, fmt.Errorf("proxy metrics: %w", err)
		}
		s.m = m
	}
	var err error
	if s.rw, err = sni.NewRewriter(cfg.Rewrites, cfg.RewriteStopOnFirstMatch, 4096); err != nil {
		return nil, err
	}
	// Go's default keepalive costs five setsockopt calls per socket
	// (BASELINE.md); the peers are sidecars that keep their own.
	s.dialer = net.Dialer{KeepAlive: -1}
	size := cfg.MaxHelloBytes
	s.helloBf.New = func() any { b := make([]byte, size); return &b }
	if deps.TracerProvider != nil {
		s.tracer = newTracer(deps.TracerProvider, cfg.Name)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Listen binds cfg.Listeners SO_REUSEPORT sockets on the address, so the
// kernel spreads accepts over them. Port 0 picks one port for all of them.
func (s *Server) Listen() error {
	lc := net.ListenConfig{KeepAlive: -1, Control: listenControl}
	addr := s.cfg.Address
	for i := 0; i < s.cfg.Listeners; i++ {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			for _, l := range s.lns {
				l.Close()
			}
			s.lns = nil
			return fmt.Errorf("listen %s: %w", s.cfg.Address, err)
		}
		s.lns = append(s.lns, ln.(*net.TCPListener))
		addr = ln.Addr().String() // later sockets share the port the first one got
	}
	s.addr = addr
	s.lm = s.m.bind(s.cfg.Name, addr)
	return nil
}

// Addr returns the bound address, valid after Listen.
func (s *Server) Addr() string { return s.addr }

// Serve accepts on every bound socket until Shutdown. It calls Listen if
// that has not happened yet.
func (s *Server) Serve() error {
	if s.lns == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.log.Info("listening", "address", s.addr, "sockets", len(s.lns))
	var wg sync.WaitGroup
	for _, ln := range s.lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.acceptLoop(ln)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.sweep()
	}()
	wg.Wait()
	return nil
}

func (s *Server) acceptLoop(ln *net.TCPListener) {
	var backoff time.Duration
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: wait and retry rather than spin or exit;
			// connections in flight keep being served.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.lm.accepted.Inc()
		if s.active.Add(1) > int64(s.cfg.MaxConnections) {
			s.active.Add(-1)
			s.lm.overflow.Inc()
			s.m.refused.WithLabelValues(s.cfg.Name, reasonOverflow).Inc()
			s.log.Debug("connection refused", "reason", reasonOverflow, "peer", c.RemoteAddr().String())
			_ = c.SetLinger(0)
			c.Close()
			continue
		}
		s.lm.openGauge.Inc()
		s.wg.Add(1)
		go s.handle(c)
	}
}

// conn is one client connection's state that the sweeper and the drain need.
type conn struct {
	client   *net.TCPConn
	upstream *net.TCPConn
	endpoint netip.AddrPort
	idle     time.Duration // 0: never idles out
	deadline time.Time     // maxConnectionDuration; zero: none
	start    time.Time
	closed   atomic.Uint32 // why the gateway ended it: closeIdle, closeMaxDuration, closeDrain
	cs       *clusterStats
	is       *istioStats
	// Bytes already added to the counters while the connection was open,
	// from the kernel's TCP_INFO; settle adds the rest at close.
	mu           sync.Mutex
	reportedSent int64
	reportedRecv int64
}

// progress adds the bytes moved since the last call to the counters, so
// long-lived connections show up in rates before they close.
func (c *conn) progress() {
	fromClient, fromUpstream, ok := bytesReceived(c.client, c.upstream)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.add(fromUpstream, fromClient)
}

// settle adds the forwarder's exact final counts.
func (c *conn) settle(sent, recv int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.add(sent, recv)
}

func (c *conn) add(sent, recv int64) {
	if d := sent - c.reportedSent; d > 0 {
		c.reportedSent = sent
		c.cs.rx.Add(d)
		c.is.sent.Add(d)
	}
	if d := recv - c.reportedRecv; d > 0 {
		c.reportedRecv = recv
		c.cs.tx.Add(d)
		c.is.recv.Add(d)
	}
}

const (
	closeIdle = iota + 1
	closeMaxDuration
	closeDrain
	closeUnhealthy
)

func (s *Server) track(c *conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// logRecord is what the access log line says about one connection.
type logRecord struct {
	start      time.Time
	flags      string
	details    string
	sni        string
	cluster    string
	upstream   string
	attempts   int
	sent, recv int64
	// upstreamLocal is the gateway's address on the upstream connection.
	upstreamLocal string
	// failure is the last connect error, UPSTREAM_TRANSPORT_FAILURE_REASON.
	failure string
	trace   *connTrace
}

// session is one connection from accept to its end, in one allocation:
// the access log record, the tracked conn and what the end must undo. An
// idle connection handed to an AsyncForwarder keeps only this (and its
// sockets) alive, so it holds no closures or contexts of its own.
type session struct {
	s   *Server
	c   *net.TCPConn
	rec logRecord
	cc  conn
	bp  *[]byte       // the ClientHello buffer, until it goes back to the pool
	cs  *clusterStats // set once the cluster counts the connection active
	is  *istioStats   // set once the Istio series counts it active
	// For the AsyncForwarder's done callback.
	cl       *mesh.Cluster
	ep       mesh.Endpoint
	helloLen int64
}

// end undoes what the connection took, in reverse order of taking.
func (x *session) end() {
	s := x.s
	if x.is != nil {
		x.is.active.Add(-1)
	}
	if x.cs != nil {
		x.cs.active.Add(-1)
	}
	if x.bp != nil {
		s.helloBf.Put(x.bp)
		x.bp = nil
	}
	s.accessLog(x.c, &x.rec)
	x.rec.trace.end(&x.rec)
	s.active.Add(-1)
	s.lm.openGauge.Dec()
	s.wg.Done()
}

// done is the AsyncForwarder's callback: it finishes the connection.
func (x *session) done(sent, recv int64, err error) {
	x.s.forwarded(x.cl, x.ep, &x.cc, x.cs, x.is, &x.rec, sent, recv+x.helloLen, err)
	x.end()
}

func (s *Server) handle(c *net.TCPConn) {
	x := &session{s: s, c: c, rec: logRecord{start: time.Now(), flags: "-", details: "-"}}
	handedOff := false
	defer func() {
		if !handedOff {
			x.end()
		}
	}()
	rec := &x.rec
	rec.trace = s.startTrace()

	// Phase 1: the ClientHello, bounded in time and bytes.
	_ = c.SetReadDeadline(rec.start.Add(s.cfg.HelloTimeout))
	x.bp = s.helloBf.Get().(*[]byte)
	raw, hello, err := sni.Read(c, *x.bp)
	if err != nil {
		s.refuse(c, rec, helloReason(err), err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	rec.sni = string(hello.ServerName)
	cl, reason := s.route(&hello, rec.sni)
	if cl == nil {
		s.m.noChain.WithLabelValues(s.addr).Inc()
		rec.details = "filter_chain_not_found"
		s.refuse(c, rec, reason, nil)
		return
	}
	rec.cluster = cl.Name
	helloDone := time.Now()
	rec.trace.hello(len(raw), helloDone)
	cs := s.m.stats.cluster(cl.Name)
	n := cs.active.Add(1)
	x.cs = cs
	if max := cl.Policy.MaxConnections; max > 0 && n > int64(max) {
		// DestinationRule connectionPool.tcp.maxConnections: Envoy's
		// circuit breaker closes the client at once (UO).
		cs.overflow.Add(1)
		rec.flags, rec.details = "UO", "upstream_overflow"
		s.refuse(c, rec, reasonCircuit, nil)
		return
	}

	// Phase 2: an upstream, with bounded attempts on hosts not yet tried.
	up, ep, err := s.connect(cl, cs, c, rec)
	if err != nil {
		c.Close()
		return
	}
	s.lm.setup.Observe(time.Since(helloDone).Seconds())
	is := s.m.stats.istioFor(cl, &ep, "-")
	is.active.Add(1)
	x.is = is
	cs.total.Add(1)
	is.opened.Add(1)

	// Replay the ClientHello now so its buffer goes back to the pool before
	// a connection that may live for hours starts.
	if _, err := up.Write(raw); err != nil {
		rec.flags, rec.details, rec.failure = "UF", "replay_failed", err.Error()
		s.deps.Picker.Report(cl, ep, mesh.ClosedBeforeData)
		s.deps.Picker.Report(cl, ep, mesh.Released)
		abort(c, up)
		is.closed.Add(1)
		return
	}
	helloLen := int64(len(raw))
	s.helloBf.Put(x.bp)
	x.bp = nil

	// Phase 3: forward until both directions end. The forwarder resets
	// the pair when s.ctx ends (the hard drain deadline); nothing else
	// cancels one connection, so it gets no context of its own.
	cc := &x.cc
	cc.client, cc.upstream, cc.endpoint, cc.start = c, up, ep.Addr, rec.start
	cc.idle, cc.cs, cc.is = s.cfg.IdleTimeout, cs, is
	if p := cl.Policy.IdleTimeout; p != 0 {
		cc.idle = p
	}
	if cc.idle < 0 {
		cc.idle = 0
	}
	if d := cl.Policy.MaxConnectionDuration; d > 0 {
		cc.deadline = rec.start.Add(d)
	}
	s.track(cc)
	if af, ok := s.deps.Forwarder.(AsyncForwarder); ok {
		// This goroutine ends here; done finishes the connection.
		handedOff = true
		x.cl, x.ep, x.helloLen = cl, ep, helloLen
		af.Submit(s.ctx, c, up, nil, x.done)
		return
	}
	sent, recv, ferr := s.deps.Forwarder.Forward(s.ctx, c, up, nil)
	s.forwarded(cl, ep, cc, cs, is, rec, sent, recv+helloLen, ferr)
}

// forwarded records how a forwarded connection ended: counters, the
// picker's view of the endpoint, response flags and termination details.
func (s *Server) forwarded(cl *mesh.Cluster, ep mesh.Endpoint, cc *conn, cs *clusterStats, is *istioStats, rec *logRecord, sent, recv int64, ferr error) {
	s.untrack(cc)
	cc.settle(sent, recv)
	rec.sent, rec.recv = sent, recv
	switch cc.closed.Load() {
	case closeIdle:
		rec.details = "idle_timeout"
		cs.idle.Add(1)
	case closeMaxDuration:
		rec.details = "max_duration_timeout"
		cs.maxDur.Add(1)
	case closeDrain:
		rec.details = "drain_deadline"
	case closeUnhealthy:
		rec.details = "upstream_unhealthy"
	default:
		if ferr != nil {
			rec.details = "connection_error"
			s.log.Debug("connection ended with error", "cluster", cl.Name, "err", ferr)
		}
	}
	if sent == 0 && cc.closed.Load() == 0 {
		// A TLS server always answers a ClientHello: an upstream that sends
		// nothing back has a dead app behind an accepting socket (OD-2).
		s.deps.Picker.Report(cl, ep, mesh.ClosedBeforeData)
		rec.flags = "UC"
	}
	s.deps.Picker.Report(cl, ep, mesh.Released)
	cs.lengthMS.observe(time.Since(rec.start))
	if rec.flags != "-" {
		// The response flags label is known only now: move the connection's
		// counts to the series that carries them.
		fis := s.m.stats.istioFor(cl, &ep, rec.flags)
		is.opened.Add(-1)
		is.sent.Add(-sent)
		is.recv.Add(-recv)
		fis.opened.Add(1)
		fis.sent.Add(sent)
		fis.recv.Add(recv)
		is = fis
	}
	is.closed.Add(1)
}

// route applies the rewrite rules, parses the name and looks it up in the
// current snapshot. The allowlist check runs on the rewritten name (SEC-2).
func (s *Server) route(h *sni.ClientHello, original string) (*mesh.Cluster, string) {
	if original == "" {
		return nil, reasonBadName
	}
	name, err := sni.ParseName(s.rw.Rewrite(original))
	if err != nil {
		return nil, reasonBadName
	}
	snap := s.deps.Store.Load()
	var (
		cl     *mesh.Cluster
		reason mesh.Reason
	)
	if name.Istio {
		if *s.cfg.RequireIstioALPN && !h.HasIstioALPN() {
			return nil, reasonALPN
		}
		cl, reason = snap.Lookup(name.Host, name.Port, name.Subset)
	} else {
		cl, reason = snap.LookupHost(name.Host)
	}
	if cl == nil {
		return nil, reason.String()
	}
	return cl, ""
}

// connect picks and dials an endpoint, retrying on hosts not yet tried.
func (s *Server) connect(cl *mesh.Cluster, cs *clusterStats, c *net.TCPConn, rec *logRecord) (*net.TCPConn, mesh.Endpoint, error) {
	timeout := s.cfg.ConnectTimeout
	if t := cl.Policy.ConnectTimeout; t > 0 {
		timeout = t
	}
	var src netip.AddrPort
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		src = ta.AddrPort()
	}
	var triedBuf [16]netip.AddrPort
	req := mesh.PickRequest{Source: src, Tried: triedBuf[:0]}
	var lastErr error
	for req.Attempt = 0; req.Attempt < s.cfg.MaxConnectAttempts; req.Attempt++ {
		ep, err := s.deps.Picker.Pick(s.ctx, cl, req)
		if err != nil {
			if errors.Is(err, ErrNoHealthyUpstream) || req.Attempt == 0 {
				cs.noneHealthy.Add(1)
				s.m.refused.WithLabelValues(s.cfg.Name, reasonNoHealth).Inc()
				rec.flags, rec.details = "UH", "no_healthy_upstream"
				return nil, ep, err
			}
			lastErr = err
			break
		}
		rec.attempts++
		rec.upstream = ep.Addr.String()
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(s.ctx, timeout)
		rec.trace.pick(rec.upstream, t0)
		nc, err := s.dialer.DialContext(ctx, "tcp", rec.upstream)
		cancel()
		took := time.Since(t0)
		rec.trace.connect(took, err)
		if err == nil {
			cs.connectMS.observe(took)
			s.deps.Picker.Report(cl, ep, mesh.ConnectOK)
			rec.upstreamLocal = nc.LocalAddr().String()
			return nc.(*net.TCPConn), ep, nil
		}
		lastErr = err
		rec.failure = err.Error()
		if errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err) {
			cs.timeout.Add(1)
			s.deps.Picker.Report(cl, ep, mesh.ConnectTimeout)
		} else {
			cs.connectFail.Add(1)
			s.deps.Picker.Report(cl, ep, mesh.ConnectFailed)
		}
		s.log.Debug("connect attempt failed", "cluster", cl.Name, "endpoint", rec.upstream, "attempt", req.Attempt+1, "err", err)
		if len(req.Tried) < cap(req.Tried) {
			req.Tried = append(req.Tried, ep.Addr)
		}
		if s.ctx.Err() != nil {
			break
		}
	}
	rec.flags, rec.details = "UF", "upstream_connect_failed"
	if rec.attempts > 1 {
		rec.flags = "UF,URX"
		cs.exceeded.Add(1)
	}
	return nil, mesh.Endpoint{}, fmt.Errorf("connect %s: %w", cl.Name, lastErr)
}

func helloReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, sni.ErrNotTLS):
		return reasonNotTLS
	case errors.Is(err, sni.ErrTooLarge):
		return reasonTooLarge
	case errors.As(err, &ne) && ne.Timeout():
		return reasonTimeout
	default:
		return reasonParse
	}
}

// refuse closes a connection that will not be forwarded without writing a
// byte to it (UNK-1): a passthrough gateway has no certificate to send an
// alert with, and a FIN tells a client no more than it needs.
func (s *Server) refuse(c *net.TCPConn, rec *logRecord, reason string, err error) {
	if rec.flags == "-" {
		rec.flags = "NR"
	}
	if rec.details == "-" {
		rec.details = reason
	}
	s.m.refused.WithLabelValues(s.cfg.Name, reason).Inc()
	if n, ok := s.sample.allow(reason, time.Now()); ok {
		// A sample, at most one line per reason per second, says what the
		// counter cannot: which name, from where (UNK-3).
		s.log.Info("connection refused", "reason", reason, "sni", rec.sni, "peer", c.RemoteAddr().String(), "err", err, "suppressed_since_last", n)
	} else {
		s.log.Debug("connection refused", "reason", reason, "sni", rec.sni, "peer", c.RemoteAddr().String(), "err", err)
	}
	c.Close()
}

// accessLog writes one line per connection.
func (s *Server) accessLog(c *net.TCPConn, r *logRecord) {
	if s.alog == nil {
		return
	}
	e := accessEntry{
		start: r.start, duration: time.Since(r.start), flags: r.flags, details: r.details,
		received: r.recv, sent: r.sent, upstreamHost: r.upstream, cluster: r.cluster,
		upstreamLocal: r.upstreamLocal, downLocal: c.LocalAddr().String(), downRemote: c.RemoteAddr().String(),
		sni: r.sni, failureReason: r.failure,
	}
	s.alog.write(&e)
}

// Active returns the number of client connections open now.
func (s *Server) Active() int64 { return s.active.Load() }

// Shutdown drains (DR-1 steps 3 to 6): it closes the listeners, closes
// connections idle for idleClose with a FIN, waits for the rest until ctx is
// done, then ends what remains with a FIN and, if that does not end them
// within a second, a reset. Readiness and the accept grace before it are the
// caller's, which owns the admin server.
func (s *Server) Shutdown(ctx context.Context, idleClose time.Duration) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	for _, ln := range s.lns {
		ln.Close()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			s.cancel()
			return nil
		case <-tick.C:
			s.closeIdle(idleClose, closeDrain)
		case <-ctx.Done():
			n := s.closeAll()
			s.log.Warn("drain deadline reached; closing connections", "connections", n)
			select {
			case <-done:
			case <-time.After(time.Second):
				s.cancel() // forwarders reset what is still open
				<-done
			}
			s.cancel()
			return ctx.Err()
		}
	}
}

// closeAll half-closes every tracked connection towards both peers: each
// sees a clean end of stream and the forwarders finish on their own.
func (s *Server) closeAll() int {
	conns := s.snapshotConns()
	for _, c := range conns {
		c.closed.CompareAndSwap(0, closeDrain)
		c.finish()
	}
	return len(conns)
}

// sweep enforces idle timeouts and maximum durations, advances byte
// counters of open connections and expires quiet series, all from one
// goroutine, so none of it costs a timer per connection.
func (s *Server) sweep() {
	every := time.Second
	if s.cfg.IdleTimeout > 0 {
		every = min(max(s.cfg.IdleTimeout/4, 10*time.Millisecond), time.Second)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastProgress, lastExpire time.Time
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.closeIdle(0, closeIdle)
			if now.Sub(lastProgress) >= progressEvery {
				lastProgress = now
				for _, c := range s.snapshotConns() {
					c.progress()
				}
			}
			if now.Sub(lastExpire) >= s.cfg.StatsExpiry/4 {
				lastExpire = now
				s.m.stats.expire(s.cfg.StatsExpiry)
			}
		}
	}
}

// progressEvery is how often open connections' byte counts reach the
// counters: a few times per typical scrape interval.
const progressEvery = 5 * time.Second

func (s *Server) snapshotConns() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

// closeIdle closes connections idle longer than their idle timeout, or
// than idle when non-zero, and those past their maximum duration. The
// kernel is asked about each connection outside the lock.
func (s *Server) closeIdle(idle time.Duration, why uint32) {
	now := time.Now()
	for _, c := range s.snapshotConns() {
		if !c.deadline.IsZero() && now.After(c.deadline) {
			c.closed.CompareAndSwap(0, closeMaxDuration)
			c.finish()
			continue
		}
		limit := c.idle
		if idle > 0 && (limit == 0 || idle < limit) {
			limit = idle
		}
		if limit <= 0 || now.Sub(c.start) < limit {
			continue
		}
		if idleFor(c.client, c.upstream) >= limit {
			c.closed.CompareAndSwap(0, why)
			c.finish()
		}
	}
}

// CloseConnections ends the connections to ep, spread evenly over window
// so that their clients do not all reconnect at once (HC-6: an active check
// failed ep and the settings ask to close what it carries). Each gets a FIN
// both ways. It returns at once; the closing runs on its own goroutine.
func (s *Server) CloseConnections(ep netip.AddrPort, window time.Duration) {
	var victims []*conn
	for _, c := range s.snapshotConns() {
		if c.endpoint == ep {
			victims = append(victims, c)
		}
	}
	if len(victims) == 0 {
		return
	}
	s.log.Info("closing connections to an unhealthy endpoint", "endpoint", ep.String(), "connections", len(victims), "window", window)
	go func() {
		step := window / time.Duration(len(victims))
		for i, c := range victims {
			if i > 0 && step > 0 {
				select {
				case <-time.After(step):
				case <-s.ctx.Done():
					return
				}
			}
			c.closed.CompareAndSwap(0, closeUnhealthy)
			c.finish()
		}
	}()
}

// finish sends a FIN both ways: each peer sees a clean end of stream and
// the forwarder ends on its own.
func (c *conn) finish() {
	_ = c.client.CloseWrite()
	_ = c.upstream.CloseWrite()
}

func listenControl(network, address string, rc syscall.RawConn) error {
	return reusePort(rc)
}

// sampler lets one log line per key through per second and counts the rest.
type sampler struct {
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

// allow reports whether a line for key may be logged now, and how many were
// held back since the last one.
func (p *sampler) allow(key string, now time.Time) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		p.last, p.held = map[string]time.Time{}, map[string]int{}
	}
	if now.Sub(p.last[key]) < time.Second {
		p.held[key]++
		return 0, false
	}
	n := p.held[key]
	p.last[key], p.held[key] = now, 0
	return n, true
}
