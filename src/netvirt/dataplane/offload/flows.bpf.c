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
//    the output device (or, for an encap entry, the outer Geneve headers and a
//    redirect_neigh to the underlay device). No entry -> TC_ACT_OK (the host
//    stack; the datapath has its copy).
//  - `decap` is the TC ingress program of the underlay device: a Geneve datagram of
//    netvirt's exact shape for this host whose inner frame has an entry -> strip,
//    patches, redirect to the VM's port; anything else -> the stack and the
//    datapath's tunnel socket.
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
#define TPL_BYTES 48     // outer IPv4 (20) + UDP (8) + Geneve with its two options (20)
#define OUTER_BYTES 62   // TPL_BYTES + the outer Ethernet header
#define BULK_NS 1000000000ULL  // a flow into the tunnel stays bulk 1 s after a super-frame

enum layout { L_NONE = 0, L_TCP4 = 1, L_UDP4 = 2, L_ICMP4 = 3, L_TCP6 = 4, L_UDP6 = 5, L_ICMP6 = 6 };

struct fkey {
	__u32 ifindex;    // the ingress device (a port, or the underlay for decap entries)
	__u32 layout;
	__u32 vni;        // decap entries: the Geneve VNI and the logical ingress << 16 | egress
	__u32 tun_ports;  // (0 for frames from a local port)
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
	__u8 encap;         // 1: encapsulate (Geneve, tpl) and redirect_neigh to out_ifindex
	__u8 pad2;
	__u16 max_len;      // encap: longer frames (and GSO super-frames) go to the datapath
	__u8 tpl[TPL_BYTES];  // encap: outer IPv4 (total length 0) + UDP + Geneve headers
	__u64 retry_ns;     // decap: past the deadline, the next datagram for the datapath
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fkey);
	__type(value, struct fval);
} flows SEC(".maps");

// per CPU: [0] frames forwarded, [1] bytes forwarded, [2] punted past deadline,
// [3] forward misses (no entry at TC, a frame no `punt` saw), [4] frames `punt` gave the
// datapath that TC left to it,
// [5] frames of kernel connections forwarded, [6] frames of kernel connections given to
// the datapath (the tracker refused them), [7] approved frames whose entry left meanwhile,
// SYN templates (offload/templates.py): [8] connections the kernel made from a SYN,
// [9] SYNs of a template given to the datapath for want of a free SNAT port (its supply
// empty, or another CPU taking the same port at that instant), [10] SYNs of
// a template given to it because an entry of the connection was there already or its
// report did not fit
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 12);
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

// Output ports that are one end of a veth pair whose other end is in another namespace
// (a VM's): `forward` and `decap` hand their frames straight to that other end's
// ingress (bpf_redirect_peer) instead of transmitting on this end, which queues them on
// the CPU's backlog for another softirq pass. The datapath sets an entry per such port
// (offload/manager.py); QoS and health-checked ports never get here (not offloaded).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} peers SEC(".maps");

static __always_inline long out_to(__u32 ifindex)
{
	if (bpf_map_lookup_elem(&peers, &ifindex))
		return bpf_redirect_peer(ifindex, 0);
	return bpf_redirect(ifindex, 0);
}

// per CPU: the frame `punt` just gave the datapath (any frame it gives: a miss, a
// revalidation, a connection's frame for the slow path) or approved for the kernel. TC
// ingress runs right after the packet sockets for the same frame on the same CPU
// (softirq), so `forward` finds it here and leaves a given frame to the datapath. Every
// given frame must be recorded, not only revalidations: the datapath, woken by a missed
// frame on another CPU, may install that flow's entry before `forward` runs for the
// frame, and `forward` would then serve a frame the datapath serves too (a duplicate).
struct punted {
	__u32 ifindex;
	__u32 len;
	__u32 approved;  // 1: a kernel connection's frame the tracker let through (conns below)
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct punted);
} last_punt SEC(".maps");

#define COPY(dst, src, n) __builtin_memcpy((dst), (src), (n))

