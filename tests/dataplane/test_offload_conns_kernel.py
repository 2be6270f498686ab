"""Kernel connections against the user-space conntrack they stand in for (root:
BPF_PROG_TEST_RUN).

A connection is opened through ``Conntrack`` (SYN, SYN-ACK, ACK: ESTABLISHED), then
handed to the kernel's tracker as the datapath does it. For every generated packet
sequence (direction and TCP flags): the kernel serves a packet exactly when the
user-space conntrack, fed the same packets, answers it as established (the pipeline's
outcome the kernel replays), rewrites it exactly as the entry's rewrite does, and keeps
the same TCP state; the first packet it refuses goes to the datapath, whose fold-back
(``conns.KernelConns``) then leaves records equal to conntrack's own.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from netvirt.dataplane.fastpath import TCP4, TCP6, derive, frame_key
from netvirt.dataplane.fields import CT_EST, CT_INV, CT_NEW
from netvirt.dataplane.headers.checksum import internet_checksum
from netvirt.dataplane.nf.codec import CtState, CtTuple, decode
from netvirt.dataplane.nf.conntrack import Conntrack
from netvirt.dataplane.offload import bpf
from netvirt.dataplane.offload.conns import KernelConn, KernelConns, conn_key, frame_tuple
from netvirt.dataplane.offload.manager import pack_key, pack_value
from netvirt.state.memory import MemoryStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs needs root")

TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
LO = 1
CLIENT, SERVER = ("10.0.0.1", 40000), ("10.0.0.2", 80)
CLIENT6, SERVER6 = ("fd00::1", 40000), ("fd00::2", 80)
MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")
ZONE = 7
CID = 99
FLAGS = {
    "A": 0x10, "PA": 0x18, "FA": 0x11, "F": 0x01, "R": 0x04, "RA": 0x14, "S": 0x02,
    "SA": 0x12, "": 0x00, "SF": 0x03, "SR": 0x06, "FPA": 0x19, "U": 0x20,
}  # fmt: skip


@pytest.fixture(scope="module")
def loaded() -> Iterator[bpf.Loaded]:
    found = bpf.load()
    assert found.punt_check_fd >= 0
    assert found.conns_fd >= 0
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # `punt` and `forward` share a per-CPU slot
    yield found
    os.sched_setaffinity(0, cpus)
    found.close()


def _frame(reply: bool, flags: int, ttl: int = 64, v6: bool = False) -> bytes:
    client, server = (CLIENT6, SERVER6) if v6 else (CLIENT, SERVER)
    (src, sport), (dst, dport) = (server, client) if reply else (client, server)
    mac_src, mac_dst = (MACS[1], MACS[0]) if reply else MACS
    ip = IPv6(src=src, dst=dst, hlim=ttl) if v6 else IP(src=src, dst=dst, ttl=ttl)
    packet = Ether(src=mac_src, dst=mac_dst) / ip
    return bytes(packet / TCP(sport=sport, dport=dport, flags=flags) / b"data")


def _routed(frame: bytes) -> bytes:
    """A router's rewrite of ``frame``: new MACs, TTL minus one, header checksum."""
    out = bytearray(frame)
    out[0:6], out[6:12] = bytes.fromhex("0a0000000009"), bytes.fromhex("0a0000000008")
    if frame[12:14] == b"\x86\xdd":
        out[21] -= 1
        return bytes(out)
    out[22] -= 1
    out[24:26] = b"\0\0"
    out[24:26] = internet_checksum(out[14:34]).to_bytes(2, "big")
    return bytes(out)


def _tuple(reply: bool, v6: bool = False) -> CtTuple:
    client, server = (CLIENT6, SERVER6) if v6 else (CLIENT, SERVER)
    (src, sport), (dst, dport) = (server, client) if reply else (client, server)
    ip = [int(ipaddress.ip_address(a)) for a in (src, dst)]
    return CtTuple(6 if v6 else 4, 6, ip[0], ip[1], sport, dport)


def _map(loaded: bpf.Loaded, fd: int, key: bytes, value: bytes | None) -> None:
    kb = ctypes.create_string_buffer(key, len(key))
    if value is None:
        loaded.lib.bpf_map_delete_elem(fd, kb)
        return
    vb = ctypes.create_string_buffer(value, len(value))
    assert loaded.lib.bpf_map_update_elem(fd, kb, vb, 0) == 0


