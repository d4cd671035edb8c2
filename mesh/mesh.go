package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Key identifies one SNI-DNAT cluster: a service host, one of its ports and
// an optional DestinationRule subset ("" for the whole service).
type Key struct {
	Host   string
	Port   uint16
	Subset string
}

// String returns the cluster name in Istio's SNI form,
// outbound_.PORT_.SUBSET_.HOST, which is also the Envoy cluster name and the
// stat prefix.
func (k Key) String() string {
	return "outbound_." + strconv.Itoa(int(k.Port)) + "_." + k.Subset + "_." + k.Host
}

// Locality is where an endpoint or the gateway runs.
type Locality struct {
	Region, Zone, Subzone string
}

// ParseLocality reads Istio's "region/zone/subzone" form; missing parts are
// empty.
func ParseLocality(s string) Locality {
	var l Locality
	parts := strings.SplitN(s, "/", 3)
	if len(parts) > 0 {
		l.Region = parts[0]
	}
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.Subzone = parts[2]
	}
	return l
}

// String returns the "region/zone/subzone" form, trimmed of empty trailing
// parts.
func (l Locality) String() string {
	switch {
	case l.Subzone != "":
		return l.Region + "/" + l.Zone + "/" + l.Subzone
	case l.Zone != "":
		return l.Region + "/" + l.Zone
	default:
		return l.Region
	}
}

// Health is an endpoint's health as its source reports it (EDS health
// status). Active checks and outlier detection are layered on top by the
// balancer and health packages.
type Health uint8

// Health values, as Envoy's HealthStatus.
const (
	HealthUnknown Health = iota // routable, as Envoy treats UNKNOWN
	HealthHealthy
	HealthUnhealthy
	HealthDraining
	HealthDegraded
)

// Endpoint is one local workload address a cluster can forward to.
type Endpoint struct {
	Addr     netip.AddrPort
	Locality Locality
	// Weight is the endpoint's load-balancing weight; 0 means 1.
	Weight uint32
	// Priority is set by sources that compute priorities themselves (xDS);
	// the YAML source leaves it 0 and the balancer computes it from locality.
	Priority uint32
	Health   Health
	Labels   map[string]string
	Network  string
	// Workload and Namespace name the workload for logs and metrics.
	Workload  string
	Namespace string
}

// Port is one declared service port.
type Port struct {
	Number   uint16
	Name     string
	Protocol string // Istio protocol name, upper case: TCP, HTTP, TLS, GRPC, UDP...
}

// Service is one mesh service host.
type Service struct {
	Host      string
	Namespace string
	Ports     []Port
	// MeshExternal services are never routable through the gateway (SEC-1).
	MeshExternal bool
	// Exported is false when exportTo hides the service from the gateway.
	Exported bool
}

// TCPPorts returns the ports a TLS passthrough can reach: every port but UDP.
func (s *Service) TCPPorts() []Port {
	var out []Port
	for _, p := range s.Ports {
		if p.Protocol != "UDP" {
			out = append(out, p)
		}
	}
	return out
}

// LBSimple is a DestinationRule loadBalancer.simple value.
type LBSimple string

// Load-balancing algorithms, Istio names.
const (
	LBUnspecified  LBSimple = ""
	LBLeastRequest LBSimple = "LEAST_REQUEST"
	LBRoundRobin   LBSimple = "ROUND_ROBIN"
	LBRandom       LBSimple = "RANDOM"
	LBPassthrough  LBSimple = "PASSTHROUGH"
)

// ConsistentHash is DestinationRule loadBalancer.consistentHash, reduced to
// what an L4 gateway can hash on: the source IP.
type ConsistentHash struct {
	UseSourceIP     bool
	Maglev          bool   // maglev: {} chosen; ring hash otherwise
	MinimumRingSize uint64 // ring hash only; 0 means 1024
	TableSize       uint64 // maglev only; 0 means 65537
}