// The key of the frame at `base` of `size` bytes (fastpath.frame_key's checks and covered
// ranges): 1; 2 for a TCP SYN, FIN or RST (no exact entry serves those: only a kernel
// connection may, by the key without its flags); 0 if none.
static __always_inline int make_key(struct __sk_buff *skb, __u32 base, __u32 size, struct fkey *k)
{
	__u8 h[HDR_MAX];

	if (size < 42)
		return 0;
	if (bpf_skb_load_bytes(skb, base + 0, h, 42) < 0)
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
			if (bpf_skb_load_bytes(skb, base + 42, h + 42, 12) < 0)
				return 0;
			if (34 + (h[46] >> 4) * 4 > end)
				return 0;
			k->layout = L_TCP4;
			COPY(k->bytes, h, 16);
			COPY(k->bytes + 16, h + 20, 4);
			COPY(k->bytes + 20, h + 26, 12);
			COPY(k->bytes + 32, h + 46, 2);
			return (h[47] & 0x07) ? 2 : 1;
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
		if (bpf_skb_load_bytes(skb, base + 42, h + 42, 20) < 0)
			return 0;
		__u32 end = 54 + ((__u32)h[18] << 8 | h[19]);
		if (end > size)
			return 0;
		__u8 proto = h[20];
		if (proto == 6) {
			if (end < 74 || size < 74)
				return 0;
			if (bpf_skb_load_bytes(skb, base + 62, h + 62, 12) < 0)
				return 0;
			if (54 + (h[66] >> 4) * 4 > end)
				return 0;
			k->layout = L_TCP6;
			COPY(k->bytes, h, 18);
			COPY(k->bytes + 18, h + 20, 38);
			COPY(k->bytes + 56, h + 66, 2);
			return (h[67] & 0x07) ? 2 : 1;
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

// A flow into the tunnel that sends GSO super-frames (bulk TCP) is the datapath's, every
// frame of it: super-frames keep their metadata only in netvirt's offload option, which
// only the datapath writes, and the flow's small frames must not overtake them through
// the kernel (reordering a TCP stream costs retransmits). `bulk` remembers such flows
// for BULK_NS after their last super-frame.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fkey);
	__type(value, __u64);
} bulk SEC(".maps");

// The `bulk` key of a frame: its flow's key without the TCP flags (a stream's super-frames
// carry PSH, its other segments may not: other exact flows, the same connection).
static __always_inline void bulk_key(struct fkey *k, struct fkey *b)
{
	*b = *k;
	if (b->layout == L_TCP4) {
		b->bytes[32] = 0;
		b->bytes[33] = 0;
	} else if (b->layout == L_TCP6) {
		b->bytes[56] = 0;
		b->bytes[57] = 0;
	}
}

// Whether the kernel serves this frame of an entry: always, except for an encap entry's
// frames that are GSO super-frames, longer than the underlay's room, or of a bulk flow.
// Both programs apply the same test (`punt` first, which records a super-frame), so a
// frame `punt` gives the datapath is one `forward` leaves alone.
static __always_inline int encap_fits(struct __sk_buff *skb, struct fval *v, struct fkey *k)
{
	if (!v->encap)
		return 1;
	if (skb->len > v->max_len)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct fkey b;
	bulk_key(k, &b);
	if (skb->gso_size) {
		bpf_map_update_elem(&bulk, &b, &now, BPF_ANY);
		return 0;
	}
	__u64 *last = bpf_map_lookup_elem(&bulk, &b);
	return !(last && now - *last < BULK_NS);
}

// Kernel connections (offload/conns.py): a TCP connection handed over by the datapath once
// both directions' outcomes are known. One `conns` entry per direction, keyed like `flows`
// without the TCP flags and data offset (`bulk_key`), names the connection's shared
// `cstates` entry, whose TCP state the tracker below moves exactly as the user-space
// conntrack does (nf/tcp.py tcp_step, from SYN_RECV on). `punt` runs the tracker: a
// packet the state allows is approved (this CPU's `last_punt` slot) and `forward` serves
// it; anything else goes to the datapath, which folds the kernel's state back first.
#define ST_SYN_SENT 1
#define ST_SYN_RECV 2
#define ST_ESTABLISHED 3
#define ST_FIN_WAIT 4
#define ST_CLOSE_WAIT 5
#define ST_TIME_WAIT 6
#define ST_CLOSED 7
#define FIN_ORIG 1
#define FIN_REPLY 2

struct cval {
	struct fval f;    // the direction's rewrite and output (deadline unused)
	__u64 conn;       // the `cstates` key
	__u32 reply;      // 1: this direction is the connection's reply direction
	__u16 port;       // a connection made from a SYN template: this port (network order)
	__u8 port_at;     // ... written at this frame offset after `f` (0: none; IPv4 TCP only)
	__u8 pad;
};

struct cstate {
	__u64 last_ns;    // the last packet the tracker let through (bpf_ktime_get_ns)
	__u64 packets;
	__u64 st;         // state | FIN bits << 8 (changed by compare-and-swap only)
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fkey);
	__type(value, struct cval);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u64);
	__type(value, struct cstate);
} cstates SEC(".maps");

