"""A non-blocking Redis connection for the datapath loop: send now, read the replies later.

Theory of operation
-------------------
The synchronous client (redis-py) makes the caller wait for every reply; in
a single-threaded datapath that stops all forwarding for a round trip (0.1 ms
on an idle machine, milliseconds on a loaded one). :class:`RedisPipe` writes
a round trip's commands on a non-blocking socket and returns; the loop waits
on the socket with everything else and calls :meth:`RedisPipe.on_readable`,
which feeds what arrived to a hiredis reader and completes round trips in the
order they were sent (Redis answers one connection's commands in order, so
the n-th reply belongs to the n-th command: no request ids are needed).

What the pipe does not know is what the commands mean: each round trip comes
with the number of replies it expects and a ``finish`` function that turns
them into the round trip's results (``RedisStore.submit`` decodes entries,
versions, compare-and-set outcomes). Commands the pipe sends for itself
(SELECT, AUTH, SCRIPT LOAD after a (re)connect) are queued the same way, ahead
of everything else, so their replies are consumed in order too.

Failure: connecting has the store's timeout (blocking, on loopback a few
hundred µs; only at the first use and after a failure); a round trip that is
not answered within the timeout, a closed connection or an unparsable reply
fails every round trip in flight with :class:`StateStoreUnavailable` and
drops the connection (``on_failure`` lets the store hold the server down);
the next submit connects again. A round trip whose commands were sent may
have run on the server: exactly the contract of a batch (store.py).
"""

from __future__ import annotations

import select
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis

from netvirt.state.jobs import Reply, Ticket
from netvirt.state.store import StateStoreError, StateStoreUnavailable

Arg = str | bytes | int | float
Finish = Callable[[list[object]], Reply]
READ_SIZE = 262_144


def pack(commands: Sequence[Sequence[Arg]]) -> bytes:
    """RESP arrays of bulk strings, one per command, in one buffer (hiredis' C encoder:
    a Python one cost ~5 µs per command, most of the client's time)."""
    # (hiredis types its argument as a one-element tuple: any length is accepted)
    return b"".join([hiredis.pack_command(tuple(command)) for command in commands])  # type: ignore[arg-type]


@dataclass(slots=True)
class _InFlight:
    """A round trip sent and not yet fully answered."""

    ticket: Ticket | None  # None: the pipe's own commands (SELECT, SCRIPT LOAD)
    expected: int
    finish: Finish | None
    sent_at: float
    replies: list[object] = field(default_factory=list)


