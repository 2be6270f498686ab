"""The central compiler as a service: recompile on NB changes, keep the latest SB,
report the compiled generation.

``netvirt serve`` runs :meth:`CompilerService.run` in a thread. Each compile
reads only the NB objects the database's change log says were touched
(``nb.refresh``) and rebuilds only the datapaths they can affect
(``incremental.py``; the first compile, and any change the log cannot
describe, is a full recompute). The service keeps the newest SB in memory for
the trace endpoint and the southbound service, together with the datapaths
whose flows changed since the previous compile (:meth:`dirty_since`, so the
southbound service diffs only those), and reports the generation it compiled
so ``?wait=compiled`` returns once a change is in the logical flows.
"""

from __future__ import annotations

import logging
import threading
import time

from netvirt.compiler.incremental import Compiled, compile_incremental
from netvirt.compiler.nb import Loaded, refresh
from netvirt.northbound import identity
from netvirt.northbound.db import Database
from netvirt.southbound.model import SBState

log = logging.getLogger(__name__)
COMPILER_NAME = "central"
HISTORY = 64  # compiled generations whose rebuilt datapaths are remembered
SMALL_CHANGE = 100  # objects touched: compiled at once, without waiting for quiet
SETTLE_QUIET = 0.5  # seconds without writes that end a burst
SETTLE_STEP = 0.02
SETTLE_MAX = 30.0  # a larger compile waits at most this long for the writes to stop


class CompilerService:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._sb: SBState | None = None
        self._lock = threading.Lock()
        self._loaded: Loaded | None = None
        self._compiled: Compiled | None = None
        # generation -> (previous compiled generation, datapaths rebuilt, port bindings
        # rebuilt; None = all)
        self._dirty: dict[int, tuple[int, frozenset[int] | None, frozenset[str] | None]] = {}
        self.compile_seconds = 0.0
        self.load_seconds = 0.0
        self.background = False  # True while run() compiles in its own thread

    def current(self) -> SBState:
        """The SB state for the newest NB generation: compiled now if behind, unless a
        compile is running or :meth:`run` compiles in the background; then the newest
        compiled state (a compile notifies the store's waiters when it is done).
        Southbound requests call this: waiting out a 20-second compile made agents'
        polls time out and resync."""
        sb = self._sb
        if sb is not None and sb.generation >= self.db.generation():
            return sb
        if sb is not None and (self._lock.locked() or self.background):
            return sb
        return self.compile_now()

    def compile_now(self) -> SBState:
        with self._lock:
            started = time.perf_counter()
            loaded = refresh(self.db, self._loaded)
            nb = loaded.nb
            if self._sb is not None and self._sb.generation >= nb.generation:
                return self._sb
            self.load_seconds = time.perf_counter() - started
            try:
                compiled = compile_incremental(self._compiled, nb, loaded.changed)
            except Exception:
                self._loaded = self._compiled = None  # start over from a full load next time
                raise
            sb = compiled.sb
            sb.generation = nb.generation
            previous = self._sb.generation if self._sb is not None else -1
            self._dirty[sb.generation] = (previous, compiled.dirty, compiled.ports_dirty)
            while len(self._dirty) > HISTORY:
                del self._dirty[min(self._dirty)]
            self._loaded, self._compiled, self._sb = loaded, compiled, sb
            self.compile_seconds = time.perf_counter() - started
        with self.db.write(bump=False) as session:
            identity.report(session, "compiler", COMPILER_NAME, sb.generation)
        log.info(
            "compiled generation %d: %d flows, %s datapaths rebuilt in %.3fs (NB read %.3fs); "
            "per-port flows reused %d/%d",
            sb.generation,
            sb.flow_count(),
            "all" if compiled.dirty is None else len(compiled.dirty),
            self.compile_seconds,
            self.load_seconds,
            *compiled.reused,
        )
        return sb

    def _settle(self, stop: threading.Event) -> None:
        """Before a large compile, let a burst of writes end (bulk creates of thousands
        of objects): compiling after each of twenty 500-port requests recompiled the
        whole cloud twenty times, each time holding the GIL against the API serving the
        writes. A small change (a port create: one object) compiles at once."""
        loaded = self._loaded
        seq = loaded.seq if loaded is not None else None
        touched = self.db.touched_count(seq) if seq is not None else None
        if loaded is not None and (touched is None or touched <= SMALL_CHANGE):
            return  # small, or unknown (no change log: PostgreSQL): no waiting
        started = last = time.monotonic()
        generation = self.db.generation()
        while not stop.is_set():
            now = time.monotonic()
            if now - last >= SETTLE_QUIET or now - started >= SETTLE_MAX:
                return
            time.sleep(SETTLE_STEP)
            current = self.db.generation()
            if current != generation or self.db.writing():
                generation, last = current, time.monotonic()

    def dirty_since(self, since: int, generation: int) -> frozenset[int] | None:
        """The datapaths whose flows may differ between two compiled generations; None when
        unknown (a full compile in between, or history lost)."""
        out: set[int] = set()
        while generation > since:
            entry = self._dirty.get(generation)
            if entry is None or entry[1] is None:
                return None
            out |= entry[1]
            generation = entry[0]
        return frozenset(out) if generation == since else None

    def ports_dirty_since(self, since: int, generation: int) -> frozenset[str] | None:
        """The names of the port bindings that may differ between two compiled
        generations (the southbound service compares only those); None when unknown."""
        out: set[str] = set()
        while generation > since:
            entry = self._dirty.get(generation)
            if entry is None or entry[2] is None:
                return None
            out |= entry[2]
            generation = entry[0]
        return frozenset(out) if generation == since else None

    def run(self, stop: threading.Event, poll: float = 0.5) -> None:
        """Compile whenever the NB generation moves, until ``stop`` is set. Meanwhile
        :meth:`current` never compiles in its caller's thread."""
        self.background = True
        while not stop.is_set():
            seen = self.db.writes
            try:
                if self._sb is None or self._sb.generation < self.db.generation():
                    self._settle(stop)
                    self.compile_now()
                    continue  # look again at once: writes may have come meanwhile
            except Exception:  # keep serving; the next change retries
                log.exception("compile failed")
            self.db.wait_changed(poll, seen)
