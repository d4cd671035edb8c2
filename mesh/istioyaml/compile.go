package istioyaml

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

// dnsTimeout bounds one host-name lookup at load time.
const dnsTimeout = 5 * time.Second

// tlsModeLabel marks a workload whose sidecar accepts Istio mTLS.
const tlsModeLabel = "security.istio.io/tlsMode"

// compiler turns parsed resources into a mesh.Spec, collecting every
// problem instead of stopping at the first.
type compiler struct {
	ctx      context.Context
	opts     Options
	problems []error
	warnings []Warning
	order    int
	names    map[metaKey]string // -> file, for duplicates
	hash     hash.Hash

	ses []*seRes
	wes []*weRes
	drs []*drRes
	wgs []*wgRes

	dns map[string]dnsAnswer
}

type dnsAnswer struct {
	addrs []netip.Addr
	err   error
}

func (c *compiler) errf(file, res string, err error, format string, args ...any) {
	c.problems = append(c.problems, &Error{File: file, Resource: res, Message: fmt.Sprintf(format, args...), Err: err})
}

func (c *compiler) warnf(file, res, format string, args ...any) {
	c.warnings = append(c.warnings, Warning{File: file, Resource: res, Message: fmt.Sprintf(format, args...)})
}

// flush reports one resource's collected problems.
func (c *compiler) flush(file, res string, pr *problems) {
	for _, e := range pr.errs {
		c.errf(file, res, nil, "%s", e)
	}
	for _, w := range pr.warns {
		c.warnf(file, res, "%s", w)
	}
	pr.errs, pr.warns = pr.errs[:0], pr.warns[:0]
}

func compile(ctx context.Context, inputs []input, opts Options) (*Result, error) {
	parsed := decodeAll(ctx, inputs, partSize)
	docs := 0
	for i := range parsed {
		docs += len(parsed[i].docs)
	}
	c := &compiler{
		ctx:   ctx,
		opts:  opts.withDefaults(),
		names: make(map[metaKey]string, docs),
		hash:  sha256.New(),
		dns:   map[string]dnsAnswer{},
	}
	files := make([]string, 0, len(inputs))
	for i, in := range inputs {
		files = append(files, in.name)
		fmt.Fprintf(c.hash, "file\x00%s\x00%d\x00", in.name, len(in.data))
		c.hash.Write(in.data)
		c.merge(in.name, &parsed[i])
	}
	fmt.Fprintf(c.hash, "opts\x00%s\x00%s\x00%s\x00", c.opts.Network, c.opts.Namespace, c.opts.ClusterDomain)

	groups := c.workloadGroups()
	wes := c.workloadEntries()
	ses := c.serviceEntries(wes)
	for _, we := range wes.all {
		if !we.selected {
			c.warnf(we.file, we.res, "selected by no ServiceEntry workloadSelector in namespace %s; unused", we.namespace)
		}
	}
	drs := c.destinationRules()
	spec := c.build(ses, drs)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("istioyaml: %w", err)
	}
	if len(c.problems) > 0 {
		return nil, errors.Join(c.problems...)
	}
	spec.Version = hex.EncodeToString(c.hash.Sum(nil)[:8])
	snap, err := mesh.Build(spec)
	if err != nil {
		return nil, fmt.Errorf("istioyaml: %w", err)
	}
	return &Result{Snapshot: snap, Warnings: c.warnings, Files: files, WorkloadGroups: groups}, nil
}

// endpointSrc is one endpoint as declared: a WorkloadEntry or a
// ServiceEntry's inline endpoint.
type endpointSrc struct {
	file, res string // the resource that declared it
	inline    bool
	spec      *workloadEntrySpec
	workload  string
	namespace string
	addr      netip.Addr // set when the address is an IP
	host      string     // set when the address is a host name
	unusable  bool       // dropped with a warning (unix socket)
	selected  bool       // a WorkloadEntry some ServiceEntry selects
	labels    map[string]string
	locality  mesh.Locality
}

