"""Small helpers for network namespaces, veth pairs and running code inside a namespace.

Why ``ip`` and not a netlink library: every Debian machine has iproute2, its
behaviour is what operators know, and its error messages are readable; these
helpers run at setup time, never per packet. Named namespaces are the ones
``ip netns add`` makes (a bind mount under /run/netns), so ``ip netns exec``
and :func:`run_in_netns` both reach them.

:func:`run_in_netns` runs a Python callable in a short-lived thread that has
joined the namespace with ``setns(2)``: a socket or TAP opened there stays in
that namespace after the thread ends, so the datapath (in the host's
namespace) can own sockets of any namespace. The calling thread's namespace
never changes.

All of this needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
DEFAULT_TIMEOUT = 30.0

P = ParamSpec("P")
T = TypeVar("T")


class NetnsError(RuntimeError):
    """An ``ip`` command or a namespace switch failed; the message has ip's stderr."""


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run ``ip [-n NETNS] ARGS...`` and return its stdout."""
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def list_netns(prefix: str = "") -> list[str]:
    """Names of the named namespaces starting with ``prefix``."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if name.startswith(prefix))


def netns_exists(name: str) -> bool:
    """True when a named namespace ``name`` exists."""
    return os.path.exists(os.path.join(NETNS_DIR, name))


def create_netns(name: str, *, loopback: bool = True) -> None:
    """Create a named namespace, with ``lo`` up unless told otherwise."""
    ip("netns", "add", name)
    if loopback:
        ip("link", "set", "dev", "lo", "up", netns=name)


def delete_netns(name: str) -> None:
    """Delete a named namespace; a missing one is fine (idempotent)."""
    if netns_exists(name):
        ip("netns", "delete", name, check=False)


def create_veth(
    a: str,
    b: str,
    *,
    netns_a: str | None = None,
    netns_b: str | None = None,
    mtu: int | None = None,
    up: bool = True,
) -> None:
    """Create the veth pair ``a``/``b`` and put each end in its namespace (None: current)."""
    args = ["link", "add", "name", a]
    if mtu is not None:
        args += ["mtu", str(mtu)]
    args += ["type", "veth", "peer", "name", b]
    if mtu is not None:
        args += ["mtu", str(mtu)]
    if netns_b:
        args += ["netns", netns_b]
    ip(*args, netns=netns_a)
    if up:
        link_up(a, netns=netns_a)
        link_up(b, netns=netns_b)


def link_up(ifname: str, *, netns: str | None = None) -> None:
    """Set a link up."""
    ip("link", "set", "dev", ifname, "up", netns=netns)


def set_mtu(ifname: str, mtu: int, *, netns: str | None = None) -> None:
    """Set a link's MTU."""
    ip("link", "set", "dev", ifname, "mtu", str(mtu), netns=netns)


def move_link(ifname: str, target: str, *, netns: str | None = None) -> None:
    """Move a link (from ``netns``, or the current namespace) into namespace ``target``."""
    ip("link", "set", "dev", ifname, "netns", target, netns=netns)


def add_address(ifname: str, cidr: str, *, netns: str | None = None) -> None:
    """Add an address such as ``10.0.0.1/24`` to a link."""
    ip("address", "add", cidr, "dev", ifname, netns=netns)


def delete_link(ifname: str, *, netns: str | None = None) -> None:
    """Delete a link if it exists (deleting one veth end removes both)."""
    ip("link", "delete", "dev", ifname, netns=netns, check=False)


def link_exists(ifname: str, *, netns: str | None = None) -> bool:
    """True when the link exists in the namespace."""
    return bool(ip("-o", "link", "show", "dev", ifname, netns=netns, check=False).strip())


def exec_in(
    netns: str,
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside ``netns`` and wait for it (output captured as text)."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def popen_in(netns: str, argv: Sequence[str]) -> subprocess.Popen[str]:
    """Start a command inside ``netns`` without waiting (stdout/stderr piped, text)."""
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_libc = ctypes.CDLL(None, use_errno=True)


def _enter(name: str) -> None:
    try:
        fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(f"no network namespace named {name!r}") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(name: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call ``fn(*args, **kwargs)`` inside namespace ``name`` and return its result.

    Exceptions from ``fn`` (or from entering the namespace) are re-raised here.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _enter(name)
            outcome.append(fn(*args, **kwargs))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


class NetnsScope:
    """Namespaces made under one prefix, all removed by :meth:`cleanup` (tests, the lab).

    ``cleanup`` also removes namespaces with the prefix that this scope did
    not record (a previous run that crashed), so it is safe to call twice.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created: list[str] = []

    def name(self, suffix: str) -> str:
        """The full name for ``suffix``."""
        return f"{self.prefix}-{suffix}"

    def create(self, suffix: str) -> str:
        """Create ``<prefix>-<suffix>`` and return its name."""
        name = self.name(suffix)
        self.created.append(name)
        create_netns(name)
        return name

    def cleanup(self) -> list[str]:
        """Delete every namespace of this prefix; returns the ones that remain (should be [])."""
        for name in {*self.created, *list_netns(self.prefix + "-")}:
            delete_netns(name)
        self.created.clear()
        return list_netns(self.prefix + "-")

    def __enter__(self) -> NetnsScope:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cleanup()
