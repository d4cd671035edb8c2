package xds

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/eastwest-gw/eastwest/mesh"
)

// NodeInfo is how the client presents itself to istiod. istiod decides from
// these fields that the client is a gateway and which endpoints it gets:
// a wrong Network yields other gateways' addresses, a missing Namespace
// makes istiod stop treating the client as a gateway.
type NodeInfo struct {
	// ID overrides the node id. Empty means Istio's router form,
	// router~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local.
	ID string
	// IP is the gateway pod's IP; required unless ID is set.
	IP string
	// PodName and Namespace name the gateway pod; Namespace is required.
	PodName   string
	Namespace string
	// ServiceAccount is sent as SERVICE_ACCOUNT; istiod checks it against
	// the client certificate's SPIFFE identity on its mTLS port.
	ServiceAccount string
	// ClusterID is the Istio cluster name (CLUSTER_ID), e.g. "Kubernetes".
	ClusterID string
	// Network is the gateway's network (NETWORK); required.
	Network string
	// Labels are the pod labels (LABELS), e.g. istio: eastwestgateway.
	Labels map[string]string
	// Locality is the gateway's locality; istiod computes endpoint
	// priorities from it.
	Locality mesh.Locality
	// IstioVersion is sent as ISTIO_VERSION; istiod gates features on it.
	// Empty means DefaultIstioVersion.
	IstioVersion string
}

// DefaultIstioVersion is the ISTIO_VERSION sent when NodeInfo leaves it
// empty: the version whose output the package is tested against.
const DefaultIstioVersion = "1.29.0"

// Backoff bounds reconnection delays. Each failed attempt doubles the delay
// from Initial up to Max, and the client sleeps a random duration between
// half the delay and the delay (jitter, so that many gateways do not
// reconnect in step after an istiod restart).
type Backoff struct {
	// Initial is the first delay; 0 means 500 ms.
	Initial time.Duration
	// Max caps the delay; 0 means 30 s.
	Max time.Duration
}

// Options configure a Client.
type Options struct {
	// Address is istiod's gRPC address, host:port (15012 with TLS, 15010
	// plaintext).
	Address string
	// ServerName is the name checked in istiod's certificate; empty means
	// the host part of Address.
	ServerName string
	Node       NodeInfo
	// CertFile and KeyFile are the gateway's client certificate (mTLS);
	// both or neither. CAFile verifies istiod. All are re-read on each
	// connection attempt, so rotated files are picked up on reconnect.
	CertFile, KeyFile, CAFile string
	// TokenFile is a projected service-account token (audience istio-ca)
	// sent as a bearer token; re-read on each connection attempt.
	TokenFile string
	// Insecure allows a plaintext connection (istiod's 15010). Without it a
	// CAFile is required.
	Insecure bool
	// Delta uses incremental (delta) xDS, which istiod serves; if the
	// server answers Unimplemented the client falls back to state of the
	// world for good. False means state of the world.
	Delta bool
	// Logger receives connection and NACK events; nil means slog.Default().
	Logger *slog.Logger
	// Backoff bounds reconnection delays.
	Backoff Backoff
	// WarmTimeout is how long new clusters wait for their endpoints before
	// a snapshot is published with those clusters empty (Envoy's
	// initial_fetch_timeout); 0 means 15 s.
	WarmTimeout time.Duration
	// MaxMessageBytes caps one xDS response; 0 means 256 MiB (a full CDS for
	// tens of thousands of services exceeds gRPC's 4 MiB default).
	MaxMessageBytes int
}

// populate applies defaults and validates; it returns a copy.
func (o Options) populate() (Options, error) {
	if o.Address == "" {
		return o, errors.New("xds: Address is required")
	}
	host, _, err := net.SplitHostPort(o.Address)
	if err != nil {
		return o, fmt.Errorf("xds: Address: %w", err)
	}
	if o.ServerName == "" {
		o.ServerName = host
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return o, errors.New("xds: CertFile and KeyFile go together")
	}
	if !o.Insecure && o.CAFile == "" {
		return o, errors.New("xds: CAFile is required unless Insecure is set")
	}
	if o.Node.Namespace == "" {
		return o, errors.New("xds: Node.Namespace is required (istiod treats a node without it as a sidecar)")
	}
	if o.Node.Network == "" {
		return o, errors.New("xds: Node.Network is required (istiod picks endpoints by network)")
	}
	if o.Node.ID == "" {
		if _, err := netip.ParseAddr(o.Node.IP); err != nil {
			return o, fmt.Errorf("xds: Node.IP (required unless Node.ID is set): %w", err)
		}
	}
	if o.Node.IstioVersion == "" {
		o.Node.IstioVersion = DefaultIstioVersion
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Backoff.Initial <= 0 {
		o.Backoff.Initial = 500 * time.Millisecond
	}
	if o.Backoff.Max <= 0 {
		o.Backoff.Max = 30 * time.Second
	}
	o.Backoff.Max = max(o.Backoff.Max, o.Backoff.Initial)
	if o.WarmTimeout <= 0 {
		o.WarmTimeout = 15 * time.Second
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 256 << 20
	}
	return o, nil
}

// NodeID returns the node id the client sends: n.ID, or Istio's router id.
func (n NodeInfo) NodeID() string {
	if n.ID != "" {
		return n.ID
	}
	return "router~" + n.IP + "~" + n.PodName + "." + n.Namespace + "~" + n.Namespace + ".svc.cluster.local"
}
