package sni

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

// TestParseRealClients: every hello a crypto/tls client sends parses to what
// a crypto/tls server sees.
func TestParseRealClients(t *testing.T) {
	noLeak(t)
	for _, rh := range realHellos(t) {
		t.Run(rh.name, func(t *testing.T) {
			h, err := Parse(rh.raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			sameAsTLS(t, h, rh.seen)
			if h.Version != 0x0303 {
				t.Errorf("Version = %#x, want 0x0303", h.Version)
			}
			// The oracle on the captured bytes agrees with the live one.
			sameAsTLS(t, h, tlsServerSees(rh.raw))
		})
	}
}

func TestParseRealClientDetails(t *testing.T) {
	hellos := map[string]realHello{}
	for _, rh := range realHellos(t) {
		hellos[rh.name] = rh
	}
	tests := []struct {
		name      string
		sni       string
		istioALPN bool
		minLen    int
	}{
		{name: "istio-tls13", sni: istioSNI, istioALPN: true},
		{name: "no-sni", sni: "", istioALPN: false},
		{name: "ip-server-name", sni: ""},
		{name: "plain-host-h2", sni: "reviews.default.svc.cluster.local"},
		{name: "uppercase-sni", sni: "OUTBOUND_.9080_._.Reviews.Default.SVC.Cluster.Local", istioALPN: true},
		// An ML-KEM-768 key share alone is 1216 bytes: the hello no
		// longer fits one MSS-sized read on many paths.
		{name: "mlkem", sni: istioSNI, istioALPN: true, minLen: 1300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rh, ok := hellos[tt.name]
			if !ok {
				t.Fatalf("no captured hello %q", tt.name)
			}
			h, err := Parse(rh.raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if string(h.ServerName) != tt.sni {
				t.Errorf("ServerName = %q, want %q", h.ServerName, tt.sni)
			}
			if tt.sni == "" && h.ServerName != nil {
				t.Errorf("ServerName = %q, want nil", h.ServerName)
			}
			if got := h.HasIstioALPN(); got != tt.istioALPN {
				t.Errorf("HasIstioALPN = %v, want %v", got, tt.istioALPN)
			}
			if len(rh.raw) < tt.minLen {
				t.Errorf("hello is %d bytes, want at least %d", len(rh.raw), tt.minLen)
			}
		})
	}
}

// TestParseReframed: the same hello split into records of every size from
// 1 to 100 bytes (and one maximal record) parses identically, through Parse
// and through Read fed one byte at a time.
func TestParseReframed(t *testing.T) {
	for _, rh := range realHellos(t) {
		t.Run(rh.name, func(t *testing.T) {
			want, err := Parse(rh.raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			msg := helloBody(t, rh.raw)
			for size := 1; size <= 101; size++ {
				if size == 101 {
					size = maxPlaintext
				}
				data := frame(msg, size)
				got, err := Parse(data)
				if err != nil {
					t.Fatalf("size %d: Parse: %v", size, err)
				}
				equalHello(t, got, want)
				if size%10 == 1 {
					raw, got, err := Read(&oneByteReader{r: bytes.NewReader(data)}, make([]byte, 64<<10))
					if err != nil {
						t.Fatalf("size %d: Read: %v", size, err)
					}
					if !bytes.Equal(raw, data) {
						t.Fatalf("size %d: Read raw differs", size)
					}
					equalHello(t, got, want)
				}
			}
			// crypto/tls reassembles 1-byte records too.
			sameAsTLS(t, want, tlsServerSees(frame(msg, 1)))
		})
	}
}

// oneByteReader returns one byte per Read (testing/iotest has one, but a
// local type lets the benchmark reuse it without allocation).
type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func equalHello(tb testing.TB, got, want ClientHello) {
	tb.Helper()
	if !bytes.Equal(got.ServerName, want.ServerName) || (got.ServerName == nil) != (want.ServerName == nil) ||
		!bytes.Equal(got.ALPN, want.ALPN) || (got.ALPN == nil) != (want.ALPN == nil) || got.Version != want.Version {
		tb.Fatalf("hello = {%q %q %#x}, want {%q %q %#x}", got.ServerName, got.ALPN, got.Version, want.ServerName, want.ALPN, want.Version)
	}
}

// TestParsePrefixes: every proper prefix of a valid hello means "need more
// bytes", whatever the framing.
func TestParsePrefixes(t *testing.T) {
	rh := realHellos(t)[0]
	msg := helloBody(t, rh.raw)
	for _, size := range []int{1, 3, 100, maxPlaintext} {
		data := frame(msg, size)
		for i := range len(data) {
			if _, err := Parse(data[:i]); err != io.ErrUnexpectedEOF {
				t.Fatalf("size %d: Parse(prefix %d of %d) = %v, want io.ErrUnexpectedEOF", size, i, len(data), err)
			}
		}
	}
}

// TestParseSynthetic checks each rejection rule on a hand-built hello, and
// checks against crypto/tls that the rule is either crypto/tls's own or one
// of the documented divergences.
func TestParseSynthetic(t *testing.T) {
	valid := buildMsg(basicExts())
	big := make([]ext, 0, 40)
	for i := range 40 {
		big = append(big, ext{uint16(1000 + i), nil})
	}
	bigDup := slices.Clone(big)
	bigDup[39].typ = bigDup[2].typ
	longRecord := append([]byte{recordTypeHandshake, 3, 1, 0x40, 0x01}, make([]byte, maxPlaintext+1)...)
	hugeMsg := []byte{recordTypeHandshake, 3, 1, 0, 4, typeClientHello, 1, 0, 1}

	tests := []struct {
		name string
		data []byte
		want error // nil: success
		sni  string
		// tlsReaches is whether a crypto/tls server gets to
		// GetConfigForClient on the same bytes.
		tlsReaches bool
	}{
		{name: "valid", data: frame(valid, maxPlaintext), sni: istioSNI, tlsReaches: true},
		{name: "valid 1-byte records", data: frame(valid, 1), sni: istioSNI, tlsReaches: true},
		{name: "no extensions", data: frame(buildMsg(nil), 100), tlsReaches: true},
		{name: "empty extensions", data: frame(buildMsg([]ext{}), 100), tlsReaches: true},
		{name: "40 extensions", data: frame(buildMsg(big), 100), tlsReaches: true},
		{name: "empty ECH", data: frame(buildMsg(basicExts(ext{extECH, nil})), 500), sni: istioSNI, tlsReaches: true},
		{name: "inner ECH", data: frame(buildMsg(basicExts(ext{extECH, []byte{1}})), 500), sni: istioSNI, tlsReaches: true},
		{name: "outer ECH", data: frame(buildMsg(basicExts(ext{extECH, []byte{0, 0, 1, 0, 1, 7, 0, 1, 9, 0, 2, 1, 2}})), 500), sni: istioSNI, tlsReaches: true},
		{name: "psk last", data: frame(buildMsg(basicExts(ext{extPreSharedKey, pskBody()})), 500), sni: istioSNI, tlsReaches: true},
		{name: "unknown extension with data", data: frame(buildMsg(basicExts(ext{0x1234, []byte("x")})), 500), sni: istioSNI, tlsReaches: true},

		{name: "HTTP request", data: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), want: ErrNotTLS},
		{name: "HTTP one byte", data: []byte("G"), want: ErrNotTLS},
		{name: "SSLv2 hello", data: []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, want: ErrNotTLS},
		{name: "application data first", data: []byte{0x17, 3, 3, 0, 1, 0}, want: ErrNotTLS},
		{name: "empty", data: nil, want: io.ErrUnexpectedEOF},

		{name: "duplicate extension", data: frame(buildMsg(basicExts(ext{extALPN, alpnBody("h2")})), 500), want: errDuplicateExt},
		{name: "duplicate among 40", data: frame(buildMsg(bigDup), 500), want: errDuplicateExt},
		{name: "duplicate SNI among 40", data: frame(buildMsg(append(basicExts(big...), ext{extServerName, sniBody(0, "x")})), 500), want: errDuplicateExt},
		{name: "trailing bytes after extensions", data: frame(appendInside(valid, 0, 0), 500), want: errExtensionsLen},
		{name: "bad extension header", data: frame(withExtBlock([]byte{0, 1, 0}), 500), want: errExtensionHdr},
		{name: "extension length past block", data: frame(withExtBlock([]byte{0x12, 0x34, 0, 9, 1}), 500), want: errExtensionHdr},
		{name: "truncated fields", data: frame(truncatedFields(), 500), want: errHelloFields},
		{name: "odd cipher suites", data: frame(oddSuites(), 500), want: errCipherSuiteLen},
		{name: "SNI trailing dot", data: frame(buildMsg([]ext{{extServerName, sniBody(0, "a.example.")}}), 500), want: errSNIDot},
		{name: "SNI empty name", data: frame(buildMsg([]ext{{extServerName, sniBody(0, "")}}), 500), want: errSNI},
		{name: "SNI empty list", data: frame(buildMsg([]ext{{extServerName, []byte{0, 0}}}), 500), want: errSNI},
		{name: "SNI two host names", data: frame(buildMsg([]ext{{extServerName, sniBody(0, "a", 0, "b")}}), 500), want: errSNIList},
		{name: "SNI other type only", data: frame(buildMsg([]ext{{extServerName, sniBody(1, "a")}}), 500), want: errSNIList, tlsReaches: true},
		{name: "SNI host then other type", data: frame(buildMsg([]ext{{extServerName, sniBody(0, "a", 1, "b")}}), 500), want: errSNIList, sni: "a", tlsReaches: true},
		{name: "SNI trailing byte", data: frame(buildMsg([]ext{{extServerName, append(sniBody(0, "a"), 0)}}), 500), want: errExtTrailing},
		{name: "ALPN empty protocol", data: frame(buildMsg([]ext{{extALPN, alpnBody("istio", "")}}), 500), want: errALPN},
		{name: "ALPN empty list", data: frame(buildMsg([]ext{{extALPN, []byte{0, 0}}}), 500), want: errALPN},
		{name: "ALPN overrun", data: frame(buildMsg([]ext{{extALPN, []byte{0, 3, 5, 'a', 'b'}}}), 500), want: errALPN},
		{name: "PSK not last", data: frame(buildMsg(append([]ext{{extPreSharedKey, pskBody()}}, basicExts()...)), 500), want: errPSKNotLast},
		{name: "PSK empty binders", data: frame(buildMsg([]ext{{extPreSharedKey, pskBody()[:14]}}), 500), want: errPSK},
		{name: "key share empty key", data: frame(buildMsg([]ext{{extKeyShare, []byte{0, 4, 0, 29, 0, 0}}}), 500), want: errKeyShare},
		{name: "supported versions odd", data: frame(buildMsg([]ext{{extSupportedVersion, []byte{1, 3}}}), 500), want: errVersions},
		{name: "groups empty", data: frame(buildMsg([]ext{{extSupportedGroups, []byte{0, 0}}}), 500), want: errGroups},
		{name: "points empty", data: frame(buildMsg([]ext{{extSupportedPoints, []byte{0}}}), 500), want: errPoints},
		{name: "sigalgs odd", data: frame(buildMsg([]ext{{extSignatureAlgs, []byte{0, 1, 4}}}), 500), want: errSigAlgs},
		{name: "cookie empty", data: frame(buildMsg([]ext{{extCookie, []byte{0, 0}}}), 500), want: errCookie},
		{name: "status request short", data: frame(buildMsg([]ext{{extStatusRequest, []byte{1, 0, 0}}}), 500), want: errStatusRequest},
		{name: "EMS with data", data: frame(buildMsg([]ext{{extExtendedMaster, []byte{0}}}), 500), want: errExtTrailing},
		{name: "ECH bad type", data: frame(buildMsg([]ext{{extECH, []byte{2}}}), 500), want: errECH},
		{name: "ECH inner with data", data: frame(buildMsg([]ext{{extECH, []byte{1, 0}}}), 500), want: errECH},
		{name: "ECH outer truncated", data: frame(buildMsg([]ext{{extECH, []byte{0, 0, 1, 0, 1, 7, 0, 5}}}), 500), want: errECH},

		{name: "ServerHello", data: frame(append([]byte{2}, valid[1:]...), 500), want: errNotClientHello},
		{name: "ServerHello first byte only", data: []byte{recordTypeHandshake, 3, 1, 0, 9, 2}, want: errNotClientHello},
		{name: "empty message", data: frame([]byte{typeClientHello, 0, 0, 0}, 500), want: errHelloFields},
		{name: "alert between records", data: spliceRecord(frame(valid, 100), 105, []byte{0x15, 3, 3, 0, 2, 1, 90}), want: errInterleaved, sni: istioSNI, tlsReaches: true},
		{name: "CCS between records", data: spliceRecord(frame(valid, 100), 105, []byte{0x14, 3, 3, 0, 1, 1}), want: errInterleaved},
		{name: "record version 2.0", data: setByte(frame(valid, 500), 1, 2), want: errRecordVersion, sni: istioSNI, tlsReaches: true},
		{name: "second record version 4.1", data: setByte(frame(valid, 100), 106, 4), want: errRecordVersion, sni: istioSNI, tlsReaches: true},
		{name: "zero-length record", data: spliceRecord(frame(valid, 100), 105, []byte{recordTypeHandshake, 3, 1, 0, 0}), want: errEmptyRecord},
		{name: "record over 16384", data: longRecord, want: errRecordOverflow},
		{name: "handshake over 64 KiB", data: hugeMsg, want: ErrTooLarge},
		{name: "trailing data after records", data: append(frame(valid, 500), 0x17), want: errTrailingData, sni: istioSNI, tlsReaches: true},
		{name: "trailing record", data: append(frame(valid, 500), frame([]byte{1, 0, 0, 0}, 4)...), want: errTrailingData, sni: istioSNI, tlsReaches: true},
		{name: "trailing handshake bytes", data: frame(append(slices.Clone(valid), 20, 0, 0, 0), 5000), want: errTrailingHS, sni: istioSNI, tlsReaches: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Parse(tt.data)
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("Parse error = %v, want %v", err, tt.want)
			case tt.want == nil && string(h.ServerName) != tt.sni:
				t.Fatalf("ServerName = %q, want %q", h.ServerName, tt.sni)
			}
			if tt.want != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotTLS) &&
				!errors.Is(err, ErrTooLarge) && err != io.ErrUnexpectedEOF {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			seen := tlsServerSees(tt.data)
			if seen.reached != tt.tlsReaches {
				t.Fatalf("crypto/tls reached GetConfigForClient = %v, want %v", seen.reached, tt.tlsReaches)
			}
			if tt.want == nil {
				sameAsTLS(t, h, seen)
			} else if seen.reached && !divergence(err) {
				t.Fatalf("crypto/tls accepts, but %v is not a documented divergence", err)
			} else if seen.reached && seen.serverName != tt.sni {
				t.Fatalf("crypto/tls saw SNI %q, want %q", seen.serverName, tt.sni)
			}
		})
	}
}

