package balancer

import (
	"math"
	"net/netip"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Consistent hashing by source IP (SEMANTICS 5, HS-2): Envoy's Ketama ring
// (RingHashLoadBalancer) and Maglev table (MaglevTable), both keyed with
// xxHash64 of the host's "ip:port", and the source key with xxHash64 of the
// client IP's text form, as tcp_proxy's source_ip hash policy does.
//
// Cross-network clients usually arrive SNAT'd by a cloud load balancer, so
// unless PROXY protocol carries the real source the key is coarse: every
// client behind one NAT address lands on the same host.

// hashAddr hashes an IP's text form without allocating.
func hashAddr(a netip.Addr) uint64 {
	var buf [64]byte
	return xxhash.Sum64(a.Unmap().AppendTo(buf[:0]))
}

// hashTable maps a key to a host; attempt > 0 asks for an alternative, as a
// retry host predicate does.
type hashTable interface {
	lookup(key, attempt uint64) *host
}

// buildTable builds a priority's table over the hosts it routes to: all of
// them in panic, else the healthy ones, else the degraded ones.
func buildTable(groups []tgroup, panic bool, cfg clusterConfig) hashTable {
	pickHosts := func(g tgroup) []*host {
		var out []*host
		for _, h := range g.hosts {
			if panic || h.healthy() {
				out = append(out, h)
			}
		}
		return out
	}
	sets := make([][]*host, len(groups))
	n := 0
	for i, g := range groups {
		sets[i] = pickHosts(g)
		n += len(sets[i])
	}
	if n == 0 && !panic {
		for i, g := range groups {
			sets[i] = nil
			for _, h := range g.hosts {
				if h.degraded() {
					sets[i] = append(sets[i], h)
				}
			}
			n += len(sets[i])
		}
	}
	if n == 0 {
		return nil
	}
	hosts, weights := normalizeWeights(groups, sets, cfg.weighted)
	if len(hosts) == 0 {
		return nil
	}
	if cfg.policy == policyMaglev {
		return buildMaglev(hosts, weights, cfg.tableSize)
	}
	return buildRing(hosts, weights, cfg.minRing)
}

// normalizeWeights is ThreadAwareLoadBalancerBase's normalizeWeights: host
// weights summing to 1, scaled by the locality's share with
// locality-weighted LB.
func normalizeWeights(groups []tgroup, sets [][]*host, weighted bool) ([]*host, []float64) {
	var hosts []*host
	var weights []float64
	if !weighted {
		var sum float64
		for _, s := range sets {
			for _, h := range s {
				sum += float64(h.weight)
			}
		}
		for _, s := range sets {
			for _, h := range s {
				hosts = append(hosts, h)
				weights = append(weights, float64(h.weight)/sum)
			}
		}
		return hosts, weights
	}
	var locSum float64
	for i, g := range groups {
		if len(sets[i]) > 0 {
			locSum += float64(g.weight)
		}
	}
	if locSum == 0 {
		return nil, nil
	}
	for i, g := range groups {
		if len(sets[i]) == 0 || g.weight == 0 {
			continue
		}
		var sum float64
		for _, h := range sets[i] {
			sum += float64(h.weight)
		}
		for _, h := range sets[i] {
			hosts = append(hosts, h)
			weights = append(weights, float64(h.weight)/sum*float64(g.weight)/locSum)
		}
	}
	return hosts, weights
}

// ring is a Ketama ring sorted by hash.
type ring struct {
	hashes []uint64
	hosts  []*host
}

func buildRing(hosts []*host, weights []float64, minRing uint64) *ring {
	minW := slices.Min(weights)
	scale := min(math.Ceil(minW*float64(minRing))/minW, float64(maxRing))
	type entry struct {
		hash uint64
		h    *host
	}
	entries := make([]entry, 0, int(math.Ceil(scale)))
	var current, target float64
	for i, h := range hosts {
		prefix := h.addr.String() + "_"
		target += scale * weights[i]
		for k := 0; current < target; k++ {
			entries = append(entries, entry{xxhash.Sum64String(prefix + strconv.Itoa(k)), h})
			current++
		}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	r := &ring{hashes: make([]uint64, len(entries)), hosts: make([]*host, len(entries))}
	for i, e := range entries {
		r.hashes[i], r.hosts[i] = e.hash, e.h
	}
	return r
}

// lookup returns the first entry clockwise of key (wrapping), moved on by
// attempt entries for a retry.
func (r *ring) lookup(key, attempt uint64) *host {
	n := len(r.hashes)
	i, _ := slices.BinarySearch(r.hashes, key)
	if i == n {
		i = 0
	}
	if attempt > 0 {
		i = int((uint64(i) + attempt) % uint64(n))
	}
	return r.hosts[i]
}

// maglev is a Maglev lookup table of host indexes.
type maglev struct {
	table []int32
	hosts []*host
}

// buildMaglev fills a table of size m (a prime) by the paper's permutation
// (offset, skip from two xxHash64 seeds), each host claiming slots at a
// rate proportional to its weight, as Envoy's weighted MaglevTable.
func buildMaglev(hosts []*host, weights []float64, m uint64) *maglev {
	type entry struct {
		offset, skip, next uint64
		weight, target     float64
	}
	maxW := slices.Max(weights)
	entries := make([]entry, len(hosts))
	for i, h := range hosts {
		key := []byte(h.addr.String())
		d := xxhash.NewWithSeed(1)
		_, _ = d.Write(key)
		entries[i] = entry{offset: xxhash.Sum64(key) % m, skip: d.Sum64()%(m-1) + 1, weight: weights[i]}
	}
	mg := &maglev{table: make([]int32, m), hosts: hosts}
	for i := range mg.table {
		mg.table[i] = -1
	}
	filled := uint64(0)
	for iter := 1.0; filled < m; iter++ {
		for i := range entries {
			if filled >= m {
				break
			}
			e := &entries[i]
			if iter*e.weight < e.target {
				continue
			}
			e.target += maxW
			c := (e.offset + e.skip*e.next) % m
			for mg.table[c] >= 0 {
				e.next++
				c = (e.offset + e.skip*e.next) % m
			}
			mg.table[c] = int32(i)
			e.next++
			filled++
		}
	}
	return mg
}

func (mg *maglev) lookup(key, attempt uint64) *host {
	if attempt > 0 {
		// Envoy flips most bits of the hash for a retry so the alternative
		// lands far away in the table.
		key ^= ^uint64(0) - attempt + 1
	}
	return mg.hosts[mg.table[key%uint64(len(mg.table))]]
}
