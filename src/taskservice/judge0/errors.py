"""Judge0's error shapes: ``{"error": "..."}`` for a bad request, ``{"field": ["message"]}``
for a submission that fails validation (422). Each body also carries this service's
``title`` and ``description``, as every error of the service does."""

from __future__ import annotations

import falcon


class Judge0Error(Exception):
    def __init__(self, status: str, body: dict, title: str, description: str):
        super().__init__(description)
        self.status = status
        self.body = {**body, "title": title, "description": description}


def bad_request(message: str) -> Judge0Error:
    return Judge0Error(falcon.HTTP_400, {"error": message}, "Invalid request", message)


def not_found(message: str) -> Judge0Error:
    return Judge0Error(falcon.HTTP_404, {"error": message}, "Not found", message)


def unprocessable(problems: dict[str, list[str]]) -> Judge0Error:
    description = "; ".join(
        f"{field} {message}" for field, messages in problems.items() for message in messages
    )
    return Judge0Error(falcon.HTTP_422, problems, "Unprocessable content", description)


def unprocessable_message(message: str) -> Judge0Error:
    return Judge0Error(falcon.HTTP_422, {"error": message}, "Unprocessable content", message)


def handle(req: falcon.Request, resp: falcon.Response, exc: Judge0Error, params) -> None:
    """The app's handler for ``Judge0Error``: the body as Judge0 has it, bypassing the
    service's error serializer (which knows only title and description)."""
    resp.status = exc.status
    resp.media = exc.body
