package health

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Istio sidecar readiness endpoint (HC-2): what a check targets when its
// config names no method. pilot-agent answers 200 once Envoy is ready and 503
// while it drains.
const (
	IstioReadinessPort = 15021
	IstioReadinessPath = "/healthz/ready"
)

// Defaults applied by WithDefaults. Kubernetes' probe defaults, except
// DefaultSuccessThreshold (HC-4: re-admission needs two passes; Kubernetes
// uses 1) and DefaultNoTrafficInterval (Envoy's no_traffic_interval).
const (
	DefaultPeriod            = 10 * time.Second
	DefaultTimeout           = 1 * time.Second
	DefaultFailureThreshold  = 3
	DefaultSuccessThreshold  = 2
	DefaultNoTrafficInterval = 60 * time.Second
)

// ErrExecProbe is returned (wrapped) for a probe with exec: the gateway
// cannot run a command inside a workload.
var ErrExecProbe = errors.New("exec probes cannot run from the gateway: use httpGet, tcpSocket or grpc")

// CheckConfig is one active health check: which service it applies to, how
// to check (Kubernetes probe field names) and when (Kubernetes periods and
// thresholds plus Envoy's intervals and jitter). The zero value of a field
// means "default"; WithDefaults fills every default in and validates.
//
// At most one of HTTPGet, TCPSocket and GRPC may be set. With none, the check
// is HC-2's default for Istio workloads: HTTP GET
// http://<endpoint>:15021/healthz/ready, the sidecar's readiness.
//
// In gateway settings (YAML, decoded with mapstructure's
// StringToTimeDurationHookFunc so durations read as "1s"):
//
//	healthChecks:
//	  - host: "*"                     # every service: the sidecar readiness default
//	  - host: reviews.default.svc.cluster.local
//	    port: 9080
//	    httpGet: {path: /health, port: 9080}
//	    periodSeconds: 5
//	    failureThreshold: 2
type CheckConfig struct {
	// Host selects the services: an exact service host, "*.suffix" (any
	// host ending in .suffix) or "*" (every service). The most specific
	// entry wins (exact, then the longest suffix, then "*"); an entry with
	// Port beats one without at the same host. Unused for WorkloadGroup
	// probes.
	Host string `mapstructure:"host" yaml:"host" json:"host"`
	// Port restricts the entry to one service port; 0 means every port.
	Port uint16 `mapstructure:"port" yaml:"port,omitempty" json:"port,omitempty"`

	// HTTPGet checks with an HTTP or HTTPS GET.
	HTTPGet *HTTPGetAction `mapstructure:"httpGet" yaml:"httpGet,omitempty" json:"httpGet,omitempty"`
	// TCPSocket checks a TCP connect, and optionally a send/receive exchange.
	TCPSocket *TCPSocketAction `mapstructure:"tcpSocket" yaml:"tcpSocket,omitempty" json:"tcpSocket,omitempty"`
	// GRPC checks with grpc.health.v1.Health/Check.
	GRPC *GRPCAction `mapstructure:"grpc" yaml:"grpc,omitempty" json:"grpc,omitempty"`
	// Exec is accepted by the decoder only to be rejected with ErrExecProbe.
	Exec *ExecAction `mapstructure:"exec" yaml:"exec,omitempty" json:"exec,omitempty"`

	// InitialDelaySeconds delays a new endpoint's first check.
	InitialDelaySeconds int32 `mapstructure:"initialDelaySeconds" yaml:"initialDelaySeconds,omitempty" json:"initialDelaySeconds,omitempty"`
	// TimeoutSeconds bounds one check; a timeout is a failure. Default 1.
	TimeoutSeconds int32 `mapstructure:"timeoutSeconds" yaml:"timeoutSeconds,omitempty" json:"timeoutSeconds,omitempty"`
	// PeriodSeconds is the interval between checks. Default 10.
	PeriodSeconds int32 `mapstructure:"periodSeconds" yaml:"periodSeconds,omitempty" json:"periodSeconds,omitempty"`
	// SuccessThreshold is Envoy's healthy_threshold: consecutive passes that
	// readmit an unhealthy endpoint. Default 2 (HC-4). A new endpoint needs
	// one pass (Envoy's start-up rule).
	SuccessThreshold int32 `mapstructure:"successThreshold" yaml:"successThreshold,omitempty" json:"successThreshold,omitempty"`
	// FailureThreshold is Envoy's unhealthy_threshold: consecutive network
	// failures or timeouts that fail a healthy endpoint. Default 3. A bad
	// answer (an unexpected HTTP status, gRPC NOT_SERVING) fails it at once.
	FailureThreshold int32 `mapstructure:"failureThreshold" yaml:"failureThreshold,omitempty" json:"failureThreshold,omitempty"`

	// Interval replaces PeriodSeconds when sub-second periods are needed
	// (tests, demos); setting both is an error.
	Interval time.Duration `mapstructure:"interval" yaml:"interval,omitempty" json:"interval,omitempty"`
	// Timeout replaces TimeoutSeconds likewise.
	Timeout time.Duration `mapstructure:"timeout" yaml:"timeout,omitempty" json:"timeout,omitempty"`

	// InitialJitter is Envoy's initial_jitter: the first check waits a
	// random time in [0, InitialJitter). Unset (nil) selects the gateway's
	// spread [IMPROVE]: the first check runs at once and the second at a
	// random point of the first interval, so endpoints that appear together
	// check out of phase. Set it, even to 0s, for Envoy's exact schedule.
	InitialJitter *time.Duration `mapstructure:"initialJitter" yaml:"initialJitter,omitempty" json:"initialJitter,omitempty"`
	// IntervalJitter is Envoy's interval_jitter: each wait grows by a random
	// time in [0, IntervalJitter).
	IntervalJitter time.Duration `mapstructure:"intervalJitter" yaml:"intervalJitter,omitempty" json:"intervalJitter,omitempty"`
	// IntervalJitterPercent is Envoy's interval_jitter_percent: each wait
	// grows by a random part of up to this percentage of it.
	IntervalJitterPercent uint32 `mapstructure:"intervalJitterPercent" yaml:"intervalJitterPercent,omitempty" json:"intervalJitterPercent,omitempty"`
	// NoTrafficInterval is used while none of the endpoint's clusters has
	// carried traffic, when the Checker is told (Options.ClusterHasTraffic).
	// Default 60s.
	NoTrafficInterval time.Duration `mapstructure:"noTrafficInterval" yaml:"noTrafficInterval,omitempty" json:"noTrafficInterval,omitempty"`
	// NoTrafficHealthyInterval is used instead of NoTrafficInterval for a
	// healthy endpoint. Default NoTrafficInterval.
	NoTrafficHealthyInterval time.Duration `mapstructure:"noTrafficHealthyInterval" yaml:"noTrafficHealthyInterval,omitempty" json:"noTrafficHealthyInterval,omitempty"`
	// UnhealthyInterval is the interval after a failed check. Default the
	// period.
	UnhealthyInterval time.Duration `mapstructure:"unhealthyInterval" yaml:"unhealthyInterval,omitempty" json:"unhealthyInterval,omitempty"`
	// UnhealthyEdgeInterval is the interval after a failure that has not
	// yet reached FailureThreshold. Default UnhealthyInterval.
	UnhealthyEdgeInterval time.Duration `mapstructure:"unhealthyEdgeInterval" yaml:"unhealthyEdgeInterval,omitempty" json:"unhealthyEdgeInterval,omitempty"`
	// HealthyEdgeInterval is the interval after a pass that has not yet
	// reached SuccessThreshold. Default the period.
	HealthyEdgeInterval time.Duration `mapstructure:"healthyEdgeInterval" yaml:"healthyEdgeInterval,omitempty" json:"healthyEdgeInterval,omitempty"`
	// ReuseConnection keeps one connection per HTTP or gRPC target between
	// checks (Envoy's reuse_connection). Default true. TCP checks always
	// open a new connection.
	ReuseConnection *bool `mapstructure:"reuseConnection" yaml:"reuseConnection,omitempty" json:"reuseConnection,omitempty"`
	// AlwaysLogHealthCheckFailures logs every failed check at info level,
	// not just transitions and the first check.
	AlwaysLogHealthCheckFailures bool `mapstructure:"alwaysLogHealthCheckFailures" yaml:"alwaysLogHealthCheckFailures,omitempty" json:"alwaysLogHealthCheckFailures,omitempty"`

	// CloseConnectionsOnHostHealthFailure asks (Options.OnUnhealthy) to close
	// established connections to an endpoint that turns unhealthy (HC-6).
	// Default false: connections stay, as in Envoy.
	CloseConnectionsOnHostHealthFailure bool `mapstructure:"closeConnectionsOnHostHealthFailure" yaml:"closeConnectionsOnHostHealthFailure,omitempty" json:"closeConnectionsOnHostHealthFailure,omitempty"`
	// CloseConnectionsWindow spreads those closures over this long, so that
	// closing thousands of connections does not stall the gateway. Default
	// 0: close at once.
	CloseConnectionsWindow time.Duration `mapstructure:"closeConnectionsWindow" yaml:"closeConnectionsWindow,omitempty" json:"closeConnectionsWindow,omitempty"`
}

