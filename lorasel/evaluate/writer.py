"""Write finished batches on a background thread, so PNG encoding and disk I/O overlap rendering.

One writer thread handles batches in order: encode each image as PNG, write it atomically,
then record the batch's rows in one transaction. The caller keeps rendering meanwhile (PNG
encoding and fsync release the GIL). After a failure (disk full) the writer records nothing
more and the error surfaces in the caller's thread at its next call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from lorasel.evaluate.plan import Batch, RenderSettings
from lorasel.evaluate.render import parameters_text, png_bytes
from lorasel.evaluate.store import Store
from lorasel.results import BASE

MAX_PENDING = 2  # batches rendered but not yet written: bounds the images held in memory


class BatchWriter:
    """Writes (batch, images) pairs in order on one thread; see the module docstring."""

    def __init__(
        self, store: Store, settings: RenderSettings, labels: dict[str, str], done: set[str]
    ) -> None:
        self.store = store
        self.settings = settings
        self.settings_key = settings.key()
        self.labels = labels
        self.done = done  # keys already recorded (updated by the caller as batches finish)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorasel-writer")
        self._pending: deque[tuple[Batch, Future]] = deque()
        self._failed = False

    def submit(self, batch: Batch, images: Sequence) -> None:
        self._pending.append((batch, self._pool.submit(self._write, batch, list(images))))

    def finished(self, *, wait: bool = False) -> Iterator[tuple[Batch, int]]:
        """Batches written since the last call, in order, with how many renders each recorded.
        With ``wait``, blocks until at most ``MAX_PENDING`` batches are in flight; an error of
        the writer is raised here."""
        while self._pending:
            batch, future = self._pending[0]
            if not future.done() and not (wait and len(self._pending) > MAX_PENDING):
                return
            self._pending.popleft()
            keys = future.result()  # re-raises the writer's error in this thread
            self.done.update(keys)
            yield batch, len(keys)

    def drain(self) -> Iterator[tuple[Batch, int]]:
        """Every remaining batch, waiting for each."""
        while self._pending:
            batch, future = self._pending.popleft()
            keys = future.result()
            self.done.update(keys)
            yield batch, len(keys)

    def close(self) -> None:
        """Let queued writes finish (a render kept is a render not redone), then stop."""
        self._pool.shutdown(wait=True)

    def _write(self, batch: Batch, images: list) -> list[str]:
        if self._failed:
            return []
        try:
            rows = []
            label = self.labels.get(batch.checkpoint, BASE)
            for item, image in zip(batch.items, images, strict=True):
                if item.key in self.done:  # finished earlier with another batch layout: keep it
                    continue
                text = parameters_text(self.settings, item.prompt.text, item.seed, label, item.strength)
                path = self.store.write_image(item.key, png_bytes(image, text))
                rows.append((item.key, item.checkpoint_hash, item.strength, item.prompt.text, item.seed, self.settings_key, path))  # fmt: skip
            self.store.record_renders(rows)
            return [r[0] for r in rows]
        except BaseException:
            self._failed = True
            raise
