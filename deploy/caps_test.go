package deploy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"go.yaml.in/yaml/v3"
)

// needSetpriv skips unless the test can start processes with chosen
// capabilities (root and setpriv).
func needSetpriv(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("not root: cannot start processes with chosen capabilities")
	}
	sp, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv not found")
	}
	return sp
}

// TestSockmapCapabilities proves the capability list of the manifests
// and the unit: with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, and nothing else, a
// process can do everything the sockmap forwarder does in the kernel
// (create its SOCKHASH and hash maps, load the SK_SKB verdict program,
// attach it, insert a TCP socket); without either one it cannot.
func TestSockmapCapabilities(t *testing.T) {
	sp := needSetpriv(t)
	obj := filepath.Join(modRoot, "ebpf", "forward_bpfel.o")
	if _, err := os.Stat(obj); err != nil {
		t.Skipf("no compiled verdict program: %v", err)
	}
	for _, tc := range []struct {
		name string
		caps string
		ok   bool
	}{
		{"bpf, net_admin and perfmon", "+bpf,+net_admin,+perfmon", true},
		{"without perfmon", "+bpf,+net_admin", false},
		{"bpf only", "+bpf", false},
		{"net_admin only", "+net_admin", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(sp, "--inh-caps=-all", "--bounding-set=-all,"+tc.caps, "--",
				os.Args[0], "-test.run=^TestSockmapProbeHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), "EASTWEST_CAPPROBE="+obj)
			out, err := cmd.CombinedOutput()
			if tc.ok && err != nil {
				t.Errorf("with %s: %v\n%s", tc.caps, err, out)
			}
			if !tc.ok && err == nil {
				t.Errorf("with %s only the probe should fail, it passed:\n%s", tc.caps, out)
			}
			// Missing CAP_BPF or CAP_NET_ADMIN: EPERM from bpf(2); missing
			// CAP_PERFMON: the verifier refuses the kernel-memory read.
			if !tc.ok && !strings.Contains(string(out), "operation not permitted") && !strings.Contains(string(out), "prohibited for !root") {
				t.Errorf("with %s: failed for another reason than a missing capability:\n%s", tc.caps, out)
			}
		})
	}
}

// TestSockmapProbeHelper is the child of TestSockmapCapabilities.
func TestSockmapProbeHelper(t *testing.T) {
	obj := os.Getenv("EASTWEST_CAPPROBE")
	if obj == "" {
		t.Skip("helper process for TestSockmapCapabilities")
	}
	if err := sockmapProbe(obj); err != nil {
		t.Fatal(err)
	}
}

func sockmapProbe(obj string) error {
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		return fmt.Errorf("load spec: %w", err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return fmt.Errorf("create maps and load program: %w", err)
	}
	defer coll.Close()
	hash, prog := coll.Maps["sock_hash"], coll.Programs["stream_verdict"]
	if hash == nil || prog == nil {
		return errors.New("object has no sock_hash or stream_verdict")
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: hash.FD(), Program: prog, Attach: ebpf.AttachSkSKBStreamVerdict}); err != nil {
		return fmt.Errorf("attach verdict: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var uerr error
	if err := raw.Control(func(fd uintptr) {
		uerr = hash.Update(uint64(1), uint64(fd), ebpf.UpdateAny)
	}); err != nil {
		return err
	}
	if uerr != nil {
		return fmt.Errorf("insert socket: %w", uerr)
	}
	return nil
}

// TestImageFileCapabilities reproduces what the image and the Deployment
// do together, without Docker: the binary carries the Dockerfile's file
// capabilities, runs as the Deployment's non-root user with the
// capabilities it adds as the bounding set and no_new_privs
// (allowPrivilegeEscalation: false), and becomes ready holding exactly
// CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON. Without them in the bounding set (docker run
// with no --cap-add) the kernel refuses to exec it, as the README says.
func TestImageFileCapabilities(t *testing.T) {
	sp := needSetpriv(t)
	setcap, err := exec.LookPath("setcap")
	if err != nil {
		t.Skip("setcap not found")
	}
	root := t.TempDir()
	for _, d := range []string{root, filepath.Dir(root)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(root, "eastwest")
	data, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(setcap, "cap_bpf,cap_net_admin,cap_perfmon=ep", bin).CombinedOutput(); err != nil {
		t.Skipf("setcap on %s: %v %s (file system without security xattrs?)", root, err, out)
	}
	// The Deployment's settings, with loopback addresses and the mesh in root.
	docs := kustomizeBuild(t, "deploy/kubernetes/base")
	dep := byKind(docs, "Deployment")[0]
	_, settings := settingsOf(t, docs, dep)
	for _, f := range mountedFiles(t, docs, dep, root) {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte(f.data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	admin := loopbackSettings(t, settings, root)
	cfg := filepath.Join(root, "eastwest.yaml")
	b, err := yaml.Marshal(settings)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(root, "etc"), filepath.Join(root, "etc", "eastwest")} {
		_ = os.Chmod(d, 0o755)
	}
	user := []string{sp, "--reuid=65532", "--regid=65532", "--clear-groups", "--inh-caps=-all", "--no-new-privs"}
	args := []string{bin, "run", "--config", cfg}
	env := []string{"PATH=" + os.Getenv("PATH"), "EASTWEST_DRAIN_ACCEPTGRACE=0s"}

	t.Run("with the capabilities", func(t *testing.T) {
		p := start(t, append(append(user, "--bounding-set=-all,+bpf,+net_admin,+perfmon"), args...), env)
		waitStatus(t, p, "http://"+admin+"/ready", 200, 10*time.Second)
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("CapEff:\t%016x", uint64(1)<<capBPF|uint64(1)<<capNetAdmin|uint64(1)<<capPerfmon)
		if !strings.Contains(string(status), want) {
			t.Errorf("want %q in\n%s", want, status)
		}
	})
	t.Run("without them", func(t *testing.T) {
		out, err := exec.Command(sp, append(append(user, "--bounding-set=-all"), bin, "version")...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Operation not permitted") {
			t.Errorf("exec with file capabilities outside the bounding set: want EPERM, got %v: %s", err, out)
		}
	})
}
