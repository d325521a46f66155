"""RabbitMQ connections: the broker's addresses and the task message.

``AMQP_URL`` names one broker, or several separated by commas (the nodes of one cluster). A
connection goes to the first of them that answers, in the order given; a process whose
connection dies connects again the same way, so it moves to another node when its own is gone.
"""

from __future__ import annotations

import json
import uuid

import pika


def broker_addresses(amqp_url: str) -> list[str]:
    """The URLs in ``AMQP_URL``, in order (one, or several separated by commas)."""
    return [part.strip() for part in amqp_url.split(",") if part.strip()]


def connection_parameters(
    amqp_url: str, timeout_seconds: float, heartbeat_seconds: int = 30
) -> list[pika.URLParameters]:
    """One set of parameters per broker address: ``pika.BlockingConnection`` takes the list
    and connects to the first that answers."""
    return [
        _parameters(url, timeout_seconds, heartbeat_seconds) for url in broker_addresses(amqp_url)
    ]


def _parameters(url: str, timeout_seconds: float, heartbeat_seconds: int) -> pika.URLParameters:
    params = pika.URLParameters(url)
    # Fail fast when a broker is away: the API answers 503 within a few seconds instead of
    # hanging, and the worker's reconnect loop decides how long to wait.
    params.connection_attempts = 1
    params.socket_timeout = timeout_seconds
    params.stack_timeout = timeout_seconds
    params.blocked_connection_timeout = timeout_seconds
    params.heartbeat = heartbeat_seconds
    params.client_properties = {"connection_name": "taskservice"}
    return params


def encode_message(task_id: uuid.UUID) -> bytes:
    return json.dumps({"task_id": str(task_id)}).encode()


def decode_message(body: bytes) -> uuid.UUID:
    """The task id in a message; ValueError for anything else (a poison message)."""
    try:
        payload = json.loads(body)
        return uuid.UUID(payload["task_id"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a task message: {body[:100]!r}") from exc