// conntrack's idle timeout per state (nf/tcp.py Timeouts), in ns; 0: not tracked here
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} ct_timeouts SEC(".maps");

// nf/tcp.py tcp_step for the states a kernel connection can be in (SYN_SENT: only the
// SYN's retransmission and the SYN-ACK; SYN_RECV: only its step to ESTABLISHED), with conntrack's rule that a closed connection (TIME_WAIT,
// CLOSED) is judged but never rewritten: the next `st`, or -1 for the datapath (a packet
// the user-space conntrack would find invalid, or one the tracker leaves to it).
static __always_inline long tcp_next(__u64 st, __u32 reply, __u32 flags)
{
	__u32 state = st & 0xFF, fins = (st >> 8) & 0xFF;
	__u32 syn = flags & 0x02, fin = flags & 0x01, rst = flags & 0x04, ack = flags & 0x10;

	if (state < ST_SYN_SENT || state > ST_CLOSED)
		return -1;
	if (syn && (fin || rst))
		return -1;
	if (!(flags & 0x17))
		return -1;
	if (state == ST_SYN_SENT) {
		// made from a SYN template: the original direction's retransmitted SYN (same
		// state) and the reply direction's SYN-ACK (-> SYN_RECV), whose outcome the
		// template holds; anything else (an RST, a reply SYN without ACK): the datapath's
		if (rst)
			return -1;
		if (!reply)
			return (syn && !ack) ? (long)st : -1;
		return (syn && ack) ? (long)(ST_SYN_RECV | fins << 8) : -1;
	}
	if (state == ST_SYN_RECV) {
		// handed over at the SYN-ACK (offload/handshake.py): only the original
		// direction's first ACK, whose outcome the datapath predicted; a retransmitted
		// SYN or SYN-ACK, an RST, a reply without SYN: the datapath's
		if (reply || syn || rst || !ack)
			return -1;
		return fin ? (ST_FIN_WAIT | (fins | FIN_ORIG) << 8) : (ST_ESTABLISHED | fins << 8);
	}
	if (state == ST_TIME_WAIT || state == ST_CLOSED) {
		if (rst)
			return st;
		if (state == ST_CLOSED || (syn && !(reply && ack)) || !ack)
			return -1;
		return st;
	}
	if (rst)
		return ST_CLOSED | fins << 8;
	if ((syn && !(reply && ack)) || !ack)
		return -1;
	if (syn)
		return st;  // a retransmitted SYN-ACK
	__u32 side = reply ? FIN_REPLY : FIN_ORIG;
	if (fin && !(fins & side)) {
		fins |= side;
		state = fins == (FIN_ORIG | FIN_REPLY) ? ST_TIME_WAIT : ST_FIN_WAIT;
	} else if (state == ST_FIN_WAIT && !fin && !(fins & side)) {
		state = ST_CLOSE_WAIT;
	}
	return state | fins << 8;
}

static __always_inline void mark_punted(struct __sk_buff *skb, __u32 approved)
{
	__u32 zero = 0;
	struct punted *p = bpf_map_lookup_elem(&last_punt, &zero);
	if (p) {
		p->ifindex = skb->ifindex;
		p->len = skb->len;
		p->approved = approved;
	}
}

