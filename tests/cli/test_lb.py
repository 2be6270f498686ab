"""``netvirt lb …``: load balancer → listener → pool → members, health monitor."""

from __future__ import annotations

from cli.conftest import Cli


def test_load_balancer_tree_by_names(cli: Cli) -> None:
    cli.ok("network", "create", "n")
    subnet = cli.json("subnet", "create", "s", "--network", "n", "--cidr", "10.0.0.0/24")
    lb = cli.json("lb", "create", "lb1", "--subnet", "s")
    assert lb["vip_subnet_id"] == subnet["id"]
    listener = cli.json("lb", "listener", "create", "lb1", "--protocol", "tcp", "--port", "80",
                        "--name", "l1")  # fmt: skip
    assert (listener["protocol"], listener["protocol_port"]) == ("TCP", 80)
    pool = cli.json("lb", "pool", "create", "--listener", "l1", "--algorithm", "round_robin",
                    "--name", "p1")  # fmt: skip
    assert pool["protocol"] == "TCP"  # taken from the listener
    assert pool["lb_algorithm"] == "ROUND_ROBIN"
    member = cli.json("lb", "member", "add", "p1", "--address", "10.0.0.20", "--port", "8080",
                      "--subnet", "s", "--name", "m1")  # fmt: skip
    assert (member["address"], member["protocol_port"]) == ("10.0.0.20", 8080)
    monitor = cli.json("lb", "healthmonitor", "create", "p1", "--type", "HTTP", "--delay", "5",
                       "--timeout", "3", "--retries", "3", "--url-path", "/health")  # fmt: skip
    assert monitor["url_path"] == "/health"
    assert lb["vip_address"] in cli.ok("lb", "list")
    listeners = cli.ok("lb", "listener", "list", "--loadbalancer", "lb1")
    assert listener["id"] in listeners
    assert lb["id"] in listeners  # the parent column reads Octavia's reference list
    pools = cli.ok("lb", "pool", "list")
    assert listener["id"] in pools
    assert monitor["id"] in pools
    assert "10.0.0.20" in cli.ok("lb", "member", "list", "p1")
    assert cli.json("lb", "member", "show", "p1", "m1")["id"] == member["id"]
    assert pool["id"] in cli.ok("lb", "healthmonitor", "list")
    assert cli.ok("lb", "member", "remove", "p1", "m1").strip() == f"removed member {member['id']}"
    assert cli.json("lb", "member", "list", "p1") == []
    assert cli.ok("lb", "delete", "lb1", "--cascade").startswith("deleted load balancer ")
    assert cli.json("lb", "pool", "list") == []


def test_load_balancer_errors(cli: Cli) -> None:
    cli.ok("network", "create", "n")
    cli.ok("subnet", "create", "s", "--network", "n", "--cidr", "10.0.0.0/24")
    cli.ok("lb", "create", "lb1", "--subnet", "s")
    line = cli.fails("lb", "listener", "create", "lb1", "--protocol", "SCTP", "--port", "80")
    assert "SCTP is not supported" in line
    assert "--protocol is needed" in cli.fails(
        "lb", "pool", "create", "--loadbalancer", "lb1", "--algorithm", "ROUND_ROBIN", code=2
    )
    assert "No load balancer found" in cli.fails("lb", "show", "ghost")
