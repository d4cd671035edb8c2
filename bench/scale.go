package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"

	"github.com/eastwest-gw/eastwest/balancer"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/istioyaml"
	"github.com/eastwest-gw/eastwest/sni"
)

// ScaleOptions configure RunScale. Zero values mean the defaults of issue
// 9: 10,000 services x 2 ports x 10 endpoints.
type ScaleOptions struct {
	// Services, Ports and Endpoints size the mesh; defaults 10,000, 2, 10.
	Services, Ports, Endpoints int
	// Lookups is the number of timed route lookups; default 1,000,000.
	Lookups int
	// MissFraction is the share of lookups for names that do not resolve
	// (unknown host, port or subset in equal parts); default 0.5.
	MissFraction float64
	// FullRuns is how often each full-snapshot path runs (median
	// reported); default 3.
	FullRuns int
	// Updates is the number of one-cluster EDS updates timed on the direct
	// path; default 200. XDSUpdates is the number per xDS mode; default 20.
	Updates, XDSUpdates int
	// Idle is how long the gateway parts sit idle with the full mesh while
	// their CPU time is measured; default 3 s.
	Idle time.Duration
	// Phases lists the phases run, in their fixed order: "direct", "yaml",
	// "xds" (the modes in XDSModes); nil means all three. The xDS phases
	// alone take a fraction of the run, for profiling the client.
	Phases []string
	// XDSModes lists the xDS protocols measured, "sotw" and/or "delta";
	// default both.
	XDSModes []string
	// Seed seeds the random choice of clusters and names; 0 means 1.
	Seed uint64
	// UpdateProfiles, when set, is a path prefix: the CPU of each
	// one-cluster update loop is profiled into PREFIX-<phase>.pprof
	// (labels phase and side), so the incremental path can be read apart
	// from the full loads. The process must not be profiling already.
	UpdateProfiles string
	// Command is the command line, for the report.
	Command string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

func (o *ScaleOptions) fill() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Services, 10_000)
	def(&o.Ports, 2)
	def(&o.Endpoints, 10)
	def(&o.Lookups, 1_000_000)
	def(&o.FullRuns, 3)
	def(&o.Updates, 200)
	def(&o.XDSUpdates, 20)
	if o.MissFraction == 0 {
		o.MissFraction = 0.5
	}
	if o.Idle == 0 {
		o.Idle = 3 * time.Second
	}
	if o.Phases == nil {
		o.Phases = []string{"direct", "yaml", "xds"}
	}
	if o.XDSModes == nil {
		o.XDSModes = []string{"sotw", "delta"}
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	switch {
	case o.Services < 1 || o.Ports < 1 || o.Endpoints < 1:
		return errors.New("scale: services, ports and endpoints must be positive")
	case o.Ports > 100:
		return errors.New("scale: at most 100 ports")
	case o.Services*o.Endpoints >= 1<<24:
		return errors.New("scale: services x endpoints must stay under 2^24 (127/8 addresses)")
	case o.MissFraction < 0 || o.MissFraction > 1:
		return errors.New("scale: miss fraction must be in [0, 1]")
	}
	for _, p := range o.Phases {
		if p != "direct" && p != "yaml" && p != "xds" {
			return fmt.Errorf("scale: phase %q: want direct, yaml or xds", p)
		}
	}
	for _, m := range o.XDSModes {
		if m != "sotw" && m != "delta" {
			return fmt.Errorf("scale: xDS mode %q: want sotw or delta", m)
		}
	}
	return nil
}

// Dist summarizes durations: nearest-rank percentiles.
type Dist struct {
	N                       int
	P50, P90, P99, Max, Avg time.Duration
}

