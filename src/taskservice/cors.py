"""CORS for the origins in CORS_ORIGINS, with Falcon's own middleware; none at all without them.

Tokens travel in the Authorization header, never in cookies, so no credentials are allowed
(``Access-Control-Allow-Credentials`` is never sent).
"""

from __future__ import annotations

from collections.abc import Iterable

import falcon

from taskservice import request_ids

# The request headers a page may send. Falcon's middleware answers a preflight by echoing
# whatever Access-Control-Request-Headers asked for, which would approve any header a page
# names; the API reads these three (and sends no others to any place where they matter), so
# the preflight approves exactly these and a browser refuses a request with any other.
ALLOWED_REQUEST_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")
# The response headers a page may read, beyond the CORS-safelisted ones.
EXPOSED_HEADERS = ("Location", "Retry-After", "RateLimit", "RateLimit-Policy", request_ids.HEADER)


class CorsMiddleware(falcon.CORSMiddleware):
    def __init__(self, origins: Iterable[str]):
        super().__init__(
            allow_origins=frozenset(origins),
            expose_headers=EXPOSED_HEADERS,
            allow_credentials=None,
        )

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        super().process_response(req, resp, resource, req_succeeded)
        # The answer depends on the Origin header: a shared cache must not give one origin's
        # answer (with its Access-Control-Allow-Origin, or without) to another.
        resp.append_header("Vary", "Origin")
        if resp.get_header("Access-Control-Allow-Headers") is not None:
            resp.set_header("Access-Control-Allow-Headers", ", ".join(ALLOWED_REQUEST_HEADERS))


def cors_middleware(origins: Iterable[str]) -> list[CorsMiddleware]:
    """The middleware for these origins, or none at all when there are none."""
    origins = tuple(origins)
    return [CorsMiddleware(origins)] if origins else []
