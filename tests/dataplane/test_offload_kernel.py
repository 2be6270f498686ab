"""The kernel offload program against the exact cache it mirrors (root: BPF_PROG_TEST_RUN).

The program must find exactly the entries whose key the exact cache computes for
a frame (``fastpath.frame_key``), refuse the frames that cache refuses, and
leave a frame with exactly the bytes ``Rewrite.apply`` gives it.
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from netvirt.dataplane.fastpath import Rewrite, derive, frame_key
from netvirt.dataplane.headers.checksum import internet_checksum
from netvirt.dataplane.offload import bpf
from netvirt.dataplane.offload.manager import KEY_BYTES, layout_of, pack_key, pack_value

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs needs root")

TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
LO = 1  # test runs take the device from the context: the loopback always exists
# entries under test live a minute: a loaded machine may pause a test between writing an
# entry and running the program for longer than a second (an expired entry is not served)
LIVE_NS = 60 * 10**9


@pytest.fixture(scope="module")
def loaded() -> bpf.Loaded:
    found = bpf.load()  # under root, an unavailable offload is a failure, not a skip
    yield found
    found.close()


def _frames() -> st.SearchStrategy[bytes]:
    mac = st.binary(min_size=6, max_size=6).map(lambda m: bytes([m[0] & 0xFE]) + m[1:])
    ip4 = st.integers(1, 2**32 - 2).map(
        lambda n: ".".join(str(n >> s & 255) for s in (24, 16, 8, 0))
    )
    port = st.integers(1, 65535)
    ttl = st.integers(1, 255)
    payload = st.binary(max_size=40)
    flags = st.sampled_from(["A", "PA", "A"])

    def ether(src: bytes, dst: bytes) -> Ether:
        return Ether(src=src.hex(":"), dst=dst.hex(":"))

    tcp4 = st.builds(
        lambda s, d, a, b, sp, dp, t, f, p: bytes(
            ether(s, d) / IP(src=a, dst=b, ttl=t) / TCP(sport=sp, dport=dp, flags=f) / p
        ),
        mac, mac, ip4, ip4, port, port, ttl, flags, payload,
    )  # fmt: skip
    udp4 = st.builds(
        lambda s, d, a, b, sp, dp, t, p: bytes(
            ether(s, d) / IP(src=a, dst=b, ttl=t) / UDP(sport=sp, dport=dp) / p
        ),
        mac, mac, ip4, ip4, port, port, ttl, payload,
    )  # fmt: skip
    icmp4 = st.builds(
        lambda s, d, a, b, i, t, p: bytes(
            ether(s, d) / IP(src=a, dst=b, ttl=t) / ICMP(type=8, id=i) / p
        ),
        mac, mac, ip4, ip4, port, ttl, payload,
    )  # fmt: skip
    icmp6 = st.builds(
        lambda s, d, i, t, p: bytes(
            ether(s, d) / IPv6(src="fd00::1", dst="fd00::2", hlim=t) / ICMPv6EchoRequest(id=i) / p
        ),
        mac, mac, port, ttl, payload,
    )  # fmt: skip
    udp6 = st.builds(
        lambda s, d, sp, dp, p: bytes(
            ether(s, d) / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=sp, dport=dp) / p
        ),
        mac, mac, port, port, payload,
    )  # fmt: skip
    return st.one_of(tcp4, udp4, icmp4, icmp6, udp6)


def _routed(frame: bytes, new_src: bytes, new_dst: bytes) -> bytes:
    """What a router does to ``frame``: new MACs, TTL (or hop limit) minus one."""
    out = bytearray(frame)
    out[0:6], out[6:12] = new_dst, new_src
    if frame[12:14] == b"\x08\x00":
        out[22] -= 1
        out[24:26] = b"\0\0"
        out[24:26] = internet_checksum(out[14:34]).to_bytes(2, "big")
    else:
        out[21] -= 1
    return bytes(out)


def _install(loaded: bpf.Loaded, key: bytes, value: bytes) -> None:
    import ctypes

    kb = ctypes.create_string_buffer(key, len(key))
    vb = ctypes.create_string_buffer(value, len(value))
    assert loaded.lib.bpf_map_update_elem(loaded.flows_fd, kb, vb, 0) == 0


def _remove(loaded: bpf.Loaded, key: bytes) -> None:
    import ctypes

    kb = ctypes.create_string_buffer(key, len(key))
    loaded.lib.bpf_map_delete_elem(loaded.flows_fd, kb)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames(), st.binary(min_size=6, max_size=6), st.binary(min_size=6, max_size=6))
def test_the_kernel_replays_a_routed_flow_byte_for_byte(
    loaded: bpf.Loaded, frame: bytes, src: bytes, dst: bytes
) -> None:
    found = frame_key(frame)
    assert found is not None
    covered, layout = found
    assert covered is not None
    if frame[22 if frame[12:14] == b"\x08\x00" else 21] < 2:
        return  # a TTL the router would not forward
    output = _routed(frame, src, dst)
    rewrite = derive(frame, output, layout, seeded=False)
    assert rewrite is not None
    value = pack_value(9, rewrite, time.monotonic_ns() + LIVE_NS, layout)
    assert value is not None  # MACs, TTL, IPv4 header checksum: all offloadable
    assert layout_of(covered) == layout.name
    assert len(covered) <= KEY_BYTES
    key = pack_key(LO, layout.name, covered)
    _install(loaded, key, value)
    try:
        verdict, served = bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)
        assert verdict == TC_ACT_REDIRECT
        assert served == rewrite.apply(frame) == output
        # any covered byte changed: another flow, the kernel leaves it alone
        other = bytearray(frame)
        other[26 if frame[12:14] == b"\x08\x00" else 25] ^= 1  # a source address bit
        if frame[12:14] == b"\x08\x00":  # keep the header checksum right for the change
            other[24:26] = (int.from_bytes(other[24:26], "big") ^ 1).to_bytes(2, "big")
        verdict, _ = bpf.run_once(loaded.forward_fd, loaded.lib, bytes(other), LO)
        assert verdict == TC_ACT_OK
    finally:
        _remove(loaded, key)


def test_frames_the_cache_refuses_are_never_served(loaded: bpf.Loaded) -> None:
    frame = bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / UDP(sport=1, dport=2)
        / b"payload"
    )
    covered, layout = frame_key(frame)  # type: ignore[misc]
    key = pack_key(LO, layout.name, covered)
    _install(loaded, key, pack_value(9, Rewrite(), time.monotonic_ns() + LIVE_NS, layout) or b"")
    try:
        assert bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)[0] == TC_ACT_REDIRECT
        bad_sum = bytearray(frame)
        bad_sum[25] ^= 0xFF  # a wrong IPv4 header checksum: the parser's drop, not a hit
        truncated = frame[:-3]  # IP total length beyond the frame
        zero_sum = bytearray(frame)
        zero_sum[40:42] = b"\0\0"  # UDP without checksum: the cache never takes it
        for malformed in (bytes(bad_sum), truncated, bytes(zero_sum)):
            assert frame_key(malformed) is None or frame_key(malformed)[0] != covered
            assert bpf.run_once(loaded.forward_fd, loaded.lib, malformed, LO)[0] == TC_ACT_OK
    finally:
        _remove(loaded, key)


def test_an_entry_past_its_grace_is_not_served(loaded: bpf.Loaded) -> None:
    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"x")
    covered, layout = frame_key(frame)  # type: ignore[misc]
    key = pack_key(LO, layout.name, covered)
    long_ago = time.monotonic_ns() - 3 * 10**9  # a datapath gone for 3 s
    _install(loaded, key, pack_value(9, Rewrite(), long_ago, layout) or b"")
    try:
        assert bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)[0] == TC_ACT_OK
    finally:
        _remove(loaded, key)


def test_a_frame_given_to_the_datapath_is_not_also_served_by_tc(loaded: bpf.Loaded) -> None:
    """A miss at `punt` (the frame goes to the datapath's ring) whose entry the datapath
    installs before TC ingress runs for that frame: `forward` must leave it, or the frame
    is delivered twice (the kernel's copy and the datapath's). A session-9 CI run caught
    one duplicate ping reply this way."""
    frame = bytes(Ether() / IP(src="10.0.0.3", dst="10.0.0.4") / UDP(sport=5, dport=6) / b"x")
    covered, layout = frame_key(frame)  # type: ignore[misc]
    key = pack_key(LO, layout.name, covered)
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # `punt` and `forward` share a per-CPU slot
    try:
        assert bpf.run_once(loaded.punt_check_fd, loaded.lib, frame, LO)[0] == len(frame)
        _install(
            loaded, key, pack_value(9, Rewrite(), time.monotonic_ns() + LIVE_NS, layout) or b""
        )
        assert bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)[0] == TC_ACT_OK
        # the flow's next frame: `punt` finds the fresh entry, `forward` serves it
        assert bpf.run_once(loaded.punt_check_fd, loaded.lib, frame, LO)[0] == 0
        assert bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)[0] == TC_ACT_REDIRECT
    finally:
        _remove(loaded, key)
        os.sched_setaffinity(0, cpus)


def _natted(frame: bytes, address: str, port: int) -> bytes:
    """``frame`` with a new source address and port (the ICMP echo id for ICMP), every
    checksum computed from scratch (Scapy), as SNAT's slow path leaves it."""
    packet = Ether(frame)
    if IP in packet:
        packet[IP].src = address
        del packet[IP].chksum
        inner = packet[IP].payload
    else:
        packet[IPv6].src = "fd00::99"
        inner = packet[IPv6].payload
    if hasattr(inner, "sport"):
        inner.sport = port
    else:
        inner.id = port
    if hasattr(inner, "chksum"):
        del inner.chksum
    elif hasattr(inner, "cksum"):
        del inner.cksum
    return bytes(packet)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames(), st.sampled_from(["192.0.2.1", "203.0.113.77", "10.0.0.1"]), st.integers(1, 65535))
