"""The plug directory watch wakes the datapath loop the moment a plug file appears."""

from __future__ import annotations

import select
from pathlib import Path

from netvirt.agent.dirwatch import DirWatch


def _readable(fd: int, timeout: float) -> bool:
    poller = select.epoll()
    try:
        poller.register(fd, select.EPOLLIN)
        return bool(poller.poll(timeout))
    finally:
        poller.close()


def test_a_file_renamed_into_place_wakes_and_drains(tmp_path: Path) -> None:
    watch = DirWatch(tmp_path)
    try:
        assert watch.fd is not None
        assert not _readable(watch.fd, 0.0)  # nothing happened yet
        (tmp_path / ".veth1.tmp").write_text("port-id\n")
        (tmp_path / ".veth1.tmp").rename(tmp_path / "veth1")
        assert _readable(watch.fd, 1.0)
        assert watch.drain()
        assert not _readable(watch.fd, 0.0)  # drained: quiet until the next change
        assert not watch.drain()
        (tmp_path / "veth1").unlink()
        assert _readable(watch.fd, 1.0)
        assert watch.drain()
        assert watch.events == 2
    finally:
        watch.close()
    assert watch.fd is None


def test_a_missing_directory_falls_back_to_polling(tmp_path: Path) -> None:
    watch = DirWatch(tmp_path / "absent")
    assert watch.fd is None
    assert not watch.drain()
    watch.close()
