package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Forwarder moves bytes between accepted clients and their upstreams. It
// satisfies proxy.Forwarder. Use New; the zero value is not usable.
type Forwarder struct {
	o    Options
	mode Mode
	k    *kernel // nil in Splice mode

	mu     sync.Mutex
	closed bool
	live   map[*pair]struct{}
	wg     sync.WaitGroup // user-path goroutines

	handoffBulk, handoffCap  atomic.Int64
	activeKernel, activeUser atomic.Int64
	userBytes                atomic.Int64 // bytes copied by user space, all pairs
	refedBytes               atomic.Int64 // bytes the kernel fed twice, left out by user space
	pipes                    pipePool
}

// New returns a Forwarder for o. When the kernel path is unavailable (or
// EASTWEST_FORWARDER=splice) and o.Mode is not Splice, it returns a
// working Splice-mode Forwarder together with an error wrapping
// ErrNotSupported: the caller logs it once and goes on.
func New(o Options) (*Forwarder, error) {
	asked := o.Mode
	o, err := o.populate()
	if err != nil {
		return nil, err
	}
	f := &Forwarder{o: o, mode: o.Mode, live: make(map[*pair]struct{})}
	if o.Mode == Splice {
		if asked != Splice {
			return f, fmt.Errorf("%w: forced off by %s=splice", ErrNotSupported, EnvForce)
		}
		return f, nil
	}
	if err := Probe(); err != nil {
		f.mode = Splice
		return f, err
	}
	k, err := newKernel(f)
	if err != nil {
		f.mode = Splice
		return f, fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	f.k = k
	return f, nil
}

// Mode reports the policy in force, Splice when the kernel path is off.
func (f *Forwarder) Mode() Mode { return f.mode }

func (f *Forwarder) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Forward writes peeked to upstream, then forwards both directions until
// both have ended, and closes both conns. sent counts bytes written to the
// client, received bytes read from it including peeked. Cancelling ctx
// closes both conns at once. It blocks its caller; Submit does not.
func (f *Forwarder) Forward(ctx context.Context, client, upstream *net.TCPConn, peeked []byte) (sent, received int64, err error) {
	type result struct {
		sent, received int64
		err            error
	}
	ch := make(chan result, 1)
	p := f.submit(client, upstream, peeked, func(s, r int64, err error) { ch <- result{s, r, err} })
	select {
	case res := <-ch:
		return res.sent, res.received, res.err
	case <-ctx.Done():
		if p != nil {
			p.abort(fmt.Errorf("forward: %w", ctx.Err()))
		}
		res := <-ch
		return res.sent, res.received, res.err
	}
}

// Submit is Forward without the wait: it returns once the pair is handed
// over, and done is called exactly once, from a forwarder goroutine, when
// the pair has ended and both conns are closed. done must not block. A
// pair in the kernel path costs no goroutine. Cancelling ctx resets the
// pair, as for Forward.
func (f *Forwarder) Submit(ctx context.Context, client, upstream *net.TCPConn, peeked []byte, done func(sent, received int64, err error)) {
	var stop atomic.Pointer[func() bool]
	p := f.submit(client, upstream, peeked, func(s, r int64, err error) {
		if st := stop.Swap(nil); st != nil {
			(*st)()
		}
		done(s, r, err)
	})
	if p != nil && ctx.Done() != nil {
		// If the pair ended before this line, the hook stays until ctx
		// ends and then aborts a finished pair, which does nothing.
		st := context.AfterFunc(ctx, func() { p.abort(fmt.Errorf("forward: %w", ctx.Err())) })
		stop.Store(&st)
	}
}

func (f *Forwarder) submit(client, upstream *net.TCPConn, peeked []byte, done func(sent, received int64, err error)) *pair {
	p := &pair{f: f, client: client, upstream: upstream, peeked: int64(len(peeked)), done: done}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		p.closeConns(true)
		done(0, 0, ErrClosed)
		return nil
	}
	f.live[p] = struct{}{}
	f.mu.Unlock()

	if len(peeked) > 0 {
		if _, err := upstream.Write(peeked); err != nil {
			f.activeUser.Add(1)
			p.finish(fmt.Errorf("write peeked bytes: %w", err), true)
			return p
		}
	}
	if f.k != nil {
		err := f.k.add(p)
		if err == nil {
			return p
		}
		if errors.Is(err, errInMap) {
			f.activeUser.Add(1)
			f.startUser(p, true)
			return p
		}
		if !errors.Is(err, errFallback) {
			f.activeUser.Add(1)
			p.finish(err, true)
			return p
		}
	}
	f.activeUser.Add(1)
	f.startUser(p, false)
	return p
}

// Close stops the forwarder: every pair still open is reset and closed,
// its done called with ErrClosed, then the program and maps are released.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	ps := make([]*pair, 0, len(f.live))
	for p := range f.live {
		ps = append(ps, p)
	}
	f.mu.Unlock()
	for _, p := range ps {
		p.abort(ErrClosed)
	}
	f.wg.Wait()
	f.pipes.drain()
	if f.k != nil {
		return f.k.close()
	}
	return nil
}

// Collector returns the forwarder's metrics; kernel counters are read from
// the BPF maps at scrape time.
func (f *Forwarder) Collector() prometheus.Collector { return newCollector(f) }
