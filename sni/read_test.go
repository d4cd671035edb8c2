package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"testing/iotest"
	"time"

	"github.com/eastwest-gw/eastwest/internal/testpki"
)

// TestReadLeavesTrailer: Read stops at the last ClientHello record, for
// every framing, and returns exactly what it consumed.
func TestReadLeavesTrailer(t *testing.T) {
	for _, rh := range realHellos(t) {
		t.Run(rh.name, func(t *testing.T) {
			msg := helloBody(t, rh.raw)
			for _, size := range []int{1, 2, 5, 64, 1000, maxPlaintext} {
				data := frame(msg, size)
				br := bytes.NewReader(append(bytes.Clone(data), "TRAILER"...))
				raw, h, err := Read(&oneByteReader{r: br}, make([]byte, 64<<10))
				if err != nil {
					t.Fatalf("size %d: Read: %v", size, err)
				}
				if !bytes.Equal(raw, data) {
					t.Fatalf("size %d: raw is %d bytes, want the %d hello bytes", size, len(raw), len(data))
				}
				rest, _ := io.ReadAll(br)
				if string(rest) != "TRAILER" {
					t.Fatalf("size %d: left %q in the reader, want TRAILER", size, rest)
				}
				sameAsTLS(t, h, rh.seen)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	rh := realHellos(t)[0]
	hello := rh.raw
	valid := buildMsg(basicExts())
	// A first record announcing a 4000-byte message.
	bigFirst := frame(buildMsg(basicExts(ext{0x1234, make([]byte, 4000)})), 100)
	readErr := errors.New("connection reset")

	tests := []struct {
		name     string
		r        io.Reader
		input    int // bytes available, to check how many Read consumed
		capacity int
		want     error
		wantRaw  int // len(raw); -1: don't care
	}{
		{name: "HTTP", r: bytes.NewReader([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), capacity: 4096, want: ErrNotTLS, wantRaw: 5},
		{name: "short HTTP", r: bytes.NewReader([]byte("GE")), capacity: 4096, want: ErrNotTLS, wantRaw: 2},
		{name: "EOF before anything", r: bytes.NewReader(nil), capacity: 4096, want: io.EOF, wantRaw: 0},
		{name: "EOF in header", r: bytes.NewReader(hello[:3]), capacity: 4096, want: io.ErrUnexpectedEOF, wantRaw: 3},
		{name: "EOF in body", r: bytes.NewReader(hello[:len(hello)-1]), capacity: 4096, want: io.ErrUnexpectedEOF, wantRaw: len(hello) - 1},
		{name: "EOF between records", r: bytes.NewReader(frame(valid, 100)[:105]), capacity: 4096, want: io.ErrUnexpectedEOF, wantRaw: 105},
		{name: "reader error", r: io.MultiReader(bytes.NewReader(hello[:10]), iotest.ErrReader(readErr)), capacity: 4096, want: readErr, wantRaw: 10},
		{name: "cap below record", r: bytes.NewReader(hello), capacity: len(hello) - 1, want: ErrTooLarge, wantRaw: recordHeaderLen},
		{name: "cap known from handshake length", r: bytes.NewReader(bigFirst), capacity: 1024, want: ErrTooLarge, wantRaw: 105},
		{name: "cap tiny", r: bytes.NewReader(hello), capacity: 3, want: ErrTooLarge, wantRaw: 1},
		{name: "cap tiny HTTP", r: bytes.NewReader([]byte("GET /")), capacity: 3, want: ErrNotTLS, wantRaw: 1},
		{name: "cap zero", r: bytes.NewReader(hello), want: ErrTooLarge, wantRaw: 0},
		{name: "exact cap", r: bytes.NewReader(hello), capacity: len(hello), wantRaw: len(hello)},
		{name: "record longer than message", r: bytes.NewReader(append(frame(valid, 100)[:105], frame(append(valid[100:], 20, 0, 0, 0), 5000)...)), capacity: 4096, want: errTrailingHS, wantRaw: 110},
		{name: "alert record", r: bytes.NewReader(spliceRecord(frame(valid, 100), 105, []byte{0x15, 3, 3, 0, 2, 1, 90})), capacity: 4096, want: errInterleaved, wantRaw: 110},
		{name: "malformed body", r: bytes.NewReader(frame(buildMsg(basicExts(ext{extALPN, nil})), 1000)), capacity: 4096, want: errDuplicateExt, wantRaw: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, _, err := Read(tt.r, make([]byte, tt.capacity))
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("Read: %v", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("Read error = %v, want %v", err, tt.want)
			}
			if tt.wantRaw >= 0 && len(raw) != tt.wantRaw {
				t.Fatalf("raw is %d bytes, want %d", len(raw), tt.wantRaw)
			}
			// raw is exactly what was consumed.
			if br, ok := tt.r.(*bytes.Reader); ok && int(br.Size())-br.Len() != len(raw) {
				t.Fatalf("consumed %d bytes, raw is %d", int(br.Size())-br.Len(), len(raw))
			}
		})
	}
}

// TestReadLoopbackPassthrough is the gateway's data path in miniature over
// real loopback sockets: a crypto/tls client with a post-quantum key share
// dials the "gateway", which Reads the ClientHello, dials a crypto/tls
// backend, writes raw and splices. The handshake completes end to end, so
// raw is byte-exact and nothing was consumed beyond it.
func TestReadLoopbackPassthrough(t *testing.T) {
	noLeak(t)
	ca := testpki.NewCA(t)
	backendSNI := make(chan string, 1)
	srvCfg := ca.ServerConfig(t, serverID)
	srvCfg.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		backendSNI <- chi.ServerName
		return nil, nil
	}
	backend := listen(t)
	go func() {
		c, err := backend.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		tc := tls.Server(c, srvCfg)
		buf := make([]byte, 4)
		if _, err := io.ReadFull(tc, buf); err == nil {
			_, _ = tc.Write(buf) // echo
		}
	}()

	gw := listen(t)
	gwHello := make(chan ClientHello, 1)
	gwErr := make(chan error, 1)
	go func() {
		gwErr <- serveOnce(gw, backend.Addr().String(), gwHello)
	}()

	cfg := ca.ClientConfig(t, clientID, istioSNI, serverID)
	cfg.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768}
	d := net.Dialer{Timeout: testTimeout}
	conn, err := d.Dial("tcp", gw.Addr().String())
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake through the gateway: %v (gateway: %v)", err, drain(gwErr))
	}
	if _, err := tc.Write([]byte("ping")); err != nil {
		t.Fatalf("write: %v", err)
	}
	echo := make([]byte, 4)
	if _, err := io.ReadFull(tc, echo); err != nil || string(echo) != "ping" {
		t.Fatalf("echo = %q, %v", echo, err)
	}
	if got := tc.ConnectionState().CurveID; got != tls.X25519MLKEM768 {
		t.Errorf("negotiated %v, want X25519MLKEM768", got)
	}
	tc.Close()
	if err := <-gwErr; err != nil {
		t.Fatalf("gateway: %v", err)
	}
	h := <-gwHello
	if string(h.ServerName) != istioSNI || !h.HasIstioALPN() {
		t.Errorf("gateway parsed SNI %q, Istio ALPN %v", h.ServerName, h.HasIstioALPN())
	}
	if got := <-backendSNI; got != istioSNI {
		t.Errorf("backend saw SNI %q", got)
	}
}

// TestReadLoopbackTrailer: bytes the client wrote after the ClientHello, in
// the same TCP segment, are still in the socket after Read.
func TestReadLoopbackTrailer(t *testing.T) {
	noLeak(t)
	hello := realHellos(t)[0].raw
	ln := listen(t)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write(append(bytes.Clone(hello), "TRAILER"...))
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	raw, h, err := Read(c, make([]byte, 64<<10))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !bytes.Equal(raw, hello) || string(h.ServerName) != istioSNI {
		t.Fatalf("raw %d bytes, SNI %q", len(raw), h.ServerName)
	}
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "TRAILER" {
		t.Fatalf("rest of stream = %q, %v", rest, err)
	}
}

func listen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	tb.Cleanup(func() { ln.Close() })
	// A test that fails before dialing must not leave Accept blocked.
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(testTimeout))
	return ln
}

// serveOnce accepts one connection on ln and passes it through to backend
// the way the proxy does: Read, dial, write raw, splice both ways.
func serveOnce(ln net.Listener, backend string, hellos chan<- ClientHello) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	raw, h, err := Read(c, make([]byte, 64<<10))
	if err != nil {
		return err
	}
	hellos <- h
	up, err := net.DialTimeout("tcp", backend, testTimeout)
	if err != nil {
		return err
	}
	defer up.Close()
	_ = up.SetDeadline(time.Now().Add(testTimeout))
	if _, err := up.Write(raw); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(c, up)
		_ = c.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(up, c)
	_ = up.(*net.TCPConn).CloseWrite()
	<-done
	return nil
}

func drain(ch <-chan error) error {
	select {
	case err := <-ch:
		return err
	case <-time.After(time.Second):
		return errors.New("still running")
	}
}

func TestReadZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	hello := realHellos(t)[2].raw
	buf := make([]byte, 64<<10)
	br := bytes.NewReader(hello)
	if n := testing.AllocsPerRun(100, func() {
		br.Reset(hello)
		if _, _, err := Read(br, buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocs per Read, want 0", n)
	}
}
