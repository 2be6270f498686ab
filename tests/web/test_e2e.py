"""The GUI end to end: a real ``netvirt serve``, Debian's headless Chromium, a user.

Each test signs in through the login form and works only through the pages,
the way a tenant or an operator would; the API is called directly only to set
the scene (another tenant's objects, what host agents would report) and to
learn the exact error message the GUI must show. Screenshots of the main pages
are taken on every run; with NETVIRT_UPDATE_SCREENSHOTS=1 they are written to
docs/gui/ for docs/gui.md (otherwise to a temporary folder, so a test run does
not churn the committed images).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from web.conftest import PHONE, Server, Watched

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
expect.set_options(timeout=10_000)  # a shared 2-core machine can be slow to paint

DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "gui"
SHOTS = (
    DOCS_SHOTS
    if os.environ.get("NETVIRT_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "netvirt-gui-shots"
)
LIVE = 12_000  # ms: four polls of the live pages


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000


def login(page: Any, server: Server, who: str) -> None:
    page.goto(server.base + "/ui/")
    page.get_by_label("Token").fill(server.tokens[who])
    page.get_by_role("button", name="Sign in").click()
    role = "admin" if who == "admin" else "member"
    expect(page.locator("#who")).to_have_text(f"{who} ({role})")


def go(page: Any, route: str, heading: str) -> None:
    page.locator(f'#nav a[data-route="{route}"]').click()
    expect(page.locator("h1")).to_have_text(heading)


def dialog(page: Any) -> Any:
    return page.get_by_role("dialog")


def create(page: Any, button: str, fill: dict[str, str], select: dict[str, str]) -> None:
    """Open a create form, fill text fields and choose options by label, submit."""
    page.get_by_role("button", name=button).click()
    form = dialog(page)
    for field, value in fill.items():
        form.get_by_label(field).fill(value)
    for field, option in select.items():
        form.get_by_label(field).select_option(label=option)
    form.get_by_role("button", name="Create").click()
    expect(form).to_have_count(0)


def assert_clean(seen: Watched) -> None:
    errors = [e for e in seen.errors if "Failed to load resource" not in e]
    assert errors == []
    assert seen.foreign == [], "the page reached beyond its own origin"


def node(page: Any, kind: str, name: str) -> Any:
    return page.locator(f'svg.topology .node[data-kind="{kind}"][data-name="{name}"]')


@pytest.fixture(scope="session")
def public(server: Server) -> dict[str, Any]:
    """The operator's external network, readable by every tenant."""
    net = server.api(
        "admin", "POST", "/v2.0/networks", {"network": {"name": "public", "router:external": True}}
    )["network"]
    body = {"subnet": {"network_id": net["id"], "cidr": "172.24.4.0/24", "name": "public-v4"}}
    server.api("admin", "POST", "/v2.0/subnets", body)
    return dict(net)


def _port(ident: str, name: str, owner: str, device: str, ip: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "name": name,
        "device_owner": owner,
        "device_id": device,
        "network_id": "n1",
        "admin_state_up": True,
        "status": "ACTIVE",
        "mac_address": "fa:16:3e:00:00:01",
        "binding:host_id": "",
        "fixed_ips": [{"ip_address": ip, "subnet_id": "s1"}],
    } | extra


def _network(ident: str, name: str, external: bool) -> dict[str, Any]:
    return {
        "id": ident,
        "name": name,
        "router:external": external,
        "admin_state_up": True,
        "status": "ACTIVE",
        "mtu": 1442,
        "shared": False,
    }


