"""The domain's own errors. No HTTP here: the HTTP layer (``http_errors``) maps them to answers.

The store, the queue, the services and the worker raise these; ``http_errors.map_domain_error``
turns each into its HTTP error, in one place, so responders stay thin.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base for errors the HTTP layer knows how to explain to a client."""


class UsernameTaken(DomainError):
    pass


class InvalidCredentials(DomainError):
    pass


class IdempotencyKeyReused(DomainError):
    """The same Idempotency-Key came with a different request."""


class TooManyActiveTasks(DomainError):
    """The user already has as many tasks queued or running as the quota allows."""

    def __init__(self, limit: int):
        super().__init__(f"at most {limit} active tasks")
        self.limit = limit


class TaskNotFinished(DomainError):
    """The request needs a finished task; this one is still queued or running."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


class CallbackUrlRefused(DomainError):
    """A task's callback_url may not be called (malformed, or not a public address)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TooManyApiKeys(DomainError):
    """The user already has as many API keys as allowed."""

    def __init__(self, limit: int):
        super().__init__(f"at most {limit} API keys")
        self.limit = limit


class ServiceUnavailable(DomainError):
    """A backing service (database, broker) cannot be reached; the client may retry."""


class BrokerUnavailable(ServiceUnavailable):
    pass


class DatabaseUnavailable(ServiceUnavailable):
    pass
