"""Pausing the cyclic collector around bulk builds of acyclic objects (plans, plan JSON, run results)."""

from __future__ import annotations

import gc

from assetflow.gcpause import gc_paused, without_gc_pauses


def test_collector_is_paused_inside_and_back_on_after() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_inside_still_turns_the_collector_back_on() -> None:
    try:
        with gc_paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()


def test_a_caller_that_paused_it_keeps_it_paused() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_decorated_function_runs_paused_and_returns_its_value() -> None:
    @without_gc_pauses
    def build() -> tuple[bool, int]:
        return gc.isenabled(), 42

    assert build() == (False, 42)
    assert gc.isenabled()