// HTTPGetAction is the Kubernetes httpGet probe plus Envoy's status matching.
type HTTPGetAction struct {
	// Path is the request path. Default "/" (IstioReadinessPath for the
	// HC-2 default check).
	Path string `mapstructure:"path" yaml:"path,omitempty" json:"path,omitempty"`
	// Port is the port to check on the endpoint's address; 0 means the
	// endpoint's own (traffic) port.
	Port uint16 `mapstructure:"port" yaml:"port,omitempty" json:"port,omitempty"`
	// Host is the Host header (Envoy's meaning). Default the target
	// address. Kubernetes uses this field for the address to connect to,
	// which for a gateway checking endpoints is always the endpoint.
	Host string `mapstructure:"host" yaml:"host,omitempty" json:"host,omitempty"`
	// Scheme is HTTP (default) or HTTPS. HTTPS uses Options.TLSConfig, or
	// skips verification like the kubelet when that is nil.
	Scheme string `mapstructure:"scheme" yaml:"scheme,omitempty" json:"scheme,omitempty"`
	// HTTPHeaders are added to the request; a "Host" header sets the Host.
	HTTPHeaders []HTTPHeader `mapstructure:"httpHeaders" yaml:"httpHeaders,omitempty" json:"httpHeaders,omitempty"`
	// ExpectedStatuses are the passing statuses as half-open ranges.
	// Default [{start: 200, end: 201}]: 200 only, as Envoy. Any other
	// status fails the endpoint at once unless it is retriable.
	ExpectedStatuses []StatusRange `mapstructure:"expectedStatuses" yaml:"expectedStatuses,omitempty" json:"expectedStatuses,omitempty"`
	// RetriableStatuses count toward FailureThreshold instead of failing
	// at once.
	RetriableStatuses []StatusRange `mapstructure:"retriableStatuses" yaml:"retriableStatuses,omitempty" json:"retriableStatuses,omitempty"`
}

