"""The measured uncontrolled load per bus, minute by minute, that the forecast learns from.

Held in memory for at most ``max_days`` (older minutes are dropped); a restarted service
learns again from what it measures. A minute without a measurement of a bus is NaN there.
"""

from __future__ import annotations

import numpy as np

MINUTES_PER_DAY = 1440


class BusHistory:
    """Rows of measured net active load (kW) per bus, one per minute from ``first_minute``."""

    def __init__(self, n_bus: int, max_days: int = 8):
        self.n_bus = n_bus
        self.max_minutes = max_days * MINUTES_PER_DAY
        self.first_minute: int | None = None
        self._rows = np.empty((0, n_bus))

    def __len__(self) -> int:
        return len(self._rows)

    def record(self, minute: int, p_kw, measured: np.ndarray) -> None:
        """The load of ``minute`` at the buses where ``measured`` is true (others stay NaN).
        A minute before the first is ignored; a gap is filled with NaN rows."""
        if self.first_minute is None:
            self.first_minute = minute
        row = minute - self.first_minute
        if row < 0:
            return
        if row >= len(self._rows):
            gap = np.full((row + 1 - len(self._rows), self.n_bus), np.nan)
            self._rows = np.vstack([self._rows, gap])
        self._rows[row, measured] = np.asarray(p_kw, dtype=float)[measured]
        if len(self._rows) > self.max_minutes:
            drop = len(self._rows) - self.max_minutes
            self._rows = self._rows[drop:]
            self.first_minute += drop

    def table(self, fallback_kw) -> np.ndarray:
        """(minutes, n_bus): buses never measured take ``fallback_kw`` (the network's own value)."""
        rows = self._rows.copy()
        never = ~np.isfinite(rows).any(axis=0)
        rows[:, never] = np.asarray(fallback_kw, dtype=float)[never]
        return rows
