"""Reading one setting: its text turned into a value, or a ConfigError that names its variable.

The mapping read is the one ``config_loader.load_config`` is given; nothing here reads
``os.environ`` itself.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import TypeVar

import limits

T = TypeVar("T")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def parse_setting(env: Mapping[str, str], name: str, convert: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = convert(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {convert.__name__}") from None
    # float() accepts 'nan' and 'inf'; no setting means either, and NaN slips past every range
    # check (each comparison with it is false).
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} is not a finite number")
    return value


def in_range(name: str, value: float, low: float, high: float | None = None) -> None:
    # Written so that NaN fails too, should a non-finite value ever come from elsewhere than
    # parse_setting: every comparison with NaN is false.
    if not (value >= low and (high is None or value <= high)):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name}={value} must be {bound}")


# --- Rate limits, client addresses, CORS ------------------------------------------------------


def rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
    value = parse_setting(env, name, str, default)
    try:
        # limits.parse reads "10/minute;100/hour" as its first limit alone: one limit a setting.
        if len(limits.parse_many(value)) != 1:
            raise ValueError(value)
        item = limits.parse(value)
    except ValueError:
        raise ConfigError(
            f"{name}={value!r} is not a rate limit such as '10/minute' or '100 per 5 minutes'"
        ) from None
    if item.amount < 1:
        raise ConfigError(f"{name}={value!r} allows no request at all; the amount must be >= 1")
    return value


def comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_networks(name: str, value: str) -> tuple[IPNetwork, ...]:
    networks = []
    for part in comma_list(value):
        try:
            # strict=False: 172.28.0.1/16 means the network it is in, as people often write it.
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def parse_origins(name: str, value: str) -> tuple[str, ...]:
    origins = comma_list(value)
    for origin in origins:
        # A browser sends its Origin as scheme://host[:port], nothing more; the comparison is
        # exact, so anything else (a path, a trailing slash, "*") would never match or would
        # open the API to every site.
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or any(c in rest for c in "/?#*@ "):
            raise ConfigError(
                f"{name}: {origin!r} is not an origin such as https://app.example.com"
            )
    return tuple(origins)


def checked(env: Mapping[str, str], name: str, parse: Callable[[str, str], object]) -> str:
    value = parse_setting(env, name, str, "")
    parse(name, value)  # raises ConfigError naming the variable
    return value
