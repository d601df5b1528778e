"""Logging that cannot flood: the first occurrence of each kind is logged, repeats are
summed up at most once per interval."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter


class ThrottledLog:
    """``log(kind, message)`` writes the first message of ``kind`` and then, at most once
    per ``interval_s``, how many more of that kind occurred."""

    def __init__(self, logger: logging.Logger, level: int, interval_s: float = 60.0, clock=time.monotonic):
        self._logger = logger
        self._level = level
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def log(self, kind: str, message: str, *args) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval_s:
                self._suppressed[kind] += 1
                return
            self._last[kind] = now
            repeats = self._suppressed.pop(kind, 0)
        if repeats:
            message += f" (and {repeats} more like it since the last report)"
        self._logger.log(self._level, message, *args)
