package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/eastwest-gw/eastwest/mesh"
)

// maxErrorDetail caps the NACK message sent back to istiod.
const maxErrorDetail = 4096

// Stats is a point-in-time view of the client for metrics and readiness.
type Stats struct {
	// Connected is true while a stream is up and has delivered a response.
	Connected bool
	// ClusterVersion and EndpointVersion are the last ACKed versions.
	ClusterVersion, EndpointVersion string
	// LastNACKVersion and LastNACKError describe the last rejected
	// response; NACKs counts rejected responses.
	LastNACKVersion string
	LastNACKError   string
	NACKs           uint64
	// Connects counts streams that delivered at least one response.
	Connects uint64
	// Snapshots counts snapshots handed to apply.
	Snapshots uint64
	// Delta is true when the current or last stream uses delta xDS.
	Delta bool
	// SkippedClusters is the number of SNI-DNAT clusters in the last CDS
	// response the gateway cannot serve (DNS-resolved clusters).
	SkippedClusters int
}

// Client is an ADS client that turns istiod's CDS and EDS for an east-west
// gateway into mesh snapshots.
type Client struct {
	o       Options
	optErr  error
	apply   func(*mesh.Snapshot)
	log     *slog.Logger
	st      *state
	node    *corev3.Node
	running sync.Mutex // one Run at a time: the state has a single owner
	// deltaUnsupported is set when the server answered a delta stream
	// with Unimplemented; later sessions use state of the world.
	deltaUnsupported bool

	mu    sync.Mutex
	stats Stats
}

// New returns a client; nothing happens until Run. apply is called from
// Run's goroutine with each complete snapshot (every cluster has received
// its endpoints or waited WarmTimeout), typically store.Swap. Invalid
// options are reported by Run.
func New(o Options, apply func(*mesh.Snapshot)) *Client {
	po, err := o.populate()
	c := &Client{o: po, optErr: err, apply: apply, log: po.Logger, st: newState(po.Node.Network)}
	if err == nil {
		c.node = buildNode(po.Node)
	}
	return c
}

// Stats returns a copy of the current statistics.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Run connects, streams and reconnects with jittered exponential backoff
// until ctx is done; it then returns nil. The last snapshot given to apply
// stays valid through disconnects. Run returns an error only for invalid
// Options.
func (c *Client) Run(ctx context.Context) error {
	if c.optErr != nil {
		return c.optErr
	}
	if c.apply == nil {
		return errors.New("xds: apply func is nil")
	}
	c.running.Lock()
	defer c.running.Unlock()
	delay := c.o.Backoff.Initial
	for {
		progressed, err := c.session(ctx)
		c.mu.Lock()
		c.stats.Connected = false
		c.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			delay = c.o.Backoff.Initial
		}
		wait := delay/2 + rand.N(delay/2+1)
		c.log.Warn("xds stream ended; reconnecting", "address", c.o.Address, "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(delay*2, c.o.Backoff.Max)
	}
}

type recvResult struct {
	msg proto.Message
	err error
}

// protocol is one ADS flavour (state of the world or delta) on one stream.
// Its methods run on the session goroutine, except recv.
type protocol interface {
	// start sends the first subscription, with the node.
	start() error
	// recv blocks for the next response; it runs on its own goroutine.
	recv() (proto.Message, error)
	// handle applies a response, ACKs or NACKs it, updates subscriptions,
	// and says whether the snapshot content changed.
	handle(msg proto.Message) (changed bool, err error)
}

