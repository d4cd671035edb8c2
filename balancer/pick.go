package balancer

import (
	"sync"
	"sync/atomic"

	"github.com/eastwest-gw/eastwest/mesh"
)

// retryPicks is how many fresh picks avoid req.Tried before the
// deterministic scan of routable hosts (TCP-2); Envoy's previous-host retry
// predicate is typically used with a handful of host selection attempts.
const retryPicks = 3

// pick runs the three stages for one connection attempt: priority, then
// locality (with locality-weighted LB), then host (SEMANTICS 2). It returns
// nil when nothing is routable.
func (st *lbState) pick(b *Balancer, req *mesh.PickRequest) *host {
	if len(st.prios) == 0 {
		return nil
	}
	key, hashed := st.key(b, req)
	h := st.pickOnce(b, key, hashed, 0, true)
	if h == nil || len(req.Tried) == 0 || !isTried(req, h.addr) {
		return h
	}
	for attempt := uint64(1); attempt <= retryPicks; attempt++ {
		k := key
		if !hashed {
			k = b.rand()
		}
		if x := st.pickOnce(b, k, hashed, attempt, false); x != nil && !isTried(req, x.addr) {
			return x
		}
	}
	for _, x := range st.routable {
		if !isTried(req, x.addr) {
			return x
		}
	}
	return h
}

// key returns the value that picks the priority: the source-IP hash for
// consistent hashing (HS-2), random otherwise. hashed says the cluster's
// hash table picks the host; without a source IP its key is random, as
// Envoy does without a hash policy.
func (st *lbState) key(b *Balancer, req *mesh.PickRequest) (uint64, bool) {
	switch st.cfg.policy {
	case policyRingHash, policyMaglev:
		if st.cfg.useSource && req.Source.IsValid() {
			return hashAddr(req.Source.Addr()), true
		}
		return b.rand(), true
	}
	return b.rand(), false
}

func (st *lbState) pickOnce(b *Balancer, key uint64, hashed bool, attempt uint64, count bool) *host {
	p, degraded := st.choosePriority(key)
	ps := &st.prios[p]
	if ps.panic && count {
		st.cs.panics.Add(1)
	}
	if hashed {
		if ps.table == nil {
			return nil
		}
		return ps.table.lookup(key, attempt)
	}
	var set *hostSet
	switch {
	case ps.panic:
		// A priority in panic selects among all its hosts, healthy or not
		// (SEMANTICS 2.3, OD-6).
		set = ps.all
	case ps.locs != nil:
		sched := ps.healthyLoc
		if degraded {
			sched = ps.degradLoc
		}
		if sched == nil {
			// No locality has effective weight: Envoy falls back to the
			// priority's pooled hosts.
			set = ps.healthy
			if degraded {
				set = ps.degraded
			}
			break
		}
		loc := &ps.locs[sched.pick(nil)]
		set = loc.healthy
		if degraded {
			set = loc.degraded
		}
	case degraded:
		set = ps.degraded
	default:
		set = ps.healthy
	}
	if len(set.hosts) == 0 {
		return nil
	}
	return set.choose(b, st.cfg.policy)
}

// choosePriority is Envoy's choosePriority: h = key%100+1 walks the
// cumulative healthy loads, then the degraded loads.
func (st *lbState) choosePriority(key uint64) (int, bool) {
	h := uint32(key%100) + 1
	var agg uint32
	for p, l := range st.loads.healthy {
		agg += l
		if h <= agg {
			return p, false
		}
	}
	for p, l := range st.loads.degraded {
		agg += l
		if h <= agg {
			return p, true
		}
	}
	return 0, false
}

// hostSet is a list of hosts to choose from with the cluster's policy.
type hostSet struct {
	hosts []*host
	// sched is the EDF schedule for unequal weights (ROUND_ROBIN,
	// LEAST_REQUEST); nil when all weights are equal.
	sched *edf
	rr    atomic.Uint64
}

