package proxy

import "errors"

// ErrNoHealthyUpstream is wrapped by a Picker that has no routable endpoint
// (response flag UH).
var ErrNoHealthyUpstream = errors.New("no healthy upstream")
