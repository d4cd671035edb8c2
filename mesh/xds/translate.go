package xds

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/eastwest-gw/eastwest/mesh"
)

// sniPrefix starts every Istio SNI-DNAT cluster name.
const sniPrefix = "outbound_."

// errNotSNIDNAT marks a cluster name that is not outbound_.P_.S_.H: such
// clusters are ignored, not rejected.
var errNotSNIDNAT = errors.New("not an SNI-DNAT cluster")

// errUnsupported marks a well-formed SNI-DNAT cluster the gateway cannot
// represent (DNS-resolved endpoints): skipped and counted, not NACKed.
var errUnsupported = errors.New("unsupported cluster")

// parseClusterName reads an Istio SNI-DNAT cluster name,
// outbound_.PORT_.SUBSET_.HOST. A name without the prefix returns
// errNotSNIDNAT; a name with the prefix that does not parse is malformed.
func parseClusterName(name string) (mesh.Key, error) {
	rest, ok := strings.CutPrefix(name, sniPrefix)
	if !ok {
		return mesh.Key{}, errNotSNIDNAT
	}
	portStr, rest, ok := strings.Cut(rest, "_.")
	if !ok {
		return mesh.Key{}, fmt.Errorf("cluster %q: no port", name)
	}
	subset, host, ok := strings.Cut(rest, "_.")
	if !ok {
		return mesh.Key{}, fmt.Errorf("cluster %q: no subset", name)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 || portStr[0] == '0' || portStr[0] == '+' {
		return mesh.Key{}, fmt.Errorf("cluster %q: bad port %q", name, portStr)
	}
	if err := checkName(host, false); err != nil {
		return mesh.Key{}, fmt.Errorf("cluster %q: host: %w", name, err)
	}
	if err := checkName(subset, true); err != nil {
		return mesh.Key{}, fmt.Errorf("cluster %q: subset: %w", name, err)
	}
	return mesh.Key{Host: host, Port: uint16(port), Subset: subset}, nil
}

// checkName accepts what can appear in a lower-cased SNI: the gateway looks
// hosts up lower case, so an upper-case host would never match.
func checkName(s string, emptyOK bool) error {
	if s == "" {
		if emptyOK {
			return nil
		}
		return errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '*':
		case c == '_' && emptyOK: // subsets may hold underscores, hosts may not
		default:
			return fmt.Errorf("invalid character %q", c)
		}
	}
	return nil
}

// clusterInfo is what one CDS cluster contributes to the snapshot.
type clusterInfo struct {
	key       mesh.Key
	namespace string // from istio.services metadata; "" when absent
	edsName   string // EDS resource name; "" for STATIC clusters
	static    []mesh.Endpoint
	policy    mesh.TrafficPolicy
}

