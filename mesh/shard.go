package mesh

import (
	"hash/maphash"
	"maps"
)

// shards splits a snapshot's clusters so that an update of one cluster
// copies one shard (tens of entries at 20,000 clusters) instead of the whole
// map: the EDS update of one cluster must stay cheap at any mesh size.
const shards = 256

var shardSeed = maphash.MakeSeed()

// shardedClusters is a map from Key to cluster in shards. A published
// snapshot's shards are never written; Update copies the ones it changes.
type shardedClusters struct {
	m [shards]map[Key]*Cluster
}

func newShardedClusters(n int) shardedClusters {
	var s shardedClusters
	for i := range s.m {
		s.m[i] = make(map[Key]*Cluster, n/shards+1)
	}
	return s
}

func shardOf(k Key) int {
	return int(maphash.Comparable(shardSeed, k) % shards)
}

func (s *shardedClusters) get(k Key) (*Cluster, bool) {
	c, ok := s.m[shardOf(k)][k]
	return c, ok
}

// set writes into a shard; only for a snapshot under construction.
func (s *shardedClusters) set(k Key, c *Cluster) { s.m[shardOf(k)][k] = c }

// shallowCopy shares every shard with s; replace copies a shard before its
// first write.
func (s *shardedClusters) shallowCopy() shardedClusters {
	return shardedClusters{m: s.m}
}

// replace sets k in a copy of its shard, leaving the shard s shares with
// its parent snapshot untouched. Repeated replaces into one shard copy it
// each time; updates name few clusters, so that stays cheap.
func (s *shardedClusters) replace(k Key, c *Cluster) {
	i := shardOf(k)
	m := maps.Clone(s.m[i])
	m[k] = c
	s.m[i] = m
}
