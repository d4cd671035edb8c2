// Command eastwest is the east-west gateway for multi-cluster service
// meshes: it accepts Istio AUTO_PASSTHROUGH traffic on 15443, routes each
// connection by the SNI of its TLS ClientHello to a local endpoint and
// splices the sockets, never decrypting.
//
// It owns what the packages must not: reading settings (viper: an embedded
// default, a YAML file, EASTWEST_* variables, flags), wiring the seams
// (balancer as proxy.Picker and health.Sink, ebpf as proxy.Forwarder),
// choosing the mesh source (Istio YAML files, istiod over xDS, or the
// Kubernetes API), the admin and status servers, signals (SIGHUP reloads,
// SIGTERM drains) and the demo.
//
//	eastwest [run] --config eastwest.yaml
//	eastwest validate --config eastwest.yaml
//	eastwest demo
//	eastwest version
package main
