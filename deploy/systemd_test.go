package deploy

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// unit is a systemd unit file: section -> key -> values (in order).
type unit map[string]map[string][]string

func parseUnit(t testing.TB, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

const (
	capNetAdmin = 12
	capBPF      = 39
	capPerfmon  = 38
)

// TestSystemdUnit checks the unit's keys against the binary and the
// example settings, and runs systemd-analyze verify where it exists.
func TestSystemdUnit(t *testing.T) {
	path := filepath.Join(modRoot, "deploy", "systemd", "eastwest.service")
	u := parseUnit(t, path)
	want := map[string]string{
		"ExecStart":   "/usr/local/bin/eastwest run --config /etc/eastwest/eastwest.yaml",
		"ExecReload":  "/bin/kill -HUP $MAINPID",
		"KillSignal":  "SIGTERM",
		"Restart":     "on-failure",
		"LimitNOFILE": "20000",
	}
	for k, v := range want {
		if got := u.get("Service", k); got != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		caps := strings.Fields(u.get("Service", k))
		slices.Sort(caps)
		if !slices.Equal(caps, []string{"CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"}) {
			t.Errorf("%s=%v, want CAP_BPF CAP_NET_ADMIN CAP_PERFMON", k, caps)
		}
	}
	if u.get("Service", "User") == "" || u.get("Service", "User") == "root" {
		t.Errorf("User=%q: want a non-root user", u.get("Service", "User"))
	}
	// TimeoutStopSec covers the drain of the example settings.
	var s map[string]any
	b, err := os.ReadFile(filepath.Join(modRoot, "deploy", "systemd", "eastwest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	stop := duration(t, u.get("Service", "TimeoutStopSec"))
	need := duration(t, get(s, "drain", "acceptGrace")) + duration(t, get(s, "drain", "deadline")) + 2*time.Second
	if stop < need {
		t.Errorf("TimeoutStopSec=%s < acceptGrace + deadline + 2 s = %s", stop, need)
	}
	if u.get("Install", "WantedBy") != "multi-user.target" {
		t.Errorf("WantedBy=%q", u.get("Install", "WantedBy"))
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		sa, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze not found: unit not verified by systemd")
		}
		// The same unit with ExecStart pointing at the built binary (verify
		// checks that the executable exists).
		unitText, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		copyPath := filepath.Join(t.TempDir(), "eastwest.service")
		text := strings.ReplaceAll(string(unitText), "/usr/local/bin/eastwest", binPath)
		if err := os.WriteFile(copyPath, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, sa, "verify", copyPath).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}

// TestSystemdExecStart runs the unit's ExecStart line (binary and config
// paths rewritten to temporary files holding the example settings, with
// loopback addresses), as the unit's capability setup would when running
// as root with setpriv: a non-root user, CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON ambient
// and bounding, no_new_privs. It checks readiness, the capabilities the
// process holds, that SIGHUP (ExecReload) reloads and keeps it ready, and
// that SIGTERM (KillSignal) ends it cleanly.
func TestSystemdExecStart(t *testing.T) {
	u := parseUnit(t, filepath.Join(modRoot, "deploy", "systemd", "eastwest.service"))
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(filepath.Dir(root), 0o755)
	var s map[string]any
	b, err := os.ReadFile(filepath.Join(modRoot, "deploy", "systemd", "eastwest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	// The example mesh of the Kubernetes base stands in for /etc/eastwest/mesh.
	mesh, err := os.ReadFile(filepath.Join(modRoot, "deploy", "kubernetes", "base", "shared", "mesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list(s, "mesh", "paths") {
		dir := filepath.Join(root, fmt.Sprint(p))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), mesh, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	admin := loopbackSettings(t, s, root)
	// A short drain for the test; the unit's TimeoutStopSec is checked
	// against the example's values in TestSystemdUnit.
	s["drain"] = map[string]any{"acceptGrace": "0s", "deadline": "2s"}
	out, err := yaml.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}

	var argv []string
	for _, a := range strings.Fields(u.get("Service", "ExecStart")) {
		switch {
		case a == "/usr/local/bin/eastwest":
			a = binPath
		case strings.HasPrefix(a, "/etc/"):
			a = filepath.Join(root, a)
			if err := os.MkdirAll(filepath.Dir(a), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(a, out, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		argv = append(argv, a)
	}
	asUnit := false
	if setpriv, err := exec.LookPath("setpriv"); err == nil && os.Geteuid() == 0 {
		caps := strings.ToLower(strings.ReplaceAll(strings.ReplaceAll(u.get("Service", "AmbientCapabilities"), "CAP_", "+"), " ", ","))
		pre := []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps=" + caps, "--ambient-caps=" + caps, "--bounding-set=-all," + caps, "--no-new-privs"}
		if prlimit, err := exec.LookPath("prlimit"); err == nil {
			n := u.get("Service", "LimitNOFILE")
			pre = append([]string{prlimit, "--nofile=" + n + ":" + n}, pre...)
		}
		argv = append(pre, argv...)
		asUnit = true
	} else {
		t.Log("not root or no setpriv: running ExecStart without the unit's user and capabilities")
	}
	p := start(t, argv, []string{"PATH=" + os.Getenv("PATH")})
	waitStatus(t, p, "http://"+admin+"/ready", http.StatusOK, 10*time.Second)

	if asUnit {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		wantCaps := uint64(1)<<capBPF | uint64(1)<<capNetAdmin | uint64(1)<<capPerfmon
		for _, line := range strings.Split(string(status), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "CapEff", "CapAmb", "CapBnd":
				got, _ := strconv.ParseUint(v, 16, 64)
				if got != wantCaps {
					t.Errorf("%s %#x, want %#x (CAP_BPF|CAP_NET_ADMIN|CAP_PERFMON)", k, got, wantCaps)
				}
			case "Uid":
				if f := strings.Fields(v); len(f) == 0 || f[1] == "0" {
					t.Errorf("runs as uid %q", v)
				}
			case "NoNewPrivs":
				if v != "1" {
					t.Errorf("NoNewPrivs %s", v)
				}
			}
		}
	}

	// ExecReload: SIGHUP reloads and stays ready.
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(getBody(t, "http://"+admin+"/metrics"), `eastwest_config_reloads_total{result="ok"} 1`) {
		if time.Now().After(deadline) {
			t.Fatalf("no successful reload counted after SIGHUP\n%s", p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitStatus(t, p, "http://"+admin+"/ready", http.StatusOK, time.Second)

	// KillSignal: SIGTERM drains and exits 0.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.log())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no exit 10 s after SIGTERM\n%s", p.log())
	}
}
