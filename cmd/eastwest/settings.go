package main

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/eastwest-gw/eastwest/health"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/proxy"
	"github.com/eastwest-gw/eastwest/sni"
	ewtls "github.com/eastwest-gw/eastwest/tls"
)

//go:embed default.yaml
var defaultSettings []byte

// Settings is the gateway's own configuration file (not the mesh: that is
// Istio YAML under Mesh.Paths). Keys are camelCase as in Istio.
type Settings struct {
	ClusterName string           `mapstructure:"clusterName"`
	Network     string           `mapstructure:"network"`
	Namespace   string           `mapstructure:"namespace"`
	Locality    string           `mapstructure:"locality"`
	Listeners   []ListenerConfig `mapstructure:"listeners"`
	Admin       struct {
		Address string `mapstructure:"address"`
	} `mapstructure:"admin"`
	Status struct {
		// Address serves only /healthz/ready and /ready (Istio's 15021
		// convention) for cloud load balancer health checks; empty: off.
		Address string `mapstructure:"address"`
	} `mapstructure:"status"`
	Mesh struct {
		Paths []string `mapstructure:"paths"`
		// Watch reloads when a file under Paths or the settings file
		// changes, as SIGHUP does.
		Watch bool `mapstructure:"watch"`
	} `mapstructure:"mesh"`
	Discovery struct {
		XDS        XDSSettings        `mapstructure:"xds"`
		Kubernetes KubernetesSettings `mapstructure:"kubernetes"`
	} `mapstructure:"discovery"`
	HealthChecks []health.CheckConfig `mapstructure:"healthChecks"`
	// HealthCheckTLS verifies HTTPS health-check servers (and presents a
	// client certificate if set); unset, HTTPS checks do not verify, as
	// the kubelet's probes do not.
	HealthCheckTLS *ewtls.Files `mapstructure:"healthCheckTLS"`
	Forwarder      string       `mapstructure:"forwarder"`
	Tracing        struct {
		// OTLPEndpoint is an OTLP/HTTP URL such as http://collector:4318;
		// OTEL_EXPORTER_OTLP_* variables take precedence.
		OTLPEndpoint string `mapstructure:"otlpEndpoint"`
	} `mapstructure:"tracing"`
	Drain struct {
		AcceptGrace time.Duration `mapstructure:"acceptGrace"`
		IdleClose   time.Duration `mapstructure:"idleClose"`
		Deadline    time.Duration `mapstructure:"deadline"`
	} `mapstructure:"drain"`
	Log struct {
		Level           string `mapstructure:"level"`
		Format          string `mapstructure:"format"`
		AccessLog       bool   `mapstructure:"accessLog"`
		AccessLogFormat string `mapstructure:"accessLogFormat"`
		// AccessLogPath is a file to append access log lines to; empty or
		// "-" means standard output.
		AccessLogPath string `mapstructure:"accessLogPath"`
	} `mapstructure:"log"`
}

// XDSSettings connect the gateway to istiod instead of reading mesh files.
type XDSSettings struct {
	Address    string            `mapstructure:"address"`
	ServerName string            `mapstructure:"serverName"`
	Insecure   bool              `mapstructure:"insecure"`
	Delta      bool              `mapstructure:"delta"`
	CertFile   string            `mapstructure:"certFile"`
	KeyFile    string            `mapstructure:"keyFile"`
	CAFile     string            `mapstructure:"caFile"`
	TokenFile  string            `mapstructure:"tokenFile"`
	ClusterID  string            `mapstructure:"clusterId"`
	Labels     map[string]string `mapstructure:"labels"`
	// PodIP, PodName, Namespace and ServiceAccount default to the
	// INSTANCE_IP, POD_NAME, POD_NAMESPACE and SERVICE_ACCOUNT variables
	// Istio's gateway pods set.
	PodIP          string `mapstructure:"podIP"`
	PodName        string `mapstructure:"podName"`
	ServiceAccount string `mapstructure:"serviceAccount"`
}

// KubernetesSettings take the mesh from the Kubernetes API (Services,
// EndpointSlices, Nodes) for clusters without Istio.
type KubernetesSettings struct {
	Enabled bool `mapstructure:"enabled"`
	// Kubeconfig is a kubeconfig file; empty means in-cluster.
	Kubeconfig      string            `mapstructure:"kubeconfig"`
	Namespaces      []string          `mapstructure:"namespaces"`
	NamespaceLabels map[string]string `mapstructure:"namespaceLabels"`
	ClusterDomain   string            `mapstructure:"clusterDomain"`
	Resync          time.Duration     `mapstructure:"resync"`
	Debounce        time.Duration     `mapstructure:"debounce"`
	// DestinationRules reads Istio DestinationRules (and Pods, for subset
	// labels) when the CRD is installed. Default true.
	DestinationRules bool `mapstructure:"destinationRules"`
}