// LocalityLB is DestinationRule loadBalancer.localityLbSetting.
type LocalityLB struct {
	// Enabled is nil when unset (Istio then enables locality LB by default
	// if outlier detection is configured).
	Enabled          *bool
	Distribute       []Distribute
	Failover         []Failover
	FailoverPriority []string
}

// Distribute is one localityLbSetting.distribute entry.
type Distribute struct {
	From string
	To   map[string]uint32
}

// Failover is one localityLbSetting.failover entry.
type Failover struct {
	From, To string
}

// LoadBalancer is DestinationRule trafficPolicy.loadBalancer.
type LoadBalancer struct {
	Simple         LBSimple
	ConsistentHash *ConsistentHash
	Locality       *LocalityLB
	// WarmupDuration and similar L7 fields are not used by an L4 gateway.
}

// OutlierDetection is DestinationRule trafficPolicy.outlierDetection with
// Istio's field names. Nil pointers mean "unset": the balancer applies
// Istio's and Envoy's defaults (SEMANTICS 3.4).
type OutlierDetection struct {
	ConsecutiveErrors            *uint32 // deprecated consecutiveErrors
	Consecutive5xxErrors         *uint32
	ConsecutiveGatewayErrors     *uint32
	ConsecutiveLocalOriginErrors *uint32
	SplitExternalLocalOrigin     bool
	Interval                     time.Duration
	BaseEjectionTime             time.Duration
	MaxEjectionTime              time.Duration
	MaxEjectionPercent           *int32
	MinHealthPercent             *int32
}

// TrafficPolicy is the part of a DestinationRule's trafficPolicy that applies
// to an SNI-DNAT cluster (TLS settings never do).
type TrafficPolicy struct {
	LoadBalancer     LoadBalancer
	OutlierDetection *OutlierDetection
	// ConnectTimeout is connectionPool.tcp.connectTimeout; 0 means the
	// gateway default (10 s, Istio's meshConfig.connectTimeout).
	ConnectTimeout time.Duration
	// IdleTimeout is connectionPool.tcp.idleTimeout; 0 means the gateway
	// default (1 h).
	IdleTimeout time.Duration
	// MaxConnections is connectionPool.tcp.maxConnections; 0 means unlimited.
	MaxConnections int32
	// MaxConnectionDuration is connectionPool.tcp.maxConnectionDuration; 0
	// means none.
	MaxConnectionDuration time.Duration
}

// Cluster is one SNI-DNAT cluster: the endpoints of one (host, port, subset)
// and the policy that applies to them. Endpoints are only those in the
// gateway's own network with Istio mTLS (SNI-6).
type Cluster struct {
	Key       Key
	Name      string // Key.String(), computed once
	Service   *Service
	Endpoints []Endpoint
	Policy    TrafficPolicy
}

// Reason says why a name did not resolve to a cluster. Its String is the
// metric label value used by the proxy (UNK-3).
type Reason uint8

// Reasons for a failed lookup.
const (
	ReasonNone Reason = iota
	ReasonUnknownHost
	ReasonUnknownPort
	ReasonUnknownSubset
	ReasonNotExported
	ReasonAmbiguousPort
)

var reasonNames = [...]string{"", "unknown_host", "unknown_port", "unknown_subset", "not_exported", "ambiguous_port"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason_" + strconv.Itoa(int(r))
}

// Snapshot is an immutable view of the routable mesh. Build it with Build.
type Snapshot struct {
	// Version identifies the snapshot in logs (a counter or a content hash).
	Version  string
	clusters shardedClusters
	services map[string]*Service
	list     []*Cluster // sorted by name, for stable iteration
}

// Lookup resolves an Istio SNI key. host must already be lower case and
// rewritten.
func (s *Snapshot) Lookup(host string, port uint16, subset string) (*Cluster, Reason) {
	if c, ok := s.clusters.get(Key{Host: host, Port: port, Subset: subset}); ok {
		return c, ReasonNone
	}
	return nil, s.why(host, port, subset)
}

