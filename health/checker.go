package health

import (
	"container/heap"
	"context"
	"crypto/tls"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Sink receives active health verdicts for endpoint addresses (the traffic
// address, as in mesh.Endpoint.Addr). The balancer implements it. Calls are
// serialized; an implementation must not call back into the Checker.
type Sink interface {
	SetHealthy(ep netip.AddrPort, healthy bool)
}

// DegradedSink is implemented by a Sink that also takes the degraded verdict
// of HTTP checks (the x-envoy-degraded response header).
type DegradedSink interface {
	SetDegraded(ep netip.AddrPort, degraded bool)
}

// Defaults for Options.
const (
	DefaultMaxChecksPerSecond = 1000
	DefaultMaxConcurrent      = 256
)

// Options configure a Checker. Only Sink is required.
type Options struct {
	// Sink receives verdicts. If it implements DegradedSink it also gets
	// degraded verdicts.
	Sink Sink
	// Logger gets one line per health transition, with the reason. Nil
	// discards.
	Logger *slog.Logger
	// Registerer, if set, gets the envoy_cluster_health_check_* metrics.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now. Tests inject a fake one and
	// drive the scheduler without Run.
	Now func() time.Time
	// Rand draws jitter; nil means a randomly seeded source. Used under the
	// Checker's lock only.
	Rand *rand.Rand
	// MaxChecksPerSecond caps checks started per second across all targets
	// (HC-4), with bursts of a tenth of a second's worth. 0 means
	// DefaultMaxChecksPerSecond; negative means no cap. Checks over the cap
	// wait, in due order.
	MaxChecksPerSecond float64
	// MaxConcurrent caps checks in flight. 0 means DefaultMaxConcurrent.
	MaxConcurrent int
	// TLSConfig is the client config of HTTPS checks; nil skips
	// certificate verification, as the kubelet does for HTTPS probes.
	TLSConfig *tls.Config
	// ClusterHasTraffic reports whether a cluster has ever carried a
	// connection; while none of a target's clusters has, it is checked at
	// noTrafficInterval (Envoy). Nil treats every cluster as carrying
	// traffic, so periodSeconds always applies. Called under the Checker's
	// lock: it must be cheap and must not call the Checker.
	ClusterHasTraffic func(cluster string) bool
	// OnUnhealthy is called when a healthy endpoint turns unhealthy and one
	// of its checks has closeConnectionsOnHostHealthFailure (HC-6), with
	// the window over which to spread the closures. It runs on the
	// Checker's goroutine: it must not block.
	OnUnhealthy func(ep netip.AddrPort, window time.Duration)
}

// Target asks for one endpoint of one cluster to be checked.
type Target struct {
	// Endpoint is the endpoint's traffic address: the Sink is told about
	// it. The check goes to the same IP and the config's port.
	Endpoint netip.AddrPort
	// Cluster names the cluster (mesh.Cluster.Name) in metrics and logs.
	Cluster string
	// Config says how and when to check; WithDefaults is applied.
	Config CheckConfig
}

// Checker runs active health checks and publishes verdicts to a Sink. One
// goroutine (Run) keeps a timer heap of targets and starts due checks on
// short-lived goroutines, at most MaxConcurrent at a time and at most
// MaxChecksPerSecond: an idle Checker has no goroutine per endpoint.
type Checker struct {
	o     Options
	sink  Sink
	dsink DegradedSink
	log   *slog.Logger
	tr    *transports
	wake  chan struct{}
	rate  float64 // checks per second; 0 means no cap
	burst float64

	mu       sync.Mutex
	probes   map[string]*probe
	queue    probeHeap
	eps      map[netip.AddrPort][]*probe
	pub      map[netip.AddrPort]verdict
	stats    map[string]*clusterStats
	inflight int
	tokens   float64
	tokensAt time.Time
}

// verdict is an endpoint's combined active health: failed if any of its
// checks failed it.
type verdict struct{ healthy, degraded bool }

// clusterStats are Envoy's cluster.<name>.health_check.* counters.
type clusterStats struct {
	attempt, success, failure, networkFailure uint64
}

// member is one (endpoint, cluster) a check speaks for.
type member struct {
	ep          netip.AddrPort
	cluster     string
	close       bool
	closeWindow time.Duration
}

// transition is Envoy's HealthTransition.
type transition uint8

const (
	unchanged transition = iota
	pending              // counting toward a threshold: edge intervals apply
	changed
)

// probe is one distinct check (address and spec), shared by every target
// that asks for it, with Envoy's per-host state machine.
type probe struct {
	key    string
	addr   netip.AddrPort
	cfg    CheckConfig
	prober prober
	spread bool // InitialJitter unset: randomize the first interval

	members []member

	healthy, degraded, first bool
	nHealthy, nUnhealthy     int32

	due     time.Time
	index   int // in the heap, -1 when not queued
	running bool
	removed bool
}

// New returns a Checker with no targets; call Update, then Run.
func New(o Options) *Checker {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	if o.MaxChecksPerSecond == 0 {
		o.MaxChecksPerSecond = DefaultMaxChecksPerSecond
	}
	c := &Checker{
		o:      o,
		sink:   o.Sink,
		log:    o.Logger,
		tr:     newTransports(o.TLSConfig),
		wake:   make(chan struct{}, 1),
		probes: map[string]*probe{},
		eps:    map[netip.AddrPort][]*probe{},
		pub:    map[netip.AddrPort]verdict{},
		stats:  map[string]*clusterStats{},
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if ds, ok := o.Sink.(DegradedSink); ok {
		c.dsink = ds
	}
	if o.MaxChecksPerSecond > 0 {
		c.rate = o.MaxChecksPerSecond
		c.burst = max(1, c.rate/10)
		c.tokens = c.burst
	}
	c.tokensAt = o.Now()
	if o.Registerer != nil {
		if err := o.Registerer.Register(newCollector(c)); err != nil {
			c.log.Warn("health check metrics not registered", "err", err)
		}
	}
	return c
}

// Update replaces the set of targets. Checks whose address and spec survive
// keep their state and schedule; new ones start pending (not routable, as
// Envoy's PENDING_ACTIVE_HC) until their first result, and endpoints no
// longer checked are reported healthy again so that the Sink forgets them.
// Invalid configs are logged and their targets skipped. Call it on every
// mesh snapshot.
func (c *Checker) Update(targets []Target) {
	c.mu.Lock()
	now := c.o.Now()
	next := make(map[string]*probe, len(c.probes))
	seen := make(map[string]struct{}, len(targets))
	bad := map[string]int{}
	reset := map[*probe]bool{}
	for _, t := range targets {
		cfg, err := t.Config.WithDefaults()
		if err != nil {
			bad[err.Error()]++
			continue
		}
		addr := cfg.checkAddr(t.Endpoint)
		key := addr.String() + "|" + cfg.method().String() + "|" + cfg.specKey()
		p := next[key]
		if p == nil {
			p = c.probes[key]
			if p == nil {
				p = c.newProbe(key, addr, cfg, now)
			}
			next[key] = p
		}
		if !reset[p] {
			reset[p] = true
			p.members = p.members[:0]
		}
		mk := key + "|" + t.Endpoint.String() + "|" + t.Cluster
		if _, dup := seen[mk]; dup {
			continue
		}
		seen[mk] = struct{}{}
		p.members = append(p.members, member{ep: t.Endpoint, cluster: t.Cluster,
			close: cfg.CloseConnectionsOnHostHealthFailure, closeWindow: cfg.CloseConnectionsWindow})
	}
	var closing []prober
	for key, p := range c.probes {
		if next[key] != nil {
			continue
		}
		p.removed = true
		if p.index >= 0 {
			heap.Remove(&c.queue, p.index)
		}
		if !p.running {
			closing = append(closing, p.prober)
		}
	}
	c.probes = next

	eps := make(map[netip.AddrPort][]*probe, len(c.eps))
	clusters := map[string]struct{}{}
	for _, p := range next {
		for _, m := range p.members {
			if ps := eps[m.ep]; len(ps) == 0 || ps[len(ps)-1] != p {
				eps[m.ep] = append(ps, p)
			}
			clusters[m.cluster] = struct{}{}
		}
	}
	c.eps = eps
	for ep, ps := range eps {
		c.publish(ep, combine(ps), false)
	}
	for ep := range c.pub {
		if _, ok := eps[ep]; !ok {
			// No check speaks for ep any more: clear what we told the Sink.
			c.publish(ep, verdict{healthy: true}, false)
			delete(c.pub, ep)
		}
	}
	for name := range c.stats {
		if _, ok := clusters[name]; !ok {
			delete(c.stats, name)
		}
	}
	demand := 0.0
	for _, p := range next {
		demand += float64(time.Second) / float64(p.cfg.Interval)
	}
	c.mu.Unlock()

	for msg, n := range bad {
		c.log.Error("health check config rejected", "err", msg, "targets", n)
	}
	if c.rate > 0 && demand > c.rate {
		c.log.Warn("health checks want more than maxChecksPerSecond: periods will stretch",
			"checks_per_second", int(demand), "max", c.rate)
	}
	for _, pr := range closing {
		pr.close()
	}
	c.poke()
}

func (c *Checker) newProbe(key string, addr netip.AddrPort, cfg CheckConfig, now time.Time) *probe {
	p := &probe{key: key, addr: addr, cfg: cfg, prober: newProber(&cfg, addr, c.tr), first: true, index: -1,
		spread: cfg.InitialJitter == nil}
	delay := time.Duration(cfg.InitialDelaySeconds) * time.Second
	if j := cfg.InitialJitter; j != nil && *j > 0 {
		delay += c.randN(*j)
	}
	p.due = now.Add(delay)
	heap.Push(&c.queue, p)
	return p
}

func combine(ps []*probe) verdict {
	v := verdict{healthy: true}
	for _, p := range ps {
		if !p.healthy {
			v.healthy = false
		}
		if p.degraded {
			v.degraded = true
		}
	}
	return v
}

// publish tells the Sink about ep if v differs from what it was told
// (an endpoint it was never told about counts as healthy, the Sink's
// default), or always when passed is set: a passing check lets the Sink
// uneject an outlier-ejected endpoint (HC-3). It returns the previous
// verdict. Called with c.mu held, so verdicts reach the Sink in order.
func (c *Checker) publish(ep netip.AddrPort, v verdict, passed bool) verdict {
	old, ok := c.pub[ep]
	if !ok {
		old = verdict{healthy: true}
	}
	c.pub[ep] = v
	if c.sink != nil && (old.healthy != v.healthy || (passed && v.healthy)) {
		c.sink.SetHealthy(ep, v.healthy)
	}
	if c.dsink != nil && old.degraded != v.degraded {
		c.dsink.SetDegraded(ep, v.degraded)
	}
	return old
}

// Run schedules checks until ctx ends, then waits for checks in flight and
// closes kept connections.
func (c *Checker) Run(ctx context.Context) {
	var wg sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	defer func() {
		timer.Stop()
		wg.Wait()
		c.closeAll()
	}()
	for {
		batch, wait := c.dispatch(c.o.Now())
		for _, p := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.execute(ctx, p)
			}()
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-c.wake:
		}
	}
}

func (c *Checker) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Checker) closeAll() {
	c.mu.Lock()
	var ps []prober
	for _, p := range c.probes {
		ps = append(ps, p.prober)
	}
	c.mu.Unlock()
	for _, pr := range ps {
		pr.close()
	}
	c.tr.close()
}

