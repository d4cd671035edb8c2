// Package testnet gives tests real network peers on loopback: mutual-TLS
// backends that stand in for destination sidecars (echo or sink, counting
// connections and recording the client identities they verified), plain TCP
// echo servers, addresses that refuse connections, and real ClientHellos.
//
//	be := testnet.NewTLSBackend(t, ca.ServerConfig(t, id), testnet.Echo)
//	addr := be.AddrPort()
package testnet

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/internal/testpki"
	"github.com/eastwest-gw/eastwest/sni"
)

// Mode says what a backend does with an accepted connection.
type Mode int

const (
	// Echo copies every byte back and closes its write half at end of stream.
	Echo Mode = iota
	// Hello writes the backend's name once after the handshake, then echoes.
	Hello
)

// Backend is a mutual-TLS server on 127.0.0.1.
type Backend struct {
	Name     string
	ln       net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	peers    []string // SPIFFE URIs of verified clients
	wg       sync.WaitGroup
	conns    map[net.Conn]struct{}
}

// NewTLSBackend starts a backend on 127.0.0.1 with cfg (which should
// require client certificates) and stops it at the end of the test.
func NewTLSBackend(t testing.TB, name string, cfg *tls.Config, mode Mode) *Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testnet: listen: %v", err)
	}
	b := &Backend{Name: name, ln: ln, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.serve(tls.NewListener(ln, cfg), mode)
	t.Cleanup(b.Close)
	return b
}

// AddrPort is the backend's address.
func (b *Backend) AddrPort() netip.AddrPort {
	return b.ln.Addr().(*net.TCPAddr).AddrPort()
}

// Accepted counts TCP connections accepted so far.
func (b *Backend) Accepted() int64 { return b.accepted.Load() }

// Peers returns the client identities seen in completed handshakes.
func (b *Backend) Peers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.peers...)
}

// Close stops accepting and closes open connections.
func (b *Backend) Close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *Backend) serve(ln net.Listener, mode Mode) {
	defer b.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b.accepted.Add(1)
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer func() {
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				c.Close()
			}()
			tc := c.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				return
			}
			st := tc.ConnectionState()
			if len(st.PeerCertificates) > 0 && len(st.PeerCertificates[0].URIs) > 0 {
				b.mu.Lock()
				b.peers = append(b.peers, st.PeerCertificates[0].URIs[0].String())
				b.mu.Unlock()
			}
			if mode == Hello {
				if _, err := io.WriteString(tc, b.Name+"\n"); err != nil {
					return
				}
			}
			if _, err := io.Copy(tc, tc); err != nil && !errors.Is(err, net.ErrClosed) {
				return
			}
			_ = tc.CloseWrite()
		}()
	}
}

// RefusingAddr returns a loopback address where nothing listens, so a
// connect is refused at once.
func RefusingAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testnet: listen: %v", err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return ap
}

// TCPEcho starts a plain TCP echo server on ip (a loopback address such as
// 127.0.0.2): it copies every byte back and half-closes at end of stream.
// Past the ClientHello the gateway moves opaque bytes, so a plain echo lets
// a test check what went through byte for byte without TLS costs.
func TCPEcho(t testing.TB, ip string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("testnet: listen: %v", err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				// A buffer, not io.Copy(c, c): that splices through a pipe,
				// two more fds per connection, and tests holding thousands
				// of connections would run out of files.
				buf := make([]byte, 16<<10)
				_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// ClientHello returns the first flight of a real crypto/tls client with a
// client certificate from ca, the given SNI and ALPN (Istio's when none),
// exactly as it would arrive at the gateway.
func ClientHello(t testing.TB, ca *testpki.CA, serverName string, alpn ...string) []byte {
	t.Helper()
	if len(alpn) == 0 {
		alpn = []string{"istio-peer-exchange", "istio"}
	}
	a, b := net.Pipe()
	cfg := ca.ClientConfig(t, "spiffe://cluster1.local/ns/default/sa/client", serverName, "spiffe://unused")
	cfg.NextProtos = alpn
	go func() { _ = tls.Client(a, cfg).Handshake(); a.Close() }()
	raw, _, err := sni.Read(b, make([]byte, 64<<10))
	b.Close()
	if err != nil {
		t.Fatalf("testnet: capturing a ClientHello: %v", err)
	}
	return append([]byte(nil), raw...)
}

// EchoThrough connects to addr (a gateway in front of a TCPEcho), sends msg,
// half-closes, and checks that exactly msg comes back (length and SHA-256).
func EchoThrough(addr string, msg []byte) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		_, _ = c.Write(msg)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return err
	}
	if want := sha256.Sum256(msg); n != int64(len(msg)) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("echo: %d of %d bytes or content differs", n, len(msg))
	}
	return nil
}
