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
	// One context.AfterFunc per distinct context, not per pair: a
	// gateway passes one context for all its connections, and a
	// registration per pair cost every idle connection a few hundred
	// bytes of heap.
	watch map[context.Context]*ctxWatch
	wg    sync.WaitGroup // user-path goroutines

	handoffBulk, handoffCap  atomic.Int64
	activeKernel, activeUser atomic.Int64
	userBytes                atomic.Int64 // bytes copied by user space, all pairs
	refedBytes               atomic.Int64 // bytes the kernel fed twice, left out by user space
	lostWakeups              atomic.Int64 // in-map reads that found bytes only after their wait timed out
	pipes                    pipePool
	pk                       *parker // nil: user-path directions wait on goroutines
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
	f := makeForwarder(o, o.Mode)
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

func makeForwarder(o Options, mode Mode) *Forwarder {
	f := &Forwarder{o: o, mode: mode, live: make(map[*pair]struct{}), watch: make(map[context.Context]*ctxWatch)}
	pk, err := newParker(f)
	if err != nil {
		// Directions then wait on their goroutines: more memory per
		// idle pair, same bytes.
		o.Logger.Warn("user-path parker unavailable", "err", err)
	}
	f.pk = pk
	return f
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
	p := f.submit(context.Background(), client, upstream, peeked, func(s, r int64, err error) { ch <- result{s, r, err} })
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
	f.submit(ctx, client, upstream, peeked, done)
}

// ctxWatch counts the live pairs submitted with one context.
type ctxWatch struct {
	n    int
	stop func() bool
}

// watchCtx registers p under its context. Called with f.mu held.
func (f *Forwarder) watchCtx(p *pair) {
	ctx := p.ctx
	w := f.watch[ctx]
	if w == nil {
		w = &ctxWatch{}
		f.watch[ctx] = w
		// AfterFunc runs abortCtx on its own goroutine, so holding f.mu
		// here is safe even when ctx is already done.
		w.stop = context.AfterFunc(ctx, func() { f.abortCtx(ctx) })
	}
	w.n++
}

// unwatchCtx drops p's registration. Called with f.mu held.
func (f *Forwarder) unwatchCtx(p *pair) {
	if p.ctx == nil {
		return
	}
	if w := f.watch[p.ctx]; w != nil {
		if w.n--; w.n == 0 {
			w.stop()
			delete(f.watch, p.ctx)
		}
	}
}

// abortCtx resets every live pair submitted with ctx, which has ended.
func (f *Forwarder) abortCtx(ctx context.Context) {
	f.mu.Lock()
	var ps []*pair
	for p := range f.live {
		if p.ctx == ctx {
			ps = append(ps, p)
		}
	}
	f.mu.Unlock()
	for _, p := range ps {
		p.abort(fmt.Errorf("forward: %w", ctx.Err()))
	}
}

// submit starts p. A ctx that can end resets the pair when it does; one
// that never ends (Forward passes context.Background) does not.
func (f *Forwarder) submit(ctx context.Context, client, upstream *net.TCPConn, peeked []byte, done func(sent, received int64, err error)) *pair {
	p := &pair{f: f, client: client, upstream: upstream, peeked: int64(len(peeked)), done: done}
	if ctx.Done() != nil {
		p.ctx = ctx
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		p.closeConns(true)
		done(0, 0, ErrClosed)
		return nil
	}
	f.live[p] = struct{}{}
	if p.ctx != nil {
		f.watchCtx(p)
	}
	f.mu.Unlock()
	if p.ctx != nil {
		// A context that ended before the registration: abortCtx ran
		// without this pair.
		defer func() {
			if err := p.ctx.Err(); err != nil {
				p.abort(fmt.Errorf("forward: %w", err))
			}
		}()
	}

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
	if f.pk != nil {
		// Before the aborts: no direction is resumed once Close waits.
		f.pk.stop()
	}
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