// endpoint validates a WorkloadEntry-shaped spec; prefix is the field path
// ("" or "endpoints[2].") and portNames, when not nil, the port names the
// enclosing ServiceEntry declares.
func (c *compiler) endpoint(pr *problems, prefix string, spec *workloadEntrySpec, portNames map[string]bool) *endpointSrc {
	src := &endpointSrc{spec: spec}
	a := strings.TrimSpace(spec.Address)
	switch {
	case a == "":
		if spec.Network == "" || spec.Network == c.opts.Network {
			pr.errf(prefix+"address", "is required (only an endpoint in another network may omit it)")
		}
	case strings.HasPrefix(a, "unix://"):
		pr.warnf(prefix+"address", "unix domain socket endpoints cannot be reached from the gateway; dropped")
		src.unusable = true
	default:
		if ip, err := netip.ParseAddr(a); err == nil {
			if ip.Zone() != "" {
				pr.errf(prefix+"address", "%q: IPv6 zones are not supported", a)
			}
			src.addr = ip.Unmap()
		} else if h := strings.ToLower(strings.TrimSuffix(a, ".")); isHostName(h) {
			src.host = h
		} else {
			pr.errf(prefix+"address", "%q is neither an IP address nor a host name", a)
		}
	}
	for _, name := range sortedKeys(spec.Ports) {
		if p := spec.Ports[name]; p < 1 || p > math.MaxUint16 {
			pr.errf(prefix+"ports."+name, "%d is out of range 1-65535", p)
		}
		if portNames != nil && !portNames[name] {
			pr.errf(prefix+"ports", "port name %q is not declared by the ServiceEntry", name)
		}
	}
	if spec.Weight < 0 || spec.Weight > math.MaxUint32 {
		pr.errf(prefix+"weight", "%d is out of range 0 to 2^32-1", spec.Weight)
	}
	if strings.Count(spec.Locality, "/") > 2 {
		pr.errf(prefix+"locality", "%q has more than region/zone/subzone", spec.Locality)
	}
	src.locality = mesh.ParseLocality(spec.Locality)
	if len(spec.Labels) > 0 {
		// Shared, not copied: nothing writes to a decoded spec.
		src.labels = spec.Labels
	}
	return src
}

// workloadEntries validates every WorkloadEntry and indexes the valid ones.
func (c *compiler) workloadEntries() *weIndex {
	x := &weIndex{ns: map[string]*nsWEs{}}
	// Validation is independent per entry, and there may be hundreds of
	// thousands: done in parallel, reported in order.
	srcs := make([]*endpointSrc, len(c.wes))
	prs := make([]problems, len(c.wes))
	parallel(len(c.wes), func() func(int) {
		return func(i int) { srcs[i] = c.endpoint(&prs[i], "", &c.wes[i].spec, nil) }
	})
	for i, we := range c.wes {
		src, pr := srcs[i], &prs[i]
		res := we.resource()
		bad := len(pr.errs) > 0
		c.flush(we.file, res, pr)
		if bad {
			continue
		}
		src.file, src.res, src.workload, src.namespace = we.file, res, we.name, we.namespace
		x.all = append(x.all, src)
		n := x.ns[we.namespace]
		if n == nil {
			n = &nsWEs{}
			x.ns[we.namespace] = n
		}
		n.all = append(n.all, src)
	}
	return x
}

// weIndex holds the valid WorkloadEntries in input order and, per
// namespace, by label: selecting for every ServiceEntry then costs about
// the size of the answer, not of the namespace (the scale benchmark's 100
// namespaces of 100 services and 1,000 WorkloadEntries took 10^7 label
// comparisons, 0.5 s).
type weIndex struct {
	all []*endpointSrc
	ns  map[string]*nsWEs
}

type nsWEs struct {
	all   []*endpointSrc
	byKey map[string]map[string][]*endpointSrc // label key -> value -> entries, per key on first use
}

