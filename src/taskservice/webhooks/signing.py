"""Standard Webhooks signatures: ``v1,`` and the base64 HMAC-SHA256 of "{id}.{timestamp}.{body}"
under the secret's bytes (the secret is ``whsec_`` and their base64)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def message_id(task_id) -> str:
    """The webhook-id: one per task, the same on every retry, so receivers can drop repeats."""
    return f"msg_{task_id.hex}"


def headers(secret: str, task_id, timestamp: int, body: bytes) -> dict[str, str]:
    msg_id = message_id(task_id)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }
