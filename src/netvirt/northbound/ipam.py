"""IP address management: pools, gateway rules, and allocation of free addresses.

Allocation happens inside the write transaction (which serializes writers, see
:mod:`netvirt.northbound.db`), scanning the subnet's pools in order for the
first address not yet taken on the network. ``ip_allocations`` has a primary
key on ``(network_id, ip_address)`` so a duplicate can never be stored.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session

from netvirt.northbound.errors import BadRequest, Conflict, InvalidInput
from netvirt.northbound.schema import IPAllocation, Subnet

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def first_host(net: IPNet) -> IPAddr:
    if net.num_addresses <= 2:
        return net.network_address
    return net.network_address + 1


def usable_range(net: IPNet) -> tuple[int, int]:
    """First and last assignable address as ints (IPv4 excludes network/broadcast;
    IPv6 excludes the subnet-router anycast address)."""
    lo, hi = int(net.network_address), int(net.broadcast_address)
    if net.version == 4:
        return (lo + 1, hi - 1) if net.num_addresses > 2 else (lo, hi)
    return (lo + 1, hi) if net.num_addresses > 1 else (lo, hi)


def default_pools(net: IPNet, gateway: str | None) -> list[dict[str, str]]:
    lo, hi = usable_range(net)
    cls = ipaddress.ip_address
    ranges: list[tuple[int, int]] = [(lo, hi)]
    if gateway is not None:
        gw = int(cls(gateway))
        ranges = (
            [(a, b) for a, b in ((lo, gw - 1), (gw + 1, hi)) if a <= b]
            if lo <= gw <= hi
            else ranges
        )
    return [{"start": str(cls_of(net, a)), "end": str(cls_of(net, b))} for a, b in ranges]


def cls_of(net: IPNet, value: int) -> IPAddr:
    return ipaddress.IPv4Address(value) if net.version == 4 else ipaddress.IPv6Address(value)


def check_pools(net: IPNet, pools: list[dict[str, str]], gateway: str | None) -> None:
    """Neutron's pool rules: inside the CIDR, start <= end, no overlap, gateway outside."""
    lo, hi = usable_range(net)
    spans: list[tuple[int, int]] = []
    for pool in pools:
        start, end = ipaddress.ip_address(pool["start"]), ipaddress.ip_address(pool["end"])
        if start.version != net.version or end.version != net.version:
            raise InvalidInput(
                "allocation_pools", f"pool {pool} is not of IP version {net.version}"
            )
        if start not in net or end not in net:
            raise BadRequest(
                f"The allocation pool {pool['start']}-{pool['end']} spans beyond "
                f"the subnet cidr {net}.",
                type="OutOfBoundsAllocationPool",
            )
        if int(start) > int(end):
            raise InvalidInput("allocation_pools", f"pool start {start} is after its end {end}")
        if int(start) < lo or int(end) > hi:
            raise BadRequest(
                f"The allocation pool {start}-{end} includes the network or broadcast "
                f"address of {net}.",
                type="OutOfBoundsAllocationPool",
            )
        spans.append((int(start), int(end)))
    spans.sort()
    for (_a, b), (c, _d) in itertools.pairwise(spans):
        if c <= b:
            raise BadRequest(
                "Found overlapping allocation pools.", type="OverlappingAllocationPools"
            )
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        if any(a <= gw <= b for a, b in spans):
            raise Conflict(
                f"Gateway ip {gateway} conflicts with allocation pool.",
                type="GatewayConflictWithAllocationPools",
            )


def pool_spans(subnet: Subnet) -> Iterator[tuple[int, int]]:
    for pool in subnet.allocation_pools:
        yield int(ipaddress.ip_address(pool["start"])), int(ipaddress.ip_address(pool["end"]))


def allocated(session: Session, network_id: str) -> set[str]:
    rows = session.execute(
        select(IPAllocation.ip_address).where(IPAllocation.network_id == network_id)
    ).scalars()
    return set(rows)


@dataclass
class _Taken:
    """A subnet's allocated addresses as this transaction knows them, and where the
    last search for a free one ended (pool index, address): every pool address before
    it was taken then, and is still (the cache lives only while nothing was freed)."""

    addresses: set[int]
    resume: tuple[int, int] = (0, -1)


_CACHE_KEY = "netvirt.ipam.taken"


