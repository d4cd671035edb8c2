package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
)

// serviceIndex indexes EndpointSlices by "namespace/service".
const serviceIndex = "service"

// Stats is a point-in-time view of the source for metrics and readiness.
type Stats struct {
	// Synced is true once every cache has synced and the first snapshot
	// was handed to apply.
	Synced bool
	// Version is the version of the last snapshot handed to apply.
	Version string
	// Snapshots counts snapshots handed to apply; Builds counts rebuilds,
	// including those that found nothing changed and published nothing.
	Snapshots, Builds uint64
	// Events counts informer notifications (adds, updates, deletes).
	Events uint64
	// WatchErrors counts failed lists and watches (RBAC, API server down);
	// LastWatchError is the last one. The informers retry with backoff.
	WatchErrors    uint64
	LastWatchError string
	// BuildErrors counts snapshots mesh.Build rejected; the previous
	// snapshot stays in force.
	BuildErrors uint64
	// Services, Clusters and Endpoints describe the last snapshot;
	// SkippedPorts counts the UDP and SCTP service ports left out.
	Services, Clusters, Endpoints, SkippedPorts int
	// LastBuild is how long the last rebuild took.
	LastBuild time.Duration
	// DestinationRulesWatched is true once the DestinationRule and Pod
	// caches synced: the CRD is installed and the RBAC allows them.
	DestinationRulesWatched bool
	// DestinationRules counts the rules that apply to the gateway;
	// InvalidDestinationRules those whose current version does not
	// compile (the last valid version, if any, stays in force).
	DestinationRules, InvalidDestinationRules int
	// DestinationRuleErrors counts rejected rule versions, each logged.
	DestinationRuleErrors uint64
}

// scope is the informers of one watched namespace ("" for all).
type scope struct {
	services cache.SharedIndexInformer
	slices   cache.SharedIndexInformer
	svcs     listerscorev1.ServiceLister
}

// Source watches Services, EndpointSlices, Nodes, (with NamespaceLabels)
// Namespaces and (with Istio's CRD) DestinationRules and Pods, and
// publishes mesh snapshots built from them.
type Source struct {
	client kubernetes.Interface
	dyn    dynamic.Interface // nil: DestinationRules are not read
	o      Options
	optErr error
	apply  func(*mesh.Snapshot)
	log    *slog.Logger
	tr     translator
	nsSel  labels.Selector // nil without NamespaceLabels

	running sync.Mutex // one Run at a time: the entries have a single owner

	// Set up by Run before the informers start, then read-only.
	scopes     map[string]*scope
	nodes      listerscorev1.NodeLister
	namespaces listerscorev1.NamespaceLister

	// kick wakes the build loop; capacity 1, senders never block.
	kick chan struct{}

	// DestinationRules: the informers once their caches synced, the
	// options their compiler gets, the check interval while the CRD is
	// absent, and the goroutine that waits for it.
	rw       atomic.Pointer[ruleWatch]
	ruleOpts istioyaml.Options
	crdPoll  time.Duration
	bg       sync.WaitGroup

	mu         sync.Mutex
	dirty      map[string]struct{} // "namespace/name" of services to rebuild
	allDirty   bool                // a node or namespace changed: rebuild all
	rulesDirty bool                // a DestinationRule changed: recompile
	stats      Stats

	// Owned by the build goroutine.
	entries  map[string]*entry
	seq      uint64
	compiled map[string]*compiledRule // by "namespace/name"
	rules    *ruleIndex               // nil without DestinationRules
}

