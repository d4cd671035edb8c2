// Package ebpf (imported as ewebpf) forwards the bytes of a proxied TCP
// connection between the accepted client and its upstream, in the kernel
// where the kernel wins and in user space where it does not. It satisfies
// proxy.Forwarder without importing proxy.
//
// Kernel path: an SK_SKB stream-verdict program (bpf/forward.c, built by a
// pinned `go tool bpf2go`, output committed) sits on a SOCKHASH keyed by
// socket cookie and redirects each socket's bytes to its peer's egress.
// One goroutine on a private epoll set watches every pair: no goroutine,
// pipe or buffer per connection. It propagates FIN only once the peer's
// send queue has taken every redirected byte (bytes_acked + SIOCOUTQ),
// resets the peer on RST or error, and releases map entries and fds when a
// pair ends. Bytes already queued when Forward is called are moved by user
// space before insertion (read until EAGAIN): the verdict is fed whole skbs
// (tcp_read_skb) and would forward again the part of an skb the caller
// already read, such as the ClientHello sent in one write with the payload.
// Bytes that arrive between that drain and insertion are pushed through the
// verdict by setting SO_RCVLOWAT (tcp_data_ready). The upstream enters the
// map first with its gate closed, opened once the client is in: a redirect
// to a peer not in the map is dropped by the kernel.
//
// Hand-off: a pair whose redirected-but-untaken bytes would pass
// Options.QueueCap (enforced by the verdict itself), or, in Auto, whose
// rate stays above Options.BulkRate, moves to user space one way: the
// verdict then returns SK_PASS, so new bytes queue on the source socket in
// order and TCP flow control bounds memory; user space copies them with
// read/write once every redirected byte has reached the peer. The sockets
// stay in the SOCKHASH until closed: removing a socket whose psock holds
// passed bytes loses them and wedges the socket on Linux 6.18 (measured),
// and splice(2) must not read a socket in a sockmap.
//
// Every byte once: under load the kernel can feed the verdict an skb
// whose head it already fed (measured on Linux 6.18 after a hand-off: a
// passed skb of one MSS came again with the next segments glued on, and
// 65,483 bytes reached the upstream twice). The verdict tracks the TCP
// sequence it has taken (tcp_skb_cb.seq through bpf_cast_to_kern_ctx):
// an skb with nothing new is dropped; one with an old head is passed whole
// with a skip entry (stream offset, length) that user space applies while
// copying. A sequence gap, or a skip the map cannot hold, resets the pair
// rather than forward a wrong stream.
//
// Splice path (Mode Splice, the kernel path unavailable, or a pair that
// could not enter the map): a direction with bytes to move has a goroutine
// that copies small reads through pooled buffers and large ones with
// splice(2) through pooled pipes, then waits on Go's netpoller holding no
// buffer. A direction quiet for 250 ms gives up its goroutine: its socket
// waits, one-shot, in a second private epoll set (the parker) that starts
// a goroutine when it turns readable. So an idle pair costs its sockets
// and its state on either path. Half-close is kept both ways. A pair
// handed off from the kernel path stays in the map (read/write only, no
// splice; 256 KiB reads while they fill) and parks the same way; since a
// socket in the map gets its readiness from the psock, its waits are
// bounded (50 ms, then 200 ms, then every 5 s once parked) and end with a
// kick of the verdict; bytes found then that TCP received 10 ms or more
// earlier count as a lost wakeup (none in 700,000 handed-off TLS pairs
// under stress; a bench run once saw a stream stall).
//
// The package must not decide routing, log per connection above debug, or
// hold global state besides the cached Probe result; metrics come from
// Collector, read at scrape time.
//
// Example:
//
//	fwd, err := ewebpf.New(ewebpf.Options{Mode: ewebpf.Auto, Logger: log})
//	if errors.Is(err, ewebpf.ErrNotSupported) {
//		log.Warn("sockmap forwarding off, using splice", "err", err)
//	}
//	defer fwd.Close()
//	reg.MustRegister(fwd.Collector())
//	fwd.Submit(ctx, client, upstream, hello, func(sent, received int64, err error) { ... })
package ebpf
