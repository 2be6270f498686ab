"""Connections the kernel makes from a SYN template (root: BPF_PROG_TEST_RUN).

A template is learned the way the datapath learns it (``offload/templates.py``): one
connection's two directions through a router with masquerade SNAT, derived from the
frames that connection's slow path produced. Then, for generated client source ports
and SNAT ports, the kernel must make the connection from the SYN alone and leave every
frame of its handshake with exactly the bytes a router translating to that SNAT port
produces (scapy computes the expected frames from scratch, checksums included), report
the connection, and move its TCP state as ``nf/tcp.py`` does from SYN_SENT on.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from netvirt.dataplane.fastpath import TCP4, derive, frame_key
from netvirt.dataplane.nf.codec import CtState
from netvirt.dataplane.nf.tcp import tcp_step
from netvirt.dataplane.offload import bpf
from netvirt.dataplane.offload.conns import conn_key
from netvirt.dataplane.offload.manager import pack_key, pack_value
from netvirt.dataplane.offload.templates import (
    FIRST_KERNEL_ID,
    pack_template,
    template_key,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs needs root")

TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
LO = 1
CLIENT, SERVER, SNAT = "10.248.0.1", "10.248.1.2", "10.248.2.1"
C_MAC, RIN_MAC, ROUT_MAC, S_MAC = (
    "02:00:00:f8:00:01", "02:00:00:f8:00:fe", "02:00:00:f8:02:fe", "02:00:00:f8:01:02",
)  # fmt: skip
LEARN_SPORT = 40000
DPORT = 80
TID = 5


def _tcp(macs: tuple[str, str], ips: tuple[str, str], ttl: int, ports: tuple[int, int],
         flags: str, seq: int, ack: int) -> bytes:  # fmt: skip
    return bytes(
        Ether(src=macs[0], dst=macs[1])
        / IP(src=ips[0], dst=ips[1], ttl=ttl)
        / TCP(sport=ports[0], dport=ports[1], flags=flags, seq=seq, ack=ack)
    )


def _client(sport: int, flags: str, seq: int = 1000, ack: int = 0) -> bytes:
    """What the client sends (to the router's inside MAC)."""
    return _tcp((C_MAC, RIN_MAC), (CLIENT, SERVER), 64, (sport, DPORT), flags, seq, ack)


def _client_out(port: int, flags: str, seq: int = 1000, ack: int = 0) -> bytes:
    """What a router translating the client to SNAT:``port`` sends on."""
    return _tcp((ROUT_MAC, S_MAC), (SNAT, SERVER), 63, (port, DPORT), flags, seq, ack)


def _server(port: int, flags: str, seq: int = 5000, ack: int = 1001) -> bytes:
    return _tcp((S_MAC, ROUT_MAC), (SERVER, SNAT), 64, (DPORT, port), flags, seq, ack)


def _server_out(sport: int, flags: str, seq: int = 5000, ack: int = 1001) -> bytes:
    return _tcp((RIN_MAC, C_MAC), (SERVER, CLIENT), 63, (DPORT, sport), flags, seq, ack)


def _ckey(frame: bytes) -> bytes:
    """The ``conns`` key of ``frame``'s direction (the exact key of it as an ACK, flags zeroed)."""
    frame = frame[:47] + b"\x10" + frame[48:]
    found = frame_key(frame)
    assert found is not None
    assert found[0] is not None
    key = conn_key(pack_key(LO, TCP4.name, found[0]))
    assert key is not None
    return key


def _value(frame: bytes, out: bytes) -> bytes:
    rewrite = derive(frame, out, TCP4, False)
    assert rewrite is not None
    value = pack_value(LO, rewrite, 0, TCP4)
    assert value is not None
    return value


def _map(loaded: bpf.Loaded, fd: int, key: bytes | None, value: bytes | None) -> int:
    kb = ctypes.create_string_buffer(key, len(key)) if key is not None else None
    if value is None:
        return int(loaded.lib.bpf_map_delete_elem(fd, kb))
    vb = ctypes.create_string_buffer(value, len(value))
    return int(loaded.lib.bpf_map_update_elem(fd, kb, vb, 0))


_REPORTS: list[bytes] = []  # read from the ``made`` ring, not yet looked at


def _report(loaded: bpf.Loaded) -> bytes | None:
    """The kernel's next made-connection report (``made``, a ring buffer)."""
    _REPORTS.extend(loaded.made_ring.read())
    return _REPORTS.pop(0) if _REPORTS else None


def _supply_keys(loaded: bpf.Loaded) -> list[bytes]:
    keys, prev = [], None
    kb = ctypes.create_string_buffer(8)
    while loaded.lib.bpf_map_get_next_key(loaded.tpl_ports_fd, prev, kb) == 0:
        keys.append(kb.raw)
        prev = ctypes.create_string_buffer(kb.raw, 8)
    return keys


def _drain(loaded: bpf.Loaded) -> None:
    for key in _supply_keys(loaded):
        _map(loaded, loaded.tpl_ports_fd, key, None)
    while _report(loaded) is not None:
        pass


def _head(loaded: bpf.Loaded) -> int:
    """The kernel's next supply sequence number of the test template (``struct tpl``)."""
    kb = ctypes.create_string_buffer(TKEY[0], len(TKEY[0]))
    vb = ctypes.create_string_buffer(440)
    assert loaded.lib.bpf_map_lookup_elem(loaded.tpls_fd, kb, vb) == 0
    return int(struct.unpack_from("=I", vb.raw, 2 * 176 + 76 + 4)[0])


def _give(loaded: bpf.Loaded, port: int, after: int = 0) -> int:
    """Post ``port`` in the template's supply ``after`` places past the kernel's head."""
    seq = _head(loaded) + after
    assert (
        _map(loaded, loaded.tpl_ports_fd, struct.pack("=II", TID, seq), port.to_bytes(2, "big"))
        == 0
    )
    return seq


def _next_port(loaded: bpf.Loaded) -> int | None:
    """The port at the template's head (the next one the kernel takes), if any."""
    kb = ctypes.create_string_buffer(struct.pack("=II", TID, _head(loaded)), 8)
    vb = ctypes.create_string_buffer(2)
    if loaded.lib.bpf_map_lookup_elem(loaded.tpl_ports_fd, kb, vb) != 0:
        return None
    return int.from_bytes(vb.raw, "big")


TKEY: list[bytes] = [b""]


def _stat(loaded: bpf.Loaded, which: int) -> int:
    ncpu = os.cpu_count() or 1
    kb = ctypes.create_string_buffer(struct.pack("=I", which), 4)
    vb = ctypes.create_string_buffer(8 * 512)
    assert loaded.lib.bpf_map_lookup_elem(loaded.stats_fd, kb, vb) == 0
    return sum(struct.unpack_from(f"={ncpu}Q", vb.raw))


@pytest.fixture(scope="module")
def loaded() -> Iterator[bpf.Loaded]:
    found = bpf.load()
    assert min(found.tpls_fd, found.tpl_ports_fd, found.made_fd, found.next_conn_fd) >= 0
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # `punt` and `forward` share a per-CPU slot
    for state in range(1, 8):  # conntrack's timeouts (a minute is plenty for a test)
        _map(found, found.timeouts_fd, struct.pack("=I", state), struct.pack("=Q", 60 * 10**9))
    _map(found, found.next_conn_fd, struct.pack("=I", 0), struct.pack("=Q", FIRST_KERNEL_ID))
    yield found
    os.sched_setaffinity(0, cpus)
    found.close()


@pytest.fixture
def template(loaded: bpf.Loaded) -> Iterator[bytes]:
    """A template learned from a connection from LEARN_SPORT kept as the SNAT port (conntrack
    tries the source port first; a port change is one patch more than a value holds)."""
    syn = _client(LEARN_SPORT, "S")
    syn_ack = _server(LEARN_SPORT, "SA")
    orig = _value(syn, _client_out(LEARN_SPORT, "S"))
    reply = _value(syn_ack, _server_out(LEARN_SPORT, "SA"))
    tkey = template_key(_ckey(syn))
    assert tkey is not None
    assert _map(loaded, loaded.tpls_fd, tkey, pack_template(orig, reply, _ckey(syn_ack), TID)) == 0
    _drain(loaded)
    TKEY[0] = tkey
    yield tkey
    _map(loaded, loaded.tpls_fd, tkey, None)
    _drain(loaded)


def _run(loaded: bpf.Loaded, frame: bytes) -> tuple[int, int, bytes]:
    verdict = bpf.run_once(loaded.punt_check_fd, loaded.lib, frame, LO)[0]
    code, out = bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)
    return verdict, code, out[: len(frame)]


