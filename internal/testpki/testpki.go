// Package testpki makes real X.509 material for tests and the demo: a mesh
// CA and SPIFFE workload certificates, as Istio's CA issues them, so that
// crypto/tls clients and servers do real mutual TLS through the gateway.
//
//	ca := testpki.NewCA(t)
//	srv := ca.ServerConfig("spiffe://cluster.local/ns/default/sa/reviews")
//	cli := ca.ClientConfig("spiffe://cluster.local/ns/default/sa/productpage", "outbound_.9080_._.reviews.default.svc.cluster.local")
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CA is a self-signed mesh root that issues workload certificates.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
	Pool *x509.CertPool
}

// New makes a CA. It returns an error only if the system random source fails.
func New() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"eastwest test mesh"}, CommonName: "root-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, key: key, Pool: pool}, nil
}

// TB is the part of testing.TB the helpers need.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// NewCA makes a CA or fails the test.
func NewCA(t TB) *CA {
	t.Helper()
	ca, err := New()
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return ca
}

// Issue returns a leaf certificate for a SPIFFE identity, usable as both TLS
// server and client (Istio workload certificates are).
func (ca *CA) Issue(spiffeID string, dnsNames ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	u, err := url.Parse(spiffeID)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("spiffe id: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"eastwest test mesh"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
		DNSNames:     dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ServerConfig is a sidecar's inbound config: it presents spiffeID and
// requires and verifies a client certificate from the same CA.
func (ca *CA) ServerConfig(t TB, spiffeID string) *tls.Config {
	t.Helper()
	cert, err := ca.Issue(spiffeID)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool,
		NextProtos:   []string{"istio-peer-exchange", "istio"},
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientConfig is a sidecar's outbound config for an Istio SNI: it presents
// spiffeID, sends Istio's ALPN, and verifies the server's SPIFFE identity
// against wantServerID (Istio checks URI SANs, not the SNI).
func (ca *CA) ClientConfig(t TB, spiffeID, sni, wantServerID string) *tls.Config {
	t.Helper()
	cert, err := ca.Issue(spiffeID)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return &tls.Config{
		Certificates:       []tls.Certificate{cert},
		ServerName:         sni,
		NextProtos:         []string{"istio-peer-exchange", "istio"},
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate: SPIFFE, not DNS, names the server
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return ca.VerifySPIFFE(raw, wantServerID)
		},
		MinVersion: tls.VersionTLS12,
	}
}

// VerifySPIFFE checks a peer chain against the CA and its URI SAN.
func (ca *CA) VerifySPIFFE(raw [][]byte, want string) error {
	if len(raw) == 0 {
		return fmt.Errorf("no peer certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return err
	}
	for _, u := range leaf.URIs {
		if u.String() == want {
			return nil
		}
	}
	return fmt.Errorf("peer identity is not %s", want)
}

// WritePEM writes the CA certificate and a leaf for spiffeID into dir as
// ca.pem, NAME.pem and NAME-key.pem, for tools such as openssl s_client.
func (ca *CA) WritePEM(dir, name, spiffeID string) error {
	cert, err := ca.Issue(spiffeID)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.pem":          pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
		name + ".pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		name + "-key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