// `punt`'s part for a TCP frame: -1 no kernel connection; 0 approved (the kernel serves
// it: state moved); 1 for the datapath (expired, or a packet the state does not allow).
static __always_inline int conn_punt(struct __sk_buff *skb, struct fkey *k)
{
	struct fkey c;
	bulk_key(k, &c);
	struct cval *v = bpf_map_lookup_elem(&conns, &c);
	if (!v)
		return -1;
	__u32 flags = k->layout == L_TCP4 ? k->bytes[33] : k->bytes[57];
	__u64 id = v->conn;
	struct cstate *s = bpf_map_lookup_elem(&cstates, &id);
	__u64 now = bpf_ktime_get_ns();
	if (!s)
		goto give;
	for (int i = 0; i < 4; i++) {
		__u64 old = s->st;
		__u32 state = old & 0xFF;
		__u64 *timeout = bpf_map_lookup_elem(&ct_timeouts, &state);
		if (!timeout || !*timeout || now > s->last_ns + *timeout)
			goto give;  // idle past conntrack's timeout: the datapath decides
		long next = tcp_next(old, v->reply, flags);
		if (next < 0)
			goto give;
		if ((__u64)next == old || __sync_val_compare_and_swap(&s->st, old, (__u64)next) == old) {
			s->last_ns = now;
			__sync_fetch_and_add(&s->packets, 1);
			mark_punted(skb, 1);
			return 0;
		}
	}
give:
	mark_punted(skb, 0);
	count(6, 1);
	return 1;
}

// SYN templates (offload/templates.py): the connections of one client port to one server
// port through stateful ACL + masquerade SNAT differ, in what the pipeline reads, only
// in the client's source port and the SNAT port conntrack picks. The datapath learns
// one connection's outcomes (both directions, the SYN's equal to the later packets') once
// it has proved that no installed rule reads the source port, and puts them here, keyed
// by the SYN's `conns` key with the source port zeroed. A SYN with no kernel connection
// whose template is here is then made a kernel connection without the datapath: a port
// from the template's own supply in `tpl_ports` (claimed by the datapath for the kernel in
// the SNAT pool of the template's destination: pools are per destination, nf/nat.py), both
// `conns` entries (the reply key names that port) and the `cstates` entry in SYN_SENT,
// and a report in `made` from which the datapath writes the user-space records behind.
struct tpl {
	struct fval orig;   // the original direction's rewrite and output (its port patched)
	struct fval reply;  // the reply direction's
	struct fkey rkey;   // the reply direction's `conns` key, destination port zeroed
	__u32 id;
	__u32 head;  // the sequence number of the next port of its supply (user space writes 0)
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct fkey);
	__type(value, struct tpl);
} tpls SEC(".maps");

// A template's port supply: a ring kept in a hash. The datapath writes port number `seq`
// of template `tpl` at (tpl, seq), seq counting up from 0 (its tail); the kernel takes the
// one at the template's `head` (deleting it: of CPUs racing for it one wins, the others
// give their SYN to the datapath), and moves `head` on only once the connection is made,
// so a port it could not use goes back to where it was, still the next one: no gaps, and
// every port posted is either reported in `made` or still here.
struct tport {
	__u32 tpl;  // the template's id (never reused: a flushed template's ports are not taken)
	__u32 seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);  // the datapath keeps at most 3/4 of it posted (templates.py)
	__type(key, struct tport);
	__type(value, __u16);  // a port, network order
} tpl_ports SEC(".maps");

struct made {
	__u64 conn;   // the `cstates` key
	__u64 ns;     // when (bpf_ktime_get_ns)
	__u32 tpl;    // the template's id
	__u16 sport;  // the client's source port (network order)
	__u16 port;   // the SNAT port (network order)
};

// a ring buffer (offload/ringbuf.py reads it through its mapping: no syscall per report);
// 32 bytes a record with its header: 131,072 of them, twice what can be unreported (a
// report per posted port, and at most 65,536 are posted)
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);  // bytes (the datapath maps as much as this says)
} made SEC(".maps");

// [0]: the next id of a connection the kernel makes (the datapath sets the range)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} next_conn SEC(".maps");

// per CPU: where a connection's `conns` value is put together (too big for the stack)
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cval);
} scratch SEC(".maps");