// dispatch pops the checks due at now that the rate and concurrency caps
// allow, marks them running, and says how long to wait before the next.
func (c *Checker) dispatch(now time.Time) (batch []*probe, wait time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rate > 0 {
		if el := now.Sub(c.tokensAt); el > 0 {
			c.tokens = min(c.burst, c.tokens+el.Seconds()*c.rate)
		}
		c.tokensAt = now
	}
	for len(c.queue) > 0 {
		p := c.queue[0]
		if d := p.due.Sub(now); d > 0 {
			return batch, d
		}
		if c.inflight >= c.o.MaxConcurrent {
			return batch, time.Hour // a completion wakes Run
		}
		if c.rate > 0 {
			if c.tokens < 1 {
				return batch, max(time.Millisecond, time.Duration((1-c.tokens)/c.rate*float64(time.Second)))
			}
			c.tokens--
		}
		heap.Pop(&c.queue)
		p.running = true
		c.inflight++
		c.eachCluster(p, func(s *clusterStats) { s.attempt++ })
		batch = append(batch, p)
	}
	return batch, time.Hour
}

// eachCluster calls f once for each distinct cluster p speaks for.
func (c *Checker) eachCluster(p *probe, f func(*clusterStats)) {
	for i, m := range p.members {
		if slices.ContainsFunc(p.members[:i], func(o member) bool { return o.cluster == m.cluster }) {
			continue
		}
		s := c.stats[m.cluster]
		if s == nil {
			s = &clusterStats{}
			c.stats[m.cluster] = s
		}
		f(s)
	}
}

