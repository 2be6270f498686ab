"""New-TCP-connections-per-second client and server (stdlib only, run inside namespaces).

    python3 connrate.py server --port 5301 --ports 16
    python3 connrate.py client --host 10.251.1.12 --port 5301 --ports 16 --duration 10

One connection = connect, the server sends one byte, the client reads it and
closes, the server closes on the client's FIN: every connection crosses the
stateful path both ways (SYN, SYN-ACK, data, FIN both ways) and only the
client keeps TIME_WAIT. The client rotates over ``ports`` server ports, so
a 4-tuple is never reused while it is in TIME_WAIT anywhere (with a wide
``ip_local_port_range``: 16 ports x 64k source ports last 60 s at 17k conn/s).
Closing with an RST instead (``SO_LINGER`` 0) makes the kernel reuse source
ports at once, which crashed ovs-vswitchd 3.1's userspace conntrack with SNAT
(assertion in ``conn_update_state``); a normal close is also what real
clients do. One ``selectors`` loop keeps ``concurrency`` connections in
flight; the client prints one JSON line: connections completed, errors,
seconds.
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


def _open(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    err = sock.connect_ex((host, port))
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, "connect")
    return sock


def client(
    host: str, port: int, ports: int, duration: float, concurrency: int, timeout: float
) -> dict[str, float]:
    sel = selectors.DefaultSelector()
    done = errors = launched = 0
    started = time.monotonic()
    deadline = started + duration
    opened: dict[socket.socket, float] = {}

    def launch() -> None:
        nonlocal errors, launched
        launched += 1
        try:
            sock = _open(host, port + launched % ports)
        except OSError:
            errors += 1
            return
        opened[sock] = time.monotonic()
        sel.register(sock, selectors.EVENT_READ)

    def finish(sock: socket.socket, ok: bool) -> None:
        nonlocal done, errors
        sel.unregister(sock)
        del opened[sock]
        sock.close()
        if ok:
            done += 1
        else:
            errors += 1

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
            launch()
    seconds = time.monotonic() - started
    for sock in list(opened):
        finish(sock, False)
        errors -= 1  # still in flight at the end: not an error
    return {"connections": done, "errors": errors, "seconds": seconds}


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
    args = parser.parse_args(argv)
    if args.mode == "server":
        serve(args.port, args.ports)
        return 0
    result = client(args.host, args.port, args.ports, args.duration, args.concurrency, args.timeout)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
