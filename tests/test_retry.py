"""The retry policy as pure functions: the backoff schedule, its cap, jitter bounds and spread, and
when another attempt follows a failure. ``rand`` is injected, so every delay is checked exactly."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import assetflow as af
from assetflow.definitions import _retry_policy
from assetflow.errors import DefinitionError
from assetflow.retry import retry_delay, should_retry

ALMOST_ONE = math.nextafter(1.0, 0.0)  # the largest value random.random() can return


@pytest.mark.parametrize(
    ("policy", "failed_attempt", "rand", "expected"),
    [
        # exponential growth, no jitter: delay * backoff ** (n - 1)
        (af.Retry(max_attempts=9, delay=1.0, backoff=2.0, max_delay=300, jitter=0), 1, 0.0, 1.0),
        (af.Retry(max_attempts=9, delay=1.0, backoff=2.0, max_delay=300, jitter=0), 2, 0.0, 2.0),
        (af.Retry(max_attempts=9, delay=1.0, backoff=2.0, max_delay=300, jitter=0), 3, 0.0, 4.0),
        (af.Retry(max_attempts=9, delay=1.0, backoff=2.0, max_delay=300, jitter=0), 4, 0.0, 8.0),
        (af.Retry(max_attempts=9, delay=0.5, backoff=3.0, max_delay=300, jitter=0), 3, 0.0, 4.5),
        # backoff=1 is a constant delay
        (af.Retry(max_attempts=9, delay=2.0, backoff=1.0, max_delay=300, jitter=0), 7, 0.0, 2.0),
        # jitter=0 ignores rand entirely
        (af.Retry(max_attempts=9, delay=1.0, backoff=2.0, max_delay=300, jitter=0), 3, ALMOST_ONE, 4.0),
        # capped at max_delay
        (af.Retry(max_attempts=9, delay=1.0, backoff=10.0, max_delay=50, jitter=0), 2, 0.0, 10.0),
        (af.Retry(max_attempts=9, delay=1.0, backoff=10.0, max_delay=50, jitter=0), 3, 0.0, 50.0),
        (af.Retry(max_attempts=9, delay=1.0, backoff=10.0, max_delay=50, jitter=0), 8, 0.0, 50.0),
        (af.Retry(max_attempts=9, delay=100.0, backoff=2.0, max_delay=50, jitter=0), 1, 0.0, 50.0),
        # jitter: rand=0 gives the full delay, rand -> 1 gives (1 - jitter) of it
        (af.Retry(max_attempts=9, delay=1.0, backoff=2.0, max_delay=300, jitter=0.5), 3, 0.0, 4.0),
        (af.Retry(max_attempts=9, delay=1.0, backoff=2.0, max_delay=300, jitter=0.5), 3, 0.5, 3.0),
        (af.Retry(max_attempts=9, delay=1.0, backoff=2.0, max_delay=300, jitter=0.5), 3, ALMOST_ONE, 2.0),
        (af.Retry(max_attempts=9, delay=1.0, backoff=2.0, max_delay=300, jitter=1.0), 3, ALMOST_ONE, 0.0),
        # the cap holds under jitter: jitter only ever shortens the capped delay
        (af.Retry(max_attempts=9, delay=1.0, backoff=10.0, max_delay=50, jitter=0.2), 5, 0.0, 50.0),
        (af.Retry(max_attempts=9, delay=1.0, backoff=10.0, max_delay=50, jitter=0.2), 5, ALMOST_ONE, 40.0),
        # zero delay stays zero
        (af.Retry(max_attempts=9, delay=0.0, backoff=2.0, max_delay=300, jitter=0.5), 4, 0.3, 0.0),
    ],
)
def test_retry_delay_table(policy: af.Retry, failed_attempt: int, rand: float, expected: float) -> None:
    assert retry_delay(policy, failed_attempt, rand) == pytest.approx(expected, abs=1e-9)


def test_default_policy_has_backoff_and_jitter() -> None:
    policy = af.Retry(max_attempts=5)
    # exponential by default
    assert retry_delay(policy, 2, 0.0) == pytest.approx(2 * retry_delay(policy, 1, 0.0))
    # jittered by default: different draws give different delays
    assert retry_delay(policy, 1, 0.0) != retry_delay(policy, 1, 0.9)


def test_jitter_spreads_100_simultaneous_failures() -> None:
    """100 partitions failing at once must not all come back at the same instant."""
    policy = af.Retry(max_attempts=5, delay=1.0, backoff=2.0, max_delay=300, jitter=0.5)
    rng = random.Random(20240101)
    base = 4.0  # attempt 3 of this policy
    delays = [retry_delay(policy, 3, rng.random()) for _ in range(100)]
    assert len(set(delays)) >= 50
    low, high = (1 - policy.jitter) * base, base
    assert all(low <= d <= high for d in delays), (min(delays), max(delays))
    # and spread over the interval, not bunched at one end
    assert max(delays) - min(delays) >= 0.5 * (high - low)


@settings(max_examples=200, deadline=None)
@given(
    delay=st.floats(0, 100, allow_nan=False),
    backoff=st.floats(1, 10, allow_nan=False),
    max_delay=st.floats(0, 1000, allow_nan=False),
    jitter=st.floats(0, 1, allow_nan=False),
    attempt=st.integers(1, 30),
    rand=st.floats(0, 1, exclude_max=True, allow_nan=False),
)
def test_retry_delay_bounds(delay: float, backoff: float, max_delay: float, jitter: float, attempt: int, rand: float) -> None:
    policy = af.Retry(max_attempts=31, delay=delay, backoff=backoff, max_delay=max_delay, jitter=jitter)
    base = min(max_delay, delay * backoff ** (attempt - 1))
    got = retry_delay(policy, attempt, rand)
    assert got <= max_delay + 1e-9
    assert (1 - jitter) * base - 1e-9 <= got <= base + 1e-9
    # without jitter the schedule never shrinks from one attempt to the next
    still = af.Retry(max_attempts=31, delay=delay, backoff=backoff, max_delay=max_delay, jitter=0)
    assert retry_delay(still, attempt, rand) <= retry_delay(still, attempt + 1, rand) + 1e-9


@pytest.mark.parametrize(
    ("policy", "failed_attempt", "retryable", "expected"),
    [
        (af.Retry(max_attempts=3), 1, True, True),
        (af.Retry(max_attempts=3), 2, True, True),
        (af.Retry(max_attempts=3), 3, True, False),  # the last attempt failed: done
        (af.Retry(max_attempts=3), 4, True, False),
        (af.Retry(max_attempts=3), 1, False, False),  # af.Failure(..., retry=False)
        (af.Retry(max_attempts=3), 2, False, False),
        (af.Retry(max_attempts=1), 1, True, False),  # no retries
        (af.Retry(), 1, True, False),  # the default is a single attempt
        (_retry_policy(2), 2, True, True),  # retries=2: two extra attempts, three in all
        (_retry_policy(2), 3, True, False),
        (_retry_policy(0), 1, True, False),
    ],
)
def test_should_retry_table(policy: af.Retry, failed_attempt: int, retryable: bool, expected: bool) -> None:
    assert should_retry(policy, failed_attempt, retryable) is expected


def test_int_retries_mean_extra_attempts() -> None:
    @af.asset(retries=3)
    def flaky() -> int:
        return 1

    assert flaky.retry.max_attempts == 4

    @af.asset(retries=af.Retry(max_attempts=2, delay=0.25, jitter=0))
    def custom() -> int:
        return 1

    assert custom.retry == af.Retry(max_attempts=2, delay=0.25, jitter=0)

    @af.asset
    def plain() -> int:
        return 1

    assert plain.retry.max_attempts == 1


def test_failure_retry_flag() -> None:
    assert af.Failure("transient").retry is True
    assert af.Failure("nope", retry=False).retry is False
    assert str(af.Failure("nope", retry=False)) == "nope"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"delay": -1},
        {"max_delay": -1},
        {"backoff": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_invalid_policies_are_definition_errors(kwargs: dict) -> None:
    with pytest.raises(DefinitionError):
        af.Retry(**kwargs)


@pytest.mark.parametrize("retries", [-1, True, 1.5, "3"])
def test_invalid_retries_argument(retries: object) -> None:
    def thing() -> int:
        return 1

    with pytest.raises(DefinitionError, match="retries"):
        af.asset(retries=retries)(thing)  # type: ignore[arg-type]
