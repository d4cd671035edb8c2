package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/internal/testnet"
	"github.com/eastwest-gw/eastwest/internal/testpki"
)

func echoMesh(ports ...int) string {
	s := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: tcp, protocol: TCP}]
  endpoints:
`
	for _, p := range ports {
		s += fmt.Sprintf("  - {address: 127.0.0.1, ports: {tcp: %d}, serviceAccount: echo}\n", p)
	}
	return s
}

// Reload under load: 500 new connections per second for 20 s while the mesh
// is replaced every 100 ms. Every client connection succeeds and every byte
// comes back.
func TestReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s load test")
	}
	const (
		rate     = 500
		duration = 20 * time.Second
		payload  = 4096
	)
	p1, p2, p3 := int(testnet.TCPEcho(t, "127.0.0.1").Port()), int(testnet.TCPEcho(t, "127.0.0.1").Port()), int(testnet.TCPEcho(t, "127.0.0.1").Port())
	dir := t.TempDir()
	mf := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(mf, []byte(echoMesh(p1, p2)), 0o600); err != nil {
		t.Fatal(err)
	}
	sf := filepath.Join(dir, "settings.yaml")
	settings := fmt.Sprintf(settingsYAML, mf, testForwarder()) + "log: {accessLog: false, level: debug}\n"
	if err := os.WriteFile(sf, []byte(settings), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, "--config", sf)

	hello := testnet.ClientHello(t, testpki.NewCA(t), "outbound_.9080_._.echo.default.svc.cluster.local")
	body := bytes.Repeat([]byte("0123456789abcdef"), payload/16)
	msg := append(append([]byte(nil), hello...), body...)

	stop := make(chan struct{})
	var reloads atomic.Int64
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() { // the mesh flips between two endpoint sets every 100 ms
		defer rwg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			m := echoMesh(p1, p2)
			if i%2 == 0 {
				m = echoMesh(p2, p3)
			}
			// Write and rename, as a ConfigMap update or an editor does: a
			// reader never sees a half-written file.
			if err := os.WriteFile(mf+".tmp", []byte(m), 0o600); err != nil {
				continue
			}
			if err := os.Rename(mf+".tmp", mf); err == nil && g.cmd.Process.Signal(syscall.SIGHUP) == nil {
				reloads.Add(1)
			}
		}
	}()

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, 256) // bounded concurrency
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / rate)
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := testnet.EchoThrough(g.addr, msg); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			ok.Add(1)
		}()
	}
	tick.Stop()
	wg.Wait()
	close(stop)
	rwg.Wait()
	t.Logf("%d connections ok, %d failed, %d reloads", ok.Load(), failed.Load(), reloads.Load())
	if failed.Load() != 0 {
		var why []string
		for _, l := range strings.Split(g.logs(), "\n") {
			if strings.Contains(l, "err") || strings.Contains(l, "refused") || strings.Contains(l, "WARN") || strings.Contains(l, "reloaded") {
				why = append(why, l)
			}
		}
		t.Fatalf("%d of %d connections failed during reloads; first: %v\ngateway:\n%s", failed.Load(), ok.Load()+failed.Load(), firstErr.Load(), strings.Join(why, "\n"))
	}
	if ok.Load() < rate*int64(duration/time.Second)*8/10 {
		t.Fatalf("only %d connections ran; the load did not happen", ok.Load())
	}
	if reloads.Load() < 100 {
		t.Fatalf("only %d reloads", reloads.Load())
	}
}

// Editing a mesh file is enough: the watcher reloads it, no signal needed.
func TestMeshFileChangeReloads(t *testing.T) {
	ca := testpki.NewCA(t)
	b1 := testnet.NewTLSBackend(t, "reviews-v1", ca.ServerConfig(t, serverID), testnet.Hello)
	b2 := testnet.NewTLSBackend(t, "reviews-v2", ca.ServerConfig(t, serverID), testnet.Hello)
	dir := t.TempDir()
	mf := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(mf, []byte(meshYAML(b1, b2)), 0o600); err != nil {
		t.Fatal(err)
	}
	sf := filepath.Join(dir, "settings.yaml")
	if err := os.WriteFile(sf, []byte(fmt.Sprintf(settingsYAML, mf, testForwarder())), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, "--config", sf)
	// Swap the two endpoints' versions: subset v1 now means b2.
	if err := os.WriteFile(mf, []byte(meshYAML(b2, b1)), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(g.logs(), `msg="mesh reloaded" trigger="file change"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload after the file changed:\n%s", g.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	raw, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, ca.ClientConfig(t, clientID, "outbound_.9080_.v1_.reviews.default.svc.cluster.local", serverID))
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "reviews-v2" {
		t.Fatalf("after the file change, v1 reached %q (%v), want reviews-v2\n%s", line, err, g.logs())
	}
}
