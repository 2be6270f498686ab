"""The central compiler as a service: recompile on NB changes, keep the latest SB,
report the compiled generation.

``netvirt serve`` runs :meth:`CompilerService.run` in a thread. Compiles are
full recomputes of the NB snapshot (a pure function, see ``compile.py``); the
service keeps the newest SB in memory for the trace endpoint and, later, for
the southbound service to host agents, and reports the generation it compiled
so ``?wait=compiled`` returns once a change is in the logical flows.
"""

from __future__ import annotations

import logging
import threading
import time

from netvirt.compiler.compile import compile_nb
from netvirt.compiler.nb import load
from netvirt.northbound import identity
from netvirt.northbound.db import Database
from netvirt.southbound.model import SBState

log = logging.getLogger(__name__)
COMPILER_NAME = "central"


class CompilerService:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._sb: SBState | None = None
        self._lock = threading.Lock()
        self.compile_seconds = 0.0

    def current(self) -> SBState:
        """The SB state for the newest NB generation (compiling now if behind)."""
        sb = self._sb
        if sb is not None and sb.generation >= self.db.generation():
            return sb
        return self.compile_now()

    def compile_now(self) -> SBState:
        with self._lock:
            started = time.perf_counter()
            nb = load(self.db)
            if self._sb is not None and self._sb.generation >= nb.generation:
                return self._sb
            sb = compile_nb(nb)
            sb.generation = nb.generation
            self._sb = sb
            self.compile_seconds = time.perf_counter() - started
        with self.db.write(bump=False) as session:
            identity.report(session, "compiler", COMPILER_NAME, sb.generation)
        log.info(
            "compiled generation %d: %d flows in %.3fs",
            sb.generation,
            len(sb.flows),
            self.compile_seconds,
        )
        return sb

    def run(self, stop: threading.Event, poll: float = 0.5) -> None:
        """Compile whenever the NB generation moves, until ``stop`` is set."""
        while not stop.is_set():
            try:
                if self._sb is None or self._sb.generation < self.db.generation():
                    self.compile_now()
            except Exception:  # keep serving; the next change retries
                log.exception("compile failed")
            self.db.wait_changed(poll)
