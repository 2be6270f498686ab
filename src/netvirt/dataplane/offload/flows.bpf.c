// SPDX-License-Identifier: GPL-2.0
// netvirt exact-flow offload: the datapath's exact cache entries, served in the kernel.
//
// Two programs share one hash map of flows (see offload/__init__.py for the design):
//  - `punt` is a socket filter on the datapath's AF_PACKET port socket. Packet
//    sockets see a frame before TC ingress does, so the filter decides who serves
//    it: a fresh entry -> 0 (the socket does not get it; TC forwards it), an entry
//    past its deadline -> deleted, and the frame goes to the datapath, which runs
//    the slow path for it and installs the entry again (revalidation), no entry ->
//    the datapath.
//  - `forward` is the TC ingress program of the same device: an entry -> the
//    entry's byte patches and IPv4 header checksum adjustment, then a redirect to
//    the output device. No entry -> TC_ACT_OK (the host stack; the datapath has
//    its copy).
// The key is exactly the exact cache's: the frame's covered header bytes for its
// layout (fastpath.Layout), after the same sanity checks (fastpath.frame_key).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define KEY_BYTES 60
#define MAX_PATCHES 4
#define PATCH_BYTES 14
#define MAX_WORDS 8
#define HDR_MAX 74
#define GRACE_NS 2000000000ULL
#define RETRY_NS 100000000ULL

enum layout { L_NONE = 0, L_TCP4 = 1, L_UDP4 = 2, L_ICMP4 = 3, L_TCP6 = 4, L_UDP6 = 5, L_ICMP6 = 6 };

struct fkey {
	__u32 ifindex;
	__u32 layout;
	__u8 bytes[KEY_BYTES];
};

struct patch {
	__u8 off;
	__u8 len;
	__u8 data[PATCH_BYTES];
};

// a 16-bit word the patches change that the L4 checksum covers: the kernel's
// bpf_l4_csum_replace updates the checksum from the word's old and new value, for
// full checksums and CHECKSUM_PARTIAL seeds (pseudo-header words) alike
struct csum_word {
	__u8 off;
	__u8 pseudo;  // in the pseudo-header (an address), not in the L4 header
};

struct fval {
	__u64 deadline_ns;  // the filter punts the flow to the datapath after this
	__u64 packets;
	__u64 bytes;
	__u32 out_ifindex;
	__u16 ip_delta;     // one's complement adjustment of the IPv4 header checksum
	__u8 has_ip_delta;
	__u8 npatches;
	struct patch patches[MAX_PATCHES];
	__u8 l4_csum;       // offset of the L4 checksum (with nwords)
	__u8 nwords;
	__u8 udp;           // a computed 0 is sent as 0xFFFF
	__u8 pad;
	struct csum_word words[MAX_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fkey);
	__type(value, struct fval);
} flows SEC(".maps");

// per CPU: [0] frames forwarded, [1] bytes forwarded, [2] punted past deadline,
// [3] forward misses (no entry at TC), [4] punted frames TC left to the datapath
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 which, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &which);
	if (v)
		*v += n;
}

static __always_inline __u32 fold(__u32 v)
{
	v = (v & 0xFFFF) + (v >> 16);
	return (v & 0xFFFF) + (v >> 16);
}

// per ifindex: frames and bytes forwarded in (ingress) and out (egress); the datapath
// creates an entry per attached port (the program never inserts)
struct pstat {
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 tx_packets;
	__u64 tx_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct pstat);
} ports SEC(".maps");

// per CPU: the frame `punt` just gave the datapath for revalidation. TC ingress runs
// right after the packet sockets for the same frame on the same CPU (softirq), so
// `forward` finds it here and leaves that frame to the datapath.
struct punted {
	__u32 ifindex;
	__u32 len;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct punted);
} last_punt SEC(".maps");

#define COPY(dst, src, n) __builtin_memcpy((dst), (src), (n))