// New returns a source; nothing happens until Run. apply is called from
// Run's goroutine with each new snapshot, typically store.Swap. Invalid
// options are reported by Run. DestinationRules are read only when client
// is a *Client with a dynamic client (as NewClient returns).
func New(client kubernetes.Interface, o Options, apply func(*mesh.Snapshot)) *Source {
	po, err := o.populate()
	s := &Source{
		client: client, o: po, optErr: err, apply: apply, log: po.Logger,
		tr:       translator{domain: po.ClusterDomain, gatewayNS: po.GatewayNamespace, network: po.Network},
		kick:     make(chan struct{}, 1),
		dirty:    map[string]struct{}{},
		entries:  map[string]*entry{},
		compiled: map[string]*compiledRule{},
		crdPoll:  DefaultCRDPoll,
		ruleOpts: istioyaml.Options{Network: po.Network, Namespace: po.GatewayNamespace, ClusterDomain: po.ClusterDomain},
	}
	if c, ok := client.(*Client); ok {
		s.client, s.dyn = c.Interface, c.Dynamic
		if c.Interface == nil {
			s.client = nil
		}
	}
	if len(po.NamespaceLabels) > 0 {
		s.nsSel = labels.SelectorFromSet(po.NamespaceLabels)
	}
	return s
}

// Stats returns a copy of the current statistics.
func (s *Source) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Run starts the informers, waits for their caches, publishes the first
// snapshot, then publishes a new one, at most every Options.Debounce,
// whenever a watched object changes the result. It returns nil when ctx is
// done (after the informers have stopped), and an error for invalid
// options or a snapshot that cannot be built at start.
func (s *Source) Run(ctx context.Context) error {
	if s.optErr != nil {
		return s.optErr
	}
	if s.client == nil {
		return errors.New("kube: client is nil")
	}
	if s.apply == nil {
		return errors.New("kube: apply func is nil")
	}
	if !s.running.TryLock() {
		return errors.New("kube: Run called twice")
	}
	defer s.running.Unlock()
	// A previous Run's rule informers are stopped: start afresh.
	s.rw.Store(nil)
	s.compiled, s.rules = map[string]*compiledRule{}, nil
	s.mu.Lock()
	s.stats.DestinationRulesWatched = false
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factories, synced, err := s.setup()
	if err != nil {
		return err
	}
	for _, f := range factories {
		f.Start(ctx.Done())
	}
	// Shutdown waits for the informer goroutines: none outlive Run.
	defer func() {
		cancel()
		s.bg.Wait()
		if w := s.rw.Load(); w != nil {
			w.stop()
		}
		for _, f := range factories {
			f.Shutdown()
		}
	}()
	// The DestinationRule caches sync beside the others, so that the first
	// snapshot has the subsets: clients of a subset never see it missing.
	rules, err := s.rulesAtStart(ctx)
	if err != nil {
		return err
	}

	start := time.Now()
	if !waitSynced(ctx, synced) {
		if rules != nil {
			rules.stop()
		}
		return nil
	}
	if rules != nil {
		if s.waitRules(ctx, rules) {
			s.log.Info("reading DestinationRules", "resource", rules.gvr.String())
			s.publishRules(rules)
		} else if ctx.Err() == nil {
			s.bg.Go(func() { s.awaitRules(ctx) })
		}
	}
	s.log.Info("kubernetes caches synced", "took", time.Since(start).Round(time.Millisecond), "namespaces", s.o.Namespaces)
	s.mu.Lock()
	s.allDirty = true
	s.mu.Unlock()
	if err := s.build(); err != nil {
		return err
	}
	s.mu.Lock()
	s.stats.Synced = true
	s.mu.Unlock()
	s.loop(ctx)
	return nil
}

// rulesAtStart checks for the DestinationRule CRD and starts its
// informers if it is installed; otherwise it says so once and leaves a
// goroutine checking again every crdPoll.
func (s *Source) rulesAtStart(ctx context.Context) (*ruleWatch, error) {
	switch {
	case s.o.DisableDestinationRules:
		return nil, nil
	case s.dyn == nil:
		s.log.Info("no dynamic client: DestinationRules are not read")
		return nil, nil
	}
	gvr, found, err := s.findCRD(ctx)
	if !found {
		if err != nil {
			s.log.Warn("cannot tell whether the DestinationRule CRD is installed; checking again later", "err", err, "every", s.crdPoll)
		} else {
			s.log.Info("DestinationRule CRD not installed: every cluster has the default policy; checking again later",
				"group", drGroup, "every", s.crdPoll)
		}
		s.bg.Go(func() { s.awaitRules(ctx) })
		return nil, nil
	}
	return s.startRules(ctx, gvr)
}

