package sni

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzParse checks Parse against crypto/tls as the oracle:
//   - Parse accepts ⇒ a crypto/tls server reaches GetConfigForClient and
//     sees the same ServerName and ALPN list;
//   - crypto/tls reaches GetConfigForClient ⇒ Parse accepts, or rejects with
//     one of the divergences documented in doc.go (divergence());
//
// and checks Parse against itself and Read: an accepted hello re-framed
// into 1-byte and maximal records parses identically, and Read (one byte
// per read) agrees with Parse on the result or the error.
// Seeds: testdata/fuzz/FuzzParse, real crypto/tls hellos among them
// (regenerate with EASTWEST_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus).
func FuzzParse(f *testing.F) {
	f.Add(frame(buildMsg(basicExts()), maxPlaintext))
	f.Add(frame(buildMsg(basicExts(ext{extPreSharedKey, pskBody()})), 7))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: reviews\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := Parse(data)
		if err != nil && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrMalformed) &&
			!errors.Is(err, ErrNotTLS) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Parse error %v wraps no sentinel", err)
		}
		seen := tlsServerSees(data)
		switch {
		case err == nil:
			sameAsTLS(t, h, seen)
		case seen.reached && !divergence(err):
			t.Fatalf("crypto/tls accepts (SNI %q), Parse says %v", seen.serverName, err)
		}

		if err == nil {
			msg := helloBody(t, data)
			for _, size := range []int{1, maxPlaintext} {
				h2, err := Parse(frame(msg, size))
				if err != nil {
					t.Fatalf("re-framed into %d-byte records: %v", size, err)
				}
				equalHello(t, h2, h)
			}
		}

		br := bytes.NewReader(data)
		// A cap that never binds: the data plus the largest message.
		raw, rh, rerr := Read(&oneByteReader{r: br}, make([]byte, len(data)+recordHeaderLen+handshakeHeaderLen+maxHandshake))
		switch {
		case err == nil:
			if rerr != nil || !bytes.Equal(raw, data) {
				t.Fatalf("Read = %d bytes, %v; Parse accepted all %d", len(raw), rerr, len(data))
			}
			equalHello(t, rh, h)
		case errors.Is(err, errTrailingData):
			// Read stops where the ClientHello records end, and its
			// result is Parse's on exactly those records (which may
			// still be malformed inside).
			_, perr := Parse(raw)
			if len(raw) >= len(data) || br.Len() != len(data)-len(raw) || rerr != perr {
				t.Fatalf("Read = %d of %d bytes, %v; Parse of those: %v", len(raw), len(data), rerr, perr)
			}
		case err == io.ErrUnexpectedEOF:
			if !errors.Is(rerr, io.ErrUnexpectedEOF) && !(len(data) == 0 && errors.Is(rerr, io.EOF)) {
				t.Fatalf("Parse needs more bytes, Read says %v", rerr)
			}
		default:
			if !errors.Is(rerr, err) {
				t.Fatalf("Parse says %v, Read says %v", err, rerr)
			}
		}
	})
}

