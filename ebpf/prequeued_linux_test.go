package ebpf

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoUpstream is a plain TCP echo on loopback that closes its write side
// after the client's FIN, like the proxy's metrics test backend.
func echoUpstream(t testing.TB) *net.TCPAddr {
	t.Helper()
	ln := listen(t)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				_, _ = io.Copy(c, c)
				_ = c.CloseWrite()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// The proxy's pattern: the client sends a ClientHello-sized head and a
// payload in one write and shuts its write side at once; the gateway reads
// exactly the head, writes it to an echo upstream from user space and only
// then calls Forward. At insertion the client socket holds the payload and
// the FIN, the upstream socket may hold the echoed head. What comes back
// must be head+payload, byte for byte, in every mode.
func TestPreQueuedDataAndFINEcho(t *testing.T) {
	const (
		runs    = 40
		headLen = 552 // a captured ClientHello's size
	)
	for _, m := range modes {
		for _, finLater := range []bool{false, true} {
			name := m.name + "/fin-queued"
			if finLater {
				// The FIN comes once the pair is in the map, so the pair
				// stays in the kernel path with the payload queued.
				name = m.name + "/fin-after-insert"
			}
			t.Run(name, func(t *testing.T) {
				f := newForwarder(t, Options{Mode: m.mode})
				echo := echoUpstream(t)
				front := listen(t)
				t.Cleanup(func() { front.Close() })
				for run := range runs {
					head := randomBytes(t, headLen)
					payload := randomBytes(t, 1000+(run%5)*1000+run)
					echoedOnce(t, f, front, echo, head, payload, finLater, run)
				}
			})
		}
	}
}

// echoedOnce runs one pair of TestPreQueuedDataAndFINEcho.
func echoedOnce(t *testing.T, f *Forwarder, front *net.TCPListener, echo *net.TCPAddr, head, payload []byte, finLater bool, run int) {
	t.Helper()
	type gwResult struct {
		result
		setupErr error
	}
	done := make(chan gwResult, 1)
	forwarding := make(chan struct{})
	go func() {
		c, err := front.AcceptTCP()
		if err != nil {
			done <- gwResult{setupErr: err}
			return
		}
		// Exact lengths, as sni.Read does: the rest stays queued.
		buf := make([]byte, len(head))
		if _, err := io.ReadFull(c, buf); err != nil {
			c.Close()
			done <- gwResult{setupErr: err}
			return
		}
		u, err := net.DialTCP("tcp", nil, echo)
		if err != nil {
			c.Close()
			done <- gwResult{setupErr: err}
			return
		}
		if _, err := u.Write(buf); err != nil {
			c.Close()
			u.Close()
			done <- gwResult{setupErr: err}
			return
		}
		close(forwarding)
		s, r, err := f.Forward(context.Background(), c, u, nil)
		done <- gwResult{result: result{s, r, err}}
	}()
	c, err := net.DialTCP("tcp", nil, front.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline(t, c)
	whole := append(append([]byte(nil), head...), payload...)
	if _, err := c.Write(whole); err != nil {
		t.Fatal(err)
	}
	if finLater {
		select {
		case <-forwarding:
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: gateway never reached Forward", run)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("run %d: client read after %d bytes: %v", run, len(got), err)
	}
	if len(got) != len(whole) {
		t.Fatalf("run %d: echo returned %d bytes, want %d", run, len(got), len(whole))
	}
	if gs, ws := sha256.Sum256(got), sha256.Sum256(whole); !bytes.Equal(gs[:], ws[:]) {
		t.Fatalf("run %d: echoed stream differs from what was sent", run)
	}
	var r gwResult
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("run %d: pair never ended", run)
	}
	if r.setupErr != nil {
		t.Fatalf("run %d: gateway: %v", run, r.setupErr)
	}
	if r.err != nil {
		t.Fatalf("run %d: forward: %v", run, r.err)
	}
	if r.received != int64(len(payload)) || r.sent != int64(len(whole)) {
		t.Fatalf("run %d: counted sent %d received %d, want %d and %d", run, r.sent, r.received, len(whole), len(payload))
	}
}
