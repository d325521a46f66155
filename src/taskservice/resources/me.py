"""GET /me: the caller's account, the limits that apply to it, and what it uses of them;
POST /me/webhook-secret: a new secret for the caller's webhooks."""

from __future__ import annotations

from collections.abc import Mapping

import falcon

from taskservice.config import Config
from taskservice.http_errors import Unauthorized
from taskservice.services import WebhookSecrets
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.task_views import iso

# A valid token for an account that is gone: the token is no longer good.
ACCOUNT_GONE = "This account no longer exists."


def account_limits(config: Config) -> dict:
    """What one account may do, as a client needs to know it to stay within it."""
    return {
        "max_active_tasks": config.user_max_active_tasks,
        "rate_limit_submit": config.rate_limit_submit,
        "rate_limit_read": config.rate_limit_read,
        "result_retention_days": config.result_retention_days,
        "max_code_bytes": config.max_code_bytes,
        "max_stdin_bytes": config.max_stdin_bytes,
        "max_output_bytes": config.max_output_bytes,
        "timeout_seconds_max": config.task_timeout_max,
        "memory_mb_max": config.task_memory_max_mb,
        "max_files": config.max_files,
        "max_files_bytes": config.max_files_bytes,
        "max_artifacts": config.max_artifacts,
        "max_artifact_bytes": config.max_artifact_bytes,
    }


class MeResource:
    auth_required = True

    def __init__(
        self,
        users: UserStore,
        tasks: TaskStore,
        limits: Mapping[str, object],
        webhook_secrets: WebhookSecrets,
    ):
        self._users = users
        self._tasks = tasks
        self._limits = dict(limits)
        self._webhook_secrets = webhook_secrets

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user_id = req.context.user_id
        account = self._users.profile(user_id)
        if account is None:
            raise Unauthorized(ACCOUNT_GONE)
        secret = self._webhook_secrets.current(user_id, account["webhook_secret"])
        if secret is None:
            raise Unauthorized(ACCOUNT_GONE)
        resp.media = {
            "id": str(account["id"]),
            "username": account["username"],
            "created_at": iso(account["created_at"]),
            "limits": self._limits,
            "usage": self._tasks.usage(user_id),
            "webhook_secret": secret,
        }


class WebhookSecretResource:
    """A new webhook secret replaces the old one at once: later attempts are signed with it."""

    auth_required = True

    def __init__(self, webhook_secrets: WebhookSecrets):
        self._webhook_secrets = webhook_secrets

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        secret = self._webhook_secrets.rotate(req.context.user_id)
        if secret is None:
            raise Unauthorized(ACCOUNT_GONE)
        resp.media = {"webhook_secret": secret}