def _taken(session: Session, subnet_id: str) -> _Taken:
    """The subnet's allocations, read once per write transaction.

    Reading them all for every port made a bulk create quadratic in the subnet's
    size (4,000 ports in one /16: 58 % of the time in this read). Only
    :func:`note_allocated` adds addresses while the cache lives; any flush that
    deletes a row and any bulk ``UPDATE``/``DELETE`` (port or subnet deletes,
    cascades, fixed_ips replaced) drops the whole cache, so what it holds is
    never less than the table."""
    cache: dict[str, _Taken] | None = session.info.get(_CACHE_KEY)
    if cache is None:
        cache = session.info[_CACHE_KEY] = {}
        event.listen(session, "after_flush", _drop_on_delete)
        event.listen(session, "do_orm_execute", _drop_on_write_statement)
    entry = cache.get(subnet_id)
    if entry is None:
        rows = session.execute(
            select(IPAllocation.ip_address).where(IPAllocation.subnet_id == subnet_id)
        ).scalars()
        entry = cache[subnet_id] = _Taken({int(ipaddress.ip_address(ip)) for ip in rows})
    return entry


def _drop_on_delete(session: Session, _context: object) -> None:
    if session.deleted:
        session.info[_CACHE_KEY] = {}


def _drop_on_write_statement(state: ORMExecuteState) -> None:
    if not state.is_select:
        state.session.info[_CACHE_KEY] = {}


def note_allocated(session: Session, subnet_id: str, ip: str) -> None:
    """Tell this transaction's cache (if it holds the subnet) that ``ip`` is now taken."""
    cache: dict[str, _Taken] | None = session.info.get(_CACHE_KEY)
    if cache is not None and (entry := cache.get(subnet_id)) is not None:
        entry.addresses.add(int(ipaddress.ip_address(ip)))


def next_free(session: Session, subnet: Subnet) -> str | None:
    """The lowest free address of the subnet's pools (in pool order), or ``None`` when
    exhausted."""
    known = _taken(session, subnet.id)
    taken = known.addresses
    net = ipaddress.ip_network(subnet.cidr)
    first_pool, first_candidate = known.resume
    for index, (lo, hi) in enumerate(pool_spans(subnet)):
        if index < first_pool:
            continue
        candidate = max(lo, first_candidate) if index == first_pool else lo
        while candidate <= hi:
            if candidate not in taken:
                known.resume = (index, candidate)
                return str(cls_of(net, candidate))
            candidate += 1
    return None


def eui64(cidr: str, mac: str) -> str:
    """SLAAC address from a /64 prefix and a MAC (RFC 4291 appendix A)."""
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    iid = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    net = ipaddress.IPv6Network(cidr)
    return str(ipaddress.IPv6Address(int(net.network_address) | int.from_bytes(bytes(iid), "big")))


def is_slaac(subnet: Subnet) -> bool:
    return subnet.ip_version == 6 and subnet.ipv6_address_mode in ("slaac", "dhcpv6-stateless")


def subnet_for_ip(subnets: Iterable[Subnet], ip: str) -> Subnet | None:
    addr = ipaddress.ip_address(ip)
    for subnet in subnets:
        if addr in ipaddress.ip_network(subnet.cidr):
            return subnet
    return None


def check_ip_in_subnet(subnet: Subnet, ip: str, *, allow_gateway: bool = False) -> None:
    net = ipaddress.ip_network(subnet.cidr)
    addr = ipaddress.ip_address(ip)
    if addr not in net:
        raise InvalidInput(
            "fixed_ips", f"IP address {ip} is not a valid IP for the subnet {subnet.id}"
        )
    if (
        net.version == 4
        and net.num_addresses > 2
        and addr in (net.network_address, net.broadcast_address)
    ):
        raise InvalidInput(
            "fixed_ips", f"IP address {ip} is the network or broadcast address of {net}"
        )
    if not allow_gateway and subnet.gateway_ip == ip:
        raise Conflict(
            f"IP address {ip} already allocated in subnet {subnet.id}: it is the gateway.",
            type="IpAddressAlreadyAllocated",
        )


def as_fixed_ip(row: IPAllocation) -> dict[str, Any]:
    return {"subnet_id": row.subnet_id, "ip_address": row.ip_address}