// session runs one ADS stream. progressed reports whether the server sent
// anything, which resets the backoff.
func (c *Client) session(ctx context.Context) (progressed bool, err error) {
	opts, token, err := c.dialOptions()
	if err != nil {
		return false, err
	}
	opts = append(opts,
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.o.MaxMessageBytes)),
	)
	conn, err := grpc.NewClient(c.o.Address, opts...)
	if err != nil {
		return false, fmt.Errorf("xds client: %w", err)
	}
	defer conn.Close()

	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if token != "" {
		sctx = metadata.AppendToOutgoingContext(sctx, "authorization", "Bearer "+token)
	}
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	var p protocol
	delta := c.o.Delta && !c.deltaUnsupported
	if delta {
		stream, err := ads.DeltaAggregatedResources(sctx)
		if err != nil {
			return false, fmt.Errorf("open delta ADS stream: %w", err)
		}
		p = newDeltaStream(c, stream)
	} else {
		stream, err := ads.StreamAggregatedResources(sctx)
		if err != nil {
			return false, fmt.Errorf("open ADS stream: %w", err)
		}
		p = &adsStream{c: c, stream: stream}
	}
	ch := make(chan recvResult)
	wg.Go(func() {
		for {
			msg, err := p.recv()
			select {
			case ch <- recvResult{msg, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	})

	if err := p.start(); err != nil {
		return false, err
	}
	var warm *time.Timer
	var warmC <-chan time.Time
	defer func() {
		if warm != nil {
			warm.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return progressed, ctx.Err()
		case <-warmC:
			warmC = nil
			c.log.Warn("xds: clusters still without endpoints; publishing them empty", "clusters", len(c.st.warming), "after", c.o.WarmTimeout)
			clear(c.st.warming)
			c.publish()
		case r := <-ch:
			if r.err != nil {
				if delta && !progressed && status.Code(r.err) == codes.Unimplemented {
					c.deltaUnsupported = true
					c.log.Info("xds: server does not implement delta xDS; using state of the world", "address", c.o.Address)
					return true, fmt.Errorf("delta ADS: %w", r.err)
				}
				return progressed, fmt.Errorf("ADS stream: %w", r.err)
			}
			if !progressed {
				progressed = true
				c.mu.Lock()
				c.stats.Connected = true
				c.stats.Connects++
				c.stats.Delta = delta
				c.mu.Unlock()
				c.log.Info("xds connected", "address", c.o.Address, "node", c.node.GetId(), "delta", delta)
			}
			publish, err := p.handle(r.msg)
			if err != nil {
				return progressed, err
			}
			if !publish {
				continue
			}
			if c.st.ready() {
				if warmC != nil {
					warm.Stop()
					warmC = nil
				}
				c.publish()
			} else if warmC == nil {
				warm = time.NewTimer(c.o.WarmTimeout)
				warmC = warm.C
			}
		}
	}
}

// adsStream is the state-of-the-world protocol state: nonces, and whether
// EDS was ever subscribed (an empty first EDS request would mean
// "wildcard").
type adsStream struct {
	c             *Client
	stream        discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	edsSubscribed bool
	edsNames      []string // the EDS subscription last sent
	edsNonce      string
}

func (s *adsStream) start() error {
	return s.send(&discoveryv3.DiscoveryRequest{Node: s.c.node, TypeUrl: typeCluster})
}

func (s *adsStream) recv() (proto.Message, error) { return s.stream.Recv() }

func (s *adsStream) send(req *discoveryv3.DiscoveryRequest) error {
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("send %s request: %w", req.GetTypeUrl(), err)
	}
	return nil
}

func (s *adsStream) handle(msg proto.Message) (changed bool, err error) {
	resp := msg.(*discoveryv3.DiscoveryResponse)
	st := s.c.st
	s.c.log.Debug("xds response", "type", resp.GetTypeUrl(), "version", resp.GetVersionInfo(), "resources", len(resp.GetResources()))
	switch resp.GetTypeUrl() {
	case typeCluster:
		// Subscribe before decoding, so that the server works on endpoints
		// meanwhile; the decode's result corrects a wrong guess.
		if err := s.subscribeEDS(st.edsNamesAhead(resp.GetResources())); err != nil {
			return false, err
		}
		changed, _, applyErr := st.applyClusters(resp.GetVersionInfo(), resp.GetResources())
		if err := s.ack(resp, st.cdsVersion, nil, applyErr); err != nil {
			return false, err
		}
		if err := s.subscribeEDS(st.edsNames); err != nil {
			return false, err
		}
		s.c.setSkipped(st.skipped)
		return changed, nil
	case typeEndpoint:
		s.edsNonce = resp.GetNonce()
		changed, applyErr := st.applyAssignments(resp.GetVersionInfo(), resp.GetResources())
		return changed, s.ack(resp, st.edsVersion, st.edsNames, applyErr)
	default:
		// Never subscribed: say so, the server should not send it.
		return false, s.ack(resp, "", nil, fmt.Errorf("type %q not subscribed", resp.GetTypeUrl()))
	}
}

// subscribeEDS sends names as the EDS subscription unless it is the one
// last sent. An empty first subscription is not sent: it would mean
// "wildcard".
func (s *adsStream) subscribeEDS(names []string) error {
	if s.edsSubscribed && slices.Equal(names, s.edsNames) || !s.edsSubscribed && len(names) == 0 {
		return nil
	}
	if err := s.send(&discoveryv3.DiscoveryRequest{TypeUrl: typeEndpoint, VersionInfo: s.c.st.edsVersion,
		ResourceNames: names, ResponseNonce: s.edsNonce}); err != nil {
		return err
	}
	s.edsSubscribed, s.edsNames = true, names
	return nil
}

func (c *Client) setSkipped(n int) {
	c.mu.Lock()
	c.stats.SkippedClusters = n
	c.mu.Unlock()
}

// ack sends an ACK (applyErr nil) or a NACK carrying applyErr and the last
// accepted version.
func (s *adsStream) ack(resp *discoveryv3.DiscoveryResponse, accepted string, names []string, applyErr error) error {
	req := &discoveryv3.DiscoveryRequest{
		TypeUrl:       resp.GetTypeUrl(),
		VersionInfo:   accepted,
		ResponseNonce: resp.GetNonce(),
		ResourceNames: names,
		ErrorDetail:   s.c.record(resp.GetTypeUrl(), resp.GetVersionInfo(), accepted, applyErr),
	}
	return s.send(req)
}

// record updates the statistics for an ACK or a NACK and returns the
// error_detail to send (nil for an ACK).
func (c *Client) record(typeURL, version, accepted string, applyErr error) *statuspb.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	if applyErr == nil {
		switch typeURL {
		case typeCluster:
			c.stats.ClusterVersion = accepted
		case typeEndpoint:
			c.stats.EndpointVersion = accepted
		}
		return nil
	}
	msg := applyErr.Error()
	if len(msg) > maxErrorDetail {
		msg = msg[:maxErrorDetail] + "..."
	}
	c.stats.NACKs++
	c.stats.LastNACKVersion = version
	c.stats.LastNACKError = msg
	c.log.Warn("xds: rejected part of a response (NACK); keeping the previous value of what was rejected",
		"type", typeURL, "version", version, "err", applyErr)
	return &statuspb.Status{Code: int32(codes.InvalidArgument), Message: msg}
}

