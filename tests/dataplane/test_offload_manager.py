"""Which exact-cache entries the kernel offload mirrors, and when they leave (no root:
the kernel map is a dict behind a fake libbpf)."""

from __future__ import annotations

import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from netvirt.agent.batchwork import ToTunnel
from netvirt.agent.physical import Remote
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fastpath import Entry, FlowCache, Output, Rewrite, frame_key
from netvirt.dataplane.offload import bpf
from netvirt.dataplane.offload.manager import VALUE_SIZE, KernelOffload, pack_key
from netvirt.dataplane.offload.tunnel import Route, Underlay, template


class FakeLib:
    """libbpf's map calls on a dict (key bytes -> value bytes)."""

    def __init__(self) -> None:
        self.maps: dict[int, dict[bytes, bytes]] = {}
        self.calls = 0  # map syscalls

    def bpf_map_update_elem(self, fd: int, key: Any, value: Any, _flags: int) -> int:
        self.calls += 1
        self.maps.setdefault(fd, {})[bytes(key.raw)] = bytes(value.raw)
        return 0

    def bpf_map_delete_elem(self, fd: int, key: Any) -> int:
        self.calls += 1
        return 0 if self.maps.get(fd, {}).pop(bytes(key.raw), None) is not None else -1

    def bpf_map_lookup_elem(self, fd: int, key: Any, value: Any) -> int:
        return -1

    def bpf_map_update_batch(self, fd: int, keys: Any, values: Any, count: Any, _o: Any) -> int:
        self.calls += 1
        n = count._obj.value
        ksize, vsize = len(keys.raw) // n, len(values.raw) // n
        for i in range(n):
            key = bytes(keys.raw[i * ksize : (i + 1) * ksize])
            self.maps.setdefault(fd, {})[key] = bytes(values.raw[i * vsize : (i + 1) * vsize])
        return 0

    def bpf_map_delete_batch(self, fd: int, keys: Any, count: Any, _o: Any) -> int:
        self.calls += 1
        n = count._obj.value
        size = len(keys.raw) // n
        table = self.maps.setdefault(fd, {})
        for i in range(n):
            if table.pop(bytes(keys.raw[i * size : (i + 1) * size]), None) is None:
                count._obj.value = i
                return -1
        return 0

    def bpf_object__close(self, _obj: int) -> None:
        pass

    def bpf_tc_detach(self, _hook: Any, _opts: Any) -> int:
        return 0


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
    manager.flows.commit_now()
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
    manager.flows.commit_now()
    assert len(lib.maps[FLOWS]) == 8
    cache.insert(frame(sport=999)[0], entry())  # full: the oldest eighth (one) is evicted
    manager.flows.commit_now()
    assert len(lib.maps[FLOWS]) == 8
    assert keys[0] not in manager.keys
    assert keys[0] not in manager.by_conn["conn"]  # an evicted entry leaves its connection too
    changed = cache.epochs.on_change  # what ConnEpochs calls when a connection changes state
    assert changed is not None
    changed("conn")
    assert lib.maps[FLOWS] == {}
    assert manager.by_conn == {}
    cache.insert(keys[1], entry())
    manager.flows.commit_now()
    assert len(lib.maps[FLOWS]) == 1
    cache.sync("new rules")  # installed state changed: everything goes
    assert lib.maps[FLOWS] == {}
    assert manager.keys == {}


def test_a_relearned_entry_replaces_the_kernel_one_at_once() -> None:
    manager, lib, cache = offload()
    key, _ = frame()
    cache.insert(key, entry())
    manager.flows.commit_now()
    cache.insert(key, Entry((Output("vm-a", Rewrite()),), (), (), 99.9))  # now back to a
    values = list(lib.maps[FLOWS].values())  # (no commit: another outcome goes down at once)
    assert len(values) == 1
    assert int.from_bytes(values[0][24:28], "little") == 10
    cache.insert(key, entry(dest=("geneve", "10.0.0.9")))  # and now unservable here: gone
    assert lib.maps[FLOWS] == {}


def test_inserts_wait_for_a_commit_and_go_down_in_one_syscall() -> None:
    manager, lib, cache = offload()
    now = [50.0]
    manager.flows.clock = lambda: now[0]
    manager.flows.delay = 0.005
    cache.sync("rules")
    for n in range(5):
        cache.insert(frame(sport=200 + n)[0], entry())
    cache.sync("rules")  # a batch starts, but the queue is younger than its delay
    assert lib.maps.get(FLOWS, {}) == {}
    assert lib.calls == 0
    now[0] += manager.flows.delay
    cache.sync("rules")
    assert len(lib.maps[FLOWS]) == 5
    assert lib.calls == 1
    assert manager.stats()["written"] == 5


