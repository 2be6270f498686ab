"""The host's health checker against a fake VM, on a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from agent.health_vm import FakeVM
from netvirt.agent.health import (
    ERROR,
    ONLINE,
    HealthChecker,
    http_request,
    local_monitors,
    parse_expected_codes,
    status_code,
)
from netvirt.southbound.model import PortBinding, SBState, ServiceMonitor

VIP, VIP_MAC = "10.0.0.100", 0xFA163E0000AA
MEMBER, MEMBER_MAC = "10.0.0.11", 0xFA163E000011
VIP6, MEMBER6 = "fd00::100", "fd00::11"
IFACE = "tap-m1"


def monitor(kind: str = "TCP", **kw: object) -> ServiceMonitor:
    base = ServiceMonitor(
        member_id="m1",
        pool_id="pool",
        monitor_id="hm",
        logical_port="lp1",
        member_mac=MEMBER_MAC,
        ip=MEMBER,
        port=80,
        type=kind,  # type: ignore[arg-type]
        delay=2,
        timeout=1,
        max_retries=2,
        max_retries_down=3,
        source_ip=VIP,
        source_mac=VIP_MAC,
    )
    if kind == "HTTP":
        base = replace(base, http_method="GET", url_path="/health", expected_codes="200")
    return replace(base, **kw)  # type: ignore[arg-type]


def vm(**kw: object) -> FakeVM:
    return FakeVM("fa:16:3e:00:00:11", MEMBER, **kw)  # type: ignore[arg-type]


class Harness:
    """One checker, VMs behind interfaces, a clock advanced in steps."""

    def __init__(self, monitors: list[ServiceMonitor], vms: dict[str, FakeVM]) -> None:
        self.checker = HealthChecker(seed=7)
        self.vms = vms
        ifaces = {m.logical_port: IFACE for m in monitors} if vms else {}
        self.checker.update(monitors, ifaces)
        self.now = 0.0
        self.log: list[tuple[float, str, str]] = []
        self.sent: list[bytes] = []
        self.refused: list[bytes] = []  # VM frames the checker left to the pipeline

    def pump(self) -> None:
        for _ in range(50):
            out = self.checker.due(self.now)
            if not out:
                break
            for iface, frame in out:
                self.sent.append(frame)
                for answer in self.vms[iface].handle(frame):
                    if not self.checker.offer(iface, answer, self.now):
                        self.refused.append(answer)
        for member, status in self.checker.changes():
            self.log.append((self.now, member, status))

    def run(self, until: float, step: float = 0.25) -> None:
        while self.now <= until + 1e-9:
            self.pump()
            self.now += step

    def statuses(self) -> list[str]:
        return [status for _, _, status in self.log]

    def first(self, status: str) -> float:
        return next(t for t, _, s in self.log if s == status)


# -- the three probe types, up and down ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["PING", "TCP", "HTTP"])
def test_member_up_goes_online_after_max_retries(kind: str) -> None:
    guest = vm()
    h = Harness([monitor(kind)], {IFACE: guest})
    h.run(6)
    assert h.statuses() == [ONLINE]
    assert h.first(ONLINE) == 2.0  # probes at 0 and 2: two successes
    assert guest.bad_frames == 0
    assert not h.refused


def test_tcp_probe_resets_the_connection_it_opened() -> None:
    guest = vm()
    h = Harness([monitor("TCP")], {IFACE: guest})
    h.run(0)
    syn, rst = (Ether(f)[TCP] for f in h.sent)
    assert str(syn.flags) == "S"
    assert syn.dport == 80
    assert 32768 <= syn.sport < 61000
    assert "R" in str(rst.flags)
    assert rst.sport == syn.sport
    assert rst.seq == syn.seq + 1
    assert guest.resets == [syn.sport]


def test_probes_come_from_the_vip_to_the_member() -> None:
    h = Harness([monitor("PING")], {IFACE: vm()})
    h.run(0)
    frame = Ether(h.sent[0])
    assert frame.src == "fa:16:3e:00:00:aa"
    assert frame.dst == "fa:16:3e:00:00:11"
    assert (frame[IP].src, frame[IP].dst) == (VIP, MEMBER)


def test_http_probe_sends_one_request_and_reads_the_status() -> None:
    guest = vm()
    h = Harness([monitor("HTTP")], {IFACE: guest})
    h.run(2)
    assert h.statuses() == [ONLINE]
    request = guest.requests[0]
    assert request.startswith(b"GET /health HTTP/1.0\r\n")
    assert b"\r\nHost: 10.0.0.11:80\r\n" in request
    assert request.endswith(b"\r\n\r\n")
    assert len(guest.resets) == 2  # each connection is reset after the verdict


@pytest.mark.parametrize("kind", ["TCP", "HTTP"])
def test_closed_port_fails_at_once_on_rst(kind: str) -> None:
    h = Harness([monitor(kind, port=8080)], {IFACE: vm()})
    h.run(8)
    assert h.statuses() == [ERROR]
    assert h.first(ERROR) == 4.0  # RSTs to the probes at 0, 2 and 4: no timeout to wait


@pytest.mark.parametrize("kind", ["PING", "TCP", "HTTP"])
def test_silent_member_goes_error_after_timeouts(kind: str) -> None:
    h = Harness([monitor(kind)], {IFACE: vm(blackhole=True)})
    h.run(8)
    assert h.statuses() == [ERROR]
    assert h.first(ERROR) == 5.0  # the third probe (at 4) times out after 1 s


def test_ping_ignores_tcp_state() -> None:
    h = Harness([monitor("PING")], {IFACE: vm(listening=set())})
    h.run(4)
    assert h.statuses() == [ONLINE]


def test_unreachable_ping_goes_error() -> None:
    h = Harness([monitor("PING")], {IFACE: vm(ping=False)})
    h.run(8)
    assert h.statuses() == [ERROR]


@pytest.mark.parametrize(
    ("codes", "answer", "verdict"),
    [
        ("200", 500, ERROR),
        ("200", 200, ONLINE),
        ("200,202", 202, ONLINE),
        ("200-204", 204, ONLINE),
        ("200-204", 301, ERROR),
    ],
)
def test_http_expected_codes(codes: str, answer: int, verdict: str) -> None:
    h = Harness([monitor("HTTP", expected_codes=codes)], {IFACE: vm(http_code=answer)})
    h.run(8)
    assert h.statuses() == [verdict]


# -- recovery and streaks ---------------------------------------------------------------------


def test_member_goes_down_and_recovers() -> None:
    guest = vm()
    h = Harness([monitor("HTTP")], {IFACE: guest})
    h.run(4)
    guest.blackhole = True
    h.run(12)
    guest.blackhole = False
    h.run(20)
    assert h.statuses() == [ONLINE, ERROR, ONLINE]
    went_down, came_back = h.first(ERROR), [t for t, _, s in h.log if s == ONLINE][1]
    assert 4 < went_down <= 4 + 3 * 2 + 1  # max_retries_down * delay + timeout
    assert came_back - 12 <= 2 * 2  # max_retries * delay


def test_one_failure_does_not_flap() -> None:
    guest = vm()
    h = Harness([monitor("TCP")], {IFACE: guest})
    h.run(4)
    guest.blackhole = True
    h.run(6)  # one probe (at 6) lost
    guest.blackhole = False
    h.run(16)
    assert h.statuses() == [ONLINE]


class Streaks:
    """Octavia's rule as a reference: consecutive results against the two thresholds."""

    def __init__(self, rise: int, fall: int) -> None:
        self.rise, self.fall, self.ups, self.downs = rise, fall, 0, 0
        self.status: str | None = None
        self.changes: list[str] = []

    def result(self, ok: bool) -> None:
        self.ups, self.downs = (self.ups + 1, 0) if ok else (0, self.downs + 1)
        new = self.status
        if ok and self.ups >= self.rise:
            new = ONLINE
        if not ok and self.downs >= self.fall:
            new = ERROR
        if new != self.status:
            self.status = new
            self.changes.append(new)  # type: ignore[arg-type]


