package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/eastwest-gw/eastwest/balancer"
	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/xds"
)

// xdsWait bounds every wait for the xDS client.
const xdsWait = 2 * time.Minute

// controlPlane is an in-process go-control-plane ADS server on 127.0.0.1
// backed by its snapshot cache, standing in for istiod. Its goroutines and
// SetSnapshot carry the pprof label side=control-plane.
type controlPlane struct {
	addr  string
	cache cachev3.SnapshotCache
	srv   *grpc.Server
	done  chan struct{}

	mu      sync.Mutex
	cdsReq  map[string]chan struct{} // node id -> closed on its first CDS request
	streams int                      // open streams
	events  []cpEvent                // since the last set
}

// cpEvent is a request the control plane received or a response it handed
// to gRPC (go-control-plane's response callback runs after marshalling).
type cpEvent struct {
	at       time.Time
	response bool
	typeURL  string
}

func startControlPlane(ctx context.Context) (*controlPlane, error) {
	cp := &controlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), done: make(chan struct{}),
		cdsReq: map[string]chan struct{}{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	cp.addr = lis.Addr().String()
	open := func(context.Context, int64, string) error { cp.addStreams(1); return nil }
	closed := func(int64, *corev3.Node) { cp.addStreams(-1) }
	cb := serverv3.CallbackFuncs{
		StreamOpenFunc: open, StreamClosedFunc: closed, DeltaStreamOpenFunc: open, DeltaStreamClosedFunc: closed,
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			cp.sawRequest(r.GetNode().GetId(), r.GetTypeUrl())
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			cp.sawRequest(r.GetNode().GetId(), r.GetTypeUrl())
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, r *discoveryv3.DiscoveryResponse) {
			cp.event(true, r.GetTypeUrl())
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			cp.event(true, r.GetTypeUrl())
		},
	}
	pprof.Do(ctx, pprof.Labels("side", "control-plane"), func(ctx context.Context) {
		cp.srv = grpc.NewServer()
		discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.srv, serverv3.NewServer(ctx, cp.cache, cb))
		go func() {
			defer close(cp.done)
			_ = cp.srv.Serve(lis)
		}()
	})
	return cp, nil
}