// HTTPHeader is one request header.
type HTTPHeader struct {
	Name  string `mapstructure:"name" yaml:"name" json:"name"`
	Value string `mapstructure:"value" yaml:"value" json:"value"`
}

// StatusRange is the half-open range [Start, End) of HTTP statuses.
type StatusRange struct {
	Start int `mapstructure:"start" yaml:"start" json:"start"`
	End   int `mapstructure:"end" yaml:"end" json:"end"`
}

// TCPSocketAction is the Kubernetes tcpSocket probe plus Envoy's
// send/receive payloads.
type TCPSocketAction struct {
	// Port is the port to connect to; 0 means the endpoint's own port. A
	// plain connect to an Istio workload's service port reaches its sidecar
	// and always succeeds: prefer the readiness endpoint (HC-2).
	Port uint16 `mapstructure:"port" yaml:"port,omitempty" json:"port,omitempty"`
	// Send is hex-encoded bytes to write after connecting; empty means
	// connect only.
	Send string `mapstructure:"send" yaml:"send,omitempty" json:"send,omitempty"`
	// Receive are hex-encoded blocks that must all be found in the reply,
	// in order but not necessarily contiguous (Envoy's fuzzy match).
	Receive []string `mapstructure:"receive" yaml:"receive,omitempty" json:"receive,omitempty"`
}

// GRPCAction is the Kubernetes grpc probe.
type GRPCAction struct {
	// Port is the port to call; 0 means the endpoint's own port.
	Port uint16 `mapstructure:"port" yaml:"port,omitempty" json:"port,omitempty"`
	// Service is HealthCheckRequest.service; empty asks about the server.
	Service string `mapstructure:"service" yaml:"service,omitempty" json:"service,omitempty"`
}

// ExecAction is the Kubernetes exec probe, always rejected.
type ExecAction struct {
	Command []string `mapstructure:"command" yaml:"command,omitempty" json:"command,omitempty"`
}

// method names the checker type in logs and errors.
type method uint8

const (
	methodHTTP method = iota
	methodTCP
	methodGRPC
)

var methodNames = [...]string{"http", "tcp", "grpc"}

func (m method) String() string { return methodNames[m] }

