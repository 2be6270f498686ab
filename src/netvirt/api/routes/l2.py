"""Networks, subnets and ports: /v2.0/networks, /v2.0/subnets, /v2.0/ports."""

from __future__ import annotations

from fastapi import APIRouter

from netvirt.api.resources import Resource, mount
from netvirt.model.l2 import (
    NetworkCreate,
    NetworkUpdate,
    PortCreate,
    PortUpdate,
    SubnetCreate,
    SubnetUpdate,
)
from netvirt.northbound import networks, ports, subnets

router = APIRouter()

mount(
    router,
    Resource(
        collection="networks",
        member="network",
        create_model=NetworkCreate,
        update_model=NetworkUpdate,
        create=networks.create,
        get=networks.get,
        list_all=networks.list_all,
        update=networks.update,
        delete=networks.delete,
    ),
)
mount(
    router,
    Resource(
        collection="subnets",
        member="subnet",
        create_model=SubnetCreate,
        update_model=SubnetUpdate,
        create=subnets.create,
        get=subnets.get,
        list_all=subnets.list_all,
        update=subnets.update,
        delete=subnets.delete,
    ),
)
mount(
    router,
    Resource(
        collection="ports",
        member="port",
        create_model=PortCreate,
        update_model=PortUpdate,
        create=ports.create,
        get=ports.get,
        list_all=ports.list_all,
        update=ports.update,
        delete=ports.delete,
    ),
)
