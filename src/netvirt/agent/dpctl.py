"""The datapath's control socket: how an agent drives a datapath in another process.

Theory of operation
-------------------
``netvirt datapath`` listens on a unix stream socket (mode 0600, in the
host's run directory); ``netvirt agent --datapath PATH`` connects to it. This
is the seam Open vSwitch has between ovn-controller and ovs-vswitchd: the
agent may stop, crash or be upgraded while the datapath keeps forwarding
with what is installed, and a new agent picks up from what the datapath
says it holds.

Messages are request/reply, one at a time, each a 4-byte big-endian length
and a pickled tuple ``(op, *args)``; replies are ``("ok", value)`` or
``("error", message)``. Pickle carries the rule and topology objects as they
are (no second codec to keep in sync); it is acceptable only because both
ends are the same installation running as the same user: the server accepts
peers whose uid (``SO_PEERCRED``) is its own or root's, and the socket file
is private. The ops:

``hello``     who the datapath is: chassis name, boot id, rule version,
              installed generation, plugged interfaces.
``poll``      rule version, installed generation, plugged interfaces, and the
              health-check verdict changes since the last poll (the agent
              polls every loop tick; it is small).
``rules``     the installed rules (once per agent start or datapath restart:
              the reconciler's record of what is installed).
``install``   ``(physical, add, remove)``: apply a rule difference and switch
              topology and dispatch maps, atomically between packet batches.
``counters``  the datapath's counters (ports, tunnel, drops, I/O).
``events``    other queued events for the agent, drained (none yet).

One client at a time: a new connection replaces the old one (a restarted
agent whose predecessor's socket is not closed yet). The datapath serves
requests between packet batches, so a large install delays packets by its
own duration and nothing more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netvirt.agent.forwarder import RuleVersion
from netvirt.agent.physical import PhysicalState
from netvirt.dataplane.classifier import Delta
from netvirt.dataplane.flow import Rule

log = logging.getLogger(__name__)

HEADER = struct.Struct("!I")
MAX_MESSAGE = 1 << 30
DEFAULT_TIMEOUT = 30.0


class DatapathUnavailable(Exception):
    """The datapath's control socket cannot be reached (or the connection broke)."""


class DatapathError(Exception):
    """The datapath answered a request with an error."""


# -- framing ----------------------------------------------------------------------------------


