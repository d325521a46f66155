"""POST/GET /api-keys and DELETE /api-keys/{id}: a user's long-lived keys."""

from __future__ import annotations

import uuid

import falcon

from taskservice import validation
from taskservice.api_keys import ApiKeys
from taskservice.http_errors import Forbidden, NotFound
from taskservice.store.api_keys import ApiKeyRow
from taskservice.task_views import iso


def key_body(row: ApiKeyRow) -> dict:
    return {
        "id": str(row.id),
        "name": row.name,
        "created_at": iso(row.created_at),
        "last_used_at": iso(row.last_used_at),
    }


class ApiKeysResource:
    auth_required = True

    def __init__(self, keys: ApiKeys):
        self._keys = keys

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.context.api_key_id is not None:
            # Otherwise a leaked key could mint another, and revoking it would not lock out
            # whoever holds it.
            raise Forbidden("API keys are made with a login token (POST /login), not a key.")
        name = validation.api_key_name(req.get_media())
        row, key = self._keys.create(req.context.user_id, name)
        resp.status = falcon.HTTP_201
        resp.location = f"/api-keys/{row.id}"
        resp.media = {**key_body(row), "key": key}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"api_keys": [key_body(row) for row in self._keys.list(req.context.user_id)]}


class ApiKeyResource:
    auth_required = True

    def __init__(self, keys: ApiKeys):
        self._keys = keys

    def on_delete(self, req: falcon.Request, resp: falcon.Response, key_id: uuid.UUID) -> None:
        if not self._keys.revoke(req.context.user_id, key_id):
            raise NotFound("No API key with this id belongs to you.")
        resp.status = falcon.HTTP_204