// execute runs one check and records its result.
func (c *Checker) execute(ctx context.Context, p *probe) {
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	r := p.prober.check(cctx)
	cancel()
	if ctx.Err() != nil {
		c.abandon(p)
		return
	}
	c.complete(p, r, c.o.Now())
}

// abandon puts back a check cut short by shutdown, without a verdict.
func (c *Checker) abandon(p *probe) {
	c.mu.Lock()
	c.inflight--
	p.running = false
	if !p.removed {
		p.due = c.o.Now()
		heap.Push(&c.queue, p)
	}
	c.mu.Unlock()
}

type closeReq struct {
	ep     netip.AddrPort
	window time.Duration
}

// complete applies a check result: Envoy's state machine, stats, logs, the
// Sink, and the next due time.
func (c *Checker) complete(p *probe, r result, now time.Time) {
	c.mu.Lock()
	atCap := c.inflight >= c.o.MaxConcurrent
	c.inflight--
	p.running = false
	if p.removed {
		c.mu.Unlock()
		p.prober.close()
		return
	}
	wasHealthy, wasDegraded, wasFirst := p.healthy, p.degraded, p.first
	tr := p.apply(r)
	c.eachCluster(p, func(s *clusterStats) {
		if r.outcome == passed {
			s.success++
			return
		}
		s.failure++
		if r.outcome != failActive {
			s.networkFailure++
		}
	})
	d := c.interval(p, r, tr)
	if p.spread && wasFirst {
		// [IMPROVE] phase spread: endpoints that appear together (start-up,
		// a scale-up) would otherwise check in lock step forever.
		d = time.Duration(1 + c.randN(d))
	}
	p.due = now.Add(d)
	heap.Push(&c.queue, p)
	top := p.index == 0

	c.logResult(p, r, wasFirst, wasHealthy, wasDegraded)
	var closes []closeReq
	for _, ep := range p.endpoints() {
		v := combine(c.eps[ep])
		old := c.publish(ep, v, r.outcome == passed)
		if old.healthy && !v.healthy {
			if w, ok := c.closeWindow(ep); ok {
				closes = append(closes, closeReq{ep, w})
			}
		}
	}
	c.mu.Unlock()
	if c.o.OnUnhealthy != nil {
		for _, cr := range closes {
			c.o.OnUnhealthy(cr.ep, cr.window)
		}
	}
	if top || atCap {
		c.poke()
	}
}