GATEWAY = {
    "network_id": "x1",
    "enable_snat": True,
    "external_fixed_ips": [{"ip_address": "172.24.4.2"}],
}
SNAPSHOT = {
    "networks": [_network("n1", "web", False), _network("x1", "public", True)],
    "subnets": [{"id": "s1", "network_id": "n1", "cidr": "10.0.0.0/24"}],
    "routers": [
        {
            "id": "r1",
            "name": "r1",
            "status": "ACTIVE",
            "routes": [],
            "external_gateway_info": GATEWAY,
        }
    ],
    "ports": [
        _port("p0", "", "network:router_interface", "r1", "10.0.0.1"),
        _port("p1", "vm1", "", "", "10.0.0.5", **{"binding:host_id": "hv1"}),
    ],
    "floatingips": [],
    "loadbalancers": [],
    "pools": [],
    "members": {},
    "status": {
        "nb_generation": 5,
        "compiled_generation": 5,
        "installed_generation": 5,
        "hosts": [
            {"host": "hv1", "installed_generation": 5, "reported_at": "2026-01-01T00:00:00Z"}
        ],
    },
}

PURE_MODULES = """async (snap) => {
    const v = await import('/ui/static/validate.js');
    const g = await import('/ui/static/graph.js');
    const graph = g.buildGraph(snap, {admin: true, now: Date.parse('2026-01-01T00:00:10Z')});
    const geo = g.layout(graph);
    const y = (id) => geo.positions.get(id).y;
    return {
      badCidr: v.cidrError('10.0.0.1/24'),
      goodCidr: v.cidrError('10.0.0.0/24'),
      badV6: v.cidrError('2001:db8::1/64'),
      inside: v.ipInCIDR('10.0.0.5', '10.0.0.0/24'),
      outside: v.ipInCIDR('10.0.1.5', '10.0.0.0/24'),
      v6: v.formatIP(6, v.parseIPv6('2001:db8:0:0:1::1')),
      routes: v.parseRoutes('10.1.0.0/16 via 10.0.0.254').value,
      badMac: v.isMAC('fa:16:3e:00:00:0g'),
      order: [y('x1'), y('r1'), y('n1'), y('p1')],
      edges: graph.edges.map((e) => `${e.kind}:${e.from}>${e.to}`).sort(),
      groups: geo.boxes.map((b) => `${b.name}:${b.status}`),
    };
}"""


def test_pure_modules_in_the_browser(watched: Watched, server: Server) -> None:
    """validate.js and graph.js, run where they run: in Chromium."""
    page = watched.page
    page.goto(server.base + "/ui/")
    result = page.evaluate(PURE_MODULES, SNAPSHOT)
    assert result["badCidr"] == "'10.0.0.1/24' isn't a recommended CIDR, use '10.0.0.0/24' instead."
    assert result["goodCidr"] is None
    assert "use '2001:db8::/64'" in result["badV6"]
    assert (result["inside"], result["outside"]) == (True, False)
    assert result["v6"] == "2001:db8::1:0:0:1"
    assert result["routes"] == [{"destination": "10.1.0.0/16", "nexthop": "10.0.0.254"}]
    assert result["badMac"] is False
    # layers top to bottom: external network, router, network, port
    assert result["order"] == sorted(result["order"])
    assert len(set(result["order"])) == 4
    assert result["edges"] == ["attach:n1>p1", "gateway:x1>r1", "interface:r1>n1"]
    assert result["groups"] == ["hv1:UP"]
    assert_clean(watched)


def test_unknown_token_shows_the_api_message(watched: Watched, server: Server) -> None:
    page = watched.page
    page.goto(server.base + "/ui/")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_have_text("Token is required.")
    page.get_by_label("Token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expected = httpx.get(
        server.base + "/v2.0/netvirt/whoami", headers={"X-Auth-Token": "not-a-token"}
    ).json()["NeutronError"]["message"]
    expect(page.locator("#login-error")).to_have_text(expected)
    expect(page.locator("#nav")).to_be_hidden()
    assert_clean(watched)


