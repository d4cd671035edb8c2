package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/internal/testpki"
	"golang.org/x/crypto/cryptobyte"
)

const (
	istioSNI      = "outbound_.9080_.v2_.reviews.default.svc.cluster.local"
	clientID      = "spiffe://cluster.local/ns/default/sa/productpage"
	serverID      = "spiffe://cluster.local/ns/default/sa/reviews"
	testTimeout   = 10 * time.Second
	corpusEnv     = "EASTWEST_WRITE_CORPUS"
	fuzzCorpusDir = "testdata/fuzz"
)

// seenHello is what a crypto/tls server reports to GetConfigForClient.
type seenHello struct {
	reached    bool
	serverName string
	protos     []string
}

var errStopHandshake = errors.New("test: stop after ClientHello")

// memConn is a net.Conn that reads from a fixed byte slice and discards
// writes. The oracle uses it rather than net.Pipe so that a server that
// stops reading early, or writes an alert, cannot deadlock against the
// writer, and so that each fuzz input costs no goroutines. crypto/tls only
// uses the net.Conn methods; reaching the end of data looks like a closed
// connection.
type memConn struct{ r bytes.Reader }

func (c *memConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15443} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// tlsServerSees feeds data to a real crypto/tls server and reports whether
// it got as far as GetConfigForClient, and what it saw there.
func tlsServerSees(data []byte) seenHello {
	var seen seenHello
	conn := &memConn{}
	conn.r.Reset(data)
	srv := tls.Server(conn, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			seen = seenHello{reached: true, serverName: chi.ServerName, protos: slices.Clone(chi.SupportedProtos)}
			return nil, errStopHandshake
		},
	})
	_ = srv.Handshake() // the error is expected: we stop it, or the input is bad
	return seen
}

// alpnList splits a raw ProtocolNameList.
func alpnList(raw []byte) []string {
	var out []string
	for len(raw) > 0 {
		n := int(raw[0])
		out = append(out, string(raw[1:1+n]))
		raw = raw[1+n:]
	}
	return out
}

// sameAsTLS fails tb unless h is what crypto/tls saw.
func sameAsTLS(tb testing.TB, h ClientHello, seen seenHello) {
	tb.Helper()
	if !seen.reached {
		tb.Fatalf("Parse accepted a hello that crypto/tls rejected (SNI %q)", h.ServerName)
	}
	if string(h.ServerName) != seen.serverName {
		tb.Fatalf("ServerName = %q, crypto/tls saw %q", h.ServerName, seen.serverName)
	}
	if got := alpnList(h.ALPN); !slices.Equal(got, seen.protos) {
		tb.Fatalf("ALPN = %q, crypto/tls saw %q", got, seen.protos)
	}
}

// recConn records what the server side reads.
type recConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.buf.Write(p[:n])
	return n, err
}

// captureHello runs a real crypto/tls client with cfg against a crypto/tls
// server over net.Pipe and returns the bytes the server had read when its
// GetConfigForClient ran, which is the whole ClientHello (the client sends
// nothing else before the server answers), and what the server saw. The
// capture does not use this package, so it is an independent oracle.
func captureHello(tb testing.TB, cfg *tls.Config) ([]byte, seenHello) {
	tb.Helper()
	c1, c2 := net.Pipe()
	tb.Cleanup(func() { c1.Close(); c2.Close() })
	deadline := time.Now().Add(testTimeout)
	_ = c1.SetDeadline(deadline)
	_ = c2.SetDeadline(deadline)

	done := make(chan error, 1)
	go func() {
		done <- tls.Client(c1, cfg).Handshake()
	}()
	var raw []byte
	var seen seenHello
	rc := &recConn{Conn: c2}
	srv := tls.Server(rc, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			raw = bytes.Clone(rc.buf.Bytes())
			seen = seenHello{reached: true, serverName: chi.ServerName, protos: slices.Clone(chi.SupportedProtos)}
			return nil, errStopHandshake
		},
	})
	err := srv.Handshake()
	c2.Close()
	cerr := <-done
	if !errors.Is(err, errStopHandshake) {
		tb.Fatalf("capture: server handshake: %v (client: %v)", err, cerr)
	}
	return raw, seen
}

