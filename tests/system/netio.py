"""Helpers for system tests: the smallest datapath (``Forwarder``) and a TCP echo check.

``Forwarder`` is a thread waiting on port fds and calling a handler per ready
fd (``b.send_batch(a.recv_batch())`` makes a wire). Errors in the thread fail
the test when the forwarder stops.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from netvirt.dataplane import netns

PREFIX = f"nvt{os.getpid() % 10000}"


class HasFileno(Protocol):
    def fileno(self) -> int: ...


class Forwarder:
    """Run handlers when their fds are readable, in a thread, until ``stop``."""

    def __init__(self, routes: dict[HasFileno, Callable[[], object]]) -> None:
        self.routes = routes
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="forwarder", daemon=True)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(list(self.routes), [], [], 0.05)
                for source in ready:
                    self.routes[source]()
        except BaseException as exc:
            self.failure = exc

    def __enter__(self) -> Forwarder:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.failure is not None:
            raise self.failure


def tcp_transfer(server_ns: str, client_ns: str, server_ip: str, size: int) -> int:
    """Send ``size`` random bytes over TCP from ``client_ns`` to ``server_ns``; bytes echoed.

    The server echoes what it reads, the client checks every byte it gets
    back, so corruption in either direction fails. Returns the byte count.
    """
    payload = os.urandom(size)
    listener = netns.run_in_netns(server_ns, _listener, server_ip)
    port = listener.getsockname()[1]
    server = threading.Thread(target=_echo_one, args=(listener,), daemon=True)
    server.start()
    client = netns.run_in_netns(client_ns, socket.create_connection, (server_ip, port), 5.0)
    received = bytearray()
    try:
        client.settimeout(8)
        sender = threading.Thread(target=_send_all, args=(client, payload), daemon=True)
        sender.start()
        while len(received) < size:
            chunk = client.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        sender.join(timeout=8)
    finally:
        client.close()
        server.join(timeout=8)
        listener.close()
    assert len(received) == size
    assert bytes(received) == payload
    return size


def _listener(ip: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((ip, 0))
    sock.listen(1)
    sock.settimeout(8)
    return sock


def _echo_one(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(8)
        while chunk := conn.recv(1 << 20):
            conn.sendall(chunk)


def _send_all(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
