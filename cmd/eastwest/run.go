package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/eastwest-gw/eastwest/balancer"
	ewebpf "github.com/eastwest-gw/eastwest/ebpf"
	"github.com/eastwest-gw/eastwest/health"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
	"github.com/eastwest-gw/eastwest/proxy"
)

var (
	_ proxy.Picker = (*balancer.Balancer)(nil)
	_ health.Sink  = (*balancer.Balancer)(nil)
)

func loadMesh(ctx context.Context, s *Settings) (*istioyaml.Result, error) {
	if s.dynamicMesh() {
		// The mesh comes from a control plane; empty until it answers.
		snap, err := mesh.Build(mesh.Spec{Version: "pending"})
		if err != nil {
			return nil, err
		}
		return &istioyaml.Result{Snapshot: snap}, nil
	}
	if len(s.Mesh.Paths) == 0 {
		return nil, errors.New("mesh.paths: no Istio YAML files or folders given (set mesh.paths or --mesh)")
	}
	return istioyaml.Load(ctx, s.Mesh.Paths, istioyaml.Options{Network: s.Network, Namespace: s.Namespace})
}

// gateway is one running instance: what run starts and drains.
type gateway struct {
	s        *Settings
	log      *slog.Logger
	reg      *prometheus.Registry
	store    *mesh.Store
	bal      *balancer.Balancer
	hc       *health.Checker // nil without health checks
	groups   atomic.Pointer[[]health.Group]
	fwd      *ewebpf.Forwarder
	servers  []*proxy.Server
	ready    atomic.Bool
	draining atomic.Bool
	reloads  *prometheus.CounterVec
	admin    []*http.Server
	adminLn  net.Listener
	tp       *sdktrace.TracerProvider // nil when tracing is off
	reloadMu sync.Mutex
}

// run starts the gateway and blocks until ctx ends, then drains (DR-1).
func run(ctx context.Context, s *Settings, file string, fs *pflag.FlagSet, stdout, stderr io.Writer) error {
	// Subscribe before anything starts: SIGHUP's default action ends the
	// process, and a reload may come the moment readiness is reported.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// Watch before start, too: an edit made the moment readiness is
	// reported must not be missed.
	changed := make(chan struct{}, 1)
	var watchErr error
	if !s.dynamicMesh() && s.Mesh.Watch {
		watchErr = watchFiles(ctx, append([]string{file}, s.Mesh.Paths...), changed, newLogger(s, stderr))
	}
	g, err := start(ctx, s, stdout, stderr)
	if err != nil {
		return err
	}
	if watchErr != nil {
		g.log.Warn("mesh files are not watched; reload with SIGHUP", "err", watchErr)
	}
	for {
		select {
		case <-hup:
			g.reload(ctx, file, fs, "SIGHUP")
		case <-changed:
			g.reload(ctx, file, fs, "file change")
		case <-ctx.Done():
			return g.drain()
		}
	}
}

