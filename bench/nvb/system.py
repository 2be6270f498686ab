"""The imperative shell: commands, namespaces, processes, the lock, CPU and memory samples.

Everything the harness creates is recorded in one :class:`Cleanup` and removed
in reverse order when the run ends, fails or is interrupted (SIGINT/SIGTERM
raise ``KeyboardInterrupt`` so ``finally`` blocks run). Only processes started
here are signalled, by pid, and only after checking their start time, so a
recycled pid is never hit.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from nvb import results

log = logging.getLogger("nvb")
LOCK_PATH = "/tmp/bench.lock"
HZ = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


class BenchError(RuntimeError):
    """A setup step or a workload failed; the message says which and why."""


def run(
    argv: Sequence[str],
    *,
    timeout: float = 60.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, log it, return its output; raise BenchError on failure when ``check``."""
    log.debug("+ %s", shlex.join(argv))
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            input=input_text,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out after {timeout:g}s: {shlex.join(argv)}") from exc
    if proc.returncode != 0:
        log.debug("  rc=%d stderr=%s", proc.returncode, proc.stderr.strip()[-500:])
        if check:
            detail = (proc.stderr.strip() or proc.stdout.strip())[-800:]
            raise BenchError(f"{shlex.join(argv)} exited {proc.returncode}: {detail}")
    return proc


def console_logging(log: logging.Logger, verbose: bool) -> None:
    """Timestamped lines on stderr for the bench entry points (run.py, stateless_nf.py)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def in_netns(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (None when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])


@dataclass
class Proc:
    """A process started by the harness."""

    name: str
    popen: subprocess.Popen[bytes]
    started: int | None
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 3.0) -> None:
        if not self.alive() or start_time(self.pid) != self.started:
            self.popen.poll()
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Cleanup:
    """What the harness made, removed in reverse order by :meth:`close`."""

    steps: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def add(self, what: str, undo: Callable[[], None]) -> None:
        self.steps.append((what, undo))

    def close(self) -> None:
        while self.steps:
            what, undo = self.steps.pop()
            try:
                undo()
            except Exception as exc:  # keep tearing down the rest
                log.warning("teardown of %s failed: %s", what, exc)


class Machine:
    """Creates namespaces, links and processes, recording each in the cleanup."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cleanup = Cleanup()
        workdir.mkdir(parents=True, exist_ok=True)

    def scope(self) -> Machine:
        """A child machine whose things go when its own cleanup closes."""
        return Machine(self.workdir)

    # ---------------------------------------------------------------- namespaces and links

    def netns(self, name: str) -> str:
        if not name.startswith("nvb"):
            raise BenchError(f"namespace {name!r} lacks the nvb prefix")
        run(["ip", "netns", "add", name])
        self.cleanup.add(f"netns {name}", lambda: _del_netns(name))
        for cmd in (["ip", "link", "set", "lo", "up"],):
            run(in_netns(name, cmd))
        return name

    def veth(self, a: str, ns_a: str, b: str, ns_b: str, mtu: int | None = None) -> None:
        """A veth pair, created directly in its namespaces (never in the machine's own)."""
        run(["ip", "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b])
        for ns, dev in ((ns_a, a), (ns_b, b)):
            if mtu:
                run(["ip", "-n", ns, "link", "set", dev, "mtu", str(mtu)])
            run(["ip", "-n", ns, "link", "set", dev, "up"])

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        """A background process, its output in ``<workdir>/<name>.log``."""
        log_path = self.workdir / f"{name.replace('/', '_')}.log"
        log.debug("& %s", shlex.join(argv))
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if env is None else {**os.environ, **env},
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, start_time(popen.pid), log_path)
        self.cleanup.add(f"process {name}", proc.stop)
        return proc

    def close(self) -> None:
        self.cleanup.close()


def _del_netns(name: str) -> None:
    """Kill what still runs inside (started here) and delete the namespace."""
    pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "del", name], check=False)


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


# ---------------------------------------------------------------- waiting


