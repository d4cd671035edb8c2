package ebpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

var probe = sync.OnceValue(selfTest)

// Probe reports whether the kernel path works here: it loads and attaches
// the verdict program and forwards over loopback through it, checking the
// behaviours SOCKMAP.md lists (bytes queued before insertion, FIN with
// queued data, the zero-length FIN skb). The result is cached. A failure
// wraps ErrNotSupported and says, in one line, what failed.
func Probe() error { return probe() }

func selfTest() error {
	o, err := Options{Mode: Sockmap, BulkRate: -1}.populate()
	if err != nil {
		return err
	}
	o.Mode = Sockmap
	f := makeForwarder(o, Sockmap)
	k, err := newKernel(f)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	f.k = k
	defer f.Close()
	if err := selfTestPair(f); err != nil {
		return fmt.Errorf("%w: sockmap self-test: %w", ErrNotSupported, err)
	}
	return nil
}

func selfTestPair(f *Forwarder) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	front, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer front.Close()
	back, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer back.Close()

	up := make([]byte, 256<<10)
	down := make([]byte, 64<<10)
	for i := range up {
		up[i] = byte(i * 7)
	}
	for i := range down {
		down[i] = byte(i * 13)
	}
	client, err := net.DialTCP("tcp", nil, front.Addr().(*net.TCPAddr))
	if err != nil {
		return err
	}
	defer client.Close()
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	// Bytes queued on the gateway socket before insertion.
	if _, err := client.Write(up[:100]); err != nil {
		return err
	}
	gw, err := front.AcceptTCP()
	if err != nil {
		return err
	}
	upstream, err := net.DialTCP("tcp", nil, back.Addr().(*net.TCPAddr))
	if err != nil {
		gw.Close()
		return err
	}
	server, err := back.AcceptTCP()
	if err != nil {
		gw.Close()
		upstream.Close()
		return err
	}
	defer server.Close()
	_ = server.SetDeadline(time.Now().Add(5 * time.Second))
	time.Sleep(10 * time.Millisecond) // let the early bytes land before insertion
	type res struct{ err error }
	fwd := make(chan res, 1)
	go func() {
		_, _, err := f.Forward(ctx, gw, upstream, nil)
		fwd <- res{err}
	}()
	srvErr := make(chan error, 1)
	go func() {
		got, err := io.ReadAll(server)
		if err == nil && !bytes.Equal(got, up) {
			err = fmt.Errorf("upstream got %d bytes, want %d (or different bytes)", len(got), len(up))
		}
		if err == nil {
			_, err = server.Write(down)
		}
		if err == nil {
			err = server.CloseWrite()
		}
		srvErr <- err
	}()
	if _, err := client.Write(up[100:]); err != nil {
		return fmt.Errorf("client write: %w", err)
	}
	// FIN right behind queued data, then a download on a half-closed pair.
	if err := client.CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(client)
	if err != nil {
		return fmt.Errorf("client read: %w", err)
	}
	if !bytes.Equal(got, down) {
		return fmt.Errorf("client got %d bytes, want %d", len(got), len(down))
	}
	if err := <-srvErr; err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	r := <-fwd
	if r.err != nil && !errors.Is(r.err, io.EOF) {
		return fmt.Errorf("forward: %w", r.err)
	}
	return nil
}
