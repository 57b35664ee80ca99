"""How busy the server is: counts since it started, and rates over the last few seconds, cheap
enough for a window to ask every second."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

WINDOW_S = 10.0


@dataclass
class ServeStats:
    requests: int  # answered since the server started, refusals included
    errors: int  # answered with a status of 400 or more
    requests_per_s: float  # over the last WINDOW_S seconds
    tokens_per_s: float  # generated tokens over the last WINDOW_S seconds
    queued: int
    running: int
    batches: int  # generated since the server started
    rows_per_batch: float  # requests per batch on average: above 1 when clients are answered together
    generated_tokens: int  # since the server started, by every row, those of clients that left included

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StatsRecorder:
    """Counts answered requests; thread-safe (requests end on the server's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: "deque[tuple[float, int]]" = deque()  # (monotonic time, tokens) per request
        self._started = time.monotonic()
        self.requests = 0
        self.errors = 0
        self.batches = 0
        self.rows = 0
        self.generated_tokens = 0

    def record(self, status: int, tokens: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            self.errors += status >= 400
            self._recent.append((now, tokens))
            self._forget(now)

    def record_batch(self, results: list[Any]) -> None:
        """One batch generated: its rows' ``RowResult``s."""
        with self._lock:
            self.batches += 1
            self.rows += len(results)
            self.generated_tokens += sum(result.tokens for result in results)

    def snapshot(self, queued: int, running: int) -> ServeStats:
        now = time.monotonic()
        with self._lock:
            self._forget(now)
            span = max(min(WINDOW_S, now - self._started), 1e-3)
            tokens = sum(count for _at, count in self._recent)
            return ServeStats(requests=self.requests, errors=self.errors, requests_per_s=len(self._recent) / span,
                              tokens_per_s=tokens / span, queued=queued, running=running,
                              batches=self.batches, rows_per_batch=self.rows / max(self.batches, 1),
                              generated_tokens=self.generated_tokens)

    def _forget(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - WINDOW_S:
            self._recent.popleft()