// selected returns the WorkloadEntries of namespace ns carrying every
// label of sel, in input order.
func (x *weIndex) selected(ns string, sel map[string]string) []*endpointSrc {
	n := x.ns[ns]
	if n == nil {
		return nil
	}
	if len(sel) == 0 {
		return n.all
	}
	var cands []*endpointSrc
	first := true
	for k, v := range sel {
		if l := n.withLabel(k, v); first || len(l) < len(cands) {
			cands, first = l, false
		}
	}
	var out []*endpointSrc
	for _, we := range cands {
		if labelsMatch(sel, we.labels) {
			out = append(out, we)
		}
	}
	return out
}

// withLabel returns the entries with label k=v, in input order.
func (n *nsWEs) withLabel(k, v string) []*endpointSrc {
	idx, ok := n.byKey[k]
	if !ok {
		idx = map[string][]*endpointSrc{}
		for _, we := range n.all {
			if val, ok := we.labels[k]; ok {
				idx[val] = append(idx[val], we)
			}
		}
		if n.byKey == nil {
			n.byKey = map[string]map[string][]*endpointSrc{}
		}
		n.byKey[k] = idx
	}
	return idx[v]
}

// seBuild is one valid ServiceEntry on its way to services and clusters.
type seBuild struct {
	se         *seRes
	resolution string
	routable   bool // mesh-internal and exported to the gateway
	ports      []servicePort
	mports     []mesh.Port
	raw        []*endpointSrc // every declared endpoint, before SNI-6 filtering
	eps        []resolvedEP   // the endpoints the gateway may use
	svcs       []*mesh.Service
}

type resolvedEP struct {
	src  *endpointSrc
	addr netip.Addr
}

var protocols = map[string]bool{
	"HTTP": true, "HTTPS": true, "GRPC": true, "GRPC-WEB": true, "HTTP2": true, "HTTP_PROXY": true,
	"MONGO": true, "MYSQL": true, "REDIS": true, "TCP": true, "TLS": true, "UDP": true, "HBONE": true,
}

// protocolOf returns the upper-case protocol of a port; an unset protocol
// is read from the name prefix ("udp-dns"), else TCP.
func protocolOf(proto, name string) (string, bool) {
	p := strings.ToUpper(proto)
	if p == "" {
		prefix, _, _ := strings.Cut(name, "-")
		if protocols[strings.ToUpper(prefix)] {
			return strings.ToUpper(prefix), true
		}
		return "TCP", true
	}
	return p, protocols[p]
}