// Validate reports whether c is usable, as WithDefaults.
func (c CheckConfig) Validate() error {
	_, err := c.WithDefaults()
	return err
}

// WithDefaults returns c with every default filled in, or an error naming
// each invalid field. Durations come out in Interval and Timeout whatever
// was set, so the result no longer uses PeriodSeconds and TimeoutSeconds.
// It is idempotent.
func (c CheckConfig) WithDefaults() (CheckConfig, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Host != "" && c.Host != "*" {
		h := strings.TrimPrefix(c.Host, "*.")
		if h == "" || strings.Contains(h, "*") {
			bad("host", "%q: want an exact host, *.suffix or *", c.Host)
		}
	}
	methods := 0
	for _, set := range []bool{c.HTTPGet != nil, c.TCPSocket != nil, c.GRPC != nil, c.Exec != nil} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		bad("probe", "only one of httpGet, tcpSocket, grpc and exec may be set")
	}
	if c.Exec != nil {
		errs = append(errs, fmt.Errorf("exec: %w", ErrExecProbe))
	}
	if methods == 0 {
		c.HTTPGet = &HTTPGetAction{Path: IstioReadinessPath, Port: IstioReadinessPort}
	}
	if h := c.HTTPGet; h != nil {
		cp := *h
		cp.HTTPHeaders = append([]HTTPHeader(nil), h.HTTPHeaders...)
		if cp.Path == "" {
			cp.Path = "/"
		}
		if !strings.HasPrefix(cp.Path, "/") {
			bad("httpGet.path", "%q must start with /", cp.Path)
		}
		switch strings.ToUpper(cp.Scheme) {
		case "", "HTTP":
			cp.Scheme = "HTTP"
		case "HTTPS":
			cp.Scheme = "HTTPS"
		default:
			bad("httpGet.scheme", "%q: want HTTP or HTTPS", cp.Scheme)
		}
		for i, hd := range cp.HTTPHeaders {
			if hd.Name == "" || strings.ContainsAny(hd.Name, " :\r\n") || strings.ContainsAny(hd.Value, "\r\n") {
				bad(fmt.Sprintf("httpGet.httpHeaders[%d]", i), "invalid header %q", hd.Name)
			}
		}
		if len(cp.ExpectedStatuses) == 0 {
			cp.ExpectedStatuses = []StatusRange{{Start: 200, End: 201}}
		}
		for i, r := range cp.ExpectedStatuses {
			if r.Start < 100 || r.End > 600 || r.Start >= r.End {
				bad(fmt.Sprintf("httpGet.expectedStatuses[%d]", i), "[%d, %d) is not a range within [100, 600)", r.Start, r.End)
			}
		}
		for i, r := range cp.RetriableStatuses {
			if r.Start < 100 || r.End > 600 || r.Start >= r.End {
				bad(fmt.Sprintf("httpGet.retriableStatuses[%d]", i), "[%d, %d) is not a range within [100, 600)", r.Start, r.End)
			}
		}
		c.HTTPGet = &cp
	}
	if t := c.TCPSocket; t != nil {
		cp := *t
		cp.Receive = append([]string(nil), t.Receive...)
		if _, err := hex.DecodeString(cp.Send); err != nil {
			bad("tcpSocket.send", "not hex: %v", err)
		}
		for i, r := range cp.Receive {
			if b, err := hex.DecodeString(r); err != nil || len(b) == 0 {
				bad(fmt.Sprintf("tcpSocket.receive[%d]", i), "want non-empty hex")
			}
		}
		if len(cp.Receive) > 0 && cp.Send == "" {
			bad("tcpSocket.receive", "needs send")
		}
		c.TCPSocket = &cp
	}
	if g := c.GRPC; g != nil {
		cp := *g
		c.GRPC = &cp
	}

	for name, v := range map[string]int32{"initialDelaySeconds": c.InitialDelaySeconds, "timeoutSeconds": c.TimeoutSeconds,
		"periodSeconds": c.PeriodSeconds, "successThreshold": c.SuccessThreshold, "failureThreshold": c.FailureThreshold} {
		if v < 0 {
			bad(name, "%d must not be negative", v)
		}
	}
	for name, v := range map[string]time.Duration{"interval": c.Interval, "timeout": c.Timeout, "intervalJitter": c.IntervalJitter,
		"noTrafficInterval": c.NoTrafficInterval, "noTrafficHealthyInterval": c.NoTrafficHealthyInterval,
		"unhealthyInterval": c.UnhealthyInterval, "unhealthyEdgeInterval": c.UnhealthyEdgeInterval,
		"healthyEdgeInterval": c.HealthyEdgeInterval, "closeConnectionsWindow": c.CloseConnectionsWindow} {
		if v < 0 {
			bad(name, "%v must not be negative", v)
		}
	}
	if c.InitialJitter != nil && *c.InitialJitter < 0 {
		bad("initialJitter", "%v must not be negative", *c.InitialJitter)
	}
	if c.IntervalJitterPercent > 100 {
		bad("intervalJitterPercent", "%d is over 100", c.IntervalJitterPercent)
	}
	switch {
	case c.Interval > 0 && c.PeriodSeconds > 0 && c.Interval != time.Duration(c.PeriodSeconds)*time.Second:
		bad("interval", "set either interval or periodSeconds")
	case c.Interval == 0 && c.PeriodSeconds > 0:
		c.Interval = time.Duration(c.PeriodSeconds) * time.Second
	case c.Interval == 0:
		c.Interval = DefaultPeriod
	}
	switch {
	case c.Timeout > 0 && c.TimeoutSeconds > 0 && c.Timeout != time.Duration(c.TimeoutSeconds)*time.Second:
		bad("timeout", "set either timeout or timeoutSeconds")
	case c.Timeout == 0 && c.TimeoutSeconds > 0:
		c.Timeout = time.Duration(c.TimeoutSeconds) * time.Second
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	}
	// Keep the seconds fields only when they say the same as the durations,
	// so WithDefaults is idempotent and the key of two equal checks is equal.
	c.PeriodSeconds, c.TimeoutSeconds = 0, 0
	if c.SuccessThreshold == 0 {
		c.SuccessThreshold = DefaultSuccessThreshold
	}
	if c.FailureThreshold == 0 {
		c.FailureThreshold = DefaultFailureThreshold
	}
	if c.NoTrafficInterval == 0 {
		c.NoTrafficInterval = DefaultNoTrafficInterval
	}
	if c.NoTrafficHealthyInterval == 0 {
		c.NoTrafficHealthyInterval = c.NoTrafficInterval
	}
	if c.UnhealthyInterval == 0 {
		c.UnhealthyInterval = c.Interval
	}
	if c.UnhealthyEdgeInterval == 0 {
		c.UnhealthyEdgeInterval = c.UnhealthyInterval
	}
	if c.HealthyEdgeInterval == 0 {
		c.HealthyEdgeInterval = c.Interval
	}
	if c.ReuseConnection == nil {
		t := true
		c.ReuseConnection = &t
	}
	if len(errs) > 0 {
		return CheckConfig{}, fmt.Errorf("health check %s: %w", c.name(), errors.Join(errs...))
	}
	return c, nil
}

