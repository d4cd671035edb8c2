package balancer

import (
	"sync/atomic"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

// Outlier detection (SEMANTICS 3): consecutive-failure ejection with
// check-before-eject against a cluster-wide max percentage, ejection time
// base x ejections capped at max, unejection and backoff decay on interval
// sweeps. Success-rate and failure-percentage detection are not run: Istio
// sets enforcing_success_rate = 0 and leaves failure percentage at enforcing
// 0, and the mesh model has no field to turn them on.

// ejectType is the consecutive-failure detector that fired.
type ejectType uint8

const (
	eject5xx ejectType = iota
	ejectGateway
	ejectLocalOrigin
	numEjectTypes
)

var ejectTypeNames = [numEjectTypes]string{"consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure"}

func (t ejectType) String() string { return ejectTypeNames[t] }

// Envoy's outlier defaults (SEMANTICS 3.1), used where Istio leaves a field
// unset (OD-7).
const (
	defaultConsecutive = 5
	defaultInterval    = 10 * time.Second
	defaultBaseEject   = 30 * time.Second
	defaultMaxEject    = 300 * time.Second
	defaultMaxEjectPct = 10
)

// odConfig is a cluster's outlier detection in Envoy terms, mapped from
// Istio's fields as applyOutlierDetection does (SEMANTICS 3.4).
type odConfig struct {
	split bool
	// Thresholds and enforcing percentages.
	c5xx, enf5xx uint32
	cgw, enfgw   uint32
	clo, enflo   uint32

	interval, base, maxEject time.Duration
	maxPct                   uint32
}

func (od *odConfig) enforcing(t ejectType) uint32 {
	switch t {
	case ejectGateway:
		return od.enfgw
	case ejectLocalOrigin:
		return od.enflo
	}
	return od.enf5xx
}

// odFromPolicy maps Istio's OutlierDetection to Envoy's fields; nil means
// outlier detection is off for the cluster.
func odFromPolicy(o *mesh.OutlierDetection) *odConfig {
	if o == nil {
		return nil
	}
	od := &odConfig{
		c5xx: defaultConsecutive, enf5xx: 100,
		cgw: defaultConsecutive, enfgw: 0, // Envoy: gateway failures detected, not enforced
		clo: defaultConsecutive, enflo: 100,
		interval: defaultInterval, base: defaultBaseEject, maxEject: defaultMaxEject,
		maxPct: defaultMaxEjectPct,
	}
	// consecutiveErrors is deprecated and not mapped (SEMANTICS 3.4).
	if v := o.Consecutive5xxErrors; v != nil {
		od.c5xx, od.enf5xx = *v, enforcingOf(*v)
	}
	if v := o.ConsecutiveGatewayErrors; v != nil {
		od.cgw, od.enfgw = *v, enforcingOf(*v)
	}
	od.split = o.SplitExternalLocalOrigin
	if v := o.ConsecutiveLocalOriginErrors; od.split && v != nil && *v > 0 {
		od.clo, od.enflo = *v, 100
	}
	if o.Interval > 0 {
		od.interval = o.Interval
	}
	if o.BaseEjectionTime > 0 {
		od.base = o.BaseEjectionTime
	}
	if o.MaxEjectionTime > 0 {
		od.maxEject = o.MaxEjectionTime
	}
	// max_ejection_time defaults to 300 s "or base if larger".
	od.maxEject = max(od.maxEject, od.base)
	if p := o.MaxEjectionPercent; p != nil && *p > 0 {
		od.maxPct = uint32(min(*p, 100))
	}
	return od
}

func enforcingOf(v uint32) uint32 {
	if v > 0 {
		return 100
	}
	return 0
}

// outlierStats are the cluster's outlier_detection.* counters (SEMANTICS
// 3.5), under Balancer.mu.
type outlierStats struct {
	active        uint64 // gauge ejections_active
	enforcedTotal uint64
	overflow      uint64
	total         uint64 // deprecated ejections_total (5xx only for TCP)
	detected      [numEjectTypes]uint64
	enforced      [numEjectTypes]uint64
}

// onConsecutive handles a consecutive-failure threshold hit: Envoy's
// onConsecutiveErrorWorker. An already ejected host is ignored and keeps its
// counter; otherwise the detection is counted, ejection is attempted, and
// the counter is reset.
func (b *Balancer) onConsecutive(cs *clusterState, h *host, t ejectType, counter *atomic.Uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	od := cs.od
	if od == nil || cs.topo.byAddr[h.addr] != h || h.flags&flagFailedOutlier != 0 {
		return
	}
	cs.ostats.detected[t]++
	if b.ejectHost(cs, h, t, od) {
		b.rebuild(cs)
	}
	counter.Store(0)
}

// ejectHost is Envoy's ejectHost: the max-percentage check is done before
// ejecting, over all hosts of the cluster, every priority together (OD-3).
func (b *Balancer) ejectHost(cs *clusterState, h *host, t ejectType, od *odConfig) bool {
	total := len(cs.topo.hosts)
	if total == 0 || 100*float64(cs.ostats.active)/float64(total) >= float64(od.maxPct) {
		cs.ostats.overflow++
		b.log.Debug("balancer: outlier ejection overflow", "cluster", cs.name, "host", h.addr.String(),
			"type", t.String(), "ejections_active", cs.ostats.active, "max_ejection_percent", od.maxPct)
		return false
	}
	if t == eject5xx {
		cs.ostats.total++
	}
	enf := od.enforcing(t)
	enforced := enf >= 100 || (enf > 0 && b.rand()%100 < uint64(enf))
	if !enforced {
		b.logEjection(cs, h, t, false, 0)
		return false
	}
	h.flags |= flagFailedOutlier
	h.lastEject = b.now()
	if time.Duration(h.backoff)*od.base < od.maxEject+od.base {
		h.backoff++
	}
	h.ejections++
	cs.ostats.active++
	cs.ostats.enforced[t]++
	cs.ostats.enforcedTotal++
	b.logEjection(cs, h, t, true, ejectionTime(h, od))
	return true
}

// ejectionTime is min(base x num_ejections, max) (OD-4).
func ejectionTime(h *host, od *odConfig) time.Duration {
	return min(od.base*time.Duration(h.backoff), od.maxEject)
}

// logEjection writes the ejection event (OD-8's fields).
func (b *Balancer) logEjection(cs *clusterState, h *host, t ejectType, enforced bool, d time.Duration) {
	b.log.Info("balancer: outlier ejection", "cluster", cs.name, "host", h.addr.String(), "type", t.String(),
		"enforced", enforced, "num_ejections", h.backoff, "ejection_duration", d)
}

// uneject clears the ejection and the consecutive counters, so a host is not
// re-ejected after very few new errors.
func (b *Balancer) uneject(cs *clusterState, h *host, reason string) {
	h.flags &^= flagFailedOutlier
	h.c5xx.Store(0)
	h.cgw.Store(0)
	h.clo.Store(0)
	h.cl4.Store(0)
	if cs.ostats.active > 0 {
		cs.ostats.active--
	}
	b.log.Info("balancer: outlier unejection", "cluster", cs.name, "host", h.addr.String(), "reason", reason,
		"num_ejections", h.backoff)
}

// sweep is one interval of Envoy's checkHostForUneject over a cluster: a
// host that is not ejected decays its backoff by one; an ejected one is
// unejected once min(base x backoff, max) has passed since its ejection.
func (b *Balancer) sweep(cs *clusterState, od *odConfig, now time.Time) {
	changed := false
	for _, h := range cs.topo.hosts {
		if h.flags&flagFailedOutlier == 0 {
			if h.backoff > 0 {
				h.backoff--
			}
			continue
		}
		if now.Sub(h.lastEject) >= ejectionTime(h, od) {
			b.uneject(cs, h, "ejection_time_elapsed")
			changed = true
		}
	}
	if changed {
		b.rebuild(cs)
	}
}
