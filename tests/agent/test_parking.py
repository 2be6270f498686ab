"""Slow-path work parked on an asynchronous state store: other traffic goes on, the
parked packets' host pairs wait behind it, in order, and nothing differs in the end
from the synchronous path.

hostB's store is :class:`ManualStore`, an asynchronous twin of the Redis store:
every round trip waits until the test answers it (``answer``), as replies would
wait on a slow Redis. The same sends through a lab with a plain memory store give
the reference outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether

from agent.agent_support import FakePort, FakeSB, Underlay
from agent.conftest import ADDRESSES, HOSTS, PLACEMENT, Clock, Cloud, Lab
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fastpath import FlowCache
from netvirt.state.jobs import Ticket, execute_now
from netvirt.state.memory import MemoryStore
from netvirt.state.store import GetOp, Op, StateStoreUnavailable


class ManualStore(MemoryStore):
    """A memory store whose round trips (``submit``) complete when the test says so."""

    supports_submit = True

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.queue: list[Ticket] = []
        self.submitted = 0

    def submit(self, ops: Sequence[Op]) -> Ticket:
        ticket = Ticket(ops)
        self.queue.append(ticket)
        self.submitted += 1
        return ticket

    def answer(self, fail: bool = False) -> int:
        """Answer every round trip, and those the answers lead to; how many."""
        answered = 0
        while self.queue:
            ticket = self.queue.pop(0)
            reply = StateStoreUnavailable("test") if fail else execute_now(self, ticket.ops)
            ticket.complete(reply)
            answered += 1
        return answered

    def handle(self) -> tuple[int, int] | None:
        return None

    def wants_write(self) -> bool:
        return False

    def on_readable(self) -> None:
        self.answer()

    def on_writable(self) -> None:
        pass

    def time_out(self, now: float) -> None:
        pass

    def wait(self, timeout: float) -> None:
        self.answer()

    def in_flight(self) -> int:
        return len(self.queue)


def lab_with(cloud: Cloud, manual: bool) -> tuple[Lab, MemoryStore]:
    """The conftest lab; hostB (vm2, web, vm3) with a flow cache and, if ``manual``,
    the asynchronous twin as its store."""
    taps = {vm: FakePort(f"tap-{vm}") for vm in PLACEMENT}
    clock = Clock()
    lab = Lab(cloud, FakeSB(), Underlay(), clock, taps=taps)
    store = ManualStore(clock) if manual else MemoryStore(clock)
    lab.stores["hostB"] = store
    for host in HOSTS:
        lab.add_host(host)
    lab.agents["hostB"].local.flow_cache = FlowCache()
    lab.sync()
    return lab, store


def ping(cloud: Cloud, seq: int) -> bytes:
    """vm2 -> vm3 through the router, both on hostB."""
    frame = (
        Ether(src=cloud.mac("vm2"), dst=cloud.mac("r1-net1"))
        / IP(src=ADDRESSES["vm2"], dst=ADDRESSES["vm3"])
        / ICMP(id=7, seq=seq)
    )
    return bytes(frame)


def pong(cloud: Cloud, seq: int) -> bytes:
    frame = (
        Ether(src=cloud.mac("vm3"), dst=cloud.mac("r1-net2"))
        / IP(src=ADDRESSES["vm3"], dst=ADDRESSES["vm2"])
        / ICMP(type=0, id=7, seq=seq)
    )
    return bytes(frame)


def to_web(cloud: Cloud, flags: str, seq: int = 0, sport: int = 40000) -> bytes:
    """vm2 -> web:80 on net1 (web's group allows tcp 80 in: conntrack on both ports)."""
    frame = (
        Ether(src=cloud.mac("vm2"), dst=cloud.mac("web"))
        / IP(src=ADDRESSES["vm2"], dst=ADDRESSES["web"])
        / TCP(sport=sport, dport=80, flags=flags, seq=seq)
    )
    return bytes(frame)


def answer(store: MemoryStore) -> None:
    if isinstance(store, ManualStore):
        store.answer()


def warm_up(lab: Lab, store: MemoryStore) -> None:
    """Ping vm2 -> vm3 until a request is forwarded from the flow cache."""
    c = lab.cloud
    for seq in range(1, 6):
        lab.send("vm2", ping(c, seq))
        answer(store)
        lab.send("vm3", pong(c, seq))
        answer(store)
    assert len(lab.taps["vm3"].take()) == 5
    assert len(lab.taps["vm2"].take()) == 5


def test_a_parked_connection_blocks_neither_other_flows_nor_reorders_its_own(
    cloud: Cloud,
) -> None:
    lab, store = lab_with(cloud, manual=True)
    assert isinstance(store, ManualStore)
    forwarder = lab.agents["hostB"].local
    warm_up(lab, store)
    syn, again = to_web(cloud, "S"), to_web(cloud, "S", seq=100)  # a retransmission

    lab.send("vm2", syn)  # a new connection: parked on the store
    assert store.in_flight() == 1
    assert lab.taps["web"].sent == []

    submitted = store.submitted
    lab.send("vm2", ping(cloud, 9))  # a cached flow: forwarded now, no round trip
    assert len(lab.taps["vm3"].take()) == 1
    assert store.submitted == submitted

    lab.send("vm2", again)  # same connection as the parked SYN: waits behind it
    assert lab.taps["web"].sent == []
    assert forwarder.parking.status()["holding"] == 1

    lab.send("vm2", to_web(cloud, "S", sport=40001))  # another connection: its own job
    assert store.in_flight() == 2
    assert forwarder.parking.status()["holding"] == 1

    store.answer()
    web = lab.taps["web"].take()
    assert web.index(syn) < web.index(again)  # in the order they were sent
    assert len(web) == 3
    assert forwarder.parking.status()["pairs"] == 0
    status = forwarder.jobs.status()
    assert status["parked"] == 0
    assert isinstance(status["parked_total"], int)
    assert status["parked_total"] >= 2


def test_parked_and_synchronous_paths_deliver_the_same_frames(cloud: Cloud) -> None:
    """The same sends, answered late or at once: the same frames reach the same VMs."""
    sends = [("vm2", to_web(cloud, "S")), ("vm2", ping(cloud, 1)), ("vm2", to_web(cloud, "A", 1))]
    sends += [("vm3", pong(cloud, 1)), ("vm2", to_web(cloud, "FA", 1)), ("vm2", ping(cloud, 2))]
    delivered: list[dict[str, list[bytes]]] = []
    drops: list[dict[DropReason, int]] = []
    for manual in (False, True):
        lab, store = lab_with(cloud, manual)
        for vm, frame in sends:
            lab.send(vm, frame)
        answer(store)
        delivered.append({vm: sorted(tap.take()) for vm, tap in lab.taps.items()})
        drops.append(dict(lab.agents["hostB"].local.drops))
        if manual:
            assert lab.agents["hostB"].local.jobs.parked_total > 0
    assert delivered[0] == delivered[1]
    assert delivered[0]["web"]
    assert delivered[0]["vm3"]
    assert drops[0] == drops[1]


def test_an_install_finishes_parked_work_first(cloud: Cloud) -> None:
    lab, store = lab_with(cloud, manual=True)
    syn = to_web(cloud, "S")
    lab.send("vm2", syn)
    assert lab.taps["web"].sent == []
    lab.sync()  # new generation: the install drains the parked job under the old rules
    assert lab.taps["web"].take() == [syn]
    assert store.in_flight() == 0


def test_a_connection_backlog_is_bounded_and_its_overflow_counted(cloud: Cloud) -> None:
    lab, store = lab_with(cloud, manual=True)
    assert isinstance(store, ManualStore)
    forwarder = lab.agents["hostB"].local
    forwarder.parking.limit = 2
    lab.send("vm2", to_web(cloud, "S"))
    for seq in range(1, 6):
        lab.send("vm2", to_web(cloud, "S", seq=seq))  # retransmissions
    assert forwarder.parking.status()["holding"] == 2
    assert forwarder.drops.get(DropReason.STATE_BACKLOG) == 3
    store.answer()
    assert len(lab.taps["web"].take()) == 3  # the first SYN and the two held ones


def test_a_store_failure_while_parked_fails_closed_and_frees_the_connection(cloud: Cloud) -> None:
    lab, store = lab_with(cloud, manual=True)
    assert isinstance(store, ManualStore)
    forwarder = lab.agents["hostB"].local
    lab.send("vm2", to_web(cloud, "S"))
    lab.send("vm2", to_web(cloud, "S", seq=1))
    store.answer(fail=True)
    assert lab.taps["web"].sent == []
    assert forwarder.drops.get(DropReason.STATE_UNAVAILABLE, 0) >= 2
    assert forwarder.parking.status()["pairs"] == 0


def test_a_slow_path_bug_while_parked_drops_its_packets_and_frees_the_connection(
    cloud: Cloud,
) -> None:
    lab, store = lab_with(cloud, manual=True)
    assert isinstance(store, ManualStore)
    forwarder = lab.agents["hostB"].local
    real = forwarder.pipeline.process_steps

    def broken(items, *, trace=False):  # type: ignore[no-untyped-def]
        yield [GetOp("anything")]
        raise RuntimeError("a bug in the pipeline")

    forwarder.pipeline.process_steps = broken  # type: ignore[method-assign]
    lab.send("vm2", to_web(cloud, "S"))
    lab.send("vm2", to_web(cloud, "S", seq=1))  # held behind it
    forwarder.pipeline.process_steps = real  # type: ignore[method-assign]
    store.answer()
    assert forwarder.drops.get(DropReason.INTERNAL_ERROR) == 1
    assert forwarder.parking.status()["pairs"] == 0
    assert len(lab.taps["web"].take()) == 1  # the held packet went on through the real path