def send_message(sock: socket.socket, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(HEADER.pack(len(data)) + data)


def recv_message(sock: socket.socket) -> Any:
    """One message; ``EOFError`` when the peer closed between messages."""
    header = _recv_exact(sock, HEADER.size, eof_ok=True)
    if header is None:
        raise EOFError
    (size,) = HEADER.unpack(header)
    if size > MAX_MESSAGE:
        raise ValueError(f"control message of {size} bytes is too large")
    body = _recv_exact(sock, size, eof_ok=False)
    assert body is not None
    return pickle.loads(body)


def _recv_exact(sock: socket.socket, size: int, *, eof_ok: bool) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            if eof_ok and not chunks:
                return None
            raise ConnectionError("control connection closed mid-message")
        chunks += chunk
    return bytes(chunks)


# -- the datapath's side ----------------------------------------------------------------------


Handler = Callable[..., object]


class ControlServer:
    """Serves the ops in ``handlers`` on a unix socket, from the datapath's event loop.

    The loop registers :meth:`fds` for reading and calls :meth:`ready` for a
    readable one; the server never blocks the loop except while reading the
    rest of a message that has started to arrive, or writing its reply."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            self.listener.bind(str(path))
        finally:
            os.umask(old)
        self.listener.listen(4)
        self.listener.setblocking(False)
        self.client: socket.socket | None = None
        self.stats = {"connections": 0, "requests": 0, "errors": 0, "refused": 0}

    def fds(self) -> list[int]:
        fds = [self.listener.fileno()]
        if self.client is not None:
            fds.append(self.client.fileno())
        return fds

    def ready(self, fd: int) -> bool:
        """Handle a readable fd of ours; True when the set of fds changed."""
        if fd == self.listener.fileno():
            return self._accept()
        if self.client is not None and fd == self.client.fileno():
            return self._serve_one()
        return False

    def _accept(self) -> bool:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return False
        uid = _peer_uid(conn)
        if uid not in (0, os.getuid()):
            self.stats["refused"] += 1
            log.warning("control connection from uid %s refused", uid)
            conn.close()
            return False
        conn.setblocking(True)
        conn.settimeout(DEFAULT_TIMEOUT)
        self._drop_client()
        self.client = conn
        self.stats["connections"] += 1
        log.info("agent connected to the control socket")
        return True

    def _serve_one(self) -> bool:
        assert self.client is not None
        try:
            request = recv_message(self.client)
        except (EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
            if not isinstance(err, EOFError):
                log.warning("control connection failed: %s", err)
            self._drop_client()
            return True
        self.stats["requests"] += 1
        reply: tuple[str, object]
        try:
            op, *args = request
            handler = self.handlers[op]
            reply = ("ok", handler(*args))
        except Exception as err:  # a bad request must not end the datapath
            self.stats["errors"] += 1
            log.exception("control request failed")
            reply = ("error", f"{type(err).__name__}: {err}")
        try:
            send_message(self.client, reply)
        except OSError as err:
            log.warning("control reply failed: %s", err)
            self._drop_client()
            return True
        return False

    def _drop_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.close()
            self.client = None

    def close(self) -> None:
        self._drop_client()
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# -- the agent's side -------------------------------------------------------------------------


@dataclass
class DatapathView:
    """What the agent last heard from the datapath (answers the cheap questions)."""

    chassis: str = ""
    version: RuleVersion = field(default_factory=lambda: RuleVersion("", -1))
    generation: int = 0
    plugs: dict[str, str] = field(default_factory=dict)


class RemoteDatapath:
    """A datapath in another process, as the agent sees it (``agent.DatapathHandle``).

    :meth:`poll` refreshes the cached view (call it every loop tick); the
    properties answer from the view; :meth:`rules`, :meth:`install` and
    :meth:`counters` are round trips. Any failure closes the connection and
    raises :class:`DatapathUnavailable`; the next :meth:`poll` reconnects."""

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.view = DatapathView()
        self.connects = 0
        self.health_events: list[tuple[str, str]] = []

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError as err:
            sock.close()
            raise DatapathUnavailable(f"datapath control socket {self.path}: {err}") from err
        self.sock = sock
        self.connects += 1
        hello = self._call("hello")
        assert isinstance(hello, dict)
        self.view = DatapathView(
            hello["chassis"], hello["version"], hello["generation"], dict(hello["plugs"])
        )

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def poll(self) -> bool:
        """Refresh the view (connecting if needed); True when the plugged set changed."""
        if self.sock is None:
            before = None
            self.connect()
        else:
            before = dict(self.view.plugs)
        state = self._call("poll")
        assert isinstance(state, dict)
        self.view.version, self.view.generation = state["version"], state["generation"]
        self.view.plugs = dict(state["plugs"])
        self.health_events.extend(state.get("health", ()))
        return before != self.view.plugs

    def take_health_events(self) -> list[tuple[str, str]]:
        """Health-check verdict changes (member id, status) the datapath reported."""
        events, self.health_events = self.health_events, []
        return events

    def events(self) -> list[Any]:
        result = self._call("events")
        assert isinstance(result, list)
        return result

    # -- DatapathHandle --------------------------------------------------------------------

    @property
    def rule_version(self) -> RuleVersion:
        return self.view.version

    @property
    def generation(self) -> int:
        return self.view.generation

    def plugged(self) -> dict[str, str]:
        return dict(self.view.plugs)

    def rules(self) -> list[Rule]:
        result = self._call("rules")
        assert isinstance(result, list)
        return result

    def install(
        self, physical: PhysicalState, add: Sequence[Rule], remove: Sequence[Rule]
    ) -> Delta:
        # the datapath does not read physical.rules (the difference is what it applies)
        slim = dataclasses.replace(physical, rules=[])
        result = self._call("install", slim, list(add), list(remove))
        assert isinstance(result, dict)
        self.view.version, self.view.generation = result["version"], result["generation"]
        return Delta(result["added"], result["removed"])

    def counters(self) -> dict[str, object]:
        result = self._call("counters")
        assert isinstance(result, dict)
        return result

    # -- transport -------------------------------------------------------------------------

    def _call(self, op: str, *args: object) -> object:
        if self.sock is None:
            raise DatapathUnavailable("not connected to the datapath")
        try:
            send_message(self.sock, (op, *args))
            status, value = recv_message(self.sock)
        except (OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
            self.close()
            raise DatapathUnavailable(f"datapath control connection lost: {err!r}") from err
        if status != "ok":
            raise DatapathError(str(value))
        return value
