"""The queue between many clients and one model: requests wait in arrival order, and one worker
thread answers them in batches (``ChatSession.generate_rows``), each batch taking the oldest
requests that can share it.

Requests for the base and for plain LoRA adapters share a batch whatever their adapter (the
adapters' masked combination, ``engine.chat.mixed_rows``), so clients alternating between adapters cost no switching; a DoRA or
prompt-learning adapter's requests share batches only with requests for the same adapter. A
request that cannot join the batch being formed keeps its place at the head of the queue, so
none waits behind later ones for long. The queue is bounded: when it is full, ``submit``
refuses at once with how long to wait, and the client is told 429 rather than left hanging.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from engine.chat.rows import FINISH_CANCELLED, RowRequest, RowResult
from engine.errors import StudioError, first_line

# What a job's deliver callback receives, in this order: ("tokens", ids) any number of times,
# then ("done", RowResult), ("failed", message) when its batch failed, or ("stopping", message)
# when the server stopped before its turn.
TOKENS, DONE, FAILED, STOPPING = "tokens", "done", "failed", "stopping"


@dataclass
class Job:
    """One request in the queue: its row, whose adapter answers it, and where its tokens go."""

    adapter: Optional[str]  # a library name or folder; None for the base
    row: RowRequest
    deliver: Callable[[tuple[str, Any]], None]  # called on the worker thread; must not block or raise
    queued_at: float = field(default_factory=time.monotonic)


class QueueFull(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the server is busy: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Scheduler:
    """Answers submitted jobs on one worker thread, in batches of up to ``max_batch`` rows."""

    def __init__(self, session: Any, *, max_queue: int, max_batch: int, mixes: dict[Optional[str], bool],
                 on_batch: Optional[Callable[[list[RowResult]], None]] = None) -> None:
        self.session = session
        self.max_queue, self.max_batch = max_queue, max_batch
        self._mixes = mixes  # for each served adapter: can it share a batch with the others
        self._on_batch = on_batch
        self._waiting: "deque[Job]" = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._batch_seconds = 1.0  # a running average, for the wait a refused client is told
        self._thread = threading.Thread(target=self._work, name="serve-batches", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, job: Job) -> None:
        """Queue ``job``; ``QueueFull`` when the queue is full, ``StudioError`` once closed."""
        with self._cond:
            if self._closed:
                raise StudioError("the server is stopping")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(self._retry_after())
            self._waiting.append(job)
            self._cond.notify()

    def close(self) -> None:
        """Refuse new jobs, end the batch in progress after its current token, fail the waiting
        ones, and wait for the worker to finish."""
        with self._cond:
            self._closed = True
            for job in self._running:
                job.row.cancel.set()
            waiting, self._waiting = list(self._waiting), deque()
            self._cond.notify()
        for job in waiting:
            job.deliver((STOPPING, "the server stopped before this request's turn"))
        if self._thread.is_alive():
            self._thread.join()

    def _retry_after(self) -> int:
        batches_ahead = len(self._waiting) / self.max_batch + 1
        return max(1, math.ceil(self._batch_seconds * batches_ahead))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = self._take_batch()
                self._running = batch
            if batch:
                self._answer(batch)
            with self._cond:
                self._running = []

    def _take_batch(self) -> list[Job]:
        """The oldest waiting jobs that can share one batch; jobs whose client left are let go."""
        batch: list[Job] = []
        for job in list(self._waiting):
            if job.row.cancel.is_set():
                self._waiting.remove(job)
                job.deliver((DONE, RowResult(tokens=0, finish_reason=FINISH_CANCELLED)))
            elif len(batch) < self.max_batch and self._joins(batch, job):
                self._waiting.remove(job)
                batch.append(job)
        return batch

    def _joins(self, batch: list[Job], job: Job) -> bool:
        adapters = {other.adapter for other in batch} | {job.adapter}
        return len(adapters) == 1 or all(self._mixes.get(adapter, adapter is None) for adapter in adapters)

    def _answer(self, batch: list[Job]) -> None:
        started = time.monotonic()

        answered: set[int] = set()

        def on_tokens(index: int, ids: list[int]) -> None:
            batch[index].deliver((TOKENS, ids))

        def on_finished(index: int, result: RowResult) -> None:
            answered.add(index)
            batch[index].deliver((DONE, result))

        try:
            results = self.session.generate_rows([job.row for job in batch], [job.adapter for job in batch],
                                                 on_tokens, on_finished)
        except Exception as exc:  # one batch failing must not end the server: its clients are told why
            message = str(exc) if isinstance(exc, StudioError) else f"generation failed: {first_line(exc)}"
            for index, job in enumerate(batch):
                if index not in answered:
                    job.deliver((FAILED, message))
            return
        for index, (job, result) in enumerate(zip(batch, results)):
            if index not in answered:  # cancelled rows, told when the batch ends
                job.deliver((DONE, result))
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.monotonic() - started)
        if self._on_batch is not None:
            self._on_batch(results)
