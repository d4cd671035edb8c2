package deploy

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// binPath is the eastwest binary TestMain builds once for every test, with
// the Dockerfile's flags.
var binPath string

// modRoot is the module root (from `go env GOMOD`).
var modRoot string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		fmt.Fprintln(os.Stderr, "deploy tests: go env GOMOD:", err)
		return 1
	}
	modRoot = filepath.Dir(strings.TrimSpace(string(out)))
	dir, err := os.MkdirTemp("", "eastwest-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// World-readable, so that tests can run the binary as a non-root user.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binPath = filepath.Join(dir, "eastwest")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", binPath, "./cmd/eastwest")
	build.Dir = modRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "deploy tests: go build ./cmd/eastwest: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// ---- manifests -------------------------------------------------------------

// obj is one decoded Kubernetes object.
type obj = map[string]any

// kustomizeBuild renders a kustomization with the pinned kustomize tool.
func kustomizeBuild(t testing.TB, dir string) []obj {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "tool", "kustomize", "build", dir)
	cmd.Dir = modRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, stderr.String())
	}
	docs := decodeAll(t, out)
	if len(docs) == 0 {
		t.Fatalf("kustomize build %s: no objects", dir)
	}
	return docs
}

func decodeAll(t testing.TB, b []byte) []obj {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []obj
	for {
		var d obj
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("yaml: %v", err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// get walks a path of map keys and list indexes; nil when absent.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

func list(v any, path ...any) []any {
	l, _ := get(v, path...).([]any)
	return l
}

func num(t testing.TB, v any, path ...any) int {
	t.Helper()
	switch n := get(v, path...).(type) {
	case int:
		return n
	case float64:
		return int(n)
	}
	t.Fatalf("%v: not a number: %#v", path, get(v, path...))
	return 0
}

func byKind(docs []obj, kind string) []obj {
	var out []obj
	for _, d := range docs {
		if d["kind"] == kind {
			out = append(out, d)
		}
	}
	return out
}

func byName(t testing.TB, docs []obj, kind, name string) obj {
	t.Helper()
	for _, d := range byKind(docs, kind) {
		if str(d, "metadata", "name") == name {
			return d
		}
	}
	t.Fatalf("no %s %q", kind, name)
	return nil
}

func strs(l []any) []string {
	out := make([]string, 0, len(l))
	for _, v := range l {
		out = append(out, fmt.Sprint(v))
	}
	return out
}

// container returns the Deployment's eastwest container.
func container(t testing.TB, dep obj) obj {
	t.Helper()
	for _, c := range list(dep, "spec", "template", "spec", "containers") {
		if str(c, "name") == "eastwest" {
			return c.(obj)
		}
	}
	t.Fatalf("deployment %s: no container named eastwest", str(dep, "metadata", "name"))
	return nil
}

// containerPort resolves a probe's or Service's port (name or number) to
// the container port number.
func containerPort(t testing.TB, c obj, port any) int {
	t.Helper()
	for _, p := range list(c, "ports") {
		if str(p, "name") == fmt.Sprint(port) || fmt.Sprint(get(p, "containerPort")) == fmt.Sprint(port) {
			return num(t, p, "containerPort")
		}
	}
	t.Fatalf("port %v is not a port of container %s", port, str(c, "name"))
	return 0
}

// settings is the eastwest.yaml a Deployment mounts, decoded.
func settingsOf(t testing.TB, docs []obj, dep obj) (key string, data map[string]any) {
	t.Helper()
	for _, f := range mountedFiles(t, docs, dep, "/") {
		if strings.HasSuffix(f.path, "/eastwest.yaml") {
			var m map[string]any
			if err := yaml.Unmarshal([]byte(f.data), &m); err != nil {
				t.Fatalf("%s: %v", f.path, err)
			}
			return f.path, m
		}
	}
	t.Fatal("no eastwest.yaml mounted")
	return "", nil
}

// file is one file a pod sees from a ConfigMap volume.
type file struct{ path, data string }

// mountedFiles lists the files that the kubelet would project from the
// Deployment's ConfigMap volumes, under root (a temporary folder standing
// for the container's /).
func mountedFiles(t testing.TB, docs []obj, dep obj, root string) []file {
	t.Helper()
	vols := map[string]string{} // volume -> ConfigMap name
	for _, v := range list(dep, "spec", "template", "spec", "volumes") {
		if cm := str(v, "configMap", "name"); cm != "" {
			vols[str(v, "name")] = cm
		}
	}
	var out []file
	for _, m := range list(container(t, dep), "volumeMounts") {
		cmName, ok := vols[str(m, "name")]
		if !ok {
			t.Fatalf("volumeMount %s: not a ConfigMap volume", str(m, "name"))
		}
		data, _ := get(byName(t, docs, "ConfigMap", cmName), "data").(map[string]any)
		mp := str(m, "mountPath")
		if sp := str(m, "subPath"); sp != "" {
			v, ok := data[sp].(string)
			if !ok {
				t.Fatalf("subPath %s: no key %q in ConfigMap %s", mp, sp, cmName)
			}
			out = append(out, file{filepath.Join(root, mp), v})
			continue
		}
		for k, v := range data {
			out = append(out, file{filepath.Join(root, mp, k), v.(string)})
		}
	}
	return out
}

func duration(t testing.TB, v any) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(fmt.Sprint(v))
	if err != nil {
		t.Fatalf("duration %v: %v", v, err)
	}
	return d
}

func portOf(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

var targets = []string{"deploy/kubernetes/base", "deploy/kubernetes/overlays/zonal", "deploy/kubernetes/overlays/node-labels"}

// TestRawManifestsParse decodes every YAML file under deploy/ (manifests,
// kustomizations, settings, the example mesh) so a syntax error is caught
// even in a file no kustomization lists.
func TestRawManifestsParse(t *testing.T) {
	n := 0
	err := filepath.WalkDir(filepath.Join(modRoot, "deploy"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, doc := range decodeAll(t, b) {
			if doc["kind"] == nil && doc["apiVersion"] != nil {
				t.Errorf("%s: a document with apiVersion but no kind", p)
			}
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d YAML files found under deploy/", n)
	}
}

// TestKustomizeBase checks every object of the base against the binary's
// interface: ports, probe paths, args, drain timing, capabilities.
func TestKustomizeBase(t *testing.T) {
	docs := kustomizeBuild(t, "deploy/kubernetes/base")
	counts := map[string]int{}
	for _, d := range docs {
		counts[fmt.Sprint(d["kind"])]++
		if d["apiVersion"] == nil || str(d, "metadata", "name") == "" {
			t.Errorf("object without apiVersion or name: %v", d)
		}
		if ns := str(d, "metadata", "namespace"); ns != "istio-system" {
			t.Errorf("%s %s: namespace %q", d["kind"], str(d, "metadata", "name"), ns)
		}
	}
	want := map[string]int{"Deployment": 1, "Service": 1, "ServiceAccount": 1, "ConfigMap": 2, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1}
	for k, n := range want {
		if counts[k] != n {
			t.Errorf("%d %s, want %d (all: %v)", counts[k], k, n, counts)
		}
	}
	dep := byKind(docs, "Deployment")[0]
	checkDeployment(t, docs, dep)
	if r := num(t, dep, "spec", "replicas"); r != 3 {
		t.Errorf("replicas %d, want 3", r)
	}

	t.Run("service", func(t *testing.T) {
		svc := byKind(docs, "Service")[0]
		c := container(t, dep)
		if str(svc, "spec", "type") != "LoadBalancer" || str(svc, "spec", "externalTrafficPolicy") != "Local" {
			t.Errorf("service: type %q externalTrafficPolicy %q", str(svc, "spec", "type"), str(svc, "spec", "externalTrafficPolicy"))
		}
		_, s := settingsOf(t, docs, dep)
		ports := map[int]int{}
		for _, p := range list(svc, "spec", "ports") {
			ports[num(t, p, "port")] = containerPort(t, c, get(p, "targetPort"))
		}
		wantPorts := map[int]int{
			15443: portOf(t, str(s, "listeners", 0, "address")),
			15021: portOf(t, str(s, "admin", "address")),
		}
		if fmt.Sprint(ports) != fmt.Sprint(wantPorts) {
			t.Errorf("service port -> container port %v, want %v (15443 the listener, 15021 the admin address)", ports, wantPorts)
		}
		annotations, _ := get(svc, "metadata", "annotations").(map[string]any)
		for k := range annotations {
			if strings.Contains(k, "proxy-protocol") {
				t.Errorf("annotation %s: PROXY protocol is not implemented, keep it commented", k)
			}
		}
		if !matches(get(svc, "spec", "selector"), get(dep, "spec", "template", "metadata", "labels")) {
			t.Errorf("service selector %v does not select the pods %v", get(svc, "spec", "selector"), get(dep, "spec", "template", "metadata", "labels"))
		}
		if str(svc, "metadata", "labels", "topology.istio.io/network") != fmt.Sprint(s["network"]) {
			t.Errorf("service label topology.istio.io/network %q, settings network %q", str(svc, "metadata", "labels", "topology.istio.io/network"), s["network"])
		}
	})
	t.Run("pdb hpa serviceaccount", func(t *testing.T) {
		checkPDBAndHPA(t, docs, dep)
		sa := byKind(docs, "ServiceAccount")[0]
		if str(dep, "spec", "template", "spec", "serviceAccountName") != str(sa, "metadata", "name") {
			t.Errorf("deployment uses service account %q, the base defines %q", str(dep, "spec", "template", "spec", "serviceAccountName"), str(sa, "metadata", "name"))
		}
		if get(sa, "automountServiceAccountToken") != false || get(dep, "spec", "template", "spec", "automountServiceAccountToken") != false {
			t.Error("the gateway reads no API: automountServiceAccountToken must be false")
		}
	})
}

// TestKustomizeOverlays checks the locality overlays: each Deployment is
// told its locality, and the zones' selectors stay apart.
func TestKustomizeOverlays(t *testing.T) {
	t.Run("zonal", func(t *testing.T) {
		docs := kustomizeBuild(t, "deploy/kubernetes/overlays/zonal")
		deps := byKind(docs, "Deployment")
		if len(deps) < 2 || len(byKind(docs, "Service")) != 1 || len(byKind(docs, "ConfigMap")) != 2 {
			t.Fatalf("want >= 2 Deployments, 1 Service, 2 ConfigMaps; got %d, %d, %d", len(deps), len(byKind(docs, "Service")), len(byKind(docs, "ConfigMap")))
		}
		svc := byKind(docs, "Service")[0]
		for i, dep := range deps {
			checkDeployment(t, docs, dep)
			checkPDBAndHPA(t, docs, dep)
			if envValue(container(t, dep), "EASTWEST_LOCALITY") == "" {
				t.Errorf("%s: no EASTWEST_LOCALITY", str(dep, "metadata", "name"))
			}
			if !matches(get(svc, "spec", "selector"), get(dep, "spec", "template", "metadata", "labels")) {
				t.Errorf("%s: the Service does not select its pods", str(dep, "metadata", "name"))
			}
			for _, other := range deps[i+1:] {
				if matches(get(dep, "spec", "selector", "matchLabels"), get(other, "spec", "template", "metadata", "labels")) {
					t.Errorf("%s selects the pods of %s", str(dep, "metadata", "name"), str(other, "metadata", "name"))
				}
			}
		}
	})
	t.Run("node-labels", func(t *testing.T) {
		docs := kustomizeBuild(t, "deploy/kubernetes/overlays/node-labels")
		dep := byKind(docs, "Deployment")[0]
		checkDeployment(t, docs, dep)
		if v := envValue(container(t, dep), "EASTWEST_LOCALITY"); v != "$(NODE_REGION)/$(NODE_ZONE)" {
			t.Errorf("EASTWEST_LOCALITY %q", v)
		}
	})
}

func envValue(c obj, name string) string {
	for _, e := range list(c, "env") {
		if str(e, "name") == name {
			return str(e, "value")
		}
	}
	return ""
}

// matches reports whether every selector label is among labels.
func matches(selector, labels any) bool {
	sel, _ := selector.(map[string]any)
	lab, _ := labels.(map[string]any)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if lab[k] != v {
			return false
		}
	}
	return true
}

func checkPDBAndHPA(t *testing.T, docs []obj, dep obj) {
	t.Helper()
	name := str(dep, "metadata", "name")
	pdb := byName(t, docs, "PodDisruptionBudget", name)
	if str(pdb, "apiVersion") != "policy/v1" || !matches(get(pdb, "spec", "selector", "matchLabels"), get(dep, "spec", "template", "metadata", "labels")) {
		t.Errorf("pdb %s: apiVersion %q, selector %v", name, str(pdb, "apiVersion"), get(pdb, "spec", "selector"))
	}
	hpa := byName(t, docs, "HorizontalPodAutoscaler", name)
	if str(hpa, "apiVersion") != "autoscaling/v2" || str(hpa, "spec", "scaleTargetRef", "kind") != "Deployment" || str(hpa, "spec", "scaleTargetRef", "name") != name {
		t.Errorf("hpa %s: %v %v", name, str(hpa, "apiVersion"), get(hpa, "spec", "scaleTargetRef"))
	}
	if str(hpa, "spec", "metrics", 0, "resource", "name") != "cpu" {
		t.Errorf("hpa %s: metric %v, want cpu", name, get(hpa, "spec", "metrics"))
	}
	if min := num(t, hpa, "spec", "minReplicas"); min < 2 || num(t, hpa, "spec", "maxReplicas") < min {
		t.Errorf("hpa %s: min %d max %d", name, min, num(t, hpa, "spec", "maxReplicas"))
	}
}

// checkDeployment checks one gateway Deployment against the binary and
// the settings it mounts.
func checkDeployment(t *testing.T, docs []obj, dep obj) {
	t.Helper()
	name := str(dep, "metadata", "name")
	c := container(t, dep)
	pod := get(dep, "spec", "template", "spec")
	if got := strs(list(c, "args")); !slices.Equal(got, []string{"run", "--config", "/etc/eastwest/eastwest.yaml"}) {
		t.Errorf("%s: args %q", name, got)
	}
	settingsPath, s := settingsOf(t, docs, dep)
	if settingsPath != "/etc/eastwest/eastwest.yaml" {
		t.Errorf("%s: settings mounted at %s, args read /etc/eastwest/eastwest.yaml", name, settingsPath)
	}
	if a := str(s, "admin", "address"); a != "0.0.0.0:15021" {
		t.Errorf("%s: admin.address %q, want 0.0.0.0:15021 (Istio's status port)", name, a)
	}
	// The mesh paths must be mounted.
	files := mountedFiles(t, docs, dep, "/")
	for _, p := range list(s, "mesh", "paths") {
		found := false
		for _, f := range files {
			found = found || strings.HasPrefix(f.path, fmt.Sprint(p)+"/") || f.path == p
		}
		if !found {
			t.Errorf("%s: mesh path %v is not mounted", name, p)
		}
	}
	adminPort := portOf(t, str(s, "admin", "address"))
	for probe, path := range map[string]string{"readinessProbe": "/ready", "livenessProbe": "/healthz"} {
		if p := str(c, probe, "httpGet", "path"); p != path {
			t.Errorf("%s: %s path %q, want %q", name, probe, p, path)
		}
		if p := containerPort(t, c, get(c, probe, "httpGet", "port")); p != adminPort {
			t.Errorf("%s: %s on port %d, the admin address is on %d", name, probe, p, adminPort)
		}
	}
	if get(c, "lifecycle", "preStop") != nil {
		t.Errorf("%s: preStop hook: the binary's drain.acceptGrace replaces it (see README)", name)
	}
	// Drain: SIGTERM, acceptGrace, then up to deadline; the kubelet must not
	// SIGKILL before.
	grace := time.Duration(num(t, pod, "terminationGracePeriodSeconds")) * time.Second
	need := duration(t, get(s, "drain", "acceptGrace")) + duration(t, get(s, "drain", "deadline")) + 2*time.Second
	if grace < need {
		t.Errorf("%s: terminationGracePeriodSeconds %s < acceptGrace + deadline + 2 s = %s", name, grace, need)
	}
	// Security.
	sc := get(c, "securityContext")
	if get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false || get(sc, "privileged") == true {
		t.Errorf("%s: container securityContext %v", name, sc)
	}
	if get(pod, "securityContext", "runAsNonRoot") != true {
		t.Errorf("%s: runAsNonRoot is not set", name)
	}
	add := strs(list(sc, "capabilities", "add"))
	slices.Sort(add)
	if !slices.Equal(add, []string{"BPF", "NET_ADMIN", "PERFMON"}) || !slices.Equal(strs(list(sc, "capabilities", "drop")), []string{"ALL"}) {
		t.Errorf("%s: capabilities %v, want add [BPF NET_ADMIN PERFMON] drop [ALL]", name, get(sc, "capabilities"))
	}
	for _, k := range []string{"requests", "limits"} {
		if get(c, "resources", k, "cpu") == nil || get(c, "resources", k, "memory") == nil {
			t.Errorf("%s: resources.%s needs cpu and memory", name, k)
		}
	}
	zone := false
	for _, tsc := range list(pod, "topologySpreadConstraints") {
		zone = zone || str(tsc, "topologyKey") == "topology.kubernetes.io/zone"
	}
	if !zone {
		t.Errorf("%s: no topology spread over topology.kubernetes.io/zone", name)
	}
	if p := containerPort(t, c, "tls"); p != portOf(t, str(s, "listeners", 0, "address")) {
		t.Errorf("%s: container port tls %d, listener on %s", name, p, str(s, "listeners", 0, "address"))
	}
}

// ---- running the binary the way a manifest does ---------------------------

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// loopbackSettings rewrites the settings' addresses to free loopback ports
// and every path under a mount point to its copy under root.
func loopbackSettings(t testing.TB, s map[string]any, root string) (adminAddr string) {
	t.Helper()
	for _, l := range list(s, "listeners") {
		l.(map[string]any)["address"] = freeAddr(t)
	}
	adminAddr = freeAddr(t)
	s["admin"].(map[string]any)["address"] = adminAddr
	if m, ok := s["mesh"].(map[string]any); ok {
		var paths []any
		for _, p := range list(m, "paths") {
			paths = append(paths, filepath.Join(root, fmt.Sprint(p)))
		}
		m["paths"] = paths
	}
	return adminAddr
}

// proc is a started eastwest process.
type proc struct {
	cmd  *exec.Cmd
	out  *syncWriter
	done chan error
}

// start runs argv with env and stops it (SIGKILL) at the end of the test if
// it still runs.
func start(t testing.TB, argv []string, env []string) *proc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	p := &proc{cmd: cmd, out: &syncWriter{}, done: make(chan error, 1)}
	cmd.Stdout = io.Discard
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// syncWriter lets the test read the log while the process writes it.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// waitStatus polls url until it answers want, or fails after timeout.
func waitStatus(t testing.TB, p *proc, url string, want int, timeout time.Duration) {
	t.Helper()
	cl := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("eastwest exited (%v) before %s answered %d:\n%s", err, url, want, p.log())
		default:
		}
		resp, err := cl.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: want %d, last %s\n%s", url, want, last, p.log())
}

func (p *proc) log() string { return p.out.String() }

func getBody(t testing.TB, url string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// podEnv is the container's environment as the kubelet would set it:
// literal values with $(VAR) expanded from earlier entries; fieldRef to a
// label the pod does not have is empty; resourceFieldRef is skipped (the
// test process has no cgroup limit to report).
func podEnv(c obj) []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	vals := map[string]string{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range list(c, "env") {
		name := str(e, "name")
		switch {
		case get(e, "value") != nil:
			vals[name] = ref.ReplaceAllStringFunc(str(e, "value"), func(m string) string {
				if v, ok := vals[m[2:len(m)-1]]; ok {
					return v
				}
				return m
			})
		case get(e, "valueFrom", "fieldRef") != nil:
			vals[name] = ""
		default:
			continue
		}
		env = append(env, name+"="+vals[name])
	}
	return env
}

// TestManifestsRunBinary starts the binary as each Deployment of each
// kustomize target would, with the ConfigMaps' contents in temporary files
// and the addresses on loopback, and GETs the probes' paths on the admin
// port. For the base it also checks the drain: after SIGTERM readiness
// fails while liveness still passes, then the process exits 0.
func TestManifestsRunBinary(t *testing.T) {
	for _, target := range targets {
		docs := kustomizeBuild(t, target)
		for _, dep := range byKind(docs, "Deployment") {
			t.Run(filepath.Base(target)+"/"+str(dep, "metadata", "name"), func(t *testing.T) {
				root := t.TempDir()
				c := container(t, dep)
				settingsPath, s := settingsOf(t, docs, dep)
				for _, f := range mountedFiles(t, docs, dep, root) {
					if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(f.path, []byte(f.data), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				admin := loopbackSettings(t, s, root)
				b, err := yaml.Marshal(s)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, settingsPath), b, 0o644); err != nil {
					t.Fatal(err)
				}
				argv := []string{binPath}
				for _, a := range strs(list(c, "args")) {
					if strings.HasPrefix(a, "/etc/") {
						a = filepath.Join(root, a)
					}
					argv = append(argv, a)
				}
				env := podEnv(c)
				// Shorten the drain for the test; the manifest's values are
				// checked against terminationGracePeriodSeconds above.
				env = append(env, "EASTWEST_DRAIN_ACCEPTGRACE=1s", "EASTWEST_DRAIN_DEADLINE=2s")
				p := start(t, argv, env)
				ready := "http://" + admin + str(c, "readinessProbe", "httpGet", "path")
				live := "http://" + admin + str(c, "livenessProbe", "httpGet", "path")
				waitStatus(t, p, ready, http.StatusOK, 10*time.Second)
				waitStatus(t, p, live, http.StatusOK, time.Second)
				waitStatus(t, p, "http://"+admin+"/healthz/ready", http.StatusOK, time.Second)

				cfg := getBody(t, "http://"+admin+"/debug/config")
				wantLoc := fmt.Sprint(s["locality"])
				for _, e := range env {
					if v, ok := strings.CutPrefix(e, "EASTWEST_LOCALITY="); ok {
						wantLoc = v
					}
				}
				if !strings.Contains(cfg, fmt.Sprintf("%q: %q", "Locality", wantLoc)) {
					t.Errorf("locality: want %q in /debug/config:\n%s", wantLoc, cfg)
				}
				if target != targets[0] {
					return
				}
				if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				waitStatus(t, p, ready, http.StatusServiceUnavailable, 900*time.Millisecond)
				waitStatus(t, p, live, http.StatusOK, time.Second)
				select {
				case err := <-p.done:
					p.done <- err
					if err != nil {
						t.Fatalf("exit after SIGTERM: %v\n%s", err, p.log())
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("no exit 10 s after SIGTERM\n%s", p.log())
				}
			})
		}
	}
}

// ---- Dockerfile --------------------------------------------------------------

// TestDockerfile checks the image definition without Docker: a static
// binary built with the same flags, a distroless or scratch base, a
// non-root user, the Deployment's args as CMD, and the same capabilities
// as the manifests and the systemd unit.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(modRoot, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// Join continuation lines, drop comments.
	text := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(b), " ")
	var froms, users, runs []string
	var entry, cmd, expose string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			froms = append(froms, rest)
		case "USER":
			users = append(users, rest)
		case "RUN":
			runs = append(runs, rest)
		case "ENTRYPOINT":
			entry = rest
		case "CMD":
			cmd = rest
		case "EXPOSE":
			expose = rest
		case "ARG", "WORKDIR", "COPY", "ENV", "LABEL":
		default:
			t.Errorf("unexpected instruction %q", line)
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, FROM lines: %q", froms)
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("final stage %q: want distroless/static or scratch", final)
	}
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1], "0") || strings.HasPrefix(users[len(users)-1], "root") {
		t.Errorf("USER %q: want a non-root user", users)
	}
	var build, setcap string
	for _, r := range runs {
		if strings.Contains(r, "go build") {
			build = r
		}
		if strings.Contains(r, "FILE_CAPS") {
			setcap = r
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/eastwest"} {
		if !strings.Contains(build, want) {
			t.Errorf("go build line lacks %s: %q", want, build)
		}
	}
	if m := regexp.MustCompile(`ARG FILE_CAPS=(\S+)`).FindStringSubmatch(text); m == nil || m[1] != "cap_bpf,cap_net_admin,cap_perfmon=ep" || setcap == "" {
		t.Errorf("file capabilities: want ARG FILE_CAPS=cap_bpf,cap_net_admin,cap_perfmon=ep applied with setcap, got %v", m)
	}
	if entry != `["/usr/local/bin/eastwest"]` || cmd != `["run", "--config", "/etc/eastwest/eastwest.yaml"]` {
		t.Errorf("ENTRYPOINT %s CMD %s", entry, cmd)
	}
	if expose != "15443 15021" {
		t.Errorf("EXPOSE %q", expose)
	}

	// The binary built with those flags (TestMain) is static: no program
	// interpreter, no shared libraries, so it runs on distroless/static.
	f, err := elf.Open(binPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has a program interpreter: not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary needs %v", libs)
	}

	// Every file the binary embeds must pass the Dockerfile's ignore file.
	ign, err := os.ReadFile(filepath.Join(modRoot, "deploy", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	list := exec.Command("go", "list", "-deps", "-f", `{{.Dir}}{{range .EmbedFiles}} {{.}}{{end}}`, "./cmd/eastwest")
	list.Dir = modRoot
	out, err := list.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || !strings.HasPrefix(fields[0], modRoot) {
			continue
		}
		for _, e := range fields[1:] {
			if !strings.Contains(string(ign), "!**/*"+filepath.Ext(e)+"\n") {
				t.Errorf("%s/%s is embedded but %s files are not in the build context (Dockerfile.dockerignore)", fields[0], e, filepath.Ext(e))
			}
		}
	}
}