func (c *compiler) serviceEntries(wes *weIndex) []*seBuild {
	var out []*seBuild
	owner := map[string]*seRes{}
	pr := &problems{}
	for _, se := range c.ses {
		spec := &se.spec
		b := &seBuild{se: se}
		res := se.resource()

		location := spec.Location
		switch location {
		case "", "MESH_EXTERNAL", "MESH_INTERNAL":
		default:
			pr.errf("location", "unknown value %q (want MESH_INTERNAL or MESH_EXTERNAL)", location)
		}
		external := location != "MESH_INTERNAL"
		b.resolution = spec.Resolution
		switch b.resolution {
		case "":
			b.resolution = "NONE"
		case "NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN":
		default:
			pr.errf("resolution", "unknown value %q (want STATIC, DNS, DNS_ROUND_ROBIN or NONE)", spec.Resolution)
		}

		var hosts []string
		if len(spec.Hosts) == 0 {
			pr.errf("hosts", "at least one host is required")
		}
		seenHost := map[string]bool{}
		for i, h := range spec.Hosts {
			hp := fmt.Sprintf("hosts[%d]", i)
			h = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
			switch {
			case seenHost[h]:
				pr.errf(hp, "host %q is listed twice", h)
			case strings.HasPrefix(h, "*"):
				if !isWildcardHost(h) {
					pr.errf(hp, "%q is not a valid wildcard host", h)
				} else {
					pr.warnf(hp, "wildcard host %q cannot be routed by SNI; ignored", h)
				}
			case !isHostName(h):
				pr.errf(hp, "%q is not a valid host name", h)
			default:
				hosts = append(hosts, h)
			}
			seenHost[h] = true
		}

		if len(spec.Ports) == 0 {
			pr.errf("ports", "at least one port is required")
		}
		portNames := map[string]bool{}
		numbers := map[int64]bool{}
		for i, p := range spec.Ports {
			pp := fmt.Sprintf("ports[%d]", i)
			n := len(pr.errs)
			switch {
			case p.Number < 1 || p.Number > math.MaxUint16:
				pr.errf(pp+".number", "%d is out of range 1-65535", p.Number)
			case numbers[p.Number]:
				pr.errf(pp+".number", "port %d is declared twice", p.Number)
			}
			if p.TargetPort < 0 || p.TargetPort > math.MaxUint16 {
				pr.errf(pp+".targetPort", "%d is out of range 0-65535", p.TargetPort)
			}
			if p.Name != "" && portNames[p.Name] {
				pr.errf(pp+".name", "name %q is used twice", p.Name)
			}
			proto, ok := protocolOf(p.Protocol, p.Name)
			if !ok {
				pr.errf(pp+".protocol", "unknown protocol %q", p.Protocol)
			}
			numbers[p.Number] = true
			if p.Name != "" {
				portNames[p.Name] = true
			}
			if len(pr.errs) == n {
				b.ports = append(b.ports, p)
				b.mports = append(b.mports, mesh.Port{Number: uint16(p.Number), Name: p.Name, Protocol: proto})
			}
		}

		checkExportTo(pr, "exportTo", spec.ExportTo)
		exported := visibleTo(spec.ExportTo, se.namespace, c.opts.Namespace)
		b.routable = !external && exported

		if len(spec.Endpoints) > 0 && spec.WorkloadSelector != nil {
			pr.errf("workloadSelector", "endpoints and workloadSelector are mutually exclusive")
		}
		if location == "" && (len(spec.Endpoints) > 0 || spec.WorkloadSelector != nil) {
			pr.warnf("location", "unset, and Istio's default is MESH_EXTERNAL: the service is not routable through the gateway (set location: MESH_INTERNAL)")
		}
		for i := range spec.Endpoints {
			n := len(pr.errs)
			src := c.endpoint(pr, fmt.Sprintf("endpoints[%d].", i), &spec.Endpoints[i], portNames)
			if len(pr.errs) > n {
				continue
			}
			src.file, src.res, src.inline = se.file, res, true
			src.workload, src.namespace = fmt.Sprintf("%s-%d", se.name, i), se.namespace
			if src.host != "" && b.resolution == "STATIC" {
				pr.errf(fmt.Sprintf("endpoints[%d].address", i), "%q is not an IP address, as resolution STATIC requires", src.host)
				continue
			}
			b.raw = append(b.raw, src)
		}
		if sel := spec.WorkloadSelector; sel != nil {
			for _, we := range wes.selected(se.namespace, sel.Labels) {
				we.selected = true
				if we.host != "" && b.resolution == "STATIC" {
					c.errf(we.file, we.res, nil, "address %q is not an IP address, as resolution STATIC of %s requires", we.host, res)
					continue
				}
				b.raw = append(b.raw, we)
			}
		}

		if b.routable {
			switch {
			case b.resolution == "NONE":
				pr.warnf("resolution", "NONE: Istio forwards to the client's original destination, which an SNI-DNAT cluster does not have; no endpoints")
			case len(spec.Endpoints) == 0 && spec.WorkloadSelector == nil && strings.HasPrefix(b.resolution, "DNS"):
				pr.warnf("endpoints", "none: Istio would resolve the hosts themselves, which are not mTLS-capable workloads; no endpoints")
			case len(spec.Endpoints) == 0 && spec.WorkloadSelector == nil:
				pr.warnf("endpoints", "none declared; the service has no endpoints")
			case spec.WorkloadSelector != nil && len(b.raw) == 0:
				pr.warnf("workloadSelector", "selects no WorkloadEntry in namespace %s", se.namespace)
			}
		} else if !external && !exported {
			pr.warnf("exportTo", "not exported to the gateway's namespace %s; lookups answer not_exported", c.opts.Namespace)
		}

		bad := len(pr.errs) > 0
		c.flush(se.file, res, pr)
		for _, h := range hosts {
			if first, dup := owner[h]; dup {
				c.errf(se.file, res, nil, "host %q is already declared by %s in %s", h, first.resource(), first.file)
				bad = true
				continue
			}
			owner[h] = se
			b.svcs = append(b.svcs, &mesh.Service{Host: h, Namespace: se.namespace, Ports: b.mports, MeshExternal: external, Exported: exported})
		}
		if bad {
			continue
		}
		if b.routable && b.resolution != "NONE" {
			c.eligible(b)
		}
		out = append(out, b)
	}
	return out
}

