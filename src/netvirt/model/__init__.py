"""Desired-state request models and validation: pure data, no I/O.

Each resource has a ``*Create`` and ``*Update`` pydantic model whose field
names and aliases are Neutron's (``router:external``, ``binding:host_id``…).
Unknown fields are refused (``extra="forbid"``) so a typo never silently does
nothing. Cross-object rules (an IP inside its subnet, overlapping CIDRs on a
router) need the store and live in :mod:`netvirt.northbound`.
"""