@given(
    results=st.lists(st.booleans(), min_size=1, max_size=25),
    rise=st.integers(1, 4),
    fall=st.integers(1, 4),
)
def test_verdicts_follow_consecutive_results(results: list[bool], rise: int, fall: int) -> None:
    guest = vm()
    h = Harness([monitor("TCP", max_retries=rise, max_retries_down=fall)], {IFACE: guest})
    ref = Streaks(rise, fall)
    for index, ok in enumerate(results):
        guest.blackhole = not ok
        h.run(index * 2 + 1.75)  # the probe at 2*index and its timeout, not the next probe
        ref.result(ok)
    assert h.statuses() == ref.changes


# -- ARP/ND, and what the checker leaves alone ------------------------------------------------


def test_answers_arp_for_the_probe_source() -> None:
    guest = vm(resolve=True)
    h = Harness([monitor("TCP")], {IFACE: guest})
    h.run(2)
    assert h.statuses() == [ONLINE]
    assert guest.neighbors == {VIP: "fa:16:3e:00:00:aa"}
    assert guest.bad_frames == 0
    assert not h.refused


def test_leaves_other_frames_to_the_pipeline() -> None:
    guest = vm()
    h = Harness([monitor("TCP")], {IFACE: guest})
    h.run(0)
    checker = h.checker
    mac = "fa:16:3e:00:00:11"
    other_arp = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=MEMBER, pdst="10.0.0.1")
    to_vip_web = Ether(src=mac) / IP(src=MEMBER, dst=VIP) / TCP(sport=40000, dport=80, flags="S")
    elsewhere = Ether(src=mac) / IP(src=MEMBER, dst="10.0.0.12") / TCP(dport=33000, flags="SA")
    for frame in (other_arp, to_vip_web, elsewhere):
        assert not checker.offer(IFACE, bytes(frame), 0.0)
    vip_arp = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=MEMBER, pdst=VIP)
    assert not checker.offer("tap-other", bytes(vip_arp), 0.0)  # no monitor on that port
    assert checker.offer(IFACE, bytes(vip_arp), 0.0)
    assert not checker.offer(IFACE, b"\x00" * 10, 0.0)