// dynamicMesh reports whether the mesh comes from a control plane (xDS or
// Kubernetes) instead of mesh.paths.
func (s *Settings) dynamicMesh() bool {
	return s.Discovery.XDS.Address != "" || s.Discovery.Kubernetes.Enabled
}

// ListenerConfig is one entry of listeners.
type ListenerConfig struct {
	Name                    string        `mapstructure:"name"`
	Address                 string        `mapstructure:"address"`
	Mode                    string        `mapstructure:"mode"`
	SNIRewrites             []sni.Rule    `mapstructure:"sniRewrites"`
	RewriteStopOnFirstMatch bool          `mapstructure:"sniRewriteStopOnFirstMatch"`
	Sockets                 int           `mapstructure:"sockets"`
	HelloTimeout            time.Duration `mapstructure:"helloTimeout"`
	MaxHelloBytes           int           `mapstructure:"maxHelloBytes"`
	MaxConnections          int           `mapstructure:"maxConnections"`
	ConnectTimeout          time.Duration `mapstructure:"connectTimeout"`
	MaxConnectAttempts      int           `mapstructure:"maxConnectAttempts"`
	IdleTimeout             time.Duration `mapstructure:"idleTimeout"`
	RequireIstioALPN        *bool         `mapstructure:"requireIstioAlpn"`
}

// proxyConfig maps a listener entry to the proxy's plain config.
func (l ListenerConfig) proxyConfig() proxy.Config {
	return proxy.Config{
		Name: l.Name, Address: l.Address, Listeners: l.Sockets, HelloTimeout: l.HelloTimeout,
		MaxHelloBytes: l.MaxHelloBytes, MaxConnections: l.MaxConnections, ConnectTimeout: l.ConnectTimeout,
		MaxConnectAttempts: l.MaxConnectAttempts, IdleTimeout: l.IdleTimeout, RequireIstioALPN: l.RequireIstioALPN,
		Rewrites: l.SNIRewrites, RewriteStopOnFirstMatch: l.RewriteStopOnFirstMatch,
	}
}

// loadSettings reads the embedded default, then file (if any), then
// EASTWEST_* variables and the flags that were set. Unknown keys in the file
// are errors, so a typo never silently keeps a default.
func loadSettings(file string, flags *pflag.FlagSet) (*Settings, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(string(defaultSettings))); err != nil {
		return nil, fmt.Errorf("embedded default settings: %w", err)
	}
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("settings: %w", err)
		}
		defer f.Close()
		// A file replaces the default's lists wholesale (listeners), but
		// merges maps key by key.
		if err := v.MergeConfig(f); err != nil {
			return nil, fmt.Errorf("settings %s: %w", file, err)
		}
	}
	v.SetEnvPrefix("EASTWEST")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for _, k := range []string{"clusterName", "network", "namespace", "locality", "admin.address", "forwarder", "log.level", "log.format", "log.accessLog", "drain.deadline", "drain.acceptGrace", "drain.idleClose"} {
		_ = v.BindEnv(k, "EASTWEST_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_")))
	}
	if env := os.Getenv("EASTWEST_MESH_PATHS"); env != "" {
		v.Set("mesh.paths", strings.Split(env, ","))
	}
	if flags != nil {
		bind := map[string]string{"admin-address": "admin.address", "forwarder": "forwarder", "locality": "locality", "network": "network", "cluster-name": "clusterName", "log-level": "log.level"}
		for flag, key := range bind {
			if f := flags.Lookup(flag); f != nil && f.Changed {
				v.Set(key, f.Value.String())
			}
		}
		if f := flags.Lookup("mesh"); f != nil && f.Changed {
			paths, _ := flags.GetStringSlice("mesh")
			v.Set("mesh.paths", paths)
		}
	}
	var s Settings
	dec := func(c *mapstructure.DecoderConfig) {
		c.ErrorUnused = true
		c.DecodeHook = mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc(), mapstructure.StringToSliceHookFunc(","))
	}
	if err := v.Unmarshal(&s, dec); err != nil {
		return nil, fmt.Errorf("settings %s: %w", orDefault(file), err)
	}
	if f := flags; f != nil {
		if l := f.Lookup("listen"); l != nil && l.Changed && len(s.Listeners) > 0 {
			s.Listeners[0].Address = l.Value.String()
		}
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("settings %s: %w", orDefault(file), err)
	}
	return &s, nil
}

func orDefault(file string) string {
	if file == "" {
		return "(embedded default)"
	}
	return file
}

