package sni

import (
	"bytes"
	"crypto/tls"
	"testing"

	"github.com/eastwest-gw/eastwest/internal/testpki"
)

// mlkemHello captures a post-quantum (X25519MLKEM768) Istio ClientHello
// from crypto/tls, about 1.5 KiB.
func mlkemHello(tb testing.TB) []byte {
	tb.Helper()
	ca := testpki.NewCA(tb)
	cfg := ca.ClientConfig(tb, clientID, istioSNI, serverID)
	cfg.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519}
	raw, _ := captureHello(tb, cfg)
	return raw
}

func BenchmarkParse(b *testing.B) {
	hello := mlkemHello(b)
	b.SetBytes(int64(len(hello)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(hello); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseRecords64 is the same hello in 64-byte records: the cost of
// reassembly (fields cut by a record boundary are copied).
func BenchmarkParseRecords64(b *testing.B) {
	hello := frame(helloBody(b, mlkemHello(b)), 64)
	b.SetBytes(int64(len(hello)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(hello); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead(b *testing.B) {
	hello := mlkemHello(b)
	buf := make([]byte, 64<<10)
	br := bytes.NewReader(hello)
	b.SetBytes(int64(len(hello)))
	b.ReportAllocs()
	for b.Loop() {
		br.Reset(hello)
		if _, _, err := Read(br, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseName(b *testing.B) {
	b.SetBytes(int64(len(istioSNI)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseName(istioSNI); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRewriteCached(b *testing.B) {
	rw, err := NewRewriter([]Rule{PresetClusterGlobal, PresetGlobal}, false, 0)
	if err != nil {
		b.Fatal(err)
	}
	in := "outbound_.9080_.v1_.reviews.default.svc.cluster2.global"
	rw.Rewrite(in)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		rw.Rewrite(in)
	}
}

// BenchmarkRewriteUncached is the regexp cost the cache saves (RW-5).
func BenchmarkRewriteUncached(b *testing.B) {
	rw, err := NewRewriter([]Rule{PresetClusterGlobal, PresetGlobal}, false, -1)
	if err != nil {
		b.Fatal(err)
	}
	in := "outbound_.9080_.v1_.reviews.default.svc.cluster2.global"
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		rw.Rewrite(in)
	}
}