// publish builds a snapshot and hands it to apply.
func (c *Client) publish() {
	snap, err := c.st.snapshot()
	if err != nil {
		// Build only fails on duplicates, which state rules out.
		c.log.Error("xds: snapshot not published", "err", err)
		return
	}
	c.apply(snap)
	c.mu.Lock()
	c.stats.Snapshots++
	c.mu.Unlock()
}

// buildNode is the core.Node istiod expects from a gateway (the fixture
// README shows the fields that decide what istiod sends).
func buildNode(n NodeInfo) *corev3.Node {
	fields := map[string]*structpb.Value{
		"NAMESPACE":     structpb.NewStringValue(n.Namespace),
		"NETWORK":       structpb.NewStringValue(n.Network),
		"ISTIO_VERSION": structpb.NewStringValue(n.IstioVersion),
	}
	if n.ClusterID != "" {
		fields["CLUSTER_ID"] = structpb.NewStringValue(n.ClusterID)
	}
	if n.PodName != "" {
		fields["NAME"] = structpb.NewStringValue(n.PodName)
	}
	if n.ServiceAccount != "" {
		fields["SERVICE_ACCOUNT"] = structpb.NewStringValue(n.ServiceAccount)
	}
	if len(n.Labels) > 0 {
		labels := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(n.Labels))}
		for k, v := range n.Labels {
			labels.Fields[k] = structpb.NewStringValue(v)
		}
		fields["LABELS"] = structpb.NewStructValue(labels)
	}
	node := &corev3.Node{
		Id:            n.NodeID(),
		Metadata:      &structpb.Struct{Fields: fields},
		UserAgentName: "eastwest",
	}
	if n.Locality != (mesh.Locality{}) {
		node.Locality = &corev3.Locality{Region: n.Locality.Region, Zone: n.Locality.Zone, SubZone: n.Locality.Subzone}
	}
	return node
}
