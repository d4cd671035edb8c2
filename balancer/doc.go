// Package balancer chooses the local endpoint for each connection the
// gateway forwards, with the semantics Envoy and Istio users rely on
// (shared/SEMANTICS.md sections 2, 3 and 5):
//
//   - priorities from locality, computed for the gateway's own locality and
//     labels the way istiod computes them for a proxy: Istio's LbPriority,
//     failover, failoverPriority and distribute, compaction, and Istio's
//     rule that failover only applies with outlierDetection (LB-7..LB-9);
//     priorities set by the source (xDS) are used as sent;
//   - Envoy's integer priority-load arithmetic with the 1.4 overprovisioning
//     factor, degraded hosts, the panic threshold (Envoy 50, Istio
//     minHealthPercent defaulting to 0) and total panic (LB-1..LB-6);
//   - locality weights inside a priority (effective weight, EDF schedule);
//   - the host policy: LEAST_REQUEST (the default: least active connections,
//     power of two choices), ROUND_ROBIN, RANDOM, ring hash and Maglev on
//     the source IP (HS-1..HS-3);
//   - outlier detection on connect outcomes and close-before-data (OD-1..
//     OD-4, OD-6, OD-7), and active health verdicts through SetHealthy.
//
// A Balancer satisfies proxy.Picker and health.Sink without importing
// either; cmd/eastwest wires them. Update is called on every snapshot swap
// and builds all per-cluster state, for the clusters that changed only (a
// cluster is unchanged when it is the same *mesh.Cluster, as
// mesh.Snapshot.Update and the xDS client keep it); every health change
// rebuilds the affected cluster's state copy-on-write. Pick reads it through atomic
// pointers: no global lock, no allocation.
//
// It must not open sockets, read config files or import proxy or health.
// It logs the locality mode of each cluster when it changes and warns about
// known foot-guns (LB-10).
//
//	b := balancer.New(balancer.Options{Locality: mesh.ParseLocality("us-east1/us-east1-b"), Logger: log})
//	store.Subscribe(b.Update)
//	go b.Run(ctx)
//	ep, err := b.Pick(ctx, cluster, mesh.PickRequest{Source: src})
//	if err != nil { /* errors.Is(err, balancer.ErrNoHealthyUpstream): flag UH */ }
//	b.Report(cluster, ep, mesh.ConnectOK) // ... and mesh.Released when it ends
package balancer