def _forget(loaded: bpf.Loaded, sport: int, port: int, conn: int | None) -> None:
    _map(loaded, loaded.conns_fd, _ckey(_client(sport, "A")), None)
    _map(loaded, loaded.conns_fd, _ckey(_server(port, "A")), None)
    if conn is not None:
        _map(loaded, loaded.cstates_fd, struct.pack("=Q", conn), None)


def _state(loaded: bpf.Loaded, conn: int) -> int:
    kb = ctypes.create_string_buffer(struct.pack("=Q", conn), 8)
    vb = ctypes.create_string_buffer(24)
    assert loaded.lib.bpf_map_lookup_elem(loaded.cstates_fd, kb, vb) == 0
    return int(struct.unpack("=QQQ", vb.raw)[2])


def _made(loaded: bpf.Loaded) -> tuple[int, int, int, int]:
    raw = _report(loaded)
    assert raw is not None
    conn, _ns, tid, sport, port = struct.unpack("=QQIHH", raw)
    return (
        conn,
        tid,
        int.from_bytes(struct.pack("=H", sport), "big"),
        int.from_bytes(struct.pack("=H", port), "big"),
    )


ports = st.integers(1024, 65535)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ports, ports)
def test_a_syn_of_a_template_is_made_and_served_byte_for_byte(
    loaded: bpf.Loaded, template: bytes, sport: int, port: int
) -> None:
    _give(loaded, port)
    conn = None
    try:
        verdict, code, out = _run(loaded, _client(sport, "S"))
        assert verdict == 0
        assert code == TC_ACT_REDIRECT
        assert out == _client_out(port, "S")
        conn, tid, got_sport, got_port = _made(loaded)
        assert (tid, got_sport, got_port) == (TID, sport, port)
        assert _state(loaded, conn) == CtState.SYN_SENT
        # a retransmitted SYN: the same connection, served again
        assert _run(loaded, _client(sport, "S")) == (0, TC_ACT_REDIRECT, _client_out(port, "S"))
        assert _report(loaded) is None
        # the server's SYN-ACK to the SNAT port: back to the client's port
        verdict, code, out = _run(loaded, _server(port, "SA"))
        assert (verdict, code) == (0, TC_ACT_REDIRECT)
        assert out == _server_out(sport, "SA")
        assert _state(loaded, conn) == CtState.SYN_RECV
        # the client's first ACK (the tracker from SYN_RECV on, as before)
        verdict, code, out = _run(loaded, _client(sport, "A", seq=1001, ack=5001))
        assert (verdict, code) == (0, TC_ACT_REDIRECT)
        assert out == _client_out(port, "A", seq=1001, ack=5001)
        assert _state(loaded, conn) == CtState.ESTABLISHED
        verdict, code, out = _run(loaded, _server(port, "PA", seq=5001, ack=1001))
        assert out == _server_out(sport, "PA", seq=5001, ack=1001)
    finally:
        _forget(loaded, sport, port, conn)


