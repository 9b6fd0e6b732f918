"""Ending the ``assetflow`` process once a command is done, without finalizing the interpreter.

Before Python 3.14, a daemon thread that wakes while the interpreter finalizes is ended with
``pthread_exit`` (python/cpython#87135). A thread inside a C++ extension at that moment — a step's
background thread still querying DuckDB or computing in pyarrow, or a native pool of those libraries
handing back a Python object — unwinds through C++ code that cannot let it pass, and the process
aborts: ``terminate called after throwing an instance of ''`` / ``FATAL: exception not rethrown``,
exit 134, after the command printed its result (duckdb/duckdb#13904). A CI job would read a run that
succeeded as a failure.

So the command line leaves the way the interpreter would — waiting for non-daemon threads, running
``atexit`` handlers, flushing stdout and stderr — and then ends the process at once instead of tearing
modules down. Nothing of assetflow's is lost: values, lineage and the run lock are durable or released
before a command returns, and Python does not promise ``__del__`` at exit anyway. The Python API is
unaffected: a program calling it exits as it always does.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from contextlib import suppress
from typing import NoReturn


def leave(code: int) -> NoReturn:
    """End the process with exit status ``code`` after the interpreter's own exit steps, bar finalization."""
    # threading's own exit step: runs its exit hooks (concurrent.futures stops idle pool workers there)
    # and waits for non-daemon threads, as the interpreter would before atexit.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):  # a closed pipe must not change the exit status
            stream.flush()
    os._exit(code)
