package proxy

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/eastwest-gw/eastwest/sni"
)

// Config is one AUTO_PASSTHROUGH listener. Zero values mean the documented
// default; Validate fills them in and reports what is wrong.
type Config struct {
	// Name labels metrics and logs. Default "auto-passthrough".
	Name string
	// Address to listen on, host:port. Required.
	Address string
	// Listeners is the number of SO_REUSEPORT sockets bound to Address so
	// that accepts spread over every core. 0 means GOMAXPROCS.
	Listeners int
	// HelloTimeout bounds the wait for a complete ClientHello (Envoy's
	// listener_filters_timeout). 0 means 15 s.
	HelloTimeout time.Duration
	// MaxHelloBytes caps the ClientHello size. 0 means 64 KiB.
	MaxHelloBytes int
	// MaxConnections caps concurrent client connections on this listener;
	// connections past it are closed at once and counted as overflow.
	// 0 means 9000 (each proxied connection holds two of the 20,000 fds a
	// process may open here, and the gateway needs some for itself).
	MaxConnections int
	// ConnectTimeout bounds one upstream connect attempt when the cluster's
	// DestinationRule sets none. 0 means 10 s (Istio's meshConfig default).
	ConnectTimeout time.Duration
	// MaxConnectAttempts bounds attempts per client connection, each on a
	// host not yet tried when one remains (TCP-2). 0 means 3.
	MaxConnectAttempts int
	// IdleTimeout closes a connection with no bytes in either direction for
	// this long, when the DestinationRule sets none. 0 means 1 h; negative
	// disables it.
	IdleTimeout time.Duration
	// RequireIstioALPN refuses Istio SNI names whose ClientHello offers no
	// Istio ALPN (SNI-4g). Plain host names are not checked: their clients
	// are not sidecars. nil means true.
	RequireIstioALPN *bool
	// Rewrites are applied in order to the SNI before lookup (RW-1).
	Rewrites []sni.Rule
	// RewriteStopOnFirstMatch ends rewriting at the first rule that matched.
	RewriteStopOnFirstMatch bool
	// StatsExpiry drops a cluster's series after this long without a
	// connection (MET-3). 0 means 10 minutes.
	StatsExpiry time.Duration
}

// Defaults for Config, exported so the settings documentation and the
// validate command print the same numbers.
const (
	DefaultHelloTimeout       = 15 * time.Second
	DefaultMaxHelloBytes      = 64 << 10
	DefaultMaxConnections     = 9000
	DefaultConnectTimeout     = 10 * time.Second
	DefaultMaxConnectAttempts = 3
	DefaultIdleTimeout        = time.Hour
)

// Validate fills in defaults and returns every problem found.
func (c *Config) Validate() error {
	var errs []error
	if c.Name == "" {
		c.Name = "auto-passthrough"
	}
	if c.Address == "" {
		errs = append(errs, fmt.Errorf("listener %s: address is required", c.Name))
	}
	if c.Listeners == 0 {
		c.Listeners = runtime.GOMAXPROCS(0)
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = DefaultHelloTimeout
	}
	if c.MaxHelloBytes == 0 {
		c.MaxHelloBytes = DefaultMaxHelloBytes
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MaxConnectAttempts == 0 {
		c.MaxConnectAttempts = DefaultMaxConnectAttempts
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.StatsExpiry <= 0 {
		c.StatsExpiry = 10 * time.Minute
	}
	if c.RequireIstioALPN == nil {
		t := true
		c.RequireIstioALPN = &t
	}
	switch {
	case c.Listeners < 0 || c.Listeners > 256:
		errs = append(errs, fmt.Errorf("listener %s: listeners must be 1..256, got %d", c.Name, c.Listeners))
	case c.HelloTimeout < 0:
		errs = append(errs, fmt.Errorf("listener %s: helloTimeout must be positive", c.Name))
	case c.MaxHelloBytes < 512 || c.MaxHelloBytes > 1<<20:
		errs = append(errs, fmt.Errorf("listener %s: maxHelloBytes must be 512..1048576, got %d", c.Name, c.MaxHelloBytes))
	case c.MaxConnections < 0:
		errs = append(errs, fmt.Errorf("listener %s: maxConnections must be positive", c.Name))
	case c.ConnectTimeout < 0:
		errs = append(errs, fmt.Errorf("listener %s: connectTimeout must be positive", c.Name))
	case c.MaxConnectAttempts < 0 || c.MaxConnectAttempts > 16:
		errs = append(errs, fmt.Errorf("listener %s: maxConnectAttempts must be 1..16, got %d", c.Name, c.MaxConnectAttempts))
	}
	if _, err := sni.NewRewriter(c.Rewrites, c.RewriteStopOnFirstMatch, 0); err != nil {
		errs = append(errs, fmt.Errorf("listener %s: sniRewrites: %w", c.Name, err))
	}
	return errors.Join(errs...)
}
