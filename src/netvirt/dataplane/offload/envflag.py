"""On/off switches of the offload read from the environment, as ``netvirt datapath``
reads its boolean options: one of a few words, anything else a clear error (``false``
must never mean "on", as a non-empty string would)."""

from __future__ import annotations

import os

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(name: str, default: bool) -> bool:
    """The environment variable ``name`` as a boolean word (case-insensitive), or
    ``default`` when it is unset or empty; ValueError naming it for anything else."""
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value == "":
        return default
    if value in TRUE or value in FALSE:
        return value in TRUE
    raise ValueError(f"{name}={raw!r}: expected a boolean word, one of {', '.join(TRUE + FALSE)}")
