package mesh

import "net/netip"

// PickRequest is what the connection path knows when it asks for an
// endpoint. It lives here so that proxy (the caller) and balancer (the
// implementation) share it without importing each other.
type PickRequest struct {
	// Source is the client's address (from PROXY protocol when present),
	// used by consistent hashing.
	Source netip.AddrPort
	// Attempt counts from 0.
	Attempt int
	// Tried lists endpoints already tried for this connection; a picker
	// avoids them while any other host remains (TCP-2).
	Tried []netip.AddrPort
}

// Outcome is what the connection path reports about an endpoint.
type Outcome uint8

// Outcomes, mapped to Envoy's outlier-detection result types by the balancer.
const (
	// ConnectOK: the TCP connect succeeded (LocalOriginConnectSuccess).
	ConnectOK Outcome = iota
	// ConnectFailed: refused or unreachable (LocalOriginConnectFailed).
	ConnectFailed
	// ConnectTimeout: no answer within the connect timeout (LocalOriginTimeout).
	ConnectTimeout
	// ClosedBeforeData: the upstream closed or reset the connection before
	// sending one byte after the ClientHello was forwarded (OD-2, [IMPROVE]).
	ClosedBeforeData
	// Released: a connection that had connected has ended; pickers that
	// count active connections decrement here. Sent exactly once per ConnectOK.
	Released
)

var outcomeNames = [...]string{"connect_ok", "connect_failed", "connect_timeout", "closed_before_data", "released"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}