// start loads everything, binds every socket and serves. Nothing is bound
// unless all of it validates.
func start(ctx context.Context, s *Settings, stdout, stderr io.Writer) (*gateway, error) {
	log := newLogger(s, stderr)
	res, err := loadMesh(ctx, s)
	if err != nil {
		return nil, err
	}
	for _, w := range res.Warnings {
		log.Warn("mesh", "file", w.File, "resource", w.Resource, "warning", w.Message)
	}
	g := &gateway{s: s, log: log, reg: prometheus.NewRegistry(), store: mesh.NewStore(res.Snapshot)}
	groups := groupsFrom(res.WorkloadGroups)
	g.groups.Store(&groups)
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "eastwest_config_reloads_total", Help: "Mesh and settings reloads, by result."}, []string{"result"})
	g.reg.MustRegister(g.reloads)

	g.bal = balancer.New(balancer.Options{Locality: s.gatewayLocality(), Network: s.Network, Logger: log.With("component", "balancer")})
	pm, err := proxy.NewMetrics(g.reg, s.ClusterName)
	if err != nil {
		return nil, err
	}
	g.reg.MustRegister(balancerCollector{b: g.bal})
	g.store.Subscribe(g.bal.Update) // before health: verdicts name endpoints the balancer knows
	go g.bal.Run(ctx)
	if len(s.HealthChecks) > 0 || len(groups) > 0 {
		var hcTLS *tls.Config
		if s.HealthCheckTLS != nil {
			if hcTLS, err = s.HealthCheckTLS.ClientConfig(); err != nil {
				return nil, fmt.Errorf("healthCheckTLS: %w", err)
			}
		}
		g.hc = health.New(health.Options{
			TLSConfig: hcTLS,
			Sink:      g.bal, Logger: log.With("component", "health"), Registerer: g.reg,
			ClusterHasTraffic: pm.ClusterHasTraffic,
			OnUnhealthy: func(ep netip.AddrPort, window time.Duration) {
				for _, srv := range g.servers {
					srv.CloseConnections(ep, window)
				}
			},
		})
		g.store.Subscribe(func(snap *mesh.Snapshot) {
			g.hc.Update(health.TargetsFor(snap, s.HealthChecks, *g.groups.Load()...))
		})
		go g.hc.Run(ctx)
	}

	if g.fwd, err = newForwarder(s, log, g.reg); err != nil {
		return nil, err
	}
	if g.tp, err = newTracerProvider(ctx, s, log); err != nil {
		return nil, err
	}
	var alog *proxy.AccessLog
	if s.Log.AccessLog {
		f := proxy.AccessLogText
		if s.Log.AccessLogFormat == "json" {
			f = proxy.AccessLogJSON
		}
		w := stdout
		if p := s.Log.AccessLogPath; p != "" && p != "-" {
			file, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
			if err != nil {
				return nil, fmt.Errorf("log.accessLogPath: %w", err)
			}
			w = file
		}
		alog = proxy.NewAccessLog(w, f)
	}
	for _, l := range s.Listeners {
		srv, err := proxy.New(l.proxyConfig(), proxy.Deps{
			Store: g.store, Picker: g.bal, Forwarder: g.fwd, Logger: log, AccessLog: alog,
			Metrics: pm, TracerProvider: tracerOrNil(g.tp),
		})
		if err == nil {
			err = srv.Listen()
		}
		if err != nil {
			g.closeListeners()
			return nil, err
		}
		g.servers = append(g.servers, srv)
	}
	if err := g.startAdmin(); err != nil {
		g.closeListeners()
		return nil, err
	}
	var srcErr error
	switch {
	case s.Discovery.XDS.Address != "":
		srcErr = g.startXDS(ctx)
	case s.Discovery.Kubernetes.Enabled:
		srcErr = g.startKube(ctx)
	}
	if srcErr != nil {
		g.closeListeners()
		return nil, srcErr
	}
	g.awaitFirstChecks()
	for _, srv := range g.servers {
		go func() {
			if err := srv.Serve(); err != nil {
				log.Error("listener stopped", "err", err)
			}
		}()
	}
	addrs := make([]string, len(g.servers))
	for i, srv := range g.servers {
		addrs[i] = srv.Addr()
	}
	if !s.dynamicMesh() {
		g.ready.Store(true)
	}
	log.Info("eastwest ready", "listeners", strings.Join(addrs, ","), "version", buildVersion(), "cluster", s.ClusterName,
		"network", s.Network, "locality", s.Locality, "clusters", len(res.Snapshot.Clusters()), "admin", g.adminLn.Addr().String())
	return g, nil
}

// awaitFirstChecks holds the listeners back, for a bounded time, until every
// endpoint has had its first active check: Envoy's hosts start unhealthy
// until then, and routing before it would refuse clients for nothing.
func (g *gateway) awaitFirstChecks() {
	if g.hc == nil {
		return
	}
	deadline := time.Now().Add(g.s.Drain.IdleClose + 5*time.Second)
	for g.hc.Pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := g.hc.Pending(); n > 0 {
		g.log.Warn("starting before every endpoint was checked", "pending", n)
	}
}

func (g *gateway) closeListeners() {
	for _, srv := range g.servers {
		_ = srv.Shutdown(context.Background(), 0)
	}
	if g.fwd != nil {
		_ = g.fwd.Close()
	}
}

