"""Micro-benchmark: CPU per slow-path packet of new TCP connections (issue 5).

Not a test. In process, no root: builds the lab's ``sg`` shape through the real
NB API and compiler (a client VM with port security and a stateful security
group — ICMP, TCP/UDP 5201 and a TCP port range from a remote prefix, egress
open — on tenant network n1, router r1 on n1 and n2 with its gateway on the
external network and SNAT on; the server is a port without port security on
the external network), then pushes complete TCP connections through
``Pipeline.process_batch`` with a ``FlowKeyConntrack`` on a ``MemoryStore``:

    SYN  c->s, SYN-ACK s->c, ACK c->s, data c->s, data s->c,
    FIN-ACK c->s, FIN-ACK s->c, ACK c->s

(every one of them takes the slow path in the datapath: connection setup and
teardown always do, the first data packet of each direction fills the flow
cache). ``--batch`` connections go side by side: the SYNs of a batch are one
``process_batch`` call, then their SYN-ACKs, and so on, as the datapath's
batches. Every output is checked (one frame out, on the expected port).

Prints, per packet kind, the median over ``--runs`` runs of the µs of CPU per
packet, the µs per connection and the connections/s of pure pipeline CPU
(process time, one core). ``--profile`` runs once under cProfile and prints the
top functions (``--sort``), ``--json`` writes the figures. ``--tune-gc`` runs with
the agent's garbage-collector thresholds and the setup's objects frozen (the
datapath process keeps the defaults today).

    python bench/slowpath.py                       # 5 runs of 2,000 connections
    python bench/slowpath.py --runs 7 --conns 4000 --batch 32
    python bench/slowpath.py --profile --sort tottime --top 40
    python bench/slowpath.py --runs 3 --conns 300 --megaflow on --segments ab

See docs/performance.md, "Slow path (new connections)".
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

# SLOWPATH_SRC: another source tree to measure (a before/after comparison)
SRC = Path(os.environ.get("SLOWPATH_SRC") or Path(__file__).resolve().parent.parent / "src")
sys.path.insert(0, str(SRC))

from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack  # noqa: E402
from netvirt.dataplane.pipeline import Pipeline, Verdict  # noqa: E402
from netvirt.state.memory import MemoryStore  # noqa: E402

EXT_CIDR, SERVER_IP = "10.252.100.0/24", "10.252.100.12"
CLIENT_IP, SERVER_PORT = "10.252.1.10", 5201
CONN_PORTS = "10000-10999"  # the lab's connection-rate ports, admitted from REMOTE_PREFIX
REMOTE_PREFIX = "10.252.100.0/24"
KINDS = ("syn", "synack", "ack", "data_c2s", "data_s2c", "fin_c2s", "fin_s2c", "last_ack")
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


# ---------------------------------------------------------------- the world, via the NB API


@dataclass
class World:
    """The compiled ``sg`` topology: what the datapath would install, and who is where."""

    rules: list[Any]
    sb: Any
    macs: dict[str, int]  # client, r1-n1, r1-gw, server
    ports: dict[str, tuple[int, int]]  # client, server -> (datapath, port key)
    names: dict[str, str]  # SB port name -> client | server
    gateway_ip: int


def build_world() -> World:
    """Build the NB objects through the API (as tests/pipeline does) and compile them."""
    from fastapi.testclient import TestClient

    from netvirt.api.app import create_app
    from netvirt.compiler import nb as nb_module
    from netvirt.compiler.compile import compile_nb
    from netvirt.compiler.translate import all_rules
    from netvirt.northbound import identity
    from netvirt.northbound.context import Context
    from netvirt.northbound.db import Database

    with tempfile.TemporaryDirectory(prefix="nvp-slowpath-") as tmp:
        db = Database(f"sqlite:///{tmp}/nb.db")
        try:
            with TestClient(create_app(db)) as client:
                with db.write() as session:
                    token = identity.bootstrap(session)
                    assert token is not None
                    project = identity.create_project(session, Context.admin(), "bench")
                    member = identity.create_token(
                        session, Context.admin(), project["id"], "member"
                    )
                admin = _Api(client, token["token"])
                tenant = _Api(client, member["token"])
                ids = _build_sg(admin, tenant)
            nb = nb_module.load(db)
        finally:
            db.dispose()
    sb = compile_nb(nb)
    ports = {p["id"]: p for p in nb.ports}

    def mac(name: str) -> int:
        return int(ports[ids[name]]["mac_address"].replace(":", ""), 16)

    gw_ips = [f["ip_address"] for f in ports[ids["r1-gw"]]["fixed_ips"]]
    gw = next(ip for ip in gw_ips if ip.startswith("10.252.100."))
    where = {n: (sb.ports[ids[n]].datapath, sb.ports[ids[n]].key) for n in ("client", "server")}
    return World(
        rules=all_rules(sb),
        sb=sb,
        macs={n: mac(n) for n in ("client", "r1-n1", "r1-gw", "server")},
        ports=where,
        names={ids["client"]: "client", ids["server"]: "server"},
        gateway_ip=int(IPv4Address(gw)),
    )


class _Api:
    def __init__(self, client: Any, token: str) -> None:
        self.client, self.headers = client, {"X-Auth-Token": token}

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.client.request(method, path, json=body, headers=self.headers)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def get(self, path: str, **params: str) -> Any:
        response = self.client.get(path, params=params, headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()


def _build_sg(admin: _Api, tenant: _Api) -> dict[str, str]:
    """The lab's ``sg`` shape (bench/nvb/nvlab.py), with a remote-prefix ingress rule."""
    ids: dict[str, str] = {}

    def network(api: _Api, name: str, cidr: str, **attrs: Any) -> None:
        net = api.ok("POST", "/v2.0/networks", {"network": {"name": name, **attrs}})["network"]
        body = {"network_id": net["id"], "cidr": cidr, "name": f"{name}-sub"}
        ids[name] = net["id"]
        ids[f"{name}-sub"] = api.ok("POST", "/v2.0/subnets", {"subnet": body})["subnet"]["id"]

    def port(api: _Api, net: str, name: str, ip: str, **attrs: Any) -> None:
        body = {"network_id": ids[net], "name": name, "fixed_ips": [{"ip_address": ip}]}
        ids[name] = api.ok("POST", "/v2.0/ports", {"port": body | attrs})["port"]["id"]

    network(admin, "ext", EXT_CIDR, **{"router:external": True})
    port(admin, "ext", "server", SERVER_IP, port_security_enabled=False, security_groups=[])
    network(tenant, "n1", "10.252.1.0/24")
    network(tenant, "n2", "10.252.2.0/24")
    body = {"security_group": {"name": "bench"}}
    group = tenant.ok("POST", "/v2.0/security-groups", body)["security_group"]["id"]
    rules: list[dict[str, Any]] = [
        {"protocol": "icmp"},
        {"protocol": "tcp", "port_range_min": 5201, "port_range_max": 5201},
        {"protocol": "udp", "port_range_min": 5201, "port_range_max": 5201},
        {
            "protocol": "tcp",
            "port_range_min": int(CONN_PORTS.split("-")[0]),
            "port_range_max": int(CONN_PORTS.split("-")[1]),
            "remote_ip_prefix": REMOTE_PREFIX,
        },
    ]
    for rule in rules:
        rule |= {"security_group_id": group, "direction": "ingress", "ethertype": "IPv4"}
        tenant.ok("POST", "/v2.0/security-group-rules", {"security_group_rule": rule})
    port(tenant, "n1", "client", CLIENT_IP, security_groups=[group])
    gateway = {"network_id": ids["ext"]}
    r1 = {"router": {"name": "r1", "external_gateway_info": gateway}}
    router = tenant.ok("POST", "/v2.0/routers", r1)["router"]["id"]
    for net in ("n1", "n2"):
        path = f"/v2.0/routers/{router}/add_router_interface"
        ids[f"r1-{net}"] = tenant.ok("PUT", path, {"subnet_id": ids[f"{net}-sub"]})["port_id"]
    for found in admin.get("/v2.0/ports", device_id=router)["ports"]:
        if found["device_owner"] == "network:router_gateway":
            ids["r1-gw"] = found["id"]
    return ids


