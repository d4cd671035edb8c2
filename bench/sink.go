package bench

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Commands the load tool sends right after its raw-mode ClientHello.
const (
	// CmdDiscard: the sink counts bytes until the client's end of stream,
	// then writes the count as 8 bytes big-endian and closes.
	CmdDiscard byte = 'D'
	// CmdEcho: the sink writes back every byte until the client's end of
	// stream, then closes.
	CmdEcho byte = 'E'
)

// handshakeTimeout bounds the ClientHello, command byte and TLS handshake
// at the sink.
const handshakeTimeout = 10 * time.Second

// Sink is the backend every target forwards to: a raw listener that reads
// and discards the ClientHello then obeys one command byte, and a TLS 1.3
// listener that terminates real TLS and echoes.
type Sink struct {
	raw, tls net.Listener
	tlsCfg   *tls.Config
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
	// Errs receives unexpected per-connection errors (never blocks; extra
	// errors are dropped). Connections reset by a client are not errors.
	Errs chan error
}

// NewSink listens on rawAddr and tlsAddr (host:port, port 0 picks one) and
// serves until Close. tlsCfg must hold a server certificate.
func NewSink(rawAddr, tlsAddr string, tlsCfg *tls.Config) (*Sink, error) {
	raw, err := net.Listen("tcp", rawAddr)
	if err != nil {
		return nil, fmt.Errorf("sink raw listener: %w", err)
	}
	tl, err := net.Listen("tcp", tlsAddr)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("sink tls listener: %w", err)
	}
	s := &Sink{raw: raw, tls: tl, tlsCfg: tlsCfg, conns: map[net.Conn]struct{}{}, Errs: make(chan error, 16)}
	s.wg.Add(2)
	go s.serve(raw, s.handleRaw)
	go s.serve(tl, s.handleTLS)
	return s, nil
}

// RawAddr is the raw listener's address.
func (s *Sink) RawAddr() string { return s.raw.Addr().String() }

// TLSAddr is the TLS listener's address.
func (s *Sink) TLSAddr() string { return s.tls.Addr().String() }

// Close stops both listeners and closes every connection.
func (s *Sink) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.raw.Close()
	s.tls.Close()
	s.wg.Wait()
	return nil
}

func (s *Sink) serve(ln net.Listener, handle func(net.Conn) error) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: report, back off, keep serving.
			s.report(fmt.Errorf("sink accept: %w", err))
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			if err := handle(c); err != nil && !benign(err) {
				s.report(err)
			}
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *Sink) report(err error) {
	select {
	case s.Errs <- err:
	default:
	}
}

// benign errors are a client going away abruptly, or the sink closing.
func benign(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || isReset(err)
}

var discardPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func (s *Sink) handleRaw(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := ReadClientHello(c); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	var cmd [1]byte
	if _, err := io.ReadFull(c, cmd[:]); err != nil {
		return fmt.Errorf("sink: read command: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	switch cmd[0] {
	case CmdDiscard:
		bp := discardPool.Get().(*[]byte)
		defer discardPool.Put(bp)
		var n uint64
		for {
			m, err := c.Read(*bp)
			n += uint64(m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("sink discard: %w", err)
			}
		}
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], n)
		if _, err := c.Write(out[:]); err != nil {
			return fmt.Errorf("sink discard: report count: %w", err)
		}
		return nil
	case CmdEcho:
		return echo(c)
	default:
		return fmt.Errorf("sink: unknown command %q", cmd[0])
	}
}

func (s *Sink) handleTLS(c net.Conn) error {
	tc := tls.Server(c, s.tlsCfg)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("sink tls handshake: %w", err)
	}
	return echo(tc)
}

// echo writes back what it reads until end of stream. The buffer is small
// on purpose: idle connections hold one each.
func echo(c net.Conn) error {
	var buf [2048]byte
	for {
		n, err := c.Read(buf[:])
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return fmt.Errorf("sink echo: %w", werr)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sink echo: %w", err)
		}
	}
}
