package balancer

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

// ErrNoHealthyUpstream is wrapped by Pick when a cluster has no routable
// endpoint (Envoy response flag UH, upstream_cx_none_healthy).
var ErrNoHealthyUpstream = errors.New("no healthy upstream")

// noHealthyError names the cluster and wraps ErrNoHealthyUpstream.
type noHealthyError struct{ cluster string }

func (e *noHealthyError) Error() string {
	return "cluster " + e.cluster + ": " + ErrNoHealthyUpstream.Error()
}

func (e *noHealthyError) Unwrap() error { return ErrNoHealthyUpstream }

// Is also matches any sentinel whose text is "no healthy upstream". The
// proxy checks errors.Is against its own proxy.ErrNoHealthyUpstream, and
// balancer must not import proxy (the seam rule in STYLE.md), so identity
// cannot be shared; the text is the contract instead.
func (e *noHealthyError) Is(target error) bool {
	return target != nil && target.Error() == ErrNoHealthyUpstream.Error()
}

// Options configures a Balancer. The zero value works: a gateway without a
// locality (locality LB off), the default logger, the wall clock and the
// runtime's per-thread random source.
type Options struct {
	// Locality is the gateway's own locality; priorities are computed
	// relative to it, the way istiod computes them for a proxy. Zero turns
	// locality load balancing off, as Istio does for a proxy without one.
	Locality mesh.Locality
	// Labels are the gateway's labels, matched by failoverPriority. The
	// topology labels (region, zone, subzone, network) are filled in from
	// Locality and Network when absent.
	Labels map[string]string
	// Network is the gateway's network (topology.istio.io/network).
	Network string
	// Logger receives mode changes, foot-gun warnings and ejection events;
	// nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for outlier detection; nil means time.Now.
	Now func() time.Time
	// Rand, when set, is the only random source, used under a mutex so
	// tests are reproducible (HS-3). Nil uses math/rand/v2's runtime
	// source, which is per thread and takes no lock.
	Rand *rand.Rand
	// HealthReadmitsEjected: a passing active health check (SetHealthy
	// true) unejects an outlier-ejected host and clears its counters, as
	// Envoy's successful_active_health_check_uneject_host. Nil means true
	// (Envoy's default); it is a pointer because the default is true.
	HealthReadmitsEjected *bool
}

// Balancer picks endpoints for SNI-DNAT clusters: priority from locality and
// health, locality by weight, then host by the cluster's policy. It keeps
// outlier detection and active health state per host. All methods are safe
// for concurrent use; Pick and Report take no global lock.
type Balancer struct {
	log      *slog.Logger
	now      func() time.Time
	loc      mesh.Locality
	labels   map[string]string
	readmit  bool
	rngMu    sync.Mutex
	rng      *rand.Rand
	clusters atomic.Pointer[map[string]*clusterState]

	// mu serializes writers: Update, health changes, ejections, sweeps.
	mu sync.Mutex
	// installed is the cluster list of the last Update, sorted by name
	// with no duplicate names: installed[i] is the src of the state of its
	// name. Update diffs the next snapshot against it.
	installed []*mesh.Cluster
	byAddr    addrIndex
	hc        map[netip.AddrPort]hcState
	// hcStray holds addresses given a verdict while no cluster had them;
	// the next Update forgets those still unknown.
	hcStray map[netip.AddrPort]struct{}
	// reconfigured counts clusters compiled by Update, for tests.
	reconfigured uint64
}

// hcState is what active health checking last said about an address.
type hcState struct{ failed, degraded bool }

