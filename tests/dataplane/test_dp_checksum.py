"""Internet checksum against RFC 1071's example, a word-loop reference, Scapy, and RFC 1624."""

from __future__ import annotations

import struct

from hypothesis import assume, given
from hypothesis import strategies as st
from scapy.utils import checksum as scapy_checksum

from dataplane.dp_strategies import FAST
from netvirt.dataplane.headers import checksum as cs


def reference_checksum(data: bytes) -> int:
    """RFC 1071 4.1 in its plainest form: add words, fold carries, complement."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert cs.ones_sum(data) == 0xDDF2
    assert cs.internet_checksum(data) == 0x220D


def test_zero_and_all_ones_edges() -> None:
    assert cs.internet_checksum(b"") == 0xFFFF
    assert cs.internet_checksum(bytes(20)) == 0xFFFF
    assert cs.internet_checksum(b"\xff\xff") == 0
    assert cs.internet_checksum(b"\x12\x34\xed\xcb") == 0


def test_odd_length_pads_on_the_right() -> None:
    assert cs.internet_checksum(b"\x01") == ~0x0100 & 0xFFFF
    assert cs.internet_checksum(b"\x01\x02\x03") == reference_checksum(b"\x01\x02\x03")


@FAST
@given(st.binary(max_size=2000))
def test_matches_reference_and_scapy(data: bytes) -> None:
    expected = reference_checksum(data)
    assert cs.internet_checksum(data) == expected
    assert cs.internet_checksum(memoryview(bytearray(data))) == expected
    assert scapy_checksum(data) == expected


@FAST
@given(st.binary(max_size=200).map(lambda b: b if len(b) % 2 == 0 else b + b"\x00"))
def test_inserted_checksum_verifies(data: bytes) -> None:
    with_sum = data + cs.internet_checksum(data).to_bytes(2, "big")
    assert cs.internet_checksum(with_sum) == 0


@FAST
@given(st.binary(min_size=4, max_size=64).filter(lambda b: len(b) % 2 == 0), st.data())
def test_update16_equals_recompute(data: bytes, draw: st.DataObject) -> None:
    pos = draw.draw(st.integers(0, len(data) // 2 - 1)) * 2
    new = draw.draw(st.integers(0, 0xFFFF))
    changed = data[:pos] + new.to_bytes(2, "big") + data[pos + 2 :]
    assume(any(changed))  # RFC 1624 3: the all-zero case has two valid answers
    old = int.from_bytes(data[pos : pos + 2], "big")
    updated = cs.update16(cs.internet_checksum(data), old, new)
    assert updated == cs.internet_checksum(changed)


@FAST
@given(st.binary(min_size=8, max_size=64).filter(lambda b: len(b) % 2 == 0), st.data())
def test_update32_equals_recompute(data: bytes, draw: st.DataObject) -> None:
    pos = draw.draw(st.integers(0, len(data) // 2 - 2)) * 2
    new = draw.draw(st.integers(0, 0xFFFF_FFFF))
    changed = data[:pos] + new.to_bytes(4, "big") + data[pos + 4 :]
    assume(any(changed))
    old = int.from_bytes(data[pos : pos + 4], "big")
    assert cs.update32(cs.internet_checksum(data), old, new) == cs.internet_checksum(changed)


@FAST
@given(st.binary(min_size=16, max_size=80).filter(lambda b: len(b) % 2 == 0), st.data())
def test_update_bytes_equals_recompute(data: bytes, draw: st.DataObject) -> None:
    pos = draw.draw(st.integers(0, (len(data) - 16) // 2)) * 2
    new = draw.draw(st.binary(min_size=16, max_size=16))
    changed = data[:pos] + new + data[pos + 16 :]
    assume(any(changed))
    updated = cs.update_bytes(cs.internet_checksum(data), data[pos : pos + 16], new)
    assert updated == cs.internet_checksum(changed)


def test_pseudo_headers_match_rfc_layout() -> None:
    src, dst = 0x0A000001, 0xC0A80102
    v4 = struct.pack("!IIBBH", src, dst, 0, 17, 12)
    assert cs.internet_checksum(b"", cs.pseudo_header_v4(src, dst, 17, 12)) == reference_checksum(
        v4
    )
    s6, d6 = (0xFE80 << 112) | 1, (0xFF02 << 112) | 2
    v6 = s6.to_bytes(16, "big") + d6.to_bytes(16, "big") + struct.pack("!I3xB", 70000, 58)
    assert cs.internet_checksum(b"", cs.pseudo_header_v6(s6, d6, 58, 70000)) == reference_checksum(
        v6
    )
