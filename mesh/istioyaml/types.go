package istioyaml

// This file mirrors the Istio API (istio.io/api networking v1, identical in
// v1beta1 and v1alpha3) field for field, with the camelCase names that
// Kubernetes and istiod accept. Every field of the API is declared so that
// strict decoding (an unknown field is an error) accepts any valid Istio
// resource; fields an SNI-DNAT cluster cannot use are typed `any` and
// ignored. Integers are decoded as int64 and durations as strings so that
// validation can report Istio's own rules (negative counts, "must be >= 1ms")
// instead of Go type errors.

// document is one Kubernetes-style resource.
type document[S any] struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       S          `yaml:"spec"`
	Status     any        `yaml:"status"`
}

// objectMeta is Kubernetes ObjectMeta; the fields kubectl prints are
// accepted so that `kubectl get -o yaml` output loads.
type objectMeta struct {
	Name                       string            `yaml:"name"`
	GenerateName               string            `yaml:"generateName"`
	Namespace                  string            `yaml:"namespace"`
	SelfLink                   string            `yaml:"selfLink"`
	UID                        string            `yaml:"uid"`
	ResourceVersion            string            `yaml:"resourceVersion"`
	Generation                 int64             `yaml:"generation"`
	CreationTimestamp          any               `yaml:"creationTimestamp"`
	DeletionTimestamp          any               `yaml:"deletionTimestamp"`
	DeletionGracePeriodSeconds any               `yaml:"deletionGracePeriodSeconds"`
	Labels                     map[string]string `yaml:"labels"`
	Annotations                map[string]string `yaml:"annotations"`
	OwnerReferences            any               `yaml:"ownerReferences"`
	Finalizers                 []string          `yaml:"finalizers"`
	ManagedFields              any               `yaml:"managedFields"`
}

// serviceEntrySpec is ServiceEntry.
type serviceEntrySpec struct {
	Hosts            []string            `yaml:"hosts"`
	Addresses        []string            `yaml:"addresses"`
	Ports            []servicePort       `yaml:"ports"`
	Location         string              `yaml:"location"`
	Resolution       string              `yaml:"resolution"`
	Endpoints        []workloadEntrySpec `yaml:"endpoints"`
	WorkloadSelector *workloadSelector   `yaml:"workloadSelector"`
	ExportTo         []string            `yaml:"exportTo"`
	SubjectAltNames  []string            `yaml:"subjectAltNames"`
}

// servicePort is ServicePort.
type servicePort struct {
	Number     int64  `yaml:"number"`
	Protocol   string `yaml:"protocol"`
	Name       string `yaml:"name"`
	TargetPort int64  `yaml:"targetPort"`
}

// workloadEntrySpec is WorkloadEntry (the resource's spec, a ServiceEntry's
// inline endpoint and a WorkloadGroup's template).
type workloadEntrySpec struct {
	Address        string            `yaml:"address"`
	Ports          map[string]int64  `yaml:"ports"`
	Labels         map[string]string `yaml:"labels"`
	Network        string            `yaml:"network"`
	Locality       string            `yaml:"locality"`
	Weight         int64             `yaml:"weight"`
	ServiceAccount string            `yaml:"serviceAccount"`
}

// workloadSelector is WorkloadSelector.
type workloadSelector struct {
	Labels map[string]string `yaml:"labels"`
}

// destinationRuleSpec is DestinationRule.
type destinationRuleSpec struct {
	Host             string         `yaml:"host"`
	TrafficPolicy    *trafficPolicy `yaml:"trafficPolicy"`
	Subsets          []subset       `yaml:"subsets"`
	ExportTo         []string       `yaml:"exportTo"`
	WorkloadSelector *matchSelector `yaml:"workloadSelector"`
}

// matchSelector is istio.type.v1beta1.WorkloadSelector, the selector of a
// DestinationRule, whose field is matchLabels (ServiceEntry's
// WorkloadSelector names it labels).
type matchSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

// trafficPolicy is TrafficPolicy.
type trafficPolicy struct {
	LoadBalancer      *loadBalancerSettings   `yaml:"loadBalancer"`
	ConnectionPool    *connectionPoolSettings `yaml:"connectionPool"`
	OutlierDetection  *outlierDetection       `yaml:"outlierDetection"`
	TLS               any                     `yaml:"tls"`
	PortLevelSettings []portTrafficPolicy     `yaml:"portLevelSettings"`
	Tunnel            any                     `yaml:"tunnel"`
	ProxyProtocol     any                     `yaml:"proxyProtocol"`
	RetryBudget       any                     `yaml:"retryBudget"`
}

