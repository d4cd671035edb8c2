package istioyaml

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadBytes feeds arbitrary documents to the loader: mesh config comes
// from users, so no input may panic, and a result is either a snapshot or
// an error, never both or neither. Seeds: the demo mesh, the istiod
// fixture's input and testdata/fuzz/FuzzLoadBytes.
func FuzzLoadBytes(f *testing.F) {
	seeds := []string{filepath.Join("testdata", "demo", "mesh.yaml")}
	if m, _ := filepath.Glob(filepath.Join(fixtureDir, "input", "*.yaml")); len(m) > 0 {
		seeds = append(seeds, m...)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(seReviews + "---\n" + weReviews("a", "127.0.0.1", "v1", "")))
	// Names resolve without a DNS server; anything else fails to resolve.
	r := mapResolver{"vm.example.internal": {netip.MustParseAddr("127.0.0.11")}}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := LoadBytes(context.Background(), "fuzz.yaml", data, Options{Network: "network1", Resolver: r})
		switch {
		case err != nil && res != nil:
			t.Fatalf("both a result and an error: %v", err)
		case err == nil && (res == nil || res.Snapshot == nil):
			t.Fatal("neither a snapshot nor an error")
		case err == nil:
			for _, c := range res.Snapshot.Clusters() {
				if c.Service == nil || c.Service.MeshExternal || !c.Service.Exported {
					t.Fatalf("cluster %s of a service that is not routable: %+v", c.Name, c.Service)
				}
				for _, e := range c.Endpoints {
					if !e.Addr.IsValid() || e.Addr.Port() == 0 || e.Weight == 0 {
						t.Fatalf("cluster %s: bad endpoint %+v", c.Name, e)
					}
				}
			}
		}
	})
}
