"""The GUI's routes and assets, without a browser: what is served, with which
headers, that every asset ships in the package and that none reaches the Internet."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from netvirt.web import routes

WEB = Path(routes.__file__).parent
ROOT = Path(__file__).resolve().parents[2]
STATIC = sorted(p for p in (WEB / "static").iterdir() if p.is_file())
SHIPPED = [*STATIC, WEB / "templates" / "index.html"]
# XML namespace names are identifiers, never fetched; nothing else may name a URL.
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}


def test_page_is_served_with_a_strict_policy(client: TestClient) -> None:
    resp = client.get("/ui/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="static/app.js">' in resp.text


def test_ui_without_slash_redirects(client: TestClient) -> None:
    resp = client.get("/ui", follow_redirects=False)
    assert resp.status_code == 308
    assert resp.headers["location"] == "/ui/"


def test_root_still_answers_neutron_versions(client: TestClient) -> None:
    body = client.get("/").json()
    assert body["versions"][0]["id"] == "v2.0"


@pytest.mark.parametrize("asset", STATIC, ids=lambda p: p.name)
def test_every_asset_is_served_without_a_token(client: TestClient, asset: Path) -> None:
    resp = client.get(f"/ui/static/{asset.name}")
    assert resp.status_code == 200
    assert resp.content == asset.read_bytes()
    expected = routes.MEDIA_TYPES[asset.suffix]
    assert resp.headers["content-type"] == expected
    again = client.get(f"/ui/static/{asset.name}", headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    "name", ["missing.js", "..%2Froutes.py", "%2E%2E%2F__init__.py", "app.js%00.css", "routes.py"]
)
def test_only_packaged_assets_are_served(client: TestClient, name: str) -> None:
    assert client.get(f"/ui/static/{name}").status_code == 404


def test_nested_paths_do_not_reach_the_file_system(client: TestClient) -> None:
    assert client.get("/ui/static/../routes.py").status_code == 404
    assert client.get("/ui/static/../../api/app.py").status_code == 404


def test_ui_routes_stay_out_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/ui")]


@pytest.mark.parametrize("asset", SHIPPED, ids=lambda p: p.name)
def test_no_asset_names_an_external_url(asset: Path) -> None:
    text = asset.read_text()
    urls = set(re.findall(r"https?://[^\s\"'`)<>]+", text))
    assert not re.findall(r"[\"'(=]//[^\s\"'`)<>]+", text), "protocol-relative URL"
    assert urls <= ALLOWED_URLS, f"{asset.name} names {sorted(urls - ALLOWED_URLS)}"
    assert "@import" not in text
    assert "cdn" not in text.lower()


def test_api_calls_are_same_origin_paths() -> None:
    """Every fetched path starts with / (same origin): /v2.0/... or /v2/lbaas/..."""
    for asset in STATIC:
        if asset.suffix != ".js":
            continue
        for literal in re.findall(r"[\"`](/[^\"`]*)[\"`]", asset.read_text()):
            if literal.startswith("/v2"):
                assert re.match(r"^/v2(\.0)?/", literal), literal


def test_modules_import_only_shipped_modules() -> None:
    names = {asset.name for asset in STATIC}
    for asset in STATIC:
        if asset.suffix != ".js":
            continue
        for target in re.findall(r"from \"\./([^\"]+)\"", asset.read_text()):
            assert target in names, f"{asset.name} imports missing {target}"


def test_page_references_only_shipped_assets() -> None:
    html = (WEB / "templates" / "index.html").read_text()
    names = {asset.name for asset in STATIC}
    for ref in re.findall(r"(?:src|href)=\"static/([^\"]+)\"", html):
        assert ref in names


def test_package_data_ships_every_asset() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["netvirt"]
    for asset in SHIPPED:
        relative = asset.relative_to(WEB.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


def test_page_has_landmarks_and_live_regions() -> None:
    html = (WEB / "templates" / "index.html").read_text()
    assert '<html lang="en">' in html
    assert 'name="viewport"' in html
    assert '<main id="main"' in html
    assert '<nav id="nav" aria-label="Main"' in html
    assert 'role="alert"' in html
    assert 'aria-live="polite"' in html
    assert 'class="skip"' in html


def test_assets_are_read_once_and_cached() -> None:
    first = routes.assets()
    assert routes.assets() is first
    assert set(first) == {asset.name for asset in STATIC}
