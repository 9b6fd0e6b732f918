"""Durations as users write them in decorators and on the command line: ``90``, ``"90s"``, ``"10m"``, ``"26h"``, ``"2d"``."""

from __future__ import annotations

import re

from .errors import UsageError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(value: float | int | str | None, *, what: str = "duration") -> float | None:
    """Seconds for ``value`` (a number of seconds or a string with a unit); ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"invalid {what} {value!r}: expected seconds or a string like '90s', '10m', '2h'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise UsageError(f"invalid {what} {value!r}: must not be negative")
        return float(value)
    match = _PATTERN.match(str(value))
    if not match:
        raise UsageError(f"invalid {what} {value!r}: expected seconds or a string like '90s', '10m', '2h'")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]
