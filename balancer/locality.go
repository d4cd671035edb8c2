package balancer

import (
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/eastwest-gw/eastwest/mesh"
)

// This file reproduces Istio's locality settings -> Envoy priorities and
// locality weights (pilot/pkg/networking/core/loadbalancer/loadbalancer.go,
// SEMANTICS 2.6, LB-7..LB-9), computed for the gateway's own locality and
// labels the way istiod computes them for a proxy.

// Label keys Istio puts on endpoints and proxies.
const (
	labelRegion  = "topology.kubernetes.io/region"
	labelZone    = "topology.kubernetes.io/zone"
	labelSubzone = "topology.istio.io/subzone"
	labelNetwork = "topology.istio.io/network"
)

// Mode is the locality mode in force for a cluster (LB-10).
type Mode string

// Locality modes.
const (
	// ModeNoLocality: locality LB is off (disabled, the gateway has no
	// locality, or the mesh default applies without outlier detection); all
	// endpoints share one priority and the host policy alone decides.
	ModeNoLocality Mode = "no-locality"
	// ModeFailover: priorities from locality, failover or failoverPriority
	// (or as sent by the source) are in force.
	ModeFailover Mode = "failover"
	// ModeFailoverInactive: failover or failoverPriority is configured but
	// the cluster has no outlierDetection, so Istio does not apply it.
	ModeFailoverInactive Mode = "failover-inactive"
	// ModeDistribute: localityLbSetting.distribute weights are in force.
	ModeDistribute Mode = "distribute"
)

// group is one LocalityLbEndpoints: endpoints of one locality at one
// priority, with the locality's load-balancing weight.
type group struct {
	locality mesh.Locality
	priority uint32
	weight   uint32
	eps      []int // indexes into the cluster's Endpoints
}

// lbPriority is util.LbPriority: 0 same region/zone/subzone, 1 same
// region/zone, 2 same region, 3 elsewhere.
func lbPriority(proxy, ep mesh.Locality) uint32 {
	if proxy.Region == ep.Region {
		if proxy.Zone == ep.Zone {
			if proxy.Subzone == ep.Subzone {
				return 0
			}
			return 1
		}
		return 2
	}
	return 3
}

// localityMatch is util.LocalityMatch: the rule's region must equal the
// locality's or be "*"; an empty or "*" zone or subzone matches anything.
func localityMatch(l mesh.Locality, rule string) bool {
	r, z, s := splitLocality(rule)
	return (r == "*" || l.Region == r) &&
		(z == "*" || z == "" || l.Zone == z) &&
		(s == "*" || s == "" || l.Subzone == s)
}

func splitLocality(s string) (region, zone, subzone string) {
	items := strings.Split(s, "/")
	switch len(items) {
	case 1:
		return items[0], "", ""
	case 2:
		return items[0], items[1], ""
	default:
		return items[0], items[1], items[2]
	}
}

// applyLocalityFailover is Istio's applyLocalityFailover: per group,
// priority = existing*5 + LbPriority, with 4 for regions other than the first
// failover rule's "to" whose "from" is the proxy's region; then compaction.
func applyLocalityFailover(proxy mesh.Locality, groups []group, failover []mesh.Failover) {
	for i := range groups {
		p := lbPriority(proxy, groups[i].locality)
		if p == 3 {
			for _, f := range failover {
				if f.From == proxy.Region {
					if groups[i].locality.Region != f.To {
						p = 4
					}
					break
				}
			}
		}
		groups[i].priority = groups[i].priority*5 + p
	}
	compactPriorities(groups)
}

// compactPriorities renumbers the distinct priorities 0..N without gaps,
// keeping their order ("should range from 0 to N without skipping").
func compactPriorities(groups []group) {
	var distinct []uint32
	for _, g := range groups {
		distinct = append(distinct, g.priority)
	}
	slices.Sort(distinct)
	distinct = slices.Compact(distinct)
	for i := range groups {
		idx, _ := slices.BinarySearch(distinct, groups[i].priority)
		groups[i].priority = uint32(idx)
	}
}

// failoverLabels splits failoverPriority entries into the ordered label keys
// and the key=value overrides.
func failoverLabels(entries []string) ([]string, map[string]string) {
	keys := make([]string, 0, len(entries))
	overrides := map[string]string{}
	for _, e := range entries {
		parts := strings.Split(e, "=")
		keys = append(keys, parts[0])
		if len(parts) == 2 {
			overrides[parts[0]] = parts[1]
		}
	}
	return keys, overrides
}

