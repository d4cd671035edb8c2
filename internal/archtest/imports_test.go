package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/eastwest-gw/eastwest"

type pkg struct {
	ImportPath string
	Imports    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", module+"/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages; the rules below would check nothing", len(pkgs))
	}
	return pkgs
}

// TestImportRules checks the seams of STYLE.md on non-test code: sni is
// standard library only; balancer opens no sockets; proxy knows neither
// balancer nor ebpf; only cmd/ uses viper; mesh stays free of YAML and gRPC.
func TestImportRules(t *testing.T) {
	rules := []struct {
		pkg    string
		banned func(imp string) bool
		why    string
	}{
		{module + "/sni", func(i string) bool {
			return strings.Contains(i, ".") && !strings.HasPrefix(i, "golang.org/x/crypto/cryptobyte")
		}, "sni imports the standard library only"},
		{module + "/balancer", func(i string) bool { return i == "net" || i == "net/http" || i == "syscall" || i == module+"/proxy" }, "balancer opens no sockets and does not import proxy"},
		{module + "/proxy", func(i string) bool { return i == module+"/balancer" || i == module+"/ebpf" }, "proxy imports neither balancer nor ebpf"},
		{module + "/ebpf", func(i string) bool { return i == module+"/proxy" }, "ebpf satisfies proxy.Forwarder without importing proxy"},
		{module + "/health", func(i string) bool { return i == module+"/balancer" || i == module+"/proxy" }, "health publishes through its Sink seam"},
		{module + "/mesh", func(i string) bool {
			return strings.HasPrefix(i, module+"/mesh/") || strings.Contains(i, "yaml") || strings.Contains(i, "grpc") || strings.Contains(i, "k8s.io")
		}, "the snapshot types stay free of their sources"},
	}
	for _, p := range listPackages(t) {
		for _, imp := range p.Imports {
			if strings.Contains(imp, "spf13/viper") && !strings.HasPrefix(p.ImportPath, module+"/cmd/") && !strings.HasPrefix(p.ImportPath, module+"/bench/cmd/") {
				t.Errorf("%s imports viper: only cmd/ reads settings", p.ImportPath)
			}
			for _, r := range rules {
				if p.ImportPath == r.pkg && r.banned(imp) {
					t.Errorf("%s imports %s: %s", p.ImportPath, imp, r.why)
				}
			}
		}
	}
}
