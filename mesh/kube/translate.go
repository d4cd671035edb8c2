package kube

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
)

// Well-known labels and annotations read by the source.
const (
	// LabelRegion and LabelZone are the Node labels Kubernetes sets from the
	// cloud provider; Istio reads the same ones.
	LabelRegion = "topology.kubernetes.io/region"
	LabelZone   = "topology.kubernetes.io/zone"
	// LabelSubzone is Istio's subzone Node label.
	LabelSubzone = "topology.istio.io/subzone"
	// AnnotationExportTo is Istio's Service annotation limiting which
	// namespaces see the service: a comma list of "*", ".", "~" or
	// namespace names.
	AnnotationExportTo = "networking.istio.io/exportTo"
)

// entry is what one Kubernetes Service contributes to a snapshot. Entries
// are immutable once built: an unchanged Service keeps its entry, and with
// it the *mesh.Service and *mesh.Cluster pointers of the last snapshot.
type entry struct {
	svc      *mesh.Service
	clusters []*mesh.Cluster
	// skipped counts ports that get no cluster (UDP, SCTP).
	skipped int
}

// endpoints returns the number of endpoints over all clusters.
func (e *entry) endpoints() int {
	n := 0
	for _, c := range e.clusters {
		n += len(c.Endpoints)
	}
	return n
}

// translator turns Services and EndpointSlices into entries. It holds only
// options; the caller passes the objects from its caches.
type translator struct {
	domain    string
	gatewayNS string
	network   string
}

// host returns the service's DNS name.
func (t *translator) host(namespace, name string) string {
	return name + "." + namespace + ".svc." + t.domain
}

// nodeLocality resolves a node name to its locality; ok is false when the
// node is unknown.
type nodeLocality func(nodeName string) (loc mesh.Locality, ok bool)

// podLabels returns the labels of a pod; ok is false when it is unknown.
type podLabels func(namespace, name string) (labels map[string]string, ok bool)

// service builds the entry of svc. slices are the EndpointSlices whose
// kubernetes.io/service-name label names svc; nsSelected says whether the
// namespace passes Options.NamespaceLabels. rule, when not nil, is the
// DestinationRule that applies to svc: its policy goes on every cluster
// and each subset adds a cluster per port. pods, when not nil, gives the
// endpoints their pods' labels, which subsets select on.
func (t *translator) service(svc *corev1.Service, eps []*discoveryv1.EndpointSlice, nodes nodeLocality, nsSelected bool,
	rule *istioyaml.DestinationRule, pods podLabels) *entry {
	ms := &mesh.Service{
		Host:      t.host(svc.Namespace, svc.Name),
		Namespace: svc.Namespace,
		Exported:  nsSelected && exportedTo(svc.Annotations[AnnotationExportTo], svc.Namespace, t.gatewayNS),
	}
	e := &entry{svc: ms}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		// An alias for a DNS name: no endpoints the gateway could reach
		// with Istio mTLS. Known (so lookups say not_exported) but never
		// routable.
		ms.MeshExternal = true
		return e
	}
	// The selector labels are carried by every pod the Service selects, so
	// they are true of each endpoint (app, usually; version rarely). One
	// map is shared by every endpoint of the service: it is never written.
	var labels map[string]string
	if len(svc.Spec.Selector) > 0 {
		labels = maps.Clone(svc.Spec.Selector)
	}
	// Sorted by name so that duplicates (an endpoint briefly in two slices
	// while the controller moves it) resolve the same way every build.
	eps = slices.Clone(eps)
	slices.SortFunc(eps, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	for _, sp := range svc.Spec.Ports {
		switch sp.Protocol {
		case corev1.ProtocolUDP:
			ms.Ports = append(ms.Ports, mesh.Port{Number: uint16(sp.Port), Name: sp.Name, Protocol: "UDP"})
			e.skipped++
			continue
		case corev1.ProtocolSCTP:
			// Not a protocol a TLS passthrough can carry; left out of Ports
			// too, so that a plain host lookup does not count it.
			e.skipped++
			continue
		}
		p := mesh.Port{Number: uint16(sp.Port), Name: sp.Name, Protocol: istioProtocol(sp.Name, sp.AppProtocol)}
		ms.Ports = append(ms.Ports, p)
		c := &mesh.Cluster{Key: mesh.Key{Host: ms.Host, Port: p.Number}, Service: ms}
		c.Endpoints = t.endpoints(svc, sp.Name, eps, nodes, labels, pods)
		e.clusters = append(e.clusters, c)
		if rule == nil {
			continue
		}
		c.Policy = rule.Policy(p.Number)
		for _, sub := range rule.Subsets() {
			e.clusters = append(e.clusters, &mesh.Cluster{
				Key:       mesh.Key{Host: ms.Host, Port: p.Number, Subset: sub.Name},
				Service:   ms,
				Endpoints: subsetEndpoints(c.Endpoints, sub),
				Policy:    sub.Policy(p.Number),
			})
		}
	}
	return e
}

