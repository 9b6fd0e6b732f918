"""The one place assetflow reads the time. ``ASSETFLOW_NOW`` pins it (ISO 8601) for CI, tests and
reproducible plans; everything else receives a :class:`Clock` or a ``now`` value from the edge."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone

from .errors import UsageError


@dataclass(frozen=True, slots=True)
class Clock:
    """Wall-clock time, or a fixed instant when ``fixed`` is set."""

    fixed: datetime | None = None

    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        return self.fixed if self.fixed is not None else datetime.now(timezone.utc)


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant; a naive one is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"invalid ASSETFLOW_NOW {text!r}: expected ISO 8601 like 2024-01-10T00:00:00Z") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def clock_from_env(environ: dict[str, str] | None = None) -> Clock:
    """The clock the environment asks for."""
    env = os.environ if environ is None else environ
    text = env.get("ASSETFLOW_NOW")
    return Clock(parse_instant(text)) if text else Clock()