// eligible keeps the endpoints SNI-6 allows (the gateway's network, Istio
// mTLS) and resolves host names.
func (c *compiler) eligible(b *seBuild) {
	remote, plain := 0, 0
	res := b.se.resource()
	for _, src := range b.raw {
		switch {
		case src.unusable:
			continue
		case src.spec.Network != "" && src.spec.Network != c.opts.Network:
			remote++
			continue
		case src.spec.ServiceAccount == "" && src.spec.Labels[tlsModeLabel] != "istio":
			plain++
			continue
		}
		if src.host == "" {
			b.eps = append(b.eps, resolvedEP{src: src, addr: src.addr})
			continue
		}
		addrs, err := c.resolve(src.host)
		if err != nil {
			c.warnf(src.file, src.res, "resolve %q: %v; endpoint dropped", src.host, err)
			continue
		}
		if b.resolution == "DNS_ROUND_ROBIN" {
			addrs = addrs[:1] // LOGICAL_DNS: Envoy connects to the first address
		}
		for _, a := range addrs {
			b.eps = append(b.eps, resolvedEP{src: src, addr: a})
		}
	}
	if remote > 0 {
		c.warnf(b.se.file, res, "%d endpoint(s) dropped: in a network other than the gateway's (%q); the gateway never forwards to another network", remote, c.opts.Network)
	}
	if plain > 0 {
		c.warnf(b.se.file, res, "%d endpoint(s) dropped: not mTLS-capable (neither serviceAccount nor label %s=istio)", plain, tlsModeLabel)
	}
}

func (c *compiler) resolve(host string) ([]netip.Addr, error) {
	if a, ok := c.dns[host]; ok {
		return a.addrs, a.err
	}
	ctx, cancel := context.WithTimeout(c.ctx, dnsTimeout)
	ips, err := c.opts.Resolver.LookupNetIP(ctx, "ip", host)
	cancel()
	var addrs []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		ip = ip.Unmap().WithZone("")
		if ip.IsValid() && !seen[ip] {
			seen[ip] = true
			addrs = append(addrs, ip)
		}
	}
	if err == nil && len(addrs) == 0 {
		err = errors.New("no addresses")
	}
	c.dns[host] = dnsAnswer{addrs: addrs, err: err}
	// DNS answers are part of the snapshot, so part of its version.
	fmt.Fprintf(c.hash, "dns\x00%s\x00%v\x00", host, addrs)
	return addrs, err
}

// drBuild is one valid DestinationRule visible to the gateway.
type drBuild struct {
	dr       *drRes
	host     string
	wildcard bool
	top      *policy
	subsets  []subsetBuild
	matched  bool
}

type subsetBuild struct {
	name   string
	labels map[string]string
	pol    *policy
}

