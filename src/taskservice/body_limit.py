"""The request body's size limit: each resource's own (``max_body_bytes``), or the default."""

from __future__ import annotations

import falcon

from taskservice import http_errors

DEFAULT_BODY_LIMIT = 64 * 1024


class BodyLimitMiddleware:
    """Refuses a body larger than the resource accepts before anything reads it."""

    def process_resource(self, req: falcon.Request, resp, resource, params) -> None:
        limit = getattr(resource, "max_body_bytes", DEFAULT_BODY_LIMIT)
        if req.content_length is not None and req.content_length > limit:
            raise http_errors.PayloadTooLarge(f"The request body is over {limit} bytes.")
        if req.content_length is None and req.get_header("Transfer-Encoding"):
            # Falcon reads a body of unknown length as empty; say so rather than answer as if
            # the client had sent nothing. (nginx in front turns chunked bodies into sized ones.)
            raise falcon.HTTPLengthRequired(
                title="Length required",
                description="Send the request body with a Content-Length header, not chunked.",
            )
