"""The offload program's build and load: clang for the object, libbpf (ctypes) for the rest.

Why ctypes and not BCC: this kind of machine has no kernel headers (BCC compiles
against them at run time); the program needs only the UAPI headers and libbpf's
``bpf_helpers.h`` (Debian: clang, libbpf-dev), and libbpf 1.x loads BTF-defined
maps and attaches TC programs itself. The object is built once per source text
(named by its hash, in a cache directory), so a datapath start costs one
``bpf_object__load`` (~tens of ms), not a compile, after the first.

Every failure is an :class:`OffloadUnavailable` with the reason: the datapath
then runs without offload (and says so in its status), never fails to start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import os
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netvirt.dataplane.offload.ringbuf import RingReader

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("flows.bpf.c")
BPF_TC_INGRESS = 1
BPF_ANY = 0
SO_ATTACH_BPF = 50
SO_DETACH_BPF = 27


class OffloadUnavailable(RuntimeError):
    """The kernel offload cannot be used here (no clang/libbpf, no permission, no BPF)."""


class _TcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
    ]


class _TcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


def _libbpf() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as err:
        raise OffloadUnavailable(f"libbpf not found ({err}); install libbpf1") from err
    vp, i, c = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    for fname, restype, argtypes in (
        ("bpf_object__open_file", vp, [c, vp]),
        ("bpf_object__load", i, [vp]),
        ("bpf_object__close", None, [vp]),
        ("bpf_object__find_program_by_name", vp, [vp, c]),
        ("bpf_object__find_map_by_name", vp, [vp, c]),
        ("bpf_program__fd", i, [vp]),
        ("bpf_map__fd", i, [vp]),
        ("bpf_map__value_size", ctypes.c_uint32, [vp]),
        ("bpf_map__max_entries", ctypes.c_uint32, [vp]),
        ("bpf_map_update_elem", i, [i, vp, vp, ctypes.c_uint64]),
        ("bpf_map_delete_elem", i, [i, vp]),
        ("bpf_map_lookup_elem", i, [i, vp, vp]),
        ("bpf_map_lookup_and_delete_elem", i, [i, vp, vp]),
        ("bpf_map_get_next_key", i, [i, vp, vp]),
        ("bpf_tc_hook_create", i, [vp]),
        ("bpf_tc_hook_destroy", i, [vp]),
        ("bpf_tc_attach", i, [vp, vp]),
        ("bpf_tc_detach", i, [vp, vp]),
        ("bpf_prog_test_run_opts", i, [i, vp]),
        ("libbpf_get_error", ctypes.c_long, [vp]),
    ):
        func = getattr(lib, fname)
        func.restype = restype
        func.argtypes = argtypes
    return lib


def build_object(cache: Path | None = None) -> Path:
    """The compiled object for the current source (built now if it is not cached)."""
    text = SOURCE.read_bytes()
    digest = hashlib.sha256(text).hexdigest()[:16]
    directory = cache or Path(tempfile.gettempdir()) / "netvirt-bpf"
    target = directory / f"flows-{digest}.o"
    if target.exists():
        return target
    clang = shutil.which("clang")
    if clang is None:
        raise OffloadUnavailable("clang not found (scripts/setup.sh installs clang, libbpf-dev)")
    directory.mkdir(parents=True, exist_ok=True)
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    partial = directory / f".flows-{digest}.{os.getpid()}.o"
    command = [clang, "-O2", "-g", "-target", "bpf", f"-I/usr/include/{multiarch}"]
    command += ["-Wno-pass-failed", "-c", str(SOURCE), "-o", str(partial)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise OffloadUnavailable(f"clang failed: {done.stderr.strip()[-400:]}")
    os.replace(partial, target)
    return target


@dataclass
class Loaded:
    """One loaded object: the two programs' fds and the maps' fds."""

    lib: ctypes.CDLL
    obj: int
    forward_fd: int
    punt_fd: int
    flows_fd: int
    stats_fd: int
    ports_fd: int
    flows_value_size: int = 0
    decap_fd: int = -1  # ``decap``, for TC ingress of the underlay device
    tunnel_fd: int = -1  # the underlay address and port ``decap`` accepts
    conns_fd: int = -1  # kernel connections (``conns.py``): per direction
    cstates_fd: int = -1  # ... their TCP states
    timeouts_fd: int = -1  # ... conntrack's timeout per state
    punt_check_fd: int = -1  # ``punt`` as a TC program, for BPF_PROG_TEST_RUN (tests)
    tpls_fd: int = -1  # SYN templates (``templates.py``)
    tpl_ports_fd: int = -1  # ... each template's SNAT port supply (a hash: tid, seq)
    made_fd: int = -1  # ... the connections it made (a ring buffer the datapath drains)
    next_conn_fd: int = -1  # ... the next id of one
    made_ring: Any = None  # ``ringbuf.RingReader`` of ``made`` (None: not mapped)
    peers_fd: int = -1  # output ports served with bpf_redirect_peer (veth ends)

    def close(self) -> None:
        if self.made_ring is not None:
            self.made_ring.close()
            self.made_ring = None
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = 0


def load(path: Path | None = None) -> Loaded:
    """Open and load the object (root or CAP_BPF + CAP_NET_ADMIN)."""
    lib = _libbpf()
    target = path or build_object()
    obj = lib.bpf_object__open_file(str(target).encode(), None)
    if not obj or lib.libbpf_get_error(obj):
        raise OffloadUnavailable(f"cannot open {target}")
    if lib.bpf_object__load(obj) != 0:
        lib.bpf_object__close(obj)
        why = os.strerror(ctypes.get_errno())
        raise OffloadUnavailable(f"the kernel refused the program: {why}")
    fds = []
    for finder, getter, name in (
        (lib.bpf_object__find_program_by_name, lib.bpf_program__fd, b"forward"),
        (lib.bpf_object__find_program_by_name, lib.bpf_program__fd, b"punt"),
        (lib.bpf_object__find_map_by_name, lib.bpf_map__fd, b"flows"),
        (lib.bpf_object__find_map_by_name, lib.bpf_map__fd, b"stats"),
        (lib.bpf_object__find_map_by_name, lib.bpf_map__fd, b"ports"),
        (lib.bpf_object__find_program_by_name, lib.bpf_program__fd, b"decap"),
        (lib.bpf_object__find_map_by_name, lib.bpf_map__fd, b"tunnel"),
    ):
        handle = finder(obj, name)
        fd = getter(handle) if handle else -1
        if fd < 0:
            lib.bpf_object__close(obj)
            raise OffloadUnavailable(f"{name.decode()} missing from {target}")
        fds.append(fd)
    value_size = lib.bpf_map__value_size(lib.bpf_object__find_map_by_name(obj, b"flows"))
    forward_fd, punt_fd, flows_fd, stats_fd, ports_fd, decap_fd, tunnel_fd = fds
    found = Loaded(
        lib, obj, forward_fd, punt_fd, flows_fd, stats_fd, ports_fd, value_size, decap_fd, tunnel_fd
    )
    for field, map_name in (
        ("conns_fd", b"conns"),
        ("cstates_fd", b"cstates"),
        ("timeouts_fd", b"ct_timeouts"),
        ("tpls_fd", b"tpls"),
        ("tpl_ports_fd", b"tpl_ports"),
        ("made_fd", b"made"),
        ("next_conn_fd", b"next_conn"),
        ("peers_fd", b"peers"),
    ):
        handle = lib.bpf_object__find_map_by_name(obj, map_name)
        setattr(found, field, lib.bpf_map__fd(handle) if handle else -1)
    if found.made_fd >= 0:  # (a ring buffer's max_entries is its data size in bytes)
        size = lib.bpf_map__max_entries(lib.bpf_object__find_map_by_name(obj, b"made"))
        try:
            found.made_ring = RingReader(found.made_fd, size)
        except (OSError, ValueError) as err:
            log.warning("offload: the made-connection ring cannot be mapped: %s", err)
    check = lib.bpf_object__find_program_by_name(obj, b"punt_check")
    found.punt_check_fd = lib.bpf_program__fd(check) if check else -1
    return found


def attach_ingress(loaded: Loaded, ifindex: int, prog_fd: int | None = None) -> None:
    """Attach ``forward`` (or ``prog_fd``: ``decap``) at TC ingress of ``ifindex``
    (creating its clsact qdisc)."""
    lib = loaded.lib
    hook = _TcHook(ctypes.sizeof(_TcHook), ifindex, BPF_TC_INGRESS, 0)
    lib.bpf_tc_hook_create(ctypes.byref(hook))  # EEXIST is fine
    fd = loaded.forward_fd if prog_fd is None else prog_fd
    opts = _TcOpts(ctypes.sizeof(_TcOpts), fd, 1, 0, 1, 1)  # REPLACE
    if lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)) != 0:
        err = ctypes.get_errno()
        raise OffloadUnavailable(f"TC attach on ifindex {ifindex}: {os.strerror(err)}")


def detach_ingress(loaded: Loaded, ifindex: int) -> None:
    """Remove the ``forward`` filter (the device may be gone already)."""
    hook = _TcHook(ctypes.sizeof(_TcHook), ifindex, BPF_TC_INGRESS, 0)
    opts = _TcOpts(ctypes.sizeof(_TcOpts), 0, 0, 0, 1, 1)
    loaded.lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))


def run_once(
    prog_fd: int, lib: ctypes.CDLL, frame: bytes, ifindex: int, gso_size: int = 0
) -> tuple[int, bytes]:
    """Run a program once on ``frame`` (BPF_PROG_TEST_RUN): its return code and the
    frame as it left it (for tests and the self-check); ``gso_size``: as a super-frame."""
    size = len(frame) + 256
    out = ctypes.create_string_buffer(size)
    data = ctypes.create_string_buffer(frame, len(frame))
    ctx = (ctypes.c_uint32 * 48)()  # struct __sk_buff: ifindex is its 11th u32
    ctx[10] = ifindex
    ctx[44] = gso_size  # (__sk_buff.gso_size)
    opts = _TestRunOpts()
    opts.sz = ctypes.sizeof(_TestRunOpts)
    opts.data_in = ctypes.cast(data, ctypes.c_void_p)
    opts.data_out = ctypes.cast(out, ctypes.c_void_p)
    opts.data_size_in = len(frame)
    opts.data_size_out = size
    opts.ctx_in = ctypes.cast(ctx, ctypes.c_void_p)
    opts.ctx_size_in = ctypes.sizeof(ctx)
    opts.repeat = 1
    if lib.bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)) != 0:
        raise OffloadUnavailable(f"test run: {os.strerror(ctypes.get_errno())}")
    return opts.retval, out.raw[: opts.data_size_out]


def veth_peer_elsewhere(ifname: str) -> bool:
    """Whether ``ifname`` is one end of a veth pair whose other end is in another network
    namespace — what ``bpf_redirect_peer`` needs (a peer in the same namespace drops the
    frame). Asked over rtnetlink in the calling thread's namespace; False if unknown."""
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            (link,) = ipr.link("get", ifname=ifname)
    except Exception:  # (pyroute2 raises its own errors for a missing device)
        return False
    kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    return bool(kind == "veth" and link.get_attr("IFLA_LINK_NETNSID") is not None)