// portTrafficPolicy is TrafficPolicy.PortTrafficPolicy.
type portTrafficPolicy struct {
	Port             *portSelector           `yaml:"port"`
	LoadBalancer     *loadBalancerSettings   `yaml:"loadBalancer"`
	ConnectionPool   *connectionPoolSettings `yaml:"connectionPool"`
	OutlierDetection *outlierDetection       `yaml:"outlierDetection"`
	TLS              any                     `yaml:"tls"`
}

// portSelector is PortSelector.
type portSelector struct {
	Number int64 `yaml:"number"`
}

// subset is Subset.
type subset struct {
	Name          string            `yaml:"name"`
	Labels        map[string]string `yaml:"labels"`
	TrafficPolicy *trafficPolicy    `yaml:"trafficPolicy"`
}

// loadBalancerSettings is LoadBalancerSettings.
type loadBalancerSettings struct {
	Simple             *string            `yaml:"simple"`
	ConsistentHash     *consistentHashLB  `yaml:"consistentHash"`
	LocalityLbSetting  *localityLbSetting `yaml:"localityLbSetting"`
	WarmupDurationSecs any                `yaml:"warmupDurationSecs"`
	Warmup             any                `yaml:"warmup"`
}

// consistentHashLB is LoadBalancerSettings.ConsistentHashLB.
type consistentHashLB struct {
	HTTPHeaderName         *string   `yaml:"httpHeaderName"`
	HTTPCookie             any       `yaml:"httpCookie"`
	UseSourceIP            *bool     `yaml:"useSourceIp"`
	HTTPQueryParameterName *string   `yaml:"httpQueryParameterName"`
	RingHash               *ringHash `yaml:"ringHash"`
	Maglev                 *magLev   `yaml:"maglev"`
	MinimumRingSize        *int64    `yaml:"minimumRingSize"`
	HTTPHeaderRegexRewrite any       `yaml:"httpHeaderRegexRewrite"`
}

type ringHash struct {
	MinimumRingSize int64 `yaml:"minimumRingSize"`
}

type magLev struct {
	TableSize int64 `yaml:"tableSize"`
}

// localityLbSetting is LocalityLoadBalancerSetting.
type localityLbSetting struct {
	Distribute       []distribute `yaml:"distribute"`
	Failover         []failover   `yaml:"failover"`
	FailoverPriority []string     `yaml:"failoverPriority"`
	Enabled          *bool        `yaml:"enabled"`
}

type distribute struct {
	From string           `yaml:"from"`
	To   map[string]int64 `yaml:"to"`
}

type failover struct {
	From string `yaml:"from"`
	To   string `yaml:"to"`
}

// connectionPoolSettings is ConnectionPoolSettings. HTTP settings do not
// apply to a TCP passthrough and are accepted without a warning.
type connectionPoolSettings struct {
	TCP  *tcpSettings  `yaml:"tcp"`
	HTTP *httpSettings `yaml:"http"`
}

type tcpSettings struct {
	MaxConnections        *int64        `yaml:"maxConnections"`
	ConnectTimeout        *string       `yaml:"connectTimeout"`
	TCPKeepalive          *tcpKeepalive `yaml:"tcpKeepalive"`
	MaxConnectionDuration *string       `yaml:"maxConnectionDuration"`
	IdleTimeout           *string       `yaml:"idleTimeout"`
}

type tcpKeepalive struct {
	Probes   any `yaml:"probes"`
	Time     any `yaml:"time"`
	Interval any `yaml:"interval"`
}

type httpSettings struct {
	HTTP1MaxPendingRequests  any `yaml:"http1MaxPendingRequests"`
	HTTP2MaxRequests         any `yaml:"http2MaxRequests"`
	MaxRequestsPerConnection any `yaml:"maxRequestsPerConnection"`
	MaxRetries               any `yaml:"maxRetries"`
	IdleTimeout              any `yaml:"idleTimeout"`
	H2UpgradePolicy          any `yaml:"h2UpgradePolicy"`
	UseClientProtocol        any `yaml:"useClientProtocol"`
	MaxConcurrentStreams     any `yaml:"maxConcurrentStreams"`
}

