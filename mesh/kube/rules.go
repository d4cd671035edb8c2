package kube

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
)

// DestinationRules: Istio's CRD, read with the dynamic client so that the
// gateway needs none of Istio's generated clients, and compiled by
// mesh/istioyaml, the file source's compiler.

const (
	drGroup    = "networking.istio.io"
	drResource = "destinationrules"
	// DefaultCRDPoll is how often the source checks whether the
	// DestinationRule CRD has been installed while it is absent.
	DefaultCRDPoll = time.Minute
	// discoveryTimeout bounds one discovery request.
	discoveryTimeout = 10 * time.Second
)

// drVersions are tried in order: v1 since Istio 1.22, v1beta1 before.
var drVersions = []string{"v1", "v1beta1"}

// factory is what Run starts and stops of typed and dynamic informer
// factories alike.
type factory interface {
	Start(stopCh <-chan struct{})
	Shutdown()
}

// ruleWatch is the DestinationRule and Pod informers of every watched
// namespace. It is published once its caches synced and never changes.
type ruleWatch struct {
	gvr    schema.GroupVersionResource
	rules  []cache.SharedIndexInformer
	pods   map[string]listerscorev1.PodLister // by scope namespace, "" for all
	synced []cache.InformerSynced
	stop   func() // stops the informers and waits for them
	// rejected is set, to the error, when a list failed in a way that
	// retrying will not fix: RBAC, or the CRD gone since discovery.
	rejected atomic.Pointer[string]
}

// podLabels returns the labels of pod namespace/name from the cache.
func (w *ruleWatch) podLabels(namespace, name string) (map[string]string, bool) {
	l := w.pods[metav1.NamespaceAll]
	if l == nil {
		l = w.pods[namespace]
	}
	if l == nil {
		return nil, false
	}
	p, err := l.Pods(namespace).Get(name)
	if err != nil {
		return nil, false
	}
	return p.Labels, true
}

// compiledRule is the last compilation of one DestinationRule object.
type compiledRule struct {
	obj     *unstructured.Unstructured // compiled from; a new object means recompile
	rule    *istioyaml.DestinationRule // nil: invalid or not for the gateway
	created time.Time
	invalid bool   // the current version failed to compile
	msg     string // what was logged for it, so that it is logged once
}

// ruleIndex finds the candidate rules of a host: exact hosts by name,
// wildcards by scanning. Each list is oldest first.
type ruleIndex struct {
	exact map[string][]*istioyaml.DestinationRule
	wild  []*istioyaml.DestinationRule
	opts  istioyaml.Options
}

// pick returns the rule that applies to the service host in namespace ns.
// Concatenating the exact and the wildcard candidates keeps the age order
// within each kind, the only order PickDestinationRule consults (an exact
// host always ranks before a wildcard of the same tier).
func (x *ruleIndex) pick(host, ns string) *istioyaml.DestinationRule {
	if x == nil {
		return nil
	}
	cands := x.exact[host]
	if len(x.wild) > 0 {
		cands = append(slices.Clip(cands), x.wild...)
	}
	if len(cands) == 0 {
		return nil
	}
	return istioyaml.PickDestinationRule(cands, host, ns, x.opts)
}

// findCRD asks discovery for the DestinationRule resource, v1 then
// v1beta1. found is false when neither is served; err is set when
// discovery failed otherwise (the answer is then unknown).
func (s *Source) findCRD(ctx context.Context) (gvr schema.GroupVersionResource, found bool, err error) {
	disc := discovery.ToServerResourcesInterfaceWithContext(s.client.Discovery())
	for _, v := range drVersions {
		rctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
		list, lerr := disc.ServerResourcesForGroupVersionWithContext(rctx, drGroup+"/"+v)
		cancel()
		if lerr != nil {
			if !apierrors.IsNotFound(lerr) && err == nil {
				err = fmt.Errorf("discovery of %s/%s: %w", drGroup, v, lerr)
			}
			continue
		}
		for _, r := range list.APIResources {
			if r.Name == drResource {
				return schema.GroupVersionResource{Group: drGroup, Version: v, Resource: drResource}, true, nil
			}
		}
	}
	return schema.GroupVersionResource{}, false, err
}

