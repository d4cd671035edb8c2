// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// Stream verdict for eastwest's kernel path. Each socket of a forwarded
// pair sits in sock_hash keyed by its socket cookie; pairs maps a cookie to
// its peer's cookie and to the user-space gate; stats counts what the
// verdict did per source cookie.
//
// Gate: the verdict redirects only while the pair is in the kernel path.
// Once user space sets stop, or the bytes redirected but not yet taken by
// the peer's send queue (redirected - taken) would pass cap, it returns
// SK_PASS and counts the bytes in passed; passed != 0 keeps it passing, so
// the switch is one-way and no byte is reordered: passed bytes queue on the
// source socket, in order, for user space to read, and the TCP window
// closes when user space does not read them.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

// Written by user space only.
struct pair {
	__u64 peer;     // cookie of the socket that receives our bytes
	__u64 taken;    // bytes of ours the peer's send queue took (user space's last look)
	__u64 cap;      // max redirected - taken; 0: no cap
	__u32 stop;     // non-zero: pass every byte to user space
	__u32 _pad;
};

// Written by this program only (user space creates and deletes entries).
struct stat {
	__u64 redirected; // bytes redirected to the peer's egress
	__u64 passed;     // bytes passed to user space
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} sock_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct pair);
} pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct stat);
} stats SEC(".maps");

SEC("sk_skb/stream_verdict")
int stream_verdict(struct __sk_buff *skb)
{
	__u64 cookie;
	struct pair *p;
	struct stat *s;
	__u32 len = skb->len;

	// The zero-length skb that carries a FIN: redirecting it puts EPIPE
	// on the peer, passing it puts EPIPE on the source (SOCKMAP.md
	// pitfall 3). User space propagates the FIN itself.
	if (len == 0)
		return SK_DROP;

	cookie = bpf_get_socket_cookie(skb);
	p = bpf_map_lookup_elem(&pairs, &cookie);
	s = bpf_map_lookup_elem(&stats, &cookie);
	// No entry: never redirect into the void (pitfall 5); keep the
	// bytes for user space instead.
	if (!p || !s)
		return SK_PASS;

	if (p->stop || s->passed != 0 ||
	    (p->cap != 0 && s->redirected + len - p->taken > p->cap)) {
		__sync_fetch_and_add(&s->passed, len);
		return SK_PASS;
	}
	__sync_fetch_and_add(&s->redirected, len);
	return bpf_sk_redirect_hash(skb, &sock_hash, &p->peer, 0);
}
