"""GET /result/{task_id}/artifacts/{name}: one file the task left in ./out/, as it left it.

Served only to the task's owner (anyone else gets the 404 of an unknown task), with the type
sniffed when it was stored. A program chooses its artifacts' bytes, so nothing it writes may
run in the service's origin: ``X-Content-Type-Options: nosniff`` and a sandboxing
``Content-Security-Policy`` on every artifact, and SVG and HTML, which could run script even
so when opened directly, only as attachments.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

import falcon

from taskservice.content_types import served_as_attachment
from taskservice.http_errors import NotFound, ResultDeleted
from taskservice.resources.tasks import TASK_NOT_FOUND
from taskservice.store.task_files import ArtifactLookup, ArtifactStore
from taskservice.task_files import name_problem

NO_SUCH_ARTIFACT = "This task left no file of that name in out/."
ARTIFACTS_DELETED = (
    "This task's code, input, output and files were deleted, after the retention period or at"
    " your request."
)
# A browser that opens an artifact directly gets a document that may run nothing.
ARTIFACT_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


def content_disposition(name: str, attachment: bool) -> str:
    """The header for ``name``: an ASCII fallback and the UTF-8 name (RFC 6266, RFC 8187)."""
    base = name.rsplit("/", 1)[-1]
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in base
    )
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(base, safe='')}"


class ArtifactResource:
    auth_required = True

    def __init__(self, artifacts: ArtifactStore):
        self._artifacts = artifacts

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID, name: str
    ) -> None:
        if name_problem(name) is not None:
            raise NotFound(NO_SUCH_ARTIFACT)  # no artifact can have such a name
        found, artifact = self._artifacts.get_for_owner(task_id, req.context.user_id, name)
        if found is ArtifactLookup.NO_TASK:
            raise NotFound(TASK_NOT_FOUND)
        if found is ArtifactLookup.DELETED:
            raise ResultDeleted(ARTIFACTS_DELETED)
        if found is ArtifactLookup.NO_ARTIFACT or artifact is None:
            raise NotFound(NO_SUCH_ARTIFACT)
        info = artifact.info
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Content-Security-Policy", ARTIFACT_CSP)
        # Only the owner may read it, and it never changes: revalidate by its hash.
        resp.cache_control = ["private", "no-cache"]
        resp.etag = info.sha256
        resp.set_header(
            "Content-Disposition",
            content_disposition(info.name, served_as_attachment(info.content_type)),
        )
        if any(tag == info.sha256 or tag == "*" for tag in req.if_none_match or ()):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = info.content_type
        resp.data = artifact.content
