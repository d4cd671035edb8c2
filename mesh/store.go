package mesh

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

func sortClusters(list []*Cluster) {
	slices.SortFunc(list, func(a, b *Cluster) int { return strings.Compare(a.Name, b.Name) })
}

// Store holds the current Snapshot. Load is wait-free; Swap replaces the
// snapshot for new connections only, connections in flight keep what they
// loaded.
type Store struct {
	cur atomic.Pointer[Snapshot]

	mu   sync.Mutex
	subs []func(*Snapshot)
}

// NewStore returns a Store holding snap.
func NewStore(snap *Snapshot) *Store {
	s := &Store{}
	s.cur.Store(snap)
	return s
}

// Load returns the current snapshot.
func (s *Store) Load() *Snapshot { return s.cur.Load() }

// Swap installs snap and tells every subscriber, in subscription order,
// outside any lock held by the connection path.
func (s *Store) Swap(snap *Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.Store(snap)
	for _, f := range s.subs {
		f(snap)
	}
}

// Subscribe calls f with the current snapshot now and with every later one.
// Calls are serialized.
func (s *Store) Subscribe(f func(*Snapshot)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, f)
	f(s.cur.Load())
}
