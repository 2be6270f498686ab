"""When the datapath hands a TCP connection to the kernel, and how it takes it back (no
root: the kernel maps are dicts behind a fake libbpf; the kernel's tracker itself is
checked against conntrack in test_offload_conns_kernel.py)."""

from __future__ import annotations

import ctypes
import struct
import time
from collections.abc import Hashable
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from dataplane.test_offload_manager import FakeLib
from netvirt.dataplane.fastpath import Entry, FlowCache, Output, Rewrite, frame_key
from netvirt.dataplane.nf.codec import FIN_ORIG, CtState, CtTuple, decode
from netvirt.dataplane.nf.conntrack import Conntrack
from netvirt.dataplane.offload import bpf
from netvirt.dataplane.offload.manager import VALUE_SIZE, KernelOffload
from netvirt.state.memory import MemoryStore

FLOWS, CONNS, CSTATES, TIMEOUTS = 3, 20, 21, 22
ZONE = 5


class Lib(FakeLib):
    def bpf_map_lookup_elem(self, fd: int, key: Any, value: Any) -> int:
        found = self.maps.get(fd, {}).get(bytes(key.raw))
        if found is None:
            return -1
        ctypes.memmove(value, found, len(found))
        return 0


class SharedStore:
    """Not a local store (what a Redis store is to the hand-over)."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def tup(reply: bool) -> CtTuple:
    a, b = 0x0A000001, 0x0A000002
    return CtTuple(4, 6, b, a, 80, 40000) if reply else CtTuple(4, 6, a, b, 40000, 80)


def setup(
    store: Any = None, syn_ack: bool = False
) -> tuple[KernelOffload, Lib, FlowCache, Conntrack, Hashable]:
    """A connection after its handshake (``syn_ack``: after SYN and SYN-ACK only)."""
    ct = Conntrack(store if store is not None else MemoryStore(clock=time.time))
    now = time.time()
    steps = ((False, 0x02), (True, 0x12), (False, 0x10))
    for reply, flags in steps[:2] if syn_ack else steps:
        ct.process(ZONE, tup(reply), flags, now, commit=not reply)
    lib = Lib()
    loaded = bpf.Loaded(lib, 0, 1, 2, FLOWS, 4, 5, VALUE_SIZE)  # type: ignore[arg-type]
    loaded.conns_fd, loaded.cstates_fd, loaded.timeouts_fd = CONNS, CSTATES, TIMEOUTS
    manager = KernelOffload(2.0, None, lambda _iface: False, time.time, loaded)
    manager.ifindex = {"vm-a": 10, "vm-b": 11}
    cache = FlowCache(capacity=64)
    cache.conntrack = ct
    cache.attach(manager)
    raw = ct.store.get(ct.key(ZONE, tup(False)))
    assert raw is not None
    record = decode(raw.value, raw.version)[0]
    assert record.state is (CtState.SYN_RECV if syn_ack else CtState.ESTABLISHED)
    return manager, lib, cache, ct, (ZONE, record.orig, record.serial)


def frame(reply: bool, flags: str = "A") -> bytes:
    src, dst, sport, dport = ("10.0.0.2", "10.0.0.1", 80, 40000)
    if not reply:
        src, dst, sport, dport = dst, src, dport, sport
    return bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags))


def learn(cache: FlowCache, dep: Hashable, reply: bool, replies: tuple[bool, ...] = ()) -> None:
    found = frame_key(frame(reply))
    assert found is not None
    assert found[0] is not None
    iface, out = ("vm-b", "vm-a") if reply else ("vm-a", "vm-b")
    outputs = (Output(out, Rewrite()),)
    entry = Entry(outputs, (), ((dep, 0),), time.time(), replies or (reply,))
    cache.insert((iface, found[0], False), entry)


def cstate(lib: Lib) -> tuple[int, int, int]:
    (value,) = lib.maps[CSTATES].values()
    last_ns, packets, st = struct.unpack("=QQQ", value)
    return last_ns, packets, st


def test_both_directions_learned_hand_the_connection_to_the_kernel() -> None:
    manager, lib, cache, _ct, dep = setup()
    learn(cache, dep, reply=False)
    manager.flows.commit_now()
    assert len(lib.maps[FLOWS]) == 1  # one direction: an exact flow, as before
    assert manager.conns.owned == {}
    learn(cache, dep, reply=True)
    assert lib.maps[FLOWS] == {}  # the exact flows of the connection are gone
    assert len(lib.maps[CONNS]) == 2
    assert cstate(lib)[2] == CtState.ESTABLISHED
    assert not cache.epochs.valid(((dep, 0),))  # user space's exact entries too
    directions = sorted(v[VALUE_SIZE + 8] for v in lib.maps[CONNS].values())
    assert directions == [0, 1]
    assert manager.stats()["conns"]["owned"] == 1  # type: ignore[index]


def test_a_slow_path_frame_of_the_connection_folds_the_kernels_state_back() -> None:
    manager, lib, cache, ct, dep = setup()
    learn(cache, dep, reply=False)
    learn(cache, dep, reply=True)
    last_ns, _, _ = cstate(lib)
    key = struct.pack("=Q", 1)
    lib.maps[CSTATES][key] = struct.pack("=QQQ", last_ns + 1, 3, CtState.FIN_WAIT | FIN_ORIG << 8)
    assert cache.fold_back is not None
    cache.fold_back([frame(reply=True, flags="A")])
    assert lib.maps[CONNS] == {}
    assert lib.maps[CSTATES] == {}
    assert manager.conns.owned == {}
    for reply in (False, True):  # the primary and its mirror
        raw = ct.store.get(ct.key(ZONE, tup(reply)))
        assert raw is not None
        record = decode(raw.value, raw.version)[0]
        assert (record.state, record.flags & FIN_ORIG) == (CtState.FIN_WAIT, FIN_ORIG)
        assert record.expiry > time.time() + ct.timeouts.fin_wait - 2


def test_a_flush_and_a_state_change_seen_by_the_slow_path_take_it_back() -> None:
    manager, lib, cache, _ct, dep = setup()
    learn(cache, dep, reply=False)
    learn(cache, dep, reply=True)
    manager.flushed()
    assert lib.maps[CONNS] == {}
    assert manager.conns.owned == {}
    learn(cache, dep, reply=False)
    learn(cache, dep, reply=True)
    assert manager.conns.owned
    manager.conn_changed(dep)
    assert lib.maps[CONNS] == {}
    assert manager.conns.owned == {}


def test_connections_that_must_stay_in_user_space_stay() -> None:
    # a shared store: other hosts read the records while the kernel would own them
    manager, lib, cache, _ct, dep = setup(SharedStore())
    learn(cache, dep, reply=False)
    learn(cache, dep, reply=True)
    assert lib.maps.get(CONNS, {}) == {}
    assert not manager.conns.enabled
    # one direction twice; directions that disagree between records
    manager, lib, cache, _ct, dep = setup()
    learn(cache, dep, reply=False)
    learn(cache, dep, reply=False)
    other = (dep[0] + 1, dep[1], dep[2])
    found = frame_key(frame(True))
    assert found is not None
    assert found[0] is not None
    entry = Entry(
        (Output("vm-a", Rewrite()),), (), ((dep, 0), (other, 0)), time.time(), (True, False)
    )
    cache.insert(("vm-b", found[0], False), entry)
    assert lib.maps.get(CONNS, {}) == {}
    # a record that is not ESTABLISHED any more
    manager, lib, cache, ct, dep = setup()
    learn(cache, dep, reply=False)
    ct.process(ZONE, tup(False), 0x11, time.time())  # FIN: FIN_WAIT
    learn(cache, dep, reply=True)
    assert lib.maps.get(CONNS, {}) == {}
    assert manager.conns.counters["refused"] == 1


def half(cache: FlowCache, dep: Hashable, reply: bool) -> bool:
    """A direction offered as a half (the SYN-ACK's, or the predicted first ACK's)."""
    found = frame_key(frame(reply))
    assert found is not None
    assert found[0] is not None
    iface, out = ("vm-b", "vm-a") if reply else ("vm-a", "vm-b")
    entry = Entry((Output(out, Rewrite()),), (), ((dep, 0),), time.time(), (reply,))
    assert cache.half_learned is not None
    return cache.half_learned((iface, found[0], False), entry)


def test_handed_over_at_the_syn_ack_in_syn_recv() -> None:
    """The SYN-ACK's half and the predicted ACK's (``offload/handshake.py``): the kernel
    takes the connection in SYN_RECV; folded back unmoved, the records are untouched;
    moved by the first ACK, they are ESTABLISHED."""
    manager, lib, cache, ct, dep = setup(syn_ack=True)
    assert half(cache, dep, reply=True)
    assert manager.conns.owned == {}  # one half waits for the other
    assert half(cache, dep, reply=False)
    assert len(lib.maps[CONNS]) == 2
    assert cstate(lib)[2] == CtState.SYN_RECV
    key = ct.key(ZONE, tup(False))
    version = ct.store.get(key).version  # type: ignore[union-attr]
    manager.conns.release_all()  # nothing moved: nothing written
    assert ct.store.get(key).version == version  # type: ignore[union-attr]
    assert half(cache, dep, reply=True)
    assert half(cache, dep, reply=False)
    last_ns, _, _ = cstate(lib)
    (cid,) = lib.maps[CSTATES]
    lib.maps[CSTATES][cid] = struct.pack("=QQQ", last_ns + 1, 1, CtState.ESTABLISHED)
    manager.conns.release_all()
    raw = ct.store.get(key)
    assert raw is not None
    assert decode(raw.value, raw.version)[0].state is CtState.ESTABLISHED


def test_no_halves_without_kernel_connections() -> None:
    _manager, _lib, cache, _ct, _dep = setup(SharedStore(), syn_ack=True)
    assert cache.half_learned is None  # (the forwarder then remembers no SYN either)