// startRules starts the DestinationRule and Pod informers of every watched
// namespace. They stop when ctx is done or w.stop is called.
func (s *Source) startRules(ctx context.Context, gvr schema.GroupVersionResource) (*ruleWatch, error) {
	rctx, cancel := context.WithCancel(ctx)
	w := &ruleWatch{gvr: gvr, pods: map[string]listerscorev1.PodLister{}}
	var fs []factory
	w.stop = func() {
		cancel()
		for _, f := range fs {
			f.Shutdown()
		}
	}
	// RBAC that lacks the new rules must not hold back the rest of the
	// source: a forbidden list abandons DestinationRules (waitRules).
	onErr := func(err error) {
		if apierrors.IsForbidden(err) || apierrors.IsNotFound(err) {
			msg := err.Error()
			w.rejected.Store(&msg)
		}
	}
	for ns := range s.scopes {
		df := dynamicinformer.NewFilteredDynamicSharedInformerFactory(s.dyn, s.o.Resync, ns, nil)
		ri := df.ForResource(gvr).Informer()
		if err := ri.SetTransform(trim); err != nil {
			w.stop()
			return nil, fmt.Errorf("kube: destinationrules transform: %w", err)
		}
		if err := s.watchWith(ri, drResource, s.onRule, onErr); err != nil {
			w.stop()
			return nil, err
		}
		opts := []informers.SharedInformerOption{informers.WithTransform(trim)}
		if ns != metav1.NamespaceAll {
			opts = append(opts, informers.WithNamespace(ns))
		}
		pf := informers.NewSharedInformerFactoryWithOptions(s.client, s.o.Resync, opts...)
		pods := pf.Core().V1().Pods()
		if err := s.watchWith(pods.Informer(), "pods", s.onPod, onErr); err != nil {
			w.stop()
			return nil, err
		}
		w.rules = append(w.rules, ri)
		w.pods[ns] = pods.Lister()
		w.synced = append(w.synced, ri.HasSynced, pods.Informer().HasSynced)
		fs = append(fs, df, pf)
	}
	for _, f := range fs {
		f.Start(rctx.Done())
	}
	return w, nil
}

// waitRules waits for w's caches. It returns false, having stopped w, when
// ctx ends or a list was rejected (RBAC, CRD gone). Other errors are
// retried, as for the other caches.
func (s *Source) waitRules(ctx context.Context, w *ruleWatch) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		all := true
		for _, f := range w.synced {
			all = all && f()
		}
		if all {
			return true
		}
		if msg := w.rejected.Load(); msg != nil {
			s.log.Error("DestinationRules or Pods cannot be listed; DestinationRules are not read until they can",
				"resource", w.gvr.String(), "err", *msg, "retry", s.crdPoll)
			w.stop()
			return false
		}
		select {
		case <-ctx.Done():
			w.stop()
			return false
		case <-t.C:
		}
	}
}

// publishRules makes the build use w from the next build on.
func (s *Source) publishRules(w *ruleWatch) {
	s.rw.Store(w)
	s.mu.Lock()
	s.stats.DestinationRulesWatched = true
	s.mu.Unlock()
	s.markRules()
}

// awaitRules checks every crdPoll for the CRD (and for RBAC, after a
// forbidden list) until DestinationRules are read or ctx ends. Run stops
// the informers it published.
func (s *Source) awaitRules(ctx context.Context) {
	t := time.NewTicker(s.crdPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		gvr, found, err := s.findCRD(ctx)
		if err != nil {
			s.log.Debug("DestinationRule CRD check failed; retrying", "err", err)
			continue
		}
		if !found {
			continue
		}
		w, err := s.startRules(ctx, gvr)
		if err != nil {
			s.log.Error("cannot watch DestinationRules", "err", err)
			return
		}
		if !s.waitRules(ctx, w) {
			continue
		}
		s.log.Info("reading DestinationRules", "resource", gvr.String())
		s.publishRules(w)
		return
	}
}

// onRule marks every service dirty: a rule may name any host, by wildcard
// too, and rules change rarely. A resync or a status update is not a
// change, nor is the initial list before the rules are published (which
// marks every service itself).
func (s *Source) onRule(old, obj any) {
	if s.rw.Load() == nil {
		s.count()
		return
	}
	if o, ok := old.(*unstructured.Unstructured); ok {
		if n, ok := obj.(*unstructured.Unstructured); ok && o.GetUID() == n.GetUID() &&
			reflect.DeepEqual(o.Object["spec"], n.Object["spec"]) {
			s.count()
			return
		}
	}
	s.markRules()
}

func (s *Source) markRules() {
	s.mu.Lock()
	s.stats.Events++
	s.rulesDirty = true
	s.allDirty = true
	s.mu.Unlock()
	s.wake()
}

