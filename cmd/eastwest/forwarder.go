package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eastwest-gw/eastwest/proxy"
)

// newForwarder builds the forwarder the settings ask for.
func newForwarder(s *Settings, log *slog.Logger, reg prometheus.Registerer) (proxy.Forwarder, error) {
	log.Info("forwarder", "requested", s.Forwarder, "using", "splice")
	return proxy.SpliceForwarder{}, nil
}