// New returns a Balancer with no clusters; call Update with a snapshot.
func New(o Options) *Balancer {
	b := &Balancer{
		log:     o.Logger,
		now:     o.Now,
		loc:     o.Locality,
		rng:     o.Rand,
		readmit: o.HealthReadmitsEjected == nil || *o.HealthReadmitsEjected,
		byAddr:  newAddrIndex(),
		hc:      map[netip.AddrPort]hcState{},
		hcStray: map[netip.AddrPort]struct{}{},
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.labels = make(map[string]string, len(o.Labels)+4)
	maps.Copy(b.labels, o.Labels)
	setIfAbsent(b.labels, labelRegion, o.Locality.Region)
	setIfAbsent(b.labels, labelZone, o.Locality.Zone)
	setIfAbsent(b.labels, labelSubzone, o.Locality.Subzone)
	setIfAbsent(b.labels, labelNetwork, o.Network)
	empty := map[string]*clusterState{}
	b.clusters.Store(&empty)
	return b
}

// rand returns 64 random bits.
func (b *Balancer) rand() uint64 {
	if b.rng != nil {
		b.rngMu.Lock()
		v := b.rng.Uint64()
		b.rngMu.Unlock()
		return v
	}
	return rand.Uint64()
}

// clusterName is the key of per-cluster state: mesh.Build sets Name.
func clusterName(c *mesh.Cluster) string {
	if c.Name != "" {
		return c.Name
	}
	return c.Key.String()
}

func (b *Balancer) lookup(c *mesh.Cluster) *clusterState {
	if c == nil {
		return nil
	}
	return (*b.clusters.Load())[c.Name]
}

// Update installs the clusters of s. State of clusters and endpoints (by
// address) that survive is kept: outlier counters and ejections, active
// health, active connections. It is called on every snapshot swap
// (mesh.Store.Subscribe) and does all the building, so Pick never does.
//
// Only clusters that are new, removed or changed are touched; a cluster is
// unchanged when s holds the very *mesh.Cluster the balancer last installed
// under its name (mesh.Snapshot.Update shares all but the changed ones), so
// the cost of an update follows what changed, not the size of the mesh.
func (b *Balancer) Update(s *mesh.Snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	old := *b.clusters.Load()
	var list []*mesh.Cluster
	if s != nil {
		list = s.Clusters()
	}
	d, ok := diffClusters(b.installed, list, old)
	if !ok {
		// Not sorted by name: not from mesh.Build or Snapshot.Update. A
		// stable sort keeps the first of duplicate names first.
		list = slices.Clone(list)
		slices.SortStableFunc(list, func(p, q *mesh.Cluster) int { return strings.Compare(clusterName(p), clusterName(q)) })
		d, _ = diffClusters(b.installed, list, old)
	}
	// Pick reads the name map without a lock: it is copied when names
	// come or go, and left alone (the common EDS case) when they do not.
	next := old
	if d.added > 0 || len(d.removed) > 0 {
		next = maps.Clone(old)
	}
	var gone []netip.AddrPort
	for _, t := range d.touched {
		cs := t.cs
		if cs == nil {
			name := clusterName(t.c)
			cs = &clusterState{name: name, errNone: &noHealthyError{cluster: name}}
			next[name] = cs
		}
		was := cs.topo
		b.configure(cs, t.c, now)
		b.reconfigured++
		gone = b.byAddr.reindex(cs, was, gone)
	}
	for _, cs := range d.removed {
		b.log.Debug("balancer: cluster removed", "cluster", cs.name)
		delete(next, cs.name)
		if cs.topo != nil {
			for _, h := range cs.topo.hosts {
				if b.byAddr.remove(h.addr, cs) {
					gone = append(gone, h.addr)
				}
			}
		}
	}
	// Health verdicts are forgotten for addresses no cluster has after the
	// update: those that left now, and those reported while unknown.
	for _, a := range gone {
		if !b.byAddr.has(a) {
			delete(b.hc, a)
		}
	}
	for a := range b.hcStray {
		if !b.byAddr.has(a) {
			delete(b.hc, a)
		}
	}
	clear(b.hcStray)
	b.installed = list
	if d.kept != nil {
		b.installed = d.kept
	}
	if d.added > 0 || len(d.removed) > 0 {
		b.clusters.Store(&next)
	}
}

// Pick returns an endpoint of c for one connection attempt, avoiding
// req.Tried while any other routable endpoint remains (TCP-2). The error
// wraps ErrNoHealthyUpstream. It allocates nothing and takes no global lock.
// ctx is not consulted: a pick never blocks.
func (b *Balancer) Pick(_ context.Context, c *mesh.Cluster, req mesh.PickRequest) (mesh.Endpoint, error) {
	cs := b.lookup(c)
	if cs == nil {
		return b.fallbackPick(c, &req)
	}
	st := cs.lb.Load()
	h := st.pick(b, &req)
	if h == nil {
		cs.noneHealthy.Add(1)
		return mesh.Endpoint{}, cs.errNone
	}
	return *h.ep.Load(), nil
}

// fallbackPick serves a cluster the balancer has not seen yet (a Pick that
// raced Update): no state is built on the hot path, it takes the first
// endpoint that its source does not mark unhealthy, from a random start,
// preferring untried ones.
func (b *Balancer) fallbackPick(c *mesh.Cluster, req *mesh.PickRequest) (mesh.Endpoint, error) {
	if c == nil {
		return mesh.Endpoint{}, &noHealthyError{cluster: "<nil>"}
	}
	n := len(c.Endpoints)
	if n == 0 {
		return mesh.Endpoint{}, &noHealthyError{cluster: clusterName(c)}
	}
	start := int(b.rand() % uint64(n))
	first := -1
	for k := range n {
		i := (start + k) % n
		if edsFlags(c.Endpoints[i].Health)&failedMask != 0 {
			continue
		}
		if !isTried(req, c.Endpoints[i].Addr) {
			return c.Endpoints[i], nil
		}
		if first < 0 {
			first = i
		}
	}
	if first >= 0 {
		return c.Endpoints[first], nil
	}
	return mesh.Endpoint{}, &noHealthyError{cluster: clusterName(c)}
}

func isTried(req *mesh.PickRequest, a netip.AddrPort) bool {
	for _, t := range req.Tried {
		if t == a {
			return true
		}
	}
	return false
}

// Report records the outcome of a connection to ep (SEMANTICS 3.2, OD-1,
// OD-2): ConnectOK and Released count active connections for
// LEAST_REQUEST; connect failures, timeouts and closes before data feed
// outlier detection when the cluster has it.
func (b *Balancer) Report(c *mesh.Cluster, ep mesh.Endpoint, o mesh.Outcome) {
	cs := b.lookup(c)
	if cs == nil {
		return
	}
	st := cs.lb.Load()
	h := st.topo.byAddr[ep.Addr]
	if h == nil {
		return
	}
	od := st.od
	switch o {
	case mesh.ConnectOK:
		h.active.Add(1)
		if od != nil {
			resetCounter(&h.c5xx)
			resetCounter(&h.cgw)
			resetCounter(&h.clo)
		}
	case mesh.Released:
		h.active.Add(-1)
		if od != nil && !decrementIfPositive(&h.cbdPending) {
			// A connection that ended without a close-before-data report
			// carried data: the OD-2 streak is over.
			resetCounter(&h.cl4)
		}
	case mesh.ConnectFailed, mesh.ConnectTimeout:
		if od == nil {
			return
		}
		if od.split {
			if h.clo.Add(1) == od.clo {
				b.onConsecutive(cs, h, ejectLocalOrigin, &h.clo)
			}
			return
		}
		// Non-split mode: a local-origin failure is a 503/504, which is
		// both a gateway error and a 5xx; Envoy checks the gateway counter
		// first.
		if h.cgw.Add(1) == od.cgw {
			b.onConsecutive(cs, h, ejectGateway, &h.cgw)
		}
		if h.c5xx.Add(1) == od.c5xx {
			b.onConsecutive(cs, h, eject5xx, &h.c5xx)
		}
	case mesh.ClosedBeforeData:
		if od == nil {
			return
		}
		// ConnectOK precedes every close-before-data and resets the Envoy
		// counters, so OD-2 keeps its own streak, ended by a connection
		// that is released without this report.
		h.cbdPending.Add(1)
		typ, threshold := eject5xx, od.c5xx
		if od.split {
			typ, threshold = ejectLocalOrigin, od.clo
		}
		if h.cl4.Add(1) == threshold {
			b.onConsecutive(cs, h, typ, &h.cl4)
		}
	}
}

func resetCounter(c *atomic.Uint32) {
	if c.Load() != 0 {
		c.Store(0)
	}
}

func decrementIfPositive(c *atomic.Int32) bool {
	for {
		v := c.Load()
		if v <= 0 {
			return false
		}
		if c.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

// SetHealthy records an active health check verdict for every cluster that
// has ep (the health.Sink seam). An unhealthy host is not routable except in
// panic (HC-3). With HealthReadmitsEjected, healthy also unejects an
// outlier-ejected host; call it after every passing check to get Envoy's
// uneject-on-success. The affected clusters are rebuilt before it returns
// (HC-5).
func (b *Balancer) SetHealthy(ep netip.AddrPort, healthy bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.hc[ep]
	s.failed = !healthy
	b.hc[ep] = s
	var buf [4]*clusterState
	affected := b.byAddr.clusters(ep, buf[:0])
	if len(affected) == 0 {
		b.hcStray[ep] = struct{}{}
	}
	for _, cs := range affected {
		h := cs.topo.byAddr[ep]
		if h == nil {
			continue
		}
		changed := h.setFlag(flagFailedActive, !healthy)
		if healthy && b.readmit && h.flags&flagFailedOutlier != 0 {
			b.uneject(cs, h, "active_health_check")
			changed = true
		}
		if changed {
			b.rebuild(cs)
		}
	}
}

// SetDegraded records an active health check's degraded verdict (HTTP
// x-envoy-degraded): degraded hosts get load only after healthy capacity
// runs out (LB-2).
func (b *Balancer) SetDegraded(ep netip.AddrPort, degraded bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.hc[ep]
	s.degraded = degraded
	b.hc[ep] = s
	var buf [4]*clusterState
	affected := b.byAddr.clusters(ep, buf[:0])
	if len(affected) == 0 {
		b.hcStray[ep] = struct{}{}
	}
	for _, cs := range affected {
		if h := cs.topo.byAddr[ep]; h != nil && h.setFlag(flagDegradedActive, degraded) {
			b.rebuild(cs)
		}
	}
}

// Run drives outlier detection's interval sweeps (unejection, backoff decay)
// for all clusters from one goroutine until ctx ends.
func (b *Balancer) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			t.Reset(b.tick(b.now()))
		}
	}
}

// Sweep pacing: sweeps that fall due within minSleep of each other run
// together; maxSleep bounds how late a newly added cluster is noticed.
const (
	minSleep = 50 * time.Millisecond
	maxSleep = time.Second
)

// tick runs the sweeps that are due at now and returns how long to sleep.
func (b *Balancer) tick(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := now.Add(maxSleep)
	for _, cs := range *b.clusters.Load() {
		od := cs.od
		if od == nil {
			continue
		}
		if !now.Before(cs.nextSweep) {
			b.sweep(cs, od, now)
			cs.nextSweep = cs.nextSweep.Add(od.interval)
			if !cs.nextSweep.After(now) {
				cs.nextSweep = now.Add(od.interval)
			}
		}
		if cs.nextSweep.Before(next) {
			next = cs.nextSweep
		}
	}
	return max(next.Sub(now), minSleep)
}
