"""Writing lineage in the background, in batches, without ever pointing at a value that is not durable.

The coordinator hands over batches; one writer thread commits them in order. DuckDB releases the GIL
while it works, so writes overlap with scheduling instead of stalling it. Each batch's commit waits for
one flush of the data root (:meth:`ValueStore.sync`, run beside the batch's statements), so every row
commits after the values it names.

How often to write adapts: at least :data:`MIN_INTERVAL_S` apart, and at least four times as long as
the last write took, so recording never takes more than about a fifth of a run, however large the store.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from .lineage_store import Batch, LineageStore
from .values import ValueStore

MIN_INTERVAL_S = 0.5
MAX_INTERVAL_S = 5.0


class Recorder:
    """A single background writer of lineage batches."""

    def __init__(self, store: LineageStore, values: ValueStore) -> None:
        self.store = store
        self.values = values
        self.interval = MIN_INTERVAL_S
        self._queue: queue.Queue[Batch | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="assetflow-recorder", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is not None:
                continue  # after a failure nothing more is written; close() reports it
            started = time.monotonic()
            try:
                self.store.write(batch, make_durable=self.values.sync)
            except BaseException as exc:  # surfaced to the coordinator at the next submit/close
                self._error = exc
            took = time.monotonic() - started
            self.interval = min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, 4 * took))

    def submit(self, take: Callable[[], Batch]) -> None:
        """Queue the batch ``take()`` returns for writing."""
        self.raise_error()
        self._queue.put(take())

    def raise_error(self) -> None:
        """Re-raise a failure of the writer thread in the caller's thread."""
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Write everything queued, stop the thread, and re-raise a write failure if there was one."""
        self._queue.put(None)
        self._thread.join()
        self.raise_error()
