package main

import (
	"bufio"
	"context"
	"crypto/tls"
	_ "embed"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/eastwest-gw/eastwest/internal/testpki"
)

//go:embed demo-mesh.yaml
var demoMesh []byte

// demoEndpoint is one local TLS server standing in for a sidecar.
type demoEndpoint struct {
	name, locality, addr, spiffe string
}

var demoEndpoints = []demoEndpoint{
	{"reviews-v1-a", "region1/zone1/subzone1", "127.0.0.1:19081", "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"},
	{"reviews-v1-b", "region1/zone2", "127.0.0.1:19082", "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"},
	{"reviews-v2-a", "region2/zone1", "127.0.0.1:19083", "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"},
	{"ratings-v1", "region1/zone1/subzone1", "127.0.0.1:19091", "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"},
}

// runDemo starts demo endpoints that require mTLS, writes the demo mesh and
// a client certificate to a temporary folder, and runs the gateway on
// loopback with them until interrupted.
func runDemo(ctx context.Context, s *Settings, stdout, stderr io.Writer) error {
	dir, err := os.MkdirTemp("", "eastwest-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := testpki.New()
	if err != nil {
		return err
	}
	if err := ca.WritePEM(dir, "client", "spiffe://cluster1.local/ns/default/sa/productpage"); err != nil {
		return err
	}
	meshFile := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(meshFile, demoMesh, 0o600); err != nil {
		return err
	}
	for _, ep := range demoEndpoints {
		cert, err := ca.Issue(ep.spiffe)
		if err != nil {
			return err
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs: ca.Pool, NextProtos: []string{"istio-peer-exchange", "istio", "http/1.1"}}
		ln, err := tls.Listen("tcp", ep.addr, cfg)
		if err != nil {
			return fmt.Errorf("demo endpoint %s: %w", ep.name, err)
		}
		defer ln.Close()
		go serveDemo(ln, ep)
	}
	s.Mesh.Paths = []string{meshFile}
	for i := range s.Listeners {
		if host, port, err := net.SplitHostPort(s.Listeners[i].Address); err == nil && (host == "0.0.0.0" || host == "" || host == "::") {
			s.Listeners[i].Address = net.JoinHostPort("127.0.0.1", port) // the demo stays on loopback
		}
	}
	s.Drain.AcceptGrace = 0
	g, err := start(ctx, s, stdout, stderr)
	if err != nil {
		return err
	}
	gw := g.servers[0].Addr()
	fmt.Fprintf(stderr, `
eastwest demo is running: gateway %s, admin http://%s
Demo endpoints (mTLS required): reviews v1 in region1/zone1/subzone1 and region1/zone2, reviews v2 in region2/zone1, ratings.
Send an Istio-style mTLS request through the gateway (paste in another terminal):

  printf 'GET / HTTP/1.0\r\n\r\n' | openssl s_client -quiet -connect %s -servername outbound_.9080_.v1_.reviews.default.svc.cluster.local -alpn istio -cert %s/client.pem -key %s/client-key.pem -CAfile %s/ca.pem 2>/dev/null

Try also -servername reviews.default.svc.cluster2.global or outbound_.9080_.v2_.reviews.default.svc.cluster.local,
and curl -s http://%s/metrics | grep istio_tcp. Ctrl-C stops (with a drain).
`, gw, g.adminLn.Addr(), gw, dir, dir, dir, g.adminLn.Addr())
	<-ctx.Done()
	return g.drain()
}

// serveDemo answers every connection with a short HTTP response naming the
// endpoint, after reading the request head.
func serveDemo(ln net.Listener, ep demoEndpoint) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil || line == "\r\n" || line == "\n" {
					break
				}
			}
			peer := "unknown"
			if tc, ok := c.(*tls.Conn); ok && len(tc.ConnectionState().PeerCertificates) > 0 {
				if u := tc.ConnectionState().PeerCertificates[0].URIs; len(u) > 0 {
					peer = u[0].String()
				}
			}
			body := fmt.Sprintf("hello from %s (%s) at %s; your identity: %s\n", ep.name, ep.locality, ep.addr, peer)
			fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s", len(body), body)
		}()
	}
}