def _established(ct: Conntrack, now: float, v6: bool = False, syn_ack: bool = False) -> None:
    """SYN, SYN-ACK and ACK through ``ct`` (``syn_ack``: the first two, SYN_RECV)."""
    steps = ((False, 0x02), (True, 0x12), (False, 0x10))
    for reply, flags in steps[:2] if syn_ack else steps:
        result = ct.process(ZONE, _tuple(reply, v6), flags, now, commit=not reply)
        assert result.state & CT_EST or result.state & CT_NEW


def _record(ct: Conntrack, v6: bool = False) -> Any:
    raw = ct.store.get(ct.key(ZONE, _tuple(False, v6)))
    assert raw is not None
    return decode(raw.value, raw.version)[0]


class _Epochs:
    def bump(self, conn: object) -> None:
        pass


def _hand_over(
    loaded: bpf.Loaded, ct: Conntrack, v6: bool = False
) -> tuple[KernelConns, dict[bool, Any]]:
    """Both directions in the kernel as ``KernelConns`` installs them, with their rewrites."""
    kernel = KernelConns(loaded)
    kernel.bind(ct, _Epochs())
    assert kernel.enabled, kernel.why
    rewrites: dict[bool, Any] = {}
    keys = []
    for reply in (False, True):
        frame = _frame(reply, 0x10, v6=v6)
        found = frame_key(frame)
        assert found is not None
        assert found[0] is not None
        layout = TCP6 if v6 else TCP4
        rewrite = derive(frame, _routed(frame), layout, False)
        assert rewrite is not None
        rewrites[reply] = rewrite
        value = pack_value(LO, rewrite, 0, layout)
        assert value is not None
        key = conn_key(pack_key(LO, layout.name, found[0]))
        assert key is not None
        keys.append(key)
        tail = struct.pack("=QII", CID, int(reply), 0)
        _map(loaded, loaded.conns_fd, key, value + tail)
    entry = _record(ct, v6)
    state = struct.pack("=QQQ", time.monotonic_ns(), 0, int(entry.state))
    _map(loaded, loaded.cstates_fd, struct.pack("=Q", CID), state)
    tuples = tuple(frame_tuple(_frame(r, 0x10, v6=v6)) or b"" for r in (False, True))
    dep = (ZONE, entry.orig, entry.serial)
    state = int(entry.state)  # ESTABLISHED, or SYN_RECV when handed over at the SYN-ACK
    kc = KernelConn((keys[0], keys[1]), (tuples[0], tuples[1]), (LO, LO), (dep,), state, 0)
    kernel.owned[CID] = kc
    kernel.by_dep[dep] = CID
    for tup in tuples:
        kernel.by_tuple[tup] = CID
    return kernel, rewrites


packets = st.lists(st.tuples(st.booleans(), st.sampled_from(sorted(FLAGS))), max_size=12)


def _kernel_state(loaded: bpf.Loaded) -> int:
    kb = ctypes.create_string_buffer(struct.pack("=Q", CID), 8)
    vb = ctypes.create_string_buffer(24)
    assert loaded.lib.bpf_map_lookup_elem(loaded.cstates_fd, kb, vb) == 0
    return int(struct.unpack("=QQQ", vb.raw)[2] & 0xFF)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets, st.booleans(), st.booleans())
def test_the_kernel_tracks_a_connection_as_conntrack_does(
    loaded: bpf.Loaded, sequence: list[tuple[bool, str]], v6: bool, syn_ack: bool
) -> None:
    """``syn_ack``: handed over at the SYN-ACK (SYN_RECV, ``offload/handshake.py``),
    where the tracker serves only the original direction's first ACK and may leave a
    packet conntrack would pass to the datapath (conservative, never the reverse)."""
    now = time.time()
    spec = Conntrack(MemoryStore(clock=time.time))  # fed every packet: the specification
    mine = Conntrack(MemoryStore(clock=time.time))  # the kernel's records, folded back
    _established(spec, now, v6, syn_ack)
    _established(mine, now, v6, syn_ack)
    kernel, rewrites = _hand_over(loaded, mine, v6)
    try:
        for reply, name in sequence:
            flags = FLAGS[name]
            frame = _frame(reply, flags, v6=v6)
            before = _record(spec, v6)
            in_syn_recv = _kernel_state(loaded) == 2
            verdict = bpf.run_once(loaded.punt_check_fd, loaded.lib, frame, LO)[0]
            code, out = bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)
            result = spec.process(ZONE, _tuple(reply, v6), flags, time.time())
            established = bool(result.state & CT_EST) and not result.state & (CT_INV | CT_NEW)
            if verdict != 0:  # for the datapath: the slow path's answer is not a replay
                assert code == TC_ACT_OK
                assert in_syn_recv or not established, (name, reply, result)
                want = before  # the datapath then runs conntrack for this packet
                break
            assert established, (name, reply, result)  # served in the kernel: as conntrack
            if in_syn_recv:  # only the handshake's last step, original direction
                assert not reply
                assert _record(spec, v6).state in (CtState.ESTABLISHED, CtState.FIN_WAIT)
            assert code == TC_ACT_REDIRECT
            assert out[: len(frame)] == rewrites[reply].apply(frame)
        else:
            want = _record(spec, v6)
        kernel.release(CID)  # the datapath takes it back (a punt, a sweep, an exit)
        got = _record(mine, v6)
        assert (got.state, got.flags, got.mark) == (want.state, want.flags, want.mark)
    finally:
        kernel.release_all()