// LookupHost resolves a plain host name (a client that is not an Istio
// sidecar): it reaches the service when the service has exactly one TCP
// port, and is refused as ambiguous otherwise.
func (s *Snapshot) LookupHost(host string) (*Cluster, Reason) {
	svc, ok := s.services[host]
	if !ok {
		return nil, ReasonUnknownHost
	}
	if !svc.Exported || svc.MeshExternal {
		return nil, ReasonNotExported
	}
	ports := svc.TCPPorts()
	if len(ports) != 1 {
		return nil, ReasonAmbiguousPort
	}
	return s.Lookup(host, ports[0].Number, "")
}

func (s *Snapshot) why(host string, port uint16, subset string) Reason {
	svc, ok := s.services[host]
	if !ok {
		return ReasonUnknownHost
	}
	if !svc.Exported || svc.MeshExternal {
		return ReasonNotExported
	}
	if _, ok := s.clusters.get(Key{Host: host, Port: port}); !ok {
		return ReasonUnknownPort
	}
	if subset != "" {
		return ReasonUnknownSubset
	}
	return ReasonUnknownPort
}

// Clusters returns every cluster sorted by name. The slice is shared: do not
// modify it.
func (s *Snapshot) Clusters() []*Cluster { return s.list }

// Services returns the number of services known, routable or not.
func (s *Snapshot) Services() int { return len(s.services) }

// Spec is the input of Build: services and the clusters built from them.
type Spec struct {
	Version  string
	Services []*Service
	Clusters []*Cluster
}

// Build checks a Spec and returns the immutable Snapshot. Clusters of
// services that are not exported or are mesh-external are dropped, so they
// can never be routed to (SEC-1); their services stay known so a lookup can
// say "not_exported" rather than "unknown_host".
func Build(spec Spec) (*Snapshot, error) {
	s := &Snapshot{
		Version:  spec.Version,
		clusters: newShardedClusters(len(spec.Clusters)),
		services: make(map[string]*Service, len(spec.Services)),
	}
	for _, svc := range spec.Services {
		if _, dup := s.services[svc.Host]; dup {
			return nil, fmt.Errorf("service %q declared twice", svc.Host)
		}
		s.services[svc.Host] = svc
	}
	for _, c := range spec.Clusters {
		if c.Service == nil {
			return nil, fmt.Errorf("cluster %s has no service", c.Key)
		}
		if !c.Service.Exported || c.Service.MeshExternal {
			continue
		}
		if _, dup := s.clusters.get(c.Key); dup {
			return nil, fmt.Errorf("cluster %s declared twice", c.Key)
		}
		if c.Name == "" {
			// Only when unset: a cluster reused from a published snapshot is
			// read concurrently and must not be written.
			c.Name = c.Key.String()
		}
		s.clusters.set(c.Key, c)
		s.list = append(s.list, c)
	}
	sortClusters(s.list)
	return s, nil
}

// Update returns a new snapshot in which the changed clusters replace the
// ones with the same key, sharing everything else with s. It is the cheap
// path for an EDS update that names a few clusters of thousands; new or
// removed clusters need Build.
func (s *Snapshot) Update(version string, changed ...*Cluster) (*Snapshot, error) {
	ns := &Snapshot{Version: version, clusters: s.clusters.shallowCopy(), services: s.services, list: slices.Clone(s.list)}
	for _, c := range changed {
		old, ok := ns.clusters.get(c.Key)
		if !ok {
			return nil, fmt.Errorf("cluster %s: not in the snapshot", c.Key)
		}
		if c.Service != old.Service {
			return nil, fmt.Errorf("cluster %s: service changed", c.Key)
		}
		c.Name = old.Name
		ns.clusters.replace(c.Key, c)
		i, found := slices.BinarySearchFunc(ns.list, c.Name, func(e *Cluster, n string) int { return strings.Compare(e.Name, n) })
		if !found {
			return nil, fmt.Errorf("cluster %s: not in the list", c.Key)
		}
		ns.list[i] = c
	}
	return ns, nil
}