// resumingClient returns cfg after one full mutual-TLS handshake with a
// testpki server, so that its session cache holds a ticket and its next
// ClientHello offers resumption (pre_shared_key in TLS 1.3, session_ticket
// in TLS 1.2).
func resumingClient(tb testing.TB, ca *testpki.CA, cfg *tls.Config) *tls.Config {
	tb.Helper()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	c1, c2 := net.Pipe()
	tb.Cleanup(func() { c1.Close(); c2.Close() })
	deadline := time.Now().Add(testTimeout)
	_ = c1.SetDeadline(deadline)
	_ = c2.SetDeadline(deadline)

	srvCfg := ca.ServerConfig(tb, serverID)
	srvCfg.MaxVersion = cfg.MaxVersion
	done := make(chan error, 1)
	go func() {
		s := tls.Server(c2, srvCfg)
		if err := s.Handshake(); err != nil {
			done <- err
			return
		}
		_, err := s.Write([]byte{1}) // lets the client read the TLS 1.3 ticket
		done <- err
	}()
	c := tls.Client(c1, cfg)
	if err := c.Handshake(); err != nil {
		tb.Fatalf("full handshake: %v", err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		tb.Fatalf("read after handshake: %v", err)
	}
	if err := <-done; err != nil {
		tb.Fatalf("server: %v", err)
	}
	return cfg
}

// realHello is a ClientHello captured from crypto/tls.
type realHello struct {
	name string
	raw  []byte
	seen seenHello
}

// realHellos captures ClientHellos from crypto/tls clients in the
// configurations the gateway meets.
func realHellos(tb testing.TB) []realHello {
	tb.Helper()
	ca := testpki.NewCA(tb)
	istio := func() *tls.Config { return ca.ClientConfig(tb, clientID, istioSNI, serverID) }
	cases := []struct {
		name string
		cfg  func() *tls.Config
	}{
		{"istio-tls13", istio},
		{"istio-tls12", func() *tls.Config {
			c := istio()
			c.MaxVersion = tls.VersionTLS12
			return c
		}},
		{"mlkem", func() *tls.Config {
			c := istio()
			c.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}
			return c
		}},
		{"no-sni", func() *tls.Config {
			return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}}
		}},
		{"ip-server-name", func() *tls.Config {
			// crypto/tls sends no SNI for IP literals (RFC 6066).
			return &tls.Config{ServerName: "10.1.2.3", InsecureSkipVerify: true}
		}},
		{"plain-host-h2", func() *tls.Config {
			return &tls.Config{ServerName: "reviews.default.svc.cluster.local", InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}}
		}},
		{"uppercase-sni", func() *tls.Config {
			c := istio()
			c.ServerName = "OUTBOUND_.9080_._.Reviews.Default.SVC.Cluster.Local"
			return c
		}},
		{"all-istio-alpn", func() *tls.Config {
			c := istio()
			c.NextProtos = []string{"istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2", "h2"}
			return c
		}},
		{"legacy-global", func() *tls.Config {
			return ca.ClientConfig(tb, clientID, "outbound_.9080_.v1_.reviews.default.svc.cluster2.global", serverID)
		}},
		{"long-sni", func() *tls.Config {
			name := "outbound_.8080_._." + string(bytes.Repeat([]byte("a"), 63)) + "." + string(bytes.Repeat([]byte("b"), 63)) + ".svc.cluster.local"
			return ca.ClientConfig(tb, clientID, name, serverID)
		}},
		{"resume-tls13", func() *tls.Config { return resumingClient(tb, ca, istio()) }},
		{"resume-tls12", func() *tls.Config {
			c := istio()
			c.MaxVersion = tls.VersionTLS12
			return resumingClient(tb, ca, c)
		}},
	}
	out := make([]realHello, 0, len(cases))
	for _, c := range cases {
		raw, seen := captureHello(tb, c.cfg())
		out = append(out, realHello{name: c.name, raw: raw, seen: seen})
	}
	return out
}

// helloBody returns the handshake message carried by well-formed records.
func helloBody(tb testing.TB, records []byte) []byte {
	tb.Helper()
	var msg []byte
	for len(records) > 0 {
		if len(records) < recordHeaderLen {
			tb.Fatalf("short record header")
		}
		n := recordLen(records)
		msg = append(msg, records[recordHeaderLen:recordHeaderLen+n]...)
		records = records[recordHeaderLen+n:]
	}
	return msg
}

// frame wraps a handshake message in records of at most size bytes.
func frame(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// ext is one extension for the synthetic hello builder.
type ext struct {
	typ  uint16
	body []byte
}

// buildMsg makes a ClientHello handshake message with the given extensions
// (nil exts: no extensions block at all).
func buildMsg(exts []ext) []byte {
	var b cryptobyte.Builder
	b.AddUint8(typeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(0x0303)
		b.AddBytes(make([]byte, 32))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x1301); b.AddUint16(0xc02f) })
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		if exts == nil {
			return
		}
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, e := range exts {
				b.AddUint16(e.typ)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.body) })
			}
		})
	})
	return b.BytesOrPanic()
}

// sniBody is a server_name extension body with the given (type, name)
// entries.
func sniBody(entries ...any) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for i := 0; i < len(entries); i += 2 {
			b.AddUint8(uint8(entries[i].(int)))
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(entries[i+1].(string))) })
		}
	})
	return b.BytesOrPanic()
}

// alpnBody is an ALPN extension body.
func alpnBody(protos ...string) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, p := range protos {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
		}
	})
	return b.BytesOrPanic()
}

// pskBody is a well-formed pre_shared_key extension body.
func pskBody() []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte("ticket")) })
		b.AddUint32(7)
	})
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
	})
	return b.BytesOrPanic()
}

// basicExts are the extensions of a minimal valid TLS 1.3 hello.
func basicExts(extra ...ext) []ext {
	return append([]ext{
		{extServerName, sniBody(0, istioSNI)},
		{extALPN, alpnBody("istio-peer-exchange", "istio")},
		{extSupportedVersion, []byte{2, 3, 4}},
		{extSupportedGroups, []byte{0, 2, 0, 29}},
		{extSignatureAlgs, []byte{0, 2, 4, 3}},
		{extKeyShare, append([]byte{0, 36, 0, 29, 0, 32}, make([]byte, 32)...)},
	}, extra...)
}

// noLeak fails tb if goroutines started during the test are still running
// shortly after it (and its other cleanups) finished. Call it first, so that
// its cleanup runs last.
func noLeak(tb testing.TB) {
	tb.Helper()
	before := runtime.NumGoroutine()
	tb.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				tb.Errorf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
