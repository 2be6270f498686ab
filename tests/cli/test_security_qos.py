"""``netvirt security-group …`` and ``netvirt qos …``."""

from __future__ import annotations

from cli.conftest import Cli


def test_security_group_rules_lifecycle(cli: Cli) -> None:
    group = cli.json("security-group", "create", "web", "--description", "front")
    assert len(group["security_group_rules"]) == 2  # Neutron's default egress pair
    http = cli.json(
        "security-group", "rule", "add", "web", "--protocol", "tcp", "--port", "80-90",
        "--remote-ip", "10.0.0.0/8",
    )  # fmt: skip
    assert (http["port_range_min"], http["port_range_max"]) == (80, 90)
    assert http["direction"] == "ingress"
    assert http["security_group_id"] == group["id"]
    ssh = cli.json(
        "security-group", "rule", "add", "web", "--protocol", "tcp", "--port", "22",
        "--remote-group", "web",
    )  # fmt: skip
    assert ssh["remote_group_id"] == group["id"]
    v6 = cli.json("security-group", "rule", "add", "web", "--remote-ip", "2001:db8::/32")
    assert v6["ethertype"] == "IPv6"  # inferred from the prefix
    shown = cli.ok("security-group", "show", "web")
    assert "80-90" in shown
    assert f"group {group['id']}" in shown
    assert "2001:db8::/32" in shown
    listed = cli.json("security-group", "rule", "list", "web")
    assert {r["id"] for r in listed} >= {http["id"], ssh["id"], v6["id"]}
    assert "deleted security group rule" in cli.ok("security-group", "rule", "delete", ssh["id"])
    assert ssh["id"] not in cli.ok("security-group", "rule", "list", "web")
    assert "web" in cli.ok("security-group", "list")
    assert cli.ok("security-group", "delete", "web").startswith("deleted security group ")


def test_security_group_rule_errors(cli: Cli) -> None:
    cli.ok("security-group", "create", "web")
    base = ("security-group", "rule", "add", "web", "--protocol", "tcp")
    assert "N or N-M" in cli.fails(*base, "--port", "http", code=2)
    assert "--remote-ip and --remote-group" in cli.fails(
        *base, "--remote-ip", "10.0.0.0/8", "--remote-group", "web", code=2
    )
    icmp = cli.json(
        "security-group", "rule", "add", "web", "--protocol", "icmp", "--icmp-type", "8"
    )
    assert (icmp["port_range_min"], icmp["port_range_max"]) == (8, None)
    cli.ok(*base, "--port", "443")
    line = cli.fails(*base, "--port", "443")  # duplicate: the server's SecurityGroupRuleExists
    assert "already exists" in line.lower()


def test_security_group_in_use_by_port(cli: Cli) -> None:
    cli.ok("security-group", "create", "web")
    cli.ok("network", "create", "n")
    cli.ok("subnet", "create", "s", "--network", "n", "--cidr", "10.0.0.0/24")
    port = cli.json("port", "create", "p", "--network", "n", "--security-group", "web")
    assert port["security_groups"] == [cli.json("security-group", "show", "web")["id"]]
    assert "in use" in cli.fails("security-group", "delete", "web").lower()


def test_qos_policy_rules_and_attachment(cli: Cli) -> None:
    policy = cli.json("qos", "create", "gold")
    bw = cli.json("qos", "bandwidth-limit", "gold", "--max-kbps", "1000", "--burst", "100")
    assert (bw["max_kbps"], bw["max_burst_kbps"], bw["direction"]) == (1000, 100, "egress")
    dscp = cli.json("qos", "dscp", "gold", "--mark", "26")
    assert dscp["dscp_mark"] == 26
    table = cli.ok("qos", "list")
    assert "egress 1000 kbps burst 100" in table
    assert "dscp 26" in table
    net = cli.json("network", "create", "n", "--qos-policy", "gold")
    assert net["qos_policy_id"] == policy["id"]
    assert f"is used by network {net['id']}" in cli.fails("qos", "delete", "gold")
    assert cli.json("network", "update", "n", "--no-qos-policy")["qos_policy_id"] is None
    cli.ok("qos", "delete-rule", "gold", bw["id"])
    assert [r["type"] for r in cli.json("qos", "show", "gold")["rules"]] == ["dscp_marking"]
    assert "could not be found" in cli.fails("qos", "delete-rule", "gold", bw["id"])
    assert cli.ok("qos", "delete", "gold").startswith("deleted QoS policy ")


def test_qos_invalid_dscp_mark_is_the_server_message(cli: Cli) -> None:
    cli.ok("qos", "create", "gold")
    line = cli.fails("qos", "dscp", "gold", "--mark", "27")
    assert "27 is not a valid DSCP mark" in line