// Make a kernel connection of the IPv4 TCP SYN keyed `k` from its template: 0 made (the
// tracker then approves the SYN as any SYN_SENT connection's), -1 not (the datapath's).
static __always_inline int syn_make(struct fkey *k)
{
	struct fkey t = *k;
	t.bytes[28] = 0;  // the source port
	t.bytes[29] = 0;
	t.bytes[32] = 0;  // the data offset and flags
	t.bytes[33] = 0;
	struct tpl *tp = bpf_map_lookup_elem(&tpls, &t);
	if (!tp)
		return -1;
	__u32 zero = 0;
	__u64 *next = bpf_map_lookup_elem(&next_conn, &zero);
	struct cval *cv = bpf_map_lookup_elem(&scratch, &zero);
	if (!next || !cv || !*next)
		return -1;
	struct tport pk = {.tpl = tp->id, .seq = *(volatile __u32 *)&tp->head};
	__u16 *pp = bpf_map_lookup_elem(&tpl_ports, &pk);
	if (!pp) {
		count(9, 1);
		return -1;
	}
	__u16 port = *pp;
	if (bpf_map_delete_elem(&tpl_ports, &pk)) {  // another CPU's now
		count(9, 1);
		return -1;
	}
	__u16 sport;
	COPY(&sport, &k->bytes[28], 2);
	__u64 id = __sync_fetch_and_add(next, 1);
	__u64 now = bpf_ktime_get_ns();
	struct cstate s = {.last_ns = now, .packets = 0, .st = ST_SYN_SENT};
	struct fkey okey = t;
	COPY(&okey.bytes[28], &sport, 2);
	struct fkey rkey = tp->rkey;
	COPY(&rkey.bytes[30], &port, 2);
	struct made m = {.conn = id, .ns = now, .tpl = tp->id, .sport = sport, .port = port};
	if (bpf_map_update_elem(&cstates, &id, &s, BPF_NOEXIST))
		goto back;
	COPY(&cv->f, &tp->orig, sizeof(struct fval));
	cv->conn = id;
	cv->reply = 0;
	cv->port = port;
	cv->port_at = 34;  // the source port
	cv->pad = 0;
	if (bpf_map_update_elem(&conns, &okey, cv, BPF_NOEXIST))
		goto state;
	COPY(&cv->f, &tp->reply, sizeof(struct fval));
	cv->reply = 1;
	cv->port = sport;
	cv->port_at = 36;  // the destination port
	if (bpf_map_update_elem(&conns, &rkey, cv, BPF_NOEXIST))
		goto orig;
	if (bpf_ringbuf_output(&made, &m, sizeof(m), 0))
		goto both;
	__sync_fetch_and_add(&tp->head, 1);
	count(8, 1);
	return 0;
both:
	bpf_map_delete_elem(&conns, &rkey);
orig:
	bpf_map_delete_elem(&conns, &okey);
state:
	bpf_map_delete_elem(&cstates, &id);
back:
	bpf_map_update_elem(&tpl_ports, &pk, &port, BPF_NOEXIST);  // still the next one
	count(10, 1);
	return -1;
}

// `punt`'s decision for the frame at skb->data (its Ethernet header): skb->len when the
// datapath gets the frame, 0 when the kernel serves it.
static __always_inline int punt_frame(struct __sk_buff *skb)
{
	struct fkey k = {};

	k.ifindex = skb->ifindex;
	int keyed = make_key(skb, 0, skb->len, &k);
	if (!keyed)
		goto give;
	if (k.layout == L_TCP4 || k.layout == L_TCP6) {
		int served = conn_punt(skb, &k);  // records its own decision
		if (served < 0 && keyed == 2 && k.layout == L_TCP4 && (k.bytes[33] & 0x17) == 0x02 &&
		    syn_make(&k) == 0)
			served = conn_punt(skb, &k);  // SYN_SENT: the tracker approves this SYN
		if (served >= 0)
			return served ? skb->len : 0;
	}
	if (keyed != 1)
		goto give;
	struct fval *v = bpf_map_lookup_elem(&flows, &k);
	if (!v || !encap_fits(skb, v, &k))
		goto give;
	__u64 now = bpf_ktime_get_ns();
	if (now > v->deadline_ns) {
		// revalidation: this one frame goes to the datapath, which runs the slow path
		// for it and installs the entry again; the flow's next frames stay in the
		// kernel meanwhile (no reordering behind the slow path), and if no new entry
		// comes within RETRY_NS the next frame is punted again
		v->deadline_ns = now + RETRY_NS;
		count(2, 1);
		goto give;
	}
	return 0;
give:
	mark_punted(skb, 0);
	return skb->len;
}