def _subnet_forms(page: Any, server: Server) -> None:
    """Client-side checks first, then the API's own refusal shown verbatim."""
    go(page, "subnets", "Subnets")
    page.get_by_role("button", name="Create subnet").click()
    form = dialog(page)
    form.get_by_label("Network").select_option(label="web")
    form.get_by_label("Name").fill("web-v4")
    form.get_by_label("CIDR").fill("10.0.0.1/24")
    form.get_by_role("button", name="Create").click()
    expect(form.locator('[data-name="cidr"] .field-error')).to_have_text(
        "'10.0.0.1/24' isn't a recommended CIDR, use '10.0.0.0/24' instead."
    )
    expect(form.get_by_label("CIDR")).to_have_attribute("aria-invalid", "true")
    form.get_by_label("CIDR").fill("10.0.0.0/24")
    form.get_by_role("button", name="Create").click()
    expect(form).to_have_count(0)
    expect(page.locator('tr[data-name="web-v4"]')).to_be_visible()

    net = server.api("alice", "GET", "/v2.0/networks?name=web")["networks"][0]["id"]
    overlap = {"subnet": {"network_id": net, "cidr": "10.0.0.0/25"}}
    refused = httpx.post(
        server.base + "/v2.0/subnets",
        json=overlap,
        headers={"X-Auth-Token": server.tokens["alice"]},
    )
    assert refused.status_code == 400
    page.get_by_role("button", name="Create subnet").click()
    form.get_by_label("Network").select_option(label="web")
    form.get_by_label("CIDR").fill("10.0.0.0/25")
    form.get_by_role("button", name="Create").click()
    expect(form.locator(".form-error")).to_have_text(refused.json()["NeutronError"]["message"])
    shot(page, "form-error")
    form.get_by_role("button", name="Cancel").click()
    expect(form).to_have_count(0)


def _router_forms(page: Any) -> None:
    go(page, "routers", "Routers")
    create(page, "Create router", {"Name": "r1"}, {"External network": "public"})
    page.locator('tr[data-name="r1"] a').click()
    expect(page.locator("h1")).to_have_text("Router r1")
    page.get_by_role("button", name="Add interface").click()
    dialog(page).get_by_label("Subnet").select_option(index=0)
    dialog(page).get_by_role("button", name="Add").click()
    expect(page.locator('tr[data-name="interface 10.0.0.1"]')).to_be_visible()


def _ports(page: Any) -> None:
    go(page, "ports", "Ports")
    for name in ("vm1", "vm2"):
        create(page, "Create port", {"Name": name}, {"Network": "web"})
        expect(page.locator(f'tr[data-name="{name}"]')).to_be_visible()


def _topology(page: Any, server: Server) -> None:
    go(page, "topology", "Topology")
    for kind, name in [
        ("external", "public"),
        ("router", "r1"),
        ("network", "web"),
        ("port", "vm1"),
        ("port", "vm2"),
    ]:
        expect(node(page, kind, name)).to_be_visible()
    router = node(page, "router", "r1").get_attribute("data-id")
    web = node(page, "network", "web").get_attribute("data-id")
    expect(page.locator(f'path.e-interface[data-from="{router}"][data-to="{web}"]')).to_have_count(
        1
    )
    expect(node(page, "port", "vm1")).to_have_attribute("data-status", "DOWN")
    node(page, "port", "vm1").click()
    expect(page.locator(".topo-details h2")).to_have_text("port vm1")
    # keyboard: Enter on a focused node selects it
    node(page, "router", "r1").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".topo-details h2")).to_have_text("router r1")
    # live: a network created elsewhere appears without a reload
    server.api("alice", "POST", "/v2.0/networks", {"network": {"name": "late"}})
    expect(node(page, "network", "late")).to_be_visible(timeout=LIVE)
    shot(page, "topology")


