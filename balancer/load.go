package balancer

// This file holds Envoy's priority-load arithmetic (SEMANTICS 2.2, 2.3, 2.4)
// as pure functions, so the acceptance vectors can be table-tested without a
// cluster around them.

// defaultOverprovisioning is ClusterLoadAssignment.policy.overprovisioning_factor
// in percent: a priority is "fully available" at 100/140 = 71.4% healthy.
const defaultOverprovisioning = 140

// envoyPanicThreshold is CommonLbConfig.healthy_panic_threshold's default (LB-4).
const envoyPanicThreshold = 50

// prioCount is one priority's host census: hosts (excluded hosts are not
// modelled, so total is all hosts), healthy and degraded ones.
type prioCount struct {
	total, healthy, degraded uint32
}

// prioLoads is the outcome of the priority computation: the healthy and
// degraded load of each priority (they sum to 100), which priorities are in
// panic, and whether all are (total panic: the load is by host count and
// health is ignored).
type prioLoads struct {
	healthy, degraded []uint32
	panic             []bool
	totalPanic        bool
	// nta is the normalized total availability, kept for debugging.
	nta uint32
}

// availability returns Envoy's per-priority health and degraded availability,
// min(100, OPF*n/total), in unsigned integer arithmetic with truncation.
func availability(c prioCount, opf uint32) (health, degraded uint32) {
	if c.total == 0 {
		return 0, 0
	}
	health = min(100, uint32(uint64(opf)*uint64(c.healthy)/uint64(c.total)))
	degraded = min(100, uint32(uint64(opf)*uint64(c.degraded)/uint64(c.total)))
	return health, degraded
}

// computeLoads is recalculatePerPriorityState followed by
// recalculatePerPriorityPanic and recalculateLoadInTotalPanic, line for line
// (LB-1, LB-2, LB-4). threshold is the panic threshold in percent; 0 disables
// panic (Istio's default when outlierDetection is set, LB-5).
func computeLoads(counts []prioCount, opf, threshold uint32) prioLoads {
	n := len(counts)
	l := prioLoads{
		healthy:  make([]uint32, n),
		degraded: make([]uint32, n),
		panic:    make([]bool, n),
	}
	if n == 0 {
		return l
	}
	threshold = min(threshold, 100)
	health := make([]uint32, n)
	degr := make([]uint32, n)
	var sum uint32
	for i, c := range counts {
		health[i], degr[i] = availability(c, opf)
		sum += health[i] + degr[i]
	}
	nta := min(100, sum)
	l.nta = nta
	if nta > 0 {
		firstHealthy, remaining := distributeLoad(l.healthy, health, 100, nta)
		firstDegraded, remaining := distributeLoad(l.degraded, degr, remaining, nta)
		if remaining != 0 {
			// The rounding remainder goes to the first priority with any
			// healthy availability, else the first with degraded availability.
			if firstHealthy >= 0 {
				l.healthy[firstHealthy] += remaining
			} else if firstDegraded >= 0 {
				l.degraded[firstDegraded] += remaining
			}
		}
	}
	if threshold == 0 && nta == 0 {
		// Panic is disabled and nothing is available: Envoy assigns 100% to
		// P0 so the loads still sum to 100; P0 has no healthy host, so the
		// pick fails (UH).
		l.healthy[0] = 100
		return l
	}
	total := true
	for i, c := range counts {
		l.panic[i] = nta != 100 && inPanic(c, threshold)
		total = total && l.panic[i]
	}
	if total {
		l.totalPanic = true
		loadInTotalPanic(l, counts)
	}
	return l
}

// distributeLoad gives each priority min(remaining, avail*100/nta) in order
// and returns the first priority with availability (-1 if none) and the load
// left over.
func distributeLoad(load, avail []uint32, total, nta uint32) (first int, remaining uint32) {
	first = -1
	for i, a := range avail {
		if a > 0 && first < 0 {
			first = i
		}
		load[i] = min(total, a*100/nta)
		total -= load[i]
	}
	return first, total
}

// inPanic is isHostSetInPanic: the healthy plus degraded percentage, as a
// float and without the overprovisioning factor, below the threshold.
func inPanic(c prioCount, threshold uint32) bool {
	var healthyPct, degradedPct float64
	if c.total > 0 {
		healthyPct = 100 * float64(c.healthy) / float64(c.total)
		degradedPct = 100 * float64(c.degraded) / float64(c.total)
	}
	return healthyPct+degradedPct < float64(threshold)
}

// loadInTotalPanic spreads the load by host count, ignoring health; the
// truncation remainder goes to the first non-empty priority.
func loadInTotalPanic(l prioLoads, counts []prioCount) {
	var hosts uint64
	for _, c := range counts {
		hosts += uint64(c.total)
	}
	for i := range l.degraded {
		l.degraded[i] = 0
	}
	if hosts == 0 {
		clear(l.healthy)
		l.healthy[0] = 100
		return
	}
	remaining := uint32(100)
	first := -1
	for i, c := range counts {
		if first < 0 && c.total != 0 {
			first = i
		}
		l.healthy[i] = uint32(100 * uint64(c.total) / hosts)
		remaining -= l.healthy[i]
	}
	l.healthy[first] += remaining
}

// effectiveLocalityWeight is Envoy's effectiveLocalityWeight (SEMANTICS 2.4):
// weight * min(1, OPF/100 * eligible/hosts). eligible is the locality's
// healthy (or, for the degraded schedule, degraded) host count.
func effectiveLocalityWeight(weight, eligible, hosts, opf uint32) float64 {
	if hosts == 0 || weight == 0 {
		return 0
	}
	ratio := float64(eligible) / float64(hosts)
	return float64(weight) * min(1.0, float64(opf)/100*ratio)
}
