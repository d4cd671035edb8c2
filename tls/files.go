package tls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
)

// Files names PEM files. CAFile is required for a client config; CertFile
// and KeyFile are both set or both empty (no client certificate).
type Files struct {
	CAFile   string `mapstructure:"caFile" json:"caFile,omitempty"`
	CertFile string `mapstructure:"certFile" json:"certFile,omitempty"`
	KeyFile  string `mapstructure:"keyFile" json:"keyFile,omitempty"`
	// SPIFFEIDs, when set, are the only peer identities accepted (URI SANs
	// such as spiffe://cluster.local/ns/default/sa/reviews); the peer's
	// DNS name is not checked then, as Istio does for mesh peers.
	SPIFFEIDs []string `mapstructure:"spiffeIds" json:"spiffeIds,omitempty"`
}

// Validate reports what is missing or unreadable.
func (f Files) Validate() error {
	var errs []error
	if f.CAFile == "" {
		errs = append(errs, errors.New("caFile is required"))
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		errs = append(errs, errors.New("certFile and keyFile go together"))
	}
	if len(errs) == 0 {
		if _, err := f.load(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type material struct {
	roots *x509.CertPool
	cert  *tls.Certificate
}

func (f Files) load() (*material, error) {
	pem, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("caFile: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("caFile %s: no PEM certificate", f.CAFile)
	}
	m := &material{roots: roots}
	if f.CertFile != "" {
		c, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("certFile/keyFile: %w", err)
		}
		m.cert = &c
	}
	return m, nil
}

// reloader keeps the last good material and re-reads the files when one of
// their modification times changed, at most once per second.
type reloader struct {
	f       Files
	mu      sync.Mutex
	cur     *material
	stamp   []time.Time
	checked time.Time
}

func (r *reloader) get() (*material, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.cur != nil && now.Sub(r.checked) < time.Second {
		return r.cur, nil
	}
	r.checked = now
	stamp := r.stamps()
	if r.cur != nil && slices.Equal(stamp, r.stamp) {
		return r.cur, nil
	}
	m, err := r.f.load()
	if err != nil {
		if r.cur != nil {
			return r.cur, nil // a half-written rotation: keep the last good files
		}
		return nil, err
	}
	r.cur, r.stamp = m, stamp
	return m, nil
}

func (r *reloader) stamps() []time.Time {
	var out []time.Time
	for _, p := range []string{r.f.CAFile, r.f.CertFile, r.f.KeyFile} {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			out = append(out, time.Time{})
			continue
		}
		out = append(out, fi.ModTime())
	}
	return out
}

// ClientConfig returns a client config that verifies servers against the
// CA file, presents the certificate files when set, and follows rotations
// of all three.
func (f Files) ClientConfig() (*tls.Config, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	r := &reloader{f: f}
	if _, err := r.get(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is done below against the current roots, so that a
		// rotated CA applies to the next handshake.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			m, err := r.get()
			if err != nil {
				return err
			}
			return verify(cs, m.roots, cs.ServerName, f.SPIFFEIDs)
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			m, err := r.get()
			if err != nil || m.cert == nil {
				return &tls.Certificate{}, err
			}
			return m.cert, nil
		},
	}, nil
}

// verify checks the peer chain against roots, then either the SPIFFE
// identities (when given) or the DNS name.
func verify(cs tls.ConnectionState, roots *x509.CertPool, name string, ids []string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("peer sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if len(ids) == 0 {
		opts.DNSName = name
	}
	if _, err := leaf.Verify(opts); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	for _, u := range leaf.URIs {
		if slices.Contains(ids, u.String()) {
			return nil
		}
	}
	return fmt.Errorf("peer identity is none of %v", ids)
}
