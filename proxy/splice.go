package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// SpliceForwarder forwards with io.Copy between the bare *net.TCPConn pair,
// which the standard library turns into splice(2) on Linux: bytes move
// kernel to kernel and no user-space buffer is allocated per chunk. It keeps
// half-close both ways: when one side ends its stream, the other side's write
// half is shut and the opposite direction carries on.
type SpliceForwarder struct{}

var _ Forwarder = SpliceForwarder{}

// Forward implements Forwarder.
func (SpliceForwarder) Forward(ctx context.Context, client, upstream *net.TCPConn, peeked []byte) (sent, received int64, err error) {
	if len(peeked) > 0 {
		n, err := upstream.Write(peeked)
		received += int64(n)
		if err != nil {
			abort(client, upstream)
			return 0, received, err
		}
	}
	var once sync.Once
	kill := func() { once.Do(func() { abort(client, upstream) }) }
	stop := context.AfterFunc(ctx, kill)
	defer stop()

	var wg sync.WaitGroup
	var upErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Wrapping either conn would silently lose splice(2): keep them bare.
		n, err := io.Copy(upstream, client)
		received += n
		upErr = endDirection(upstream, err, kill)
	}()
	n, cpErr := io.Copy(client, upstream)
	sent = n
	downErr := endDirection(client, cpErr, kill)
	wg.Wait()
	client.Close()
	upstream.Close()
	if ctx.Err() != nil {
		return sent, received, ctx.Err()
	}
	return sent, received, errors.Join(upErr, downErr)
}

// endDirection closes dst's write half after a clean end of stream, or
// tears both conns down on an error so the other direction does not wait
// forever on a peer that is gone.
func endDirection(dst *net.TCPConn, err error, kill func()) error {
	if err == nil {
		if cerr := dst.CloseWrite(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && !errors.Is(cerr, syscall.ENOTCONN) {
			kill()
			return cerr
		}
		return nil
	}
	kill()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// abort resets both conns: a peer that reset or vanished is passed on as a
// reset, not as a clean end of stream that would make the other side believe
// it had every byte.
func abort(a, b *net.TCPConn) {
	_ = a.SetLinger(0)
	_ = b.SetLinger(0)
	a.Close()
	b.Close()
}
