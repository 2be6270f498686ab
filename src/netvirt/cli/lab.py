"""``netvirt lab``: build, use and remove an emulated datacenter (see docs/lab.md).

Every verb but ``up`` works on a lab by name (``--lab``, ``NETVIRT_LAB``);
without one, the only lab that is up is meant. All of it needs root: it
makes network namespaces and reads the lab's state file (mode 0600).
Failures print one ``error:`` line (plus the log lines that explain them)
and exit 1; an invalid topology file exits 2, nothing built.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from netvirt.api.client import ApiError, NetvirtClient
from netvirt.cli.output import console
from netvirt.dataplane.netns import NetnsError
from netvirt.lab import build, check, net
from netvirt.lab.dhcp import DhcpError
from netvirt.lab.net import RealSystem, System
from netvirt.lab.state import LabState, existing_labs, lab_root
from netvirt.lab.topology import LAB_RE, STATE_CHOICES, TopologyError, load

lab_app = typer.Typer(no_args_is_help=True, help="Emulated hosts and VMs in network namespaces.")
host_app = typer.Typer(no_args_is_help=True, help="Stop or start a host's agent and datapath.")
lab_app.add_typer(host_app, name="host")
out = console()
err = Console(stderr=True, emoji=False)

LabOption = Annotated[
    str | None,
    typer.Option("--lab", envvar="NETVIRT_LAB", help="Lab name (default: the only lab up)"),
]
FAILURES = (build.LabError, ApiError, NetnsError, DhcpError, check.CheckError, OSError)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(Text(f"error: {message}"), soft_wrap=True)
    return typer.Exit(code)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise _fail("netvirt lab needs root (network namespaces, veths, /run)")


def _lab_name(lab: str | None) -> str:
    if lab:
        if not LAB_RE.fullmatch(lab):
            raise _fail(f"{lab!r} is not a lab name")
        return lab
    labs = existing_labs()
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise _fail(f"no lab is up (nothing in {lab_root()}); start one with `netvirt lab up FILE`")
    raise _fail(f"several labs are up ({', '.join(labs)}): pick one with --lab")


def _open(lab: str | None) -> build.Lab:
    _need_root()
    try:
        return build.Lab.open(_lab_name(lab), RealSystem())
    except FAILURES as exc:
        raise _fail(str(exc)) from None


# ---------------------------------------------------------------------- up / down


@lab_app.command("up")
def up(
    topology: Annotated[Path, typer.Argument(help="Topology YAML (see examples/)")],
    name: Annotated[
        str | None, typer.Option(help="Lab name (default: the file's `name:`, else 'lab')")
    ] = None,
    run_checks: Annotated[
        bool, typer.Option("--check", help="Run the topology's checks afterwards")
    ] = False,
    keep_on_error: Annotated[
        bool, typer.Option(help="Leave a failed lab in place for debugging")
    ] = False,
    state_backend: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="NF state instead of the file's `state:`: auto, memory, redis, redis-cluster",
        ),
    ] = None,
) -> None:
    """Build the lab: namespaces, netvirt serve, agents, API objects, DHCP, services."""
    try:
        topo = load(topology)
    except TopologyError as exc:
        raise _fail(str(exc), 2) from None
    if state_backend is not None:
        if state_backend not in STATE_CHOICES:
            raise _fail(f"--state {state_backend!r} is not one of {', '.join(STATE_CHOICES)}", 2)
        topo = topo.model_copy(update={"state": state_backend})
    if name is not None:
        if not LAB_RE.fullmatch(name):
            raise _fail(f"--name {name!r} must match {LAB_RE.pattern}", 2)
        topo = topo.model_copy(update={"name": name})
    _need_root()
    system = RealSystem()
    try:
        state = build.up(
            topo,
            str(topology.resolve()),
            system=system,
            log=lambda msg: out.print(Text(f"  ✓ {msg}")),
            keep_on_error=keep_on_error,
        )
    except FAILURES as exc:
        raise _fail(str(exc)) from None
    print_summary(state)
    if run_checks:
        _run_checks(build.Lab(state, system))


@lab_app.command("down")
def down(lab: LabOption = None) -> None:
    """Stop every process and delete every namespace the lab made (safe to repeat)."""
    _need_root()
    name = _lab_name(lab) if lab or existing_labs() else "lab"
    try:
        report = build.down(name, system=RealSystem())
    except FAILURES as exc:
        raise _fail(str(exc)) from None
    if report.processes or report.namespaces:
        out.print(
            f"lab {name}: stopped {report.processes} processes, "
            f"deleted {report.namespaces} namespaces"
        )
    else:
        out.print(f"lab {name}: nothing to remove")


# ---------------------------------------------------------------------- using a lab


@lab_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def exec_(
    node: Annotated[str, typer.Argument(help="VM, host, ext or underlay")],
    command: Annotated[list[str], typer.Argument(help="Command and arguments (after --)")],
    lab: LabOption = None,
) -> None:
    """Run a command inside a node's namespace: `netvirt lab exec web1 -- ping 10.0.0.5`."""
    opened = _open(lab)
    netns = opened.state.node_netns(node)
    if netns is None:
        known = ", ".join(opened.state.node_names())
        raise _fail(f"no node {node!r} in lab {opened.state.name} (nodes: {known})")
    argv = ["ip", "netns", "exec", netns, *command]
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise _fail(f"cannot run {command[0]!r}: {exc.strerror}") from None


