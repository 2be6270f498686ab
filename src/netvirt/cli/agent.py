"""``netvirt agent``: run one host's agent and datapath (see ``netvirt.agent.runner``).

The lab starts one per emulated host. The command runs in the root namespace
(it reaches the API on 127.0.0.1) and opens its sockets in ``--netns``.
Heavy imports happen inside the command, so ``netvirt --help`` stays fast.
"""

from __future__ import annotations

import logging
import signal
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer


class EncapChoice(StrEnum):
    geneve = "geneve"
    vxlan = "vxlan"


def agent(
    name: Annotated[str, typer.Option(help="Chassis name (binding:host_id of local ports)")],
    underlay_ip: Annotated[
        str, typer.Option(help="This host's tunnel address (in --netns)", show_default=False)
    ],
    url: Annotated[str, typer.Option(envvar="NETVIRT_URL", help="The API (netvirt serve)")],
    token: Annotated[str, typer.Option(envvar="NETVIRT_HOST_TOKEN", help="A token with role host")],
    iface_dir: Annotated[
        Path,
        typer.Option(help="Plug directory: one file per interface, holding the NB port id"),
    ],
    netns: Annotated[
        str, typer.Option(help="Namespace of the interfaces and the underlay ('' = this one)")
    ] = "",
    encap: Annotated[EncapChoice, typer.Option(help="Encapsulation to register")] = (
        EncapChoice.geneve
    ),
    underlay_mtu: Annotated[
        int,
        typer.Option(help="Underlay MTU, 576-65535 (0 = the underlay interface's)"),
    ] = 0,
    state_store: Annotated[
        str, typer.Option(help="Conntrack state: memory:// or redis://host:port/db")
    ] = "memory://",
    status_file: Annotated[
        Path | None, typer.Option(help="JSON status, rewritten about once a second")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run a host agent: claim plugged ports, install flows, forward packets."""
    from netvirt.agent.runner import Config, Runner

    if underlay_mtu and not 576 <= underlay_mtu <= 65535:
        raise typer.BadParameter("must be 0 or 576-65535", param_hint="--underlay-mtu")

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
    iface_dir.mkdir(parents=True, exist_ok=True)
    config = Config(
        name=name,
        underlay_ip=underlay_ip,
        url=url,
        token=token,
        iface_dir=iface_dir,
        netns=netns or None,
        encap="vxlan" if encap is EncapChoice.vxlan else "geneve",
        underlay_mtu=underlay_mtu or None,
        state_store=state_store,
        status_file=status_file,
    )
    try:
        runner = Runner(config)
    except ValueError as err:  # a state store URL that names no backend
        raise typer.BadParameter(str(err), param_hint="--state-store") from err

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    raise typer.Exit(runner.run())
