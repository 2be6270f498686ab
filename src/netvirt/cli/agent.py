"""``netvirt agent`` and ``netvirt datapath``: the two halves of a host.

``netvirt datapath`` owns the interfaces, the tunnels and the installed flows
(``netvirt.agent.datapath``); ``netvirt agent --datapath SOCKET`` talks to
the SB service and installs flows into it over the datapath's control socket
(``netvirt.agent.controller``), so the agent can restart while traffic flows.
Without ``--datapath``, ``netvirt agent`` runs both halves in one process
(``netvirt.agent.runner``). The lab starts a datapath and an agent per
emulated host; both run in the root namespace (the agent reaches the API on
127.0.0.1) and the datapath opens its sockets in ``--netns``. Heavy imports
happen inside the commands, so ``netvirt --help`` stays fast.
"""

from __future__ import annotations

import logging
import signal
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Literal, Protocol

import typer


class EncapChoice(StrEnum):
    geneve = "geneve"
    vxlan = "vxlan"


class StateFailChoice(StrEnum):
    closed = "closed"
    open = "open"


class _Stoppable(Protocol):
    def stop(self) -> None: ...

    def run(self) -> int: ...


Name = Annotated[str, typer.Option(help="Chassis name (binding:host_id of local ports)")]
UnderlayIp = Annotated[
    str, typer.Option(help="This host's tunnel address (in --netns)", show_default=False)
]
Netns = Annotated[
    str, typer.Option(help="Namespace of the interfaces and the underlay ('' = this one)")
]
Encap = Annotated[EncapChoice, typer.Option(help="Encapsulation to register")]
UnderlayMtu = Annotated[
    int, typer.Option(help="Underlay MTU, 576-65535 (0 = the underlay interface's)")
]
StateStoreUrl = Annotated[
    str,
    typer.Option(
        help="Conntrack state: memory://, redis://host:port/db or redis+cluster://host:port,..."
    ),
]
StateFail = Annotated[
    StateFailChoice,
    typer.Option(
        help="State store unreachable: drop packets that need it (closed) or let "
        "lookups pass as established, NAT still dropped (open)"
    ),
]
StatusFile = Annotated[Path | None, typer.Option(help="JSON status, rewritten about once a second")]
LogLevel = Annotated[str, typer.Option(help="debug, info, warning, error")]


def agent(
    name: Name,
    underlay_ip: UnderlayIp,
    url: Annotated[str, typer.Option(envvar="NETVIRT_URL", help="The API (netvirt serve)")],
    token: Annotated[str, typer.Option(envvar="NETVIRT_HOST_TOKEN", help="A token with role host")],
    iface_dir: Annotated[
        Path | None,
        typer.Option(
            help="Plug directory: one file per interface, holding the NB port id "
            "(one-process mode; a datapath process has its own)"
        ),
    ] = None,
    datapath: Annotated[
        Path | None,
        typer.Option(help="Control socket of a `netvirt datapath` (omit: one process)"),
    ] = None,
    netns: Netns = "",
    encap: Encap = EncapChoice.geneve,
    underlay_mtu: UnderlayMtu = 0,
    state_store: StateStoreUrl = "memory://",
    state_fail: StateFail = StateFailChoice.closed,
    status_file: StatusFile = None,
    log_level: LogLevel = "info",
) -> None:
    """Run a host agent: claim plugged ports, compute and install flows (and, without
    --datapath, forward packets in this process too)."""
    from netvirt.agent.runner import Config

    _check_mtu(underlay_mtu)
    if datapath is None and iface_dir is None:
        raise typer.BadParameter("give --iface-dir (one process) or --datapath")
    _logging(name, log_level)
    if iface_dir is not None:
        iface_dir.mkdir(parents=True, exist_ok=True)
    config = Config(
        name=name,
        underlay_ip=underlay_ip,
        url=url,
        token=token,
        iface_dir=iface_dir or Path("."),
        netns=netns or None,
        encap=_encap(encap),
        underlay_mtu=underlay_mtu or None,
        state_store=state_store,
        status_file=status_file,
        datapath=datapath,
    )
    _set_state_fail(config, state_fail, one_process=datapath is None)
    process: _Stoppable
    if datapath is not None:
        from netvirt.agent.controller import AgentProcess
        from netvirt.cli.main import tune_gc

        tune_gc()  # the agent holds the SB mirror: a large, long-lived heap
        process = AgentProcess(config)
    else:
        from netvirt.agent.runner import Runner

        try:
            process = Runner(config)
        except ValueError as err:  # a state store URL that names no backend
            raise typer.BadParameter(str(err), param_hint="--state-store") from err
    _run(process)