// subsetEndpoints returns the endpoints that carry the subset's labels.
func subsetEndpoints(all []mesh.Endpoint, sub istioyaml.Subset) []mesh.Endpoint {
	var out []mesh.Endpoint
	for _, e := range all {
		if sub.LabelsMatch(e.Labels) {
			out = append(out, e)
		}
	}
	return out
}

// endpoints collects the ready endpoints of one service port: the slices'
// port with the same name (Kubernetes names them after the Service port)
// gives the target port. An endpoint's labels are its pod's when pods
// knows the pod (targetRef), else the service's selector.
func (t *translator) endpoints(svc *corev1.Service, portName string, eps []*discoveryv1.EndpointSlice, nodes nodeLocality,
	labels map[string]string, pods podLabels) []mesh.Endpoint {
	var out []mesh.Endpoint
	var seen map[netip.AddrPort]bool
	for _, sl := range eps {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices: not an address the gateway may dial
		}
		port, ok := slicePort(sl, portName)
		if !ok {
			continue
		}
		for i := range sl.Endpoints {
			ke := &sl.Endpoints[i]
			if !routable(ke.Conditions) || len(ke.Addresses) == 0 {
				continue
			}
			// The API says the addresses are fungible and consumers may use
			// the first only; dual-stack services get one slice per family.
			addr, err := netip.ParseAddr(ke.Addresses[0])
			if err != nil {
				continue
			}
			ap := netip.AddrPortFrom(addr.Unmap(), port)
			if seen == nil {
				seen = map[netip.AddrPort]bool{}
			}
			if seen[ap] {
				continue
			}
			seen[ap] = true
			epLabels := labels
			if pods != nil && ke.TargetRef != nil && ke.TargetRef.Kind == "Pod" {
				ns := ke.TargetRef.Namespace
				if ns == "" {
					ns = svc.Namespace
				}
				// The cache's map is never written: shared, not copied.
				if l, ok := pods(ns, ke.TargetRef.Name); ok {
					epLabels = l
				}
			}
			out = append(out, mesh.Endpoint{
				Addr:      ap,
				Locality:  locality(ke, nodes),
				Health:    mesh.HealthHealthy,
				Labels:    epLabels,
				Network:   t.network,
				Workload:  workloadName(ke, svc.Name),
				Namespace: svc.Namespace,
			})
		}
	}
	return out
}

// slicePort finds the slice port named name with protocol TCP (unset
// means TCP) and a number.
func slicePort(sl *discoveryv1.EndpointSlice, name string) (uint16, bool) {
	for _, p := range sl.Ports {
		pn := ""
		if p.Name != nil {
			pn = *p.Name
		}
		if pn != name || p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
			continue
		}
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		return uint16(*p.Port), true
	}
	return 0, false
}

// routable reports whether an endpoint may receive new connections: ready
// (unset means ready, as the API defines) and not terminating. A
// terminating endpoint that still serves (publishNotReadyAddresses, or the
// graceful-termination window) keeps its open connections, which the
// gateway never cuts, but gets no new ones.
func routable(c discoveryv1.EndpointConditions) bool {
	if c.Ready != nil && !*c.Ready {
		return false
	}
	return c.Terminating == nil || !*c.Terminating
}

// locality prefers the Node's labels (region, zone and Istio's subzone);
// without a known node it falls back to the endpoint's zone field, with no
// region.
func locality(ke *discoveryv1.Endpoint, nodes nodeLocality) mesh.Locality {
	if ke.NodeName != nil && *ke.NodeName != "" && nodes != nil {
		if l, ok := nodes(*ke.NodeName); ok {
			return l
		}
	}
	if ke.Zone != nil {
		return mesh.Locality{Zone: *ke.Zone}
	}
	return mesh.Locality{}
}

// nodeLocalityOf reads a Node's topology labels.
func nodeLocalityOf(labels map[string]string) mesh.Locality {
	return mesh.Locality{Region: labels[LabelRegion], Zone: labels[LabelZone], Subzone: labels[LabelSubzone]}
}