# ---------------------------------------------------------------- frames (raw bytes)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_frame(
    eth: tuple[int, int], ip: tuple[int, int], ports: tuple[int, int], flags: int, payload: bytes
) -> bytes:
    """An Ethernet/IPv4/TCP frame with valid checksums; ``eth`` and ``ip`` are (src, dst)."""
    seg = struct.pack("!HHIIBBHHH", ports[0], ports[1], 1000, 2000, 5 << 4, flags, 64240, 0, 0)
    seg += payload
    pseudo = struct.pack("!IIBBH", ip[0], ip[1], 0, 6, len(seg))
    seg = seg[:16] + struct.pack("!H", _csum(pseudo + seg)) + seg[18:]
    hdr = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(seg), 1, 0x4000, 64, 6, 0, ip[0], ip[1])
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    src, dst = eth
    return dst.to_bytes(6, "big") + src.to_bytes(6, "big") + b"\x08\x00" + hdr + seg


# ---------------------------------------------------------------- one run


@dataclass
class Conn:
    sport: int
    nat_port: int = 0  # the source port after SNAT, read from the SYN's output


class Runner:
    """Connections through a fresh pipeline and store; CPU time per packet kind."""

    def __init__(
        self,
        world: World,
        classifier: Any,
        topo: Any,
        batch: int,
        megaflow: bool = False,
        segments: bool = False,
    ) -> None:
        self.w, self.batch = world, batch
        conntrack = FlowKeyConntrack(Conntrack(MemoryStore()))
        self.pipeline = Pipeline(classifier, topo, conntrack)
        # as the datapath with its flow cache: walks record their megaflow wildcards
        self.pipeline.record_wildcards = megaflow
        if segments:  # walks split at conntrack, segments replayed (dataplane/segments.py)
            from netvirt.dataplane.segments import SegmentCache

            self.pipeline.segments = SegmentCache()
        self.now = 1.0
        self.cpu: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self.count: dict[str, int] = dict.fromkeys(KINDS, 0)

    def frame(self, kind: str, conn: Conn) -> tuple[bytes, str]:
        """The frame of ``kind`` for ``conn`` and the side it enters on."""
        w, m = self.w, self.w.macs
        client_ip, server_ip = int(IPv4Address(CLIENT_IP)), int(IPv4Address(SERVER_IP))
        payload = b"x" * 64 if kind.startswith("data") else b""
        flags = {
            "syn": SYN,
            "synack": SYN | ACK,
            "ack": ACK,
            "data_c2s": PSH | ACK,
            "data_s2c": PSH | ACK,
            "fin_c2s": FIN | ACK,
            "fin_s2c": FIN | ACK,
            "last_ack": ACK,
        }[kind]
        if kind in ("synack", "data_s2c", "fin_s2c"):
            eth, ip = (m["server"], m["r1-gw"]), (server_ip, w.gateway_ip)
            ports = (SERVER_PORT, conn.nat_port)
            return tcp_frame(eth, ip, ports, flags, payload), "server"
        eth, ip = (m["client"], m["r1-n1"]), (client_ip, server_ip)
        return tcp_frame(eth, ip, (conn.sport, SERVER_PORT), flags, payload), "client"

    def step(self, kind: str, conns: list[Conn]) -> list[Verdict]:
        items = []
        for conn in conns:
            frame, side = self.frame(kind, conn)
            dp, port = self.w.ports[side]
            self.now += 0.0001
            items.append((frame, dp, port, None, self.now))
        start = time.process_time()
        verdicts = self.pipeline.process_batch(items)
        self.cpu[kind] += time.process_time() - start
        self.count[kind] += len(conns)
        expect = "client" if kind in ("synack", "data_s2c", "fin_s2c") else "server"
        for conn, verdict in zip(conns, verdicts, strict=True):
            outs = [self.w.names.get(e.port_name) for e in verdict.outputs]
            if outs != [expect]:
                raise SystemExit(f"{kind} sport={conn.sport}: out {outs} drops {verdict.drops}")
            if kind == "syn":
                conn.nat_port = int.from_bytes(verdict.outputs[0].frame[34:36], "big")
        return verdicts

    def run(self, conns: int) -> None:
        for first in range(0, conns, self.batch):
            group = [Conn(20000 + (first + i) % 40000) for i in range(self.batch)]
            for kind in KINDS:
                self.step(kind, group)


