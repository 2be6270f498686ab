"""Creating a topology's API objects, as the admin and each project's member would.

Everything goes through :class:`~netvirt.api.client.NetvirtClient`, exactly as
a tenant's script would: projects and member tokens (admin), the external
network with its subnet and the port standing for its gateway (admin), then
per project its networks and subnets, security groups and rules, routers
(gateway and interfaces), the VM ports — created by the member, bound to a
host by the admin, as Nova does in OpenStack — floating IPs and load
balancers. The ids, MACs and addresses the lab needs later are recorded in
the lab's state as soon as they exist.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from netvirt.api.client import ApiError, NetvirtClient
from netvirt.lab import net
from netvirt.lab.net import Names
from netvirt.lab.state import ExternalRecord, LabState, LbRecord, VmRecord
from netvirt.lab.topology import LoadBalancer, Project, Topology, Vm

DEVICE_OWNER = "compute:netvirt-lab"
EXTERNAL_OWNER = "network:external_gateway"


class ApiBuilder:
    """Creates the topology's objects as the admin and each project's member would."""

    def __init__(self, state: LabState, topo: Topology) -> None:
        self.state = state
        self.topo = topo
        self.admin = NetvirtClient(state.url, state.admin_token)
        self.members: dict[str, NetvirtClient] = {}
        self.networks: dict[tuple[str, str], dict[str, Any]] = {}
        self.subnets: dict[tuple[str, str], dict[str, Any]] = {}
        self.groups: dict[tuple[str, str], str] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.external_net: str | None = None

    def close(self) -> None:
        self.admin.close()
        for client in self.members.values():
            client.close()

    def build(self) -> None:
        for project in self.topo.projects:
            self._project(project)
        if self.topo.external is not None:
            self._external()
        for project in self.topo.projects:
            self._networks(project)
            self._groups(project)
            self._routers(project)
        for vm in self.topo.vms:
            self._vm_port(vm)
        for lb in self.topo.load_balancers:
            self._load_balancer(lb)

    def _project(self, project: Project) -> None:
        created = self.admin.create_project(project.name, "netvirt lab")
        token = self.admin.create_token(project.name, "member", "netvirt lab")["token"]
        self.state.project_ids[project.name] = created["id"]
        self.state.project_tokens[project.name] = token
        self.members[project.name] = NetvirtClient(self.state.url, token)
        self.state.save()

    def _external(self) -> None:
        ext = self.topo.external
        gateways = [h.name for h in self.topo.gateway_hosts()]
        assert ext is not None
        assert gateways
        external: dict[str, Any] = {"name": ext.name, "router:external": True}
        network = self.admin.create_network(**external)
        subnet = self.admin.create_subnet(
            network_id=network["id"],
            name=f"{ext.name}-subnet",
            cidr=ext.cidr,
            ip_version=4,
            gateway_ip=ext.gateway(),
            enable_dhcp=False,
        )
        port_attrs: dict[str, Any] = {
            "network_id": network["id"],
            "name": "lab-external",
            "device_owner": EXTERNAL_OWNER,
            "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": ext.gateway()}],
            "port_security_enabled": False,
        }  # no binding: the localnet port is plugged on every gateway (docs/gateways.md)
        port = self.admin.create_port(**port_attrs)
        self.external_net = network["id"]
        self.state.external = ExternalRecord(
            netns="",
            host=gateways[0],
            host_iface=net.EXT_IFACE,
            links={h: Names(self.state.name).external_link(h) for h in gateways},
            network_id=network["id"],
            subnet_id=subnet["id"],
            port_id=port["id"],
            mac=port["mac_address"],
            ip=ext.gateway(),
            prefixlen=ipaddress.IPv4Network(ext.cidr).prefixlen,
            mtu=int(network["mtu"]),
        )
        self.state.save()

    def _networks(self, project: Project) -> None:
        client = self.members[project.name]
        for spec in project.networks:
            attrs: dict[str, Any] = {"name": spec.name, "port_security_enabled": spec.port_security}
            if spec.mtu:
                attrs["mtu"] = spec.mtu
            network = client.create_network(**attrs)
            sub: dict[str, Any] = {"network_id": network["id"], "name": f"{spec.name}-subnet"}
            sub |= {"cidr": spec.cidr, "ip_version": 4, "dns_nameservers": spec.dns}
            if spec.gateway_ip:
                sub["gateway_ip"] = spec.gateway_ip
            self.networks[(project.name, spec.name)] = network
            self.subnets[(project.name, spec.name)] = client.create_subnet(**sub)

    def _groups(self, project: Project) -> None:
        client = self.members[project.name]
        for group in project.security_groups:
            created = client.create_security_group(name=group.name, description=group.description)
            self.groups[(project.name, group.name)] = created["id"]
        for group in project.security_groups:
            for rule in group.rules:
                body: dict[str, Any] = {
                    "security_group_id": self.groups[(project.name, group.name)],
                    "direction": rule.direction,
                    "ethertype": rule.ethertype,
                }
                if rule.protocol != "any":
                    body["protocol"] = rule.protocol
                if span := rule.port_range():
                    body["port_range_min"], body["port_range_max"] = span
                if rule.remote_ip:
                    body["remote_ip_prefix"] = rule.remote_ip
                if rule.remote_group:
                    body["remote_group_id"] = self._group(project.name, rule.remote_group)
                client.create_security_group_rule(**body)

    def _group(self, project: str, name: str) -> str:
        """A group's id; ``default`` is looked up again if the project made it late."""
        if (project, name) not in self.groups:
            found = self.members[project].list_security_groups(name=name)
            if len(found) != 1:
                raise ApiError(404, "SecurityGroupNotFound", f"{project}: no group {name!r}")
            self.groups[(project, name)] = found[0]["id"]
        return self.groups[(project, name)]

    def _routers(self, project: Project) -> None:
        client = self.members[project.name]
        for spec in project.routers:
            attrs: dict[str, Any] = {"name": spec.name}
            if spec.gateway:
                attrs["external_gateway_info"] = {
                    "network_id": self.external_net,
                    "enable_snat": spec.snat,
                }
            router = client.create_router(**attrs)
            for net_name in spec.networks:
                subnet = self.subnets[(project.name, net_name)]
                client.add_router_interface(router["id"], subnet_id=subnet["id"])

    def _vm_port(self, vm: Vm) -> None:
        project = self.topo.vm_project(vm)
        client = self.members[project]
        network = self.networks[(project, vm.network)]
        subnet = self.subnets[(project, vm.network)]
        attrs: dict[str, Any] = {
            "network_id": network["id"],
            "name": vm.name,
            "device_owner": DEVICE_OWNER,
            "device_id": f"lab-{vm.name}",
            "port_security_enabled": vm.port_security,
        }
        if vm.ip:
            attrs["fixed_ips"] = [{"subnet_id": subnet["id"], "ip_address": vm.ip}]
        if vm.port_security:
            attrs["security_groups"] = [self._group(project, g) for g in vm.security_groups]
        port = client.create_port(**attrs)
        binding: dict[str, Any] = {"binding:host_id": vm.host}
        self.admin.update_port(port["id"], **binding)
        fip = None
        if vm.floating_ip:
            created = client.create_floatingip(
                floating_network_id=self.external_net, port_id=port["id"]
            )
            fip = created["floating_ip_address"]
        self.ports[vm.name] = port
        self.state.vms[vm.name] = VmRecord(
            name=vm.name,
            project=project,
            host=vm.host,
            netns="",
            host_iface="",
            network=vm.network,
            network_id=network["id"],
            port_id=port["id"],
            mac=port["mac_address"],
            ip=port["fixed_ips"][0]["ip_address"],
            prefixlen=ipaddress.IPv4Network(subnet["cidr"]).prefixlen,
            gateway=subnet.get("gateway_ip"),
            mtu=int(network["mtu"]),
            fip=fip,
            services=[f"{s.kind}:{s.port}" for s in vm.services],
        )
        self.state.save()

    def _load_balancer(self, spec: LoadBalancer) -> None:
        project = self.topo.vm_project(spec)
        client = self.members[project]
        subnet = self.subnets[(project, spec.network)]
        attrs: dict[str, Any] = {"name": spec.name, "vip_subnet_id": subnet["id"]}
        if spec.vip:
            attrs["vip_address"] = spec.vip
        lb = client.create_loadbalancer(**attrs)
        listener = client.create_listener(
            name=f"{spec.name}-{spec.port}",
            loadbalancer_id=lb["id"],
            protocol=spec.protocol,
            protocol_port=spec.port,
        )
        pool = client.create_pool(
            name=f"{spec.name}-pool",
            listener_id=listener["id"],
            protocol=spec.protocol,
            lb_algorithm=spec.algorithm,
        )
        for member in spec.members:
            vm = self.state.vms[member]
            client.create_member(
                pool["id"],
                name=member,
                address=vm.ip,
                protocol_port=spec.member_port or spec.port,
                subnet_id=self.subnets[(project, vm.network)]["id"],
            )
        if (mon := spec.health_monitor) is not None:
            body: dict[str, Any] = {"pool_id": pool["id"], "type": mon.type}
            body |= {"delay": mon.delay, "timeout": mon.timeout, "max_retries": mon.retries}
            if mon.type == "HTTP":
                body["url_path"] = mon.url_path
            client.create_healthmonitor(**body)
        self.state.load_balancers[spec.name] = LbRecord(
            name=spec.name, project=project, id=lb["id"], vip=lb["vip_address"], port=spec.port
        )
        self.state.save()
