"""``netvirt network|subnet|port``: create, list, show, update, delete, tables and JSON."""

from __future__ import annotations

from cli.conftest import Cli
from conftest import Api


def test_network_create_list_show_delete(cli: Cli) -> None:
    out = cli.ok("network", "create", "web", "--mtu", "1400")
    assert "web" in out
    assert "1400" in out
    net = cli.json("network", "show", "web")
    assert net["mtu"] == 1400
    assert net["name"] == "web"
    table = cli.ok("network", "list")
    assert net["id"] in table
    assert "MTU" in table.splitlines()[1]
    listed = cli.json("network", "list")
    assert [n["id"] for n in listed] == [net["id"]]
    assert cli.ok("network", "delete", "web").strip() == f"deleted network {net['id']}"
    assert cli.json("network", "list") == []
    line = cli.fails("network", "show", net["id"])
    assert net["id"] in line
    assert "could not be found" in line


def test_network_create_admin_flags(cli: Cli) -> None:
    net = cli.json("network", "create", "ext", "--shared", "--external", "--disable-port-security")
    assert net["shared"] is True
    assert net["router:external"] is True
    assert net["port_security_enabled"] is False
    assert [n["name"] for n in cli.json("network", "list", "--external")] == ["ext"]
    assert cli.json("network", "list", "--internal") == []


def test_network_update_changes_only_given_fields(cli: Cli) -> None:
    before = cli.json("network", "create", "a", "--mtu", "1400")
    after = cli.json("network", "update", "a", "--name", "b", "--no-port-security")
    assert after["name"] == "b"
    assert after["mtu"] == 1400
    assert after["port_security_enabled"] is False
    assert after["revision_number"] == before["revision_number"] + 1
    assert "nothing to update" in cli.fails("network", "update", "b", code=2)


def test_network_in_project_by_name(cli: Cli, alice: Api) -> None:
    net = cli.json("network", "create", "theirs", "--project", "alice")
    assert net["project_id"] == alice.project_id
    assert cli.json("network", "list", "--project", "alice")[0]["id"] == net["id"]
    assert cli.json("network", "show", "theirs", token=alice.token)["id"] == net["id"]


def test_subnet_create_with_every_option(cli: Cli) -> None:
    net = cli.json("network", "create", "web")
    sub = cli.json(
        "subnet",
        "create",
        "web-v4",
        "--network",
        "web",
        "--cidr",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.254",
        "--dns",
        "9.9.9.9",
        "--dns",
        "1.1.1.1",
        "--pool",
        "10.1.0.10-10.1.0.20",
        "--host-route",
        "192.168.0.0/16=10.1.0.1",
        "--no-dhcp",
    )
    assert sub["network_id"] == net["id"]
    assert sub["gateway_ip"] == "10.1.0.254"
    assert sub["dns_nameservers"] == ["9.9.9.9", "1.1.1.1"]
    assert sub["allocation_pools"] == [{"start": "10.1.0.10", "end": "10.1.0.20"}]
    assert sub["host_routes"] == [{"destination": "192.168.0.0/16", "nexthop": "10.1.0.1"}]
    assert sub["enable_dhcp"] is False
    table = cli.ok("subnet", "list", "--network", "web")
    assert "10.1.0.0/24" in table
    assert sub["id"] in table


def test_subnet_no_gateway_and_ipv6_slaac(cli: Cli) -> None:
    cli.ok("network", "create", "n")
    v4 = cli.json(
        "subnet", "create", "s4", "--network", "n", "--cidr", "10.2.0.0/24", "--no-gateway"
    )
    assert v4["gateway_ip"] is None
    v6 = cli.json(
        "subnet",
        "create",
        "s6",
        "--network",
        "n",
        "--cidr",
        "fd00:1::/64",
        "--ip-version",
        "6",
        "--ipv6-mode",
        "slaac",
    )
    assert v6["ip_version"] == 6
    assert v6["ipv6_ra_mode"] == v6["ipv6_address_mode"] == "slaac"
    assert {s["name"] for s in cli.json("subnet", "list", "--network", "n")} == {"s4", "s6"}


def test_bad_cidr_prints_the_server_message_and_exits_1(cli: Cli) -> None:
    cli.ok("network", "create", "n")
    line = cli.fails("subnet", "create", "s", "--network", "n", "--cidr", "10.0.0.300/24")
    assert line.startswith("error: Invalid input for cidr")
    assert "10.0.0.300/24" in line
    assert cli.json("subnet", "list") == []


def test_local_usage_errors_are_one_line_exit_2(cli: Cli) -> None:
    cli.ok("network", "create", "n")
    base = ("subnet", "create", "s", "--network", "n", "--cidr", "10.0.0.0/24")
    line = cli.fails(*base, "--gateway", "10.0.0.1", "--no-gateway", code=2)
    assert "--gateway and --no-gateway" in line
    assert "--pool expects A-B" in cli.fails(*base, "--pool", "10.0.0.5", code=2)
    assert "--host-route" in cli.fails(*base, "--host-route", "10.9.0.0/16", code=2)