// The frame's key (fastpath.frame_key's checks and covered ranges); 0 if none.
static __always_inline int make_key(struct __sk_buff *skb, struct fkey *k)
{
	__u8 h[HDR_MAX];
	__u32 size = skb->len;

	if (size < 42)
		return 0;
	if (bpf_skb_load_bytes(skb, 0, h, 42) < 0)
		return 0;
	if (h[0] & 1)
		return 0;
	if (h[12] == 0x08 && h[13] == 0x00) {
		if (h[14] != 0x45 || (h[20] & 0x3F) || h[21])
			return 0;
		__u32 end = 14 + ((__u32)h[16] << 8 | h[17]);
		if (end > size)
			return 0;
		__u32 sum = 0;
#pragma unroll
		for (int i = 14; i < 34; i += 2)
			sum += (__u32)h[i] << 8 | h[i + 1];
		if (fold(sum) != 0xFFFF)
			return 0;
		__u8 proto = h[23];
		if (proto == 6) {
			if (end < 54 || size < 54)
				return 0;
			if (bpf_skb_load_bytes(skb, 42, h + 42, 12) < 0)
				return 0;
			if (34 + (h[46] >> 4) * 4 > end || (h[47] & 0x07))
				return 0;
			k->layout = L_TCP4;
			COPY(k->bytes, h, 16);
			COPY(k->bytes + 16, h + 20, 4);
			COPY(k->bytes + 20, h + 26, 12);
			COPY(k->bytes + 32, h + 46, 2);
			return 1;
		}
		if (proto == 17) {
			__u32 length = (__u32)h[38] << 8 | h[39];
			if (end < 42 || length < 8 || 34 + length > end || !(h[40] | h[41]))
				return 0;
			k->layout = L_UDP4;
			COPY(k->bytes, h, 16);
			COPY(k->bytes + 16, h + 20, 4);
			COPY(k->bytes + 20, h + 26, 12);
			return 1;
		}
		if (proto == 1 && (h[34] == 0 || h[34] == 8) && end >= 42) {
			k->layout = L_ICMP4;
			COPY(k->bytes, h, 16);
			COPY(k->bytes + 16, h + 20, 4);
			COPY(k->bytes + 20, h + 26, 10);
			COPY(k->bytes + 30, h + 38, 2);
			return 1;
		}
		return 0;
	}
	if (h[12] == 0x86 && h[13] == 0xdd && size >= 62) {
		if (bpf_skb_load_bytes(skb, 42, h + 42, 20) < 0)
			return 0;
		__u32 end = 54 + ((__u32)h[18] << 8 | h[19]);
		if (end > size)
			return 0;
		__u8 proto = h[20];
		if (proto == 6) {
			if (end < 74 || size < 74)
				return 0;
			if (bpf_skb_load_bytes(skb, 62, h + 62, 12) < 0)
				return 0;
			if (54 + (h[66] >> 4) * 4 > end || (h[67] & 0x07))
				return 0;
			k->layout = L_TCP6;
			COPY(k->bytes, h, 18);
			COPY(k->bytes + 18, h + 20, 38);
			COPY(k->bytes + 56, h + 66, 2);
			return 1;
		}
		if (proto == 17) {
			__u32 length = (__u32)h[58] << 8 | h[59];
			if (end < 62 || length < 8 || 54 + length > end)
				return 0;
			k->layout = L_UDP6;
			COPY(k->bytes, h, 18);
			COPY(k->bytes + 18, h + 20, 38);
			return 1;
		}
		if (proto == 58 && (h[54] == 128 || h[54] == 129) && end >= 62) {
			k->layout = L_ICMP6;
			COPY(k->bytes, h, 18);
			COPY(k->bytes + 18, h + 20, 36);
			COPY(k->bytes + 54, h + 58, 2);
			return 1;
		}
	}
	return 0;
}