// failoverPriorityOf is the per-endpoint part of
// applyFailoverPriorityPerLocality: the first mismatching label at index j
// gives N-j; a mismatching network as the first label does not stop the walk
// but adds N, so other-network endpoints sort after same-network ones.
func failoverPriorityOf(keys []string, overrides, proxyLabels, epLabels map[string]string) uint32 {
	n := uint32(len(keys))
	var adjust uint32
	for j, k := range keys {
		want, ok := overrides[k]
		if !ok {
			want = proxyLabels[k]
		}
		if want != epLabels[k] {
			if j == 0 && k == labelNetwork {
				adjust = n
				continue
			}
			return n - uint32(j) + adjust
		}
	}
	return adjust
}

// applyFailoverPriorities is Istio's applyFailoverPriorities: each group is
// split by per-endpoint label priority (each part weighing the sum of its
// endpoints' weights), then all priorities are compacted. With no proxy
// labels Istio leaves the groups alone.
func applyFailoverPriorities(groups []group, eps []mesh.Endpoint, epLabels []map[string]string,
	proxyLabels map[string]string, entries []string,
) []group {
	if len(proxyLabels) == 0 || len(groups) == 0 {
		return groups
	}
	keys, overrides := failoverLabels(entries)
	var out []group
	for _, g := range groups {
		byPrio := map[uint32][]int{}
		for _, i := range g.eps {
			p := failoverPriorityOf(keys, overrides, proxyLabels, epLabels[i])
			byPrio[p] = append(byPrio[p], i)
		}
		for _, p := range slices.Sorted(maps.Keys(byPrio)) {
			ng := group{locality: g.locality, priority: p, eps: byPrio[p]}
			for _, i := range ng.eps {
				ng.weight += epWeight(eps[i])
			}
			out = append(out, ng)
		}
	}
	compactPriorities(out)
	return out
}

// applyLocalityWeights is Istio's applyLocalityWeights (distribute): the
// first rule whose "from" matches the proxy sets, for each "to" pattern,
// ceil(orig*to/sum(orig)) on the not yet matched groups that match it; the
// endpoints of groups that match no "to" are removed (istio/istio#33470).
// Istio walks the "to" map in Go's random order; we walk it sorted so the
// result is deterministic when patterns overlap. It returns the groups kept
// and the localities dropped although they had endpoints.
func applyLocalityWeights(proxy mesh.Locality, groups []group, distribute []mesh.Distribute) (kept []group, dropped []string) {
	for _, d := range distribute {
		if !localityMatch(proxy, d.From) {
			continue
		}
		matched := make([]bool, len(groups))
		for _, pattern := range slices.Sorted(maps.Keys(d.To)) {
			w := d.To[pattern]
			var idx []int
			var total uint32
			for i := range groups {
				if !matched[i] && localityMatch(groups[i].locality, pattern) {
					matched[i] = true
					idx = append(idx, i)
					total += max(groups[i].weight, 1)
				}
			}
			for _, i := range idx {
				dest := float64(max(groups[i].weight, 1)*w) / float64(total)
				// Istio only sets the weight when it is positive: a "to"
				// weight of 0 leaves the original weight in place.
				if dest > 0 {
					groups[i].weight = uint32(math.Ceil(dest))
				}
			}
		}
		for i := range groups {
			if matched[i] {
				kept = append(kept, groups[i])
			} else if len(groups[i].eps) > 0 {
				dropped = append(dropped, groups[i].locality.String())
			}
		}
		return kept, dropped
	}
	return groups, nil
}

// epWeight is an endpoint's load-balancing weight; 0 means 1.
func epWeight(e mesh.Endpoint) uint32 {
	return max(e.Weight, 1)
}

// endpointLabels returns e's labels augmented with the topology labels Istio
// adds to every endpoint (region, zone, subzone, network), without
// overriding labels that are already there.
func endpointLabels(e mesh.Endpoint) map[string]string {
	out := make(map[string]string, len(e.Labels)+4)
	maps.Copy(out, e.Labels)
	setIfAbsent(out, labelRegion, e.Locality.Region)
	setIfAbsent(out, labelZone, e.Locality.Zone)
	setIfAbsent(out, labelSubzone, e.Locality.Subzone)
	setIfAbsent(out, labelNetwork, e.Network)
	return out
}

