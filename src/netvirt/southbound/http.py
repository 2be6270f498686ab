"""The agent's side of the southbound API: :class:`SBSource` over HTTP.

``HttpSB(url, token)`` speaks to ``/v2.0/netvirt/sb`` of ``netvirt serve``
with a host token. Failures come in two kinds the agent treats differently:

* :class:`SBDisconnected` — the server could not be reached or answered
  badly: connection refused or reset, timeouts, 5xx, a document that does not
  decode. The link (or the server's memory) can no longer be trusted: the
  agent backs off, then resyncs from a snapshot and registers again.
* :class:`SBRejected` — the server understood and refused (4xx: bad token,
  host credentials missing, unknown port, invalid body). Retrying the same
  request will not help; the message says why, as the server put it.

A long-poll's read timeout is the poll's own timeout plus a margin, so a
silent server is noticed; the server caps one poll at 60 seconds.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from netvirt.southbound import codec
from netvirt.southbound.model import Chassis, SBState
from netvirt.southbound.source import SBDelta, SBSource

PREFIX = "/v2.0/netvirt/sb"
MAX_POLL = 60.0
POLL_MARGIN = 10.0
SNAPSHOT_TIMEOUT = 300.0


class SBError(Exception):
    """Any failure talking to the southbound service."""


class SBDisconnected(SBError):
    """The service is unreachable or misbehaving: resync once it is back."""


class SBRejected(SBError):
    """The service refused the request (4xx)."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message


def _error_of(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()["NeutronError"]
        return str(body["type"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        return "HTTPError", resp.text[:200] or resp.reason_phrase


class HttpSB:
    """:class:`~netvirt.southbound.source.SBSource` over the southbound REST API.

    One ``httpx.Client`` (thread-safe) serves every call, so an agent may
    long-poll on one thread and report from another.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        chassis: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # ask for this chassis' view: only the flows of datapaths it needs
        self.view = {"chassis": chassis} if chassis else {}
        self._http = httpx.Client(
            base_url=self.url,
            headers={"X-Auth-Token": token},
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpSB:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        try:
            resp = self._http.request(
                method,
                PREFIX + path,
                json=body,
                params=params,
                timeout=httpx.Timeout(timeout or self.timeout),
            )
        except httpx.TransportError as err:
            raise SBDisconnected(f"{method} {self.url}{PREFIX}{path}: {err!r}") from err
        if resp.status_code >= 500:
            type_, message = _error_of(resp)
            raise SBDisconnected(f"{method} {path}: {resp.status_code} {type_}: {message}")
        if resp.status_code >= 400:
            raise SBRejected(resp.status_code, *_error_of(resp))
        return resp

    @staticmethod
    def _document(resp: httpx.Response) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError as err:
            raise SBDisconnected(f"the SB service sent a body that is not JSON: {err}") from err
        if not isinstance(data, dict):
            raise SBDisconnected("the SB service sent a JSON document that is not an object")
        return data

    # ------------------------------------------------------------------ SBSource

    def snapshot(self) -> SBState:
        # a whole state is large at scale (megabytes at 10k ports): giving up after the
        # short timeout meant asking again and again, each time for a fresh encoding
        timeout = max(self.timeout, SNAPSHOT_TIMEOUT)
        resp = self._request("GET", "/snapshot", params=self.view or None, timeout=timeout)
        data = self._document(resp)
        try:
            return codec.decode_state(data)
        except codec.CodecError as err:
            raise SBDisconnected(f"bad SB snapshot: {err}") from err

    def changes(self, since: int, timeout: float) -> SBDelta | SBState | None:
        wait = min(max(timeout, 0.0), MAX_POLL)
        params = {"since": since, "timeout": wait, **self.view}
        resp = self._request("GET", "/changes", params=params, timeout=wait + POLL_MARGIN)
        if resp.status_code == 204:
            return None
        data = self._document(resp)
        try:
            return codec.decode(data)
        except codec.CodecError as err:
            raise SBDisconnected(f"bad SB change: {err}") from err

    def register_chassis(self, chassis: Chassis) -> None:
        body = {"name": chassis.name, "encap": chassis.encap, "ip": chassis.ip}
        self._request("POST", "/chassis", body=body)

    def report_port(self, port: str, chassis: str, up: bool) -> None:
        body = {"chassis": chassis, "up": up}
        self._request("PUT", f"/ports/{quote(port, safe='')}", body=body)

    def report_ports(self, ports: list[tuple[str, bool]], chassis: str) -> None:
        """Many port reports in one request (unknown ports are skipped by the server)."""
        body = {"chassis": chassis, "ports": [{"port": p, "up": up} for p, up in ports]}
        self._request("POST", "/ports", body=body)

    def report_installed(self, chassis: str, generation: int) -> None:
        body = {"chassis": chassis, "generation": generation}
        self._request("POST", "/installed", body=body)

    def report_stats(self, chassis: str, stats: dict[str, Any]) -> None:
        self._request("POST", "/stats", body={"chassis": chassis, "stats": stats})

    def report_member_health(self, chassis: str, member_id: str, status: str) -> None:
        body = {"chassis": chassis, "status": status}
        self._request("PUT", f"/members/{quote(member_id, safe='')}/health", body=body)


if TYPE_CHECKING:

    def _is_a_source(client: HttpSB) -> SBSource:
        return client  # mypy checks the protocol here
