"""Routes serving the GUI: ``/ui/`` (the page) and ``/ui/static/<asset>``.

The page and its assets are public (they hold no data); every piece of data
comes from the API with the user's token. Assets are read once from the
package and served from memory with an ETag; only files that exist in
``static/`` are ever served, so no request path can reach the file system.
A strict Content-Security-Policy makes the browser refuse anything not from
this origin, which keeps the "no asset from the Internet" promise enforced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

router = APIRouter(include_in_schema=False)

MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (cheap: 304 on a matching ETag), so an upgrade of
    # the package is never hidden behind a stale cached module.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _asset(name: str, body: bytes) -> Asset:
    suffix = name[name.rfind(".") :]
    digest = hashlib.sha256(body).hexdigest()[:32]
    return Asset(body, MEDIA_TYPES[suffix], f'"{digest}"')


@cache
def assets() -> dict[str, Asset]:
    """Every file of ``static/`` with a known type, by file name (read once)."""
    folder = resources.files("netvirt.web") / "static"
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in MEDIA_TYPES:
            found[entry.name] = _asset(entry.name, entry.read_bytes())
    return found


@cache
def index_page() -> Asset:
    page = resources.files("netvirt.web") / "templates" / "index.html"
    return _asset("index.html", page.read_bytes())


def _serve(asset: Asset, request: Request) -> Response:
    headers = SECURITY_HEADERS | {"ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.api_route("/ui", methods=["GET", "HEAD"])
def ui_redirect() -> RedirectResponse:
    """``/ui`` without the slash: relative asset URLs need the trailing one."""
    return RedirectResponse("/ui/", status_code=308)


@router.api_route("/ui/", methods=["GET", "HEAD"])
def ui_page(request: Request) -> Response:
    return _serve(index_page(), request)


@router.api_route("/ui/static/{name}", methods=["GET", "HEAD"])
def ui_asset(name: str, request: Request) -> Response:
    asset = assets().get(name)
    if asset is None:
        return Response(status_code=404, headers=SECURITY_HEADERS)
    return _serve(asset, request)
