package balancer

import (
	"cmp"
	"slices"
	"time"
)

// DebugCluster is one cluster in the /debug/clusters dump.
type DebugCluster struct {
	Name             string          `json:"name"`
	LocalityMode     Mode            `json:"locality_mode"`
	LBPolicy         string          `json:"lb_policy"`
	LocalityWeighted bool            `json:"locality_weighted"`
	PanicThreshold   uint32          `json:"panic_threshold"`
	OutlierDetection bool            `json:"outlier_detection"`
	TotalPanic       bool            `json:"total_panic"`
	Warnings         string          `json:"warnings,omitempty"`
	Priorities       []DebugPriority `json:"priorities"`
	Endpoints        []DebugEndpoint `json:"endpoints"`
}

// DebugPriority is one priority's load (percent) and panic state.
type DebugPriority struct {
	Priority     int    `json:"priority"`
	HealthyLoad  uint32 `json:"healthy_load"`
	DegradedLoad uint32 `json:"degraded_load"`
	Panic        bool   `json:"panic"`
	Hosts        int    `json:"hosts"`
}

// DebugEndpoint is one endpoint with every health source spelled out.
type DebugEndpoint struct {
	Address        string `json:"address"`
	Locality       string `json:"locality"`
	Priority       uint32 `json:"priority"`
	Weight         uint32 `json:"weight"`
	LocalityWeight uint32 `json:"locality_weight"`
	// Health is the coarse result: healthy, degraded or unhealthy.
	Health string `json:"health"`
	// EDS, Active and Outlier are each source's verdict.
	EDS     string `json:"health_eds"`
	Active  string `json:"health_active"`
	Outlier string `json:"health_outlier"`
	Ejected bool   `json:"ejected"`
	// EjectionMultiplier is Envoy's num_ejections backoff; EjectionCount
	// counts every ejection since the host appeared.
	EjectionMultiplier uint32 `json:"ejection_multiplier"`
	EjectionCount      uint64 `json:"ejection_count"`
	EjectedFor         string `json:"ejected_for,omitempty"`
	ActiveConnections  int64  `json:"active_connections"`
}

