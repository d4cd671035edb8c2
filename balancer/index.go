package balancer

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/eastwest-gw/eastwest/mesh"
)

// addrIndex maps an endpoint address to the clusters that have it, for
// active health verdicts (SetHealthy, SetDegraded). It is kept across
// updates and changed only for the clusters an Update touches, so a
// one-cluster EDS change costs that cluster's endpoints, not the mesh's.
//
// Most addresses belong to one cluster: they take one entry in one and no
// slice. Only addresses shared by several clusters (subsets, services
// selecting the same pods on the same port) have their second and later
// clusters in more. Used under Balancer.mu.
type addrIndex struct {
	one  map[netip.AddrPort]*clusterState
	more map[netip.AddrPort][]*clusterState
}

func newAddrIndex() addrIndex {
	return addrIndex{one: map[netip.AddrPort]*clusterState{}, more: map[netip.AddrPort][]*clusterState{}}
}

// add records that cs has a. A pair is added at most once: a topology's
// hosts are unique by address.
func (x *addrIndex) add(a netip.AddrPort, cs *clusterState) {
	if _, ok := x.one[a]; !ok {
		x.one[a] = cs
		return
	}
	x.more[a] = append(x.more[a], cs)
}

// remove forgets that cs has a and says whether no cluster has a any more.
func (x *addrIndex) remove(a netip.AddrPort, cs *clusterState) (last bool) {
	first, ok := x.one[a]
	if !ok {
		return true
	}
	more := x.more[a]
	switch i := slices.Index(more, cs); {
	case first == cs && len(more) == 0:
		delete(x.one, a)
		return true
	case first == cs:
		x.one[a] = more[len(more)-1]
		more[len(more)-1] = nil
		more = more[:len(more)-1]
	case i >= 0:
		more = slices.Delete(more, i, i+1)
	default:
		return false
	}
	if len(more) == 0 {
		delete(x.more, a)
	} else {
		x.more[a] = more
	}
	return false
}

// has says whether any cluster has a.
func (x *addrIndex) has(a netip.AddrPort) bool {
	_, ok := x.one[a]
	return ok
}

// clusters appends the clusters that have a to buf, sorted by name: the
// order in which the index rebuilt on every Update used to list them, so
// that health changes of a shared address are applied (and logged) in the
// same order as before.
func (x *addrIndex) clusters(a netip.AddrPort, buf []*clusterState) []*clusterState {
	first, ok := x.one[a]
	if !ok {
		return buf
	}
	buf = append(buf, first)
	if more := x.more[a]; len(more) > 0 {
		buf = append(buf, more...)
		slices.SortFunc(buf, func(p, q *clusterState) int { return strings.Compare(p.name, q.name) })
	}
	return buf
}

// reindex moves cs's entries from the addresses of was (its topology
// before configure, nil for a new cluster) to those of its current one.
// Addresses no cluster has any more are appended to gone.
func (x *addrIndex) reindex(cs *clusterState, was *topology, gone []netip.AddrPort) []netip.AddrPort {
	now := cs.topo
	if was != nil {
		for _, h := range was.hosts {
			if now == nil || now.byAddr[h.addr] == nil {
				if x.remove(h.addr, cs) {
					gone = append(gone, h.addr)
				}
			}
		}
	}
	if now != nil {
		for _, h := range now.hosts {
			if was == nil || was.byAddr[h.addr] == nil {
				x.add(h.addr, cs)
			}
		}
	}
	return gone
}

// change is one cluster an Update must configure: cs is nil for a cluster
// the balancer does not have yet.
type change struct {
	cs *clusterState
	c  *mesh.Cluster
}

// clusterDiff is what an Update changes, found by diffClusters.
type clusterDiff struct {
	// touched are the new and changed clusters, in name order.
	touched []change
	// added counts the touched clusters without a state (cs nil).
	added int
	// removed are the states of clusters that are gone, in name order.
	removed []*clusterState
	// kept is the list with duplicate names dropped (the first of each
	// name is kept); nil when list has none, so the snapshot's own slice is
	// kept without a copy.
	kept []*mesh.Cluster
}

// diffClusters compares prev, the list installed by the last Update (sorted
// by name, no duplicate names), with list, the new snapshot's clusters.
// mesh.Snapshot lists clusters sorted by name, so one merge walk finds what
// changed; a cluster is unchanged when it is the same *mesh.Cluster, and
// that is decided by a pointer comparison, so an update of one cluster of
// thousands compares no names but that one's. ok is false when list is not
// sorted by name; nothing is changed then.
func diffClusters(prev, list []*mesh.Cluster, states map[string]*clusterState) (d clusterDiff, ok bool) {
	i := 0
	// lastC is the last cluster kept: its name is read only when a
	// cluster differs, so unchanged ones are not even dereferenced.
	var lastC *mesh.Cluster
	for j, c := range list {
		if i < len(prev) && prev[i] == c {
			// Same pointer, same name: prev is sorted and unique, so its
			// name is greater than lastC's.
			i++
			lastC = c
			if d.kept != nil {
				d.kept = append(d.kept, c)
			}
			continue
		}
		name, last := clusterName(c), "" // no cluster name is empty
		if lastC != nil {
			last = clusterName(lastC)
		}
		switch cmp := strings.Compare(name, last); {
		case cmp < 0:
			return clusterDiff{}, false
		case cmp == 0:
			// A duplicate name: the first in the list wins, as it always has.
			if d.kept == nil {
				d.kept = slices.Clone(list[:j])
			}
			continue
		}
		for i < len(prev) && clusterName(prev[i]) < name {
			d.remove(states[clusterName(prev[i])])
			i++
		}
		switch {
		case i < len(prev) && prev[i] == c:
			i++
		case i < len(prev) && clusterName(prev[i]) == name:
			i++
			cs := states[name]
			if cs == nil {
				d.added++
			}
			d.touched = append(d.touched, change{cs: cs, c: c})
		default:
			d.touched = append(d.touched, change{c: c})
			d.added++
		}
		lastC = c
		if d.kept != nil {
			d.kept = append(d.kept, c)
		}
	}
	for ; i < len(prev); i++ {
		d.remove(states[clusterName(prev[i])])
	}
	return d, true
}

func (d *clusterDiff) remove(cs *clusterState) {
	if cs != nil {
		d.removed = append(d.removed, cs)
	}
}