// onPod marks the services that select the pod, under its old and new
// labels: only labels are kept of a Pod (trim), and only a label change
// (or a pod the slices named before the Pod cache had it) changes an
// endpoint.
func (s *Source) onPod(old, obj any) {
	pod, ok := unwrap(obj).(*corev1.Pod)
	if !ok || s.rw.Load() == nil {
		// Before the rules are published, the full build that follows
		// reads every pod from the cache.
		s.count()
		return
	}
	var oldLabels map[string]string
	if o, ok := old.(*corev1.Pod); ok {
		if maps.Equal(o.Labels, pod.Labels) {
			s.count()
			return
		}
		oldLabels = o.Labels
	}
	sc := s.scopes[metav1.NamespaceAll]
	if sc == nil {
		sc = s.scopes[pod.Namespace]
	}
	if sc == nil {
		s.count()
		return
	}
	svcs, _ := sc.svcs.Services(pod.Namespace).List(labels.Everything())
	var keys []string
	for _, svc := range svcs {
		sel := svc.Spec.Selector
		if len(sel) > 0 && (labelsMatch(sel, pod.Labels) || (oldLabels != nil && labelsMatch(sel, oldLabels))) {
			keys = append(keys, svc.Namespace+"/"+svc.Name)
		}
	}
	s.markDirty(keys...)
}

// labelsMatch reports whether have carries every label of want.
func labelsMatch(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// compileRules recompiles the rules that changed since the last build and
// rebuilds the index. Owned by the build goroutine.
func (s *Source) compileRules(w *ruleWatch) {
	next := make(map[string]*compiledRule, len(s.compiled))
	var valid []*compiledRule
	invalid := 0
	for _, inf := range w.rules {
		for _, o := range inf.GetStore().List() {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			key := u.GetNamespace() + "/" + u.GetName()
			c := s.compiled[key]
			if c == nil || c.obj != u {
				c = s.compileRule(key, u, c)
			}
			next[key] = c
			if c.invalid {
				invalid++
			}
			if c.rule != nil {
				valid = append(valid, c)
			}
		}
	}
	s.compiled = next
	// Istio's tie-break is age: creation time, then namespace and name.
	slices.SortFunc(valid, func(a, b *compiledRule) int {
		return cmp.Or(a.created.Compare(b.created), strings.Compare(a.rule.Namespace, b.rule.Namespace), strings.Compare(a.rule.Name, b.rule.Name))
	})
	x := &ruleIndex{exact: map[string][]*istioyaml.DestinationRule{}, opts: s.ruleOpts}
	for _, c := range valid {
		if c.rule.Wildcard() {
			x.wild = append(x.wild, c.rule)
		} else {
			x.exact[c.rule.Host] = append(x.exact[c.rule.Host], c.rule)
		}
	}
	s.rules = x
	s.mu.Lock()
	s.stats.DestinationRules, s.stats.InvalidDestinationRules = len(valid), invalid
	s.mu.Unlock()
}

// compileRule compiles one object. A version that fails keeps the last
// valid one in force, as a bad mesh file keeps the previous snapshot: the
// clusters of a subset in use do not vanish because of a typo.
func (s *Source) compileRule(key string, u *unstructured.Unstructured, prev *compiledRule) *compiledRule {
	c := &compiledRule{obj: u, created: u.GetCreationTimestamp().Time}
	spec, err := json.Marshal(u.Object["spec"])
	var warnings []string
	if err == nil {
		c.rule, warnings, err = istioyaml.CompileDestinationRule(u.GetName(), u.GetNamespace(), spec, s.ruleOpts)
	}
	switch {
	case err != nil:
		c.invalid = true
		kept := prev != nil && prev.rule != nil && prev.obj.GetUID() == u.GetUID()
		if kept {
			c.rule, c.created = prev.rule, prev.created
		}
		c.msg = err.Error()
		if prev == nil || prev.msg != c.msg {
			s.mu.Lock()
			s.stats.DestinationRuleErrors++
			s.mu.Unlock()
			s.log.Error("DestinationRule rejected", "rule", key, "keptPrevious", kept, "err", err)
		}
	case c.rule == nil:
		// Valid but not for the gateway (exportTo, workloadSelector):
		// common in a mesh, so not worth more than debug.
		c.msg = strings.Join(warnings, "; ")
		if prev == nil || prev.msg != c.msg {
			s.log.Debug("DestinationRule does not apply to the gateway", "rule", key, "why", c.msg)
		}
	default:
		c.msg = strings.Join(warnings, "; ")
		if len(warnings) > 0 && (prev == nil || prev.msg != c.msg) {
			s.log.Info("DestinationRule applied in part", "rule", key, "warnings", warnings)
		}
	}
	return c
}
