"""Work started on a thread now, whose result (or error) is collected later.

assetflow overlaps waits on DuckDB, which works without the GIL, with its own Python work: reading
the store snapshot while code versions are computed, writing a new store's first run record while
the plan is made. The caller that needs the outcome calls :meth:`Background.result`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """``fn(*args)`` running on a daemon thread named ``name``."""

    __slots__ = ("_thread", "_outcome")

    def __init__(self, name: str, fn: Callable[..., T], *args: Any) -> None:
        self._outcome: tuple[bool, Any] | None = None
        self._thread = threading.Thread(target=self._work, args=(fn, args), name=name, daemon=True)
        self._thread.start()

    def _work(self, fn: Callable[..., T], args: tuple[Any, ...]) -> None:
        try:
            self._outcome = (True, fn(*args))
        except BaseException as exc:  # re-raised in the thread that asks for the result
            self._outcome = (False, exc)

    def on_this_thread(self) -> bool:
        """True when called from the work itself (which must not wait for itself)."""
        return threading.current_thread() is self._thread

    def wait(self) -> None:
        """Wait for the work to end, whatever its outcome (for a caller leaving on an error of its own)."""
        self._thread.join()

    def result(self) -> T:
        """Wait for the work; return its value or raise its error (every time it is asked)."""
        self.wait()
        assert self._outcome is not None
        ok, value = self._outcome
        if not ok:
            raise value
        return value
