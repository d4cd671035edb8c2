package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"
)

// scrapeSum adds up the samples of a metric family from /metrics.
func scrapeSum(t *testing.T, admin, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// 5,000 concurrent connections in the kernel path: the gateway keeps no
// goroutine per connection while they are open, and releases every pair,
// fd and goroutine when they close. The gateway is its own process so that
// each side holds 10,000 of the 20,000 files a process may open here.
func TestFiveThousandKernelPairs(t *testing.T) {
	fwd := testForwarder()
	if fwd == "splice" {
		t.Skip("kernel path only: make test runs this with EASTWEST_TEST_FORWARDER=sockmap and auto")
	}
	const n = 5000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	echo := testnet.TCPEcho(t, "127.0.0.1")
	dir := t.TempDir()
	mf := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(mf, []byte(echoMesh(int(echo.Port()))), 0o600); err != nil {
		t.Fatal(err)
	}
	settings := fmt.Sprintf(`listeners: [{name: a, address: '127.0.0.1:0', maxConnections: 6000}]
admin: {address: '127.0.0.1:0'}
mesh: {paths: [%s]}
forwarder: %s
log: {accessLog: false}
`, mf, fwd)
	sf := filepath.Join(dir, "settings.yaml")
	if err := os.WriteFile(sf, []byte(settings), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, "--config", sf)
	base := scrapeSum(t, g.admin, "go_goroutines")
	hello := testnet.ClientHello(t, testpki.NewCA(t), "outbound_.9080_._.echo.default.svc.cluster.local")
	msg := append(append([]byte(nil), hello...), 'x')

	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", g.addr, 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
				errs <- fmt.Errorf("echo through the gateway: %w", err)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("opening %d connections: %v", n, err)
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	pairs := scrapeSum(t, g.admin, "eastwest_forwarder_active_pairs")
	goroutines := scrapeSum(t, g.admin, "go_goroutines")
	t.Logf("%d connections open: %v pairs, goroutines %v (idle: %v)", n, pairs, goroutines, base)
	if pairs < n {
		t.Fatalf("%v active pairs, want %d", pairs, n)
	}
	if goroutines > base+200 {
		t.Fatalf("%v goroutines with %d connections open (idle %v): a goroutine per connection", goroutines, n, base)
	}
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		pairs = scrapeSum(t, g.admin, "eastwest_forwarder_active_pairs")
		goroutines = scrapeSum(t, g.admin, "go_goroutines")
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", g.cmd.Process.Pid))
		if pairs == 0 && goroutines <= base+20 && len(fds) < 200 {
			t.Logf("released: 0 pairs, %v goroutines, %d fds", goroutines, len(fds))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not released after close: %v pairs, %v goroutines, %d fds", pairs, goroutines, len(fds))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