def test_a_same_outcome_waits_and_a_learned_then_dropped_entry_never_goes_down() -> None:
    manager, lib, cache = offload()
    key, _ = frame()
    cache.insert(key, entry())
    manager.flows.commit_now()
    calls = lib.calls
    cache.insert(key, entry())  # revalidated: same outcome, a new deadline (may wait)
    assert lib.calls == calls
    other, _ = frame(sport=7)
    cache.insert(other, Entry((Output("vm-b", Rewrite()),), (), (("short", 1),), 99.5))
    changed = cache.epochs.on_change
    assert changed is not None
    changed("short")  # its connection ended before any commit: nothing to delete
    assert lib.calls == calls
    manager.flows.commit_now()
    assert list(lib.maps[FLOWS]) == [manager.keys[key][0]]


def test_an_invalidation_takes_queued_evictions_with_it() -> None:
    manager, lib, cache = offload()
    keys = [frame(sport=300 + n)[0] for n in range(8)]
    for key in keys:
        cache.insert(key, entry())
    manager.flows.commit_now()
    cache.insert(frame(sport=999)[0], entry())  # evicts keys[0]: its delete may wait
    assert len(lib.maps[FLOWS]) == 8
    assert manager.flows.pending == 2
    changed = cache.epochs.on_change
    assert changed is not None
    changed("conn")  # every entry depends on it: all out now, the eviction too
    assert lib.maps[FLOWS] == {}
    assert manager.flows.pending == 0


def tunnel_offload() -> tuple[KernelOffload, FakeLib, FlowCache]:
    manager, lib, cache = offload()
    manager.underlay = Underlay("192.0.2.1", 6081, "ul0", 20)
    manager.routes = {"192.0.2.2": Route(20, 1400), "192.0.2.3": None}
    return manager, lib, cache


def to_tunnel(ip: str = "192.0.2.2", encap: str = "geneve") -> ToTunnel:
    return ToTunnel(Remote("hv2", ip, encap), 5, 3, 4)  # type: ignore[arg-type]


def test_a_flow_into_the_tunnel_goes_down_with_its_outer_headers() -> None:
    manager, lib, cache = tunnel_offload()
    key, covered = frame()
    cache.insert(key, entry(dest=to_tunnel()))
    manager.flows.commit_now()
    [(kernel_key, value)] = lib.maps[FLOWS].items()
    assert kernel_key == pack_key(10, "udp4", covered)
    assert int.from_bytes(value[24:28], "little") == 20  # the route's device
    assert (value[116], int.from_bytes(value[118:120], "little")) == (1, 1400)
    assert value[120:168] == template("192.0.2.1", "192.0.2.2", 6081, 5, 3, 4)
    assert manager.stats()["tunnel"]["encap_entries"] == 1  # type: ignore[index]


def test_a_flow_out_of_the_tunnel_is_keyed_by_the_underlay_vni_and_ports() -> None:
    manager, lib, cache = tunnel_offload()
    _, covered = frame()
    cache.insert((5, 3, 4, covered, False), entry(dest="vm-b"))
    manager.flows.commit_now()
    [(kernel_key, value)] = lib.maps[FLOWS].items()
    assert kernel_key == pack_key(20, "udp4", covered, 5, 3 << 16 | 4)
    assert int.from_bytes(value[24:28], "little") == 11
    assert value[116] == 0  # delivered, not encapsulated


def test_tunnel_flows_the_kernel_must_not_serve_stay_out() -> None:
    manager, lib, cache = tunnel_offload()
    _, covered = frame()
    for _n, (key, dest) in enumerate(
        (
            ((5, None, None, covered, False), "vm-b"),  # VXLAN: no logical ports
            ((5, 3, 4, covered, False), to_tunnel()),  # never re-tunnelled
            (frame(sport=2)[0], to_tunnel(encap="vxlan")),
            (frame(sport=3)[0], to_tunnel(ip="192.0.2.3")),  # no route
            (frame(sport=4)[0], to_tunnel(ip="2001:db8::2")),  # an IPv6 underlay
        )
    ):
        cache.insert(key, entry(dest=dest))
    manager.flows.commit_now()
    assert lib.maps.get(FLOWS, {}) == {}
    assert manager.refused == 5


