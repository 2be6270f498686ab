"""Domain errors of the management plane, shaped like Neutron's.

Neutron reports every failure as ``{"NeutronError": {"type", "message",
"detail"}}`` with an HTTP status. Services raise these exceptions; the API
layer turns them into that body, so the store never knows about HTTP and the
CLI and tests can match on ``type`` exactly as a Neutron client would.
"""

from __future__ import annotations


class NeutronError(Exception):
    """Base class: an HTTP status, a Neutron exception type name and a message."""

    status: int = 500
    default_type: str = "NeutronError"

    def __init__(self, message: str, *, type: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.type = type or self.default_type
        self.detail = detail

    def body(self) -> dict[str, dict[str, str]]:
        return {"NeutronError": {"type": self.type, "message": self.message, "detail": self.detail}}


class BadRequest(NeutronError):
    status = 400
    default_type = "HTTPBadRequest"


class InvalidInput(BadRequest):
    """A field failed validation: the message names the field and the reason."""

    default_type = "InvalidInput"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"Invalid input for {field}. Reason: {reason}.")
        self.field = field


class NotAuthenticated(NeutronError):
    status = 401
    default_type = "HTTPUnauthorized"


class Forbidden(NeutronError):
    status = 403
    default_type = "PolicyNotAuthorized"


class NotFound(NeutronError):
    status = 404
    default_type = "NotFound"


class Conflict(NeutronError):
    status = 409
    default_type = "Conflict"


class PreconditionFailed(NeutronError):
    status = 412
    default_type = "RevisionNumberConstraintFailed"


class PayloadTooLarge(NeutronError):
    status = 413
    default_type = "RequestEntityTooLarge"


def not_found(kind: str, ident: str) -> NotFound:
    """The 404 Neutron gives for a missing (or invisible) object of ``kind``."""
    pretty = kind.replace("_", " ")
    type_name = "".join(part.capitalize() for part in kind.split("_")) + "NotFound"
    return NotFound(f"{pretty.capitalize()} {ident} could not be found.", type=type_name)