def wait_for(what: str, ready: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Poll until ``ready()``; return the seconds it took, raise BenchError on timeout."""
    started = time.monotonic()
    while not ready():
        if time.monotonic() - started > timeout:
            raise BenchError(f"{what}: not ready within {timeout:g}s")
        time.sleep(interval)
    return time.monotonic() - started


def listening(pid: int, port: int) -> bool:
    """A TCP socket listening on ``port`` in the namespace of ``pid``."""
    lines: list[str] = []
    for table in ("tcp", "tcp6"):
        try:
            lines += Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
    for line in lines:
        parts = line.split()
        if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


# ---------------------------------------------------------------- the shared lock


@contextlib.contextmanager
def bench_lock() -> Iterator[float]:
    """Hold /tmp/bench.lock (flock(2), as ``flock(1)`` takes it); yields the wait in s.

    When an ancestor of this process already holds it (``flock /tmp/bench.lock
    python3 bench/run.py …``: the whole run is exclusive), taking it again through
    a new open file would wait for ourselves forever; the timed part then runs
    under the ancestor's lock instead."""
    started = time.monotonic()
    if _held_by_ancestor(LOCK_PATH):
        yield 0.0
        return
    with open(LOCK_PATH, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


RUN_LOCK_PATH = "/tmp/nvb-run.lock"


class AlreadyRunning(BenchError):
    """Another bench/run.py holds the whole-run lock."""


@contextlib.contextmanager
def run_lock(path: str | Path = RUN_LOCK_PATH) -> Iterator[None]:
    """Hold the whole-run lock for one bench/run.py, or fail at once naming the holder.

    Two runs at once share the fixed names of what they make (OVN's
    ``/tmp/nvb-ovn-central``, the ``nvb-ch1`` chassis, ``nvb*`` labs): the
    second one's set-up tears down the first one's daemons mid-measurement.
    ``bench_lock`` only serializes the timed parts, so a run takes this one too,
    without waiting: a helper sees at once that the bench is busy."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            msg = f"another bench/run.py is running (pid {holder}; {path})"
            raise AlreadyRunning(msg) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _held_by_ancestor(path: str | Path) -> bool:
    """Is an exclusive flock on ``path`` held by one of this process's ancestors?
    (/proc/locks names the process that took it and the file's device and inode.)"""
    try:
        st = os.stat(path)
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    holders: set[int] = set()
    for line in locks:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" ("->" marks a waiter)
        if len(parts) < 6 or parts[1] != "FLOCK" or parts[2] == "->" or parts[3] != "WRITE":
            continue
        major, minor, inode = parts[5].split(":")
        if int(inode) == st.st_ino and os.makedev(int(major, 16), int(minor, 16)) == st.st_dev:
            holders.add(int(parts[4]))
    pid = os.getppid()
    while pid > 1:
        if pid in holders:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


# ---------------------------------------------------------------- CPU and memory


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (by /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def _ticks(pid: int) -> int:
    try:
        return results.proc_ticks(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return 0


Sample = tuple[float, dict[str, int], dict[str, int]]  # (monotonic time, per component, host)


class CpuSampler:
    """Tick counters of named components (each a set of pids) and of the whole host."""

    def __init__(self, components: Mapping[str, Sequence[int]]) -> None:
        self.components = {k: list(v) for k, v in components.items()}

    def sample(self) -> Sample:
        procs = {name: sum(_ticks(p) for p in pids) for name, pids in self.components.items()}
        host = results.cpu_totals(Path("/proc/stat").read_text())
        return time.monotonic(), procs, host

    def percent(self, before: Sample, after: Sample) -> dict[str, float]:
        seconds = after[0] - before[0]
        out = results.cpu_percent(before[1], after[1], seconds, HZ)
        out.update(results.host_percent(before[2], after[2], CORES))
        return out


def rss_kb(pids: Sequence[int]) -> int:
    """Sum of VmRSS (kB) of the given processes."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


# ---------------------------------------------------------------- signals


def raise_on_signals() -> None:
    """SIGTERM and SIGINT end the run through ``finally`` blocks (teardown)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
