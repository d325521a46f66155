"""Errors: the domain's own, the HTTP ones with fixed titles, and the one JSON error shape.

Domain code (store, queue, services) raises the domain errors below; ``app.py`` maps them to HTTP
centrally, so responders stay thin and never build error responses by hand.
"""

from __future__ import annotations

import falcon


class DomainError(Exception):
    """Base for errors the HTTP layer knows how to explain to a client."""


class UsernameTaken(DomainError):
    pass


class InvalidCredentials(DomainError):
    pass


class IdempotencyKeyReused(DomainError):
    """The same Idempotency-Key came with a different request."""


class ServiceUnavailable(DomainError):
    """A backing service (database, broker) cannot be reached; the client may retry."""


class BrokerUnavailable(ServiceUnavailable):
    pass


class DatabaseUnavailable(ServiceUnavailable):
    pass


class InvalidRequest(falcon.HTTPBadRequest):
    def __init__(self, description: str):
        super().__init__(title="Invalid request", description=description)


class PayloadTooLarge(falcon.HTTPContentTooLarge):
    def __init__(self, description: str):
        super().__init__(title="Payload too large", description=description)


class Conflict(falcon.HTTPConflict):
    def __init__(self, description: str):
        super().__init__(title="Conflict", description=description)


class UnprocessableContent(falcon.HTTPUnprocessableEntity):
    def __init__(self, description: str):
        super().__init__(title="Unprocessable content", description=description)


class NotFound(falcon.HTTPNotFound):
    def __init__(self, description: str = "No such resource."):
        super().__init__(title="Not found", description=description)


class Unauthorized(falcon.HTTPUnauthorized):
    def __init__(self, description: str):
        super().__init__(
            title="Unauthorized", description=description, challenges=['Bearer realm="taskservice"']
        )


class Unavailable(falcon.HTTPServiceUnavailable):
    def __init__(self, description: str, retry_after: int = 5):
        super().__init__(
            title="Service unavailable", description=description, retry_after=retry_after
        )


class InternalError(falcon.HTTPInternalServerError):
    def __init__(self):
        super().__init__(
            title="Internal server error",
            description="The server failed to handle the request; it has been logged.",
        )


# Falcon's own errors (unknown route, wrong method, unreadable body) may come without a
# description; every error body the service sends has both fields.
_DEFAULT_DESCRIPTIONS = {
    400: "The request could not be understood.",
    404: "No such resource.",
    405: "This method is not allowed on this resource.",
    411: "A Content-Length header is required.",
    413: "The request body is too large.",
    415: "The request body must be JSON (Content-Type: application/json).",
    500: "The server failed to handle the request.",
}


def serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Every error, Falcon's own included, leaves as JSON ``{"title", "description"}``."""
    code = exc.status_code
    title = exc.title or falcon.code_to_http_status(code)
    description = exc.description or _DEFAULT_DESCRIPTIONS.get(code, title)
    resp.media = {"title": title, "description": description}
    resp.content_type = falcon.MEDIA_JSON
