// Package deploy holds what runs eastwest outside a developer's shell, and
// the tests that keep it true to the binary:
//
//   - kubernetes/: a kustomize base (Deployment, LoadBalancer Service,
//     ConfigMaps, ServiceAccount, PodDisruptionBudget,
//     HorizontalPodAutoscaler) and overlays for per-zone locality;
//   - Dockerfile: a static, non-root image with file capabilities for the
//     eBPF sockmap forwarder;
//   - systemd/: the unit and example settings for a VM gateway;
//   - demo/: `make demo`, two clusters as network namespaces, and the demo
//     sidecar (mTLS endpoints, client, certificates) it runs.
//
// The package has no Go API: doc.go exists so that `go test ./deploy/...`
// has a package to run. The tests build ./cmd/eastwest, start it the way
// each manifest does (only file paths and addresses rewritten), and fail
// when a port, probe path, argument, capability or drain timing in a
// manifest no longer matches what the binary serves and accepts. They must
// not reach beyond 127.0.0.1, except TestNetnsDemo, which works only inside
// network namespaces it makes and removes.
//
// Build the base as the tests do:
//
//	go tool kustomize build deploy/kubernetes/base
package deploy
