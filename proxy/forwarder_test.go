package proxy_test

import (
	"errors"
	"os"
	"testing"

	ewebpf "github.com/eastwest-gw/eastwest/ebpf"
	"github.com/eastwest-gw/eastwest/proxy"
)

// testForwarder returns the forwarder the suite runs with:
// EASTWEST_TEST_FORWARDER=splice (default), sockmap or auto. make test runs
// the suite once per forwarder. Without the kernel path a sockmap or auto
// run skips, and fails under EASTWEST_REQUIRE_EBPF=1 (CI).
func testForwarder(t *testing.T) proxy.Forwarder {
	t.Helper()
	name := os.Getenv("EASTWEST_TEST_FORWARDER")
	if name == "" || name == "splice" {
		return proxy.SpliceForwarder{}
	}
	mode, err := ewebpf.ParseMode(name)
	if err != nil {
		t.Fatalf("EASTWEST_TEST_FORWARDER: %v", err)
	}
	f, err := ewebpf.New(ewebpf.Options{Mode: mode})
	if errors.Is(err, ewebpf.ErrNotSupported) {
		if f != nil {
			_ = f.Close()
		}
		if os.Getenv("EASTWEST_REQUIRE_EBPF") == "1" {
			t.Fatalf("forwarder %s: %v (EASTWEST_REQUIRE_EBPF=1)", name, err)
		}
		t.Skipf("forwarder %s unavailable here: %v", name, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}