def datapath(
    name: Name,
    underlay_ip: UnderlayIp,
    iface_dir: Annotated[
        Path,
        typer.Option(help="Plug directory: one file per interface, holding the NB port id"),
    ],
    control: Annotated[Path, typer.Option(help="Control socket for the agent (created)")],
    netns: Netns = "",
    encap: Encap = EncapChoice.geneve,
    underlay_mtu: UnderlayMtu = 0,
    state_store: StateStoreUrl = "memory://",
    state_cache: Annotated[
        float,
        typer.Option(
            help="Seconds a shared store's reads may be reused (0: read every packet's state)",
            min=0.0,
            max=10.0,
        ),
    ] = 0.5,
    state_fail: StateFail = StateFailChoice.closed,
    flow_cache: Annotated[
        int,
        typer.Option(
            help="Entries of the flow cache that replays established flows (0: off)", min=0
        ),
    ] = 65_536,
    gc_tuned: Annotated[
        bool,
        typer.Option(
            "--gc-tuned/--gc-default",
            envvar="NETVIRT_DATAPATH_GC_TUNED",
            help="Fewer young garbage collections and the heap frozen after each install "
            "(measured: a longer latency tail, no rate gain; pauses are in the status)",
        ),
    ] = False,
    offload: Annotated[
        bool,
        typer.Option(
            "--offload/--no-offload",
            envvar="NETVIRT_OFFLOAD",
            help="Serve exact-cache flows between local ports in the kernel (eBPF at TC "
            "ingress; needs root, clang, libbpf; without them the datapath says why and "
            "runs without). --no-offload: every frame through the user-space datapath",
        ),
    ] = True,
    syn_templates: Annotated[
        bool | None,
        typer.Option(
            "--syn-templates/--no-syn-templates",
            envvar="NETVIRT_SYN_TEMPLATES",
            show_default="on",
            help="With --offload and local state: the kernel makes new TCP connections "
            "through security groups and SNAT from their SYN, once one connection of the "
            "same client and server port went through the datapath (docs/conn-rate.md)",
        ),
    ] = None,
    status_file: StatusFile = None,
    log_level: LogLevel = "info",
) -> None:
    """Run a host datapath: open plugged interfaces and tunnels, forward packets with the
    flows an agent installs through --control (and keep forwarding while it restarts)."""
    from netvirt.agent import gcpause
    from netvirt.agent.datapath import DatapathConfig, DatapathProcess

    _check_mtu(underlay_mtu)
    if offload:  # (read when the offload starts: a bad value is refused before anything)
        from netvirt.dataplane.offload.manager import PEER_ENV, redirect_peer_by_env

        try:
            redirect_peer_by_env()
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint=PEER_ENV) from err
    _logging(f"{name}-dp", log_level)
    iface_dir.mkdir(parents=True, exist_ok=True)
    config = DatapathConfig(
        name=name,
        underlay_ip=underlay_ip,
        iface_dir=iface_dir,
        netns=netns or None,
        encap=_encap(encap),
        underlay_mtu=underlay_mtu or None,
        state_store=state_store,
        state_cache=state_cache,
        state_fail=state_fail.value,
        flow_cache=flow_cache,
        gc_tuned=gc_tuned,
        offload=offload,
        syn_templates=syn_templates,
        status_file=status_file,
        control=control,
    )
    try:
        process = DatapathProcess(config)
    except ValueError as err:  # a state store URL that names no backend
        raise typer.BadParameter(str(err), param_hint="--state-store") from err
    if not gc_tuned:
        gcpause.spare_survivors()  # (the process's own collector: not in DatapathProcess,
        # which tests build in theirs)
    _run(process)


def _set_state_fail(config: object, choice: StateFailChoice, *, one_process: bool) -> None:
    """Give ``--state-fail`` to the one-process datapath. With ``--datapath`` the
    datapath process tracks connections: the option belongs to ``netvirt datapath``."""
    if choice is StateFailChoice.closed:
        return
    field = "state_fail"  # runner.Config forwards it to its DatapathConfig once it has it
    if not one_process or not hasattr(config, field):
        raise typer.BadParameter(
            "give it to `netvirt datapath` (the process that tracks connections)",
            param_hint="--state-fail",
        )
    setattr(config, field, choice.value)


def _check_mtu(underlay_mtu: int) -> None:
    if underlay_mtu and not 576 <= underlay_mtu <= 65535:
        raise typer.BadParameter("must be 0 or 576-65535", param_hint="--underlay-mtu")


def _encap(choice: EncapChoice) -> Literal["geneve", "vxlan"]:
    return "vxlan" if choice is EncapChoice.vxlan else "geneve"


def _logging(name: str, level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )


def _run(process: _Stoppable) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        process.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    raise typer.Exit(process.run())
