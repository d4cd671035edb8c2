package xds

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/eastwest-gw/eastwest/mesh"
)

// Type URLs of the resources the client subscribes to.
const (
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// entry is one accepted SNI-DNAT cluster.
type entry struct {
	name string
	hash uint64 // of the serialized resource, to skip unchanged ones
	info clusterInfo
	// Links kept current by reindex and applyAssignments so that snapshot
	// needs no map lookups.
	svc *mesh.Service
	cla *assignment

	// pub is the cluster last published for this entry, built from pubSvc
	// and pubCLA. It is published again while svc and cla are the same
	// (info never changes: a changed CDS resource is a new entry), because
	// the balancer recompiles only clusters that are not the very pointer
	// it already has. A published cluster is never written again.
	pub    *mesh.Cluster
	pubSvc *mesh.Service
	pubCLA *assignment
}

// published says whether e.pub still describes e.
func (e *entry) published() bool {
	return e.pub != nil && e.pubSvc == e.svc && e.pubCLA == e.cla
}

// assignment is one accepted ClusterLoadAssignment.
type assignment struct {
	hash uint64
	eps  []mesh.Endpoint
}

// state merges CDS and EDS responses into what the next snapshot holds. It
// is owned by the Run goroutine: no locks.
//
// CDS is state of the world: each response replaces the cluster set. EDS
// responses may name only some clusters (istiod sends only what changed):
// they are merged per cluster. A resource that fails to parse keeps its
// previous accepted value, as Envoy does.
type state struct {
	network string

	haveCDS  bool
	clusters map[string]*entry // by cluster name
	byHash   map[uint64]*entry // accepted clusters by resource hash
	ignored  map[uint64]bool   // non-SNI-DNAT or unsupported resources by hash
	rejected map[uint64]bool   // resources the last CDS response had rejected, by hash
	skipped  int               // unsupported SNI-DNAT clusters in the last CDS
	edsOf    map[string]string // EDS name -> cluster name
	edsNames []string          // sorted EDS subscription

	cla      map[string]*assignment // by EDS name
	claHash  map[uint64]string      // accepted CLA resource hash -> EDS name
	warming  map[string]bool        // EDS names with no CLA yet
	order    []*entry               // sorted by name
	services []*mesh.Service
	svcByHst map[string]*mesh.Service

	cdsVersion, edsVersion string
	seq                    uint64

	// pub is the last snapshot published. reshaped says the cluster set
	// (or a service) changed since: the next snapshot needs mesh.Build;
	// until then only endpoints changed and pub.Update is enough.
	pub      *mesh.Snapshot
	reshaped bool
}

func newState(network string) *state {
	return &state{
		network:  network,
		clusters: map[string]*entry{},
		byHash:   map[uint64]*entry{},
		ignored:  map[uint64]bool{},
		rejected: map[uint64]bool{},
		edsOf:    map[string]string{},
		cla:      map[string]*assignment{},
		claHash:  map[uint64]string{},
		warming:  map[string]bool{},
		svcByHst: map[string]*mesh.Service{},
	}
}

// applyClusters installs a CDS response. It returns whether the cluster set
// changed, whether the EDS subscription changed, and the joined errors of
// the resources it rejected (the response is then NACKed, but the valid
// clusters are kept).
func (s *state) applyClusters(version string, res []*anypb.Any) (changed, subChanged bool, err error) {
	var errs []error
	next := make(map[string]*entry, len(s.clusters))
	nextHash := make(map[uint64]*entry, len(s.byHash))
	nextIgnored := map[uint64]bool{}
	nextRejected := map[uint64]bool{}
	failed := map[string]bool{}
	skipped := 0
	decoded := decodeAll(res, func() func(*anypb.Any) decodedCluster { return s.decodeCluster })
	for i, d := range decoded {
		if d.reuse != nil && next[d.reuse.name] == nil {
			next[d.reuse.name], nextHash[d.hash] = d.reuse, d.reuse
			continue
		}
		if d.reuse == nil && d.err == nil && d.name == "" {
			nextIgnored[d.hash] = true // known non-SNI-DNAT resource
			continue
		}
		switch {
		case d.reuse != nil || next[d.name] != nil || failed[d.name]:
			errs = append(errs, fmt.Errorf("resource %d: cluster %q listed twice", i, d.name))
		case errors.Is(d.err, errNotSNIDNAT):
			nextIgnored[d.hash] = true
		case errors.Is(d.err, errUnsupported):
			nextIgnored[d.hash] = true
			skipped++
		case d.err != nil:
			errs = append(errs, fmt.Errorf("resource %d: %w", i, d.err))
			nextRejected[d.hash] = true
			if d.name == "" {
				continue
			}
			failed[d.name] = true
			// Keep what we had for that name: a bad update must not remove
			// a working cluster.
			if old := s.clusters[d.name]; old != nil {
				next[old.name], nextHash[old.hash] = old, old
			}
		default:
			e := &entry{name: d.name, hash: d.hash, info: d.info}
			next[e.name], nextHash[d.hash] = e, e
		}
	}
	first := !s.haveCDS
	s.haveCDS = true
	s.ignored, s.rejected, s.skipped = nextIgnored, nextRejected, skipped
	if len(errs) == 0 {
		s.cdsVersion = version
	}
	changed = len(next) != len(s.clusters)
	if !changed {
		for n, e := range next {
			if s.clusters[n] != e {
				changed = true
				break
			}
		}
	}
	s.clusters, s.byHash = next, nextHash
	if changed || first {
		changed = true
		subChanged = s.reindex()
	}
	return changed, subChanged, errors.Join(errs...)
}

// edsNamesAhead predicts, from a cheap scan, the EDS subscription that
// applyClusters will derive from a CDS response, so that the client can
// send it before decoding the clusters: the server then computes endpoints
// while the client decodes (for 20,000 clusters the decode takes tens of
// milliseconds, all of which used to pass before the EDS request left). It
// mirrors applyClusters: unchanged clusters keep their EDS name, a rejected
// resource keeps the cluster of that name. A new cluster that then fails
// validation is a wrong guess, corrected by one more request after the
// decode; rejected hashes are remembered so that a guess is not wrong twice.
func (s *state) edsNamesAhead(res []*anypb.Any) []string {
	names := make([]string, 0, len(res))
	for _, a := range res {
		if a.GetTypeUrl() != typeCluster {
			continue
		}
		h := xxhash.Sum64(a.GetValue())
		if e := s.byHash[h]; e != nil {
			if e.info.edsName != "" {
				names = append(names, e.info.edsName)
			}
			continue
		}
		if s.ignored[h] {
			continue
		}
		name, eds, ok := scanCluster(a.GetValue())
		if !ok {
			continue
		}
		_, err := parseClusterName(name)
		if errors.Is(err, errNotSNIDNAT) {
			continue
		}
		if err != nil || s.rejected[h] {
			if old := s.clusters[name]; old != nil && old.info.edsName != "" {
				names = append(names, old.info.edsName)
			}
			continue
		}
		if eds != "" {
			names = append(names, eds)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// reindex recomputes everything derived from the cluster set: order,
// services, EDS subscription, warming set; it drops CLAs of removed clusters.
func (s *state) reindex() (subChanged bool) {
	s.reshaped = true
	s.order = s.order[:0]
	edsOf := make(map[string]string, len(s.clusters))
	for _, e := range s.clusters {
		s.order = append(s.order, e)
		if e.info.edsName != "" {
			edsOf[e.info.edsName] = e.name
		}
	}
	slices.SortFunc(s.order, func(a, b *entry) int { return strings.Compare(a.name, b.name) })
	names := make([]string, 0, len(edsOf))
	for n := range edsOf {
		names = append(names, n)
	}
	slices.Sort(names)
	subChanged = !slices.Equal(names, s.edsNames)
	s.edsOf, s.edsNames = edsOf, names
	for n, a := range s.cla {
		if _, ok := edsOf[n]; !ok {
			delete(s.cla, n)
			delete(s.claHash, a.hash)
		}
	}
	clear(s.warming)
	for _, e := range s.order {
		e.cla = nil
		if e.info.edsName != "" {
			e.cla = s.cla[e.info.edsName]
			if e.cla == nil {
				s.warming[e.info.edsName] = true
			}
		}
	}
	s.rebuildServices()
	return subChanged
}

// rebuildServices derives one mesh.Service per host from the cluster names,
// reusing the previous *Service when nothing about it changed.
func (s *state) rebuildServices() {
	type acc struct {
		ns    string
		ports []uint16
	}
	hosts := map[string]*acc{}
	var order []string
	for _, e := range s.order {
		a := hosts[e.info.key.Host]
		if a == nil {
			a = &acc{ns: e.info.namespace}
			hosts[e.info.key.Host] = a
			order = append(order, e.info.key.Host)
		}
		if a.ns == "" {
			a.ns = e.info.namespace
		}
		if !slices.Contains(a.ports, e.info.key.Port) {
			a.ports = append(a.ports, e.info.key.Port)
		}
	}
	svcs := make([]*mesh.Service, 0, len(order))
	byHost := make(map[string]*mesh.Service, len(order))
	for _, h := range order {
		a := hosts[h]
		slices.Sort(a.ports)
		if a.ns == "" {
			a.ns = namespaceFromHost(h)
		}
		svc := s.svcByHst[h]
		if svc == nil || svc.Namespace != a.ns || !samePorts(svc.Ports, a.ports) {
			svc = &mesh.Service{Host: h, Namespace: a.ns, Exported: true}
			for _, p := range a.ports {
				// CDS does not carry the port name or Istio protocol; an
				// SNI-DNAT cluster is TLS passthrough, hence TCP.
				svc.Ports = append(svc.Ports, mesh.Port{Number: p, Protocol: "TCP"})
			}
		}
		svcs = append(svcs, svc)
		byHost[h] = svc
	}
	s.services, s.svcByHst = svcs, byHost
	for _, e := range s.order {
		e.svc = byHost[e.info.key.Host]
	}
}

func samePorts(have []mesh.Port, want []uint16) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		if have[i].Number != want[i] {
			return false
		}
	}
	return true
}

// applyAssignments merges an EDS response. CLAs for clusters the client did
// not subscribe to are ignored. It returns whether any endpoint set changed
// and the joined errors of rejected CLAs (kept at their previous value).
func (s *state) applyAssignments(version string, res []*anypb.Any) (changed bool, err error) {
	var errs []error
	decoded := decodeAll(res, func() func(*anypb.Any) decodedCLA {
		dec := newCLADecoder(s.network)
		return func(a *anypb.Any) decodedCLA { return s.decodeCLA(dec, a) }
	})
	for i, d := range decoded {
		switch {
		case d.err != nil:
			errs = append(errs, fmt.Errorf("resource %d: %w", i, d.err))
			continue
		case d.skip:
			continue
		}
		if old := s.cla[d.name]; old != nil {
			delete(s.claHash, old.hash)
		}
		a := &assignment{hash: d.hash, eps: d.eps}
		s.cla[d.name] = a
		s.claHash[d.hash] = d.name
		s.clusters[s.edsOf[d.name]].cla = a
		delete(s.warming, d.name)
		changed = true
	}
	if len(errs) == 0 {
		s.edsVersion = version
	}
	return changed, errors.Join(errs...)
}

// decodeCluster turns one CDS resource into clusterInfo, or finds it
// unchanged.
func (s *state) decodeCluster(a *anypb.Any) (d decodedCluster) {
	if a.GetTypeUrl() != typeCluster {
		d.err = fmt.Errorf("type %q, want %q", a.GetTypeUrl(), typeCluster)
		return d
	}
	d.hash = xxhash.Sum64(a.GetValue())
	if d.reuse = s.byHash[d.hash]; d.reuse != nil || s.ignored[d.hash] {
		return d
	}
	var c clusterv3.Cluster
	if err := proto.Unmarshal(a.GetValue(), &c); err != nil {
		d.err = err
		return d
	}
	d.name = c.GetName()
	d.info, d.err = translateCluster(&c, s.network)
	return d
}

// decodeCLA turns one EDS resource into endpoints: with dec when it can,
// else through proto.Unmarshal and translateEndpoints.
func (s *state) decodeCLA(dec *claDecoder, a *anypb.Any) (d decodedCLA) {
	if a.GetTypeUrl() != typeEndpoint {
		d.err = fmt.Errorf("type %q, want %q", a.GetTypeUrl(), typeEndpoint)
		return d
	}
	d.hash = xxhash.Sum64(a.GetValue())
	if _, ok := s.claHash[d.hash]; ok {
		d.skip = true // unchanged
		return d
	}
	var ok bool
	if d.name, d.eps, ok = dec.decode(a.GetValue()); ok {
		if _, ok := s.edsOf[d.name]; !ok {
			d.skip, d.eps = true, nil // not subscribed
		}
		return d
	}
	var cla endpointv3.ClusterLoadAssignment
	if err := proto.Unmarshal(a.GetValue(), &cla); err != nil {
		d.err = err
		return d
	}
	d.name = cla.GetClusterName()
	if _, ok := s.edsOf[d.name]; !ok {
		d.skip = true // not subscribed
		return d
	}
	d.eps, d.err = translateEndpoints(&cla, s.network)
	if d.err != nil {
		d.err = fmt.Errorf("endpoints of %q: %w", d.name, d.err)
	}
	return d
}

// removeAssignments handles delta EDS removals: the server says the
// cluster has no endpoints, so it is known and empty (no longer warming).
func (s *state) removeAssignments(names []string) (changed bool) {
	for _, n := range names {
		cn, ok := s.edsOf[n]
		if !ok {
			continue
		}
		if old := s.cla[n]; old != nil {
			if len(old.eps) == 0 {
				continue
			}
			delete(s.claHash, old.hash)
		}
		a := &assignment{}
		s.cla[n] = a
		s.clusters[cn].cla = a
		delete(s.warming, n)
		changed = true
	}
	return changed
}

type decodedCluster struct {
	hash  uint64
	reuse *entry // unchanged since the last response
	name  string
	info  clusterInfo
	err   error
}

type decodedCLA struct {
	hash uint64
	name string
	eps  []mesh.Endpoint
	skip bool
	err  error
}

// parallelMin is the response size from which decoding is spread over the
// CPUs: a full push of thousands of resources is mostly proto.Unmarshal.
const parallelMin = 256

// decodeAll runs a decoding function over every resource, in parallel for
// large responses. Each worker gets its own function from newF, so that it
// can keep state; the functions must only read shared state.
func decodeAll[T any](res []*anypb.Any, newF func() func(*anypb.Any) T) []T {
	out := make([]T, len(res))
	workers := min(runtime.GOMAXPROCS(0), len(res)/parallelMin+1)
	if workers <= 1 {
		f := newF()
		for i, a := range res {
			out[i] = f(a)
		}
		return out
	}
	var wg sync.WaitGroup
	chunk := (len(res) + workers - 1) / workers
	for lo := 0; lo < len(res); lo += chunk {
		hi := min(lo+chunk, len(res))
		wg.Go(func() {
			f := newF()
			for i := lo; i < hi; i++ {
				out[i] = f(res[i])
			}
		})
	}
	wg.Wait()
	return out
}

// ready says whether every cluster has its endpoints: a snapshot built
// earlier would route new clusters to nothing.
func (s *state) ready() bool { return s.haveCDS && len(s.warming) == 0 }

// snapshot builds the immutable snapshot of the current state. Clusters
// whose resources did not change since the last snapshot are the same
// *mesh.Cluster values (never written once published); the others are
// fresh, from one slab allocation. When only endpoints changed the snapshot
// is the last one with those clusters replaced (Snapshot.Update, which
// shares the rest); otherwise it is built anew with mesh.Build.
func (s *state) snapshot() (*mesh.Snapshot, error) {
	s.seq++
	version := s.cdsVersion + "/" + s.edsVersion + "/" + strconv.FormatUint(s.seq, 10)
	fresh := 0
	for _, e := range s.order {
		if !e.published() {
			fresh++
		}
	}
	slab := make([]mesh.Cluster, fresh)
	built := make([]*entry, 0, fresh)
	changed := make([]*mesh.Cluster, 0, fresh)
	for _, e := range s.order {
		if e.published() {
			continue
		}
		c := &slab[len(changed)]
		c.Key = e.info.key
		c.Name = e.name
		c.Service = e.svc
		c.Policy = e.info.policy
		if e.info.edsName == "" {
			c.Endpoints = e.info.static
		} else if e.cla != nil {
			c.Endpoints = e.cla.eps
		}
		built = append(built, e)
		changed = append(changed, c)
	}
	var snap *mesh.Snapshot
	if s.pub != nil && !s.reshaped {
		// Only fails if the set was changed after all: Build then says why.
		snap, _ = s.pub.Update(version, changed...)
	}
	if snap == nil {
		list := make([]*mesh.Cluster, len(s.order))
		k := 0
		for i, e := range s.order {
			if e.published() {
				list[i] = e.pub
			} else {
				list[i] = changed[k]
				k++
			}
		}
		var err error
		snap, err = mesh.Build(mesh.Spec{Version: version, Services: s.services, Clusters: list})
		if err != nil {
			return nil, fmt.Errorf("build snapshot: %w", err)
		}
	}
	for i, e := range built {
		e.pub, e.pubSvc, e.pubCLA = changed[i], e.svc, e.cla
	}
	s.pub, s.reshaped = snap, false
	return snap, nil
}
