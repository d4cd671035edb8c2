// Command sidecar stands in for Istio sidecars in the netns demo
// (deploy/demo/netns-demo.sh): it makes the mesh's certificates, serves
// as a destination workload that requires mutual TLS and answers with its
// name, and sends requests the way a source sidecar does (Istio SNI and
// ALPN, a SPIFFE client certificate) through an east-west gateway,
// counting which endpoint answered.
//
//	sidecar pki DIR
//	sidecar serve -name NAME -locality L -addr IP:PORT -pki DIR
//	sidecar client -gateway IP:PORT -sni NAME -n 20 -pki DIR -out counts.json
//	sidecar wait -url http://127.0.0.1:15021/ready -timeout 10s
//	sidecar table before.json after.json
//
// It is a demo tool: it never runs in production and is not imported.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/eastwest-gw/eastwest/internal/testpki"
)

// Identities of the demo: the client is productpage in cluster 1, the
// servers are reviews in cluster 2 (Istio's default trust domain).
const (
	clientID = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
	serverID = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sidecar pki|serve|client|wait|table ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "pki":
		err = cmdPKI(os.Args[2:])
	case "serve":
		err = cmdServe(os.Args[2:])
	case "client":
		err = cmdClient(os.Args[2:])
	case "wait":
		err = cmdWait(os.Args[2:])
	case "table":
		err = cmdTable(os.Args[2:], os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sidecar:", err)
		os.Exit(1)
	}
}

// cmdPKI writes ca.pem, client.pem/client-key.pem and server.pem/server-key.pem.
func cmdPKI(args []string) error {
	if len(args) != 1 {
		return errors.New("pki DIR")
	}
	ca, err := testpki.New()
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := os.MkdirAll(args[0], 0o700); err != nil {
		return err
	}
	if err := ca.WritePEM(args[0], "client", clientID); err != nil {
		return fmt.Errorf("client cert: %w", err)
	}
	if err := ca.WritePEM(args[0], "server", serverID); err != nil {
		return fmt.Errorf("server cert: %w", err)
	}
	return nil
}

func loadPKI(dir, name string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
	if err != nil {
		return cert, nil, fmt.Errorf("load %s: %w", name, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return cert, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return cert, nil, errors.New("ca.pem: no certificate")
	}
	return cert, pool, nil
}

// cmdServe is a destination sidecar: mTLS required, answers one HTTP/1.0
// request per connection with its name.
func cmdServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	name := fs.String("name", "", "endpoint name")
	locality := fs.String("locality", "", "endpoint locality")
	addr := fs.String("addr", "", "listen address")
	dir := fs.String("pki", "", "pki folder")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cert, pool, err := loadPKI(*dir, "server")
	if err != nil {
		return err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: pool, NextProtos: []string{"istio-peer-exchange", "istio"}, MinVersion: tls.VersionTLS12}
	ln, err := tls.Listen("tcp", *addr, cfg)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Fprintf(os.Stderr, "sidecar: %s (%s) serving on %s\n", *name, *locality, *addr)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go answer(c, *name, *locality)
	}
}

func answer(c net.Conn, name, locality string) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" || line == "\n" {
			break
		}
	}
	body := fmt.Sprintf("hello from %s (%s)\n", name, locality)
	fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// counts is what one client run saw: answers per endpoint, and failures.
type counts struct {
	SNI       string         `json:"sni"`
	Endpoints map[string]int `json:"endpoints"`
	Failed    int            `json:"failed"`
	Errors    []string       `json:"errors,omitempty"`
}

// cmdClient sends n requests, one connection each, like a source sidecar
// sending to a remote cluster through its east-west gateway.
func cmdClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	gw := fs.String("gateway", "", "gateway address")
	sni := fs.String("sni", "", "TLS server name (Istio SNI)")
	n := fs.Int("n", 20, "requests")
	dir := fs.String("pki", "", "pki folder")
	out := fs.String("out", "", "write counts as JSON here (appending to what is there)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cert, pool, err := loadPKI(*dir, "client")
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert}, ServerName: *sni, NextProtos: []string{"istio-peer-exchange", "istio"},
		MinVersion: tls.VersionTLS12,
		// Istio checks the server's SPIFFE identity, not a DNS name.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifySPIFFE(raw, pool, serverID)
		},
	}
	res := counts{SNI: *sni, Endpoints: map[string]int{}}
	run := map[string]int{}
	failed := 0
	if *out != "" {
		if b, err := os.ReadFile(*out); err == nil {
			_ = json.Unmarshal(b, &res)
			if res.Endpoints == nil {
				res.Endpoints = map[string]int{}
			}
			res.SNI += "," + *sni
		}
	}
	for i := 0; i < *n; i++ {
		name, err := request(*gw, cfg)
		if err != nil {
			res.Failed++
			failed++
			res.Errors = append(res.Errors, err.Error())
			fmt.Printf("  %-52s FAILED: %v\n", *sni, err)
			continue
		}
		res.Endpoints[name]++
		run[name]++
	}
	fmt.Printf("  %-52s %d requests, %d failed, %v\n", *sni, *n, failed, run)
	if *out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		return os.WriteFile(*out, b, 0o600)
	}
	return nil
}

func request(gw string, cfg *tls.Config) (string, error) {
	d := &net.Dialer{Timeout: 3 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", gw, cfg)
	if err != nil {
		return "", fmt.Errorf("handshake: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(c, 4096))
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	_, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok || !strings.HasPrefix(body, "hello from ") {
		return "", fmt.Errorf("unexpected answer %q", b)
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(body, "hello from "), " ")
	return name, nil
}

func verifySPIFFE(raw [][]byte, roots *x509.CertPool, want string) error {
	if len(raw) == 0 {
		return errors.New("no peer certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return err
	}
	for _, u := range leaf.URIs {
		if u.String() == want {
			return nil
		}
	}
	return fmt.Errorf("peer identity is not %s", want)
}

// cmdWait polls an HTTP URL until it answers 200.
func cmdWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	url := fs.String("url", "", "URL")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cl := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(*timeout)
	for {
		resp, err := cl.Get(*url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", *url, *timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cmdTable prints endpoint -> count before and after, and the failures.
func cmdTable(args []string, w io.Writer) error {
	if len(args) != 2 {
		return errors.New("table BEFORE.json AFTER.json")
	}
	var phases [2]counts
	names := map[string]bool{}
	for i, f := range args {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &phases[i]); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		for n := range phases[i].Endpoints {
			names[n] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	fmt.Fprintf(w, "%-28s %7s %7s\n", "endpoint", "before", "after")
	for _, n := range sorted {
		fmt.Fprintf(w, "%-28s %7d %7d\n", n, phases[0].Endpoints[n], phases[1].Endpoints[n])
	}
	fmt.Fprintf(w, "%-28s %7d %7d\n", "FAILED", phases[0].Failed, phases[1].Failed)
	return nil
}