// divergence reports whether err is one of the documented cases where
// Parse rejects a hello that crypto/tls accepts (doc.go).
func divergence(err error) bool {
	for _, d := range []error{errInterleaved, errRecordVersion, errTrailingHS, errTrailingData, errSNIList, ErrNotTLS} {
		if errors.Is(err, d) {
			return true
		}
	}
	return false
}

// appendInside appends bytes to the message body, fixing the handshake
// length only, so they trail the extensions block.
func appendInside(msg []byte, extra ...byte) []byte {
	out := append(slices.Clone(msg), extra...)
	n := len(out) - handshakeHeaderLen
	out[1], out[2], out[3] = byte(n>>16), byte(n>>8), byte(n)
	return out
}

// withExtBlock builds a hello whose extensions block is block verbatim.
func withExtBlock(block []byte) []byte {
	msg := buildMsg(nil)
	msg = append(msg, byte(len(block)>>8), byte(len(block)))
	msg = append(msg, block...)
	return appendInside(msg)
}

func truncatedFields() []byte {
	msg := buildMsg(nil)
	return appendInside(msg[:handshakeHeaderLen+2+32+1+5]) // session id cut short
}

func oddSuites() []byte {
	// version, random, empty session id, 3-byte cipher suites, compression.
	body := append([]byte{3, 3}, make([]byte, 32)...)
	body = append(body, 0, 0, 3, 0x13, 0x01, 0x13, 1, 0)
	return appendInside(append([]byte{typeClientHello, 0, 0, 0}, body...))
}

