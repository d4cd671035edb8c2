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
	__u64 passed;     // bytes passed to user space, skipped ones included
	__u64 dup;        // bytes the kernel fed the verdict a second time
	__u64 skips;      // skip entries written for this socket
	__u64 lost;       // skips that did not fit, or sequence gaps: broken
	__u32 next_seq;   // TCP sequence after the last byte taken
	__u32 seq_valid;  // next_seq is set
};

// A span of the passed stream user space must not forward: bytes the
// kernel fed the verdict again, glued in front of new ones.
struct skip_key {
	__u64 cookie;
	__u64 n; // 0, 1, ... per socket, in stream order
};

struct skip {
	__u64 pos; // offset in the socket's passed bytes
	__u64 len;
};

// The kernel's sk_buff, for the TCP control block in cb (CO-RE).
struct sk_buff {
	char cb[48];
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct skip_key);
	__type(value, struct skip);
} skips SEC(".maps");

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

	// Every byte once. Under load the kernel can feed the verdict an skb
	// whose head it fed before (measured on 6.18 after a hand-off: a
	// passed skb of one MSS came again with the next segments glued on,
	// and user space forwarded those 65,483 bytes twice). So the verdict
	// tracks the TCP sequence it has taken; seq is the first field of
	// struct tcp_skb_cb.
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	__u32 seq = *(__u32 *)&kskb->cb[0];
	__u32 end = seq + len;
	__u32 old = 0;
	if (s->seq_valid) {
		if ((__s32)(end - s->next_seq) <= 0) {
			// Nothing new: every byte was taken before.
			__sync_fetch_and_add(&s->dup, len);
			return SK_DROP;
		}
		if ((__s32)(seq - s->next_seq) < 0)
			old = s->next_seq - seq;
		else if (seq != s->next_seq)
			__sync_fetch_and_add(&s->lost, 1);
	}
	s->next_seq = end;
	s->seq_valid = 1;

	if (old || p->stop || s->passed != 0 ||
	    (p->cap != 0 && s->redirected + len - p->taken > p->cap)) {
		if (old) {
			// An sk_skb verdict cannot cut an skb's head: pass it
			// whole and have user space skip the old bytes. This
			// hands the pair to user space if it was in the kernel.
			struct skip_key k = {.cookie = cookie, .n = s->skips};
			struct skip v = {.pos = s->passed, .len = old};
			if (bpf_map_update_elem(&skips, &k, &v, BPF_NOEXIST) == 0) {
				__sync_fetch_and_add(&s->skips, 1);
				__sync_fetch_and_add(&s->dup, old);
			} else {
				__sync_fetch_and_add(&s->lost, 1);
			}
		}
		__sync_fetch_and_add(&s->passed, len);
		return SK_PASS;
	}
	__sync_fetch_and_add(&s->redirected, len);
	return bpf_sk_redirect_hash(skb, &sock_hash, &p->peer, 0);
}