func setIfAbsent(m map[string]string, k, v string) {
	if _, ok := m[k]; !ok && v != "" {
		m[k] = v
	}
}

// localityPlan is the outcome of the Istio locality algorithms for one
// cluster: the groups with their priorities and weights, whether Envoy's
// locality-weighted LB would be on, the mode, and warnings (LB-10).
type localityPlan struct {
	groups   []group
	weighted bool
	mode     Mode
	warnings []string
}

// planLocality groups c's endpoints by locality and applies the effective
// locality setting for a gateway at gw with labels gwLabels.
//
// Endpoint priorities set by the source (any non-zero Endpoint.Priority) are
// used as they are (LB-9): istiod already computed them for this proxy.
func planLocality(c *mesh.Cluster, gw mesh.Locality, gwLabels map[string]string) localityPlan {
	eps := c.Endpoints
	sourcePrio := false
	for _, e := range eps {
		if e.Priority != 0 {
			sourcePrio = true
			break
		}
	}
	// LocalityLbEndpoints: one per (priority, locality) in first-seen order.
	type gk struct {
		prio uint32
		loc  mesh.Locality
	}
	index := map[gk]int{}
	var groups []group
	for i, e := range eps {
		k := gk{loc: e.Locality}
		if sourcePrio {
			k.prio = e.Priority
		}
		gi, ok := index[k]
		if !ok {
			gi = len(groups)
			index[k] = gi
			groups = append(groups, group{locality: e.Locality, priority: k.prio})
		}
		groups[gi].eps = append(groups[gi].eps, i)
		groups[gi].weight += epWeight(e)
	}

	setting := effectiveLocalitySetting(c)
	od := c.Policy.OutlierDetection != nil
	plan := localityPlan{groups: groups, mode: ModeNoLocality}
	gwKnown := gw != (mesh.Locality{})
	if setting != nil && gwKnown {
		// LocalityLBSettings.ApplyToCluster: locality_weighted_lb_config only
		// with distribute, or failover enabled with an explicit list.
		plan.weighted = len(setting.Distribute) > 0 ||
			(od && (len(setting.Failover) > 0 || len(setting.FailoverPriority) > 0))
	}
	if sourcePrio {
		plan.mode = ModeFailover
		return plan
	}
	if setting == nil || !gwKnown {
		return plan
	}
	switch {
	case len(setting.Distribute) > 0:
		plan.mode = ModeDistribute
		var dropped []string
		plan.groups, dropped = applyLocalityWeights(gw, groups, setting.Distribute)
		if len(dropped) > 0 {
			plan.warnings = append(plan.warnings, "distribute drops localities that have endpoints: "+
				strings.Join(dropped, ", ")+"; they never receive traffic, not even on failure (istio/istio#33470)")
		}
	case od:
		plan.mode = ModeFailover
		if len(setting.FailoverPriority) > 0 {
			labels := make([]map[string]string, len(eps))
			for i, e := range eps {
				labels[i] = endpointLabels(e)
			}
			plan.groups = applyFailoverPriorities(groups, eps, labels, gwLabels, setting.FailoverPriority)
			if len(setting.Failover) > 0 {
				applyLocalityFailover(gw, plan.groups, setting.Failover)
			}
		} else {
			applyLocalityFailover(gw, plan.groups, setting.Failover)
		}
	default:
		if len(setting.Failover) > 0 || len(setting.FailoverPriority) > 0 {
			plan.mode = ModeFailoverInactive
			plan.warnings = append(plan.warnings, "locality failover is configured but the cluster has no "+
				"outlierDetection: Istio does not apply it, traffic never fails over")
		}
	}
	return plan
}

// effectiveLocalitySetting resolves the DestinationRule's localityLbSetting
// against the mesh default (enabled, no lists). enabled: false turns locality
// LB off (nil).
func effectiveLocalitySetting(c *mesh.Cluster) *mesh.LocalityLB {
	l := c.Policy.LoadBalancer.Locality
	if l == nil {
		return &mesh.LocalityLB{}
	}
	if l.Enabled != nil && !*l.Enabled {
		return nil
	}
	return l
}