SEC("socket")
int punt(struct __sk_buff *skb)
{
	return punt_frame(skb);
}

// `punt` as a TC program, never attached: BPF_PROG_TEST_RUN gives a socket filter the
// frame from its network header on, so the differential tests run this one instead
// (tests/dataplane/test_offload_conns_kernel.py).
SEC("tc")
int punt_check(struct __sk_buff *skb)
{
	return punt_frame(skb);
}

// The entry's byte patches and checksum updates on the frame at offset 0; 0 or TC_ACT_SHOT.
static __always_inline int rewrite(struct __sk_buff *skb, struct fval *v)
{
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
	return 0;
}

// A kernel-made connection's own port (`struct cval`), written after the template's
// rewrite at `at` (34: the TCP source port, 36: the destination port; IPv4 without
// options, as make_key requires), the TCP checksum updated from the port it replaces.
static __always_inline int set_port(struct __sk_buff *skb, __u32 at, __u16 port)
{
	__u16 old;
	if (at != 34 && at != 36)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, at, &old, 2) < 0)
		return TC_ACT_SHOT;
	if (old == port)
		return 0;
	if (bpf_skb_store_bytes(skb, at, &port, 2, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_l4_csum_replace(skb, 50, old, port, 2) < 0)
		return TC_ACT_SHOT;
	return 0;
}

static __always_inline void account(struct fval *v, __u32 in_ifindex, __u32 len)
{
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, len);
	count(0, 1);
	count(1, len);
	struct pstat *in = bpf_map_lookup_elem(&ports, &in_ifindex);
	if (in) {
		in->rx_packets += 1;
		in->rx_bytes += len;
	}
	__u32 out_ifindex = v->out_ifindex;
	struct pstat *out = bpf_map_lookup_elem(&ports, &out_ifindex);
	if (out) {
		out->tx_packets += 1;
		out->tx_bytes += len;
	}
}