def test_handed_over_at_the_syn_ack_the_first_ack_establishes_it(loaded: bpf.Loaded) -> None:
    ct = Conntrack(MemoryStore(clock=time.time))
    _established(ct, time.time(), syn_ack=True)
    assert _record(ct).state is CtState.SYN_RECV
    kernel, rewrites = _hand_over(loaded, ct)
    try:
        for reply, flags in ((True, 0x10), (False, 0x02), (True, 0x12)):  # not the kernel's
            frame = _frame(reply, flags)
            assert bpf.run_once(loaded.punt_check_fd, loaded.lib, frame, LO)[0] == len(frame)
        ack = _frame(False, 0x10)
        assert bpf.run_once(loaded.punt_check_fd, loaded.lib, ack, LO)[0] == 0
        code, out = bpf.run_once(loaded.forward_fd, loaded.lib, ack, LO)
        assert code == TC_ACT_REDIRECT
        assert out[: len(ack)] == rewrites[False].apply(ack)
        assert _kernel_state(loaded) == 3
        kernel.release(CID)
        assert _record(ct).state is CtState.ESTABLISHED  # folded back
    finally:
        kernel.release_all()


@contextlib.contextmanager
def _established_in_kernel(loaded: bpf.Loaded) -> Iterator[tuple[Conntrack, KernelConns]]:
    """An established connection in conntrack, handed over to the kernel (released after)."""
    ct = Conntrack(MemoryStore(clock=time.time))
    _established(ct, time.time())
    kernel, _ = _hand_over(loaded, ct)
    try:
        yield ct, kernel
    finally:
        kernel.release_all()


def test_an_expired_connection_goes_to_the_datapath(loaded: bpf.Loaded) -> None:
    # ESTABLISHED's timeout shortened to 1 s in the kernel's copy: a last packet one full
    # conntrack timeout (days) ago is before the boot of a fresh machine (monotonic clock)
    established = struct.pack("=I", 3)
    with _established_in_kernel(loaded) as (ct, _kernel):
        _map(loaded, loaded.timeouts_fd, established, struct.pack("=Q", 10**9))
        try:
            old = time.monotonic_ns() - 2 * 10**9
            state = struct.pack("=QQQ", old, 0, 3)
            _map(loaded, loaded.cstates_fd, struct.pack("=Q", CID), state)
            frame = _frame(False, 0x10)
            assert bpf.run_once(loaded.punt_check_fd, loaded.lib, frame, LO)[0] == len(frame)
            assert bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)[0] == TC_ACT_OK
        finally:
            real = struct.pack("=Q", int(ct.timeouts.established * 1e9))
            _map(loaded, loaded.timeouts_fd, established, real)


def test_a_frame_without_punts_approval_is_not_served(loaded: bpf.Loaded) -> None:
    """No `punt` ran for it (no datapath socket): `forward` leaves a connection's frame."""
    with _established_in_kernel(loaded):
        frame = _frame(False, 0x10)
        assert bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)[0] == TC_ACT_OK


def test_a_slow_path_frame_folds_the_connection_back(loaded: bpf.Loaded) -> None:
    with _established_in_kernel(loaded) as (ct, kernel):
        fin = _frame(False, 0x11)
        assert bpf.run_once(loaded.punt_check_fd, loaded.lib, fin, LO)[0] == 0
        bpf.run_once(loaded.forward_fd, loaded.lib, fin, LO)
        kernel.fold_frames([_frame(True, 0x10, ttl=9)])  # another TTL: the same connection
        assert kernel.owned == {}
        assert int(_record(ct).state) == 4  # FIN_WAIT, from the kernel
        frame = _frame(True, 0x10)
        assert bpf.run_once(loaded.punt_check_fd, loaded.lib, frame, LO)[0] == len(frame)
