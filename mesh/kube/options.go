package kube

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Options configure a Source. The zero value watches every namespace of a
// cluster whose domain is cluster.local and rebuilds at most every 100 ms.
type Options struct {
	// ClusterDomain is the cluster's DNS domain; service hosts are
	// NAME.NAMESPACE.svc.ClusterDomain. Empty means "cluster.local".
	ClusterDomain string
	// Namespaces limits the watch to these namespaces, one namespace-scoped
	// watch each (so a Role per namespace is enough RBAC for services and
	// endpointslices). Empty means every namespace with one cluster-wide
	// watch. Services in other namespaces are not known at all: a lookup
	// answers unknown_host.
	Namespaces []string
	// NamespaceLabels, when set, exports only services in namespaces that
	// carry every one of these labels (key and value). Services of other
	// namespaces stay known and answer not_exported. Setting it adds a
	// cluster-wide Namespace watch.
	NamespaceLabels map[string]string
	// GatewayNamespace is the gateway's own namespace, against which the
	// networking.istio.io/exportTo annotation is evaluated ("." and
	// namespace names). Empty means "istio-system", as in mesh/istioyaml.
	GatewayNamespace string
	// Network is set on every endpoint (Endpoint.Network): the gateway's
	// own network, since a Kubernetes API only knows local pods.
	Network string
	// Resync re-delivers every cached object this often so that the
	// snapshot is recomputed from the caches (unchanged services cost a
	// comparison and publish nothing). 0 means never: watches alone keep
	// the caches current.
	Resync time.Duration
	// Logger receives sync, watch-error and build events; nil means
	// slog.Default().
	Logger *slog.Logger
	// DisableDestinationRules turns off reading Istio DestinationRules.
	// Otherwise they are read when the client is a *Client with a dynamic
	// client and the networking.istio.io DestinationRule CRD is installed
	// (v1, else v1beta1); that also adds a Pod watch, for the labels that
	// subsets select on.
	DisableDestinationRules bool
	// Debounce is the minimum time between two snapshot builds; events in
	// between are coalesced into the next build. 0 means 100 ms. It is also
	// the longest an endpoint that turned not-ready can keep receiving new
	// connections after the event arrives (plus the build time).
	Debounce time.Duration
}

// DefaultDebounce is the build interval used when Options.Debounce is 0.
const DefaultDebounce = 100 * time.Millisecond

// populate applies defaults and validates; it returns a copy that shares
// nothing mutable with the caller.
func (o Options) populate() (Options, error) {
	var errs []error
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	o.ClusterDomain = strings.TrimSuffix(strings.ToLower(o.ClusterDomain), ".")
	if msgs := validation.IsDNS1123Subdomain(o.ClusterDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("kube: clusterDomain %q: %s", o.ClusterDomain, strings.Join(msgs, "; ")))
	}
	if o.GatewayNamespace == "" {
		o.GatewayNamespace = "istio-system"
	}
	o.Namespaces = slices.Clone(o.Namespaces)
	seen := map[string]bool{}
	for _, ns := range o.Namespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("kube: namespace %q: %s", ns, strings.Join(msgs, "; ")))
		}
		if seen[ns] {
			errs = append(errs, fmt.Errorf("kube: namespace %q listed twice", ns))
		}
		seen[ns] = true
	}
	o.NamespaceLabels = maps.Clone(o.NamespaceLabels)
	if o.Resync < 0 {
		errs = append(errs, fmt.Errorf("kube: resync must not be negative, got %s", o.Resync))
	}
	switch {
	case o.Debounce == 0:
		o.Debounce = DefaultDebounce
	case o.Debounce < 0:
		errs = append(errs, fmt.Errorf("kube: debounce must not be negative, got %s", o.Debounce))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, errors.Join(errs...)
}