// endpoints returns p's distinct endpoints.
func (p *probe) endpoints() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(p.members))
	for _, m := range p.members {
		if !slices.Contains(out, m.ep) {
			out = append(out, m.ep)
		}
	}
	return out
}

// closeWindow says whether any check of ep asks to close its connections
// on failure, and the longest window asked for.
func (c *Checker) closeWindow(ep netip.AddrPort) (time.Duration, bool) {
	var w time.Duration
	found := false
	for _, p := range c.eps[ep] {
		for _, m := range p.members {
			if m.ep == ep && m.close {
				found = true
				w = max(w, m.closeWindow)
			}
		}
	}
	return w, found
}

// apply is Envoy's handleSuccess / setUnhealthy for one result.
func (p *probe) apply(r result) transition {
	tr := unchanged
	if r.outcome == passed {
		p.nUnhealthy = 0
		if !p.healthy {
			p.nHealthy++
			// Start-up: a single pass marks a new endpoint healthy.
			if p.first || p.nHealthy >= p.cfg.SuccessThreshold {
				p.healthy = true
				tr = changed
			} else {
				tr = pending
			}
		}
		if p.first {
			tr = changed // Envoy's clearPendingFlag
		}
		if r.degraded != p.degraded {
			p.degraded = r.degraded
			if tr == unchanged {
				tr = changed
			}
		}
	} else {
		p.nHealthy = 0
		if p.healthy {
			p.nUnhealthy++
			if r.immediate() || p.nUnhealthy >= p.cfg.FailureThreshold {
				p.healthy = false
				tr = changed
			} else {
				tr = pending
			}
		}
		if p.first {
			tr = changed
		}
	}
	p.first = false
	return tr
}