def test_without_an_underlay_tunnel_flows_stay_in_user_space() -> None:
    manager, lib, cache = offload()
    manager._underlay_tried = time.monotonic()  # just looked: no Geneve endpoint open
    cache.insert(frame()[0], entry(dest=to_tunnel()))
    cache.insert((5, 3, 4, frame()[1], False), entry(dest="vm-b"))
    manager.flows.commit_now()
    assert lib.maps.get(FLOWS, {}) == {}


def test_closing_a_port_takes_the_flows_to_it_out_too() -> None:
    manager, lib, cache = tunnel_offload()
    _, covered = frame()
    cache.insert((5, 3, 4, covered, False), entry(dest="vm-b"))  # tunnel -> vm-b
    cache.insert(frame(sport=9)[0], entry(dest="vm-b"))  # vm-a -> vm-b
    cache.insert(frame(sport=10)[0], entry(dest=to_tunnel()))  # vm-a -> the tunnel
    manager.flows.commit_now()
    assert len(lib.maps[FLOWS]) == 3
    manager.port_closed("vm-b")  # its ifindex may come back as another device's
    assert len(lib.maps[FLOWS]) == 1
    assert [key[0] for key in manager.keys] == ["vm-a"]


def test_syn_templates_follow_the_datapath_option_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from netvirt.dataplane.offload import templates

    def made(env: str, option: bool | None) -> bool:
        monkeypatch.setenv(templates.ENV, env)
        loaded = bpf.Loaded(FakeLib(), 0, 1, 2, FLOWS, 4, 5, VALUE_SIZE)  # type: ignore[arg-type]
        return KernelOffload(2.0, None, lambda _i: False, time.time, loaded, option).syn_templates

    assert made("1", False) is False  # the datapath's --no-syn-templates wins
    assert made("0", True) is True
    assert made("0", None) is False  # no option: the environment
    assert made("1", None) is True


@pytest.mark.parametrize(
    ("value", "want"), [("", True), ("1", True), ("on", True), ("0", False), ("false", False)]
)
def test_redirect_peer_is_a_boolean_word(
    value: str, want: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netvirt.dataplane.offload.manager import PEER_ENV, redirect_peer_by_env

    monkeypatch.setenv(PEER_ENV, value)
    assert redirect_peer_by_env() is want


def test_redirect_peer_refuses_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    from netvirt.dataplane.offload.manager import PEER_ENV, redirect_peer_by_env

    monkeypatch.setenv(PEER_ENV, "maybe")
    with pytest.raises(ValueError, match="boolean"):
        redirect_peer_by_env()


def test_the_datapath_refuses_a_bad_redirect_peer_value_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from netvirt.cli.main import app
    from netvirt.dataplane.offload.manager import PEER_ENV

    monkeypatch.setenv(PEER_ENV, "maybe")
    argv = ["datapath", "--name", "hv1", "--iface-dir", str(tmp_path)]
    argv += ["--underlay-ip", "127.0.0.1", "--control", str(tmp_path / "ctl")]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert PEER_ENV in result.output  # names the variable, not another option
    assert "--state-store" not in result.output


def test_a_missing_route_is_looked_up_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """No route to a remote (its underlay not up yet): asked again after UNDERLAY_RETRY,
    not cached as missing for the datapath's life."""
    from netvirt.dataplane.offload import manager as mod

    manager, _lib, _cache = offload()
    underlay = Underlay("192.0.2.1", 6081, "ul0", 20)
    answers: list[Route | None] = [None, Route(20, 1400)]
    asked: list[str] = []

    def route_to(_ip: object, _local: str, remote: str) -> Route | None:
        asked.append(remote)
        return answers.pop(0)

    clock = [100.0]
    monkeypatch.setattr(mod.tunnel, "route_to", route_to)
    monkeypatch.setattr(mod.time, "monotonic", lambda: clock[0])
    assert manager._route(underlay, "192.0.2.9") is None
    assert manager._route(underlay, "192.0.2.9") is None  # (within the retry: not asked)
    assert asked == ["192.0.2.9"]
    clock[0] += mod.UNDERLAY_RETRY + 0.1
    assert manager._route(underlay, "192.0.2.9") == Route(20, 1400)
    assert manager._route(underlay, "192.0.2.9") == Route(20, 1400)  # (cached now)
    assert asked == ["192.0.2.9", "192.0.2.9"]