// translateCluster turns one CDS Cluster into clusterInfo. It returns
// errNotSNIDNAT for clusters the gateway ignores, an error wrapping
// errUnsupported for SNI-DNAT clusters it cannot serve, and any other error
// for a malformed cluster (NACKed).
func translateCluster(c *clusterv3.Cluster, network string) (clusterInfo, error) {
	key, err := parseClusterName(c.GetName())
	if err != nil {
		return clusterInfo{}, err
	}
	if err := c.Validate(); err != nil {
		return clusterInfo{}, fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	info := clusterInfo{key: key, namespace: serviceNamespace(c)}
	switch t := c.GetType(); {
	case c.GetClusterType() != nil:
		return clusterInfo{}, fmt.Errorf("cluster %q: custom cluster type %q: %w", c.GetName(), c.GetClusterType().GetName(), errUnsupported)
	case t == clusterv3.Cluster_EDS:
		info.edsName = c.GetEdsClusterConfig().GetServiceName()
		if info.edsName == "" {
			info.edsName = c.GetName()
		}
	case t == clusterv3.Cluster_STATIC:
		eps, err := translateEndpoints(c.GetLoadAssignment(), network)
		if err != nil {
			return clusterInfo{}, fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		info.static = eps
	default:
		return clusterInfo{}, fmt.Errorf("cluster %q: type %s: %w", c.GetName(), t, errUnsupported)
	}
	pol, err := translatePolicy(c)
	if err != nil {
		return clusterInfo{}, fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	info.policy = pol
	return info, nil
}

// serviceNamespace reads the namespace istiod puts in the cluster metadata
// (filter_metadata.istio.services[0].namespace).
func serviceNamespace(c *clusterv3.Cluster) string {
	md := c.GetMetadata().GetFilterMetadata()["istio"]
	svcs := md.GetFields()["services"].GetListValue().GetValues()
	if len(svcs) == 0 {
		return ""
	}
	return svcs[0].GetStructValue().GetFields()["namespace"].GetStringValue()
}

// namespaceFromHost is the fallback for clusters without istio metadata:
// NAME.NAMESPACE.svc.DOMAIN.
func namespaceFromHost(host string) string {
	parts := strings.SplitN(host, ".", 4)
	if len(parts) >= 3 && parts[2] == "svc" {
		return parts[1]
	}
	return ""
}

// Load-balancing policy extension type URLs istiod may send in
// load_balancing_policy instead of lb_policy.
const (
	lbExtPrefix      = "type.googleapis.com/envoy.extensions.load_balancing_policies."
	lbExtLeastReq    = lbExtPrefix + "least_request.v3.LeastRequest"
	lbExtRoundRobin  = lbExtPrefix + "round_robin.v3.RoundRobin"
	lbExtRandom      = lbExtPrefix + "random.v3.Random"
	lbExtRingHash    = lbExtPrefix + "ring_hash.v3.RingHash"
	lbExtMaglev      = lbExtPrefix + "maglev.v3.Maglev"
	unlimitedConnCap = math.MaxInt32
)

// translatePolicy maps the cluster fields an L4 gateway uses onto
// mesh.TrafficPolicy (see doc.go for the table and what is lost).
func translatePolicy(c *clusterv3.Cluster) (mesh.TrafficPolicy, error) {
	var p mesh.TrafficPolicy
	p.ConnectTimeout = dur(c.GetConnectTimeout())

	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		p.LoadBalancer.Simple = mesh.LBRoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		p.LoadBalancer.Simple = mesh.LBLeastRequest
	case clusterv3.Cluster_RANDOM:
		p.LoadBalancer.Simple = mesh.LBRandom
	case clusterv3.Cluster_RING_HASH:
		p.LoadBalancer.ConsistentHash = &mesh.ConsistentHash{UseSourceIP: true,
			MinimumRingSize: c.GetRingHashLbConfig().GetMinimumRingSize().GetValue()}
	case clusterv3.Cluster_MAGLEV:
		p.LoadBalancer.ConsistentHash = &mesh.ConsistentHash{UseSourceIP: true, Maglev: true,
			TableSize: c.GetMaglevLbConfig().GetTableSize().GetValue()}
	case clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG:
		// Handled below from load_balancing_policy.
	default:
		return p, fmt.Errorf("lb_policy %s: %w", c.GetLbPolicy(), errUnsupported)
	}
	if pols := c.GetLoadBalancingPolicy().GetPolicies(); len(pols) > 0 {
		// The first policy Envoy knows wins; we know the five Istio uses.
		p.LoadBalancer.Simple = mesh.LBUnspecified
		p.LoadBalancer.ConsistentHash = nil
	policies:
		for _, pol := range pols {
			switch pol.GetTypedExtensionConfig().GetTypedConfig().GetTypeUrl() {
			case lbExtLeastReq:
				p.LoadBalancer.Simple = mesh.LBLeastRequest
				break policies
			case lbExtRoundRobin:
				p.LoadBalancer.Simple = mesh.LBRoundRobin
				break policies
			case lbExtRandom:
				p.LoadBalancer.Simple = mesh.LBRandom
				break policies
			case lbExtRingHash:
				p.LoadBalancer.ConsistentHash = &mesh.ConsistentHash{UseSourceIP: true}
				break policies
			case lbExtMaglev:
				p.LoadBalancer.ConsistentHash = &mesh.ConsistentHash{UseSourceIP: true, Maglev: true}
				break policies
			}
		}
	}
	// istiod already turned localityLbSetting into endpoint priorities for
	// this node: the balancer must use them and not compute its own.
	off := false
	p.LoadBalancer.Locality = &mesh.LocalityLB{Enabled: &off}

	for _, th := range c.GetCircuitBreakers().GetThresholds() {
		if th.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		if mc := th.GetMaxConnections(); mc != nil && mc.GetValue() < unlimitedConnCap {
			p.MaxConnections = int32(mc.GetValue())
		}
	}

	od := c.GetOutlierDetection()
	if od == nil {
		return p, nil
	}
	if max, base := dur(od.GetMaxEjectionTime()), dur(od.GetBaseEjectionTime()); max > 0 && base > max {
		// Envoy rejects this configuration too.
		return p, fmt.Errorf("outlier_detection: max_ejection_time %v < base_ejection_time %v", max, base)
	}
	p.OutlierDetection = translateOutlier(od, c.GetCommonLbConfig())
	return p, nil
}

// translateOutlier inverts Istio's applyOutlierDetection (SEMANTICS 3.4).
func translateOutlier(od *clusterv3.OutlierDetection, lb *clusterv3.Cluster_CommonLbConfig) *mesh.OutlierDetection {
	out := &mesh.OutlierDetection{
		SplitExternalLocalOrigin: od.GetSplitExternalLocalOriginErrors(),
		Interval:                 dur(od.GetInterval()),
		BaseEjectionTime:         dur(od.GetBaseEjectionTime()),
		MaxEjectionTime:          dur(od.GetMaxEjectionTime()),
	}
	// consecutive_5xx: Envoy default 5, enforcing default 100.
	if e := od.GetEnforcingConsecutive_5Xx(); e != nil && e.GetValue() == 0 {
		out.Consecutive5xxErrors = u32(0)
	} else if v := od.GetConsecutive_5Xx(); v != nil {
		out.Consecutive5xxErrors = u32(v.GetValue())
	}
	// consecutive_gateway_failure: enforcing defaults to 0 (off), which is
	// Istio's "unset".
	if e := od.GetEnforcingConsecutiveGatewayFailure(); e != nil && e.GetValue() > 0 {
		n := uint32(5)
		if v := od.GetConsecutiveGatewayFailure(); v != nil {
			n = v.GetValue()
		}
		out.ConsecutiveGatewayErrors = u32(n)
	}
	if out.SplitExternalLocalOrigin {
		if e := od.GetEnforcingConsecutiveLocalOriginFailure(); e != nil && e.GetValue() == 0 {
			out.ConsecutiveLocalOriginErrors = u32(0)
		} else if v := od.GetConsecutiveLocalOriginFailure(); v != nil {
			out.ConsecutiveLocalOriginErrors = u32(v.GetValue())
		}
	}
	if v := od.GetMaxEjectionPercent(); v != nil {
		n := int32(min(v.GetValue(), 100))
		out.MaxEjectionPercent = &n
	}
	// The panic threshold lives in common_lb_config. Absent, Envoy uses 50;
	// say so explicitly, because the balancer's nil means Istio's 0.
	pct := int32(50)
	if t := lb.GetHealthyPanicThreshold(); t != nil {
		pct = int32(math.Round(min(max(t.GetValue(), 0), 100)))
	}
	out.MinHealthPercent = &pct
	return out
}

// translateEndpoints turns a ClusterLoadAssignment into endpoints in CLA
// order. A malformed address is an error; an address that is not an IP
// socket (internal or pipe addresses) is skipped.
func translateEndpoints(cla *endpointv3.ClusterLoadAssignment, network string) ([]mesh.Endpoint, error) {
	n := 0
	for _, lle := range cla.GetEndpoints() {
		n += len(lle.GetLbEndpoints())
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]mesh.Endpoint, 0, n)
	for _, lle := range cla.GetEndpoints() {
		loc := mesh.Locality{
			Region:  lle.GetLocality().GetRegion(),
			Zone:    lle.GetLocality().GetZone(),
			Subzone: lle.GetLocality().GetSubZone(),
		}
		prio := lle.GetPriority()
		if prio > 128 {
			return nil, fmt.Errorf("locality %s: priority %d > 128", loc, prio)
		}
		for _, lbe := range lle.GetLbEndpoints() {
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				continue
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				continue
			}
			ip, err := netip.ParseAddr(sa.GetAddress())
			if err != nil {
				return nil, fmt.Errorf("locality %s: endpoint address: %w", loc, err)
			}
			port := sa.GetPortValue()
			if port == 0 || port > math.MaxUint16 {
				return nil, fmt.Errorf("locality %s: endpoint %s: bad port %d", loc, ip, port)
			}
			ep := mesh.Endpoint{
				Addr:     netip.AddrPortFrom(ip.Unmap(), uint16(port)),
				Locality: loc,
				Weight:   lbe.GetLoadBalancingWeight().GetValue(),
				Priority: prio,
				Health:   health(lbe.GetHealthStatus()),
				Network:  network,
			}
			workloadMeta(&ep, lbe)
			out = append(out, ep)
		}
	}
	return out, nil
}