def _trace(page: Any, server: Server) -> None:
    ports = server.api("alice", "GET", "/v2.0/ports?name=vm2")["ports"]
    vm2_ip = ports[0]["fixed_ips"][0]["ip_address"]
    go(page, "trace", "Trace a packet")
    option = page.locator("#trace-port option").filter(has_text=re.compile(r"^vm1 "))
    page.get_by_label("Source port").select_option(value=option.get_attribute("value"))
    page.get_by_label("Packet (microflow)").fill(f"ip4.dst == {vm2_ip} && tcp.dst == 22")
    page.get_by_role("button", name="Trace", exact=True).click()
    expect(page.locator("#trace-verdict")).to_contain_text("output to vm2")
    expect(page.locator(".path .deliver")).to_have_text("✓ vm2")
    expect(page.locator('.hop-detail[data-datapath="web"] .stage').first).to_contain_text(
        "ls_in_port_sec_l2"
    )
    page.get_by_label("Packet (microflow)").fill(f"ip4.src == 10.9.9.9 && ip4.dst == {vm2_ip}")
    page.get_by_role("button", name="Trace", exact=True).click()
    expect(page.locator("#trace-verdict")).to_contain_text("drop (port_security_ip)")
    expect(page.locator(".stages li.drop")).to_contain_text("ls_in_port_sec_ip")
    expect(page.locator(".stage .prov").first).to_contain_text("port_security")
    shot(page, "trace")
    page.get_by_label("Packet (microflow)").fill("bogus ==")
    page.get_by_role("button", name="Trace", exact=True).click()
    expect(page.locator(".trace-form .form-error")).to_contain_text("unknown symbol 'bogus'")


def test_tenant_builds_a_network_through_the_forms(
    watched: Watched, server: Server, public: dict[str, Any]
) -> None:
    page = watched.page
    page.goto(server.base + "/ui/")
    shot(page, "login")
    login(page, server, "alice")
    go(page, "networks", "Networks")
    create(page, "Create network", {"Name": "web"}, {})
    expect(page.locator('tr[data-name="web"]')).to_be_visible()
    expect(page.locator('tr[data-name="public"]')).to_be_visible()
    _subnet_forms(page, server)
    _router_forms(page)
    _ports(page)
    _topology(page, server)
    _trace(page, server)
    go(page, "networks", "Networks")
    expect(page.locator('tr[data-name="late"]')).to_be_visible()
    shot(page, "networks")
    go(page, "observability", "Observability")
    # counters appear once a host reports them (another test's agent may have by now)
    expect(page.locator("#counters-h")).to_have_text("Counters and drops")
    expect(page.locator("#gen-nb .card-value")).to_have_text(re.compile(r"^\d+$"))
    shot(page, "observability")
    assert_clean(watched)


def _bob_objects(server: Server) -> dict[str, str]:
    net = server.api("bob", "POST", "/v2.0/networks", {"network": {"name": "bobnet"}})["network"]
    body = {"subnet": {"network_id": net["id"], "cidr": "10.66.0.0/24", "name": "bobsub"}}
    server.api("bob", "POST", "/v2.0/subnets", body)
    port = server.api(
        "bob", "POST", "/v2.0/ports", {"port": {"network_id": net["id"], "name": "bobvm"}}
    )
    return {"network": net["id"], "port": port["port"]["id"]}


def test_a_tenant_never_sees_another_tenants_objects(
    watched: Watched, server: Server, public: dict[str, Any]
) -> None:
    bob = _bob_objects(server)
    server.api("alice", "POST", "/v2.0/networks", {"network": {"name": "alicenet"}})
    page = watched.page
    login(page, server, "alice")
    expect(node(page, "network", "alicenet")).to_be_visible()
    pages = [
        ("networks", "Networks"),
        ("subnets", "Subnets"),
        ("ports", "Ports"),
        ("trace", "Trace a packet"),
        ("observability", "Observability"),
        ("topology", "Topology"),
    ]
    for route, heading in pages:
        go(page, route, heading)
        page.wait_for_load_state("networkidle")
        html = page.content()
        for secret in ("bobnet", "bobsub", "bobvm", bob["network"], bob["port"]):
            assert secret not in html, f"{secret} shown on {route}"
    # nor in anything the API sent this page
    for response in watched.responses:
        if response.url.startswith(server.base + "/v2") and response.request.method == "GET":
            text = json.dumps(response.json()) if response.ok else response.text()
            assert "bobnet" not in text, response.url
            assert bob["network"] not in text, response.url
    # a direct link to bob's network gets the API's 404, verbatim
    page.goto(f"{server.base}/ui/#/networks/{bob['network']}")
    expect(page.locator(".form-error")).to_have_text(
        f"Network {bob['network']} could not be found."
    )
    assert_clean(watched)