// outlierDetection is OutlierDetection. maxEjectionTime is not in the Istio
// API; it is accepted because the gateway can honour it (Envoy's field).
type outlierDetection struct {
	ConsecutiveErrors              *int64  `yaml:"consecutiveErrors"`
	SplitExternalLocalOriginErrors bool    `yaml:"splitExternalLocalOriginErrors"`
	ConsecutiveLocalOriginFailures *int64  `yaml:"consecutiveLocalOriginFailures"`
	ConsecutiveGatewayErrors       *int64  `yaml:"consecutiveGatewayErrors"`
	Consecutive5xxErrors           *int64  `yaml:"consecutive5xxErrors"`
	Interval                       *string `yaml:"interval"`
	BaseEjectionTime               *string `yaml:"baseEjectionTime"`
	MaxEjectionTime                *string `yaml:"maxEjectionTime"`
	MaxEjectionPercent             *int64  `yaml:"maxEjectionPercent"`
	MinHealthPercent               *int64  `yaml:"minHealthPercent"`
}

// workloadGroupSpec is WorkloadGroup.
type workloadGroupSpec struct {
	Metadata *WorkloadGroupMeta `yaml:"metadata"`
	Template workloadEntrySpec  `yaml:"template"`
	Probe    *ReadinessProbe    `yaml:"probe"`
}

// WorkloadGroup is an Istio WorkloadGroup, kept for the health checker: the
// loader creates no endpoints from it (istiod would only once a VM
// registers).
type WorkloadGroup struct {
	// File and Name, Namespace say where it was declared.
	File, Name, Namespace string
	// Metadata is spec.metadata: labels and annotations every member
	// WorkloadEntry inherits.
	Metadata WorkloadGroupMeta
	// Template is spec.template (address and labels are normally empty).
	Template WorkloadEntry
	// Probe is spec.probe; nil when unset.
	Probe *ReadinessProbe
}

// WorkloadGroupMeta is WorkloadGroup.ObjectMeta.
type WorkloadGroupMeta struct {
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// WorkloadEntry is the WorkloadEntry message as a WorkloadGroup template
// carries it. Ports maps a service port name to the workload's port.
type WorkloadEntry struct {
	Address        string
	Ports          map[string]uint32
	Labels         map[string]string
	Network        string
	Locality       string
	Weight         uint32
	ServiceAccount string
}

// ReadinessProbe mirrors Istio's ReadinessProbe (Kubernetes probe syntax).
// Zero values mean "unset"; Istio's defaults are timeout 1 s, period 10 s,
// success threshold 1 and failure threshold 3. At most one of HTTPGet,
// TCPSocket, Exec and GRPC is set.
type ReadinessProbe struct {
	InitialDelaySeconds int32                  `yaml:"initialDelaySeconds"`
	TimeoutSeconds      int32                  `yaml:"timeoutSeconds"`
	PeriodSeconds       int32                  `yaml:"periodSeconds"`
	SuccessThreshold    int32                  `yaml:"successThreshold"`
	FailureThreshold    int32                  `yaml:"failureThreshold"`
	HTTPGet             *HTTPHealthCheckConfig `yaml:"httpGet"`
	TCPSocket           *TCPHealthCheckConfig  `yaml:"tcpSocket"`
	Exec                *ExecHealthCheckConfig `yaml:"exec"`
	GRPC                *GRPCHealthCheckConfig `yaml:"grpc"`
}

// HTTPHealthCheckConfig is ReadinessProbe.httpGet.
type HTTPHealthCheckConfig struct {
	Path        string       `yaml:"path"`
	Port        uint32       `yaml:"port"`
	Host        string       `yaml:"host"`
	Scheme      string       `yaml:"scheme"`
	HTTPHeaders []HTTPHeader `yaml:"httpHeaders"`
}

// HTTPHeader is one httpGet header.
type HTTPHeader struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

// TCPHealthCheckConfig is ReadinessProbe.tcpSocket.
type TCPHealthCheckConfig struct {
	Host string `yaml:"host"`
	Port uint32 `yaml:"port"`
}

// ExecHealthCheckConfig is ReadinessProbe.exec.
type ExecHealthCheckConfig struct {
	Command []string `yaml:"command"`
}

// GRPCHealthCheckConfig is ReadinessProbe.grpc (Kubernetes' gRPC probe),
// accepted so that newer Istio resources load.
type GRPCHealthCheckConfig struct {
	Port    uint32 `yaml:"port"`
	Service string `yaml:"service"`
}
