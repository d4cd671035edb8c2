package istioyaml

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/eastwest-gw/eastwest/mesh"
)

// mapResolver is a Resolver over a fixed table: a real implementation of
// the interface that needs no DNS server.
type mapResolver map[string][]netip.Addr

func (m mapResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	if network != "ip" {
		return nil, fmt.Errorf("unexpected network %q", network)
	}
	a, ok := m[host]
	if !ok {
		return nil, fmt.Errorf("lookup %s: no such host", host)
	}
	return a, nil
}

// writeTree writes files (relative path -> content) under a new temporary
// folder and returns it.
func writeTree(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// mustLoad loads paths and fails the test on error.
func mustLoad(tb testing.TB, paths []string, opts Options) *Result {
	tb.Helper()
	res, err := Load(context.Background(), paths, opts)
	if err != nil {
		tb.Fatalf("Load: %v", err)
	}
	if res == nil || res.Snapshot == nil {
		tb.Fatal("Load returned no snapshot and no error")
	}
	return res
}

// mustLoadYAML loads one document stream and fails the test on error.
func mustLoadYAML(tb testing.TB, yaml string, opts Options) *Result {
	tb.Helper()
	res, err := LoadBytes(context.Background(), "test.yaml", []byte(yaml), opts)
	if err != nil {
		tb.Fatalf("LoadBytes: %v", err)
	}
	return res
}

// clusterNames lists a snapshot's cluster names, sorted.
func clusterNames(s *mesh.Snapshot) []string {
	var out []string
	for _, c := range s.Clusters() {
		out = append(out, c.Name)
	}
	return out
}

// addrs lists a cluster's endpoint addresses, sorted.
func addrs(c *mesh.Cluster) []string {
	var out []string
	for _, e := range c.Endpoints {
		out = append(out, e.Addr.String())
	}
	slices.Sort(out)
	return out
}

// lookup fetches a cluster that must exist.
func lookup(tb testing.TB, s *mesh.Snapshot, host string, port uint16, subset string) *mesh.Cluster {
	tb.Helper()
	c, reason := s.Lookup(host, port, subset)
	if c == nil {
		tb.Fatalf("Lookup(%s, %d, %q) = %v, want a cluster; have %v", host, port, subset, reason, clusterNames(s))
	}
	return c
}

// hasWarning reports whether some warning contains every part.
func hasWarning(ws []Warning, parts ...string) bool {
	for _, w := range ws {
		s := w.String()
		ok := true
		for _, p := range parts {
			if !strings.Contains(s, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// problemsOf splits a joined Load error into its messages.
func problemsOf(err error) []string {
	var j interface{ Unwrap() []error }
	if !errors.As(err, &j) {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range j.Unwrap() {
		out = append(out, e.Error())
	}
	return out
}

// seReviews is a mesh-internal reviews service selecting WorkloadEntries
// app=reviews; weReviews is one of them.
const seReviews = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: tcp-reviews, protocol: TCP}
  - {number: 9443, name: tls, protocol: TLS, targetPort: 19443}
  - {number: 53, name: dns, protocol: UDP}
  workloadSelector:
    labels: {app: reviews}
`

func weReviews(name, addr, version, extra string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %s, namespace: default}
spec:
  address: %s
  ports: {tcp-reviews: 19081}
  labels: {app: reviews, version: %s}
  serviceAccount: bookinfo-reviews
%s`, name, addr, version, extra)
}
