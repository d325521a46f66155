"""Judge0's query parameters: only the operation's own, true/false flags, and ``fields``; a bad
one is a 400 in Judge0's error shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskservice.judge0.errors import bad_request


def only_parameters(params: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse query parameters the operation does not have, as the service's own routes do: a
    misspelt `base64_encoded` would otherwise be silently taken as false."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        names = ", ".join(sorted(allowed)) or "none"
        raise bad_request(f"unknown query parameter {unknown[0][:40]!r}; this takes {names}")


def flag(params: Mapping[str, Any], name: str) -> bool:
    """A true/false query parameter (``base64_encoded``, ``wait``); false when absent."""
    value = params.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise bad_request(f"{name} must be true or false, not {str(value)[:40]!r}")
    return value == "true"


def fields_param(raw: str | None, known: tuple[str, ...], default: tuple[str, ...]) -> tuple:
    """The ``fields`` parameter: ``*``, a comma-separated list of fields, or the default."""
    if raw is None or raw == "":
        return default
    if raw.strip() == "*":
        return known
    wanted = tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise bad_request(f"invalid fields: [{', '.join(name[:40] for name in unknown[:5])}]")
    return wanted