@lab_app.command("check")
def check_(lab: LabOption = None) -> None:
    """Run the topology's connectivity checks; exit 1 on any unexpected result."""
    _run_checks(_open(lab))


def _run_checks(opened: build.Lab) -> None:
    checks = opened.topology.checks
    if not checks:
        out.print("the topology has no `checks:`")
        return
    try:
        results = check.run_checks(opened.state, checks)
    except FAILURES as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"lab {opened.state.name}: checks")
    for column in ("from", "to", "address", "kind", "expect", "actual", "", "detail"):
        table.add_column(column)
    for res in results:
        actual = "ok" if res.reached else "blocked"
        mark = Text("✓", style="green") if res.passed else Text("✗", style="bold red")
        c = res.check
        table.add_row(c.src, c.to, res.address, c.kind, c.expect, actual, mark, Text(res.detail))
    out.print(table)
    failed = [r for r in results if not r.passed]
    out.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


@lab_app.command("status")
def status(
    lab: LabOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the lab's state as JSON")] = False,
    tokens: Annotated[bool, typer.Option(help="Show the admin and project tokens")] = False,
) -> None:
    """Processes, agents' installed generations, VMs and their addresses."""
    opened = _open(lab)
    if as_json:
        data = opened.state.model_dump(mode="json")
        if not tokens:
            data = _without_secrets(data)
        out.print_json(json.dumps(data))
        return
    print_summary(opened.state, system=opened.system, tokens=tokens)


def _without_secrets(data: dict[str, Any]) -> dict[str, Any]:
    data = {**data, "admin_token": "***", "project_tokens": dict.fromkeys(data["project_tokens"])}
    data["hosts"] = {k: {**h, "token": "***"} for k, h in data["hosts"].items()}
    return data


@host_app.command("stop")
def host_stop(
    host: str,
    lab: LabOption = None,
    hard: Annotated[bool, typer.Option(help="SIGKILL instead of SIGTERM")] = False,
    agent_only: Annotated[
        bool, typer.Option(help="Stop only the agent: the datapath keeps forwarding")
    ] = False,
) -> None:
    """Stop a host's agent and datapath (or only its agent)."""
    opened = _open(lab)
    try:
        opened.host_stop(host, hard=hard, agent_only=agent_only)
    except FAILURES as exc:
        raise _fail(str(exc)) from None
    out.print(f"{'agent' if agent_only else 'agent and datapath'} of {host} stopped")


@host_app.command("start")
def host_start(host: str, lab: LabOption = None) -> None:
    """Start what is stopped of a host (datapath, agent); wait until it has installed
    everything."""
    opened = _open(lab)
    try:
        proc = opened.host_start(host)
    except FAILURES as exc:
        raise _fail(str(exc)) from None
    out.print(f"agent of {host} running (pid {proc.pid}), flows installed")


