// Package xds is a source of mesh snapshots that reads them from istiod over
// ADS, presenting itself as an Istio east-west gateway ("router" node).
//
// It subscribes to CDS (state of the world) and to EDS for the SNI-DNAT
// clusters, outbound_.PORT_.SUBSET_.HOST, and turns them with their
// ClusterLoadAssignments into mesh.Cluster values, one per (host, port,
// subset), the way shared/fixtures/istiod-1.29-eastwest shows istiod sends
// them. Every other cluster (outbound|P|S|H, BlackHoleCluster...) is
// ignored. Services are derived from the cluster names: istiod only sends
// SNI-DNAT clusters for exported, mesh-internal services, so each is
// Exported and not MeshExternal.
//
// Protocol: SotW ADS, or delta ADS with Options.Delta (falling back to SotW
// when the server lacks it). CDS replaces the cluster set; EDS responses
// that name only some clusters are merged per cluster. The EDS subscription
// for a CDS response is sent before its clusters are decoded, from a scan
// of their names and discovery types, so that istiod computes endpoints
// meanwhile; a cluster that then fails validation is unsubscribed again.
// ClusterLoadAssignments are read straight from the wire for the fields
// istiod sends (proto.Unmarshal and the generic translation take anything
// else), and large responses are decoded on every CPU. A response is ACKed when every resource in it was applied and
// NACKed otherwise (error_detail lists the rejected resources, version_info
// stays the last accepted version); the valid resources of a NACKed response
// are applied and a rejected one keeps its previous value, as Envoy does.
// New clusters wait for their endpoints (at most Options.WarmTimeout) before
// a snapshot including them is published, so apply only ever sees complete
// snapshots. The last snapshot stays in force through disconnects; the
// client reconnects with jittered exponential backoff.
//
// Credentials: mTLS with CertFile/KeyFile/CAFile (istiod's 15012), or a
// projected service-account token (audience istio-ca) in TokenFile over TLS
// verified with CAFile, or plaintext (15010) only with Insecure. Files are
// re-read on every connection attempt, so rotation takes effect on the next
// reconnect.
//
// Mapping from Envoy to mesh (what an L4 gateway needs):
//
//	LbEndpoint address (IP socket, TCP)  Endpoint.Addr; other addresses skipped
//	LocalityLbEndpoints.locality         Endpoint.Locality
//	LocalityLbEndpoints.priority         Endpoint.Priority (istiod computed it for our locality)
//	LbEndpoint.load_balancing_weight     Endpoint.Weight
//	LbEndpoint.health_status             Endpoint.Health (TIMEOUT -> Unhealthy)
//	metadata istio.workload n;ns;app;v;c Workload, Namespace, Labels app, version, topology.istio.io/cluster
//	lb_policy or load_balancing_policy   LoadBalancer.Simple, or ConsistentHash (source IP) for RING_HASH/MAGLEV
//	(always)                             LoadBalancer.Locality.Enabled = false: use istiod's priorities as sent
//	connect_timeout                      ConnectTimeout
//	circuit_breakers DEFAULT max_connections  MaxConnections (>= 2^31-1 means unlimited: 0)
//	outlier_detection.consecutive_5xx    Consecutive5xxErrors (0 when enforcing_consecutive_5xx is 0)
//	consecutive_gateway_failure          ConsecutiveGatewayErrors, only when enforcing_... > 0
//	split_external_local_origin_errors   SplitExternalLocalOrigin
//	consecutive_local_origin_failure     ConsecutiveLocalOriginErrors (split mode only)
//	interval, base/max_ejection_time     Interval, BaseEjectionTime, MaxEjectionTime
//	max_ejection_percent                 MaxEjectionPercent
//	common_lb_config.healthy_panic_threshold  OutlierDetection.MinHealthPercent (absent: 50, Envoy's default)
//
// Lost in the mapping: the locality's own load_balancing_weight when it
// differs from the sum of its endpoint weights (istiod's distribute), and
// whether locality_weighted_lb_config is on; a panic threshold on a cluster
// without outlier detection; fractional panic percentages; success-rate and
// failure-percentage ejection, ejection jitter and enforcement percentages
// other than 0 and 100; the CLA's overprovisioning factor; idle timeout and
// max connection duration (istiod puts them in LDS, not subscribed); DNS
// clusters (STRICT_DNS/LOGICAL_DNS SNI-DNAT clusters are skipped and
// counted in Stats.SkippedClusters). The Istio port name and protocol are
// not in CDS: derived ports are "TCP".
//
// The package must not import proxy, balancer or cmd, and mesh must never
// import it.
//
//	store := mesh.NewStore(empty)
//	c := xds.New(xds.Options{
//		Address:  "istiod.istio-system.svc:15012",
//		CAFile:   "/var/run/secrets/istio/root-cert.pem",
//		TokenFile: "/var/run/secrets/tokens/istio-token",
//		Node: xds.NodeInfo{IP: podIP, PodName: pod, Namespace: "istio-system",
//			ClusterID: "Kubernetes", Network: "network1",
//			Labels: map[string]string{"istio": "eastwestgateway"}},
//	}, store.Swap)
//	go c.Run(ctx)
package xds