def test_without_a_free_port_the_syn_goes_to_the_datapath(
    loaded: bpf.Loaded, template: bytes
) -> None:
    before = _stat(loaded, 9)
    syn = _client(41000, "S")
    verdict, code, _out = _run(loaded, syn)
    assert verdict == len(syn)
    assert code == TC_ACT_OK
    assert _stat(loaded, 9) == before + 1
    assert _report(loaded) is None


def test_a_taken_reply_key_leaves_the_syn_to_the_datapath_and_the_port_free(
    loaded: bpf.Loaded, template: bytes
) -> None:
    """The SNAT port's reply tuple is another kernel connection's: nothing is made."""
    blocker = _ckey(_server(50000, "A"))
    value = bytes(176) + struct.pack("=QIHBB", 12345, 1, 0, 0, 0)
    assert _map(loaded, loaded.conns_fd, blocker, value) == 0
    try:
        _give(loaded, 50000)
        before = _stat(loaded, 10)
        syn = _client(41001, "S")
        verdict, code, _out = _run(loaded, syn)
        assert (verdict, code) == (len(syn), TC_ACT_OK)
        assert _stat(loaded, 10) == before + 1
        assert _report(loaded) is None
        assert _next_port(loaded) == 50000  # back, still the next one
        assert _map(loaded, loaded.conns_fd, _ckey(_client(41001, "A")), None) != 0  # none
    finally:
        _map(loaded, loaded.conns_fd, blocker, None)