func (c *compiler) destinationRules() []*drBuild {
	var out []*drBuild
	pr := &problems{}
	for _, dr := range c.drs {
		spec := &dr.spec
		res := dr.resource()
		d := compileRule(pr, spec, dr.namespace, c.opts.ClusterDomain)
		d.dr = dr
		bad := len(pr.errs) > 0
		c.flush(dr.file, res, pr)
		switch {
		case bad:
		case spec.WorkloadSelector != nil:
			c.warnf(dr.file, res, "workloadSelector: the rule applies only to the selected sidecars, never to the gateway; ignored")
		case !visibleTo(spec.ExportTo, dr.namespace, c.opts.Namespace):
			c.warnf(dr.file, res, "not exported to the gateway's namespace %s; ignored", c.opts.Namespace)
		default:
			out = append(out, d)
		}
	}
	return out
}

// pickDR finds the DestinationRule Istio applies to svc at the gateway
// (PushContext.destinationRule): rules in the gateway's namespace first,
// then the service's namespace, then the root namespace; within one, the
// most specific host (exact, then the longest wildcard), then the oldest
// (here: the first in input order). Rules that lose are reported.
func (c *compiler) pickDR(svc *mesh.Service, drs []*drBuild) *drBuild {
	tierOf := func(ns string) int { return drTier(ns, c.opts.Namespace, svc.Namespace) }
	better := func(a, b *drBuild) bool { // a ranks before b
		return drBefore(a, b, tierOf(a.dr.namespace), tierOf(b.dr.namespace), a.dr.order, b.dr.order)
	}
	var best *drBuild
	var candidates []*drBuild
	for _, d := range drs {
		if !hostMatches(d.host, svc.Host) {
			continue
		}
		d.matched = true
		if tierOf(d.dr.namespace) < 0 {
			c.warnf(d.dr.file, d.dr.resource(), "not applied to %s: Istio reads a service's DestinationRule only from the gateway's namespace (%s), the service's (%s) and the root namespace (%s)",
				svc.Host, c.opts.Namespace, svc.Namespace, RootNamespace)
			continue
		}
		candidates = append(candidates, d)
		if best == nil || better(d, best) {
			best = d
		}
	}
	for _, d := range candidates {
		if d != best {
			c.warnf(d.dr.file, d.dr.resource(), "not applied to %s: %s in %s takes precedence", svc.Host, best.dr.resource(), best.dr.file)
		}
	}
	return best
}

// build assembles services and clusters.
func (c *compiler) build(ses []*seBuild, drs []*drBuild) mesh.Spec {
	var spec mesh.Spec
	for _, b := range ses {
		for _, svc := range b.svcs {
			spec.Services = append(spec.Services, svc)
			if !b.routable {
				for _, d := range drs {
					if hostMatches(d.host, svc.Host) {
						d.matched = true
					}
				}
				continue
			}
			dr := c.pickDR(svc, drs)
			var top *policy
			if dr != nil {
				top = dr.top
				c.checkSubsets(b, svc, dr)
			}
			for i, p := range b.ports {
				if b.mports[i].Protocol == "UDP" {
					continue
				}
				port := uint16(p.Number)
				spec.Clusters = append(spec.Clusters, &mesh.Cluster{
					Key:       mesh.Key{Host: svc.Host, Port: port},
					Service:   svc,
					Endpoints: c.endpoints(b, svc, p, nil, true),
					Policy:    mergePolicy(top, nil, port).trafficPolicy(),
				})
				if dr == nil {
					continue
				}
				for _, s := range dr.subsets {
					spec.Clusters = append(spec.Clusters, &mesh.Cluster{
						Key:       mesh.Key{Host: svc.Host, Port: port, Subset: s.name},
						Service:   svc,
						Endpoints: c.endpoints(b, svc, p, s.labels, false),
						Policy:    mergePolicy(top, s.pol, port).trafficPolicy(),
					})
				}
			}
		}
	}
	for _, d := range drs {
		if !d.matched {
			c.warnf(d.dr.file, d.dr.resource(), "host %q matches no service; unused", d.host)
		}
	}
	return spec
}

