package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
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
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
	"github.com/eastwest-gw/eastwest/proxy"
)

var _ proxy.Picker = (*balancer.Balancer)(nil)

func loadMesh(ctx context.Context, s *Settings) (*istioyaml.Result, error) {
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
	servers  []*proxy.Server
	ready    atomic.Bool
	draining atomic.Bool
	reloads  *prometheus.CounterVec
	admin    *http.Server
	adminLn  net.Listener
	tp       *sdktrace.TracerProvider // nil when tracing is off
}

// run starts the gateway and blocks until ctx ends, then drains (DR-1).
func run(ctx context.Context, s *Settings, file string, fs *pflag.FlagSet, stdout, stderr io.Writer) error {
	// Subscribe before anything starts: SIGHUP's default action ends the
	// process, and a reload may come the moment readiness is reported.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	g, err := start(ctx, s, stdout, stderr)
	if err != nil {
		return err
	}
	for {
		select {
		case <-hup:
			g.reload(ctx, file, fs)
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
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "eastwest_config_reloads_total", Help: "Mesh and settings reloads, by result."}, []string{"result"})
	g.reg.MustRegister(g.reloads)

	g.bal = balancer.New(balancer.Options{Locality: s.gatewayLocality(), Network: s.Network, Logger: log.With("component", "balancer")})
	g.store.Subscribe(g.bal.Update)
	go g.bal.Run(ctx)

	fwd, err := newForwarder(s, log, g.reg)
	if err != nil {
		return nil, err
	}
	tp, err := newTracerProvider(ctx, s, log)
	if err != nil {
		return nil, err
	}
	g.tp = tp
	var alog *proxy.AccessLog
	if s.Log.AccessLog {
		f := proxy.AccessLogText
		if s.Log.AccessLogFormat == "json" {
			f = proxy.AccessLogJSON
		}
		alog = proxy.NewAccessLog(stdout, f)
	}
	pm, err := proxy.NewMetrics(g.reg, s.ClusterName)
	if err != nil {
		return nil, err
	}
	for _, l := range s.Listeners {
		srv, err := proxy.New(l.proxyConfig(), proxy.Deps{
			Store: g.store, Picker: g.bal, Forwarder: fwd, Logger: log, AccessLog: alog,
			Metrics: pm, TracerProvider: tracerOrNil(tp),
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
	for _, srv := range g.servers {
		go func() {
			if err := srv.Serve(); err != nil {
				log.Error("listener stopped", "err", err)
			}
		}()
	}
	g.ready.Store(true)
	addrs := make([]string, len(g.servers))
	for i, srv := range g.servers {
		addrs[i] = srv.Addr()
	}
	log.Info("eastwest ready", "listeners", strings.Join(addrs, ","), "version", buildVersion(), "cluster", s.ClusterName, "network", s.Network,
		"locality", s.Locality, "clusters", len(res.Snapshot.Clusters()), "admin", g.adminLn.Addr().String())
	return g, nil
}

func (g *gateway) closeListeners() {
	for _, srv := range g.servers {
		_ = srv.Shutdown(context.Background(), 0)
	}
}

// reload re-reads the settings file and the mesh; anything that does not
// validate is reported and the running config stays.
func (g *gateway) reload(ctx context.Context, file string, fs *pflag.FlagSet) {
	s, err := loadSettings(file, fs)
	if err == nil {
		var res *istioyaml.Result
		if res, err = loadMesh(ctx, s); err == nil {
			g.store.Swap(res.Snapshot)
			g.reloads.WithLabelValues("ok").Inc()
			g.log.Info("mesh reloaded", "clusters", len(res.Snapshot.Clusters()), "version", res.Snapshot.Version)
			if s.Network != g.s.Network || len(s.Listeners) != len(g.s.Listeners) {
				g.log.Warn("listener, network and forwarder settings change only on restart")
			}
			return
		}
	}
	g.reloads.WithLabelValues("rejected").Inc()
	g.log.Error("reload rejected; the running config stays", "err", err)
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
	var errs []error
	var mu sync.Mutex
	for _, srv := range g.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx, g.s.Drain.IdleClose); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sctx, scancel := context.WithTimeout(context.Background(), time.Second)
	defer scancel()
	_ = g.admin.Shutdown(sctx)
	if g.tp != nil {
		_ = g.tp.Shutdown(sctx) // flush spans of the last connections
	}
	if len(errs) > 0 {
		g.log.Warn("drain ended at the deadline with connections still open")
	} else {
		g.log.Info("drained")
	}
	return nil
}

func (g *gateway) startAdmin() error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	ready := func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case g.draining.Load():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case !g.ready.Load():
			http.Error(w, "starting", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	}
	mux.HandleFunc("GET /ready", ready)
	mux.HandleFunc("GET /healthz/ready", ready) // Istio's status port path
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{Registry: g.reg}))
	mux.HandleFunc("GET /debug/config", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.s)
	})
	mux.HandleFunc("GET /debug/clusters", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.bal.DebugClusters())
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", g.s.Admin.Address)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	g.adminLn = ln
	g.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := g.admin.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("admin server stopped", "err", err)
		}
	}()
	return nil
}

// tracerOrNil keeps a nil *TracerProvider from becoming a non-nil interface.
func tracerOrNil(tp *sdktrace.TracerProvider) trace.TracerProvider {
	if tp == nil {
		return nil
	}
	return tp
}
