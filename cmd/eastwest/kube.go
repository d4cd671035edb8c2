package main

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eastwest-gw/eastwest/mesh"
	"github.com/eastwest-gw/eastwest/mesh/kube"
)

// startKube feeds the store from the Kubernetes API. Readiness turns on
// with the first snapshot after every cache synced.
func (g *gateway) startKube(ctx context.Context) error {
	k := g.s.Discovery.Kubernetes
	client, err := kube.NewClient(k.Kubeconfig, "eastwest/"+buildVersion())
	if err != nil {
		return fmt.Errorf("discovery.kubernetes: %w", err)
	}
	src := kube.New(client, kube.Options{
		ClusterDomain: k.ClusterDomain, Namespaces: k.Namespaces, NamespaceLabels: k.NamespaceLabels,
		GatewayNamespace: g.s.Namespace, Network: g.s.Network, Resync: k.Resync, Debounce: k.Debounce,
		DisableDestinationRules: !k.DestinationRules, Logger: g.log.With("source", "kubernetes"),
	}, func(snap *mesh.Snapshot) {
		g.store.Swap(snap)
		if !g.draining.Load() && !g.ready.Swap(true) {
			g.log.Info("first mesh snapshot from Kubernetes", "clusters", len(snap.Clusters()), "version", snap.Version)
		}
	})
	synced := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "eastwest_kubernetes_synced", Help: "1 once the Kubernetes caches synced."}, func() float64 {
		if src.Stats().Synced {
			return 1
		}
		return 0
	})
	if err := g.reg.Register(synced); err != nil {
		return err
	}
	invalid := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "eastwest_kubernetes_invalid_destinationrules",
		Help: "DestinationRules whose current version does not compile (each is logged; the last valid version stays in force)."},
		func() float64 { return float64(src.Stats().InvalidDestinationRules) })
	if err := g.reg.Register(invalid); err != nil {
		return err
	}
	go func() {
		if err := src.Run(ctx); err != nil {
			g.log.Error("Kubernetes source stopped; no mesh updates will arrive", "err", err)
		}
	}()
	return nil
}