def test_the_kernel_replays_snat_with_its_checksums(
    loaded: bpf.Loaded, frame: bytes, address: str, port: int
) -> None:
    """Addresses and ports rewritten: the kernel's incremental L4 checksum update gives
    the bytes the slow path's full recomputation gave."""
    found = frame_key(frame)
    assert found is not None
    covered, layout = found
    assert covered is not None
    output = _natted(frame, address, port)
    rewrite = derive(frame, output, layout, seeded=False)
    if rewrite is None:
        return  # (a UDP datagram the cache would not take)
    value = pack_value(9, rewrite, time.monotonic_ns() + LIVE_NS, layout)
    assert value is not None
    key = pack_key(LO, layout.name, covered)
    _install(loaded, key, value)
    try:
        verdict, served = bpf.run_once(loaded.forward_fd, loaded.lib, frame, LO)
        assert verdict == TC_ACT_REDIRECT
        assert served == output
    finally:
        _remove(loaded, key)


def test_rewrites_beyond_the_kernel_value_stay_in_user_space() -> None:
    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="A"))
    _covered, layout = frame_key(frame)  # type: ignore[misc]
    five = tuple((offset, b"\x01") for offset in (0, 2, 4, 6, 8))  # five separate patches
    assert pack_value(9, Rewrite(five, (), layout.end), 0, layout) is None
    seeded_ip = Rewrite((), ((24, 1, True, False),), layout.end)  # not a real IPv4 sum
    assert pack_value(9, seeded_ip, 0, layout) is None