func distOf(d []time.Duration) Dist {
	if len(d) == 0 {
		return Dist{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(q float64) time.Duration {
		i := int(float64(len(s))*q+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	return Dist{N: len(s), P50: rank(0.5), P90: rank(0.9), P99: rank(0.99), Max: s[len(s)-1], Avg: sum / time.Duration(len(s))}
}

func median(d []time.Duration) time.Duration { return distOf(d).P50 }

// XDSScale is what one xDS protocol measured.
type XDSScale struct {
	Mode string
	// Full is the time from SetSnapshot on the in-process control plane to
	// the return of the apply callback (Store.Swap with the balancer
	// subscribed); FullApply is the Swap part of it.
	Full, FullApply []time.Duration
	// FullCPU is the process CPU time of each full run, control plane
	// included (it runs in this process); UpdateCPU the same per update,
	// averaged over the loop (wait between updates included).
	FullCPU   []time.Duration
	UpdateCPU time.Duration
	// FullCP is the control plane's part of each Full: from SetSnapshot,
	// or the request a response answers, to the response handed to gRPC
	// (marshalled). The rest is gRPC and the gateway.
	FullCP []time.Duration
	// Update and UpdateApply are the same for a new snapshot on the
	// server in which one ClusterLoadAssignment changed; UpdateCP is the
	// control plane's part (as FullCP) and UpdateGateway the rest.
	Update, UpdateApply, UpdateCP, UpdateGateway Dist
	// Publishes counts snapshots handed to apply during the update runs
	// (one per update when nothing is coalesced).
	Publishes int
}

// MemFigure is heap after GC attributed to one part, per service-port.
type MemFigure struct {
	Source, Part string
	// Bytes is the HeapAlloc difference (live objects after GC); Inuse the
	// HeapInuse difference (spans holding them).
	Bytes, Inuse int64
}

// CountFigure is a goroutine count or an idle CPU figure at one moment.
type CountFigure struct {
	When  string
	Value float64
}

// ScaleReport is the outcome of RunScale.
type ScaleReport struct {
	Options      ScaleOptions
	Machine      Machine
	Started      time.Time
	Took         time.Duration
	ServicePorts int
	Endpoints    int

	// Direct: mesh values built in memory, mesh.Build, then Store.Swap
	// into a store the balancer subscribes to.
	DirectBuild, DirectApply []time.Duration
	// DirectUpdate is Snapshot.Update of one cluster, DirectSwap the
	// Store.Swap that follows (balancer.Update), DirectTotal both.
	DirectUpdate, DirectSwap, DirectTotal Dist
	// DirectCPU is the process CPU time of each full run; DirectUpdateCPU
	// the process CPU per update, averaged over the loop. CPU time varies
	// less than wall time on a shared machine.
	DirectCPU       []time.Duration
	DirectUpdateCPU time.Duration
	// YAMLCPU is the process CPU time of each Load + apply.
	YAMLCPU []time.Duration

	YAMLFiles                        int
	YAMLBytes                        int64
	YAMLWrite                        time.Duration
	YAMLLoad, YAMLApply              []time.Duration
	YAMLWarnings                     int
	XDS                              []XDSScale
	LookupAll, LookupHit, LookupMiss Dist
	LookupBatchAvg, TimerCost        time.Duration
	LookupMisses                     int

	Memory     []MemFigure
	Goroutines []CountFigure
	IdleCPU    []CountFigure // CPU ms per wall second

	// Notes are findings worth reading next to the figures.
	Notes []string
}

func (r *ScaleReport) logf(format string, args ...any) {
	fmt.Fprintf(r.Options.Log, "ewscale: "+format+"\n", args...)
}

// quietLogger formats like the gateway's text log at info level, without
// writing: the balancer logs one line per new cluster, and its cost belongs
// in the figures.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func newBalancer() *balancer.Balancer {
	return balancer.New(balancer.Options{Locality: mesh.Locality{Region: "us-east1", Zone: "us-east1-b"},
		Network: scaleNetwork, Logger: quietLogger()})
}

// heapAfterGC returns HeapAlloc and HeapInuse after two full collections.
func heapAfterGC() (alloc, inuse int64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc), int64(ms.HeapInuse)
}

// phase runs f with a pprof label phase=name, so that a CPU profile of the
// run can be split by phase (go tool pprof -tagfocus phase=...).
func phase(ctx context.Context, name string, f func(context.Context) error) error {
	var err error
	pprof.Do(ctx, pprof.Labels("phase", name), func(ctx context.Context) { err = f(ctx) })
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// RunScale generates the mesh, measures each path and returns the figures.
// It opens no socket except the in-process xDS server and client on
// 127.0.0.1. A partial report is returned with the error that stopped it.
func RunScale(ctx context.Context, o ScaleOptions) (*ScaleReport, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	r := &ScaleReport{Options: o, Machine: readMachine(ctx, binaries{}), Started: time.Now()}
	g := scaleGen{services: o.Services, ports: o.Ports, eps: o.Endpoints}
	r.ServicePorts = o.Services * o.Ports
	r.Endpoints = r.ServicePorts * o.Endpoints
	r.Goroutines = append(r.Goroutines, CountFigure{"start", float64(runtime.NumGoroutine())})
	rng := rand.New(rand.NewPCG(o.Seed, 0x5ca1e))

	type step struct {
		name string
		f    func(context.Context) error
	}
	var steps []step
	if slices.Contains(o.Phases, "direct") {
		steps = append(steps, step{"direct", func(ctx context.Context) error { return r.direct(ctx, g, rng) }})
	}
	if slices.Contains(o.Phases, "yaml") {
		steps = append(steps, step{"yaml", func(ctx context.Context) error { return r.yaml(ctx, g) }})
	}
	if slices.Contains(o.Phases, "xds") {
		for _, m := range o.XDSModes {
			steps = append(steps, step{"xds-" + m, func(ctx context.Context) error { return r.xds(ctx, g, m, rng) }})
		}
	}
	var err error
	for _, s := range steps {
		if err = ctx.Err(); err != nil {
			break
		}
		r.logf("phase %s", s.name)
		if err = phase(ctx, s.name, s.f); err != nil {
			break
		}
	}
	// Let stopped servers and clients unwind before the last count.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > int(r.Goroutines[0].Value) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.Goroutines = append(r.Goroutines, CountFigure{"end, everything stopped", float64(runtime.NumGoroutine())})
	r.Took = time.Since(r.Started)
	return r, err
}

// direct measures the gateway's own work without a source: mesh.Build,
// apply, one-cluster updates, lookups, memory, idle cost.
func (r *ScaleReport) direct(ctx context.Context, g scaleGen, rng *rand.Rand) error {
	for run := range r.Options.FullRuns {
		spec := g.meshSpec()
		b := newBalancer()
		empty, _ := mesh.Build(mesh.Spec{})
		store := mesh.NewStore(empty)
		store.Subscribe(b.Update)
		c0 := cpuNow()
		t0 := time.Now()
		snap, err := mesh.Build(spec)
		t1 := time.Now()
		if err != nil {
			return err
		}
		store.Swap(snap)
		t2 := time.Now()
		r.DirectCPU = append(r.DirectCPU, cpuNow()-c0)
		r.DirectBuild = append(r.DirectBuild, t1.Sub(t0))
		r.DirectApply = append(r.DirectApply, t2.Sub(t1))
		r.logf("direct full run %d: build %v apply %v", run, t1.Sub(t0), t2.Sub(t1))
	}

	// Memory: the snapshot alone, then with the balancer's state.
	base, baseIn := heapAfterGC()
	snap, err := mesh.Build(g.meshSpec())
	if err != nil {
		return err
	}
	snapOnly, snapIn := heapAfterGC()
	b := newBalancer()
	store := mesh.NewStore(snap)
	store.Subscribe(b.Update)
	withBal, withIn := heapAfterGC()
	r.addMem("direct", "snapshot (mesh.Build of mesh values)", snapOnly-base, snapIn-baseIn)
	r.addMem("direct", "balancer state", withBal-snapOnly, withIn-snapIn)

	bctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); b.Run(bctx) }()
	defer func() { cancel(); <-done }()

	if err := r.profiled("direct", func() error { return r.directUpdates(g, store, rng) }); err != nil {
		return err
	}
	if err := r.lookups(g, store, rng); err != nil {
		return err
	}
	r.Goroutines = append(r.Goroutines, CountFigure{"direct: full mesh in store and balancer, balancer.Run running", float64(runtime.NumGoroutine())})
	runtime.GC() // the updates' garbage is not idle cost
	cpu, err := idleCPU(ctx, r.Options.Idle)
	if err != nil {
		return err
	}
	r.IdleCPU = append(r.IdleCPU, CountFigure{"balancer.Run with the full mesh (outlier detection on every cluster)", cpu})
	runtime.KeepAlive(store)
	return nil
}

func (r *ScaleReport) addMem(source, part string, bytes, inuse int64) {
	r.Memory = append(r.Memory, MemFigure{Source: source, Part: part, Bytes: bytes, Inuse: inuse})
}

// directUpdates times Snapshot.Update of one random cluster plus the
// Store.Swap that runs balancer.Update.
func (r *ScaleReport) directUpdates(g scaleGen, store *mesh.Store, rng *rand.Rand) error {
	var upd, swap, total []time.Duration
	c0 := cpuNow()
	defer func() { r.DirectUpdateCPU = (cpuNow() - c0) / time.Duration(max(len(total), 1)) }()
	for n := range r.Options.Updates {
		i, p := rng.IntN(g.services), rng.IntN(g.ports)
		cur := store.Load()
		old, _ := cur.Lookup(g.host(i), g.svcPort(p), "")
		if old == nil {
			return fmt.Errorf("cluster %s missing", g.key(i, p))
		}
		moved := uint16(20000 + n)
		c := *old
		c.Endpoints = g.endpoints(i, p, moved)
		t0 := time.Now()
		ns, err := cur.Update(fmt.Sprintf("u%d", n), &c)
		t1 := time.Now()
		if err != nil {
			return err
		}
		store.Swap(ns)
		t2 := time.Now()
		if got, _ := store.Load().Lookup(g.host(i), g.svcPort(p), ""); got != &c {
			return fmt.Errorf("update %d not visible", n)
		}
		upd, swap, total = append(upd, t1.Sub(t0)), append(swap, t2.Sub(t1)), append(total, t2.Sub(t0))
	}
	r.DirectUpdate, r.DirectSwap, r.DirectTotal = distOf(upd), distOf(swap), distOf(total)
	r.logf("direct update: p50 %v (Update %v, Swap %v) max %v", r.DirectTotal.P50, r.DirectUpdate.P50, r.DirectSwap.P50, r.DirectTotal.Max)
	return nil
}

// Lookup name classes.
const (
	classHit = iota
	classUnknownHost
	classUnknownPort
	classUnknownSubset
)

// lookups times Rewrite + sni.ParseName + Store.Load + Snapshot.Lookup,
// the proxy's route step, per call, over existing and missing names, and
// checks every answer.
func (r *ScaleReport) lookups(g scaleGen, store *mesh.Store, rng *rand.Rand) error {
	rw, err := sni.NewRewriter(nil, false, 4096)
	if err != nil {
		return err
	}
	const pool = 1 << 16
	names := make([]string, pool)
	class := make([]uint8, pool)
	for k := range names {
		i, p := rng.IntN(g.services), rng.IntN(g.ports)
		host, port, subset := g.host(i), g.svcPort(p), ""
		if rng.Float64() < r.Options.MissFraction {
			class[k] = uint8(classUnknownHost + rng.IntN(3))
			switch class[k] {
			case classUnknownHost:
				host = "svc-" + fmt.Sprint(g.services+i) + "." + g.ns(i) + ".svc.cluster.local"
			case classUnknownPort:
				port = 7
			case classUnknownSubset:
				subset = "v9"
			}
		}
		names[k] = "outbound_." + fmt.Sprint(port) + "_." + subset + "_." + host
	}
	want := [...]mesh.Reason{classHit: mesh.ReasonNone, classUnknownHost: mesh.ReasonUnknownHost,
		classUnknownPort: mesh.ReasonUnknownPort, classUnknownSubset: mesh.ReasonUnknownSubset}
	n := r.Options.Lookups
	idx := make([]uint32, n)
	for i := range idx {
		idx[i] = uint32(rng.IntN(pool))
	}
	lat := make([]time.Duration, n)
	runtime.GC()
	for i, k := range idx {
		t0 := time.Now()
		name, err := sni.ParseName(rw.Rewrite(names[k]))
		c, reason := store.Load().Lookup(name.Host, name.Port, name.Subset)
		lat[i] = time.Since(t0)
		if err != nil || reason != want[class[k]] || (c != nil) != (class[k] == classHit) {
			return fmt.Errorf("lookup %q: cluster %v reason %v err %v, want reason %v", names[k], c != nil, reason, err, want[class[k]])
		}
	}
	var hit, miss []time.Duration
	for i, k := range idx {
		if class[k] == classHit {
			hit = append(hit, lat[i])
		} else {
			miss = append(miss, lat[i])
		}
	}
	r.LookupAll, r.LookupHit, r.LookupMiss, r.LookupMisses = distOf(lat), distOf(hit), distOf(miss), len(miss)

	// The same loop without per-call clocks, and the clocks alone.
	found := 0
	t0 := time.Now()
	for _, k := range idx {
		name, _ := sni.ParseName(rw.Rewrite(names[k]))
		if c, _ := store.Load().Lookup(name.Host, name.Port, name.Subset); c != nil {
			found++
		}
	}
	r.LookupBatchAvg = time.Since(t0) / time.Duration(n)
	if found != len(hit) {
		return fmt.Errorf("second pass found %d, first %d", found, len(hit))
	}
	for i := range lat {
		t := time.Now()
		lat[i] = time.Since(t)
	}
	r.TimerCost = distOf(lat).P50
	r.logf("lookups: p50 %v p99 %v max %v (batch avg %v)", r.LookupAll.P50, r.LookupAll.P99, r.LookupAll.Max, r.LookupBatchAvg)
	return nil
}

// profiled runs f under a CPU profile written to
// UpdateProfiles-name.pprof, or just runs it when no prefix is set.
func (r *ScaleReport) profiled(name string, f func() error) error {
	if r.Options.UpdateProfiles == "" {
		return f()
	}
	path := r.Options.UpdateProfiles + "-" + name + ".pprof"
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("update profile: %w", err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return fmt.Errorf("update profile: %w", err)
	}
	ferr := f()
	pprof.StopCPUProfile()
	if err := out.Close(); err != nil && ferr == nil {
		ferr = fmt.Errorf("update profile: %w", err)
	}
	r.logf("wrote %s", path)
	return ferr
}

// cpuNow is the process's user+system CPU time (all threads: GC and
// every goroutine included).
func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idleCPU returns this process's CPU milliseconds per wall second over d.
func idleCPU(ctx context.Context, d time.Duration) (float64, error) {
	c0, err := procCPU(os.Getpid())
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	c1, err := procCPU(os.Getpid())
	if err != nil {
		return 0, err
	}
	return float64(c1-c0) / float64(time.Millisecond) / time.Since(t0).Seconds(), nil
}

// yaml writes the mesh as Istio YAML and times istioyaml.Load and the apply.
func (r *ScaleReport) yaml(ctx context.Context, g scaleGen) error {
	dir, err := os.MkdirTemp("", "ewscale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	r.YAMLFiles, r.YAMLBytes, err = g.writeYAML(dir)
	r.YAMLWrite = time.Since(t0)
	if err != nil {
		return err
	}
	opts := istioyaml.Options{Network: scaleNetwork, Namespace: "istio-system"}
	for run := range r.Options.FullRuns {
		base, baseIn := heapAfterGC()
		c0 := cpuNow()
		t0 := time.Now()
		res, err := istioyaml.Load(ctx, []string{dir}, opts)
		t1 := time.Now()
		c1 := cpuNow()
		if err != nil {
			return fmt.Errorf("istioyaml.Load: %w", err)
		}
		snap := res.Snapshot
		r.YAMLWarnings = len(res.Warnings)
		res = nil
		if err := checkSnapshot(g, snap); err != nil {
			return fmt.Errorf("YAML snapshot: %w", err)
		}
		var snapOnly, snapIn int64
		if run == 0 {
			snapOnly, snapIn = heapAfterGC()
		}
		b := newBalancer()
		empty, _ := mesh.Build(mesh.Spec{})
		store := mesh.NewStore(empty)
		store.Subscribe(b.Update)
		t2 := time.Now()
		c2 := cpuNow()
		store.Swap(snap)
		t3 := time.Now()
		r.YAMLCPU = append(r.YAMLCPU, cpuNow()-c2+c1-c0)
		r.YAMLLoad = append(r.YAMLLoad, t1.Sub(t0))
		r.YAMLApply = append(r.YAMLApply, t3.Sub(t2))
		r.logf("yaml run %d: Load %v apply %v", run, t1.Sub(t0), t3.Sub(t2))
		if run == 0 {
			withBal, withIn := heapAfterGC()
			r.addMem("yaml", "snapshot (istioyaml.Load result, files dropped)", snapOnly-base, snapIn-baseIn)
			r.addMem("yaml", "balancer state", withBal-snapOnly, withIn-snapIn)
		}
		runtime.KeepAlive(store)
	}
	return nil
}

// checkSnapshot verifies that snap holds every cluster with all its
// endpoints (a sample of clusters when the mesh is large).
func checkSnapshot(g scaleGen, snap *mesh.Snapshot) error {
	if got, want := len(snap.Clusters()), g.services*g.ports; got != want {
		return fmt.Errorf("%d clusters, want %d", got, want)
	}
	step := max(1, g.services/100)
	for i := 0; i < g.services; i += step {
		for p := range g.ports {
			c, reason := snap.Lookup(g.host(i), g.svcPort(p), "")
			if c == nil {
				return fmt.Errorf("cluster %s: %v", g.key(i, p), reason)
			}
			if len(c.Endpoints) != g.eps {
				return fmt.Errorf("cluster %s: %d endpoints, want %d", g.key(i, p), len(c.Endpoints), g.eps)
			}
		}
	}
	return nil
}
