"""What a running lab is made of, on disk, so ``lab down`` removes exactly that.

Every lab lives in one directory, ``$NETVIRT_LAB_DIR/<lab>`` (default
``/run/netvirt-lab/<lab>``: tmpfs, gone after a reboot like the namespaces
themselves). ``state.json`` there records each namespace, process, API
object id and credential the lab made; ``lab up`` rewrites it after every
step, so a build that fails half-way can still be torn down. The rest of the
directory is the lab's own files: the NB database, logs, the agents' plug
directories and status files, DHCP leases, web roots.

Processes are recorded with their start time (``/proc/<pid>/stat`` field
22) as well as their pid: a pid recycled by another program after a reboot
or a crash never matches, so ``down`` can never kill a stranger.

The file holds the lab's admin and project tokens: it is written mode 0600
in a directory only root can enter (the lab needs root anyway).
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

ROOT_ENV = "NETVIRT_LAB_DIR"
DEFAULT_ROOT = "/run/netvirt-lab"
STATE_FILE = "state.json"
FORMAT = 1


def lab_root() -> Path:
    """Where labs live: ``$NETVIRT_LAB_DIR`` or ``/run/netvirt-lab``."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def lab_dir(name: str, root: Path | None = None) -> Path:
    return (root or lab_root()) / name


def existing_labs(root: Path | None = None) -> list[str]:
    """Names of labs that have a directory (a state file or leftovers)."""
    base = root or lab_root()
    try:
        return sorted(p.name for p in base.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


class Record(BaseModel):
    """Base of the records: plain JSON, unknown keys kept out."""

    model_config = ConfigDict(extra="forbid")


class ProcessRecord(Record):
    """A process the lab started: enough to recognize it, stop it and start it again."""

    role: str
    pid: int
    start_time: int | None
    argv: list[str]
    netns: str | None = None
    log: str | None = None


class HostRecord(Record):
    name: str
    netns: str
    underlay_ip: str
    encap: str
    gateway: bool
    iface_dir: str
    status_file: str
    agent_argv: list[str] = []
    token: str = ""
    agent: ProcessRecord | None = None
    datapath_argv: list[str] = []
    datapath: ProcessRecord | None = None

    @property
    def control(self) -> str:
        """The datapath's control socket (next to the status file)."""
        return str(Path(self.status_file).with_name("datapath.sock"))

    @property
    def datapath_status_file(self) -> str:
        return str(Path(self.status_file).with_name("datapath.json"))


class VmRecord(Record):
    name: str
    project: str
    host: str
    netns: str
    host_iface: str
    network: str
    network_id: str
    port_id: str
    mac: str
    ip: str
    prefixlen: int
    gateway: str | None
    mtu: int
    fip: str | None = None
    lease: dict[str, str] | None = None
    services: list[str] = []


class ExternalRecord(Record):
    """The external namespace. ``host``/``host_iface``: the first gateway and the uplink's
    name on every gateway; ``links``: gateway → its link's name in the external namespace;
    ``active``: the gateways its ECMP route uses now (docs/gateways.md)."""

    netns: str
    host: str
    host_iface: str
    network_id: str
    subnet_id: str
    port_id: str
    mac: str
    ip: str
    prefixlen: int
    mtu: int
    links: dict[str, str] = {}
    active: list[str] = []

    @property
    def subnet_cidr(self) -> str:
        """The external subnet (what the external namespace routes over the gateways)."""
        return f"{ipaddress.IPv4Interface(f'{self.ip}/{self.prefixlen}').network}"


class LbRecord(Record):
    name: str
    project: str
    id: str
    vip: str
    port: int


class LabState(Record):
    """Everything ``lab up`` made, in the order it made it."""

    format: int = FORMAT
    name: str
    prefix: str
    dir: str
    topology_file: str
    topology: dict[str, Any]
    url: str = ""
    admin_token: str = ""
    project_ids: dict[str, str] = {}
    project_tokens: dict[str, str] = {}
    state_store: str | None = None
    namespaces: list[str] = []
    processes: list[ProcessRecord] = []
    hosts: dict[str, HostRecord] = {}
    vms: dict[str, VmRecord] = {}
    external: ExternalRecord | None = None
    load_balancers: dict[str, LbRecord] = {}
    ready: bool = False

    @property
    def path(self) -> Path:
        return Path(self.dir) / STATE_FILE

    def save(self) -> None:
        """Write atomically (temp file + rename), readable by root only."""
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(self.model_dump_json(indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: Path) -> LabState | None:
        """The state in ``directory``, or ``None`` when there is none (lab not up)."""
        path = directory / STATE_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: state format {data.get('format')} is not {FORMAT}")
        return cls.model_validate(data)

    def all_processes(self) -> list[ProcessRecord]:
        """Services first, then agents and datapaths, then the server and Redis: users before
        providers."""
        agents = [h.agent for h in self.hosts.values() if h.agent is not None]
        datapaths = [h.datapath for h in self.hosts.values() if h.datapath is not None]
        services = [p for p in self.processes if p.role.startswith("service:")]
        others = [p for p in self.processes if not p.role.startswith("service:")]
        return [*services, *agents, *datapaths, *others]

    def node_netns(self, node: str) -> str | None:
        """The namespace of a VM, host, ``ext``/``external`` or ``ul``/``underlay``."""
        if node in self.vms:
            return self.vms[node].netns
        if node in self.hosts:
            return self.hosts[node].netns
        if node in ("ext", "external") and self.external is not None:
            return self.external.netns
        if node in ("ul", "underlay"):
            return f"{self.prefix}ul"
        return None

    def node_names(self) -> list[str]:
        names = [*self.vms, *self.hosts, "underlay"]
        return names + (["ext"] if self.external is not None else [])