// Put the rewritten frame into the entry's outer headers (the Geneve datagram the user-space
// tunnel would send: tunnels/geneve.py kernel_header) and hand it to the underlay device;
// the neighbour subsystem writes the outer Ethernet addresses.
static __always_inline int encapsulate(struct __sk_buff *skb, struct fval *v)
{
	__u8 eth[14];
	__u8 t[TPL_BYTES];
	__u32 inner = skb->len;

	if (bpf_skb_load_bytes(skb, 0, eth, 14) < 0)
		return TC_ACT_SHOT;
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
		      BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
		      BPF_F_ADJ_ROOM_ENCAP_L2(14);
	if (bpf_skb_adjust_room(skb, TPL_BYTES + 14, BPF_ADJ_ROOM_MAC, flags) < 0)
		return TC_ACT_SHOT;
	COPY(t, v->tpl, TPL_BYTES);
	__u32 total = inner + TPL_BYTES;  // the outer IPv4 packet: headers, then the frame
	__u32 sum = (__u32)t[10] << 8 | t[11];
	sum = fold((sum ^ 0xFFFF) + total) ^ 0xFFFF;  // the template's checksum, length added
	t[2] = total >> 8;
	t[3] = total & 0xFF;
	t[10] = sum >> 8;
	t[11] = sum & 0xFF;
	t[24] = (total - 20) >> 8;  // UDP length
	t[25] = (total - 20) & 0xFF;
	__u8 outer[14];
	COPY(outer, eth, 12);
	outer[12] = 0x08;
	outer[13] = 0x00;
	if (bpf_skb_store_bytes(skb, 0, outer, 14, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 14, t, TPL_BYTES, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, OUTER_BYTES, eth, 14, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect_neigh(v->out_ifindex, 0, 0, 0);
}

SEC("tc")
int forward(struct __sk_buff *skb)
{
	struct fkey k = {};
	__u32 zero = 0;
	struct punted *p = bpf_map_lookup_elem(&last_punt, &zero);

	int approved = 0;
	if (p && p->ifindex) {
		int mine = p->ifindex == skb->ifindex && p->len == skb->len;
		p->ifindex = 0;
		if (mine && !p->approved) {
			count(4, 1);
			return TC_ACT_OK;  // the datapath has this frame (revalidation, the tracker)
		}
		approved = mine;
	}
	k.ifindex = skb->ifindex;
	int keyed = make_key(skb, 0, skb->len, &k);
	if (!keyed)
		return TC_ACT_OK;
	if (k.layout == L_TCP4 || k.layout == L_TCP6) {
		// a kernel connection's frame is served only when `punt` approved it (so its
		// state moved); without a datapath (no `punt`) it is nobody's
		struct fkey c;
		bulk_key(&k, &c);
		struct cval *cv = bpf_map_lookup_elem(&conns, &c);
		if (approved && !cv) {
			count(7, 1);
			return TC_ACT_OK;  // the datapath took the connection back meanwhile
		}
		if (cv) {
			if (!approved)
				return TC_ACT_OK;
			if (rewrite(skb, &cv->f))
				return TC_ACT_SHOT;
			if (cv->port_at && set_port(skb, cv->port_at, cv->port))
				return TC_ACT_SHOT;
			account(&cv->f, k.ifindex, skb->len);
			count(5, 1);
			return out_to(cv->f.out_ifindex);
		}
	}
	if (keyed != 1)
		return TC_ACT_OK;
	struct fval *v = bpf_map_lookup_elem(&flows, &k);
	if (!v) {
		count(3, 1);
		return TC_ACT_OK;
	}
	if (!encap_fits(skb, v, &k))
		return TC_ACT_OK;  // (`punt` gave it to the datapath)
	// the filter punts entries at their deadline; past it by GRACE_NS only when no
	// datapath socket runs the filter (a datapath that died): stop serving then
	if (bpf_ktime_get_ns() > v->deadline_ns + GRACE_NS)
		return TC_ACT_OK;
	if (rewrite(skb, v))
		return TC_ACT_SHOT;
	account(v, k.ifindex, skb->len);
	if (v->encap)
		return encapsulate(skb, v);
	return out_to(v->out_ifindex);
}

// The underlay address and Geneve port this host's datapath receives on (one slot).
struct tunnel_conf {
	__u32 local_ip;  // network order
	__u32 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tunnel_conf);
} tunnel SEC(".maps");

// TC ingress of the underlay device. A Geneve datagram of exactly netvirt's shape for
// this host (IPv4 without options or fragments, UDP to the datapath's port, the ports
// option and at most the kernel's checksum-seed mark, no offload option, no OAM) whose
// inner frame has a fresh decap entry is stripped, rewritten and redirected to the
// entry's port. Everything else goes on to the stack and the datapath's socket: other
// traffic, malformed or unknown datagrams, misses, and one datagram per entry past its
// deadline (revalidation, as `punt` does for ports).
SEC("tc")
int decap(struct __sk_buff *skb)
{
	__u8 o[OUTER_BYTES + 14];
	__u32 zero = 0;
	struct tunnel_conf *conf = bpf_map_lookup_elem(&tunnel, &zero);

	if (!conf || !conf->local_ip || skb->gso_size || skb->len < 54 + 42)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, 0, o, 54) < 0)
		return TC_ACT_OK;
	if (o[12] != 0x08 || o[13] != 0x00 || o[14] != 0x45 || (o[20] & 0x3F) || o[21] || o[23] != 17)
		return TC_ACT_OK;
	__u32 dst;
	COPY(&dst, o + 30, 4);
	if (dst != conf->local_ip)
		return TC_ACT_OK;
	__u32 sum = 0;
