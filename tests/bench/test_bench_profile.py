"""Summaries of py-spy's collapsed stacks."""

from __future__ import annotations

import pytest
from nvb import profile

STACKS = """\
<module> (main.py:1);run (datapath.py:10);_send (netvirt/dataplane/ports/afpacket.py:80) 60
<module> (main.py:1);run (datapath.py:10);process (pipeline.py:20);lookup (classifier.py:5) 30
<module> (main.py:1);run (datapath.py:10);process (pipeline.py:20) 10
garbage line
"""


def test_self_and_inclusive_shares() -> None:
    out = profile.summarize(STACKS)
    assert out["self"][0] == ("afpacket.py:_send", pytest.approx(60.0))
    assert dict(out["self"])["classifier.py:lookup"] == pytest.approx(30.0)
    inclusive = dict(out["inclusive"])
    assert inclusive["pipeline.py:process"] == pytest.approx(40.0)
    assert "datapath.py:run" not in inclusive  # on every stack: the trunk is left out
    assert out["samples"] == [("total", 100.0)]


def test_empty_profile() -> None:
    assert profile.summarize("") == {"self": [], "inclusive": []}