func spliceRecord(data []byte, at int, rec []byte) []byte {
	out := slices.Clone(data[:at])
	out = append(out, rec...)
	return append(out, data[at:]...)
}

func setByte(data []byte, i int, v byte) []byte {
	out := slices.Clone(data)
	out[i] = v
	return out
}

func TestALPN(t *testing.T) {
	tests := []struct {
		name   string
		protos []string
		istio  bool
		has    string
		hasNot string
	}{
		{name: "istio tcp", protos: []string{"istio-peer-exchange", "istio"}, istio: true, has: "istio", hasNot: "istio-h"},
		{name: "istio http", protos: []string{"istio-http/1.1"}, istio: true, has: "istio-http/1.1", hasNot: "istio"},
		{name: "istio h2 after h2", protos: []string{"h2", "istio-h2"}, istio: true, has: "h2", hasNot: "istio-http/1.0"},
		{name: "plain", protos: []string{"h2", "http/1.1"}, has: "http/1.1", hasNot: "istio"},
		{name: "prefix is not a match", protos: []string{"istiox", "xistio"}, hasNot: "istio"},
		{name: "none", hasNot: "h2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h ClientHello
			if tt.protos != nil {
				var err error
				h, err = Parse(frame(buildMsg([]ext{{extALPN, alpnBody(tt.protos...)}}), 500))
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
			}
			if got := h.HasIstioALPN(); got != tt.istio {
				t.Errorf("HasIstioALPN = %v, want %v", got, tt.istio)
			}
			if tt.has != "" && !h.ALPNContains(tt.has) {
				t.Errorf("ALPNContains(%q) = false", tt.has)
			}
			if h.ALPNContains(tt.hasNot) {
				t.Errorf("ALPNContains(%q) = true", tt.hasNot)
			}
		})
	}
	// A hand-made ClientHello with a broken list must not panic.
	bad := ClientHello{ALPN: []byte{9, 'i', 's'}}
	if bad.ALPNContains("is") || bad.HasIstioALPN() {
		t.Error("truncated ALPN matched")
	}
}