def test_bob_sees_his_network_and_not_alices(
    watched: Watched, server: Server, public: dict[str, Any]
) -> None:
    page = watched.page
    login(page, server, "bob")
    if not server.api("bob", "GET", "/v2.0/networks?name=bobnet")["networks"]:
        _bob_objects(server)
    expect(node(page, "network", "bobnet")).to_be_visible()
    expect(node(page, "external", "public")).to_be_visible()
    assert node(page, "network", "web").count() == 0
    assert node(page, "network", "alicenet").count() == 0
    assert_clean(watched)


def _agent_reports(server: Server, port_id: str, up: bool) -> None:
    """What the host agent of hv1 would say: chassis, port state, installed generation."""
    host = {"X-Auth-Token": server.tokens["host"]}
    sb = server.base + "/v2.0/netvirt/sb"
    chassis = {"name": "hv1", "encap": "geneve", "ip": "192.0.2.11"}
    assert httpx.post(sb + "/chassis", json=chassis, headers=host).status_code == 204
    report = {"chassis": "hv1", "up": up}
    assert httpx.put(f"{sb}/ports/{port_id}", json=report, headers=host).status_code == 204
    status = server.api("admin", "GET", "/v2.0/netvirt/status")["status"]
    generation = max(status["nb_generation"], status["compiled_generation"])
    body = {"chassis": "hv1", "generation": generation}
    assert httpx.post(sb + "/installed", json=body, headers=host).status_code == 204


@contextlib.contextmanager
def _heartbeat(server: Server, port_id: str) -> Iterator[None]:
    """hv1's stats report every second, as its agent sends them, while the test runs."""
    host = {"X-Auth-Token": server.tokens["host"]}
    port = {"rx_packets": 1234, "rx_bytes": 98765, "tx_packets": 42, "tx_bytes": 4200}
    stats = {
        "ports": {"tap-ops": port | {"drops": {"acl_deny": 3}}},
        "drops": {"acl_deny": 3},
        "bound": {"tap-ops": port_id},
    }
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            body = {"chassis": "hv1", "stats": stats}
            httpx.post(server.base + "/v2.0/netvirt/sb/stats", json=body, headers=host)
            stop.wait(1.0)

    thread = threading.Thread(target=beat, name="nvq-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def test_admin_sees_hosts_and_live_port_status(
    watched: Watched, server: Server, public: dict[str, Any]
) -> None:
    net = server.api("alice", "POST", "/v2.0/networks", {"network": {"name": "ops"}})["network"]
    server.api(
        "alice",
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": net["id"], "cidr": "10.9.0.0/24"}},
    )
    port = server.api(
        "alice", "POST", "/v2.0/ports", {"port": {"network_id": net["id"], "name": "opsvm"}}
    )
    _agent_reports(server, port["port"]["id"], up=True)
    with _heartbeat(server, port["port"]["id"]):
        _admin_watches_hosts(watched, server, port["port"]["id"])


def _admin_watches_hosts(watched: Watched, server: Server, port_id: str) -> None:
    page = watched.page
    login(page, server, "admin")
    host = page.locator('svg.topology .host[data-host="hv1"]')
    expect(host).to_be_visible()
    expect(host).to_have_attribute("data-status", "UP")
    vm = node(page, "port", "opsvm")
    expect(vm).to_have_attribute("data-status", "ACTIVE")
    expect(vm).to_have_class(re.compile(r"\bst-up\b"))
    shot(page, "topology-admin")
    # the agent reports the port down: the colour follows without a reload
    _agent_reports(server, port_id, up=False)
    expect(vm).to_have_attribute("data-status", "DOWN", timeout=LIVE)
    expect(vm).to_have_class(re.compile(r"\bst-down\b"))
    go(page, "observability", "Observability")
    row = page.locator('section[aria-labelledby="hosts-h"] tr[data-name="hv1"]')
    expect(row).to_contain_text("UP")
    counters = page.locator('section[aria-labelledby="counters-h"]')
    expect(counters.locator('tr[data-name="hv1"]')).to_contain_text("acl_deny 3")
    expect(counters.locator('tr[data-name="opsvm"]')).to_contain_text("tap-ops")
    expect(counters.locator('tr[data-name="opsvm"]')).to_contain_text("1,234")
    expect(page.locator(".events")).to_contain_text("watching started")
    assert_clean(watched)


