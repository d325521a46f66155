"""The body budget (body_budget.py) on the request path: a large body takes its share before
anything reads it, and gives it back once its copies are gone.

The share goes back at the response's end at the latest, whatever happened (errors too). A
request that waits for its task after storing it (``POST /task?wait=``, Judge0's ``wait=true``)
gives it back earlier, before the wait: its body's copies are dropped by then (``body_done``),
and holding the share through a wait of up to MAX_WAIT_SECONDS would refuse other bodies for
memory nobody uses. Not earlier than that: the parsed body, its decoded files and the
database's parameters all live until the task is stored, and that is the peak the share stands
for. Event streams carry no body, so never hold a share.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import falcon

from taskservice import http_errors
from taskservice.body_budget import BodyBudget
from taskservice.body_sizes import SMALL_BODY_BYTES, reserved_bytes
from taskservice.metrics import NO_METRICS, NoMetrics
from taskservice.metrics.api import route_label

# A refused client may try again soon: shares are held for the fraction of a second a body
# takes to be parsed and stored.
RETRY_AFTER_SECONDS = 2
# A share is taken before the body arrives, so a client that sends the headers and then stops
# would hold it for as long as it keeps the connection (gunicorn reads bodies with no deadline):
# each read of a large body's socket may wait this long, then the request ends in a 408 and the
# share goes back. Behind the deployment's nginx, which buffers bodies, it never comes into play.
BODY_IDLE_SECONDS = 10
# Trimming walks every arena under its lock: worth it for the bodies that made the heap grow.
TRIM_FROM_BYTES = 8 * 1024 * 1024


class BodyBudgetMiddleware:
    """After the body limit, authentication and rate limits: only a request that may send its
    body waits for a share."""

    def __init__(self, budget: BodyBudget, wait_seconds: float, metrics: NoMetrics = NO_METRICS):
        self._budget = budget
        self._wait_seconds = wait_seconds
        self._metrics = metrics

    def process_resource(self, req: falcon.Request, resp, resource, params) -> None:
        length = req.content_length
        if resource is None or length is None or length <= SMALL_BODY_BYTES:
            return
        reservation = self._budget.reserve(reserved_bytes(length), self._wait_seconds)
        if reservation is None:
            self._metrics.body_budget_refused(route_label(req.uri_template))
            raise http_errors.Unavailable(
                "The server is busy with other large request bodies; send this one again shortly.",
                retry_after=RETRY_AFTER_SECONDS,
            )
        req.context.body_reservation = reservation
        _set_idle_deadline(req)

    def process_response(self, req: falcon.Request, resp, resource, succeeded: bool) -> None:
        release(req)
        _restore_socket(req)


def _set_idle_deadline(req: falcon.Request) -> None:
    """gunicorn's socket gets a timeout while the body is read; other servers: left alone."""
    sock = req.env.get("gunicorn.socket")
    if sock is None:
        return
    try:
        req.context.body_socket_timeout = sock.gettimeout()
        sock.settimeout(BODY_IDLE_SECONDS)
    except OSError:
        return  # the client is gone: the body's read says so
    req.context.body_socket = sock
    req.context.body_idle_seconds = BODY_IDLE_SECONDS


def _restore_socket(req: falcon.Request) -> None:
    sock = getattr(req.context, "body_socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # closed meanwhile
            sock.settimeout(req.context.body_socket_timeout)


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release(req: falcon.Request) -> None:
    reservation = getattr(req.context, "body_reservation", None)
    if reservation is None or not reservation.release():
        return
    if reservation.amount < TRIM_FROM_BYTES:
        return
    # glibc keeps what was freed in its arenas for their next use, so the process's memory
    # would follow the bodies' high-water marks rather than the budget's shares in use: with
    # two arenas (malloc_arenas.py), 12 clients' bodies grew it by 96 MiB without this and by
    # 52 with it, under a 64 MiB budget (bench/body_budget.py). Paid once per share of at
    # least TRIM_FROM_BYTES (a trim took about 10 ms on a fragmented 300 MB heap).
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def body_done(req: falcon.Request) -> None:
    """The caller holds no more of the body (its locals are gone): the parsed media, which
    Falcon keeps for the request's life, is emptied, and the body's share given back."""
    media = req.get_media(default_when_empty=None)
    if isinstance(media, dict | list):
        media.clear()
    release(req)
