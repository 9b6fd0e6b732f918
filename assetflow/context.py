"""What an asset function sees of its run (``ctx``), and capture of what it prints and logs.

Output capture is per *thread*: steps run concurrently in one process, so ``sys.stdout`` is replaced
(for the duration of a run) by a router that sends each thread's writes to that thread's step.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

_library_log = logging.getLogger("assetflow.step")


class StepLog:
    """``ctx.log``: the logging methods users know, captured into the step's record."""

    def __init__(self, asset: str, partition: str | None) -> None:
        self.lines: list[str] = []
        self._prefix = f"{asset}[{partition}]" if partition else asset

    def _emit(self, level: int, msg: object, *args: object, exc_info: bool = False) -> None:
        text = str(msg) % args if args else str(msg)
        if exc_info:
            import traceback

            text += "\n" + traceback.format_exc().rstrip()
        self.lines.append(f"{time.strftime('%H:%M:%S')} {logging.getLevelName(level)} {text}")
        _library_log.log(level, "%s: %s", self._prefix, text)

    def debug(self, msg: object, *args: object) -> None:
        """Log at DEBUG."""
        self._emit(logging.DEBUG, msg, *args)

    def info(self, msg: object, *args: object) -> None:
        """Log at INFO."""
        self._emit(logging.INFO, msg, *args)

    def warning(self, msg: object, *args: object) -> None:
        """Log at WARNING."""
        self._emit(logging.WARNING, msg, *args)

    warn = warning

    def error(self, msg: object, *args: object) -> None:
        """Log at ERROR."""
        self._emit(logging.ERROR, msg, *args)

    def exception(self, msg: object, *args: object) -> None:
        """Log at ERROR with the current exception's traceback."""
        self._emit(logging.ERROR, msg, *args, exc_info=True)


@dataclass
class Context:
    """The run context passed to an asset function that declares a ``ctx: af.Context`` parameter."""

    asset: str
    partition_key: str | None
    partition_keys: list[str] | None
    run_id: str
    attempt: int
    log: StepLog
    metadata: dict[str, Any] = field(default_factory=dict)

    def add_metadata(self, values: Mapping[str, Any]) -> None:
        """Attach metadata (JSON-serializable values) to this materialization."""
        self.metadata.update(values)


class _Router(io.TextIOBase):
    """A stand-in for sys.stdout/sys.stderr that routes each thread's writes to its capture buffer."""

    def __init__(self, original: TextIO, local: threading.local) -> None:
        self._original = original
        self._local = local

    def write(self, text: str) -> int:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            return self._original.write(text)
        buffer.write(text)
        return len(text)

    def flush(self) -> None:
        if getattr(self._local, "buffer", None) is None:
            self._original.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", "utf-8")


_local = threading.local()
_install_lock = threading.Lock()
_installed = 0


@contextmanager
def routed_output() -> Iterator[None]:
    """Install the per-thread routers for the duration of a run (re-entrant)."""
    global _installed
    with _install_lock:
        if _installed == 0:
            sys.stdout = _Router(sys.stdout, _local)  # type: ignore[assignment]
            sys.stderr = _Router(sys.stderr, _local)  # type: ignore[assignment]
        _installed += 1
    try:
        yield
    finally:
        with _install_lock:
            _installed -= 1
            if _installed == 0:
                if isinstance(sys.stdout, _Router):
                    sys.stdout = sys.stdout._original  # type: ignore[assignment]
                if isinstance(sys.stderr, _Router):
                    sys.stderr = sys.stderr._original  # type: ignore[assignment]


class captured:
    """``with captured() as buffer``: this thread's stdout and stderr (when routers are installed) go
    into one buffer. A class, not a generator: it wraps every attempt, and a generator-based context
    manager costs three times as much to enter and leave."""

    __slots__ = ("buffer", "previous")

    def __enter__(self) -> io.StringIO:
        self.previous = getattr(_local, "buffer", None)
        self.buffer = _local.buffer = io.StringIO()
        return self.buffer

    def __exit__(self, *exc: object) -> None:
        _local.buffer = self.previous