// interval is Envoy's HealthCheckerImplBase::interval with jitter.
func (c *Checker) interval(p *probe, r result, tr transition) time.Duration {
	cfg := &p.cfg
	ok := r.outcome == passed
	var base time.Duration
	switch {
	case c.o.ClusterHasTraffic != nil && !c.hasTraffic(p):
		if ok && tr != pending {
			base = cfg.NoTrafficHealthyInterval
		} else {
			base = cfg.NoTrafficInterval
		}
	case !ok && tr == pending:
		base = cfg.UnhealthyEdgeInterval
	case !ok:
		base = cfg.UnhealthyInterval
	case tr == pending:
		base = cfg.HealthyEdgeInterval
	default:
		base = cfg.Interval
	}
	if pct := cfg.IntervalJitterPercent; pct > 0 {
		base += c.randN(base * time.Duration(pct) / 100)
	}
	base += c.randN(cfg.IntervalJitter)
	return max(base, time.Millisecond)
}

func (c *Checker) hasTraffic(p *probe) bool {
	for _, m := range p.members {
		if c.o.ClusterHasTraffic(m.cluster) {
			return true
		}
	}
	return false
}

// randN returns a random duration in [0, d), 0 when d <= 0.
func (c *Checker) randN(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(c.o.Rand.Int64N(int64(d)))
}

// logResult writes the transition line (every health change; a first check
// that passes at debug level, one that fails at warn) or a failure line.
func (c *Checker) logResult(p *probe, r result, first, wasHealthy, wasDegraded bool) {
	from := stateName(wasHealthy, wasDegraded)
	if first {
		from = "pending"
	}
	to := stateName(p.healthy, p.degraded)
	attrs := []any{"target", p.addr.String(), "check", p.cfg.method().String(), "clusters", clusterList(p.members),
		"from", from, "to", to, "reason", r.reason}
	switch {
	case first && p.healthy:
		// Thousands of these at start-up say nothing new.
		c.log.Debug("health check transition", attrs...)
	case first || from != to:
		lvl := slog.LevelInfo
		if !p.healthy {
			lvl = slog.LevelWarn
		}
		c.log.Log(context.Background(), lvl, "health check transition", attrs...)
	case r.outcome != passed && p.cfg.AlwaysLogHealthCheckFailures:
		c.log.Info("health check failed", attrs...)
	case r.outcome != passed:
		c.log.Debug("health check failed", attrs...)
	}
}

func stateName(healthy, degraded bool) string {
	switch {
	case !healthy:
		return "unhealthy"
	case degraded:
		return "degraded"
	default:
		return "healthy"
	}
}

// clusterList names up to three clusters for a log line.
func clusterList(ms []member) string {
	var names []string
	for _, m := range ms {
		if !slices.Contains(names, m.cluster) {
			names = append(names, m.cluster)
		}
	}
	if len(names) > 3 {
		return names[0] + "," + names[1] + "," + names[2] + " and " + strconv.Itoa(len(names)-3) + " more"
	}
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ","
		}
		s += n
	}
	return s
}

// Pending returns how many checks have not had a first result yet: their
// endpoints are not routable. A caller can wait for 0 before opening
// listeners, as Envoy warms a cluster on its first round of checks.
func (c *Checker) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.probes {
		if p.first {
			n++
		}
	}
	return n
}

// probeHeap orders probes by due time.
type probeHeap []*probe

func (h probeHeap) Len() int           { return len(h) }
func (h probeHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h probeHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *probeHeap) Push(x any) {
	p := x.(*probe)
	p.index = len(*h)
	*h = append(*h, p)
}

func (h *probeHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	p.index = -1
	*h = old[:len(old)-1]
	return p
}
