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