def test_late_syn_ack_is_consumed_and_reset() -> None:
    h = Harness([monitor("TCP")], {IFACE: vm(blackhole=True)})
    h.run(1.5)  # the first probe timed out at 1
    syn = Ether(h.sent[0])
    late = (
        Ether(src="fa:16:3e:00:00:11", dst="fa:16:3e:00:00:aa")
        / IP(src=MEMBER, dst=VIP)
        / TCP(sport=80, dport=syn[TCP].sport, flags="SA", seq=5, ack=syn[TCP].seq + 1)
    )
    assert h.checker.offer(IFACE, bytes(late), 1.5)
    (iface, rst), *_ = h.checker.due(1.5)
    assert iface == IFACE
    assert str(Ether(rst)[TCP].flags) == "R"
    assert Ether(rst)[TCP].seq == syn[TCP].seq + 1


@pytest.mark.parametrize("kind", ["PING", "TCP", "HTTP"])
def test_ipv6_members_with_neighbor_discovery(kind: str) -> None:
    guest = FakeVM("fa:16:3e:00:00:11", MEMBER6, resolve=True)
    h = Harness([monitor(kind, ip=MEMBER6, source_ip=VIP6)], {IFACE: guest})
    h.run(2)
    assert h.statuses() == [ONLINE]
    assert guest.neighbors == {VIP6: "fa:16:3e:00:00:aa"}
    assert guest.bad_frames == 0


# -- configuration changes -----------------------------------------------------------------------


def test_member_without_interface_goes_error_silently() -> None:
    h = Harness([monitor("TCP")], {})
    h.run(8)
    assert h.statuses() == [ERROR]
    assert h.sent == []


def test_timing_change_keeps_the_verdict_and_target_change_restarts() -> None:
    guest = vm()
    h = Harness([monitor("TCP")], {IFACE: guest})
    h.run(2)
    h.checker.update([monitor("TCP", delay=5, timeout=3)], {"lp1": IFACE})
    assert h.checker.statuses() == {"m1": ONLINE}
    h.checker.update([monitor("TCP", port=81)], {"lp1": IFACE})
    assert h.checker.statuses() == {"m1": None}
    h.checker.update([], {})
    assert h.checker.statuses() == {}
    assert h.checker.next_deadline() is None


def test_next_deadline_tracks_probes() -> None:
    h = Harness([monitor("TCP", delay=10, timeout=4)], {IFACE: vm(blackhole=True)})
    assert h.checker.next_deadline() == float("-inf")  # the first probe is due at once
    h.pump()
    assert h.checker.next_deadline() == 4.0  # its timeout
    h.now = 4.0
    h.pump()
    assert h.checker.next_deadline() == 10.0  # the next probe


def test_local_monitors_are_those_bound_here() -> None:
    here = monitor("TCP")
    there = monitor("TCP", member_id="m2", logical_port="lp2")
    unbound = monitor("TCP", member_id="m3", logical_port="lp3")
    ports = {
        "lp1": PortBinding("lp1", 1, 1, "vif", MEMBER_MAC, (), requested_chassis="hv1"),
        "lp2": PortBinding("lp2", 2, 1, "vif", 2, (), requested_chassis="hv2"),
    }
    state = SBState(ports=ports, monitors={m.member_id: m for m in (here, there, unbound)})
    assert local_monitors(state, "hv1") == [here]


# -- pure helpers ----------------------------------------------------------------------------


@given(st.lists(st.integers(100, 599), min_size=1, max_size=8))
def test_expected_code_lists(codes: list[int]) -> None:
    assert parse_expected_codes(",".join(map(str, codes))) == frozenset(codes)


@given(st.integers(100, 599), st.integers(0, 100), st.integers(100, 599))
def test_expected_code_ranges(low: int, width: int, probe: int) -> None:
    high = min(low + width, 599)
    parsed = parse_expected_codes(f"{low}-{high}")
    assert (probe in parsed) == (low <= probe <= high)


@given(
    st.integers(100, 599),
    st.sampled_from(["1.0", "1.1", "2"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
)
def test_status_line_code(code: int, version: str, reason: str) -> None:
    line = f"HTTP/{version} {code} {reason}".encode()
    assert status_code(line + b"\r\nServer: x\r\n") == code
    assert status_code(line[:5]) is None  # may still be incomplete
    assert status_code(line, final=True) == code


@pytest.mark.parametrize("data", [b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 20\r\n", b"\r\n"])
def test_not_a_status_line(data: bytes) -> None:
    assert status_code(data) == -1


def test_http_request_brackets_ipv6_hosts() -> None:
    request = http_request(monitor("HTTP", ip=MEMBER6, url_path="/a?b=1", http_method="HEAD"))
    assert request.startswith(b"HEAD /a?b=1 HTTP/1.0\r\nHost: [fd00::11]:80\r\n")