// FuzzParseName: ParseName never panics, its output is normalized, it is
// case-insensitive, it agrees with Istio's own ParseSubsetKey on every Istio
// name it accepts, and mesh.Key-style formatting of an Istio name reparses
// to the same Name.
func FuzzParseName(f *testing.F) {
	for _, s := range []string{istioSNI, "outbound_.80_._.my_svc.ns", "outbound_.9080_._.x", "reviews.default.svc", "outbound|9080||x", "inbound_.80_._.x", "10.0.0.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseName(s)
		if err != nil {
			if !errors.Is(err, ErrBadName) {
				t.Fatalf("error %v does not wrap ErrBadName", err)
			}
			return
		}
		if n.Host == "" || n.Host != strings.ToLower(n.Host) || len(s) > MaxNameLen {
			t.Fatalf("ParseName(%q) = %+v", s, n)
		}
		up, err := ParseName(strings.ToUpper(s))
		if err != nil || up != n {
			t.Fatalf("ParseName(upper %q) = %+v, %v; want %+v", s, up, err, n)
		}
		if !n.Istio {
			if n.Host != strings.ToLower(s) || n.Port != 0 || n.Subset != "" {
				t.Fatalf("plain ParseName(%q) = %+v", s, n)
			}
			return
		}
		dir, subset, host, port := istioParseSubsetKey(strings.ToLower(s))
		if dir != "outbound" || subset != n.Subset || host != n.Host || port != int(n.Port) {
			t.Fatalf("ParseName(%q) = %+v, Istio's ParseSubsetKey = %q %q %q %d", s, n, dir, subset, host, port)
		}
		key := "outbound_." + strconv.Itoa(int(n.Port)) + "_." + n.Subset + "_." + n.Host // mesh.Key.String
		again, err := ParseName(key)
		if err != nil || again != n {
			t.Fatalf("ParseName(%q) = %+v, %v; want %+v", key, again, err, n)
		}
	})
}

// istioParseSubsetKey is istio/istio pilot/pkg/model/service.go
// ParseSubsetKey at the SEMANTICS.md snapshot, for the "_." form.
func istioParseSubsetKey(s string) (direction, subsetName, hostname string, port int) {
	sep := "_."
	dir, s, ok := strings.Cut(s, sep)
	if !ok {
		return
	}
	direction = dir
	p, s, ok := strings.Cut(s, sep)
	if !ok {
		return
	}
	port, _ = strconv.Atoi(p)
	ss, s, ok := strings.Cut(s, sep)
	if !ok {
		return
	}
	subsetName = ss
	if strings.Contains(s, sep) {
		return
	}
	hostname = s
	return
}

// FuzzRewrite: any rule either fails to compile or rewrites without
// panicking, cache hits agree with misses, and the presets only ever
// change a name's suffix.
func FuzzRewrite(f *testing.F) {
	f.Add("outbound_.9080_.v1_.reviews.default.svc.cluster2.global", `\.cluster[0-9]+\.global$`, ".cluster.local")
	f.Add("a.b.global", `(\w+)\.(\w+)`, "${2}.$1")
	f.Add("x", ``, "y")
	f.Fuzz(func(t *testing.T, name, pattern, repl string) {
		for _, stop := range []bool{false, true} {
			rw, err := NewRewriter([]Rule{{Pattern: pattern, Replacement: repl}, PresetClusterGlobal, PresetGlobal}, stop, 4)
			if err != nil {
				continue
			}
			first := rw.Rewrite(name)
			if again := rw.Rewrite(name); again != first {
				t.Fatalf("cached Rewrite(%q) = %q, first %q", name, again, first)
			}
		}
		presets, err := NewRewriter([]Rule{PresetClusterGlobal, PresetGlobal}, true, -1)
		if err != nil {
			t.Fatal(err)
		}
		out := presets.Rewrite(name)
		if len(name) <= MaxNameLen && !strings.HasSuffix(lowerASCII(name), ".global") && out != lowerASCII(name) {
			t.Fatalf("presets rewrote %q to %q", name, out)
		}
	})
}

