"""Rate limits per client: a token bucket per client address; over the limit a request is
answered 429 with ``Retry-After``, before it costs the chain anything."""

from __future__ import annotations

import threading
import time

MAX_CLIENTS = 50_000


class RateLimiter:
    """``allow(client)``: (allowed, seconds until the next request would be)."""

    def __init__(self, per_second: float, burst: int, clock=time.monotonic):
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> tuple[bool, float]:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return False, (1.0 - tokens) / self.per_second
            if len(self._buckets) >= MAX_CLIENTS and client not in self._buckets:
                self._buckets.clear()  # a flood of addresses: start over rather than grow
            self._buckets[client] = (tokens - 1.0, now)
            return True, 0.0