// name identifies the config in errors.
func (c CheckConfig) name() string {
	switch {
	case c.Host == "":
		return "(probe)"
	case c.Port != 0:
		return fmt.Sprintf("%s:%d", c.Host, c.Port)
	default:
		return c.Host
	}
}

// method returns the checker type of a config that went through
// WithDefaults.
func (c *CheckConfig) method() method {
	switch {
	case c.TCPSocket != nil:
		return methodTCP
	case c.GRPC != nil:
		return methodGRPC
	default:
		return methodHTTP
	}
}

// checkPort returns the port the check targets, 0 meaning the endpoint's.
func (c *CheckConfig) checkPort() uint16 {
	switch {
	case c.HTTPGet != nil:
		return c.HTTPGet.Port
	case c.TCPSocket != nil:
		return c.TCPSocket.Port
	case c.GRPC != nil:
		return c.GRPC.Port
	}
	return 0
}

// checkAddr is where the check of endpoint ep goes: ep's IP, the config's
// port or else ep's.
func (c *CheckConfig) checkAddr(ep netip.AddrPort) netip.AddrPort {
	if port := c.checkPort(); port != 0 {
		return netip.AddrPortFrom(ep.Addr(), port)
	}
	return ep
}

// specKey is the part of a defaulted config that decides what a check does
// and when: two targets with the same address and specKey share one check
// (HC-4 dedup). Selectors and connection-closing settings are per member.
func (c CheckConfig) specKey() string {
	c.Host, c.Port = "", 0
	c.CloseConnectionsOnHostHealthFailure, c.CloseConnectionsWindow = false, 0
	b, err := json.Marshal(c)
	if err != nil {
		// Only plain types: cannot happen; an unshared key is still correct.
		return fmt.Sprintf("%p", &c)
	}
	return string(b)
}
