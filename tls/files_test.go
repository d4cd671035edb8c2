package tls_test

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/internal/testpki"
	ewtls "github.com/eastwest-gw/eastwest/tls"
)

const serverID = "spiffe://cluster.local/ns/default/sa/reviews"

// serve runs one TLS server on loopback that requires a client certificate
// from ca and reports which client identity it saw.
func serve(t *testing.T, ca *testpki.CA) (string, <-chan string) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerConfig(t, serverID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	seen := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				seen <- tc.ConnectionState().PeerCertificates[0].URIs[0].String()
			} else {
				seen <- ""
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), seen
}

func TestClientConfigVerifiesAndRotates(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	if err := ca.WritePEM(dir, "gw", "spiffe://cluster.local/ns/istio-system/sa/eastwest"); err != nil {
		t.Fatal(err)
	}
	files := ewtls.Files{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "gw.pem"), KeyFile: filepath.Join(dir, "gw-key.pem"), SPIFFEIDs: []string{serverID}}
	cfg, err := files.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	addr, seen := serve(t, ca)
	dial := func(cfg *tls.Config) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return err
		}
		return c.Close()
	}
	if err := dial(cfg); err != nil {
		t.Fatalf("handshake with the right CA and identity: %v", err)
	}
	if got := <-seen; got != "spiffe://cluster.local/ns/istio-system/sa/eastwest" {
		t.Fatalf("server saw %q", got)
	}

	// A rotated certificate is used for the next handshake, no restart.
	time.Sleep(1100 * time.Millisecond) // mtime granularity and the once-a-second check
	if err := ca.WritePEM(dir, "gw", "spiffe://cluster.local/ns/istio-system/sa/rotated"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(time.Second)
	for _, f := range []string{files.CertFile, files.KeyFile} {
		_ = os.Chtimes(f, now, now)
	}
	if err := dial(cfg); err != nil {
		t.Fatalf("handshake after rotation: %v", err)
	}
	if got := <-seen; got != "spiffe://cluster.local/ns/istio-system/sa/rotated" {
		t.Fatalf("after rotation the server saw %q", got)
	}

	// A server outside the allowed identities, or from another CA, is refused.
	wrongID := files
	wrongID.SPIFFEIDs = []string{"spiffe://cluster.local/ns/default/sa/other"}
	cfg2, err := wrongID.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(cfg2); err == nil {
		t.Fatal("accepted a server with the wrong identity")
	}
	<-seen
	other := testpki.NewCA(t)
	odir := t.TempDir()
	if err := other.WritePEM(odir, "gw", "spiffe://x/y"); err != nil {
		t.Fatal(err)
	}
	cfg3, err := ewtls.Files{CAFile: filepath.Join(odir, "ca.pem"), SPIFFEIDs: []string{serverID}}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(cfg3); err == nil {
		t.Fatal("accepted a server from another CA")
	}
}

func TestValidateNamesWhatIsWrong(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    ewtls.Files
		want string
	}{
		{"no CA", ewtls.Files{}, "caFile is required"},
		{"half a pair", ewtls.Files{CAFile: "x", CertFile: "c"}, "go together"},
		{"missing file", ewtls.Files{CAFile: "/nonexistent/ca.pem"}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}
