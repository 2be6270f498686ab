"""OVN harness: a crashed chassis daemon fails the next run by name, with its EMER line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from nvb import ovn
from nvb.system import BenchError, Proc

ASSERT_LINE = (
    "2026-11-22T12:39:57.066Z|00058|util|EMER|../lib/conntrack.c:1063: assertion "
    "conn->conn_type == CT_CONN_TYPE_DEFAULT failed in conn_update_state()"
)


def _proc(tmp_path: Path, name: str, code: str) -> Proc:
    out = tmp_path / f"{name}.out"
    with open(out, "wb") as handle:
        popen = subprocess.Popen([sys.executable, "-c", code], stdout=handle, stderr=handle)
    return Proc(name, popen, None, out)


def test_exit_reason_is_the_last_emer_line(tmp_path: Path) -> None:
    log = tmp_path / "ovs-vswitchd.log"
    log.write_text(
        "2026-11-22T12:39:51.8Z|00001|vlog|INFO|opened log file\n"
        "2026-11-22T12:39:52.1Z|00002|util|EMER|an older one\n"
        f"{ASSERT_LINE}\n"
        "2026-11-22T12:39:57.1Z|00059|vlog|INFO|something after\n"
    )
    assert ovn.exit_reason(log) == (
        "../lib/conntrack.c:1063: assertion conn->conn_type == CT_CONN_TYPE_DEFAULT "
        "failed in conn_update_state()"
    )
    log.write_text("2026-11-22T12:39:51.8Z|00001|vlog|INFO|opened log file\n")
    assert ovn.exit_reason(log) == ""
    assert ovn.exit_reason(tmp_path / "missing.log") == ""


def test_check_daemons_names_a_crashed_vswitchd(tmp_path: Path) -> None:
    ch = ovn.Chassis("ch1", "nvb-ch1", tmp_path, "127.0.0.1")
    ch.procs["controller"] = _proc(tmp_path, "ch1-controller", "import time; time.sleep(30)")
    ch.procs["vswitchd"] = _proc(tmp_path, "ch1-vswitchd", "raise SystemExit(134)")
    (tmp_path / "ovs-vswitchd.log").write_text(ASSERT_LINE + "\n")
    try:
        ch.procs["vswitchd"].popen.wait(10)
        with pytest.raises(BenchError, match=r"ch1-vswitchd exited: .*conn_update_state"):
            ovn.check_daemons([ch])
    finally:
        ch.procs["controller"].popen.kill()
        ch.procs["controller"].popen.wait()


def test_check_daemons_passes_while_they_run_and_falls_back_to_output(tmp_path: Path) -> None:
    ch = ovn.Chassis("ch1", "nvb-ch1", tmp_path, "127.0.0.1")
    ch.procs["vswitchd"] = _proc(tmp_path, "ch1-vswitchd", "import time; time.sleep(30)")
    try:
        ovn.check_daemons([ch])  # alive: nothing raised
    finally:
        ch.procs["vswitchd"].popen.kill()
        ch.procs["vswitchd"].popen.wait()
    ch.procs["vswitchd"] = _proc(tmp_path, "ch1-vswitchd", "print('bad db'); raise SystemExit(1)")
    ch.procs["vswitchd"].popen.wait(10)
    with pytest.raises(BenchError, match="ch1-vswitchd exited: bad db"):
        ovn.check_daemons([ch])
