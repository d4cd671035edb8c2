package deploy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNetnsDemo runs `make demo` (deploy/demo/netns-demo.sh) and checks its
// before/after table: cluster 1's client reached cluster 2's endpoints,
// all of them in the gateway's zone first; after those were stopped, no
// request failed and every answer came from the other zone. Then no
// namespace the script made may be left.
func TestNetnsDemo(t *testing.T) {
	skip := func(why string) {
		t.Helper()
		if os.Getenv("EASTWEST_REQUIRE_NETNS") == "1" {
			t.Fatalf("EASTWEST_REQUIRE_NETNS=1 but %s", why)
		}
		t.Skipf("netns demo not run: %s (EASTWEST_REQUIRE_NETNS=1 makes this a failure)", why)
	}
	if os.Geteuid() != 0 {
		skip("not root")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		skip("ip (iproute2) not found")
	}
	if _, err := exec.LookPath("timeout"); err != nil {
		skip("timeout (coreutils) not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(modRoot, "deploy", "demo", "netns-demo.sh"), binPath)
	cmd.Dir = modRoot
	cmd.Env = append(os.Environ(), "DEMO_TIMEOUT=80", "DEMO_REQUESTS=20")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	// The script names its namespaces after its own PID.
	pid := 0
	if cmd.Process != nil {
		pid = cmd.Process.Pid
	}
	t.Cleanup(func() {
		ns, err := exec.Command(ip, "netns", "list").Output()
		if err != nil {
			t.Errorf("ip netns list: %v", err)
			return
		}
		for _, line := range strings.Split(string(ns), "\n") {
			if name, _, _ := strings.Cut(strings.TrimSpace(line), " "); strings.HasPrefix(name, fmt.Sprintf("ew%d-", pid)) {
				t.Errorf("namespace %s left behind", name)
				_ = exec.Command(ip, "netns", "del", name).Run()
			}
		}
	})
	if runErr != nil {
		t.Fatalf("netns-demo.sh: %v\n%s", runErr, out.String())
	}
	t.Logf("demo output:\n%s", out.String())

	type row struct{ before, after int }
	rows := map[string]row{}
	inTable := false
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "endpoint" && f[1] == "before" {
			inTable = true
			continue
		}
		if !inTable || len(f) != 3 {
			inTable = inTable && len(f) == 3
			continue
		}
		b, err1 := strconv.Atoi(f[1])
		a, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			t.Fatalf("table row %q", line)
		}
		rows[f[0]] = row{b, a}
	}
	if len(rows) == 0 {
		t.Fatalf("no before/after table in the output:\n%s", out.String())
	}
	total := func(pick func(row) int, zone string) int {
		n := 0
		for name, r := range rows {
			if strings.HasPrefix(name, "c2-"+zone) {
				n += pick(r)
			}
		}
		return n
	}
	before := func(r row) int { return r.before }
	after := func(r row) int { return r.after }
	const requests = 2 * 20 // two SNI forms
	if got := total(before, "zone1") + total(before, "zone2"); got != requests || rows["FAILED"].before != 0 {
		t.Errorf("before: %d answers from cluster 2's endpoints and %d failures, want %d and 0", got, rows["FAILED"].before, requests)
	}
	if got := total(before, "zone1"); got != requests {
		t.Errorf("before: %d of %d answers from the gateway's own zone (locality priority)", got, requests)
	}
	if rows["FAILED"].after != 0 {
		t.Errorf("after stopping zone1: %d requests failed, want 0", rows["FAILED"].after)
	}
	if got := total(after, "zone2"); got != requests || total(after, "zone1") != 0 {
		t.Errorf("after stopping zone1: %d answers from zone2 and %d from zone1, want %d and 0", got, total(after, "zone1"), requests)
	}
}