// setup creates the informer factories, registers handlers, indexers and
// transforms, and returns what to start and what to wait for.
func (s *Source) setup() ([]factory, []cache.InformerSynced, error) {
	opts := []informers.SharedInformerOption{informers.WithTransform(trim)}
	cluster := informers.NewSharedInformerFactoryWithOptions(s.client, s.o.Resync, opts...)
	factories := []factory{cluster}
	var synced []cache.InformerSynced

	namespaces := s.o.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	s.scopes = make(map[string]*scope, len(namespaces))
	for _, ns := range namespaces {
		f := cluster
		if ns != metav1.NamespaceAll {
			f = informers.NewSharedInformerFactoryWithOptions(s.client, s.o.Resync, append(opts, informers.WithNamespace(ns))...)
			factories = append(factories, f)
		}
		svc := f.Core().V1().Services()
		sl := f.Discovery().V1().EndpointSlices()
		sc := &scope{services: svc.Informer(), slices: sl.Informer(), svcs: svc.Lister()}
		if err := sc.slices.AddIndexers(cache.Indexers{serviceIndex: sliceServiceKeys}); err != nil {
			return nil, nil, fmt.Errorf("kube: endpointslice index: %w", err)
		}
		if err := s.watch(sc.services, "services", s.onService); err != nil {
			return nil, nil, err
		}
		if err := s.watch(sc.slices, "endpointslices", s.onSlice); err != nil {
			return nil, nil, err
		}
		s.scopes[ns] = sc
		synced = append(synced, sc.services.HasSynced, sc.slices.HasSynced)
	}

	nodes := cluster.Core().V1().Nodes()
	if err := s.watch(nodes.Informer(), "nodes", s.onNode); err != nil {
		return nil, nil, err
	}
	s.nodes = nodes.Lister()
	synced = append(synced, nodes.Informer().HasSynced)
	if s.nsSel != nil {
		nss := cluster.Core().V1().Namespaces()
		if err := s.watch(nss.Informer(), "namespaces", s.onNamespace); err != nil {
			return nil, nil, err
		}
		s.namespaces = nss.Lister()
		synced = append(synced, nss.Informer().HasSynced)
	}
	return factories, synced, nil
}

// watch registers an event handler and a watch-error handler that logs
// through our logger (client-go's default writes to klog) and counts.
func (s *Source) watch(inf cache.SharedIndexInformer, resource string, on func(old, cur any)) error {
	return s.watchWith(inf, resource, on, nil)
}

// watchWith is watch with onErr, when not nil, also told of each error.
func (s *Source) watchWith(inf cache.SharedIndexInformer, resource string, on func(old, cur any), onErr func(error)) error {
	if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		s.mu.Lock()
		s.stats.WatchErrors++
		s.stats.LastWatchError = resource + ": " + err.Error()
		s.mu.Unlock()
		if onErr != nil {
			onErr(err)
		}
		level := slog.LevelWarn
		if apierrors.IsForbidden(err) {
			level = slog.LevelError // RBAC: it will not fix itself
		}
		s.log.Log(ctx, level, "kubernetes watch failed; retrying", "resource", resource, "err", err)
	}); err != nil {
		return fmt.Errorf("kube: %s watch error handler: %w", resource, err)
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { on(nil, obj) },
		UpdateFunc: on,
		DeleteFunc: func(obj any) { on(nil, obj) },
	})
	if err != nil {
		return fmt.Errorf("kube: %s event handler: %w", resource, err)
	}
	return nil
}

