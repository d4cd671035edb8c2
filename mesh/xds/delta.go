package xds

import (
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// deltaStream is the incremental (delta) xDS protocol state of one stream.
// CDS stays a full set here too: the stream keeps the raw resources it has
// been sent and hands the whole set to state.applyClusters, whose hash
// check makes unchanged clusters cost one hash each.
type deltaStream struct {
	c          *Client
	stream     discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cds        map[string]*anypb.Any // accepted or ignored CDS resources by name
	cdsSeen    bool                  // the first CDS response of a stream is the full set
	subscribed map[string]bool       // EDS names subscribed on this stream
}

func newDeltaStream(c *Client, s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) *deltaStream {
	return &deltaStream{c: c, stream: s, cds: map[string]*anypb.Any{}, subscribed: map[string]bool{}}
}

// start subscribes to every cluster: an empty first subscription is the
// wildcard.
func (s *deltaStream) start() error {
	return s.send(&discoveryv3.DeltaDiscoveryRequest{Node: s.c.node, TypeUrl: typeCluster})
}

func (s *deltaStream) recv() (proto.Message, error) { return s.stream.Recv() }

func (s *deltaStream) send(req *discoveryv3.DeltaDiscoveryRequest) error {
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("send delta %s request: %w", req.GetTypeUrl(), err)
	}
	return nil
}

func (s *deltaStream) handle(msg proto.Message) (changed bool, err error) {
	resp := msg.(*discoveryv3.DeltaDiscoveryResponse)
	st := s.c.st
	s.c.log.Debug("xds delta response", "type", resp.GetTypeUrl(), "version", resp.GetSystemVersionInfo(),
		"resources", len(resp.GetResources()), "removed", len(resp.GetRemovedResources()))
	switch resp.GetTypeUrl() {
	case typeCluster:
		if !s.cdsSeen {
			// Removals that happened while disconnected are not announced
			// on a new stream: its first response is the whole set.
			clear(s.cds)
			s.cdsSeen = true
		}
		prev := map[string]*anypb.Any{}
		for _, r := range resp.GetResources() {
			if r.GetResource() == nil {
				continue
			}
			prev[r.GetName()] = s.cds[r.GetName()]
			s.cds[r.GetName()] = r.GetResource()
		}
		for _, n := range resp.GetRemovedResources() {
			delete(s.cds, n)
		}
		all := make([]*anypb.Any, 0, len(s.cds))
		for _, a := range s.cds {
			all = append(all, a)
		}
		// Subscribe to new clusters' endpoints before decoding, so that
		// the server works on them meanwhile; resubscribe corrects a wrong
		// guess afterwards.
		if err := s.subscribeNew(st.edsNamesAhead(all)); err != nil {
			return false, err
		}
		changed, _, applyErr := st.applyClusters(resp.GetSystemVersionInfo(), all)
		if applyErr != nil {
			// Forget rejected updates, so that later responses are not
			// NACKed again for them and the old cluster stays.
			for name, old := range prev {
				e := st.clusters[name]
				if e != nil && e.hash == xxhash.Sum64(s.cds[name].GetValue()) {
					continue
				}
				if old != nil {
					s.cds[name] = old
				} else {
					delete(s.cds, name)
				}
			}
		}
		if err := s.ack(resp, st.cdsVersion, applyErr); err != nil {
			return false, err
		}
		s.c.setSkipped(st.skipped)
		return changed, s.resubscribe()
	case typeEndpoint:
		res := make([]*anypb.Any, 0, len(resp.GetResources()))
		for _, r := range resp.GetResources() {
			if r.GetResource() != nil {
				res = append(res, r.GetResource())
			}
		}
		changed, applyErr := st.applyAssignments(resp.GetSystemVersionInfo(), res)
		if st.removeAssignments(resp.GetRemovedResources()) {
			changed = true
		}
		return changed, s.ack(resp, st.edsVersion, applyErr)
	default:
		return false, s.ack(resp, "", fmt.Errorf("type %q not subscribed", resp.GetTypeUrl()))
	}
}

// subscribeNew subscribes to the names of want not yet subscribed; it
// unsubscribes nothing, which waits for resubscribe.
func (s *deltaStream) subscribeNew(want []string) error {
	var sub []string
	for _, n := range want {
		if !s.subscribed[n] {
			sub = append(sub, n)
			s.subscribed[n] = true
		}
	}
	if len(sub) == 0 {
		return nil
	}
	return s.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeEndpoint, ResourceNamesSubscribe: sub})
}

// resubscribe sends the EDS subscription changes after a CDS update.
func (s *deltaStream) resubscribe() error {
	want := s.c.st.edsNames
	var sub, unsub []string
	for _, n := range want {
		if !s.subscribed[n] {
			sub = append(sub, n)
			s.subscribed[n] = true
		}
	}
	for n := range s.subscribed {
		if _, ok := slices.BinarySearch(want, n); !ok {
			unsub = append(unsub, n)
			delete(s.subscribed, n)
		}
	}
	if len(sub)+len(unsub) == 0 {
		return nil
	}
	return s.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeEndpoint,
		ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub})
}

func (s *deltaStream) ack(resp *discoveryv3.DeltaDiscoveryResponse, accepted string, applyErr error) error {
	return s.send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl:       resp.GetTypeUrl(),
		ResponseNonce: resp.GetNonce(),
		ErrorDetail:   s.c.record(resp.GetTypeUrl(), resp.GetSystemVersionInfo(), accepted, applyErr),
	})
}
