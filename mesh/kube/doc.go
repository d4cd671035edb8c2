// Package kube is a source of mesh snapshots read from the Kubernetes API,
// for running the gateway without Istio: client-go informers on Services,
// EndpointSlices (discovery.k8s.io/v1), Nodes and, when namespaces are
// selected by label, Namespaces.
//
// Mapping (Options.ClusterDomain defaults to cluster.local):
//
//	Service NAME in NAMESPACE              mesh.Service NAME.NAMESPACE.svc.DOMAIN
//	each port, protocol TCP (or unset)     a cluster outbound_.PORT_._.HOST (Key{Host, Port, ""})
//	UDP and SCTP ports                     no cluster (counted in Stats.SkippedPorts)
//	ExternalName services                  known, MeshExternal: never routable
//	EndpointSlice (label service-name)     endpoints of every cluster of that service
//	slice port with the service port name  the endpoint's target port
//	endpoint addresses[0]                  Endpoint.Addr (FQDN slices skipped)
//	conditions ready true or unset         included; ready false or terminating: left out
//	Node labels via nodeName               Locality: topology.kubernetes.io/region and
//	                                       zone, topology.istio.io/subzone
//	endpoint zone (node unknown)           Locality{Zone} with no region
//	Service selector                       Endpoint.Labels (true of every selected pod)
//	targetRef pod name less generated      Endpoint.Workload (a Deployment's replicas share
//	suffixes                               it); the service name without a targetRef
//	Options.Network                        Endpoint.Network
//
// An endpoint that turns not-ready or terminating leaves the next snapshot,
// so it gets no new connection; connections in flight keep it (the gateway
// never cuts them). Zone hints (topology-aware routing) are not used: the
// balancer does locality itself.
//
// Scoping, the exportTo of a mesh without Istio: a service is Exported when
// its namespace carries every label of Options.NamespaceLabels (when set)
// and its networking.istio.io/exportTo annotation, a comma list as in
// Istio, includes "*", the gateway's namespace (Options.GatewayNamespace),
// or "." for a service in that namespace; no annotation means exported,
// "~" means exported nowhere. Services that are not exported stay known,
// so a lookup answers not_exported. Options.Namespaces restricts the
// watches themselves: other namespaces are not seen at all.
// DestinationRules are not read: every cluster has the default policy.
//
// Events only mark the affected service dirty (a Node or Namespace label
// change marks every service); one goroutine, Run's, rebuilds the dirty
// services from the caches at most every Options.Debounce, builds the
// snapshot with mesh.Build and calls apply, and publishes nothing when the
// rebuilt services equal the previous ones (resyncs, node heartbeats,
// slice changes the gateway does not use). There is no goroutine or timer
// per service.
//
// Kubernetes RBAC: get, list and watch on services, endpointslices
// (discovery.k8s.io), nodes and, with NamespaceLabels, namespaces
// (deploy/kubernetes/rbac-kube-source.yaml).
//
// The package must not import proxy, balancer or cmd, and mesh must never
// import it: client-go stays out of the connection path's imports.
//
//	client, err := kube.NewClient("", "eastwest") // in-cluster
//	if err != nil { ... }
//	store := mesh.NewStore(empty)
//	src := kube.New(client, kube.Options{Network: "network2"}, store.Swap)
//	go src.Run(ctx)
package kube