def test_other_syns_are_not_templated(loaded: bpf.Loaded, template: bytes) -> None:
    """Another server port, a SYN-ACK or a SYN with ACK from the client: no template."""
    _give(loaded, 50001)
    for frame in (
        bytes(
            Ether(src=C_MAC, dst=RIN_MAC)
            / IP(src=CLIENT, dst=SERVER)
            / TCP(sport=41002, dport=81, flags="S")
        ),
        _client(41002, "SA"),
        _client(41002, "SF"),
    ):
        verdict, code, _out = _run(loaded, frame)
        assert (verdict, code) == (len(frame), TC_ACT_OK)
    assert _report(loaded) is None
    assert _next_port(loaded) == 50001


FLAGS = {"S": 0x02, "SA": 0x12, "A": 0x10, "PA": 0x18, "FA": 0x11, "R": 0x04, "RA": 0x14,
         "F": 0x01, "": 0x00, "SR": 0x06, "SF": 0x03, "U": 0x20}  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(sorted(FLAGS))), max_size=8))
def test_from_syn_sent_the_tracker_steps_as_conntrack(
    loaded: bpf.Loaded, template: bytes, sequence: list[tuple[bool, str]]
) -> None:
    """Every packet the kernel serves moves its state exactly as ``tcp_step`` does; the
    handshake's own steps (SYN retransmitted, SYN-ACK, first ACK) are served."""
    sport, port = 42000, 52000
    _give(loaded, port)
    conn = None
    try:
        assert _run(loaded, _client(sport, "S"))[0] == 0
        conn = _made(loaded)[0]
        state, fins = CtState.SYN_SENT, 0
        for reply, name in sequence:
            flags = FLAGS[name]
            frame = _server(port, name) if reply else _client(sport, name)
            verdict, code, _out = _run(loaded, frame)
            want = tcp_step(state, fins, reply, flags)
            handshake = (state, reply, flags) in (
                (CtState.SYN_SENT, False, 0x02), (CtState.SYN_SENT, True, 0x12),
                (CtState.SYN_RECV, False, 0x10),
            )  # fmt: skip
            if verdict != 0:
                assert code == TC_ACT_OK
                assert not handshake, (state, name, reply)
                break
            assert want is not None, (state, name, reply)
            assert code == TC_ACT_REDIRECT
            state, fins = want
            st_now = _state(loaded, conn)
            if state not in (CtState.TIME_WAIT, CtState.CLOSED) or st_now & 0xFF == state:
                assert st_now == int(state) | fins << 8, (st_now, state, fins)
    finally:
        _forget(loaded, sport, port, conn)


def test_a_made_connection_taken_by_user_space_leaves_the_kernel_on_release(
    loaded: bpf.Loaded, template: bytes
) -> None:
    """``KernelConns.adopt_made`` then ``release``: both ``conns`` entries and the state
    leave the kernel (entries the kernel wrote itself: the batched map must know them)."""
    import time

    from netvirt.dataplane.nf.conntrack import Conntrack
    from netvirt.dataplane.offload.conns import KernelConns
    from netvirt.state.memory import MemoryStore

    class _Epochs:
        def bump(self, conn: object) -> None:
            pass

    sport, port = 43000, 53000
    _give(loaded, port)
    kernel = KernelConns(loaded)
    kernel.bind(Conntrack(MemoryStore(clock=time.time)), _Epochs())
    conn = None
    try:
        assert _run(loaded, _client(sport, "S"))[0] == 0
        conn = _made(loaded)[0]
        keys = (_ckey(_client(sport, "A")), _ckey(_server(port, "A")))
        assert kernel.adopt_made(conn, keys, (LO, LO), (), 0)
        assert kernel.owned
        kernel.release(conn)
        for key in keys:  # gone from the kernel map
            assert _map(loaded, loaded.conns_fd, key, None) != 0
        kb = ctypes.create_string_buffer(struct.pack("=Q", conn), 8)
        assert (
            loaded.lib.bpf_map_lookup_elem(loaded.cstates_fd, kb, ctypes.create_string_buffer(24))
            != 0
        )
    finally:
        kernel.release_all()
        _forget(loaded, sport, port, conn)