def make_pipeline_parts(world: World) -> tuple[Any, Any]:
    from netvirt.compiler.translate import topology
    from netvirt.dataplane.classifier import Classifier

    classifier = Classifier()
    classifier.apply(add=world.rules)
    return classifier, topology(world.sb)


def one_run(
    world: World, conns: int, batch: int, megaflow: bool = False, segments: bool = False
) -> dict[str, float]:
    """µs per packet by kind, plus per connection, for one fresh run (its pipeline and
    segment cache start empty: the first connections learn the segments)."""
    classifier, topo = make_pipeline_parts(world)
    runner = Runner(world, classifier, topo, batch, megaflow, segments)
    runner.run(conns)
    out = {k: 1e6 * runner.cpu[k] / runner.count[k] for k in KINDS}
    out["per_conn"] = sum(out[k] for k in KINDS)
    return out


# ---------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="runs (the median is reported)")
    p.add_argument("--conns", type=int, default=2000, help="connections per run")
    p.add_argument("--batch", type=int, default=32, help="connections side by side")
    p.add_argument("--warmup", type=int, default=200, help="connections before timing")
    p.add_argument("--profile", action="store_true", help="one run under cProfile")
    p.add_argument("--sort", default="tottime", help="pstats sort key with --profile")
    p.add_argument("--top", type=int, default=35, help="functions printed with --profile")
    p.add_argument("--json", help="write the figures here")
    p.add_argument(
        "--megaflow",
        choices=("off", "on", "ab"),
        default="off",
        help="walks record megaflow wildcards, as in the datapath (ab: alternate both)",
    )
    p.add_argument(
        "--segments",
        choices=("off", "on", "ab"),
        default="off",
        help="the slow path replays segments split at conntrack, as the datapath with its "
        "flow cache (ab: alternate off and on, with --megaflow's setting for both)",
    )
    p.add_argument(
        "--tune-gc",
        action="store_true",
        help="the garbage collector as `netvirt agent` sets it, and the setup's heap frozen",
    )
    return p.parse_args(argv)