// waitSynced polls the caches until all have synced or ctx is done.
// (cache.WaitForCacheSync does the same but logs through klog.)
func waitSynced(ctx context.Context, synced []cache.InformerSynced) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		all := true
		for _, f := range synced {
			all = all && f()
		}
		if all {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// Event handlers: they run on the informers' goroutines, so they only mark
// what changed and wake the build loop.

func (s *Source) onService(_, obj any) {
	if key, ok := objectKey(obj); ok {
		s.markDirty(key)
	}
}

func (s *Source) onSlice(old, obj any) {
	keys, _ := sliceServiceKeys(unwrap(obj))
	if old != nil {
		// A slice relabelled to another service dirties both.
		oldKeys, _ := sliceServiceKeys(old)
		keys = append(keys, oldKeys...)
	}
	s.markDirty(keys...)
}

func (s *Source) onNode(old, obj any) {
	if old != nil {
		on, ok1 := old.(*corev1.Node)
		nn, ok2 := obj.(*corev1.Node)
		if ok1 && ok2 && nodeLocalityOf(on.Labels) == nodeLocalityOf(nn.Labels) {
			s.count()
			return // heartbeats and status: nothing the snapshot uses
		}
	}
	s.markAll()
}

func (s *Source) onNamespace(old, obj any) {
	if old != nil {
		on, ok1 := old.(*corev1.Namespace)
		nn, ok2 := obj.(*corev1.Namespace)
		if ok1 && ok2 && maps.Equal(on.Labels, nn.Labels) {
			s.count()
			return
		}
	}
	s.markAll()
}

func (s *Source) count() {
	s.mu.Lock()
	s.stats.Events++
	s.mu.Unlock()
}

func (s *Source) markDirty(keys ...string) {
	s.mu.Lock()
	s.stats.Events++
	for _, k := range keys {
		s.dirty[k] = struct{}{}
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Source) markAll() {
	s.mu.Lock()
	s.stats.Events++
	s.allDirty = true
	s.mu.Unlock()
	s.wake()
}

func (s *Source) wake() {
	select {
	case s.kick <- struct{}{}:
	default: // a build is already pending; it will see this change
	}
}

// loop builds whenever woken, never twice within Debounce. It is the only
// goroutine that builds, whatever the number of services.
func (s *Source) loop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		if wait := s.o.Debounce - time.Since(last); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
		}
		last = time.Now()
		if err := s.build(); err != nil {
			s.log.Error("kubernetes snapshot rejected; keeping the previous one", "err", err)
		}
	}
}

// build rebuilds the dirty services from the caches and publishes a
// snapshot if anything changed.
func (s *Source) build() error {
	start := time.Now()
	s.mu.Lock()
	dirty, all, rules := s.dirty, s.allDirty, s.rulesDirty
	s.dirty, s.allDirty, s.rulesDirty = map[string]struct{}{}, false, false
	s.stats.Builds++
	s.mu.Unlock()
	if len(dirty) == 0 && !all {
		return nil
	}
	if w := s.rw.Load(); rules && w != nil {
		s.compileRules(w)
	}

	changed := false
	if all {
		next := make(map[string]*entry, len(s.entries))
		for _, sc := range s.scopes {
			svcs, err := sc.svcs.List(labels.Everything())
			if err != nil {
				return fmt.Errorf("kube: list services: %w", err)
			}
			for _, svc := range svcs {
				key := svc.Namespace + "/" + svc.Name
				e := s.serviceEntry(sc, svc)
				if old := s.entries[key]; sameEntry(old, e) {
					e = old
				} else {
					changed = true
				}
				next[key] = e
			}
		}
		changed = changed || len(next) != len(s.entries)
		s.entries = next
	} else {
		for key := range dirty {
			e := s.lookupEntry(key)
			old, had := s.entries[key]
			switch {
			case e == nil && had:
				delete(s.entries, key)
				changed = true
			case e == nil:
			case sameEntry(old, e):
			default:
				s.entries[key] = e
				changed = true
			}
		}
	}
	if !changed {
		s.mu.Lock()
		s.stats.LastBuild = time.Since(start)
		s.mu.Unlock()
		return nil
	}

	spec := mesh.Spec{Services: make([]*mesh.Service, 0, len(s.entries))}
	var st Stats
	for _, e := range s.entries {
		spec.Services = append(spec.Services, e.svc)
		spec.Clusters = append(spec.Clusters, e.clusters...)
		if e.svc.Exported && !e.svc.MeshExternal {
			st.Clusters += len(e.clusters)
			st.Endpoints += e.endpoints()
		}
		st.SkippedPorts += e.skipped
	}
	s.seq++
	spec.Version = "kube-" + strconv.FormatUint(s.seq, 10)
	snap, err := mesh.Build(spec)
	if err != nil {
		s.mu.Lock()
		s.stats.BuildErrors++
		s.mu.Unlock()
		return fmt.Errorf("kube: build snapshot %s: %w", spec.Version, err)
	}
	s.apply(snap)
	s.mu.Lock()
	s.stats.Version = snap.Version
	s.stats.Snapshots++
	s.stats.Services = len(spec.Services)
	s.stats.Clusters, s.stats.Endpoints, s.stats.SkippedPorts = st.Clusters, st.Endpoints, st.SkippedPorts
	s.stats.LastBuild = time.Since(start)
	s.mu.Unlock()
	s.log.Debug("kubernetes snapshot published", "version", snap.Version, "services", len(spec.Services),
		"clusters", st.Clusters, "endpoints", st.Endpoints, "took", time.Since(start))
	return nil
}

