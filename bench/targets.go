package bench

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Target kinds.
const (
	KindDirect   = "direct"   // no proxy: the load tool talks to the sink
	KindEastwest = "eastwest" // the gateway binary with one settings file
	KindHAProxy  = "haproxy"
	KindNginx    = "nginx"
)

// Target is one thing to measure. Adding an eastwest variant is one entry
// with its settings keys.
type Target struct {
	Name string
	Kind string
	// Settings are extra top-level keys of the eastwest settings file
	// (forwarder: splice, ...), written as given.
	Settings map[string]string
	// Traced turns the gateway's tracing on, exporting over OTLP/HTTP to
	// the sink's receiver.
	Traced bool
}

// DefaultTargets is every target the runner knows, in the order it runs
// them within a round.
var DefaultTargets = []Target{
	{Name: "direct", Kind: KindDirect},
	{Name: "eastwest-splice", Kind: KindEastwest, Settings: map[string]string{"forwarder": "splice"}},
	{Name: "eastwest-sockmap", Kind: KindEastwest, Settings: map[string]string{"forwarder": "sockmap"}},
	{Name: "eastwest-auto", Kind: KindEastwest, Settings: map[string]string{"forwarder": "auto"}},
	// The cost of tracing: a span per connection, exported in batches to
	// the sink's OTLP receiver, which accepts and discards them. An address
	// that refuses would flatter the figure: the exporter backs off and the
	// batch processor drops what it cannot queue, so no span would ever be
	// marshalled or sent. Metrics are always on in every target.
	{Name: "eastwest-auto-traced", Kind: KindEastwest, Settings: map[string]string{"forwarder": "auto"}, Traced: true},
	{Name: "haproxy", Kind: KindHAProxy},
	{Name: "nginx", Kind: KindNginx},
}

// LookupTarget finds a target of DefaultTargets by name.
func LookupTarget(name string) (Target, bool) {
	for _, t := range DefaultTargets {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// layout is where one run puts things: every target listens on the same
// ports and forwards to the same sink.
type layout struct {
	dir             string
	proxy, admin    string // 127.0.0.1:port
	sinkRaw, sinkTL string
	otlp            string // the sink's OTLP receiver, host:port
	maxConns        int
}

func (l layout) sniMap() [][2]string {
	return [][2]string{{DefaultSNI, l.sinkRaw}, {DefaultTLSSNI, l.sinkTL}}
}

// meshYAML is the gateway's view of the sink: one Istio ServiceEntry with
// a raw port and a TLS port at one inline, mTLS-capable endpoint.
func (l layout) meshYAML() string {
	_, rawPort, _ := strings.Cut(l.sinkRaw, ":")
	_, tlsPort, _ := strings.Cut(l.sinkTL, ":")
	return fmt.Sprintf(`# Written by bench: the sink as a mesh service, in the shape of demo-mesh.yaml.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: sink, namespace: default}
spec:
  hosts: [sink.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
    - {number: 9080, name: tcp-sink, protocol: TCP}
    - {number: 9443, name: tls-sink, protocol: TCP}
  endpoints:
    - address: 127.0.0.1
      ports: {tcp-sink: %s, tls-sink: %s}
      labels: {app: sink, version: v1}
      locality: region1/zone1/subzone1
      network: network2
      serviceAccount: sink
`, rawPort, tlsPort)
}

// eastwestSettings is the gateway's settings file for target t.
func (l layout) eastwestSettings(t Target, meshFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by bench for target %s.
clusterName: cluster2
network: network2
namespace: istio-system
locality: region1/zone1/subzone1
listeners:
  - name: bench
    address: %s
    mode: AUTO_PASSTHROUGH
    maxConnections: %d
admin:
  address: %s
mesh:
  paths: [%s]
drain: {acceptGrace: 0s, idleClose: 100ms, deadline: 1s}
log: {level: info, format: text, accessLog: false}
`, t.Name, l.proxy, l.maxConns, l.admin, meshFile)
	for _, k := range slices.Sorted(maps.Keys(t.Settings)) {
		fmt.Fprintf(&b, "%s: %s\n", k, t.Settings[k])
	}
	if t.Traced {
		fmt.Fprintf(&b, "tracing: {otlpEndpoint: 'http://%s/v1/traces'}\n", l.otlp)
	}
	return b.String()
}

// haproxyConfig follows BASELINE.md: mode tcp, wait for the ClientHello,
// pick the backend by req.ssl_sni, splice both ways, two threads. No
// per-connection log: eastwest's access log is off too.
func (l layout) haproxyConfig(mapFile string) string {
	return fmt.Sprintf(`# Written by bench.
global
    nbthread 2
    maxconn %d
    # Each pipe costs two of the 20,000 fds a process may open here; by
    # default HAProxy reserves maxconn/4 pipes and would not start.
    maxpipes 32
    tune.pipesize 1048576

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    option splice-request
    option splice-response

frontend eastwest
    bind %s
    maxconn %d
    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    use_backend %%[req.ssl_sni,lower,map(%s)]

backend sink_raw
    server sink %s

backend sink_tls
    server sink %s
`, l.maxConns, l.proxy, l.maxConns, mapFile, l.sinkRaw, l.sinkTL)
}

func (l layout) haproxyMap() string {
	return fmt.Sprintf("%s sink_raw\n%s sink_tls\n", DefaultSNI, DefaultTLSSNI)
}

// nginxStreamModule is where Debian's libnginx-mod-stream puts the module.
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// nginxConfig follows BASELINE.md: stream, ssl_preread, a map of the SNI,
// proxy_half_close so a client's end of stream reaches the sink.
func (l layout) nginxConfig() string {
	load := ""
	if _, err := os.Stat(nginxStreamModule); err == nil {
		load = "load_module " + nginxStreamModule + ";"
	}
	var m strings.Builder
	for _, e := range l.sniMap() {
		fmt.Fprintf(&m, "        %s %s;\n", e[0], e[1])
	}
	return fmt.Sprintf(`# Written by bench.
%s
daemon off;
worker_processes 2;
worker_rlimit_nofile 20000;
pid %s;
error_log %s warn;

events {
    worker_connections 20000;
}

stream {
    map_hash_bucket_size 128;
    map $ssl_preread_server_name $sink {
%s        default 127.0.0.1:1;
    }
    server {
        listen %s backlog=4096;
        ssl_preread on;
        preread_timeout 5s;
        proxy_pass $sink;
        proxy_half_close on;
        proxy_connect_timeout 5s;
        proxy_timeout 1h;
    }
}
`, load, filepath.Join(l.dir, "nginx.pid"), filepath.Join(l.dir, "nginx-error.log"), m.String(), l.proxy)
}