def test_batched_writes_reach_the_kernel_map(loaded: bpf.Loaded) -> None:
    import ctypes

    from netvirt.dataplane.offload.kmap import BatchedMap
    from netvirt.dataplane.offload.manager import VALUE_SIZE

    flows = BatchedMap(loaded.lib, loaded.flows_fd)
    assert flows.batched
    keys = [pack_key(LO, "udp4", bytes([n]) * 32) for n in range(5)]
    for n, key in enumerate(keys):
        flows.put(key, bytes([n + 1]) * VALUE_SIZE)
    flows.commit_now()
    assert flows.syscalls == 1  # one batch for five entries

    def lookup(key: bytes) -> bytes | None:
        kb = ctypes.create_string_buffer(key, len(key))
        vb = ctypes.create_string_buffer(VALUE_SIZE)
        return vb.raw if loaded.lib.bpf_map_lookup_elem(loaded.flows_fd, kb, vb) == 0 else None

    assert [lookup(k) for k in keys] == [bytes([n + 1]) * VALUE_SIZE for n in range(5)]
    _remove(loaded, keys[2])  # gone behind its back: the batch delete goes on past it
    for key in keys:
        flows.delete(key)
    flows.commit_deletes()
    assert [lookup(k) for k in keys] == [None] * 5
    assert flows.live == {}
