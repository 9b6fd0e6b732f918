"""Retry timing as a pure function, so the schedule can be checked exactly with an injected random."""

from __future__ import annotations

from .definitions import Retry


def retry_delay(policy: Retry, failed_attempt: int, rand: float) -> float:
    """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed.

    Exponential backoff ``delay * backoff**(n-1)`` capped at ``max_delay``, then jittered down by up to
    ``jitter`` of itself with ``rand`` in [0, 1): simultaneous failures spread over
    ``[(1-jitter)·d, d]`` instead of retrying in lockstep, and the cap still holds.
    """
    base = min(policy.max_delay, policy.delay * policy.backoff ** (failed_attempt - 1))
    return base * (1.0 - policy.jitter * rand)


def should_retry(policy: Retry, failed_attempt: int, retryable: bool) -> bool:
    """Whether another attempt follows a failure."""
    return retryable and failed_attempt < policy.max_attempts