@lab_app.command("migrate")
def migrate(vm: str, host: str, lab: LabOption = None) -> None:
    """Move a VM to another host (same MAC and address) and wait until it is live there."""
    opened = _open(lab)
    try:
        opened.migrate(vm, host)
    except FAILURES as exc:
        raise _fail(str(exc)) from None
    out.print(f"{vm} now on {host}")


# ---------------------------------------------------------------------- summary


def _api_status(state: LabState) -> dict[str, Any] | None:
    try:
        with NetvirtClient(state.url, state.admin_token, timeout=3) as client:
            return client.status()
    except ApiError as exc:
        out.print(Text(f"API {state.url}: {exc.message}", style="red"))
        return None


def print_summary(state: LabState, *, system: System | None = None, tokens: bool = False) -> None:
    """Hosts (agent, installed generation as the API knows it), VMs, LBs, what to try."""
    system = system or RealSystem()
    api = _api_status(state)
    installed = {h["host"]: h["installed_generation"] for h in (api or {}).get("hosts", [])}
    out.print(Text(f"lab {state.name} is up — state in {state.dir}", style="bold"))
    hosts = Table(title="hosts")
    for column in ("host", "namespace", "underlay IP", "encap", "gateway", "agent", "installed"):
        hosts.add_column(column)
    for host in state.hosts.values():
        alive = host.agent is not None and net.is_alive(system, host.agent)
        hosts.add_row(
            host.name,
            host.netns,
            host.underlay_ip,
            host.encap,
            _gateway(state, host.name) if host.gateway else "",
            f"pid {host.agent.pid}" if alive and host.agent else Text("stopped", style="red"),
            str(installed.get(host.name, "")),
        )
    out.print(hosts)
    _print_vms(state)
    if api is not None:
        out.print(
            f"API {state.url}: generation {api['nb_generation']}, compiled "
            f"{api['compiled_generation']}, installed on every host {api['installed_generation']}"
        )
    _print_next_steps(state, tokens)


def _gateway(state: LabState, host: str) -> str:
    """``yes``, and whether the external namespace routes over its uplink now."""
    ext = state.external
    if ext is None or host not in ext.links:
        return "yes"
    return "yes (routed)" if host in ext.active else "yes (not routed)"


def _print_vms(state: LabState) -> None:
    vms = Table(title="VMs")
    for column in ("VM", "project", "host", "network", "address", "floating IP", "MAC", "serves"):
        vms.add_column(column)
    for vm in state.vms.values():
        address = f"{vm.ip}/{vm.prefixlen}" if vm.lease else Text(f"{vm.ip} (no lease)")
        vms.add_row(
            vm.name,
            vm.project,
            vm.host,
            vm.network,
            address,
            vm.fip or "",
            vm.mac,
            ", ".join(vm.services),
        )
    out.print(vms)
    for lb in state.load_balancers.values():
        out.print(f"load balancer {lb.name} ({lb.project}): VIP {lb.vip}:{lb.port}")
    if state.external is not None:
        ext = state.external
        out.print(f"external network: namespace {ext.netns}, {ext.ip}/{ext.prefixlen}")


def _print_next_steps(state: LabState, tokens: bool) -> None:
    flag = f" --lab {state.name}" if len(existing_labs()) > 1 else ""
    first = next(iter(state.vms.values()), None)
    other = next((v for v in state.vms.values() if first and v.host != first.host), None)
    out.print(Text("\ntry:", style="bold"))
    if first is not None and other is not None:
        out.print(f"  netvirt lab exec{flag} {first.name} -- ping -c 3 {other.ip}")
    out.print(f"  netvirt lab check{flag}")
    out.print(f"  export NETVIRT_URL={state.url} NETVIRT_TOKEN=<admin token>")
    if tokens:
        out.print(f"  admin token: {state.admin_token}")
        for project, token in state.project_tokens.items():
            out.print(f"  {project} token: {token}")
    else:
        out.print(f"  (tokens: netvirt lab status{flag} --tokens)")
    out.print(f"  netvirt lab down{flag}")
