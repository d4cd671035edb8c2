package balancer

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

// healthFlags is Envoy's host HealthFlag bitmask, reduced to the sources the
// gateway has (SEMANTICS 2.1, 4.2): a host is unhealthy if any failed flag is
// set, degraded if not unhealthy and any degraded flag is set.
type healthFlags uint16

const (
	flagFailedActive healthFlags = 1 << iota
	flagFailedOutlier
	flagFailedEDS
	flagDegradedActive
	flagDegradedEDS

	failedMask   = flagFailedActive | flagFailedOutlier | flagFailedEDS
	degradedMask = flagDegradedActive | flagDegradedEDS
)

// edsFlags maps the source's health status: DRAINING and UNHEALTHY fail,
// DEGRADED degrades, UNKNOWN and HEALTHY are routable.
func edsFlags(h mesh.Health) healthFlags {
	switch h {
	case mesh.HealthUnhealthy, mesh.HealthDraining:
		return flagFailedEDS
	case mesh.HealthDegraded:
		return flagDegradedEDS
	}
	return 0
}

// host is one endpoint of one cluster. The atomics are touched by Pick and
// Report; the rest only under Balancer.mu.
type host struct {
	addr netip.AddrPort
	// ep points into the current snapshot's (immutable) endpoint slice.
	ep atomic.Pointer[mesh.Endpoint]
	// active counts connections between ConnectOK and Released (HS-1).
	active atomic.Int64
	// Consecutive failure counters: 5xx, gateway, local origin (SEMANTICS
	// 3.2), and the OD-2 close-before-data streak.
	c5xx, cgw, clo, cl4 atomic.Uint32
	// cbdPending counts close-before-data reports whose Released has not
	// come yet.
	cbdPending atomic.Int32

	// Under Balancer.mu.
	flags      healthFlags
	backoff    uint32 // Envoy's ejectTimeBackoff, "num_ejections"
	ejections  uint64 // lifetime ejection count, for debugging
	lastEject  time.Time
	priority   uint32
	weight     uint32
	localityWt uint32
}

func (h *host) healthy() bool  { return h.flags&failedMask == 0 && h.flags&degradedMask == 0 }
func (h *host) degraded() bool { return h.flags&failedMask == 0 && h.flags&degradedMask != 0 }

// setFlag sets or clears f and says whether the coarse health changed.
func (h *host) setFlag(f healthFlags, on bool) bool {
	old := h.flags
	if on {
		h.flags |= f
	} else {
		h.flags &^= f
	}
	return old != h.flags
}

// policy is the host-selection algorithm of a cluster (SEMANTICS 5).
type policy uint8

const (
	policyLeastRequest policy = iota
	policyRoundRobin
	policyRandom
	policyRingHash
	policyMaglev
)

var policyNames = [...]string{"LEAST_REQUEST", "ROUND_ROBIN", "RANDOM", "RING_HASH", "MAGLEV"}

func (p policy) String() string { return policyNames[p] }

// Ring hash and Maglev defaults (SEMANTICS 5).
const (
	defaultMinRing   = 1024
	maxRing          = 8 << 20
	defaultMaglevLen = 65537
)

// clusterConfig is what a cluster's policy compiles to.
type clusterConfig struct {
	policy    policy
	useSource bool   // hash on the source IP; random key otherwise
	minRing   uint64 // ring hash
	tableSize uint64 // maglev
	threshold uint32 // panic threshold, percent
	weighted  bool   // locality-weighted LB (LB-7)
	mode      Mode
}

// topology is the part of a cluster's state that only changes on Update:
// hosts, their priorities and locality groups.
type topology struct {
	hosts  []*host
	byAddr map[netip.AddrPort]*host
	prios  [][]tgroup
}

// tgroup is one locality group of a priority.
type tgroup struct {
	locality mesh.Locality
	weight   uint32
	hosts    []*host
}

// clusterState is the long-lived state of one cluster name: it survives
// snapshot swaps. lb is the immutable picking structure, swapped on every
// membership or health change (LB-3, HC-5).
type clusterState struct {
	name    string
	errNone error
	lb      atomic.Pointer[lbState]

	// Counters read by Stats.
	panics      atomic.Uint64
	noneHealthy atomic.Uint64

	// Under Balancer.mu.
	src       *mesh.Cluster
	topo      *topology
	cfg       clusterConfig
	od        *odConfig
	nextSweep time.Time
	warnings  string
	ostats    outlierStats
}

