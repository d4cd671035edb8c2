package mesh_test

import (
	"net/netip"
	"testing"

	"github.com/eastwest-gw/eastwest/mesh"
)

func TestLookupReasonsAndUpdate(t *testing.T) {
	svc := &mesh.Service{Host: "a.ns.svc.cluster.local", Namespace: "ns", Exported: true, Ports: []mesh.Port{{Number: 80, Protocol: "TCP"}}}
	hidden := &mesh.Service{Host: "h.ns.svc.cluster.local", Exported: false, Ports: []mesh.Port{{Number: 80, Protocol: "TCP"}}}
	ep := mesh.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:1")}
	snap, err := mesh.Build(mesh.Spec{Version: "1", Services: []*mesh.Service{svc, hidden}, Clusters: []*mesh.Cluster{
		{Key: mesh.Key{Host: svc.Host, Port: 80}, Service: svc, Endpoints: []mesh.Endpoint{ep}},
		{Key: mesh.Key{Host: svc.Host, Port: 80, Subset: "v1"}, Service: svc},
		{Key: mesh.Key{Host: hidden.Host, Port: 80}, Service: hidden},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		host   string
		port   uint16
		subset string
		want   mesh.Reason
	}{
		{"found", svc.Host, 80, "", mesh.ReasonNone},
		{"subset found", svc.Host, 80, "v1", mesh.ReasonNone},
		{"unknown host", "b.ns.svc.cluster.local", 80, "", mesh.ReasonUnknownHost},
		{"unknown port", svc.Host, 81, "", mesh.ReasonUnknownPort},
		{"unknown subset", svc.Host, 80, "v2", mesh.ReasonUnknownSubset},
		{"not exported", hidden.Host, 80, "", mesh.ReasonNotExported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, r := snap.Lookup(tc.host, tc.port, tc.subset)
			if r != tc.want || (r == mesh.ReasonNone) != (c != nil) {
				t.Fatalf("Lookup = %v, %v; want reason %v", c, r, tc.want)
			}
		})
	}
	if c, _ := snap.Lookup(svc.Host, 80, ""); c.Name != "outbound_.80_._.a.ns.svc.cluster.local" {
		t.Fatalf("cluster name %q", c.Name)
	}
	if len(snap.Clusters()) != 2 {
		t.Fatalf("%d routable clusters, want 2 (hidden one dropped)", len(snap.Clusters()))
	}
	// Update replaces one cluster and leaves the old snapshot untouched.
	next, err := snap.Update("2", &mesh.Cluster{Key: mesh.Key{Host: svc.Host, Port: 80}, Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := next.Lookup(svc.Host, 80, ""); len(c.Endpoints) != 0 || c.Name == "" {
		t.Fatalf("updated cluster: %+v", c)
	}
	if c, _ := snap.Lookup(svc.Host, 80, ""); len(c.Endpoints) != 1 {
		t.Fatal("Update changed the old snapshot")
	}
	if _, err := snap.Update("3", &mesh.Cluster{Key: mesh.Key{Host: "x", Port: 1}, Service: svc}); err == nil {
		t.Fatal("Update accepted an unknown cluster")
	}
	if c, r := snap.LookupHost(svc.Host); c == nil || r != mesh.ReasonNone {
		t.Fatalf("LookupHost with one TCP port: %v %v", c, r)
	}
}
