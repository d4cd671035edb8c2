// Package mesh holds the gateway's view of the mesh: one immutable Snapshot of
// services, SNI-DNAT clusters (one per host, port and subset, keyed the way
// xDS keys them) and their endpoints and traffic policy, plus a Store that
// swaps snapshots atomically.
//
// Sources of mesh data (Istio YAML in mesh/istioyaml, later xDS or the
// Kubernetes API) live in sub-packages that import this one, never the
// reverse, so the types that proxy, balancer and health import stay free of
// gRPC, client-go and YAML.
//
// A Snapshot is never mutated after Build returns it: readers on the
// connection path load it once per connection and need no lock.
//
//	snap, err := mesh.Build(mesh.Spec{Services: svcs, Network: "network2"})
//	store := mesh.NewStore(snap)
//	c, reason := store.Load().Lookup("reviews.default.svc.cluster.local", 9080, "v1")
package mesh