func (cp *controlPlane) sawRequest(node, typeURL string) {
	cp.event(false, typeURL)
	if node == "" || typeURL != resource.ClusterType {
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if ch, ok := cp.cdsReq[node]; ok {
		close(ch)
		delete(cp.cdsReq, node)
	}
}

func (cp *controlPlane) addStreams(n int) {
	cp.mu.Lock()
	cp.streams += n
	cp.mu.Unlock()
}

// waitClosed waits (bounded) until the server has closed every stream, so
// that its per-stream state is garbage.
func (cp *controlPlane) waitClosed() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		cp.mu.Lock()
		n := cp.streams
		cp.mu.Unlock()
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("control plane: %d streams still open", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expectCDS returns a channel closed when node first asks for clusters.
func (cp *controlPlane) expectCDS(node string) <-chan struct{} {
	ch := make(chan struct{})
	cp.mu.Lock()
	cp.cdsReq[node] = ch
	cp.mu.Unlock()
	return ch
}

func (cp *controlPlane) event(response bool, typeURL string) {
	cp.mu.Lock()
	cp.events = append(cp.events, cpEvent{at: time.Now(), response: response, typeURL: typeURL})
	cp.mu.Unlock()
}

// busy is the control plane's share of the time from `from` (its set) to
// `to`: for each response handed to gRPC in between, the time since the
// later of `from` and the last request of its type. The rest of the window
// is gRPC and the gateway (the xDS client decoding, publishing, applying).
func (cp *controlPlane) busy(from, to time.Time) time.Duration {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var d time.Duration
	asked := map[string]time.Time{}
	for _, e := range cp.events {
		if e.at.After(to) {
			break
		}
		if !e.response {
			asked[e.typeURL] = e.at
			continue
		}
		start := from
		if t := asked[e.typeURL]; t.After(start) {
			start = t
		}
		if e.at.After(start) {
			d += e.at.Sub(start)
		}
	}
	return d
}

// set installs snap for node; the events recorded so far are dropped.
func (cp *controlPlane) set(ctx context.Context, node string, snap *cachev3.Snapshot) error {
	cp.mu.Lock()
	cp.events = cp.events[:0]
	cp.mu.Unlock()
	var err error
	pprof.Do(ctx, pprof.Labels("side", "control-plane"), func(ctx context.Context) {
		err = cp.cache.SetSnapshot(ctx, node, snap)
	})
	return err
}

func (cp *controlPlane) stop() {
	cp.srv.Stop()
	<-cp.done
}

// cacheSnapshot holds clusters at version cds and CLAs at version eds, so
// that a new EDS version does not resend CDS. For delta xDS the version map
// (a marshal and hash of every resource) is computed here, before the
// timed SetSnapshot: it is the control plane's work, not the gateway's.
func cacheSnapshot(cds string, clusters []types.Resource, eds string, clas []types.Resource, delta bool) (*cachev3.Snapshot, error) {
	s := &cachev3.Snapshot{}
	s.Resources[types.Cluster] = cachev3.NewResources(cds, clusters)
	s.Resources[types.Endpoint] = cachev3.NewResources(eds, clas)
	if delta {
		if err := s.ConstructVersionMap(); err != nil {
			return nil, fmt.Errorf("version map: %w", err)
		}
	}
	return s, nil
}

// withCLA is prev with one CLA replaced, at EDS version eds; the CDS part
// and the rest of the version map are shared.
func withCLA(prev *cachev3.Snapshot, eds string, clas []types.Resource, k int, cla types.Resource) (*cachev3.Snapshot, []types.Resource, error) {
	clas = slices.Clone(clas)
	clas[k] = cla
	s := &cachev3.Snapshot{}
	s.Resources = prev.Resources
	s.Resources[types.Endpoint] = cachev3.NewResources(eds, clas)
	if prev.VersionMap != nil {
		s.VersionMap = maps.Clone(prev.VersionMap)
		eps := maps.Clone(prev.VersionMap[resource.EndpointType])
		b, err := cachev3.MarshalResource(cla)
		if err != nil {
			return nil, nil, fmt.Errorf("marshal CLA: %w", err)
		}
		eps[cachev3.GetResourceName(cla)] = cachev3.HashResource(b)
		s.VersionMap[resource.EndpointType] = eps
	}
	return s, clas, nil
}

// appliedSnap is one call of the client's apply: when it was called and
// when Store.Swap (with the balancer's Update) returned.
type appliedSnap struct {
	snap         *mesh.Snapshot
	called, done time.Time
}

// xdsGateway is the gateway's side: xds.Client -> Store.Swap -> balancer.
// The client's and balancer's goroutines carry the label side=gateway.
type xdsGateway struct {
	store   *mesh.Store
	bal     *balancer.Balancer
	client  *xds.Client
	applied chan appliedSnap
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	runErr  error
}

func startGateway(ctx context.Context, addr, node string, delta bool) *xdsGateway {
	empty, _ := mesh.Build(mesh.Spec{})
	gw := &xdsGateway{store: mesh.NewStore(empty), bal: newBalancer(), applied: make(chan appliedSnap, 1024)}
	gw.store.Subscribe(gw.bal.Update)
	apply := func(s *mesh.Snapshot) {
		t := time.Now()
		gw.store.Swap(s)
		select {
		case gw.applied <- appliedSnap{snap: s, called: t, done: time.Now()}:
		default: // nobody is waiting for that many; the store has it anyway
		}
	}
	gw.client = xds.New(xds.Options{
		Address:  addr,
		Insecure: true,
		Delta:    delta,
		Node: xds.NodeInfo{ID: node, Namespace: "istio-system", Network: scaleNetwork,
			Locality: mesh.Locality{Region: "us-east1", Zone: "us-east1-b"}},
		Logger:      quietLogger(),
		WarmTimeout: xdsWait,
		Backoff:     xds.Backoff{Initial: 50 * time.Millisecond, Max: time.Second},
	}, apply)
	var cctx context.Context
	cctx, gw.cancel = context.WithCancel(ctx)
	pprof.Do(cctx, pprof.Labels("side", "gateway"), func(cctx context.Context) {
		gw.wg.Go(func() { gw.runErr = gw.client.Run(cctx) })
		gw.wg.Go(func() { gw.bal.Run(cctx) })
	})
	return gw
}

func (gw *xdsGateway) stop() error {
	gw.cancel()
	gw.wg.Wait()
	return gw.runErr
}

// wait returns the first applied snapshot that satisfies ok.
func (gw *xdsGateway) wait(ctx context.Context, what string, ok func(*mesh.Snapshot) error) (appliedSnap, int, error) {
	timeout := time.NewTimer(xdsWait)
	defer timeout.Stop()
	seen := 0
	var last error
	for {
		select {
		case a := <-gw.applied:
			seen++
			if last = ok(a.snap); last == nil {
				return a, seen, nil
			}
		case <-timeout.C:
			return appliedSnap{}, seen, fmt.Errorf("no snapshot with %s within %v (%d applied, last: %v)", what, xdsWait, seen, last)
		case <-ctx.Done():
			return appliedSnap{}, seen, ctx.Err()
		}
	}
}

func nodeID(mode string, run int) string {
	return fmt.Sprintf("router~127.0.0.1~ewscale-%s-%d.istio-system~istio-system.svc.cluster.local", mode, run)
}

// xds measures one protocol: FullRuns full syncs (the first with the heap
// figures when it is the first mode), then one more that stays up for the
// one-cluster updates and the idle figures.
func (r *ScaleReport) xds(ctx context.Context, g scaleGen, mode string, rng *rand.Rand) error {
	delta := mode == "delta"
	cp, err := startControlPlane(ctx)
	if err != nil {
		return err
	}
	defer cp.stop()
	clusters, clas := g.xdsResources()
	snap, err := cacheSnapshot("c1", clusters, "e1", clas, delta)
	if err != nil {
		return err
	}
	res := XDSScale{Mode: mode}
	first := len(r.XDS) == 0
	defer func() { r.XDS = append(r.XDS, res) }()

	var gw *xdsGateway
	for run := 0; run <= r.Options.FullRuns; run++ {
		keep := run == r.Options.FullRuns
		withMem := first && run == 0
		var base, baseIn int64
		if withMem {
			base, baseIn = heapAfterGC()
		}
		node := nodeID(mode, run)
		asked := cp.expectCDS(node)
		gw = startGateway(ctx, cp.addr, node, delta)
		select {
		case <-asked:
		case <-time.After(xdsWait):
			return errors.Join(errors.New("client never asked for clusters"), gw.stop())
		}
		c0 := cpuNow()
		t0 := time.Now()
		if err := cp.set(ctx, node, snap); err != nil {
			return errors.Join(err, gw.stop())
		}
		a, _, err := gw.wait(ctx, "the full mesh", func(s *mesh.Snapshot) error { return checkSnapshot(g, s) })
		if err != nil {
			return errors.Join(err, gw.stop())
		}
		res.FullCPU = append(res.FullCPU, cpuNow()-c0)
		res.Full = append(res.Full, a.done.Sub(t0))
		res.FullApply = append(res.FullApply, a.done.Sub(a.called))
		res.FullCP = append(res.FullCP, cp.busy(t0, a.done))
		r.logf("xds %s full run %d: %v (control plane %v, apply %v)", mode, run, a.done.Sub(t0), cp.busy(t0, a.done), a.done.Sub(a.called))
		if keep {
			break
		}
		if err := gw.stop(); err != nil {
			return err
		}
		cp.cache.ClearSnapshot(node)
		if err := cp.waitClosed(); err != nil {
			return err
		}
		if withMem {
			r.xdsMemory(gw, base, baseIn)
		}
		gw = nil
	}
	defer gw.stop()

	// One CLA changes per update, as when one workload is rescheduled.
	var upd, app, cpt []time.Duration
	c0 := cpuNow()
	err = r.profiled("xds-"+mode, func() error {
		for n := range r.Options.XDSUpdates {
			i, p := rng.IntN(g.services), rng.IntN(g.ports)
			moved := uint16(30000 + n)
			next, nextCLAs, err := withCLA(snap, fmt.Sprintf("e%d", n+2), clas, i*g.ports+p, g.xdsCLA(i, p, moved))
			if err != nil {
				return err
			}
			snap, clas = next, nextCLAs
			want := g.epAddr(i, g.eps-1)
			node := nodeID(mode, r.Options.FullRuns)
			t0 := time.Now()
			if err := cp.set(ctx, node, snap); err != nil {
				return err
			}
			a, seen, err := gw.wait(ctx, "the moved endpoint", func(s *mesh.Snapshot) error {
				c, _ := s.Lookup(g.host(i), g.svcPort(p), "")
				for _, e := range c.Endpoints {
					if e.Addr.Addr() == want && e.Addr.Port() == moved {
						return nil
					}
				}
				return fmt.Errorf("cluster %s: endpoint %v:%d not there yet", g.key(i, p), want, moved)
			})
			if err != nil {
				return err
			}
			res.Publishes += seen
			upd, app = append(upd, a.done.Sub(t0)), append(app, a.done.Sub(a.called))
			cpt = append(cpt, cp.busy(t0, a.done))
			// Let the ACK reach the server before the next push.
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		return err
	}
	res.UpdateCPU = (cpuNow() - c0) / time.Duration(max(len(upd), 1))
	res.Update, res.UpdateApply, res.UpdateCP = distOf(upd), distOf(app), distOf(cpt)
	rest := make([]time.Duration, len(upd))
	for i := range upd {
		rest[i] = upd[i] - cpt[i]
	}
	res.UpdateGateway = distOf(rest)
	r.logf("xds %s update: p50 %v max %v (control plane p50 %v, gRPC and gateway p50 %v, apply p50 %v)",
		mode, res.Update.P50, res.Update.Max, res.UpdateCP.P50, res.UpdateGateway.P50, res.UpdateApply.P50)

	if first {
		r.Goroutines = append(r.Goroutines, CountFigure{fmt.Sprintf("xds %s: full mesh applied, client connected, control plane and balancer.Run running", mode),
			float64(runtime.NumGoroutine())})
		runtime.GC() // the updates' garbage is not idle cost
		cpu, err := idleCPU(ctx, r.Options.Idle)
		if err != nil {
			return err
		}
		r.IdleCPU = append(r.IdleCPU, CountFigure{fmt.Sprintf("xds %s: connected client + in-process control plane + balancer.Run", mode), cpu})
	}
	return nil
}

// xdsMemory attributes the heap of a stopped gateway (client, store,
// balancer) relative to base, taken before it started: client state, then
// balancer, then the snapshot, dropping each in turn.
func (r *ScaleReport) xdsMemory(gw *xdsGateway, base, baseIn int64) {
	all, allIn := heapAfterGC()
	snap := gw.store.Load()
	gw.client = nil
	noClient, noClientIn := heapAfterGC()
	gw.store, gw.bal = mesh.NewStore(snap), nil
	snapOnly, snapIn := heapAfterGC()
	r.addMem("xds", "snapshot (built by the xDS client)", snapOnly-base, snapIn-baseIn)
	r.addMem("xds", "balancer state", noClient-snapOnly, noClientIn-snapIn)
	r.addMem("xds", "xds client state (stream closed)", all-noClient, allIn-noClientIn)
	runtime.KeepAlive(gw)
}
