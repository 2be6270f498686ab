"""A paced TCP stream whose receiver measures the longest gap in received data (stdlib only).

    python3 nf_stream.py server --port 5401 [--idle 10]
    python3 nf_stream.py client --host 10.253.100.1 --port 5401 --rate 20 --duration 12

Why not iperf3: its receiver reports 0.1 s intervals at best, and a reset
shows up as a generic error. Here the receiver timestamps every ``recv`` and
keeps the longest gap between two of them after the first byte (µs clock,
ms in the report); both ends say how the connection ended: ``eof`` (a
normal close), ``reset`` (ECONNRESET/EPIPE: the connection was killed),
``timeout`` (nothing for ``--idle`` s: a connection that silently died) or
another error. The client paces ``--rate`` Mbit/s in 16 KiB writes and never
bursts to catch up after a stall. Each end prints one JSON line.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import time
from dataclasses import dataclass

CHUNK = 16384
RESET_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)


@dataclass
class GapTracker:
    """Longest interval between data arrivals, and when it started (after the first byte)."""

    first: float | None = None
    last: float | None = None
    longest: float = 0.0
    longest_at: float | None = None
    received: int = 0

    def data(self, now: float, size: int) -> None:
        if size <= 0:
            return
        if self.last is not None and now - self.last > self.longest:
            self.longest, self.longest_at = now - self.last, self.last
        if self.first is None:
            self.first = now
        self.last = now
        self.received += size

    def report(self) -> dict[str, float | int | None]:
        return {
            "bytes": self.received,
            "longest_gap_ms": round(self.longest * 1e3, 2),
            "gap_started": self.longest_at,
            "first": self.first,
            "last": self.last,
        }


def ending(exc: BaseException) -> str:
    """How a connection ended, from the exception that ended it."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno in RESET_ERRNOS:
        return "reset"
    return f"error: {exc}"


def serve(port: int, idle: float) -> dict[str, object]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(1)
    conn, peer = listener.accept()
    listener.close()
    conn.settimeout(idle)
    gaps = GapTracker()
    end = "eof"
    try:
        while True:
            data = conn.recv(1 << 18)
            if not data:
                break
            gaps.data(time.time(), len(data))
    except OSError as exc:
        end = ending(exc)
    finally:
        conn.close()
    return {"role": "server", "peer": peer[0], "end": end} | gaps.report()


def send(host: str, port: int, rate_mbit: float, duration: float) -> dict[str, object]:
    interval = CHUNK * 8 / (rate_mbit * 1e6)
    payload = b"\0" * CHUNK
    sent = 0
    end = "eof"
    started = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError as exc:
        return {"role": "client", "end": f"connect: {exc}", "bytes": 0}
    sock.settimeout(30)
    try:
        due = started
        while time.monotonic() - started < duration:
            sock.sendall(payload)
            sent += CHUNK
            due = max(due + interval, time.monotonic() - interval)  # no catch-up burst
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        while sock.recv(4096):  # the server's close
            pass
    except OSError as exc:
        end = ending(exc)
    finally:
        sock.close()
    return {"role": "client", "end": end, "bytes": sent, "seconds": time.monotonic() - started}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("server")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--idle", type=float, default=10.0, help="give up after this silence")
    cli = sub.add_parser("client")
    cli.add_argument("--host", required=True)
    cli.add_argument("--port", type=int, required=True)
    cli.add_argument("--rate", type=float, default=20.0, help="Mbit/s")
    cli.add_argument("--duration", type=float, default=12.0)
    args = parser.parse_args(argv)
    if args.mode == "server":
        result = serve(args.port, args.idle)
    else:
        result = send(args.host, args.port, args.rate, args.duration)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
