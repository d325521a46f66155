import falcon

from taskservice.readiness import Readiness

# How soon a client (a load balancer) may ask again after a 503.
RETRY_AFTER_SECONDS = 5


class ReadyResource:
    """``GET /ready``: 200 with each backing service's state, or 503 naming what is away."""

    def __init__(self, readiness: Readiness):
        self._readiness = readiness

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        report = self._readiness.check()
        if report.ready:
            resp.media = report.parts
            return
        away = report.blocking
        resp.status = falcon.HTTP_503
        resp.retry_after = RETRY_AFTER_SECONDS
        # The error shape every error has, and the per-service map beside it.
        resp.media = {
            "title": "Service unavailable",
            "description": f"Not ready: {_names(away)} {'is' if len(away) == 1 else 'are'}"
            " not answering.",
            **report.parts,
        }


def _names(parts: list[str]) -> str:
    words = {"database": "the database", "broker": "the message broker"}
    return " and ".join(words.get(part, part) for part in parts)
