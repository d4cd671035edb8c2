package bench

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/eastwest-gw/eastwest/internal/testpki"
)

// SPIFFE identities of the sink and the load tool in TLS mode.
const (
	SinkSPIFFE = "spiffe://cluster.local/ns/default/sa/sink"
	LoadSPIFFE = "spiffe://cluster.local/ns/default/sa/ewload"
)

// EnsurePKI writes a mesh CA and certificates for the sink and the load
// tool into dir (ca.pem, sink.pem, sink-key.pem, ewload.pem,
// ewload-key.pem) unless ca.pem is already there.
func EnsurePKI(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki dir: %w", err)
	}
	ca, err := testpki.New()
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := ca.WritePEM(dir, "sink", SinkSPIFFE); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := ca.WritePEM(dir, "ewload", LoadSPIFFE); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

func loadPKI(dir, name string) (tls.Certificate, *testpki.CA, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("pki %s: %w", dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("pki: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, errors.New("pki: ca.pem holds no certificate")
	}
	return cert, &testpki.CA{Pool: pool}, nil
}

// ServerTLS is the sink's TLS 1.3 config: an Istio sidecar's inbound side
// (presents the sink's SPIFFE certificate, requires a client certificate).
func ServerTLS(dir string) (*tls.Config, error) {
	cert, ca, err := loadPKI(dir, "sink")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool,
		NextProtos:   IstioALPN,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// ClientTLS is a sidecar's outbound config for sni: Istio ALPN, the load
// tool's certificate, the server checked by SPIFFE identity, no session
// resumption (every handshake is a full one).
func ClientTLS(dir, sni string) (*tls.Config, error) {
	cert, ca, err := loadPKI(dir, "ewload")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates:       []tls.Certificate{cert},
		ServerName:         sni,
		NextProtos:         IstioALPN,
		InsecureSkipVerify: true, // VerifyPeerCertificate checks the SPIFFE identity instead of a DNS name
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return ca.VerifySPIFFE(raw, SinkSPIFFE)
		},
		MinVersion: tls.VersionTLS13,
	}, nil
}
