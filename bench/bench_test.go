package bench_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eastwest-gw/eastwest/bench"
)

// TestMain lets the runner start this test binary as its load tool and
// sink (bench.ChildEnv), as ewbench does with itself.
func TestMain(m *testing.M) {
	if role := os.Getenv(bench.ChildEnv); role != "" {
		os.Exit(bench.ChildMain(role, os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestSmoke is `make bench-smoke`: every mode against every target with
// tiny durations. It asserts that each mode produced its numbers without
// error, never a speed. direct and eastwest-splice must run; HAProxy and
// nginx are reported as skipped when not installed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{
		EastwestBin: eastwestBin(t),
		Smoke:       true,
		Targets:     nil, // every target: the smoke run proves each still works
		Log:         logWriter{t},
		Command:     "go test ./bench -run TestSmoke",
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Log("\n" + rep.Table())
	for _, tr := range rep.Targets {
		t.Run(tr.Target.Name, func(t *testing.T) {
			if tr.Skipped != "" {
				if tr.Target.Kind == bench.KindDirect || tr.Target.Kind == bench.KindEastwest {
					t.Fatalf("skipped: %s", tr.Skipped)
				}
				t.Skipf("skipped: %s", tr.Skipped)
			}
			if tr.Target.Traced && (tr.Exported.Spans == 0 || tr.Exported.Bad != 0) {
				t.Errorf("traced target exported %+v to the OTLP receiver", tr.Exported)
			}
			for _, m := range bench.Modes {
				runs := tr.Runs[m.Name]
				if len(runs) != 1 {
					t.Errorf("%s: %d runs, want 1", m.Name, len(runs))
					continue
				}
				if runs[0].Error != "" {
					t.Errorf("%s: %s", m.Name, runs[0].Error)
				}
			}
			for _, m := range bench.Metrics {
				c := tr.Cell(m)
				isGo := tr.Target.Kind == bench.KindEastwest
				wantNA := (m.ProxyOnly && tr.Target.Kind == bench.KindDirect) || (m.Title == "goroutines/conn" && !isGo)
				if c.NA != wantNA {
					t.Errorf("%s: not applicable = %v, want %v", m.Title, c.NA, wantNA)
				}
				if !wantNA && (!c.OK || (c.Median < 0 && !m.Delta)) {
					t.Errorf("%s: no number (%+v)", m.Title, c)
				}
			}
		})
	}
	out := filepath.Join(t.TempDir(), "smoke.md")
	if err := rep.WriteFiles(out); err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	md, _ := os.ReadFile(out)
	svg, _ := os.ReadFile(strings.TrimSuffix(out, ".md") + ".svg")
	if !bytes.Contains(md, []byte("| eastwest-splice |")) || !bytes.Contains(md, []byte("smoke.svg")) {
		t.Errorf("report lacks the eastwest row or the chart:\n%s", md)
	}
	if !bytes.HasPrefix(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("eastwest-splice")) {
		t.Errorf("chart is not an SVG with the targets: %.200s", svg)
	}
}

// realHello captures a crypto/tls ClientHello.
func realHello(t testing.TB, sni string) []byte {
	t.Helper()
	h, err := bench.CaptureClientHello(context.Background(), &tls.Config{ServerName: sni, NextProtos: bench.IstioALPN, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	return h
}

func TestParseClientHello(t *testing.T) {
	hello := realHello(t, bench.DefaultSNI)
	// The same hello split into two records, as a TLS stack may send it.
	body := hello[5:]
	split := append([]byte{22, 3, 1, 0, 100}, body[:100]...)
	rest := len(body) - 100
	split = append(append(split, 22, 3, 1, byte(rest>>8), byte(rest)), body[100:]...)
	tests := []struct {
		name    string
		in      []byte
		want    int
		wantErr error
	}{
		{"real hello", hello, len(hello), nil},
		{"real hello then data", append(append([]byte{}, hello...), 'D', 1, 2), len(hello), nil},
		{"split over two records", split, len(split), nil},
		{"truncated header", hello[:3], 0, io.ErrUnexpectedEOF},
		{"truncated body", hello[:len(hello)-1], 0, io.ErrUnexpectedEOF},
		{"second record missing", split[:105], 0, io.ErrUnexpectedEOF},
		{"not handshake", append([]byte{23}, hello[1:]...), 0, bench.ErrNotHello},
		{"not client hello", append(append([]byte{}, hello[:5]...), append([]byte{2}, hello[6:]...)...), 0, bench.ErrNotHello},
		{"empty record", []byte{22, 3, 1, 0, 0}, 0, bench.ErrNotHello},
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), 0, bench.ErrNotHello},
		{"trailing handshake bytes", func() []byte {
			b := append([]byte{}, hello...)
			n := int(b[3])<<8 | int(b[4]) + 1
			b[3], b[4] = byte(n>>8), byte(n)
			return append(b, 0)
		}(), 0, bench.ErrNotHello},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := bench.ParseClientHello(tt.in)
			if !errors.Is(err, tt.wantErr) || n != tt.want {
				t.Fatalf("ParseClientHello = %d, %v; want %d, %v", n, err, tt.want, tt.wantErr)
			}
			got, err := bench.ReadClientHello(bytes.NewReader(tt.in))
			if tt.wantErr == nil && (err != nil || !bytes.Equal(got, tt.in[:tt.want])) {
				t.Fatalf("ReadClientHello = %d bytes, %v", len(got), err)
			}
			if tt.wantErr != nil && err == nil {
				t.Fatal("ReadClientHello accepted it")
			}
		})
	}
	if !bytes.Contains(hello, []byte(bench.DefaultSNI)) || !bytes.Contains(hello, []byte("istio-peer-exchange")) {
		t.Error("captured hello lacks the SNI or the Istio ALPN")
	}
}

// FuzzParseClientHello checks that the framer never panics, never claims
// more bytes than it was given, and agrees with ReadClientHello.
func FuzzParseClientHello(f *testing.F) {
	f.Add(realHello(f, bench.DefaultSNI))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := bench.ParseClientHello(b)
		if err == nil && (n <= 0 || n > len(b)) {
			t.Fatalf("length %d of %d bytes", n, len(b))
		}
		got, rerr := bench.ReadClientHello(bytes.NewReader(b))
		if (err == nil) != (rerr == nil) || (err == nil && len(got) != n) {
			t.Fatalf("ParseClientHello %d, %v; ReadClientHello %d, %v", n, err, len(got), rerr)
		}
	})
}

