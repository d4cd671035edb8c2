package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "eastwest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "eastwest")
	out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building eastwest: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	clientID = "spiffe://cluster1.local/ns/default/sa/productpage"
	serverID = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
)

// meshYAML describes reviews with v1 on b1 and v2 on b2.
func meshYAML(b1, b2 *testnet.Backend) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: tcp, protocol: TCP}]
  endpoints:
  - {address: 127.0.0.1, ports: {tcp: %d}, labels: {app: reviews, version: v1}, locality: region1/zone1, serviceAccount: reviews}
  - {address: 127.0.0.1, ports: {tcp: %d}, labels: {app: reviews, version: v2}, locality: region1/zone1, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`, b1.AddrPort().Port(), b2.AddrPort().Port())
}

const settingsYAML = `clusterName: cluster2
network: network2
locality: region1/zone1
listeners:
  - name: auto-passthrough
    address: 127.0.0.1:0
    sniRewrites:
      - {pattern: '\.cluster[0-9]+\.global$', replacement: '.cluster.local'}
admin:
  address: 127.0.0.1:0
mesh:
  paths: [%s]
forwarder: %s
drain:
  acceptGrace: 200ms
  idleClose: 30s
  deadline: 10s
`

// gatewayProc is a running eastwest binary.
type gatewayProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, valid once exited is closed
	addr   string
	admin  string
	mu     sync.Mutex
	stderr bytes.Buffer
}

func (g *gatewayProc) logs() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stderr.String()
}

var (
	readyRE = regexp.MustCompile(`msg="eastwest ready" listeners=([^,\s]+)\S* .* admin=(\S+)`)
)

func startGateway(t *testing.T, args ...string) *gatewayProc {
	t.Helper()
	return startGatewayEnv(t, nil, args...)
}

func startGatewayEnv(t *testing.T, env []string, args ...string) *gatewayProc {
	t.Helper()
	g := &gatewayProc{cmd: exec.Command(binary, args...), exited: make(chan struct{})}
	g.cmd.Env = append(os.Environ(), env...)
	g.cmd.Stdout = io.Discard
	pr, pw := io.Pipe()
	g.cmd.Stderr = pw
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			g.mu.Lock()
			g.stderr.WriteString(line + "\n")
			if m := readyRE.FindStringSubmatch(line); m != nil {
				g.addr, g.admin = m[1], m[2]
				once.Do(func() { close(found) })
			}
			g.mu.Unlock()
		}
	}()
	go func() { g.err = g.cmd.Wait(); pw.Close(); close(g.exited) }()
	t.Cleanup(func() {
		_ = g.cmd.Process.Kill()
		<-g.exited
	})
	select {
	case <-found:
	case <-g.exited:
		t.Fatalf("gateway exited: %v\n%s", g.err, g.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway not ready after 30s\n%s", g.logs())
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBinaryEndToEndAndSIGTERMDrain(t *testing.T) {
	ca := testpki.NewCA(t)
	b1 := testnet.NewTLSBackend(t, "reviews-v1", ca.ServerConfig(t, serverID), testnet.Hello)
	b2 := testnet.NewTLSBackend(t, "reviews-v2", ca.ServerConfig(t, serverID), testnet.Hello)
	dir := writeFiles(t, map[string]string{"mesh.yaml": meshYAML(b1, b2)})
	settings := filepath.Join(dir, "settings.yaml")
	if err := os.WriteFile(settings, []byte(fmt.Sprintf(settingsYAML, filepath.Join(dir, "mesh.yaml"), testForwarder())), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, "--config", settings)

	dial := func(sni string) (*tls.Conn, string) {
		t.Helper()
		raw, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, ca.ClientConfig(t, clientID, sni, serverID))
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		line, err := bufio.NewReader(io.LimitReader(c, 64)).ReadString('\n')
		if err != nil {
			t.Fatalf("through the gateway with %s: %v\n%s", sni, err, g.logs())
		}
		return c, strings.TrimSpace(line)
	}
	for _, tc := range []struct{ sni, want string }{
		{"outbound_.9080_.v1_.reviews.default.svc.cluster.local", "reviews-v1"},
		{"outbound_.9080_.v2_.reviews.default.svc.cluster2.global", "reviews-v2"},
	} {
		c, got := dial(tc.sni)
		c.Close()
		if got != tc.want {
			t.Errorf("%s reached %q, want %q", tc.sni, got, tc.want)
		}
	}
	resp, err := http.Get("http://" + g.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`istio_tcp_connections_opened_total{`,
		`envoy_cluster_membership_healthy{cluster_name="outbound_.9080_.v1_.reviews.default.svc.cluster.local"} 1`,
		`envoy_cluster_outlier_detection_ejections_active{`,
		`envoy_listener_downstream_cx_total{`,
		`eastwest_forwarder_active_pairs{`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A connection in flight when SIGTERM arrives finishes without a reset.
	c, _ := dial("outbound_.9080_.v1_.reviews.default.svc.cluster.local")
	defer c.Close()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness fails first, while the listener still accepts (grace).
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + g.admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready did not turn 503 after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	payload := bytes.Repeat([]byte("x"), 1<<20)
	go func() {
		for i := 0; i < len(payload); i += 64 << 10 {
			if _, err := c.Write(payload[i : i+64<<10]); err != nil {
				return
			}
			time.Sleep(30 * time.Millisecond) // still sending well after the listeners closed
		}
		_ = c.CloseWrite()
	}()
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		t.Fatalf("connection in flight during drain: %v after %d bytes", err, n)
	}
	if n != int64(len(payload)) {
		t.Fatalf("echoed %d bytes during drain, want %d", n, len(payload))
	}
	// tls.Conn.CloseWrite sent close_notify, not a TCP FIN: the gateway
	// keeps the client's half open until the client closes, as it must.
	c.Close()
	select {
	case <-g.exited:
		if g.err != nil {
			t.Fatalf("gateway exit: %v\n%s", g.err, g.logs())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("gateway did not exit after drain")
	}
	if !strings.Contains(g.logs(), "drained") {
		t.Errorf("no 'drained' log line:\n%s", g.logs())
	}
}

func TestValidateReportsEveryError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings string
		mesh     string
		want     []string
	}{
		{"bad regex", "listeners: [{name: a, address: '127.0.0.1:0', sniRewrites: [{pattern: '(', replacement: x}]}]\nmesh: {paths: [%s]}\n", "", []string{"sniRewrites", "("}},
		{"unknown settings key", "listners: []\nmesh: {paths: [%s]}\n", "", []string{"listners"}},
		{"invalid settings yaml", "listeners: [\n", "", []string{"settings"}},
		{"bad forwarder", "forwarder: turbo\nmesh: {paths: [%s]}\n", "", []string{"forwarder", "turbo"}},
		{"two control planes", "discovery: {xds: {address: '127.0.0.1:15010', insecure: true, podIP: 127.0.0.1}, kubernetes: {enabled: true}}\nmesh: {paths: [%s]}\n", "", []string{"choose xds or kubernetes"}},
		{"xds without trust", "discovery: {xds: {address: '127.0.0.1:15012', podIP: 127.0.0.1}}\nmesh: {paths: [%s]}\n", "", []string{"caFile is required"}},
		{"invalid mesh yaml", "mesh: {paths: [%s]}\n", "kind: [\n", []string{"mesh.yaml"}},
		{"unknown mesh field", "mesh: {paths: [%s]}\n", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x, namespace: default}\nspec: {hosts: [x.default.svc.cluster.local], colour: red}\n", []string{"mesh.yaml", "ServiceEntry default/x", "colour"}},
		{"endpoint without address", "mesh: {paths: [%s]}\n", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x, namespace: default}\nspec: {hosts: [x.default.svc.cluster.local], location: MESH_INTERNAL, resolution: STATIC, ports: [{number: 80, name: tcp, protocol: TCP}], endpoints: [{ports: {tcp: 80}}]}\n", []string{"mesh.yaml", "ServiceEntry default/x", "address"}},
		{"subset without endpoints", "mesh: {paths: [%s]}\n", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x, namespace: default}\nspec: {hosts: [x.default.svc.cluster.local], location: MESH_INTERNAL, resolution: STATIC, ports: [{number: 80, name: tcp, protocol: TCP}], endpoints: [{address: 127.0.0.1, labels: {version: v1}, serviceAccount: x}]}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: x, namespace: default}\nspec: {host: x.default.svc.cluster.local, subsets: [{name: v9, labels: {version: v9}}]}\n", []string{"mesh.yaml", "DestinationRule default/x", "v9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"mesh.yaml": tc.mesh})
			settings := tc.settings
			if strings.Contains(settings, "%s") {
				settings = fmt.Sprintf(settings, filepath.Join(dir, "mesh.yaml"))
			}
			sf := filepath.Join(dir, "settings.yaml")
			if err := os.WriteFile(sf, []byte(settings), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, binary, "validate", "--config", sf).CombinedOutput()
			if err == nil {
				t.Fatalf("validate succeeded:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("validate output lacks %q:\n%s", w, out)
				}
			}
			// The same files never start the gateway.
			out, err = exec.CommandContext(ctx, binary, "--config", sf).CombinedOutput()
			if err == nil || strings.Contains(string(out), "eastwest ready") {
				t.Fatalf("gateway started with invalid files:\n%s", out)
			}
		})
	}
}

func TestBadReloadKeepsRunningConfig(t *testing.T) {
	ca := testpki.NewCA(t)
	b1 := testnet.NewTLSBackend(t, "reviews-v1", ca.ServerConfig(t, serverID), testnet.Hello)
	b2 := testnet.NewTLSBackend(t, "reviews-v2", ca.ServerConfig(t, serverID), testnet.Hello)
	dir := writeFiles(t, map[string]string{"mesh.yaml": meshYAML(b1, b2)})
	mf := filepath.Join(dir, "mesh.yaml")
	sf := filepath.Join(dir, "settings.yaml")
	if err := os.WriteFile(sf, []byte(fmt.Sprintf(settingsYAML, mf, testForwarder())), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, "--config", sf)
	if err := os.WriteFile(mf, []byte("kind: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(g.logs(), "reload rejected") {
		if time.Now().After(deadline) {
			t.Fatalf("no 'reload rejected' log:\n%s", g.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	raw, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, ca.ClientConfig(t, clientID, "outbound_.9080_.v2_.reviews.default.svc.cluster.local", serverID))
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "reviews-v2" {
		t.Fatalf("after a bad reload: %q, %v", line, err)
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "eastwest ") {
		t.Fatalf("version: %v %q", err, out)
	}
}

// testForwarder is the forwarder the binary runs with in these tests:
// EASTWEST_TEST_FORWARDER, splice by default (make test runs each).
func testForwarder() string {
	if f := os.Getenv("EASTWEST_TEST_FORWARDER"); f != "" {
		return f
	}
	return "splice"
}