// lookupEntry rebuilds the entry of "namespace/name", or returns nil when
// the service is gone or not watched.
func (s *Source) lookupEntry(key string) *entry {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	sc := s.scopes[metav1.NamespaceAll]
	if sc == nil {
		sc = s.scopes[ns]
	}
	if sc == nil {
		return nil
	}
	svc, err := sc.svcs.Services(ns).Get(name)
	if err != nil {
		return nil // not found: deleted (the lister has no other error)
	}
	return s.serviceEntry(sc, svc)
}

// serviceEntry translates one service with its slices from sc's cache.
func (s *Source) serviceEntry(sc *scope, svc *corev1.Service) *entry {
	objs, _ := sc.slices.GetIndexer().ByIndex(serviceIndex, svc.Namespace+"/"+svc.Name)
	eps := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if sl, ok := o.(*discoveryv1.EndpointSlice); ok {
			eps = append(eps, sl)
		}
	}
	var pods podLabels
	var rule *istioyaml.DestinationRule
	if w := s.rw.Load(); w != nil {
		pods = w.podLabels
		rule = s.rules.pick(s.tr.host(svc.Namespace, svc.Name), svc.Namespace)
	}
	return s.tr.service(svc, eps, s.nodeLocality, s.namespaceSelected(svc.Namespace), rule, pods)
}

func (s *Source) nodeLocality(name string) (mesh.Locality, bool) {
	n, err := s.nodes.Get(name)
	if err != nil {
		return mesh.Locality{}, false
	}
	return nodeLocalityOf(n.Labels), true
}

func (s *Source) namespaceSelected(ns string) bool {
	if s.nsSel == nil {
		return true
	}
	n, err := s.namespaces.Get(ns)
	if err != nil {
		return false // unknown namespace: its labels cannot be checked
	}
	return s.nsSel.Matches(labels.Set(n.Labels))
}

// sliceServiceKeys is the EndpointSlice index function: the
// "namespace/service" the slice belongs to.
func sliceServiceKeys(obj any) ([]string, error) {
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := sl.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{sl.Namespace + "/" + name}, nil
}

// unwrap returns the last known object of a deletion the informer missed.
func unwrap(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

func objectKey(obj any) (string, bool) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	return key, err == nil && key != ""
}

// trim drops what the source never reads before objects enter the caches:
// managed fields everywhere, everything of a Node and of a Pod but its name
// and labels (Node status, with its image list, is most of a large
// cluster's informer memory; Pod specs are the rest), and a
// DestinationRule's status.
func trim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Node:
		return &corev1.Node{
			TypeMeta: o.TypeMeta,
			ObjectMeta: metav1.ObjectMeta{
				Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion, Labels: o.Labels,
			},
		}, nil
	case *corev1.Pod:
		return &corev1.Pod{
			TypeMeta: o.TypeMeta,
			ObjectMeta: metav1.ObjectMeta{
				Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion, Labels: o.Labels,
			},
		}, nil
	case *unstructured.Unstructured:
		delete(o.Object, "status")
		o.SetManagedFields(nil)
	case metav1.Object:
		o.SetManagedFields(nil)
	}
	return obj, nil
}
