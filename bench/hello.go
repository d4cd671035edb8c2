package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// MaxHelloBytes caps the ClientHello the sink and ParseClientHello accept,
// as the gateway does (64 KiB).
const MaxHelloBytes = 64 << 10

// ErrNotHello reports bytes that are not a TLS handshake record carrying a
// ClientHello.
var ErrNotHello = errors.New("not a TLS ClientHello")

// ParseClientHello returns the length of the TLS records at the start of b
// that carry one complete ClientHello handshake message, possibly spread
// over several records. It returns io.ErrUnexpectedEOF when b ends before
// the hello does, and an error wrapping ErrNotHello when the bytes cannot
// be one. It only frames records: the hello's body is the proxy's business.
func ParseClientHello(b []byte) (int, error) {
	var hs []byte // reassembled handshake bytes
	off := 0
	for {
		if len(b)-off < 5 {
			return 0, io.ErrUnexpectedEOF
		}
		h := b[off : off+5]
		if h[0] != 22 || h[1] != 3 {
			return 0, fmt.Errorf("record type %d version %d.%d: %w", h[0], h[1], h[2], ErrNotHello)
		}
		n := int(h[3])<<8 | int(h[4])
		if n == 0 || n > 1<<14 {
			return 0, fmt.Errorf("record length %d: %w", n, ErrNotHello)
		}
		if off+5+n > MaxHelloBytes {
			return 0, fmt.Errorf("hello longer than %d bytes: %w", MaxHelloBytes, ErrNotHello)
		}
		if len(b)-off-5 < n {
			return 0, io.ErrUnexpectedEOF
		}
		hs = append(hs, b[off+5:off+5+n]...)
		off += 5 + n
		if hs[0] != 1 {
			return 0, fmt.Errorf("handshake type %d: %w", hs[0], ErrNotHello)
		}
		if len(hs) < 4 {
			continue
		}
		want := 4 + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3]))
		switch {
		case len(hs) == want:
			return off, nil
		case len(hs) > want:
			return 0, fmt.Errorf("record carries %d bytes after the hello: %w", len(hs)-want, ErrNotHello)
		}
	}
}

// ReadClientHello reads exactly the records of one ClientHello from r (no
// byte past it) and returns them.
func ReadClientHello(r io.Reader) ([]byte, error) {
	buf := make([]byte, 0, 2048)
	need := 5
	for {
		if cap(buf) < need {
			buf = append(make([]byte, 0, need), buf...)
		}
		m, err := io.ReadFull(r, buf[len(buf):need])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, fmt.Errorf("read ClientHello: %w", err)
		}
		n, err := ParseClientHello(buf)
		if err == nil {
			return buf[:n], nil
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, err
		}
		need = nextNeed(buf)
	}
}

// nextNeed is how many bytes of buf must be present before the next parse
// can progress: the end of the current record, or the next header.
func nextNeed(buf []byte) int {
	off := 0
	for len(buf)-off >= 5 {
		end := off + 5 + (int(buf[off+3])<<8 | int(buf[off+4]))
		if end > len(buf) {
			return end
		}
		off = end
	}
	return off + 5
}

// CaptureClientHello runs a crypto/tls client over a net.Pipe and returns
// the first flight it writes: a real ClientHello (with Go's key shares, SNI
// and ALPN from cfg) that no server will ever answer.
func CaptureClientHello(ctx context.Context, cfg *tls.Config) ([]byte, error) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(c, cfg).HandshakeContext(ctx) // fails once s closes
	}()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	hello, err := ReadClientHello(s)
	s.Close()
	c.Close()
	<-done
	return hello, err
}
