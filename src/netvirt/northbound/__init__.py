"""Northbound (desired-state) store: SQLAlchemy tables, IPAM and resource services.

Every service function takes a SQLAlchemy session opened by
:meth:`netvirt.northbound.db.Database.write` or ``read`` and a
:class:`netvirt.northbound.context.Context`; it returns plain dicts shaped like
the Neutron API and raises :mod:`netvirt.northbound.errors` on bad input.
"""
