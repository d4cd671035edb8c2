// Package kube is a source of mesh snapshots read from the Kubernetes API,
// for running the gateway without istiod: client-go informers on Services,
// EndpointSlices (discovery.k8s.io/v1), Nodes, when namespaces are
// selected by label, Namespaces and, when Istio's CRD is installed,
// DestinationRules (networking.istio.io) with Pods.
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
//	Service selector                       Endpoint.Labels (true of every selected pod);
//	                                       the pod's labels instead while DestinationRules
//	                                       are read and the Pod is known (targetRef)
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
//
// DestinationRules are read, unless Options.DisableDestinationRules, when
// the client is a *Client (NewClient's, with a dynamic client) and
// discovery serves networking.istio.io/v1 destinationrules (else v1beta1).
// Without the CRD the source says so once (info) and checks again every
// minute, picking the rules up when the CRD appears. Rules are watched in
// the same namespaces as Services and compiled by mesh/istioyaml, the file
// source's compiler, so they mean the same thing in both:
//
//	spec.host                              a short name is NAME.<rule's namespace>.svc.DOMAIN;
//	                                       FQDN, "*.suffix" and "*" as in Istio
//	which rule applies                     Istio's choice at the gateway: the gateway's
//	                                       namespace, then the service's, then istio-system;
//	                                       exact host, then the longest wildcard, then the
//	                                       oldest (creation time, then namespace/name)
//	exportTo hiding it from the gateway    ignored, as is a rule with a workloadSelector
//	trafficPolicy (portLevelSettings)      Cluster.Policy: loadBalancer (simple,
//	                                       consistentHash useSourceIp, localityLbSetting),
//	                                       connectionPool.tcp, outlierDetection
//	subsets[].name, labels                 a cluster outbound_.PORT_.SUBSET_.HOST per TCP
//	                                       port, with the endpoints whose pod carries the labels
//	subsets[].trafficPolicy                merged over the rule's per component, as Istio
//
// Subsets select on pod labels, which EndpointSlices do not carry: a Pod
// watch in the same namespaces keeps each Pod's name and labels only, and
// an endpoint's targetRef names its Pod. An endpoint whose Pod is not (yet)
// known has the selector's labels, so a subset leaves it out until the Pod
// is seen; a Pod label change rebuilds the services that select the Pod.
// A rule that does not compile is logged (error) and counted
// (Stats.InvalidDestinationRules, DestinationRuleErrors); the rest keeps
// working, and a rule whose update breaks it keeps its last valid version
// in force, as a bad mesh file keeps the previous snapshot. Fields of a
// newer Istio API are logged and ignored. When RBAC forbids listing
// DestinationRules or Pods the source runs without rules, logs why and
// tries again every minute. The first snapshot waits for the rule caches,
// so a client never sees a subset missing at start.
//
// Events only mark the affected service dirty (a Node or Namespace label
// change, and any DestinationRule change, marks every service); one
// goroutine, Run's, rebuilds the dirty services from the caches at most
// every Options.Debounce, builds the snapshot with mesh.Build and calls
// apply, and publishes nothing when the rebuilt services equal the
// previous ones (resyncs, node heartbeats, slice changes the gateway does
// not use). There is no goroutine or timer per service; a changed rule is
// compiled once, in that goroutine.
//
// Kubernetes RBAC: get, list and watch on services, endpointslices
// (discovery.k8s.io), nodes, with NamespaceLabels, namespaces and, for
// DestinationRules, destinationrules (networking.istio.io) and pods
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
