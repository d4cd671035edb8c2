package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/xds"
)

// startXDS feeds the store from istiod. Readiness turns on with the first
// complete snapshot, so a load balancer sends nothing before routes exist.
func (g *gateway) startXDS(ctx context.Context) error {
	x := g.s.Discovery.XDS
	c := xds.New(xds.Options{
		Address: x.Address, ServerName: x.ServerName, Insecure: x.Insecure, Delta: x.Delta,
		CertFile: x.CertFile, KeyFile: x.KeyFile, CAFile: x.CAFile, TokenFile: x.TokenFile,
		Node: xds.NodeInfo{IP: x.PodIP, PodName: x.PodName, Namespace: g.s.Namespace, ServiceAccount: x.ServiceAccount,
			ClusterID: x.ClusterID, Network: g.s.Network, Labels: x.Labels, Locality: g.s.gatewayLocality()},
		Logger: g.log.With("source", "xds"),
	}, func(snap *mesh.Snapshot) {
		g.store.Swap(snap)
		if !g.draining.Load() && !g.ready.Swap(true) {
			g.log.Info("first mesh snapshot from xDS", "clusters", len(snap.Clusters()), "version", snap.Version)
		}
	})
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "eastwest_xds_connected", Help: "1 while the xDS stream is up."}, func() float64 {
		if c.Stats().Connected {
			return 1
		}
		return 0
	})
	if err := g.reg.Register(connected); err != nil {
		return err
	}
	go func() {
		if err := c.Run(ctx); err != nil {
			// Bad options are caught at validation; readiness stays off.
			g.log.Error("xDS client stopped; no mesh updates will arrive", "err", err)
		}
	}()
	return nil
}
