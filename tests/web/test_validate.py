"""validate.js agrees with Python's ``ipaddress`` (the API's own parser) on what an
address and a CIDR are, and words the host-bits error as the API does."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from web.conftest import Server

pytest.importorskip("playwright.sync_api")

CHECK = """async (cases) => {
    const v = await import('/ui/static/validate.js');
    return {
      cidr: cases.cidrs.map((c) => v.cidrError(c)),
      parsed: cases.texts.map((t) => v.parseIP(t) !== null),
      formatted: cases.v6.map((t) => v.formatIP(6, v.parseIPv6(t))),
      inside: cases.pairs.map(([ip, net]) => v.ipInCIDR(ip, net)),
    };
}"""

v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
v6 = st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n))
v6_text = st.tuples(v6, st.booleans()).map(lambda t: t[0].exploded if t[1] else str(t[0]))
cidr4 = st.tuples(v4, st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}")
cidr6 = st.tuples(v6_text, st.integers(0, 128)).map(lambda t: f"{t[0]}/{t[1]}")
junk = st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45)


def _expected_cidr(text: str) -> str | None:
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        net = ipaddress.ip_network(text, strict=False)
        return f"'{text}' isn't a recommended CIDR, use '{net}' instead."
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def js(browser: Any, server: Server) -> Iterator[Any]:
    page = browser.new_page()
    page.goto(server.base + "/ui/")
    yield page
    page.close()


@settings(max_examples=25, deadline=None)
@given(
    cidrs=st.lists(st.one_of(cidr4, cidr6), max_size=30),
    texts=st.lists(st.one_of(junk, v4, v6_text), max_size=30),
    v6s=st.lists(v6_text, max_size=20),
    pairs=st.lists(st.one_of(st.tuples(v4, cidr4), st.tuples(v6_text, cidr6)), max_size=20),
)
def test_js_address_checks_agree_with_python(
    js: Any, cidrs: list[str], texts: list[str], v6s: list[str], pairs: list[tuple[str, str]]
) -> None:
    got = js.evaluate(CHECK, {"cidrs": cidrs, "texts": texts, "v6": v6s, "pairs": pairs})
    assert got["cidr"] == [_expected_cidr(c) for c in cidrs]
    assert got["parsed"] == [_is_ip(t) for t in texts]
    assert got["formatted"] == [str(ipaddress.IPv6Address(t)) for t in v6s]
    inside = [
        ipaddress.ip_address(ip) in ipaddress.ip_network(net, strict=False) for ip, net in pairs
    ]
    assert got["inside"] == inside