func TestSinkAndLoad(t *testing.T) {
	dir := t.TempDir()
	if err := bench.EnsurePKI(dir); err != nil {
		t.Fatal(err)
	}
	cfg, err := bench.ServerTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := bench.NewSink("127.0.0.1:0", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, tt := range []struct {
		name  string
		mode  string
		conns int
		check func(*bench.LoadResult) bool
	}{
		{"throughput", bench.ModeThroughput, 2, func(r *bench.LoadResult) bool { return r.Bytes > 0 && r.Gbps > 0 }},
		{"latency", bench.ModeLatency, 1, func(r *bench.LoadResult) bool { return r.RTT != nil && r.RTT.Samples > 0 }},
		{"connrate", bench.ModeConnRate, 1, func(r *bench.LoadResult) bool { return r.Connections > 0 }},
		{"connrate-tls", bench.ModeConnRateTLS, 1, func(r *bench.LoadResult) bool { return r.Connections > 0 }},
		{"idle", bench.ModeIdle, 10, func(r *bench.LoadResult) bool { return r.Held == 10 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := bench.RunLoad(context.Background(), bench.LoadConfig{
				Mode: tt.mode, Addr: s.RawAddr(), TLSAddr: s.TLSAddr(), Conns: tt.conns, Workers: 2,
				Duration: 50 * time.Millisecond, PKIDir: dir, Settle: time.Millisecond, PID: os.Getpid(),
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Error != "" || !tt.check(res) {
				t.Fatalf("result %+v", res)
			}
		})
	}
	select {
	case err := <-s.Errs:
		t.Errorf("sink error: %v", err)
	default:
	}
}

// TestLoadDetectsBadTargets: a target that corrupts bytes, miscounts or
// refuses must make the run fail, not produce a number.
func TestLoadDetectsBadTargets(t *testing.T) {
	// liar reads the hello and the command, then answers every read with
	// the bytes flipped, and a discard with a count one too high.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := bench.ReadClientHello(c); err != nil {
					return
				}
				var cmd [1]byte
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := io.ReadFull(c, cmd[:]); err != nil {
					return
				}
				_ = c.SetReadDeadline(time.Time{})
				buf := make([]byte, 64<<10)
				var n uint64
				for {
					m, err := c.Read(buf)
					n += uint64(m)
					if cmd[0] == bench.CmdEcho && m > 0 {
						for i := range buf[:m] {
							buf[i] ^= 1
						}
						c.Write(buf[:m])
					}
					if err != nil {
						break
					}
				}
				if cmd[0] == bench.CmdDiscard {
					c.Write(binary.BigEndian.AppendUint64(nil, n+1))
				}
			}()
		}
	}()
	pki := t.TempDir()
	if err := bench.EnsurePKI(pki); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, mode, addr string }{
		{"corrupted echo", bench.ModeLatency, ln.Addr().String()},
		{"corrupted echo per connection", bench.ModeConnRate, ln.Addr().String()},
		{"wrong byte count", bench.ModeThroughput, ln.Addr().String()},
		{"idle echo corrupted", bench.ModeIdle, ln.Addr().String()},
		{"not TLS", bench.ModeConnRateTLS, ln.Addr().String()},
		{"closed port", bench.ModeLatency, closedAddr(t)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := bench.RunLoad(context.Background(), bench.LoadConfig{Mode: tt.mode, Addr: tt.addr, Duration: 20 * time.Millisecond, Workers: 1, Conns: 2, PKIDir: pki})
			if err != nil {
				t.Fatal(err)
			}
			if res.Error == "" {
				t.Fatalf("run against a broken target succeeded: %+v", res)
			}
		})
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// eastwestBin is $EWBENCH_EASTWEST (make passes bin/eastwest) or a fresh
// build: outside the smoke run's deadline, since a cold build on a busy
// two-core machine can take minutes.
func eastwestBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("EWBENCH_EASTWEST"); p != "" {
		return p
	}
	out := filepath.Join(t.TempDir(), "eastwest")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./cmd/eastwest")
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/eastwest: %v\n%s", err, b)
	}
	return out
}