// reload re-reads the settings file and the mesh; anything that does not
// validate is reported and the running config stays.
func (g *gateway) reload(ctx context.Context, file string, fs *pflag.FlagSet, why string) {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	s, err := loadSettings(file, fs)
	if err == nil && !s.dynamicMesh() {
		err = emptyMeshFile(s.Mesh.Paths)
	}
	if err == nil {
		var res *istioyaml.Result
		if res, err = loadMesh(ctx, s); err == nil {
			if s.dynamicMesh() {
				g.log.Info("the mesh comes from a control plane; nothing to reload", "trigger", why)
				return
			}
			groups := groupsFrom(res.WorkloadGroups)
			g.groups.Store(&groups)
			g.store.Swap(res.Snapshot)
			g.reloads.WithLabelValues("ok").Inc()
			g.log.Info("mesh reloaded", "trigger", why, "clusters", len(res.Snapshot.Clusters()), "version", res.Snapshot.Version)
			if s.Network != g.s.Network || len(s.Listeners) != len(g.s.Listeners) || s.Forwarder != g.s.Forwarder {
				g.log.Warn("listener, network and forwarder settings change only on restart")
			}
			return
		}
	}
	g.reloads.WithLabelValues("rejected").Inc()
	g.log.Error("reload rejected; the running config stays", "trigger", why, "err", err)
}

// drain follows DR-1: readiness fails first, listeners keep accepting for
// the grace period, then close, idle connections get a FIN, the rest get
// until the deadline.
func (g *gateway) drain() error {
	g.draining.Store(true)
	g.ready.Store(false)
	g.log.Info("draining", "acceptGrace", g.s.Drain.AcceptGrace, "deadline", g.s.Drain.Deadline)
	time.Sleep(g.s.Drain.AcceptGrace)
	ctx, cancel := context.WithTimeout(context.Background(), g.s.Drain.Deadline)
	defer cancel()
	var wg sync.WaitGroup
	var forced atomic.Bool
	for _, srv := range g.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx, g.s.Drain.IdleClose); err != nil {
				forced.Store(true)
			}
		}()
	}
	wg.Wait()
	_ = g.fwd.Close()
	sctx, scancel := context.WithTimeout(context.Background(), time.Second)
	defer scancel()
	for _, a := range g.admin {
		_ = a.Shutdown(sctx)
	}
	if g.tp != nil {
		_ = g.tp.Shutdown(sctx) // flush spans of the last connections
	}
	if forced.Load() {
		g.log.Warn("drain ended at the deadline with connections still open")
	} else {
		g.log.Info("drained")
	}
	return nil
}

func (g *gateway) readyHandler(w http.ResponseWriter, _ *http.Request) {
	switch {
	case g.draining.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
	case !g.ready.Load():
		http.Error(w, "starting", http.StatusServiceUnavailable)
	default:
		fmt.Fprintln(w, "ready")
	}
}

func (g *gateway) startAdmin() error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /ready", g.readyHandler)
	mux.HandleFunc("GET /healthz/ready", g.readyHandler) // Istio's status port path
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{Registry: g.reg}))
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	mux.HandleFunc("GET /debug/config", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, g.s.redacted()) })
	mux.HandleFunc("GET /debug/clusters", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, g.bal.DebugClusters()) })
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", g.s.Admin.Address)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	g.adminLn = ln
	g.serveHTTP(ln, mux)
	if addr := g.s.Status.Address; addr != "" {
		// Istio's status port: what a cloud load balancer may reach, so it
		// serves readiness and nothing else.
		smux := http.NewServeMux()
		smux.HandleFunc("GET /healthz/ready", g.readyHandler)
		smux.HandleFunc("GET /ready", g.readyHandler)
		sln, err := net.Listen("tcp", addr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("status: %w", err)
		}
		g.serveHTTP(sln, smux)
	}
	return nil
}

func (g *gateway) serveHTTP(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	g.admin = append(g.admin, srv)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("admin server stopped", "err", err)
		}
	}()
}

// tracerOrNil keeps a nil *TracerProvider from becoming a non-nil interface.
func tracerOrNil(tp *sdktrace.TracerProvider) trace.TracerProvider {
	if tp == nil {
		return nil
	}
	return tp
}

// emptyMeshFile returns an error naming a zero-byte YAML file among paths.
// A file written in place is empty between its truncation and its write; a
// reload that read it then would drop every route. The file event of the
// write itself triggers the next, complete reload.
func emptyMeshFile(paths []string) error {
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			if ext := filepath.Ext(path); path != p && ext != ".yaml" && ext != ".yml" {
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Size() == 0 {
				return fmt.Errorf("mesh file %s is empty (a write in progress?)", path)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
