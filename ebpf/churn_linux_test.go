package ebpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestShortPairsUnderCPULoad is the gateway's reload-load pattern at the
// forwarder's level, with the scheduler starved: many short pairs in
// flight, each client writing a ClientHello-sized head and a payload in two
// writes and half-closing at once, the gateway reading the head with exact
// lengths, replaying it to a plain echo upstream and calling Forward. Spinning
// goroutines delay every forwarder goroutine, so pairs meet every insertion
// race: payload and FIN queued before the drain, arriving between drain and
// insertion, or after; upstream echo arriving while its gate is closed. No
// pair may be reset, fail, or return anything but head+payload.
func TestShortPairsUnderCPULoad(t *testing.T) {
	const (
		pairs    = 400
		inFlight = 48
		headLen  = 552
	)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newForwarder(t, Options{Mode: m.mode})
			echo := echoUpstream(t)
			front := listen(t)
			t.Cleanup(func() { front.Close() })

			var stopSpin atomic.Bool
			var spin sync.WaitGroup
			for range runtime.GOMAXPROCS(0) + 1 {
				spin.Add(1)
				go func() {
					defer spin.Done()
					for x := 0; !stopSpin.Load(); x++ {
						_ = x * x
					}
				}()
			}
			t.Cleanup(func() { stopSpin.Store(true); spin.Wait() })

			var gwErrs sync.Map // gateway-side errors by client address
			var gw sync.WaitGroup
			t.Cleanup(gw.Wait)
			gw.Add(1)
			go func() {
				defer gw.Done()
				for {
					c, err := front.AcceptTCP()
					if err != nil {
						return
					}
					gw.Add(1)
					go func() {
						defer gw.Done()
						if err := gatewayOnce(f, c, echo, headLen); err != nil {
							gwErrs.Store(c.RemoteAddr().String(), err)
						}
					}()
				}
			}()

			head := randomBytes(t, headLen)
			errs := make(chan error, pairs)
			sem := make(chan struct{}, inFlight)
			var wg sync.WaitGroup
			for i := range pairs {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					// Mostly the 4 KiB of the load test; some past the
					// drain's bound, some of one byte.
					n := 4096
					switch i % 10 {
					case 3:
						n = 1
					case 7:
						n = drainMax + 40<<10 + i
					}
					payload := bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a}, n/3+1)[:n]
					// Spread the payload and the FIN around the moment of
					// insertion: before the drain, between drain and
					// insertion, or once the pair is in the map.
					gaps := [2]time.Duration{time.Duration(i%4) * time.Millisecond, time.Duration(i/4%3) * time.Millisecond}
					if err := clientOnce(front.Addr().(*net.TCPAddr), head, payload, gaps); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			var n int
			var first error
			for err := range errs {
				if n == 0 {
					first = err
				}
				n++
			}
			front.Close()
			gw.Wait()
			var gwFirst error
			gwErrs.Range(func(k, v any) bool {
				gwFirst = fmt.Errorf("%v: %w", k, v.(error))
				return false
			})
			if k := f.k; k != nil {
				// Which paths the pairs took: how much this run covered.
				t.Logf("kernel path redirected %d client and %d upstream bytes; user space copied %d; hand-offs: %d queue-cap/gate, %d bulk",
					k.doneRed[0].Load(), k.doneRed[1].Load(), f.userBytes.Load(), f.handoffCap.Load(), f.handoffBulk.Load())
			}
			if n != 0 {
				t.Fatalf("%d of %d pairs failed; first: %v; a gateway-side error: %v", n, pairs, first, gwFirst)
			}
			if gwFirst != nil {
				t.Fatalf("every client got its echo but the forwarder reported: %v", gwFirst)
			}
		})
	}
}

// gatewayOnce plays the proxy for one accepted client: exact-length head
// read, upstream dial, replay, Forward.
func gatewayOnce(f *Forwarder, c *net.TCPConn, echo *net.TCPAddr, headLen int) error {
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	head := make([]byte, headLen)
	if _, err := io.ReadFull(c, head); err != nil {
		c.Close()
		return fmt.Errorf("read head: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	u, err := net.DialTCP("tcp", nil, echo)
	if err != nil {
		c.Close()
		return fmt.Errorf("dial upstream: %w", err)
	}
	if _, err := u.Write(head); err != nil {
		c.Close()
		u.Close()
		return fmt.Errorf("replay head: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, _, err := f.Forward(ctx, c, u, nil); err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	return nil
}

// clientOnce writes head and payload in two writes, half-closes, and checks
// the echo byte for byte. gaps are the pauses before the payload and
// before the FIN.
func clientOnce(addr *net.TCPAddr, head, payload []byte, gaps [2]time.Duration) error {
	c, err := net.DialTCP("tcp", nil, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(head)
		if err == nil {
			time.Sleep(gaps[0])
			_, err = c.Write(payload)
		}
		if err == nil {
			time.Sleep(gaps[1])
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, rerr := io.ReadAll(c)
	if err := <-werr; err != nil {
		return fmt.Errorf("%v: write: %w", c.LocalAddr(), err)
	}
	if rerr != nil {
		return fmt.Errorf("%v: read after %d bytes: %w", c.LocalAddr(), len(got), rerr)
	}
	want := append(append([]byte(nil), head...), payload...)
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%v: %w: got %d bytes, want %d", c.LocalAddr(), errEchoDiffers, len(got), len(want))
	}
	return nil
}

var errEchoDiffers = errors.New("echo differs from what was sent")
