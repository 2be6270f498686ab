"""The client-cost benchmark (bench/nvb/nf_client.py) runs, and counts what the model counts.

Timings are never asserted (benchmarks prove speed); what is checked is that the
asynchronous Redis path the benchmark drives makes the operations ``nf_ops.py`` models
and charges client time for them.
"""

from __future__ import annotations

import shutil

import pytest
from nvb import nf_client


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_nf_client_drives_the_modelled_operations_through_redis() -> None:
    out = nf_client.run(4, 2)
    assert out["connections"] == 8
    assert out["ops_per_conn"] == 25  # as bench/nvb/nf_ops.py: nothing lost or added
    assert 0 < out["round_trips_per_conn"] <= 12 / 4 + 1e-9  # batches share round trips
    assert out["client_us_per_conn"] > 0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_nf_client_with_write_behind_keeps_the_sg_zone_off_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``NETVIRT_WRITE_BEHIND`` the stores are opened as the datapath opens them: the
    SG zone's 11 operations per connection are done locally (connections that close
    within the interval are never flushed), only the SNAT zone's 14 reach Redis."""
    monkeypatch.setenv("NETVIRT_WRITE_BEHIND", "5")
    out = nf_client.run(4, 2)
    assert out["ops_per_conn"] == 14  # 25 - the SG zone's 11
    assert out["local_ops_per_conn"] >= 11
    assert out["local_us_per_conn"] > 0
