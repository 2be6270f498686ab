"""Which exact-cache entries the kernel offload mirrors, and when they leave (no root:
the kernel map is a dict behind a fake libbpf)."""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fastpath import Entry, FlowCache, Output, Rewrite, frame_key
from netvirt.dataplane.offload import bpf
from netvirt.dataplane.offload.manager import VALUE_SIZE, KernelOffload, pack_key


class FakeLib:
    """libbpf's map calls on a dict (key bytes -> value bytes)."""

    def __init__(self) -> None:
        self.maps: dict[int, dict[bytes, bytes]] = {}

    def bpf_map_update_elem(self, fd: int, key: Any, value: Any, _flags: int) -> int:
        self.maps.setdefault(fd, {})[bytes(key.raw)] = bytes(value.raw)
        return 0

    def bpf_map_delete_elem(self, fd: int, key: Any) -> int:
        return 0 if self.maps.get(fd, {}).pop(bytes(key.raw), None) is not None else -1

    def bpf_map_lookup_elem(self, fd: int, key: Any, value: Any) -> int:
        return -1

    def bpf_object__close(self, _obj: int) -> None:
        pass


FLOWS = 3


def offload(blocked: frozenset[str] = frozenset()) -> tuple[KernelOffload, FakeLib, FlowCache]:
    lib = FakeLib()
    loaded = bpf.Loaded(lib, 0, 1, 2, FLOWS, 4, 5, VALUE_SIZE)  # type: ignore[arg-type]
    manager = KernelOffload(2.0, None, lambda iface: iface in blocked, lambda: 100.0, loaded)
    manager.ifindex = {"vm-a": 10, "vm-b": 11}
    cache = FlowCache(capacity=8)
    cache.attach(manager)
    return manager, lib, cache


def frame(sport: int = 1) -> tuple[Hashable, bytes]:
    data = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=sport, dport=2) / b"x")
    found = frame_key(data)
    assert found is not None
    assert found[0] is not None
    return ("vm-a", found[0], False), found[0]


def entry(dest: Hashable = "vm-b", drops: tuple[DropReason, ...] = ()) -> Entry:
    return Entry((Output(dest, Rewrite()),), drops, (("conn", 1),), 99.5)


def test_an_entry_between_local_ports_goes_down_with_its_key_and_deadline() -> None:
    manager, lib, cache = offload()
    key, covered = frame()
    cache.insert(key, entry())
    kernel = lib.maps[FLOWS]
    assert list(kernel) == [pack_key(10, "udp4", covered)]
    value = next(iter(kernel.values()))
    assert len(value) == VALUE_SIZE
    deadline = int.from_bytes(value[:8], "little")
    out_ifindex = int.from_bytes(value[24:28], "little")
    assert out_ifindex == 11
    # learned 0.5 s ago by the cache's clock: 1.5 s of the 2 s left on the monotonic clock
    left = deadline - time.monotonic_ns()
    assert 1.4e9 < left <= 1.5e9
    assert (manager.installed, manager.refused, manager.errors) == (1, 0, 0)


def test_entries_the_kernel_must_not_serve_stay_out() -> None:
    manager, lib, cache = offload(blocked=frozenset({"vm-b"}))
    for n, item in enumerate(
        (
            entry(dest=("geneve", "10.0.0.9")),  # a tunnel: another host
            entry(drops=(DropReason.EXPLICIT_DROP,)),
            entry(dest="vm-b"),  # policed or health-checked
            Entry((), (), (), 99.5),  # no output
        )
    ):
        key, _ = frame(sport=10 + n)
        cache.insert(key, item)
    assert lib.maps.get(FLOWS, {}) == {}
    assert manager.refused == 4


def test_entries_leave_with_a_flush_a_connection_change_and_an_eviction() -> None:
    manager, lib, cache = offload()
    keys = [frame(sport=100 + n)[0] for n in range(8)]
    for key in keys:
        cache.insert(key, entry())
    assert len(lib.maps[FLOWS]) == 8
    cache.insert(frame(sport=999)[0], entry())  # full: the oldest eighth (one) is evicted
    assert len(lib.maps[FLOWS]) == 8
    assert keys[0] not in manager.keys
    assert keys[0] not in manager.by_conn["conn"]  # an evicted entry leaves its connection too
    changed = cache.epochs.on_change  # what ConnEpochs calls when a connection changes state
    assert changed is not None
    changed("conn")
    assert lib.maps[FLOWS] == {}
    assert manager.by_conn == {}
    cache.insert(keys[1], entry())
    assert len(lib.maps[FLOWS]) == 1
    cache.sync("new rules")  # installed state changed: everything goes
    assert lib.maps[FLOWS] == {}
    assert manager.keys == {}


def test_a_relearned_entry_replaces_the_kernel_one() -> None:
    manager, lib, cache = offload()
    key, _ = frame()
    cache.insert(key, entry())
    cache.insert(key, Entry((Output("vm-a", Rewrite()),), (), (), 99.9))  # now back to a
    values = list(lib.maps[FLOWS].values())
    assert len(values) == 1
    assert int.from_bytes(values[0][24:28], "little") == 10
    cache.insert(key, entry(dest=("geneve", "10.0.0.9")))  # and now to a tunnel: gone
    assert lib.maps[FLOWS] == {}