SEC("socket")
int punt(struct __sk_buff *skb)
{
	struct fkey k = {};

	k.ifindex = skb->ifindex;
	if (!make_key(skb, &k))
		return skb->len;
	struct fval *v = bpf_map_lookup_elem(&flows, &k);
	if (!v)
		return skb->len;
	__u64 now = bpf_ktime_get_ns();
	if (now > v->deadline_ns) {
		// revalidation: this one frame goes to the datapath, which runs the slow path
		// for it and installs the entry again; the flow's next frames stay in the
		// kernel meanwhile (no reordering behind the slow path), and if no new entry
		// comes within RETRY_NS the next frame is punted again
		v->deadline_ns = now + RETRY_NS;
		__u32 zero = 0;
		struct punted *p = bpf_map_lookup_elem(&last_punt, &zero);
		if (p) {
			p->ifindex = skb->ifindex;
			p->len = skb->len;
		}
		count(2, 1);
		return skb->len;
	}
	return 0;
}

SEC("tc")
int forward(struct __sk_buff *skb)
{
	struct fkey k = {};
	__u32 zero = 0;
	struct punted *p = bpf_map_lookup_elem(&last_punt, &zero);

	if (p && p->ifindex) {
		int mine = p->ifindex == skb->ifindex && p->len == skb->len;
		p->ifindex = 0;
		if (mine) {
			count(4, 1);
			return TC_ACT_OK;  // the datapath has this frame (revalidation)
		}
	}
	k.ifindex = skb->ifindex;
	if (!make_key(skb, &k))
		return TC_ACT_OK;
	struct fval *v = bpf_map_lookup_elem(&flows, &k);
	if (!v) {
		count(3, 1);
		return TC_ACT_OK;
	}
	// the filter punts entries at their deadline; past it by GRACE_NS only when no
	// datapath socket runs the filter (a datapath that died): stop serving then
	if (bpf_ktime_get_ns() > v->deadline_ns + GRACE_NS)
		return TC_ACT_OK;
	__u16 old[MAX_WORDS] = {};
	__u32 nw = v->nwords;
	for (int i = 0; i < MAX_WORDS; i++) {
		if (i >= nw)
			break;
		if (bpf_skb_load_bytes(skb, v->words[i].off, &old[i], 2) < 0)
			return TC_ACT_SHOT;
	}
	__u32 n = v->npatches;
	for (int i = 0; i < MAX_PATCHES; i++) {
		if (i >= n)
			break;
		__u32 off = v->patches[i].off;
		__u32 len = v->patches[i].len;
		if (len == 0 || len > PATCH_BYTES)
			return TC_ACT_SHOT;
		if (bpf_skb_store_bytes(skb, off, v->patches[i].data, len, 0) < 0)
			return TC_ACT_SHOT;
	}
	for (int i = 0; i < MAX_WORDS; i++) {
		if (i >= nw)
			break;
		__u16 now;
		if (bpf_skb_load_bytes(skb, v->words[i].off, &now, 2) < 0)
			return TC_ACT_SHOT;
		__u64 flags = 2;
		if (v->words[i].pseudo)
			flags |= BPF_F_PSEUDO_HDR;
		if (v->udp)
			flags |= BPF_F_MARK_MANGLED_0;
		if (bpf_l4_csum_replace(skb, v->l4_csum, old[i], now, flags) < 0)
			return TC_ACT_SHOT;
	}
	if (v->has_ip_delta) {
		__u8 c[2];
		if (bpf_skb_load_bytes(skb, 24, c, 2) < 0)
			return TC_ACT_SHOT;
		__u32 old = (__u32)c[0] << 8 | c[1];
		__u32 now = fold((old ^ 0xFFFF) + v->ip_delta) ^ 0xFFFF;
		c[0] = now >> 8;
		c[1] = now & 0xFF;
		if (bpf_skb_store_bytes(skb, 24, c, 2, 0) < 0)
			return TC_ACT_SHOT;
	}
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, skb->len);
	count(0, 1);
	count(1, skb->len);
	struct pstat *in = bpf_map_lookup_elem(&ports, &k.ifindex);
	if (in) {
		in->rx_packets += 1;
		in->rx_bytes += skb->len;
	}
	__u32 out_ifindex = v->out_ifindex;
	struct pstat *out = bpf_map_lookup_elem(&ports, &out_ifindex);
	if (out) {
		out->tx_packets += 1;
		out->tx_bytes += skb->len;
	}
	return bpf_redirect(v->out_ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
