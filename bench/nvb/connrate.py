"""New-TCP-connections-per-second client and server (stdlib only, run inside namespaces).

    python3 connrate.py server --port 5301 --ports 256
    python3 connrate.py client --host 10.251.1.12 --port 5301 --ports 256 --duration 10 \
        --fresh-tuples

One connection = connect, the server sends one byte, the client reads it and
closes, the server closes on the client's FIN: every connection crosses the
stateful path both ways (SYN, SYN-ACK, data, FIN both ways) and only the
client keeps TIME_WAIT (closing with an RST, ``SO_LINGER`` 0, is not what real
clients do, and frees the 4-tuple at once). One ``selectors`` loop keeps
``concurrency`` connections in flight; the client prints one JSON line:
connections completed, errors, seconds.

``--fresh-tuples`` (the bench's setting, for every backend): the client binds
each connection's source port itself, so that no 4-tuple comes back within
``FRESH_WINDOW_S`` seconds, across runs too. Left to the kernel, a 4-tuple
comes back within seconds: a connection the client gave up on (``--timeout``)
leaves no TIME_WAIT, and past ``net.ipv4.tcp_max_tw_buckets`` (131072 per
namespace) closed connections leave none either; a 4-tuple reused while a
conntrack still holds its entry is a different test (TIME_WAIT reuse) from new
connections, and it crashes ovs-vswitchd 3.1's userspace conntrack when the
entry has an all-zero SNAT twin, as every OVN stateful-ACL connection has
(assertion in ``conn_update_state``: one reuse of a 4-tuple half a second
after a normal close is enough). The index of a connection's 4-tuple follows a
clock shared by every client process (``time.monotonic``) at ``space /
FRESH_WINDOW_S`` tuples per second, ``space`` = server ports x source ports; a
client faster than that waits for the clock (``throttled`` in its JSON; 256
server ports allow 110k conn/s; see ``FreshTuples``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import selectors
import socket
import sys
import time
from collections.abc import Callable

SPORT_LOW = 1024  # source ports SPORT_LOW .. 65535
SPORT_COUNT = 65536 - SPORT_LOW
# No 4-tuple again within this many seconds: longer than any conntrack keeps a
# closed connection here (netvirt's TIME_WAIT 120 s, OVS's 30 s + its 5 s sweep)
# and than Linux's own TIME_WAIT (60 s).
FRESH_WINDOW_S = 150.0
LAG_S = 1.0  # how far behind the shared clock a client's tuple index may stay


class FreshTuples:
    """Source port and server port of each new connection: no 4-tuple recurs within a window.

    Tuple index ``i`` (mod ``ports * SPORT_COUNT``) is source port
    ``SPORT_LOW + i // ports`` to server port ``port + i % ports``. A clock
    shared by every client process (``clock() * pace``) bounds the index:
    ``next`` never hands out an index past the clock (it returns None: wait,
    counted in ``throttled``), skips forward so as to stay at most ``LAG_S``
    behind it, and a new process starts past the clock's index at its start, so
    past every index an earlier process used. A tuple handed out at time ``t``
    had an index above ``(t - LAG_S) * pace``; it comes back only once the
    clock has passed that index plus the whole space: ``window - LAG_S``
    seconds later at least."""

    def __init__(
        self,
        ports: int,
        window: float = FRESH_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ports < 1 or window <= LAG_S:
            raise ValueError(f"fresh tuples need ports >= 1 and a window above {LAG_S} s")
        self.ports = ports
        self.space = ports * SPORT_COUNT
        self.pace = self.space / window  # tuple indices per second of the clock
        self.clock = clock
        self.last = int(clock() * self.pace)  # what earlier processes may have used
        self.throttled = 0  # refusals: the client would have run past the clock
        self.skipped = 0  # tuples this host could not use (see _open_fresh)

    def wait_start(self) -> None:
        """Sleep the one clock tick a new process waits for its first index."""
        time.sleep(max(0.0, (self.last + 1) / self.pace - self.clock()))

    def next(self) -> tuple[int, int] | None:
        """(source port, server port offset) of the next connection, or None: wait."""
        now = self.clock()
        index = max(self.last + 1, int((now - LAG_S) * self.pace))
        if index > int(now * self.pace):
            self.throttled += 1
            return None
        self.last = index
        i = index % self.space
        return SPORT_LOW + i // self.ports, i % self.ports


def serve(port: int, ports: int) -> None:
    sel = selectors.DefaultSelector()
    for p in range(port, port + ports):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", p))
        listener.listen(4096)
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, "listen")
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "listen":
                _accept(sel, sock)
                continue
            with contextlib.suppress(OSError):
                sock.recv(64)  # the client's FIN (or anything): close our side
            sel.unregister(sock)
            sock.close()


def _accept(sel: selectors.BaseSelector, listener: socket.socket) -> None:
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    try:
        conn.setblocking(False)
        conn.send(b"x")
    except OSError:
        conn.close()
        return
    sel.register(conn, selectors.EVENT_READ, "conn")


def _open(host: str, port: int, sport: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if sport is not None:
        try:
            # other connections (other server ports, TIME_WAIT) share this source port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", sport))
        except OSError:
            sock.close()
            raise
    err = sock.connect_ex((host, port))
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, "connect")
    return sock


SKIP_ERRNOS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


def _open_fresh(host: str, port: int, fresh: FreshTuples) -> socket.socket | None:
    """A connection on the next fresh 4-tuple that this host can use (None: wait for the clock).

    A tuple whose source port another socket holds without ``SO_REUSEADDR``
    (iperf3's, say, in TIME_WAIT) or whose 4-tuple exists is skipped, counted
    in ``fresh.skipped``: it is not a failed connection."""
    while (picked := fresh.next()) is not None:
        try:
            return _open(host, port + picked[1], picked[0])
        except OSError as exc:
            if exc.errno not in SKIP_ERRNOS:
                raise
            fresh.skipped += 1
    return None


def client(
    host: str,
    port: int,
    ports: int,
    duration: float,
    concurrency: int,
    timeout: float,
    fresh: FreshTuples | None = None,
) -> dict[str, float]:
    sel = selectors.DefaultSelector()
    done = errors = launched = 0
    started = time.monotonic()
    deadline = started + duration
    opened: dict[socket.socket, float] = {}

    def launch() -> bool:
        """Open one connection (False: the fresh-tuple clock says wait)."""
        nonlocal errors, launched
        if fresh is None:
            launched += 1
            try:
                sock = _open(host, port + launched % ports)
            except OSError:
                errors += 1
                return True
        else:
            try:
                opened_fresh = _open_fresh(host, port, fresh)
            except OSError:
                errors += 1
                return True
            if opened_fresh is None:
                return False
            sock = opened_fresh
        opened[sock] = time.monotonic()
        sel.register(sock, selectors.EVENT_READ)
        return True

    def finish(sock: socket.socket, ok: bool) -> None:
        nonlocal done, errors
        sel.unregister(sock)
        del opened[sock]
        sock.close()
        if ok:
            done += 1
        else:
            errors += 1

    if fresh is not None:
        fresh.wait_start()
    for _ in range(concurrency):
        launch()
    while time.monotonic() < deadline:
        for key, _ in sel.select(0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                ok = sock.recv(1) == b"x"
            except OSError:
                ok = False
            finish(sock, ok)
            if time.monotonic() < deadline:
                launch()
        now = time.monotonic()
        for sock, since in list(opened.items()):
            if now - since > timeout:
                finish(sock, False)
                launch()
        while len(opened) < concurrency and time.monotonic() < deadline:
            if not launch():
                break
    seconds = time.monotonic() - started
    for sock in list(opened):
        finish(sock, False)
        errors -= 1  # still in flight at the end: not an error
    out: dict[str, float] = {"connections": done, "errors": errors, "seconds": seconds}
    if fresh is not None:
        out["throttled"] = fresh.throttled
        out["skipped"] = fresh.skipped
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("server")
    srv.add_argument("--port", type=int, default=5301)
    srv.add_argument("--ports", type=int, default=16, help="listen on port .. port+ports-1")
    cli = sub.add_parser("client")
    cli.add_argument("--host", required=True)
    cli.add_argument("--port", type=int, default=5301)
    cli.add_argument("--ports", type=int, default=16, help="rotate over this many server ports")
    cli.add_argument("--duration", type=float, default=10.0)
    cli.add_argument("--concurrency", type=int, default=32)
    cli.add_argument("--timeout", type=float, default=2.0, help="give up on one connection")
    cli.add_argument(
        "--fresh-tuples",
        action="store_true",
        help=f"bind source ports so no 4-tuple recurs within {FRESH_WINDOW_S:.0f} s",
    )
    args = parser.parse_args(argv)
    if args.mode == "server":
        serve(args.port, args.ports)
        return 0
    fresh = FreshTuples(args.ports) if args.fresh_tuples else None
    result = client(
        args.host, args.port, args.ports, args.duration, args.concurrency, args.timeout, fresh
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
