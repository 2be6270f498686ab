"""Kernel offload of exact flows: the flow cache's entries served by an eBPF program.

Theory of operation
-------------------
*Why.* A packet the exact cache serves still costs the datapath a wakeup, a
ring read, a dict probe, the patches and a ring send: tens of microseconds of
CPython per packet, and a process wakeup per round trip (the RTT of a ping is
mostly that). The kernel can do the same replay — compare the covered header
bytes, patch, redirect — in a fraction of a microsecond without waking anyone,
as Cilium's TC programs do. The datapath stays the only place where a decision
is made: the kernel program only replays outcomes the slow path produced and
the exact cache holds, and it forgets them on the cache's own terms.

*What is offloaded.* An exact-cache entry (``fastpath.py``) learned on a local
port (a VM's, or a gateway's uplink) whose outcome is one output to another
local port of the same host, by a rewrite the kernel value holds: at most four
patches of up to 14 bytes and eight changed 16-bit words under the L4
checksum — switching, routing (MACs, TTL, the IPv4 header checksum adjusted by
the slow path's constant) and NAT (addresses and ports: the program updates the
L4 checksum from each changed word's old and new value with
``bpf_l4_csum_replace``, which also keeps a checksum-offload seed right for the
new pseudo-header) — no drop, neither port policed nor health-checked. Its key
is the entry's key: ingress ifindex, layout and the covered header bytes, after
the same sanity checks as ``fastpath.frame_key`` (a malformed frame never
matches and goes to the datapath, which drops it under its reason).

*Across hosts* (Geneve over IPv4, ``tunnel.py``). An entry whose one output is a
port on another host is offloaded with the outer headers the user-space tunnel
would send as a template; ``forward`` patches the frame, grows it with
``bpf_skb_adjust_room``, writes the outer IPv4/UDP/Geneve headers (total length
and checksum completed per frame) and hands it to ``bpf_redirect_neigh`` on the
underlay device (the kernel has no ``geneve`` module, so no tunnel key helper).
GSO super-frames, frames past the underlay's room and, for a second after a
super-frame, the rest of that connection direction stay with the datapath (only
it writes netvirt's offload option; a stream's small frames must not overtake its
big ones); ``decap`` keeps a flow whose datagrams say GSO with the datapath the
same way. An entry learned for a Geneve packet (VNI, logical ports, inner key) with
one output to a local port is keyed by the underlay device, VNI and ports;
``decap``, at TC ingress of the underlay device, serves datagrams of exactly
netvirt's shape for this host: strip, patch, redirect. Everything else — other
traffic, malformed or unknown datagrams, misses, revalidations — goes on to the
stack and the datapath's socket. The kernel cannot tell a finished L4 checksum
from a CHECKSUM_PARTIAL seed, so it sends inner frames as they are and marks
its datagrams (``tunnels/geneve.py``, option type 0x82): a receiving datapath
then takes a frame whose checksum equals its seed as needing its checksum.

*Batched writes* (``kmap.py``). Map writes are queued and applied in one batch
syscall. Inserts, and deletes of entries that are still valid (evictions), may
wait a few milliseconds (the datapath serves the flow meanwhile); whatever makes
a kernel entry wrong — a flush, a connection's state change, an invalid entry, a
relearned flow with another outcome — is applied at once, with every queued
delete, before the datapath handles another frame.

*Who serves a frame.* Packet sockets see a frame before TC ingress, so two
programs share the flow map (``flows.bpf.c``): ``punt``, the socket filter of
the port's ring socket, keeps from the datapath the frames of fresh entries,
and ``forward``, at TC ingress of the same device, replays those and redirects
them to the output device. *Revalidation*: the first frame of an entry past its
deadline is given to the datapath, which runs the slow path for it (conntrack
refreshed, other hosts' changes picked up) and offloads the new exact entry;
the filter marks that frame in a per-CPU slot, which ``forward`` (run next for
the same frame on the same CPU) reads to leave it alone, and moves the
deadline 100 ms on, so the flow's later frames stay in the kernel meanwhile
instead of queueing behind the slow path (a bulk TCP flow sees one frame
reordered, not a burst). Exactly one of the two serves a frame, except when
the datapath changes the map between the two programs' lookups of the same
frame (an invalidation: the frame is dropped; a new entry: the frame goes both
ways once). A flow's first frames are the datapath's until it learns the entry,
and frames it still holds are overtaken by the kernel's: a new TCP flow can see
some reordering once, at that handover.

*Validity* mirrors the exact cache: the kernel entry's deadline is the cache
entry's birth + ``max_age`` (2 s here, against the user-space cache's 0.5 s:
each revalidation reorders a frame of a busy flow); a flush of the cache (rules, topology, bindings
changed) empties the map; a connection whose state changes (its epoch moves)
takes its entries out at once; an evicted or replaced entry is replaced or
deleted. A datapath that dies leaves the programs attached: ``forward`` stops
serving entries two seconds past their deadline, so nothing outlives it for
long; a new datapath loads a new map and replaces the filter.

*Kernel connections* (``conns.py``). A local TCP connection whose two directions the
slow path has decided (an exact entry each, or the SYN-ACK's outcome for the reply
direction) is handed to the kernel: per direction an entry keyed without the TCP
flags, and one TCP state that ``punt`` moves as the user-space conntrack would
(``tcp_next``); ``forward`` serves only the frames ``punt`` approved. Its conntrack
records are the kernel's meanwhile: any frame of it the slow path is about to see, a
flush, a closed or expired connection, an exit, folds the kernel's state back into
them first. Local state stores only.

*Counters.* Frames served in the kernel are not seen by the datapath's port
counters; ``stats()`` reports them per port (``forward`` counts per ingress and
egress ifindex) and in total, in the datapath status under ``offload``.

The kernel parts need root, clang and libbpf (``bpf.py``); without them the
datapath runs as before and its status says why there is no offload.
"""
