"""The per-connection store operation model (bench/nvb/nf_ops.py): the protocol's floor.

A regression guard for issue 6: a connection of the connection-rate workload through a
security group and SNAT, each zone on its own datapath behind a read cache, costs the
operations docs/stateless-nf.md ("Store operations per new connection") states.
"""

from __future__ import annotations

from nvb import nf_ops


def test_nf_ops_per_connection_with_the_datapath_cache() -> None:
    ops = nf_ops.measure(20, cache=True)
    # the two lookups of the SYN (one per zone); every later read is served by the cache
    assert ops["get"] == 2
    assert ops["cas"] == 12  # every state change, both zones: primary creation included
    assert ops["put"] == 8  # the mirror copies of the changes after creation
    assert ops["allocate"] == 3  # creation, ESTABLISHED, first FIN
    assert ops["total"] == 25
    assert ops["round_trips"] == 12


def test_nf_ops_the_cache_is_what_spares_the_reads() -> None:
    cached, uncached = nf_ops.measure(10, cache=True), nf_ops.measure(10, cache=False)
    assert uncached["get"] > 8 * cached["get"]
    assert {k: uncached[k] for k in ("cas", "put", "allocate")} == {
        k: cached[k] for k in ("cas", "put", "allocate")
    }  # the cache never saves a write