def test_subnet_update_and_delete(cli: Cli) -> None:
    cli.ok("network", "create", "n")
    cli.ok("subnet", "create", "s", "--network", "n", "--cidr", "10.3.0.0/24")
    upd = cli.json("subnet", "update", "s", "--dns", "8.8.8.8", "--name", "t")
    assert upd["dns_nameservers"] == ["8.8.8.8"]
    assert upd["name"] == "t"
    assert cli.ok("subnet", "delete", "t").startswith("deleted subnet ")
    assert cli.json("subnet", "list") == []


def test_port_create_list_show_delete(cli: Cli) -> None:
    net = cli.json("network", "create", "n")
    cli.ok("subnet", "create", "s", "--network", "n", "--cidr", "10.4.0.0/24")
    port = cli.json(
        "port",
        "create",
        "vm1",
        "--network",
        "n",
        "--ip",
        "10.4.0.50",
        "--mac",
        "fa:16:3e:00:00:01",
        "--allowed-address",
        "10.4.0.99,fa:16:3e:00:00:99",
        "--allowed-address",
        "10.4.1.0/24",
        "--host",
        "hv1",
    )
    assert port["network_id"] == net["id"]
    assert [ip["ip_address"] for ip in port["fixed_ips"]] == ["10.4.0.50"]
    assert port["mac_address"] == "fa:16:3e:00:00:01"
    assert port["binding:host_id"] == "hv1"
    pairs = port["allowed_address_pairs"]
    assert [p["ip_address"] for p in pairs] == ["10.4.0.99", "10.4.1.0/24"]
    assert pairs[0]["mac_address"] == "fa:16:3e:00:00:99"
    table = cli.ok("port", "list", "--network", "n")
    assert "10.4.0.50" in table
    assert "fa:16:3e:00:00:01" in table
    assert cli.json("port", "list", "--host", "hv1")[0]["id"] == port["id"]
    assert "10.4.0.50" in cli.ok("port", "show", "vm1")
    assert cli.ok("port", "delete", "vm1").strip() == f"deleted port {port['id']}"
    assert cli.json("port", "list") == []


def test_port_security_groups_and_port_security(cli: Cli) -> None:
    cli.ok("network", "create", "n")
    cli.ok("subnet", "create", "s", "--network", "n", "--cidr", "10.5.0.0/24")
    default = cli.json("port", "create", "p1", "--network", "n")
    assert len(default["security_groups"]) == 1  # the project's default group
    bare = cli.json(
        "port", "create", "p2", "--network", "n", "--no-security-groups", "--disable-port-security"
    )
    assert bare["security_groups"] == []
    assert bare["port_security_enabled"] is False
    upd = cli.json("port", "update", "p1", "--no-security-groups", "--name", "p1b")
    assert upd["security_groups"] == []
    assert upd["name"] == "p1b"


def test_names_or_ids_everywhere_and_ambiguity(cli: Cli) -> None:
    first = cli.json("network", "create", "twin")
    second = cli.json("network", "create", "twin")
    line = cli.fails("subnet", "create", "s", "--network", "twin", "--cidr", "10.6.0.0/24")
    assert "2 networks match 'twin'" in line
    assert first["id"] in line
    assert second["id"] in line
    sub = cli.json("subnet", "create", "s", "--network", second["id"], "--cidr", "10.6.0.0/24")
    assert sub["network_id"] == second["id"]
    assert "No network found" in cli.fails("network", "show", "ghost")


def test_other_projects_objects_are_invisible_by_name(cli: Cli, alice: Api) -> None:
    cli.ok("network", "create", "admin-only")
    line = cli.fails("network", "show", "admin-only", token=alice.token)
    assert line == "error: No network found with id or name 'admin-only'."
    assert cli.json("network", "list", token=alice.token) == []


def test_list_follows_every_page(cli: Cli) -> None:
    for i in range(5):
        cli.ok("network", "create", f"n{i}")
    listed = cli.json("network", "list", "--page-size", "2")
    assert sorted(n["name"] for n in listed) == [f"n{i}" for i in range(5)]
    assert len(cli.ok("network", "list", "--page-size", "2").splitlines()) == 5 + 4


def test_delete_several_at_once_stops_at_the_first_error(cli: Cli) -> None:
    cli.ok("network", "create", "a")
    cli.ok("network", "create", "b")
    result = cli("network", "delete", "a", "ghost", "b")
    assert result.exit_code == 1
    assert result.stdout.startswith("deleted network ")
    assert [n["name"] for n in cli.json("network", "list")] == ["b"]


def test_in_use_conflict_is_reported(cli: Cli) -> None:
    cli.ok("network", "create", "n")
    cli.ok("subnet", "create", "s", "--network", "n", "--cidr", "10.7.0.0/24")
    cli.ok("port", "create", "p", "--network", "n")
    assert "error: " in cli.fails("network", "delete", "n")
