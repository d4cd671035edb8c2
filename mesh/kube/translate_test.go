package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func TestExportedTo(t *testing.T) {
	const gw = "istio-system"
	tests := []struct {
		name, value, ns string
		want            bool
	}{
		{"unset exports", "", "default", true},
		{"star", "*", "default", true},
		{"dot in another namespace", ".", "default", false},
		{"dot in the gateway namespace", ".", gw, true},
		{"gateway namespace named", "other, istio-system", "default", true},
		{"other namespaces only", "a,b", "default", false},
		{"tilde", "~", "default", false},
		{"spaces only", "  ", "default", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exportedTo(tt.value, tt.ns, gw); got != tt.want {
				t.Fatalf("exportedTo(%q, %q) = %v, want %v", tt.value, tt.ns, got, tt.want)
			}
		})
	}
}

func TestTrimGenerated(t *testing.T) {
	tests := []struct{ name, pod, want string }{
		{"deployment", "reviews-v1-7b9f8c6d54-x2k9p", "reviews-v1"},
		{"deployment short hash", "web-5d8f6c-bq4zt", "web"},
		{"daemonset", "node-agent-h7xkz", "node-agent"},
		{"statefulset", "db-2", "db"},
		{"plain name", "standalone", "standalone"},
		{"last part not generated", "reviews-v1-canary", "reviews-v1-canary"},
		{"vowels are never generated", "reviews-abcde", "reviews-abcde"},
		{"trailing dash", "odd-", "odd-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := trimGenerated(tt.pod); got != tt.want {
				t.Fatalf("trimGenerated(%q) = %q, want %q", tt.pod, got, tt.want)
			}
		})
	}
}

func TestIstioProtocol(t *testing.T) {
	h2c := "kubernetes.io/h2c"
	custom := "example.com/thing"
	grpc := "GRPC"
	tests := []struct {
		name, port string
		app        *string
		want       string
	}{
		{"name prefix", "http-web", nil, "HTTP"},
		{"bare name", "grpc", nil, "GRPC"},
		{"grpc-web is one prefix only when whole", "grpc-web", nil, "GRPC"},
		{"unknown is TCP", "web", nil, "TCP"},
		{"empty is TCP", "", nil, "TCP"},
		{"appProtocol wins", "http", &grpc, "GRPC"},
		{"kubernetes appProtocol", "web", &h2c, "HTTP2"},
		{"unknown appProtocol falls back to the name", "tls-x", &custom, "TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := istioProtocol(tt.port, tt.app); got != tt.want {
				t.Fatalf("istioProtocol(%q) = %q, want %q", tt.port, got, tt.want)
			}
		})
	}
}

func TestRoutable(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name string
		c    discoveryv1.EndpointConditions
		want bool
	}{
		{"unset is ready", discoveryv1.EndpointConditions{}, true},
		{"ready", discoveryv1.EndpointConditions{Ready: &yes}, true},
		{"not ready", discoveryv1.EndpointConditions{Ready: &no}, false},
		{"serving but terminating", discoveryv1.EndpointConditions{Ready: &no, Serving: &yes, Terminating: &yes}, false},
		{"ready and terminating (publishNotReadyAddresses)", discoveryv1.EndpointConditions{Ready: &yes, Terminating: &yes}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := routable(tt.c); got != tt.want {
				t.Fatalf("routable = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTrimNode(t *testing.T) {
	n := &corev1.Node{}
	n.Name = "n1"
	n.Labels = map[string]string{LabelZone: "z1"}
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"big"}}}
	out, err := trim(n)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Node)
	if got.Name != "n1" || got.Labels[LabelZone] != "z1" || len(got.Status.Images) != 0 {
		t.Fatalf("trimmed node = %+v, want name and labels only", got)
	}
}
