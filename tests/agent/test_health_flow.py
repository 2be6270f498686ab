"""End to end without the packet loop: compiled monitors → a host's checker probing a fake
VM → reports to the SB service → the member's status in the API and in the LB flows."""

from __future__ import annotations

import ipaddress

from agent.health_vm import FakeVM
from conftest import Api
from netvirt.agent.health import ERROR, ONLINE, HealthChecker, checker_inputs
from netvirt.compiler.service import CompilerService
from netvirt.dataplane.actions import CtLb
from netvirt.northbound.db import Database
from netvirt.southbound.memory import InMemorySB
from netvirt.southbound.model import SBState
from southbound.monitored import monitored_pool


def backends(sb: SBState) -> set[str]:
    return {
        str(ipaddress.ip_address(b.ip))
        for flow in sb.flows
        for action in flow.actions
        if isinstance(action, CtLb)
        for b in action.backends
    }


def test_a_host_checks_its_members_and_the_pool_follows(
    db: Database, admin: Api, alice: Api
) -> None:
    objs = monitored_pool(admin, alice, "HTTP")
    service = InMemorySB(CompilerService(db), poll=0.1)
    web1 = objs["web1"]
    plugged = {"tap-web1": web1["id"], "tap-other": "some-other-port"}
    monitors, ifaces = checker_inputs(service.snapshot(), "hv1", plugged)
    assert [m.member_id for m in monitors] == [objs["m1"]["id"]]  # web2 is on hv2
    assert ifaces == {web1["id"]: "tap-web1"}

    guest = FakeVM(web1["mac_address"], "10.0.0.11", listening={8080}, resolve=True)
    checker = HealthChecker(seed=1)
    checker.update(monitors, ifaces)
    member = f"/v2/lbaas/pools/{objs['pool']['id']}/members/{objs['m1']['id']}"

    def run(start: float, end: float) -> list[str]:
        seen = []
        now = start
        while now <= end:
            out = checker.due(now)
            while out:  # as the datapath does: due() again after a batch of offers
                for iface, frame in out:
                    for answer in guest.handle(frame):
                        assert checker.offer(iface, answer, now)
                out = checker.due(now)
            for member_id, status in checker.changes():
                service.report_member_health("hv1", member_id, status)
                seen.append(status)
            now += 0.5
        return seen

    assert run(0, 1) == [ONLINE]  # max_retries 1: the first answer counts
    assert alice.ok("GET", member)["member"]["operating_status"] == ONLINE
    assert backends(service.snapshot()) == {"10.0.0.11"}
    assert guest.requests[0].startswith(b"GET / HTTP/1.0\r\n")  # Octavia's HTTP defaults

    guest.http_code = 503
    assert run(2, 8) == [ERROR]  # max_retries_down defaults to 3
    assert alice.ok("GET", member)["member"]["operating_status"] == ERROR
    assert backends(service.snapshot()) == set()
