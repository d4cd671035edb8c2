package proxy

import (
	"context"
	"net"

	"github.com/eastwest-gw/eastwest/mesh"
)

// Picker chooses an endpoint of a cluster for one connection attempt and
// learns from what happened. The balancer package implements it without
// importing proxy; cmd/eastwest wires it.
type Picker interface {
	// Pick returns an endpoint of c, avoiding req.Tried while any other
	// routable endpoint remains. It returns an error wrapping
	// ErrNoHealthyUpstream when c has no routable endpoint.
	Pick(ctx context.Context, c *mesh.Cluster, req mesh.PickRequest) (mesh.Endpoint, error)
	// Report tells the picker the outcome of a connection to ep. Every
	// ConnectOK is followed by exactly one Released.
	Report(c *mesh.Cluster, ep mesh.Endpoint, o mesh.Outcome)
}

// Forwarder moves bytes between an accepted client and its upstream.
// The ebpf package implements it without importing proxy.
type Forwarder interface {
	// Forward writes peeked to upstream first, then owns both conns until
	// both directions have ended, and closes them. sent counts bytes written
	// to the client, received bytes read from it (including peeked).
	// Cancelling ctx closes both conns at once.
	Forward(ctx context.Context, client, upstream *net.TCPConn, peeked []byte) (sent, received int64, err error)
}

// AsyncForwarder is a Forwarder that can carry a connection without the
// caller's goroutine: the proxy hands the pair over and its connection
// goroutine ends, so an established connection in the kernel path costs no
// goroutine at all. The proxy uses it when the Forwarder implements it.
type AsyncForwarder interface {
	Forwarder
	// Submit is Forward without the wait: done is called exactly once,
	// from a forwarder goroutine, when both directions have ended and both
	// conns are closed; done must not block. Cancelling ctx resets both
	// conns at once.
	Submit(ctx context.Context, client, upstream *net.TCPConn, peeked []byte, done func(sent, received int64, err error))
}
