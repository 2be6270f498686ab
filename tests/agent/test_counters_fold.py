"""Port counters with the kernel offload's frames folded in (``counters.fold_offloaded``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from netvirt.agent.counters import OFFLOADED, PortCounters, fold_offloaded, fold_row

IFACES = st.sampled_from(["tap-a", "tap-b", "ext0", "vm-c"])
ROW = st.fixed_dictionaries({name: st.integers(0, 2**40) for name in OFFLOADED})


@given(
    st.dictionaries(IFACES, st.builds(PortCounters, *(st.integers(0, 2**40) for _ in range(4)))),
    st.dictionaries(IFACES, ROW),
)
def test_each_port_counts_what_crossed_it_whoever_forwarded_it(
    mine: dict[str, PortCounters], kernel: dict[str, dict[str, int]]
) -> None:
    ports = {iface: c.as_dict() for iface, c in mine.items()}
    folded = fold_offloaded(ports, kernel)
    assert set(folded) == set(ports)  # ports only the offload still knows are closing
    for iface, row in folded.items():
        assert isinstance(row, dict)
        served = kernel.get(iface)
        if served is None:
            assert row == ports[iface]
            continue
        assert row["offloaded"] == served
        for name in OFFLOADED:
            assert row[name] == ports[iface][name] + served[name]
        assert row["drops"] == ports[iface]["drops"]  # drops are the datapath's alone
        assert row["tx_errors"] == ports[iface]["tx_errors"]


def test_without_an_offload_the_counters_are_unchanged() -> None:
    ports = {"tap-a": PortCounters(rx_packets=3, rx_bytes=300).as_dict()}
    assert fold_offloaded(ports, None) == ports
    assert fold_offloaded(ports, {"error": "off"}) == ports


def test_the_tunnel_counts_what_the_kernel_encapsulated_and_decapsulated() -> None:
    tunnel = PortCounters(rx_packets=2, rx_bytes=200, tx_packets=1, tx_bytes=100).as_dict()
    kernel = {"underlay": "ul0", "encap_entries": 3, "rx_packets": 5, "rx_bytes": 500}
    row = fold_row(tunnel, kernel)
    assert isinstance(row, dict)
    assert (row["rx_packets"], row["rx_bytes"], row["tx_packets"]) == (7, 700, 1)
    assert row["offloaded"] == {"rx_packets": 5, "rx_bytes": 500, "tx_packets": 0, "tx_bytes": 0}
    assert fold_row(tunnel, None) is tunnel  # no kernel tunnel: unchanged