// DebugClusters returns a JSON-marshalable dump of every cluster, sorted by
// name, for the admin server's /debug/clusters.
func (b *Balancer) DebugClusters() any {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	m := *b.clusters.Load()
	out := make([]DebugCluster, 0, len(m))
	for _, cs := range m {
		st := cs.lb.Load()
		dc := DebugCluster{
			Name:             cs.name,
			LocalityMode:     cs.cfg.mode,
			LBPolicy:         cs.cfg.policy.String(),
			LocalityWeighted: cs.cfg.weighted,
			PanicThreshold:   cs.cfg.threshold,
			OutlierDetection: cs.od != nil,
			TotalPanic:       st.loads.totalPanic,
			Warnings:         cs.warnings,
			Endpoints:        make([]DebugEndpoint, 0, len(cs.topo.hosts)),
		}
		for p, groups := range cs.topo.prios {
			n := 0
			for _, g := range groups {
				n += len(g.hosts)
			}
			dc.Priorities = append(dc.Priorities, DebugPriority{
				Priority: p, HealthyLoad: st.loads.healthy[p], DegradedLoad: st.loads.degraded[p],
				Panic: st.loads.panic[p], Hosts: n,
			})
		}
		for _, h := range cs.topo.hosts {
			e := h.ep.Load()
			de := DebugEndpoint{
				Address:            h.addr.String(),
				Locality:           e.Locality.String(),
				Priority:           h.priority,
				Weight:             h.weight,
				LocalityWeight:     h.localityWt,
				Health:             coarse(h),
				EDS:                verdict(h.flags, flagFailedEDS, flagDegradedEDS),
				Active:             verdict(h.flags, flagFailedActive, flagDegradedActive),
				Outlier:            verdict(h.flags, flagFailedOutlier, 0),
				Ejected:            h.flags&flagFailedOutlier != 0,
				EjectionMultiplier: h.backoff,
				EjectionCount:      h.ejections,
				ActiveConnections:  max(h.active.Load(), 0),
			}
			if de.Ejected && cs.od != nil {
				de.EjectedFor = now.Sub(h.lastEject).Truncate(time.Millisecond).String()
			}
			dc.Endpoints = append(dc.Endpoints, de)
		}
		out = append(out, dc)
	}
	slices.SortFunc(out, func(a, b DebugCluster) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func coarse(h *host) string {
	switch {
	case h.healthy():
		return "healthy"
	case h.degraded():
		return "degraded"
	}
	return "unhealthy"
}

func verdict(f, failed, degraded healthFlags) string {
	switch {
	case f&failed != 0:
		return "unhealthy"
	case degraded != 0 && f&degraded != 0:
		return "degraded"
	}
	return "healthy"
}

// ClusterStats are one cluster's counters and gauges, named after Envoy's
// cluster.<name>.* stats so the metrics layer can export them as is.
type ClusterStats struct {
	Name string
	// LBHealthyPanic counts picks made from a priority in panic
	// (lb_healthy_panic).
	LBHealthyPanic uint64
	// UpstreamCxNoneHealthy counts picks that found nothing routable
	// (upstream_cx_none_healthy).
	UpstreamCxNoneHealthy uint64
	// Membership gauges: membership_healthy, membership_degraded,
	// membership_total.
	MembershipHealthy, MembershipDegraded, MembershipTotal uint64
	// Outlier is outlier_detection.*.
	Outlier OutlierStats
}

// OutlierStats are the outlier_detection.* stats (SEMANTICS 3.5, OD-8).
type OutlierStats struct {
	EjectionsActive        uint64 // gauge
	EjectionsEnforcedTotal uint64
	EjectionsOverflow      uint64
	// EjectionsTotal is the deprecated ejections_total (and
	// ejections_consecutive_5xx): detections that passed the max-percent
	// check, enforced or not.
	EjectionsTotal                             uint64
	EjectionsEnforcedConsecutive5xx            uint64
	EjectionsDetectedConsecutive5xx            uint64
	EjectionsEnforcedConsecutiveGatewayFailure uint64
	EjectionsDetectedConsecutiveGatewayFailure uint64
	EjectionsEnforcedConsecutiveLocalOrigin    uint64
	EjectionsDetectedConsecutiveLocalOrigin    uint64
}

// Stats returns every cluster's counters, sorted by name.
func (b *Balancer) Stats() []ClusterStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := *b.clusters.Load()
	out := make([]ClusterStats, 0, len(m))
	for _, cs := range m {
		s := ClusterStats{
			Name:                  cs.name,
			LBHealthyPanic:        cs.panics.Load(),
			UpstreamCxNoneHealthy: cs.noneHealthy.Load(),
			MembershipTotal:       uint64(len(cs.topo.hosts)),
			Outlier: OutlierStats{
				EjectionsActive:                            cs.ostats.active,
				EjectionsEnforcedTotal:                     cs.ostats.enforcedTotal,
				EjectionsOverflow:                          cs.ostats.overflow,
				EjectionsTotal:                             cs.ostats.total,
				EjectionsEnforcedConsecutive5xx:            cs.ostats.enforced[eject5xx],
				EjectionsDetectedConsecutive5xx:            cs.ostats.detected[eject5xx],
				EjectionsEnforcedConsecutiveGatewayFailure: cs.ostats.enforced[ejectGateway],
				EjectionsDetectedConsecutiveGatewayFailure: cs.ostats.detected[ejectGateway],
				EjectionsEnforcedConsecutiveLocalOrigin:    cs.ostats.enforced[ejectLocalOrigin],
				EjectionsDetectedConsecutiveLocalOrigin:    cs.ostats.detected[ejectLocalOrigin],
			},
		}
		for _, h := range cs.topo.hosts {
			switch {
			case h.healthy():
				s.MembershipHealthy++
			case h.degraded():
				s.MembershipDegraded++
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b ClusterStats) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