def test_phone_width(watched: Watched, server: Server, public: dict[str, Any]) -> None:
    page = watched.page
    page.set_viewport_size(PHONE)
    login(page, server, "alice")
    expect(page.locator("#nav")).to_be_hidden()
    menu = page.get_by_role("button", name="Menu")
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    page.locator('#nav a[data-route="topology"]').click()
    expect(page.locator("#nav")).to_be_hidden()
    expect(
        node(page, "network", "web").or_(node(page, "network", "alicenet")).first
    ).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the page itself must not scroll sideways"
    shot(page, "phone-topology")
    assert_clean(watched)


def _carol_scene(server: Server, public: dict[str, Any]) -> dict[str, Any]:
    net = server.api("carol", "POST", "/v2.0/networks", {"network": {"name": "svc"}})["network"]
    body = {"subnet": {"network_id": net["id"], "cidr": "10.20.0.0/24", "name": "svc-v4"}}
    subnet = server.api("carol", "POST", "/v2.0/subnets", body)["subnet"]
    port = server.api(
        "carol", "POST", "/v2.0/ports", {"port": {"network_id": net["id"], "name": "app"}}
    )
    gateway = {"network_id": public["id"]}
    router = server.api(
        "carol",
        "POST",
        "/v2.0/routers",
        {"router": {"name": "rc", "external_gateway_info": gateway}},
    )["router"]
    attach = {"subnet_id": subnet["id"]}
    server.api("carol", "PUT", f"/v2.0/routers/{router['id']}/add_router_interface", attach)
    return {"port": port["port"], "router": router}


def _add(page: Any, button: str, fill: dict[str, str], select: dict[str, str]) -> None:
    page.get_by_role("button", name=button).click()
    form = dialog(page)
    for field, value in fill.items():
        form.get_by_label(field).fill(value)
    for field, option in select.items():
        form.get_by_label(field).select_option(label=option)
    form.get_by_role("button", name="Add").click()
    expect(form).to_have_count(0)


def _security_group(page: Any, server: Server, port_id: str) -> None:
    go(page, "security-groups", "Security groups")
    create(page, "Create security group", {"Name": "websg"}, {})
    page.locator('tr[data-name="websg"] a').click()
    expect(page.locator("h1")).to_have_text("Security group websg")
    page.get_by_role("button", name="Add rule").click()
    form = dialog(page)
    form.get_by_label("Protocol").fill("tcp")
    form.get_by_label("Port from").fill("90")
    form.get_by_label("Port to").fill("80")
    form.get_by_role("button", name="Add").click()
    expect(form.locator('[data-name="port_range_max"] .field-error')).to_contain_text("lower")
    form.get_by_label("Port from").fill("80")
    form.get_by_role("button", name="Add").click()
    expect(page.locator('tr[data-name="rule ingress IPv4 tcp 80 —"]')).to_be_visible()
    go(page, "ports", "Ports")
    page.get_by_role("button", name="Edit port app").click()
    dialog(page).get_by_label("websg").check()
    dialog(page).get_by_role("button", name="Save").click()
    expect(dialog(page)).to_have_count(0)
    groups = server.api("carol", "GET", f"/v2.0/ports/{port_id}")["port"]["security_groups"]
    assert len(groups) == 2