// TestWriteFuzzCorpus regenerates the committed seed corpus from real
// crypto/tls clients. It only runs with EASTWEST_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv(corpusEnv) != "1" {
		t.Skipf("set %s=1 to rewrite %s", corpusEnv, fuzzCorpusDir)
	}
	write := func(target, name, encoded string) {
		t.Helper()
		dir := filepath.Join(fuzzCorpusDir, target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte("go test fuzz v1\n"+encoded), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bytesSeed := func(b []byte) string { return fmt.Sprintf("[]byte(%q)\n", b) }
	stringSeed := func(ss ...string) string {
		var out string
		for _, s := range ss {
			out += fmt.Sprintf("string(%q)\n", s)
		}
		return out
	}

	for _, rh := range realHellos(t) {
		write("FuzzParse", "crypto-tls-"+rh.name, bytesSeed(rh.raw))
		if rh.name == "mlkem" || rh.name == "resume-tls13" {
			msg := helloBody(t, rh.raw)
			write("FuzzParse", "crypto-tls-"+rh.name+"-records-64", bytesSeed(frame(msg, 64)))
			write("FuzzParse", "crypto-tls-"+rh.name+"-trailer", bytesSeed(append(bytes.Clone(rh.raw), "TRAILER"...)))
		}
	}
	valid := buildMsg(basicExts())
	synthetic := map[string][]byte{
		"http":                 []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"no-extensions":        frame(buildMsg(nil), 100),
		"ech-outer":            frame(buildMsg(basicExts(ext{extECH, []byte{0, 0, 1, 0, 1, 7, 0, 1, 9, 0, 2, 1, 2}})), 500),
		"psk-not-last":         frame(buildMsg(append([]ext{{extPreSharedKey, pskBody()}}, basicExts()...)), 500),
		"duplicate-alpn":       frame(buildMsg(basicExts(ext{extALPN, alpnBody("h2")})), 500),
		"sni-two-entries":      frame(buildMsg([]ext{{extServerName, sniBody(0, "a", 1, "b")}}), 500),
		"sni-trailing-dot":     frame(buildMsg([]ext{{extServerName, sniBody(0, "a.")}}), 500),
		"alert-between":        spliceRecord(frame(valid, 100), 105, []byte{0x15, 3, 3, 0, 2, 1, 90}),
		"record-version-2":     setByte(frame(valid, 500), 1, 2),
		"trailing-handshake":   frame(append(bytes.Clone(valid), 20, 0, 0, 0), 5000),
		"truncated":            frame(valid, 500)[:200],
		"handshake-over-64kib": {recordTypeHandshake, 3, 1, 0, 4, typeClientHello, 1, 0, 1},
	}
	for name, data := range synthetic {
		write("FuzzParse", "synthetic-"+name, bytesSeed(data))
	}

	names := map[string]string{
		"istio-subset":     istioSNI,
		"istio-no-subset":  "outbound_.9080_._.x",
		"underscore-host":  "outbound_.80_._.my_svc.ns.svc.cluster.local",
		"upper":            "OUTBOUND_.9080_.V2_.Reviews.Default.SVC.cluster.local",
		"host-sep":         "outbound_.80_._.a_.b",
		"leading-zero":     "outbound_.080_._.h",
		"pipe":             "outbound|9080||reviews.default.svc.cluster.local",
		"inbound":          "inbound_.9080_._.reviews.default.svc.cluster.local",
		"ipv4":             "10.0.0.1",
		"plain":            "istiod.istio-system.svc",
		"legacy-global":    "outbound_.9080_.v1_.reviews.default.svc.cluster2.global",
		"subset-with-dots": "outbound_.1_.v1.x_.h",
	}
	for name, s := range names {
		write("FuzzParseName", name, stringSeed(s))
	}

	rewrites := map[string][3]string{
		"cluster-preset": {"outbound_.9080_.v1_.reviews.default.svc.cluster2.global", PresetClusterGlobal.Pattern, PresetClusterGlobal.Replacement},
		"global-preset":  {"outbound_.8000_._.httpbin.bar.global", PresetGlobal.Pattern, PresetGlobal.Replacement},
		"named-group":    {"outbound_.80_.v1_.reviews.ns.svc", `^outbound_\.(\d+)_\.(\w*)_\.(?P<svc>[^.]+)\.`, "outbound_.${1}_.${2}_.${svc}-v2."},
		"empty-match":    {"abc", `x*`, "-"},
		"ecmascript":     {"abc", `b`, "[$&]"},
	}
	for name, r := range rewrites {
		write("FuzzRewrite", name, stringSeed(r[0], r[1], r[2]))
	}
}