// workloadMeta reads istio.workload = "name;namespace;app;version;cluster".
func workloadMeta(ep *mesh.Endpoint, lbe *endpointv3.LbEndpoint) {
	setWorkload(ep, lbe.GetMetadata().GetFilterMetadata()["istio"].GetFields()["workload"].GetStringValue(), newLabels)
}

// setWorkload sets ep's workload fields from an istio.workload value;
// labels returns the label map for app, version and cluster.
func setWorkload(ep *mesh.Endpoint, w string, labels func(app, version, cluster string) map[string]string) {
	if w == "" {
		return
	}
	// Five fields, the last taking the rest, as strings.SplitN(w, ";", 5).
	name, rest, _ := strings.Cut(w, ";")
	ns, rest, _ := strings.Cut(rest, ";")
	app, rest, _ := strings.Cut(rest, ";")
	version, cluster, _ := strings.Cut(rest, ";")
	ep.Workload, ep.Namespace = name, ns
	if app == "" && version == "" && cluster == "" {
		return
	}
	ep.Labels = labels(app, version, cluster)
}

func newLabels(app, version, cluster string) map[string]string {
	m := make(map[string]string, 3)
	setLabel(m, "app", app)
	setLabel(m, "version", version)
	setLabel(m, labelCluster, cluster)
	return m
}

func setLabel(m map[string]string, k, v string) {
	if v != "" {
		m[k] = v
	}
}

// labelCluster is the label Istio uses for an endpoint's cluster ID.
const labelCluster = "topology.istio.io/cluster"

func health(h corev3.HealthStatus) mesh.Health {
	switch h {
	case corev3.HealthStatus_HEALTHY:
		return mesh.HealthHealthy
	case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_TIMEOUT:
		return mesh.HealthUnhealthy
	case corev3.HealthStatus_DRAINING:
		return mesh.HealthDraining
	case corev3.HealthStatus_DEGRADED:
		return mesh.HealthDegraded
	default:
		return mesh.HealthUnknown
	}
}

func dur(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

func u32(v uint32) *uint32 { return &v }