def _floating_ip_and_qos(page: Any, app_ip: str) -> None:
    go(page, "floatingips", "Floating IPs")
    create(page, "Create floating IP", {}, {"External network": "public"})
    row = page.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("not associated")
    page.get_by_role("button", name=re.compile("^Edit floating IP")).click()
    dialog(page).get_by_label("Port").select_option(label=f"app ({app_ip})")
    dialog(page).get_by_role("button", name="Save").click()
    expect(row).to_contain_text(app_ip)
    go(page, "qos", "QoS policies")
    create(page, "Create QoS policy", {"Name": "gold"}, {})
    page.locator('tr[data-name="gold"] a').click()
    _add(page, "Add bandwidth limit", {"Max kbit/s": "1000"}, {})
    expect(
        page.locator('tr[data-name="bandwidth limit rule egress 1000 kbit/s (burst 0)"]')
    ).to_be_visible()
    page.get_by_role("button", name="Delete", exact=True).click()
    dialog(page).get_by_role("button", name="Delete").click()
    expect(page.locator("h1")).to_have_text("QoS policies")
    expect(page.locator('tr[data-name="gold"]')).to_have_count(0)


def _load_balancer(page: Any, app_ip: str) -> None:
    go(page, "loadbalancers", "Load balancers")
    create(page, "Create load balancer", {"Name": "lb1"}, {"VIP subnet": "svc-v4 (10.20.0.0/24)"})
    page.locator('tr[data-name="lb1"] a').click()
    expect(page.locator("h1")).to_have_text("Load balancer lb1")
    _add(page, "Add listener", {"Name": "http", "Port": "80"}, {})
    expect(page.locator('tr[data-name="listener http"]')).to_be_visible()
    _add(page, "Add pool", {"Name": "web"}, {"Listener": "http"})
    expect(page.locator('tr[data-name="pool web"]')).to_be_visible()
    _add(page, "Add member to web", {"Address": app_ip, "Port": "8080"}, {})
    members = page.locator('section[aria-label="Members of pool web"]')
    expect(members.locator(f'tr[data-name="member {app_ip}:8080"]')).to_contain_text("NO_MONITOR")
    go(page, "topology", "Topology")
    lb = node(page, "lb", "lb1")
    expect(lb).to_be_visible()
    app = node(page, "port", "app").get_attribute("data-id")
    member = page.locator(
        f'path.e-member[data-from="{lb.get_attribute("data-id")}"][data-to="{app}"]'
    )
    expect(member).to_have_count(1)


def _router_routes(page: Any) -> None:
    go(page, "routers", "Routers")
    page.get_by_role("button", name="Edit router rc").click()
    dialog(page).get_by_label("Extra routes").fill("192.168.0.0/16 via 10.20.0.254")
    dialog(page).get_by_role("button", name="Save").click()
    expect(dialog(page)).to_have_count(0)
    expect(page.locator('tr[data-name="rc"]')).to_contain_text("1")
    page.locator('tr[data-name="rc"] a').click()
    expect(page.locator('tr[data-name="route 192.168.0.0/16 via 10.20.0.254"]')).to_be_visible()


def test_every_resource_form(watched: Watched, server: Server, public: dict[str, Any]) -> None:
    """Security groups and rules, floating IPs, QoS, load balancers, router routes."""
    scene = _carol_scene(server, public)
    page = watched.page
    login(page, server, "carol")
    _security_group(page, server, scene["port"]["id"])
    app_ip = scene["port"]["fixed_ips"][0]["ip_address"]
    _floating_ip_and_qos(page, app_ip)
    _load_balancer(page, app_ip)
    _router_routes(page)
    assert_clean(watched)


def test_names_are_shown_as_text_never_as_markup(
    watched: Watched, server: Server, public: dict[str, Any]
) -> None:
    evil = '<img src=x onerror="window.pwned=1">'
    server.api("carol", "POST", "/v2.0/networks", {"network": {"name": evil}})
    page = watched.page
    login(page, server, "carol")
    expect(page.locator(f"svg.topology .node[data-name='{evil}']")).to_have_count(1)
    go(page, "networks", "Networks")
    expect(page.locator("tbody")).to_contain_text(evil)
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.pwned") is None
    assert_clean(watched)