func (b *Balancer) newHostSet(hosts []*host, p policy) *hostSet {
	s := &hostSet{hosts: hosts}
	if len(hosts) == 0 {
		return s
	}
	// Randomized start, like Envoy's seed_, so replicas do not march in
	// step.
	s.rr.Store(b.rand())
	equal := true
	for _, h := range hosts {
		if h.weight != hosts[0].weight {
			equal = false
			break
		}
	}
	if !equal && (p == policyRoundRobin || p == policyLeastRequest) {
		w := make([]float64, len(hosts))
		for i, h := range hosts {
			w[i] = float64(h.weight)
		}
		s.sched = b.newEDF(w)
	}
	return s
}

// choose picks a host of a non-empty set (SEMANTICS 5, HS-1).
func (s *hostSet) choose(b *Balancer, p policy) *host {
	n := uint64(len(s.hosts))
	if n == 1 {
		return s.hosts[0]
	}
	switch p {
	case policyRoundRobin:
		if s.sched != nil {
			return s.hosts[s.sched.pick(nil)]
		}
		return s.hosts[s.rr.Add(1)%n]
	case policyRandom:
		return s.hosts[b.rand()%n]
	default:
		if s.sched != nil {
			// Unequal weights: EDF on weight/(active+1)^1.0, the weight of
			// the picked host recomputed when it is rescheduled.
			return s.hosts[s.sched.pick(s)]
		}
		// Equal weights: power of two choices, sampled with replacement as
		// Envoy's unweightedHostPick does.
		c := s.hosts[b.rand()%n]
		x := s.hosts[b.rand()%n]
		if x.active.Load() < c.active.Load() {
			c = x
		}
		return c
	}
}

// edf is Envoy's earliest-deadline-first scheduler: each entry's next
// deadline is the current time plus 1/weight; a pick pops the earliest and
// reschedules it. It gives a smooth weighted sequence (no bursts). A small
// per-scheduler mutex guards it; there is no lock shared across clusters.
type edf struct {
	mu   sync.Mutex
	now  float64
	seq  uint64
	heap []edfEntry
	w    []float64
}

type edfEntry struct {
	deadline float64
	seq      uint64
	idx      int32
}

// newEDF returns a schedule over the positive weights of w, or nil if none
// is positive. Like Envoy's createWithPicks it starts after a random number
// of picks.
func (b *Balancer) newEDF(w []float64) *edf {
	e := &edf{w: w}
	for i, wi := range w {
		if wi > 0 {
			e.heap = append(e.heap, edfEntry{deadline: 1 / wi, seq: e.seq, idx: int32(i)})
			e.seq++
		}
	}
	if len(e.heap) == 0 {
		return nil
	}
	for i := len(e.heap)/2 - 1; i >= 0; i-- {
		e.down(i)
	}
	for range b.rand() % uint64(len(e.heap)) {
		e.pick(nil)
	}
	return e
}

// pick returns the index of the next entry. With dyn, the rescheduled
// entry's weight is divided by its host's active connections + 1 (least
// request, active_request_bias 1.0).
func (e *edf) pick(dyn *hostSet) int {
	e.mu.Lock()
	top := e.heap[0]
	e.now = top.deadline
	w := e.w[top.idx]
	if dyn != nil {
		w /= float64(max(dyn.hosts[top.idx].active.Load(), 0) + 1)
	}
	e.heap[0] = edfEntry{deadline: e.now + 1/w, seq: e.seq, idx: top.idx}
	e.seq++
	e.down(0)
	e.mu.Unlock()
	return int(top.idx)
}

func (e *edf) less(i, j int) bool {
	a, b := e.heap[i], e.heap[j]
	if a.deadline != b.deadline {
		return a.deadline < b.deadline
	}
	return a.seq < b.seq
}

func (e *edf) down(i int) {
	n := len(e.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && e.less(r, l) {
			m = r
		}
		if !e.less(m, i) {
			return
		}
		e.heap[i], e.heap[m] = e.heap[m], e.heap[i]
		i = m
	}
}
