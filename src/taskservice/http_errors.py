"""HTTP errors with fixed titles, the one JSON error shape, and the central mapping of domain
errors to them. Only the HTTP layer (app, resources, auth, validation) imports this module.
"""

from __future__ import annotations

import logging

import falcon

from taskservice import errors

log = logging.getLogger(__name__)


class InvalidRequest(falcon.HTTPBadRequest):
    def __init__(self, description: str):
        super().__init__(title="Invalid request", description=description)


class BodyTimeout(falcon.HTTPError):
    def __init__(self, idle_seconds: float):
        super().__init__(
            falcon.HTTP_408,
            title="Request timeout",
            description=f"The request body stopped arriving for {idle_seconds:g} s; send it again.",
        )


class PayloadTooLarge(falcon.HTTPContentTooLarge):
    def __init__(self, description: str):
        super().__init__(title="Payload too large", description=description)


class Conflict(falcon.HTTPConflict):
    def __init__(self, description: str):
        super().__init__(title="Conflict", description=description)


class UnprocessableContent(falcon.HTTPUnprocessableEntity):
    def __init__(self, description: str):
        super().__init__(title="Unprocessable content", description=description)


class Forbidden(falcon.HTTPForbidden):
    def __init__(self, description: str):
        super().__init__(title="Forbidden", description=description)


class NotFound(falcon.HTTPNotFound):
    def __init__(self, description: str = "No such resource."):
        super().__init__(title="Not found", description=description)


class ResultDeleted(falcon.HTTPGone):
    def __init__(self, description: str):
        super().__init__(title="Result deleted", description=description)


class Unauthorized(falcon.HTTPUnauthorized):
    def __init__(self, description: str):
        super().__init__(
            title="Unauthorized", description=description, challenges=['Bearer realm="taskservice"']
        )


class TooManyActiveTasks(falcon.HTTPTooManyRequests):
    def __init__(self, description: str, retry_after: int):
        super().__init__(
            title="Too many active tasks", description=description, retry_after=retry_after
        )


class Unavailable(falcon.HTTPServiceUnavailable):
    def __init__(self, description: str, retry_after: int = 5):
        super().__init__(
            title="Service unavailable", description=description, retry_after=retry_after
        )


class TooManyRequests(falcon.HTTPTooManyRequests):
    def __init__(self, description: str, retry_after: int, headers: dict[str, str] | None = None):
        super().__init__(
            title="Too many requests",
            description=description,
            retry_after=retry_after,
            headers=headers,
        )


class InternalError(falcon.HTTPInternalServerError):
    def __init__(self):
        super().__init__(
            title="Internal server error",
            description="The server failed to handle the request; it has been logged.",
        )


ACTIVE_TASKS_RETRY_AFTER_SECONDS = 5

# Falcon's own errors (unknown route, wrong method, unreadable body) may come without a
# description; every error body the service sends has both fields.
_DEFAULT_DESCRIPTIONS = {
    400: "The request could not be understood.",
    404: "No such resource.",
    405: "This method is not allowed on this resource.",
    410: "This resource was deleted.",
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


def map_domain_error(req, resp, exc, params):
    """The one place where a domain error becomes an HTTP answer."""
    if isinstance(exc, errors.UsernameTaken):
        raise Conflict("This username is taken.")
    if isinstance(exc, errors.InvalidCredentials):
        raise Unauthorized("Unknown username or wrong password.")
    if isinstance(exc, errors.IdempotencyKeyReused):
        raise UnprocessableContent(
            "This Idempotency-Key was used for a different request within the last 24 hours;"
            " use a new key for a new task."
        )
    if isinstance(exc, errors.TooManyActiveTasks):
        # No time can be promised (it depends on the user's own tasks); a few seconds is the
        # polling interval that does not waste the user's read budget.
        raise TooManyActiveTasks(
            f"You have {exc.limit} tasks queued or running, the most"
            " allowed at once. Submit again when one of them has finished.",
            retry_after=ACTIVE_TASKS_RETRY_AFTER_SECONDS,
        )
    if isinstance(exc, errors.TaskNotFinished):
        raise Conflict(
            f"The task is still {exc.status}: it was cancelled, and its data can be deleted once"
            " it has stopped. Repeat the request in a moment."
        )
    if isinstance(exc, errors.CallbackUrlRefused):
        raise InvalidRequest(f"'callback_url' is refused: {exc.reason}.")
    if isinstance(exc, errors.TooManyApiKeys):
        raise Conflict(f"You have {exc.limit} API keys, the most allowed; revoke one first.")
    if isinstance(exc, errors.ServiceUnavailable):
        # The details (hosts, users, driver messages) go to the log, not to the client.
        log.warning("%s %s: %s", req.method, req.path, exc)
        which = "message broker" if isinstance(exc, errors.BrokerUnavailable) else "database"
        raise Unavailable(f"The {which} is unavailable; nothing was changed. Try again shortly.")
    raise exc


def map_unexpected_error(req, resp, exc, params):
    if isinstance(exc, falcon.HTTPError):
        raise exc
    # A large body's read has an idle deadline (body_budget_middleware): the socket's timeout.
    idle = getattr(req.context, "body_idle_seconds", None)
    if idle is not None and isinstance(exc, TimeoutError):
        raise BodyTimeout(idle)
    log.exception("unhandled error on %s %s", req.method, req.path)
    raise InternalError()
