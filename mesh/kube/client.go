package kube

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// NewClient returns a clientset for the API server named by the kubeconfig
// file at path, or, when path is empty, for the cluster the process runs in
// (the pod's service-account token and CA, rest.InClusterConfig). It lets
// cmd/eastwest wire the source without importing client-go itself.
func NewClient(kubeconfig, userAgent string) (kubernetes.Interface, error) {
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
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}
