// Package tls (imported as ewtls) holds the gateway's own certificates: the
// ones it presents and trusts when it is itself a TLS client or server, as
// opposed to the mesh traffic it passes through untouched. Today that is the
// client side of HTTPS health checks; terminating modes (HBONE on 15008)
// will use the same files.
//
// Files are re-read when they change on disk (checked at most once a
// second, on use), so rotated certificates are picked up without a restart,
// and a peer can be required to present one of a set of SPIFFE identities.
//
// It must not peek at or touch passthrough traffic: that is package sni's
// and the forwarder's.
//
//	cfg, err := ewtls.Files{CAFile: "/etc/certs/root-cert.pem", CertFile: "cert-chain.pem", KeyFile: "key.pem"}.ClientConfig()
package tls