// validate fills defaults and returns every problem, one per line.
func (s *Settings) validate() error {
	var errs []error
	if s.Namespace == "" {
		s.Namespace = "istio-system"
	}
	if s.Locality != "" && strings.Count(s.Locality, "/") > 2 {
		errs = append(errs, fmt.Errorf("locality %q: want region/zone/subzone", s.Locality))
	}
	if len(s.Listeners) == 0 {
		errs = append(errs, errors.New("listeners: at least one is required"))
	}
	seen := map[string]bool{}
	for i := range s.Listeners {
		l := &s.Listeners[i]
		if l.Name == "" {
			l.Name = fmt.Sprintf("listener-%d", i)
		}
		if seen[l.Name] {
			errs = append(errs, fmt.Errorf("listeners[%d]: name %q used twice", i, l.Name))
		}
		seen[l.Name] = true
		if l.Mode == "" {
			l.Mode = "AUTO_PASSTHROUGH"
		}
		if l.Mode != "AUTO_PASSTHROUGH" {
			errs = append(errs, fmt.Errorf("listeners[%d] %s: mode %q is not supported (AUTO_PASSTHROUGH)", i, l.Name, l.Mode))
		}
		pc := l.proxyConfig()
		if err := pc.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("listeners[%d]: %w", i, err))
		}
		if _, _, err := net.SplitHostPort(l.Address); l.Address != "" && err != nil {
			errs = append(errs, fmt.Errorf("listeners[%d] %s: address: %w", i, l.Name, err))
		}
	}
	if _, _, err := net.SplitHostPort(s.Admin.Address); s.Admin.Address != "" && err != nil {
		errs = append(errs, fmt.Errorf("admin.address: %w", err))
	}
	if _, _, err := net.SplitHostPort(s.Status.Address); s.Status.Address != "" && err != nil {
		errs = append(errs, fmt.Errorf("status.address: %w", err))
	}
	for i := range s.HealthChecks {
		c, err := s.HealthChecks[i].WithDefaults()
		if err != nil {
			errs = append(errs, fmt.Errorf("healthChecks[%d]: %w", i, err))
			continue
		}
		s.HealthChecks[i] = c
	}
	if s.Discovery.XDS.Address != "" && s.Discovery.Kubernetes.Enabled {
		errs = append(errs, errors.New("discovery: choose xds or kubernetes, not both"))
	}
	if s.HealthCheckTLS != nil {
		if err := s.HealthCheckTLS.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("healthCheckTLS: %w", err))
		}
	}
	x := &s.Discovery.XDS
	if x.Address != "" {
		if _, _, err := net.SplitHostPort(x.Address); err != nil {
			errs = append(errs, fmt.Errorf("discovery.xds.address: %w", err))
		}
		if !x.Insecure && x.CAFile == "" {
			errs = append(errs, errors.New("discovery.xds: caFile is required unless insecure is true"))
		}
		x.PodIP = orStr(x.PodIP, os.Getenv("INSTANCE_IP"))
		x.PodName = orStr(x.PodName, os.Getenv("POD_NAME"))
		x.ServiceAccount = orStr(x.ServiceAccount, os.Getenv("SERVICE_ACCOUNT"))
		if x.PodIP == "" {
			errs = append(errs, errors.New("discovery.xds: podIP (or INSTANCE_IP) is required: istiod names the gateway by it"))
		}
	}
	switch s.Forwarder {
	case "", "auto", "sockmap", "splice":
		if s.Forwarder == "" {
			s.Forwarder = "auto"
		}
	default:
		errs = append(errs, fmt.Errorf("forwarder %q: want auto, sockmap or splice", s.Forwarder))
	}
	if s.Drain.Deadline <= 0 {
		s.Drain.Deadline = 25 * time.Second
	}
	if s.Drain.IdleClose <= 0 {
		s.Drain.IdleClose = time.Second
	}
	if s.Drain.AcceptGrace < 0 {
		errs = append(errs, errors.New("drain.acceptGrace must not be negative"))
	}
	switch strings.ToLower(s.Log.Level) {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", s.Log.Level))
	}
	for key, v := range map[string]string{"log.format": s.Log.Format, "log.accessLogFormat": s.Log.AccessLogFormat} {
		if v != "" && v != "text" && v != "json" {
			errs = append(errs, fmt.Errorf("%s %q: want text or json", key, v))
		}
	}
	return errors.Join(errs...)
}

// redacted returns a copy for /debug/config with secrets' paths kept but
// nothing read from them, and labels that could carry tokens removed.
func (s *Settings) redacted() Settings {
	c := *s
	if c.Discovery.XDS.TokenFile != "" {
		c.Discovery.XDS.TokenFile = "(set)"
	}
	return c
}

// gatewayLocality is the parsed locality setting.
func (s *Settings) gatewayLocality() mesh.Locality { return mesh.ParseLocality(s.Locality) }