@contextlib.contextmanager
def _timed(label: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    print(f"# {label}: {time.perf_counter() - start:.1f} s", file=sys.stderr)


def profile(world: World, args: argparse.Namespace) -> None:
    profiler = cProfile.Profile()
    megaflow, segments = args.megaflow == "on", args.segments == "on"
    run: Callable[[], dict[str, float]] = lambda: one_run(  # noqa: E731
        world, args.conns, args.batch, megaflow, segments
    )
    profiler.runcall(run)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats(args.sort).print_stats(args.top)
    print(text.getvalue())


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with _timed("build and compile the sg topology"):
        world = build_world()
    print(f"# {len(world.rules)} rules; {args.conns} connections/run, batch {args.batch}")
    if args.tune_gc:
        from netvirt.cli.main import tune_gc

        tune_gc()
        gc.collect()
        gc.freeze()
    one_run(world, args.warmup, args.batch)
    if args.profile:
        profile(world, args)
        return 0
    if args.segments == "ab":  # interleaved: A B A B
        mega = args.megaflow == "on"
        pairs = [
            (
                one_run(world, args.conns, args.batch, mega),
                one_run(world, args.conns, args.batch, mega, True),
            )
            for _ in range(args.runs)
        ]
        print(f"{'packet':<10} {'off µs/pkt':>12} {'on µs/pkt':>12}   (medians of {args.runs})")
        for k in (*KINDS, "per_conn"):
            off, on = (statistics.median(p[i][k] for p in pairs) for i in (0, 1))
            print(f"{k:<10} {off:>12.1f} {on:>12.1f}")
        off, on = (statistics.median(p[i]["per_conn"] for p in pairs) for i in (0, 1))
        print(f"connections/s (pipeline CPU, 1 core): off {1e6 / off:.0f}, on {1e6 / on:.0f}")
        print(f"ratio on/off: {on / off:.3f}")
        return 0
    if args.megaflow == "ab":  # interleaved: the machine's load moves both alike
        pairs = [
            (one_run(world, args.conns, args.batch), one_run(world, args.conns, args.batch, True))
            for _ in range(args.runs)
        ]
        off, on = (statistics.median(p[i]["per_conn"] for p in pairs) for i in (0, 1))
        print(f"µs per connection, median: without wildcards {off:.0f}, with {on:.0f}")
        print(f"ratio with/without: {on / off:.3f}")
        return 0
    megaflow, segments = args.megaflow == "on", args.segments == "on"
    runs = [one_run(world, args.conns, args.batch, megaflow, segments) for _ in range(args.runs)]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"{'packet':<10} {'µs/pkt (median of ' + str(args.runs) + ')':>24} {'min':>8} {'max':>8}")
    for k in (*KINDS, "per_conn"):
        values = [r[k] for r in runs]
        print(f"{k:<10} {median[k]:>24.1f} {min(values):>8.1f} {max(values):>8.1f}")
    per_pkt = median["per_conn"] / len(KINDS)
    print(f"mean µs per slow-path packet: {per_pkt:.1f}")
    print(f"connections/s (pipeline CPU, 1 core): {1e6 / median['per_conn']:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"median": median, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