#pragma unroll
	for (int i = 14; i < 34; i += 2)
		sum += (__u32)o[i] << 8 | o[i + 1];
	__u32 total = (__u32)o[16] << 8 | o[17];
	__u32 udp_len = (__u32)o[38] << 8 | o[39];
	__u32 dport = (__u32)o[36] << 8 | o[37];
	if (fold(sum) != 0xFFFF || 14 + total != skb->len || udp_len + 20 != total ||
	    dport != conf->port)
		return TC_ACT_OK;
	// Geneve: version 0, C set, O clear, Ethernet payload, then the ports option
	__u32 opt_words = o[42];
	if ((opt_words != 2 && opt_words != 3 && opt_words != 6) || o[43] != 0x40 ||
	    o[44] != 0x65 || o[45] != 0x58 || o[49] || o[50] != 0x01 || o[51] != 0x02 ||
	    o[52] != 0x80 || o[53] != 0x01)
		return TC_ACT_OK;
	__u32 inner = 50 + opt_words * 4;
	int offload = 0;
	if (opt_words != 2) {
		// 3: the kernel's mark (class 0x0102, type 0x82, no data); 6: netvirt's offload
		// option (type 0x81, 12 bytes): a super-frame the datapath sent, its own to serve
		__u8 mark[4];
		if (bpf_skb_load_bytes(skb, 58, mark, 4) < 0 || mark[0] != 0x01 || mark[1] != 0x02)
			return TC_ACT_OK;
		if (opt_words == 3 && (mark[2] != 0x82 || mark[3] != 0))
			return TC_ACT_OK;
		if (opt_words == 6 && (mark[2] != 0x81 || mark[3] != 0x03))
			return TC_ACT_OK;
		if (opt_words == 6) {
			__u8 gso_type;  // the option's first byte: GSO_NONE (a seed only) or a GSO type
			if (bpf_skb_load_bytes(skb, 62, &gso_type, 1) < 0 || gso_type == 0)
				return TC_ACT_OK;
			offload = 1;
		}
	}
	__u8 ports[4];
	if (bpf_skb_load_bytes(skb, 54, ports, 4) < 0)
		return TC_ACT_OK;
	struct fkey k = {};
	k.ifindex = skb->ifindex;
	k.vni = (__u32)o[46] << 16 | (__u32)o[47] << 8 | o[48];
	k.tun_ports = (__u32)ports[0] << 24 | (__u32)ports[1] << 16 | (__u32)ports[2] << 8 | ports[3];
	if (make_key(skb, inner, skb->len - inner, &k) != 1)
		return TC_ACT_OK;
	__u64 now = bpf_ktime_get_ns();
	struct fkey b;
	bulk_key(&k, &b);
	if (offload) {
		// a super-frame: the flow's super-frames go through the datapath, so do its other
		// datagrams for BULK_NS (the kernel's would overtake them: a reordered TCP stream
		// retransmits). A datagram with only a seed in the option goes alone (above).
		bpf_map_update_elem(&bulk, &b, &now, BPF_ANY);
		return TC_ACT_OK;
	}
	struct fval *v = bpf_map_lookup_elem(&flows, &k);
	if (!v) {
		count(3, 1);
		return TC_ACT_OK;
	}
	__u64 *last = bpf_map_lookup_elem(&bulk, &b);
	if (last && now - *last < BULK_NS)
		return TC_ACT_OK;
	if (now > v->deadline_ns) {
		// no datapath has renewed the entry for GRACE_NS past its deadline (it died):
		// stop serving. Before that, revalidation: a datagram every RETRY_NS to the
		// datapath's socket (the deadline itself stays, unlike `punt`'s, because no
		// closed socket stops this program)
		if (now > v->deadline_ns + GRACE_NS)
			return TC_ACT_OK;
		if (now > v->retry_ns) {
			v->retry_ns = now + RETRY_NS;
			count(2, 1);
			return TC_ACT_OK;
		}
	}
	__u8 eth[14];
	if (bpf_skb_load_bytes(skb, inner, eth, 14) < 0)
		return TC_ACT_OK;
	if (bpf_skb_adjust_room(skb, -(__s32)inner, BPF_ADJ_ROOM_MAC, 0) < 0)
		return TC_ACT_OK;
	if (bpf_skb_store_bytes(skb, 0, eth, 14, 0) < 0)
		return TC_ACT_SHOT;
	if (rewrite(skb, v))
		return TC_ACT_SHOT;
	account(v, k.ifindex, skb->len);
	return out_to(v->out_ifindex);
}

char LICENSE[] SEC("license") = "GPL";
