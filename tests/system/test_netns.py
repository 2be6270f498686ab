"""The namespace helpers the system tests and the lab build on."""

from __future__ import annotations

import socket

import pytest

from netvirt.dataplane import netns
from system.netio import PREFIX

pytestmark = pytest.mark.system


def _interfaces() -> list[str]:
    return sorted(name for _index, name in socket.if_nameindex())


def test_run_in_netns_runs_there_and_returns(scope: netns.NetnsScope) -> None:
    ns = scope.create("a")
    netns.create_veth("a", "b", netns_a=ns, netns_b=ns, mtu=9000)  # "a" is no abbreviation
    assert netns.run_in_netns(ns, _interfaces) == ["a", "b", "lo"]
    assert "b" not in _interfaces()  # the caller's namespace did not change
    assert netns.link_exists("b", netns=ns)
    assert "mtu 9000" in netns.ip("link", "show", "dev", "a", netns=ns)
    netns.delete_link("a", netns=ns)
    assert not netns.link_exists("b", netns=ns)  # one end takes the other with it


def test_run_in_netns_reraises(scope: netns.NetnsScope) -> None:
    ns = scope.create("a")
    with pytest.raises(OSError, match="no interface"):
        netns.run_in_netns(ns, socket.if_nametoindex, "nonexistent0")
    with pytest.raises(netns.NetnsError):
        netns.run_in_netns(f"{PREFIX}-missing", _interfaces)


def test_scope_cleans_up_even_when_the_body_fails() -> None:
    prefix = f"{PREFIX}-fail"
    seen: list[str] = []

    def body() -> None:
        with netns.NetnsScope(prefix) as ns_scope:
            ns_scope.create("one")
            ns_scope.create("two")
            seen.extend(netns.list_netns(prefix))
            raise RuntimeError("test body failed")

    with pytest.raises(RuntimeError):
        body()
    assert len(seen) == 2
    assert netns.list_netns(prefix) == []


def test_delete_is_idempotent_and_errors_are_readable(scope: netns.NetnsScope) -> None:
    ns = scope.create("a")
    netns.delete_netns(ns)
    netns.delete_netns(ns)
    assert not netns.netns_exists(ns)
    with pytest.raises(netns.NetnsError, match="link set dev nope0 up: Cannot find device"):
        netns.link_up("nope0", netns=scope.create("b"))