def test_an_undone_connection_sends_its_retransmitted_syn_to_the_datapath(
    loaded: bpf.Loaded, template: bytes
) -> None:
    """User space could not take a made connection (its tuple had a live record): held,
    the SYN's retransmission takes the slow path instead of being made again; then gone."""
    import time

    from netvirt.dataplane.nf.conntrack import Conntrack
    from netvirt.dataplane.offload.conns import KernelConns
    from netvirt.state.memory import MemoryStore

    class _Epochs:
        def bump(self, conn: object) -> None:
            pass

    sport, port = 44000, 54000
    for i, p in enumerate((port, port + 1)):
        _give(loaded, p, i)
    kernel = KernelConns(loaded)
    kernel.bind(Conntrack(MemoryStore(clock=time.time)), _Epochs())
    conn = None
    try:
        syn = _client(sport, "S")
        assert _run(loaded, syn)[0] == 0
        conn = _made(loaded)[0]
        keys = (_ckey(_client(sport, "A")), _ckey(_server(port, "A")))
        kernel.drop_made(conn, keys, hold=30.0)
        verdict, code, _out = _run(loaded, syn)
        assert (verdict, code) == (len(syn), TC_ACT_OK)  # the datapath's
        assert _report(loaded) is None  # nothing made
        kernel._expire_held(time.monotonic() + 31)
        assert kernel.held == {}
        for key in keys:
            assert _map(loaded, loaded.conns_fd, key, None) != 0
        assert _run(loaded, syn)[0] == 0  # a template's SYN again
        conn2 = _made(loaded)[0]
        _forget(loaded, sport, port + 1, conn2)
    finally:
        kernel.release_all()
        _forget(loaded, sport, port, conn)
        _drain(loaded)


def _syn_to(dport: int, sport: int, flags: str = "S") -> bytes:
    return bytes(
        Ether(src=C_MAC, dst=RIN_MAC)
        / IP(src=CLIENT, dst=SERVER, ttl=64)
        / TCP(sport=sport, dport=dport, flags=flags, seq=1000)
    )


def _reply_from(dport: int, port: int, flags: str = "A") -> bytes:
    return bytes(
        Ether(src=S_MAC, dst=ROUT_MAC)
        / IP(src=SERVER, dst=SNAT, ttl=64)
        / TCP(sport=dport, dport=port, flags=flags, seq=5000, ack=1001)
    )