// configure compiles c into cs: locality plan, policy, outlier config, and
// hosts (reusing host objects, with their counters, by address).
func (b *Balancer) configure(cs *clusterState, c *mesh.Cluster, now time.Time) {
	plan := planLocality(c, b.loc, b.labels)
	od := odFromPolicy(c.Policy.OutlierDetection)
	cfg := clusterConfig{
		policy:    policyLeastRequest,
		threshold: envoyPanicThreshold,
		weighted:  plan.weighted,
		mode:      plan.mode,
	}
	if c.Policy.OutlierDetection != nil {
		// Istio always sets healthy_panic_threshold = minHealthPercent when
		// outlierDetection is present, default 0: panic off (LB-5).
		cfg.threshold = 0
		if p := c.Policy.OutlierDetection.MinHealthPercent; p != nil {
			cfg.threshold = uint32(min(max(*p, 0), 100))
		}
	}
	warnings := plan.warnings
	lb := c.Policy.LoadBalancer
	switch {
	case lb.ConsistentHash != nil:
		ch := lb.ConsistentHash
		cfg.useSource = ch.UseSourceIP
		if ch.Maglev {
			cfg.policy = policyMaglev
			cfg.tableSize = ch.TableSize
			if cfg.tableSize == 0 || !isPrime(cfg.tableSize) || cfg.tableSize > 5000011 {
				if cfg.tableSize != 0 {
					warnings = append(warnings, "maglev table size must be a prime up to 5000011; using 65537")
				}
				cfg.tableSize = defaultMaglevLen
			}
		} else {
			cfg.policy = policyRingHash
			cfg.minRing = max(ch.MinimumRingSize, 1)
			if ch.MinimumRingSize == 0 {
				cfg.minRing = defaultMinRing
			}
			cfg.minRing = min(cfg.minRing, maxRing)
		}
	case lb.Simple == mesh.LBRoundRobin:
		cfg.policy = policyRoundRobin
	case lb.Simple == mesh.LBRandom:
		cfg.policy = policyRandom
	case lb.Simple == mesh.LBPassthrough:
		warnings = append(warnings, "loadBalancer PASSTHROUGH is not valid for an SNI-DNAT cluster; using LEAST_REQUEST")
	}

	old := cs.topo
	topo := &topology{byAddr: make(map[netip.AddrPort]*host, len(c.Endpoints))}
	groups := plan.groups
	slices.SortStableFunc(groups, func(a, b group) int { return cmp.Compare(a.priority, b.priority) })
	for _, g := range groups {
		for int(g.priority) >= len(topo.prios) {
			topo.prios = append(topo.prios, nil)
		}
		tg := tgroup{locality: g.locality, weight: g.weight}
		for _, i := range g.eps {
			e := &c.Endpoints[i]
			if _, dup := topo.byAddr[e.Addr]; dup {
				continue
			}
			var h *host
			if old != nil {
				h = old.byAddr[e.Addr]
			}
			if h == nil {
				h = &host{addr: e.Addr}
			}
			h.ep.Store(e)
			h.priority, h.weight, h.localityWt = g.priority, epWeight(*e), g.weight
			hc := b.hc[e.Addr]
			h.flags = h.flags&flagFailedOutlier | edsFlags(e.Health)
			if hc.failed {
				h.flags |= flagFailedActive
			}
			if hc.degraded {
				h.flags |= flagDegradedActive
			}
			if od == nil {
				h.flags &^= flagFailedOutlier
				h.backoff = 0
			}
			topo.byAddr[e.Addr] = h
			topo.hosts = append(topo.hosts, h)
			tg.hosts = append(tg.hosts, h)
		}
		if len(tg.hosts) > 0 {
			topo.prios[g.priority] = append(topo.prios[g.priority], tg)
		}
	}
	if cfg.mode == ModeFailover && od != nil {
		warnings = append(warnings, ejectionWarnings(topo, od)...)
	}

	if od != nil && (cs.od == nil || cs.od.interval != od.interval) {
		cs.nextSweep = now.Add(od.interval)
	}
	modeChanged := cs.src == nil || cs.cfg.mode != cfg.mode || cs.cfg.policy != cfg.policy
	cs.src, cs.topo, cs.cfg, cs.od = c, topo, cfg, od
	if modeChanged {
		b.log.Info("balancer: cluster mode", "cluster", cs.name, "locality_mode", string(cfg.mode),
			"lb_policy", cfg.policy.String(), "priorities", len(topo.prios), "endpoints", len(topo.hosts),
			"outlier_detection", od != nil, "panic_threshold", cfg.threshold)
	}
	if w := strings.Join(warnings, "; "); w != cs.warnings {
		cs.warnings = w
		for _, msg := range warnings {
			b.log.Warn("balancer: "+msg, "cluster", cs.name, "locality_mode", string(cfg.mode))
		}
	}
	b.rebuild(cs)
}

// ejectionWarnings explains when maxEjectionPercent keeps failover from ever
// happening (LB-10, SEMANTICS 2.7 case D).
func ejectionWarnings(topo *topology, od *odConfig) []string {
	total := len(topo.hosts)
	if total == 0 || len(topo.prios) < 2 || od.maxPct >= 100 {
		return nil
	}
	maxEj := maxEjectable(total, od.maxPct)
	p0 := 0
	for _, g := range topo.prios[0] {
		p0 += len(g.hosts)
	}
	// The fewest ejections that push P0 below full availability.
	spill := p0 + 1
	for e := 0; e <= p0; e++ {
		if h, _ := availability(prioCount{total: uint32(p0), healthy: uint32(p0 - e)}, defaultOverprovisioning); h < 100 {
			spill = e
			break
		}
	}
	switch {
	case maxEj < spill:
		return []string{"maxEjectionPercent " + strconv.Itoa(int(od.maxPct)) + "% allows at most " + strconv.Itoa(maxEj) + " of " +
			strconv.Itoa(total) + " hosts ejected, fewer than the " + strconv.Itoa(spill) + " needed before P0 (" + strconv.Itoa(p0) +
			" hosts) spills over: outlier detection alone can never fail over"}
	case maxEj < p0:
		return []string{"maxEjectionPercent " + strconv.Itoa(int(od.maxPct)) + "% allows at most " + strconv.Itoa(maxEj) + " of " +
			strconv.Itoa(total) + " hosts ejected: P0 (" + strconv.Itoa(p0) + " hosts) can never fail over completely"}
	}
	return []string{"maxEjectionPercent " + strconv.Itoa(int(od.maxPct)) + "% < 100 caps outlier ejections at " +
		strconv.Itoa(maxEj) + " of " + strconv.Itoa(total) + " hosts with failover in force"}
}

