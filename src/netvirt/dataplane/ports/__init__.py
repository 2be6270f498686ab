"""Datapath ports: where frames enter and leave the userspace datapath.

``base`` defines the ``Port`` protocol, ``Frame`` (bytes plus optional
virtio-net offload metadata) and counters; ``tap`` (VM ports),
``afpacket`` (veth and other existing interfaces) and ``memory`` (tests)
implement it; ``offload`` completes checksums and segments super-frames in
software where a destination cannot take them. See docs/datapath-io.md.
"""

from netvirt.dataplane.ports.base import Frame, Port, PortCounters, VnetHdr, as_frame

__all__ = ["Frame", "Port", "PortCounters", "VnetHdr", "as_frame"]
