package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	ewebpf "github.com/eastwest-gw/eastwest/ebpf"
	"github.com/eastwest-gw/eastwest/proxy"
)

var _ proxy.AsyncForwarder = (*ewebpf.Forwarder)(nil)

// newForwarder builds the forwarder the settings ask for. auto and splice
// fall back to the user-space path with one log line when the kernel path
// is unavailable; sockmap, asked for explicitly, refuses to start without it.
func newForwarder(s *Settings, log *slog.Logger, reg prometheus.Registerer) (*ewebpf.Forwarder, error) {
	mode, err := ewebpf.ParseMode(s.Forwarder)
	if err != nil {
		return nil, fmt.Errorf("forwarder: %w", err)
	}
	fwd, err := ewebpf.New(ewebpf.Options{Mode: mode, Logger: log.With("component", "forwarder")})
	switch {
	case errors.Is(err, ewebpf.ErrNotSupported) && mode == ewebpf.Sockmap:
		if fwd != nil {
			_ = fwd.Close()
		}
		return nil, fmt.Errorf("forwarder: sockmap requested but the kernel path is unavailable: %w", err)
	case errors.Is(err, ewebpf.ErrNotSupported):
		log.Warn("kernel forwarding unavailable; every connection uses the user-space path", "err", err)
	case err != nil:
		return nil, fmt.Errorf("forwarder: %w", err)
	}
	if err := reg.Register(fwd.Collector()); err != nil {
		_ = fwd.Close()
		return nil, fmt.Errorf("forwarder metrics: %w", err)
	}
	log.Info("forwarder", "requested", s.Forwarder, "using", fwd.Mode().String())
	return fwd, nil
}
