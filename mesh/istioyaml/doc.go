// Package istioyaml loads Istio resources from YAML files or folders and
// compiles them into a *mesh.Snapshot: the SNI-DNAT clusters
// (outbound_.PORT_.SUBSET_.HOST) that istiod would send an east-west
// gateway for the same config, with their endpoints and traffic policy.
//
// Read: ServiceEntry, WorkloadEntry and DestinationRule of
// networking.istio.io v1, v1beta1 and v1alpha3, with Istio's field names,
// defaults and validation rules (location defaults to MESH_EXTERNAL,
// resolution to NONE; short DestinationRule hosts are relative to the
// rule's namespace; a port-level policy replaces the destination-level one
// wholesale; a subset's components replace the rule's). WorkloadGroups are
// parsed and returned for health checking. Gateway, VirtualService,
// Sidecar, EnvoyFilter, ProxyConfig and the security.istio.io and
// telemetry.istio.io kinds are accepted and ignored with a warning; any
// other kind is an error.
//
// The gateway's view (SNI-6, SEC-1): only exported (exportTo), mesh-internal
// services get clusters; MESH_EXTERNAL and hidden services stay known so a
// lookup answers not_exported. An endpoint is kept only if it is in the
// gateway's network (or names none) and accepts Istio mTLS (serviceAccount
// set, or label security.istio.io/tlsMode=istio). A service's
// DestinationRule is looked up as istiod does for the gateway: its own
// namespace, then the service's, then the root namespace istio-system.
//
// Decoding is strict: an unknown field, a duplicate key, a wrong type, a
// bad duration or a value Istio's validation rejects is an error. Load
// reports every problem at once, each as "file: Kind namespace/name:
// message", and returns no snapshot; what is merely ignored or dropped is a
// Warning.
//
// Decoding uses every core: files, and large files cut at document
// markers, are decoded in parallel and merged in input order, so that
// messages, duplicate detection and DestinationRule precedence are those
// of a sequential read. ServiceEntries and WorkloadEntries in the usual
// YAML (block collections, one-line flow collections, one-line plain or
// simply quoted scalars, comments) are read by a decoder of their own,
// several times faster than yaml.v3; any other document, and any that
// decoder is not certain to read exactly as yaml.v3 does, is decoded by
// yaml.v3, and a file with an error is decoded again whole, so that
// messages carry its own line numbers.
//
// The package must not open sockets other than the DNS lookups of
// resolution: DNS endpoints (through Options.Resolver, each bounded by a
// timeout), must not log (warnings are returned), and never mutates a
// snapshot it returned.
//
//	res, err := istioyaml.Load(ctx, []string{"/etc/eastwest/mesh"},
//		istioyaml.Options{Network: "network2", Namespace: "istio-system"})
//	if err != nil {
//		return err // every problem, one per line
//	}
//	for _, w := range res.Warnings {
//		log.Warn("mesh", "file", w.File, "resource", w.Resource, "warning", w.Message)
//	}
//	store.Swap(res.Snapshot)
package istioyaml