@dataclass(frozen=True)
class Address:
    """Where the server is and how to log in (taken from redis-py's connection options)."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket, instead of host/port
    db: int = 0
    username: str | None = None
    password: str | None = None


class RedisPipe:
    """One non-blocking connection (see the module docstring)."""

    def __init__(
        self,
        address: Address,
        timeout: float,
        *,
        on_connect: Callable[[], Sequence[Sequence[Arg]]] = lambda: (),
        on_failure: Callable[[StateStoreUnavailable], None] = lambda exc: None,
        charge: Callable[[float], None] = lambda seconds: None,
        clock: Callable[[], float] = time.monotonic,
        on_lost: Callable[[int, float], None] = lambda keys, seconds: None,
    ) -> None:
        self.address = address
        self.on_lost = on_lost  # a round trip failed unanswered: (its operations, seconds)
        self.timeout = timeout
        self.on_connect = on_connect
        self.on_failure = on_failure
        self.charge = charge  # seconds of client work (reading, parsing, decoding)
        self.clock = clock
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader()
        self._out = bytearray()
        self._buffer = bytearray(READ_SIZE)  # recv_into it: no 256 KiB allocation per read
        self._queue: deque[_InFlight] = deque()
        self._serial = 0  # connections made so far
        self._corked = False  # completing round trips: sends wait for the end of it

    # -- sending ---------------------------------------------------------------------------

    def send(
        self,
        commands: Sequence[Sequence[Arg]],
        ticket: Ticket | None,
        finish: Finish | None,
    ) -> None:
        """Queue and send ``commands``; ``finish(replies)`` completes ``ticket`` later.
        A connection that cannot be made fails the ticket at once."""
        self.send_packed(pack(commands), len(commands), ticket, finish)

    def send_packed(
        self, buffer: bytes, count: int, ticket: Ticket | None, finish: Finish | None
    ) -> None:
        """:meth:`send` of ``count`` commands already in RESP (``redis_ops.Framer``)."""
        if self._sock is None:
            try:
                self._connect()
            except StateStoreUnavailable as exc:
                if ticket is not None:
                    ticket.complete(exc)
                return
        self._queue.append(_InFlight(ticket, count, finish, self.clock()))
        self._out += buffer
        if not self._corked:
            self.on_writable()

    def _connect(self) -> None:
        address = self.address
        try:
            if address.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target: Any = address.path
            else:
                info = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
                family, _, _, _, target = info[0]
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
            try:
                sock.connect(target)
            except OSError:
                sock.close()
                raise
        except OSError as err:
            exc = StateStoreUnavailable(f"redis unavailable: connect: {err}")
            self.on_failure(exc)
            raise exc from err
        sock.setblocking(False)
        self._sock = sock
        self._serial += 1
        self._reader = hiredis.Reader()
        self._out.clear()
        login: list[list[Arg]] = []
        if address.password is not None:
            user = [address.username] if address.username else []
            login.append(["AUTH", *user, address.password])
        if address.db:
            login.append(["SELECT", address.db])
        for command in [*login, *self.on_connect()]:
            self._queue.append(_InFlight(None, 1, None, self.clock()))
            self._out += pack([command])

    def on_writable(self) -> None:
        """Send what the socket takes now; the rest waits for the next call."""
        sock = self._sock
        while self._out and sock is not None:
            try:
                sent = sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                self._fail(f"send: {err}")
                return
            del self._out[:sent]

    def wants_write(self) -> bool:
        return bool(self._out) and self._sock is not None

    # -- receiving -------------------------------------------------------------------------

    def handle(self) -> tuple[int, int] | None:
        """The socket's fd and the connection's serial (fd numbers are reused)."""
        return (self._sock.fileno(), self._serial) if self._sock is not None else None

    def in_flight(self) -> int:
        return len(self._queue)

    def on_readable(self) -> None:
        """Read what arrived and complete the round trips it answers, in order."""
        sock = self._sock
        if sock is None:
            return
        started = time.thread_time()
        buffer = self._buffer
        while True:
            try:
                size = sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                self._fail(f"recv: {err}")
                return
            if not size:
                self._fail("connection closed by the server")
                return
            self._reader.feed(buffer, 0, size)  # type: ignore[arg-type]  # (any buffer)
            if size < READ_SIZE:
                break
        self._dispatch(started)

    def _dispatch(self, started: float) -> None:
        """Complete the round trips whose replies are in, in order. The time spent here,
        minus the tickets' callbacks (the work they resume), is charged as client time.
        Round trips the callbacks submit are written once, together, at the end (corked:
        one send instead of one per resumed batch)."""
        self._corked = True
        try:
            self._complete(started)
        finally:
            self._corked = False
        if self._out and self._sock is not None:
            began = time.thread_time()
            self.on_writable()
            self.charge(time.thread_time() - began)

    def _complete(self, started: float) -> None:
        reader, queue, clock = self._reader, self._queue, time.thread_time
        while queue:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as err:
                self.charge(clock() - started)
                self._fail(f"protocol error: {err}")
                return
            if reply is False:
                break
            head = queue[0]
            head.replies.append(reply)
            if len(head.replies) < head.expected:
                continue
            queue.popleft()
            if head.ticket is None:
                if isinstance(reply, hiredis.ReplyError):
                    self.charge(clock() - started)
                    self._fail(f"setting up the connection: {reply}")
                    return
                continue
            assert head.finish is not None
            result = head.finish(head.replies)
            self.charge(clock() - started)
            head.ticket.complete(result)  # resumes parked work: not the client's time
            started = clock()
        self.charge(clock() - started)

    def time_out(self, now: float) -> None:
        """Fail everything in flight when the oldest round trip is past the timeout (after
        reading what already arrived: a busy loop may not have looked for a while)."""
        if self._queue and now - self._queue[0].sent_at > self.timeout:
            self.on_readable()
        if self._queue and now - self._queue[0].sent_at > self.timeout:
            self._fail(f"no reply in {self.timeout * 1000:.0f} ms")

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` for replies (draining parked work), then read them."""
        sock = self._sock
        if sock is None:
            return
        writers = [sock] if self._out else []
        readable, writable, _ = select.select([sock], writers, [], timeout)
        if writable:
            self.on_writable()
        if readable:
            self.on_readable()

    # -- failure ---------------------------------------------------------------------------

    def _fail(self, why: str) -> None:
        exc = StateStoreUnavailable(f"redis unavailable: {why}")
        self.close()
        self.on_failure(exc)
        pending, self._queue = self._queue, deque()
        now = self.clock()
        for item in pending:
            if item.ticket is not None:
                self.on_lost(len(item.ticket.ops), now - item.sent_at)
                item.ticket.complete(exc)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._out.clear()
        if sock is not None:
            sock.close()


def reply_error(reply: object) -> StateStoreError | None:
    """The store error a raw reply stands for (hiredis returns server errors as values)."""
    if not isinstance(reply, hiredis.ReplyError):
        return None
    text = str(reply)
    if text.startswith("NOSCRIPT"):
        return StateStoreUnavailable("redis lost its scripts; batch partially applied")
    return StateStoreError(f"redis error in batch: {text}")


def is_noscript(error: StateStoreError) -> bool:
    return isinstance(error, StateStoreUnavailable) and "lost its scripts" in str(error)