def _supply_of(loaded: bpf.Loaded, tid: int) -> dict[int, int]:
    """seq -> port of one template's posted, untaken ports."""
    out = {}
    for key in _supply_keys(loaded):
        t, seq = struct.unpack("=II", key)
        if t == tid:
            vb = ctypes.create_string_buffer(2)
            kb = ctypes.create_string_buffer(key, 8)
            assert loaded.lib.bpf_map_lookup_elem(loaded.tpl_ports_fd, kb, vb) == 0
            out[seq] = int.from_bytes(vb.raw, "big")
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(0, 5),
    st.integers(0, 5),
    st.lists(st.booleans(), min_size=1, max_size=12),
)
def test_each_template_takes_only_its_own_supply_in_order(
    loaded: bpf.Loaded, template: bytes, n80: int, n81: int, picks: list[bool]
) -> None:
    """Two templates (server ports 80 and 81: two SNAT pools since pools are per
    destination) with their own supplies, the same port numbers in both (legal: different
    destinations): a SYN takes the next port of its own template's supply, in posting
    order, never the other's; with its supply empty it goes to the datapath (no_port)."""
    tid2, dport2 = TID + 1, 81
    syn_out = Ether(src=ROUT_MAC, dst=S_MAC) / IP(src=SNAT, dst=SERVER, ttl=63)
    syn_out /= TCP(sport=LEARN_SPORT, dport=dport2, flags="S", seq=1000)
    sa_out = Ether(src=RIN_MAC, dst=C_MAC) / IP(src=SERVER, dst=CLIENT, ttl=63)
    sa_out /= TCP(sport=dport2, dport=LEARN_SPORT, flags="SA", seq=5000, ack=1001)
    orig = _value(_syn_to(dport2, LEARN_SPORT), bytes(syn_out))
    reply = _value(_reply_from(dport2, LEARN_SPORT, "SA"), bytes(sa_out))
    tkey2 = template_key(_ckey(_syn_to(dport2, LEARN_SPORT)))
    assert tkey2 is not None
    rkey2 = _ckey(_reply_from(dport2, LEARN_SPORT, "SA"))
    assert _map(loaded, loaded.tpls_fd, tkey2, pack_template(orig, reply, rkey2, tid2)) == 0
    made: list[tuple[int, int, int, int]] = []  # (dport, sport, port, conn)
    try:
        head = _head(loaded)
        want = {DPORT: [50000 + i for i in range(n80)], dport2: [50000 + i for i in range(n81)]}
        for i, port in enumerate(want[DPORT]):
            _give(loaded, port, i)
        for i, port in enumerate(want[dport2]):  # (tid2's head starts at 0)
            assert _map(loaded, loaded.tpl_ports_fd, struct.pack("=II", tid2, i),
                        port.to_bytes(2, "big")) == 0  # fmt: skip
        for n, to81 in enumerate(picks):
            dport = dport2 if to81 else DPORT
            sport = 45000 + n
            syn = _syn_to(dport, sport)
            before = _stat(loaded, 9)
            verdict, code, out = _run(loaded, syn)
            if not want[dport]:
                assert (verdict, code) == (len(syn), TC_ACT_OK)
                assert _stat(loaded, 9) == before + 1
                assert _report(loaded) is None
                continue
            port = want[dport].pop(0)
            assert (verdict, code) == (0, TC_ACT_REDIRECT)
            assert IP(out[14:])[TCP].sport == port
            assert IP(out[14:])[TCP].dport == dport
            conn, tid, got_sport, got_port = _made(loaded)
            assert (tid, got_sport, got_port) == (tid2 if to81 else TID, sport, port)
            made.append((dport, sport, port, conn))
        # what is left is exactly what was not taken, still in order
        assert _head(loaded) == head + (n80 - len(want[DPORT]))
        assert sorted(_supply_of(loaded, TID).values()) == want[DPORT]
        assert sorted(_supply_of(loaded, tid2).values()) == want[dport2]
    finally:
        for dport, sport, port, conn in made:
            _map(loaded, loaded.conns_fd, _ckey(_syn_to(dport, sport, "A")), None)
            _map(loaded, loaded.conns_fd, _ckey(_reply_from(dport, port)), None)
            _map(loaded, loaded.cstates_fd, struct.pack("=Q", conn), None)
        _map(loaded, loaded.tpls_fd, tkey2, None)
        _drain(loaded)


@pytest.mark.parametrize("chunk", [3, 4096])  # (a bucket larger than a chunk: ENOSPC)
def test_the_sweep_reads_every_state_in_batches(
    loaded: bpf.Loaded, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``KernelConns._all_cstates`` (``bpf_map_lookup_batch``, across several calls when
    the map holds more than a chunk) answers what one lookup per connection answers."""
    from netvirt.dataplane.offload import conns as conns_mod
    from netvirt.dataplane.offload.conns import KernelConns

    monkeypatch.setattr(conns_mod, "_BATCH_CHUNK", chunk)
    kernel = KernelConns(loaded)
    cids = [(1 << 40) + i for i in range(7)]
    try:
        for i, cid in enumerate(cids):
            kernel._update(
                loaded.cstates_fd, struct.pack("=Q", cid), struct.pack("=QQQ", 1000 + i, i, i % 8)
            )
        every = kernel._all_cstates()
        assert every is not None
        for i, cid in enumerate(cids):
            assert every[cid] == kernel._cstate(cid) == (i % 8, 1000 + i)
        assert len(every) >= len(cids)
    finally:
        for cid in cids:
            kernel._delete(loaded.cstates_fd, struct.pack("=Q", cid))
