"""bench/run.py's whole-run lock: a second run fails at once and names the first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from nvb.system import AlreadyRunning, run_lock

HOLD = """
import sys, time
sys.path.insert(0, {bench!r})
from nvb.system import run_lock
with run_lock({path!r}):
    print("held", flush=True)
    time.sleep(30)
"""


def test_a_second_holder_fails_at_once_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    bench = str(Path(__file__).resolve().parents[2] / "bench")
    code = HOLD.format(bench=bench, path=str(path))
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyRunning, match=rf"pid {holder.pid}\b"), run_lock(path):
            pytest.fail("took a lock another process holds")
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # the holder is gone: the kernel released its flock, the next run takes it
    with run_lock(path):
        assert path.read_text().strip().isdigit()
    assert path.read_text() == ""