// maxEjectable is how many hosts the check-before-eject rule lets outlier
// detection eject: ejection proceeds while 100*ejected/total < pct.
func maxEjectable(total int, pct uint32) int {
	k := 0
	for k < total && 100*float64(k)/float64(total) < float64(pct) {
		k++
	}
	return k
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// lbState is one immutable picking structure for a cluster. Pick loads it
// once; writers build a new one and swap it in.
type lbState struct {
	cs    *clusterState
	topo  *topology
	od    *odConfig
	cfg   clusterConfig
	prios []prioState
	loads prioLoads
	// routable lists hosts eligible for selection, priorities with load
	// first: the deterministic last resort of TCP-2.
	routable []*host
}

// prioState is one priority: its host sources and, with locality-weighted
// LB, its locality schedules.
type prioState struct {
	panic                  bool
	healthy, degraded, all *hostSet
	locs                   []locState
	healthyLoc, degradLoc  *edf
	table                  hashTable
}

type locState struct {
	healthy, degraded *hostSet
}

// rebuild builds cs's lbState from its topology and host flags and swaps it
// in. Called with b.mu held.
func (b *Balancer) rebuild(cs *clusterState) {
	topo := cs.topo
	st := &lbState{cs: cs, topo: topo, od: cs.od, cfg: cs.cfg, prios: make([]prioState, len(topo.prios))}
	counts := make([]prioCount, len(topo.prios))
	hashed := cs.cfg.policy == policyRingHash || cs.cfg.policy == policyMaglev
	active := 0
	for p, groups := range topo.prios {
		ps := &st.prios[p]
		var all, healthy, degraded []*host
		for _, g := range groups {
			var gh, gd []*host
			for _, h := range g.hosts {
				all = append(all, h)
				switch {
				case h.healthy():
					gh = append(gh, h)
				case h.degraded():
					gd = append(gd, h)
				}
				if h.flags&flagFailedOutlier != 0 {
					active++
				}
			}
			healthy = append(healthy, gh...)
			degraded = append(degraded, gd...)
			if cs.cfg.weighted && !hashed {
				ps.locs = append(ps.locs, locState{healthy: b.newHostSet(gh, cs.cfg.policy), degraded: b.newHostSet(gd, cs.cfg.policy)})
			}
		}
		counts[p] = prioCount{total: uint32(len(all)), healthy: uint32(len(healthy)), degraded: uint32(len(degraded))}
		if !hashed {
			ps.all = b.newHostSet(all, cs.cfg.policy)
			ps.healthy = b.newHostSet(healthy, cs.cfg.policy)
			ps.degraded = b.newHostSet(degraded, cs.cfg.policy)
		}
		if ps.locs != nil {
			hw := make([]float64, len(groups))
			dw := make([]float64, len(groups))
			for i, g := range groups {
				hw[i] = effectiveLocalityWeight(g.weight, uint32(len(ps.locs[i].healthy.hosts)), uint32(len(g.hosts)), defaultOverprovisioning)
				dw[i] = effectiveLocalityWeight(g.weight, uint32(len(ps.locs[i].degraded.hosts)), uint32(len(g.hosts)), defaultOverprovisioning)
			}
			ps.healthyLoc = b.newEDF(hw)
			ps.degradLoc = b.newEDF(dw)
		}
	}
	cs.ostats.active = uint64(active)
	st.loads = computeLoads(counts, defaultOverprovisioning, cs.cfg.threshold)
	for p := range st.prios {
		st.prios[p].panic = st.loads.panic[p]
	}
	if hashed {
		for p := range st.prios {
			st.prios[p].table = buildTable(topo.prios[p], st.prios[p].panic, cs.cfg)
		}
	}
	// TCP-2 last resort: eligible hosts of loaded priorities first.
	for pass := range 2 {
		for p, groups := range topo.prios {
			loaded := st.loads.healthy[p]+st.loads.degraded[p] > 0
			if loaded != (pass == 0) {
				continue
			}
			for _, g := range groups {
				for _, h := range g.hosts {
					if h.flags&failedMask == 0 || (loaded && st.prios[p].panic) {
						st.routable = append(st.routable, h)
					}
				}
			}
		}
	}
	cs.lb.Store(st)
}