// TestSplitFieldIsCopied: when a record boundary cuts the server name, the
// field is a copy with the same content, and never aliases record headers.
func TestSplitFieldIsCopied(t *testing.T) {
	data := frame(buildMsg(basicExts()), 60)
	h, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if string(h.ServerName) != istioSNI {
		t.Fatalf("ServerName = %q", h.ServerName)
	}
	if cap(h.ALPN) != len(h.ALPN) {
		t.Errorf("ALPN view has spare capacity %d: append would write into the records", cap(h.ALPN)-len(h.ALPN))
	}
}

func TestParseZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	var mlkem []byte
	for _, rh := range realHellos(t) {
		if rh.name == "mlkem" {
			mlkem = rh.raw
		}
	}
	oneByteRecords := frame(buildMsg(nil), 1)
	httpReq := []byte("GET / HTTP/1.1\r\n")
	checks := []struct {
		name string
		f    func()
	}{
		{"Parse", func() { _, _ = Parse(mlkem) }},
		{"Parse 1-byte records with unsplit fields", func() { _, _ = Parse(oneByteRecords) }},
		{"Parse error", func() { _, _ = Parse(mlkem[:len(mlkem)-1]) }},
		{"Parse not TLS", func() { _, _ = Parse(httpReq) }},
		{"HasIstioALPN", func() {
			h, _ := Parse(mlkem)
			_ = h.HasIstioALPN()
			_ = h.ALPNContains("istio")
		}},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, c.f); n != 0 {
				t.Errorf("%v allocs per run, want 0", n)
			}
		})
	}
}
