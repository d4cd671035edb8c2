package kube

import (
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Client is a clientset for the built-in resources and, for Istio's
// DestinationRules, a dynamic client: the gateway reads the custom
// resource without importing Istio's generated clients. New accepts any
// kubernetes.Interface; with a *Client whose Dynamic is set, it also reads
// DestinationRules.
type Client struct {
	kubernetes.Interface
	Dynamic dynamic.Interface
}

// NewClient returns the clients for the API server named by the
// kubeconfig file at path, or, when path is empty, for the cluster the
// process runs in (the pod's service-account token and CA,
// rest.InClusterConfig). It lets cmd/eastwest wire the source without
// importing client-go itself.
func NewClient(kubeconfig, userAgent string) (*Client, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	if userAgent != "" {
		cfg.UserAgent = userAgent
	}
	// Informers list once and then watch: the client-side rate limit
	// (default 5 QPS, burst 10) only matters for the initial lists of a
	// source with many namespaces, which it would otherwise throttle.
	cfg.QPS, cfg.Burst = 20, 40
	// One HTTP client, so one connection pool, for both clients.
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes http client: %w", err)
	}
	cs, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	return &Client{Interface: cs, Dynamic: dyn}, nil
}