// exportedTo evaluates Istio's exportTo list (the annotation's value) for
// a service in namespace ns, as seen from the gateway's namespace gw. An
// empty value exports to every namespace, Istio's default.
func exportedTo(value, ns, gw string) bool {
	if strings.TrimSpace(value) == "" {
		return true
	}
	for e := range strings.SplitSeq(value, ",") {
		switch e = strings.TrimSpace(e); {
		case e == "*", e == gw, e == "." && ns == gw:
			return true
		}
	}
	return false // includes "~" (exported nowhere) and other namespaces
}

// istioProtocol names a port's protocol the way Istio does: appProtocol
// first, then the port name's prefix before "-". Anything else is TCP,
// which is what a TLS passthrough carries regardless.
func istioProtocol(name string, appProtocol *string) string {
	if appProtocol != nil {
		if p := protocolName(*appProtocol); p != "" {
			return p
		}
	}
	prefix, _, _ := strings.Cut(name, "-")
	if p := protocolName(prefix); p != "" {
		return p
	}
	return "TCP"
}

func protocolName(s string) string {
	switch s = strings.ToLower(s); s {
	case "http", "http2", "https", "grpc", "grpc-web", "tcp", "tls", "mongo", "mysql", "redis":
		return strings.ToUpper(s)
	case "kubernetes.io/h2c":
		return "HTTP2"
	case "kubernetes.io/ws", "kubernetes.io/wss":
		return "HTTP"
	}
	return ""
}

// workloadName names an endpoint's workload for metrics and logs without a
// Pod watch: the pod name (targetRef) less the suffixes its controller
// generated, so that every replica of a Deployment, DaemonSet or
// StatefulSet shares one low-cardinality name. Without a pod reference it
// is the service name.
func workloadName(ke *discoveryv1.Endpoint, service string) string {
	if ke.TargetRef == nil || ke.TargetRef.Kind != "Pod" || ke.TargetRef.Name == "" {
		return service
	}
	return trimGenerated(ke.TargetRef.Name)
}

// trimGenerated removes a pod name's generated suffixes:
// NAME-<pod-template-hash>-<5 random> (Deployment), NAME-<5 random>
// (DaemonSet, Job) and NAME-<ordinal> (StatefulSet). Kubernetes draws both
// the hash and the random part from the alphabet below.
func trimGenerated(pod string) string {
	name, last, ok := cutLast(pod)
	if !ok {
		return pod
	}
	if isDigits(last) {
		return name // StatefulSet ordinal
	}
	if len(last) != 5 || !isGenerated(last) {
		return pod
	}
	if rest, hash, ok := cutLast(name); ok && len(hash) >= 6 && len(hash) <= 10 && isGenerated(hash) {
		return rest // Deployment: ReplicaSet hash too
	}
	return name
}

func cutLast(s string) (head, tail string, ok bool) {
	i := strings.LastIndexByte(s, '-')
	if i <= 0 || i == len(s)-1 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// isGenerated reports whether s uses only k8s.io/apimachinery's rand
// alphabet (no vowels, no 0, 1 or 3), which generated names are drawn from.
func isGenerated(s string) bool {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(alphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}

// sameEntry reports whether a rebuilt entry equals the previous one, so
// that the previous pointers (and the previous snapshot, when nothing else
// changed) can be kept.
func sameEntry(a, b *entry) bool {
	if a == nil || b == nil {
		return a == b
	}
	if !sameService(a.svc, b.svc) {
		return false
	}
	if a.skipped != b.skipped || len(a.clusters) != len(b.clusters) {
		return false
	}
	for i, ca := range a.clusters {
		cb := b.clusters[i]
		if ca.Key != cb.Key || !slices.EqualFunc(ca.Endpoints, cb.Endpoints, sameEndpoint) || !reflect.DeepEqual(ca.Policy, cb.Policy) {
			return false
		}
	}
	return true
}

func sameService(a, b *mesh.Service) bool {
	return a.Host == b.Host && a.Namespace == b.Namespace && a.MeshExternal == b.MeshExternal &&
		a.Exported == b.Exported && slices.Equal(a.Ports, b.Ports)
}

func sameEndpoint(a, b mesh.Endpoint) bool {
	return a.Addr == b.Addr && a.Locality == b.Locality && a.Weight == b.Weight && a.Priority == b.Priority &&
		a.Health == b.Health && a.Network == b.Network && a.Workload == b.Workload && a.Namespace == b.Namespace &&
		maps.Equal(a.Labels, b.Labels)
}