// checkSubsets reports subsets that select nothing. A subset that selects
// no declared endpoint at all is a configuration error for an exact-host
// rule; one whose endpoints are all filtered out by SNI-6 is a warning (the
// cluster exists, as in istiod, and is empty).
func (c *compiler) checkSubsets(b *seBuild, svc *mesh.Service, dr *drBuild) {
	if b.resolution == "NONE" {
		return
	}
	for _, s := range dr.subsets {
		declared, usable := false, false
		for _, src := range b.raw {
			if labelsMatch(s.labels, src.labels) {
				declared = true
				break
			}
		}
		for _, ep := range b.eps {
			if labelsMatch(s.labels, ep.src.labels) {
				usable = true
				break
			}
		}
		switch {
		case !declared && !dr.wildcard:
			c.errf(dr.dr.file, dr.dr.resource(), nil, "subset %q selects no endpoints of %s", s.name, svc.Host)
		case !declared:
			c.warnf(dr.dr.file, dr.dr.resource(), "subset %q selects no endpoints of %s", s.name, svc.Host)
		case !usable:
			c.warnf(dr.dr.file, dr.dr.resource(), "subset %q of %s has no endpoint the gateway may use (other networks or no mTLS); its cluster is empty", s.name, svc.Host)
		}
	}
}

// endpoints lists the cluster endpoints of one port, filtered by subset
// labels. The port of an endpoint is its ports[name] entry, else the
// service port's targetPort, else the service port.
func (c *compiler) endpoints(b *seBuild, svc *mesh.Service, p servicePort, sel map[string]string, report bool) []mesh.Endpoint {
	if len(b.eps) == 0 {
		return nil
	}
	out := make([]mesh.Endpoint, 0, len(b.eps))
	// Duplicates are found by scanning out while it is short, which is
	// cheaper than a map per cluster for the usual handful of endpoints.
	var seen map[netip.AddrPort]int
	if len(b.eps) > 32 {
		seen = make(map[netip.AddrPort]int, len(b.eps))
	}
	for _, ep := range b.eps {
		if !labelsMatch(sel, ep.src.labels) {
			continue
		}
		port := p.Number
		if v, ok := ep.src.spec.Ports[p.Name]; ok && p.Name != "" {
			port = v
		} else if p.TargetPort != 0 {
			port = p.TargetPort
		}
		ap := netip.AddrPortFrom(ep.addr, uint16(port))
		first, dup := -1, false
		if seen != nil {
			first, dup = seen[ap]
		} else {
			for i := range out {
				if out[i].Addr == ap {
					first, dup = i, true
					break
				}
			}
		}
		if dup {
			if report {
				c.warnf(ep.src.file, ep.src.res, "endpoint %s of %s port %d is also %s; keeping the first", ap, svc.Host, p.Number, out[first].Workload)
			}
			continue
		}
		if seen != nil {
			seen[ap] = len(out)
		}
		w := uint32(ep.src.spec.Weight)
		if w == 0 {
			w = 1
		}
		out = append(out, mesh.Endpoint{
			Addr:      ap,
			Locality:  ep.src.locality,
			Weight:    w,
			Health:    mesh.HealthUnknown,
			Labels:    ep.src.labels,
			Network:   ep.src.spec.Network,
			Workload:  ep.src.workload,
			Namespace: ep.src.namespace,
		})
	}
	if len(out) == 0 {
		return nil // as before: no cluster holds an empty, non-nil list
	}
	return out
}

