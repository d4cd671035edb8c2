//go:build !linux

package ebpf

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Forwarder moves bytes between accepted clients and their upstreams.
// Outside Linux it has only the user-space path (io.Copy both ways).
type Forwarder struct {
	o  Options
	wg sync.WaitGroup
}

// Probe reports that the kernel path exists only on Linux.
func Probe() error { return fmt.Errorf("%w: sockmap needs Linux", ErrNotSupported) }

// New returns a user-space Forwarder and an error wrapping
// ErrNotSupported unless o.Mode is Splice.
func New(o Options) (*Forwarder, error) {
	o, err := o.populate()
	if err != nil {
		return nil, err
	}
	f := &Forwarder{o: o}
	if o.Mode != Splice {
		return f, Probe()
	}
	return f, nil
}

// Mode is always Splice here.
func (f *Forwarder) Mode() Mode { return Splice }

// Forward copies both directions until both end, then closes both conns.
func (f *Forwarder) Forward(ctx context.Context, client, upstream *net.TCPConn, peeked []byte) (sent, received int64, err error) {
	stop := context.AfterFunc(ctx, func() { client.Close(); upstream.Close() })
	defer stop()
	defer client.Close()
	defer upstream.Close()
	if _, err := upstream.Write(peeked); err != nil {
		return 0, 0, fmt.Errorf("write peeked bytes: %w", err)
	}
	var up int64
	var upErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		up, upErr = io.Copy(upstream, client)
		_ = upstream.CloseWrite()
	}()
	sent, err = io.Copy(client, upstream)
	_ = client.CloseWrite()
	<-done
	if err == nil {
		err = upErr
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("forward: %w", ctx.Err())
	}
	return sent, up + int64(len(peeked)), err
}

// Submit runs Forward on a goroutine and calls done with its result.
func (f *Forwarder) Submit(ctx context.Context, client, upstream *net.TCPConn, peeked []byte, done func(sent, received int64, err error)) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		done(f.Forward(ctx, client, upstream, peeked))
	}()
}

// Close waits for submitted pairs.
func (f *Forwarder) Close() error { f.wg.Wait(); return nil }

// Collector returns an empty collector.
func (f *Forwarder) Collector() prometheus.Collector { return prometheus.NewRegistry() }