// workloadGroups validates WorkloadGroups and returns them for the health
// checker.
func (c *compiler) workloadGroups() []WorkloadGroup {
	var out []WorkloadGroup
	pr := &problems{}
	for _, wg := range c.wgs {
		spec := &wg.spec
		t := &spec.Template
		if t.Address != "" {
			c.endpoint(pr, "template.", t, nil)
		} else {
			// A template normally has no address; check the rest.
			tmp := *t
			tmp.Address = "0.0.0.0"
			c.endpoint(pr, "template.", &tmp, nil)
		}
		if p := spec.Probe; p != nil {
			methods := 0
			for _, set := range []bool{p.HTTPGet != nil, p.TCPSocket != nil, p.Exec != nil, p.GRPC != nil} {
				if set {
					methods++
				}
			}
			if methods > 1 {
				pr.errf("probe", "only one of httpGet, tcpSocket, exec and grpc may be set")
			}
			for name, v := range map[string]int32{"initialDelaySeconds": p.InitialDelaySeconds, "timeoutSeconds": p.TimeoutSeconds,
				"periodSeconds": p.PeriodSeconds, "successThreshold": p.SuccessThreshold, "failureThreshold": p.FailureThreshold} {
				if v < 0 {
					pr.errf("probe."+name, "must not be negative")
				}
			}
			if p.HTTPGet != nil && (p.HTTPGet.Port < 1 || p.HTTPGet.Port > math.MaxUint16) {
				pr.errf("probe.httpGet.port", "%d is out of range 1-65535", p.HTTPGet.Port)
			}
			if p.TCPSocket != nil && (p.TCPSocket.Port < 1 || p.TCPSocket.Port > math.MaxUint16) {
				pr.errf("probe.tcpSocket.port", "%d is out of range 1-65535", p.TCPSocket.Port)
			}
		}
		bad := len(pr.errs) > 0
		// Sort messages of the map walk above for stable output.
		slices.Sort(pr.errs)
		c.flush(wg.file, wg.resource(), pr)
		if bad {
			continue
		}
		g := WorkloadGroup{File: wg.file, Name: wg.name, Namespace: wg.namespace, Probe: spec.Probe}
		if spec.Metadata != nil {
			g.Metadata = *spec.Metadata
		}
		g.Template = WorkloadEntry{Address: t.Address, Labels: t.Labels, Network: t.Network, Locality: t.Locality,
			Weight: uint32(t.Weight), ServiceAccount: t.ServiceAccount}
		if len(t.Ports) > 0 {
			g.Template.Ports = make(map[string]uint32, len(t.Ports))
			for k, v := range t.Ports {
				g.Template.Ports[k] = uint32(v)
			}
		}
		c.warnf(wg.file, wg.resource(), "kept for health checks only; a WorkloadGroup creates no endpoints")
		out = append(out, g)
	}
	return out
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

// hostMatches reports whether a DestinationRule host (exact or "*.suffix"
// or "*") covers a service host, as Istio's host.Name.Matches.
func hostMatches(pattern, host string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(host, pattern[1:])
	default:
		return pattern == host
	}
}

// checkExportTo validates an exportTo list: "*", ".", "~" (nowhere) or
// namespace names.
func checkExportTo(pr *problems, path string, list []string) {
	seen := map[string]bool{}
	for i, e := range list {
		ep := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case seen[e]:
			pr.errf(ep, "%q is listed twice", e)
		case e == "*" || e == "." || e == "~":
		case !isDNS1123Label(e):
			pr.errf(ep, "%q is not \"*\", \".\", \"~\" or a namespace name", e)
		}
		seen[e] = true
	}
	if seen["~"] && len(list) > 1 {
		pr.errf(path, `"~" (export nowhere) cannot be combined with other values`)
	}
}

// visibleTo reports whether a resource in namespace ns with this exportTo
// is visible from namespace gw.
func visibleTo(list []string, ns, gw string) bool {
	if len(list) == 0 {
		return true
	}
	for _, e := range list {
		if e == "*" || e == gw || (e == "." && ns == gw) {
			return true
		}
	}
	return false
}

// isHostName reports whether h is a lower-case DNS name.
func isHostName(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if !isDNS1123Label(l) && !isUnderscoreLabel(l) {
			return false
		}
	}
	return true
}

// isUnderscoreLabel accepts labels with underscores (_service._tcp style),
// which DNS allows even though RFC 1123 host names do not.
func isUnderscoreLabel(l string) bool {
	return l != "" && len(l) <= 63 && strings.Contains(l, "_") && isDNS1123Label(strings.ReplaceAll(l, "_", "x"))
}

func isWildcardHost(h string) bool {
	return h == "*" || (strings.HasPrefix(h, "*.") && isHostName(h[2:]))
}
