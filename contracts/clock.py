"""Minutes and market slots: the chain's time index, in one place.

The chain counts time in Unix *minutes* (UTC Unix seconds // 60): one meter reading per
meter and minute, a band per flexibility and minute. A market delivery slot is
``slot_minutes`` long (fixed at deployment); slot ``s`` holds the minutes
``[s·slot_minutes, (s+1)·slot_minutes)``. Python keeps instants in Unix seconds; this
module (and ``CommunityTime.sol`` on chain) is where they become minutes and slots.

It also holds the community's one time source, ``now()``: real time, or (for demos and
tests) an accelerated clock running ``speed`` community seconds per real second. Every
thread of a process reads the same clock; ``accelerate`` records it in the environment
(``LEC_CLOCK``) so child processes agree. Durations measured for logs stay real.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from contracts.units import UnitError

SECONDS_PER_MINUTE = 60
CLOCK_ENV = "LEC_CLOCK"  # "SPEED ORIGIN_REAL ORIGIN": community time ORIGIN at real time ORIGIN_REAL


@dataclass(frozen=True)
class CommunityClock:
    """Community time (UTC Unix seconds) = ``origin + (real time - origin_real) · speed``."""

    speed: float = 1.0
    origin_real: float = 0.0
    origin: float = 0.0

    def now(self) -> float:
        return self.origin + (time.time() - self.origin_real) * self.speed

    def encode(self) -> str:
        return f"{self.speed!r} {self.origin_real!r} {self.origin!r}"

    @classmethod
    def decode(cls, text: str) -> CommunityClock:
        speed, origin_real, origin = (float(part) for part in text.split())
        if not speed > 0:
            raise ValueError(f"{CLOCK_ENV}: the speed must be > 0, got {speed:g}")
        return cls(speed, origin_real, origin)


def _from_environment() -> CommunityClock:
    text = os.environ.get(CLOCK_ENV)
    return CommunityClock() if not text else CommunityClock.decode(text)


_clock = _from_environment()


def now() -> float:
    """The community's time (UTC Unix seconds): what block timestamps, minutes and slots follow."""
    return _clock.now()


def speed() -> float:
    """Community seconds per real second (1: real time)."""
    return _clock.speed


def real_seconds(community_seconds: float) -> float:
    """How long (real seconds) a wait of ``community_seconds`` takes."""
    return community_seconds / _clock.speed


def real_seconds_to_next_minute(offset_s: float = 0.0) -> float:
    """Real seconds until ``offset_s`` community seconds past the next community minute."""
    return real_seconds(seconds_to_next_minute(now(), offset_s))


def accelerate(speed: float, not_before: float = 0.0) -> CommunityClock:
    """Run this process's community clock (and, through the environment, its children's) at
    ``speed``, starting from real time, or from ``not_before`` if that is later (a chain that
    ran accelerated is ahead of real time, and community time never runs backwards)."""
    if not speed > 0:
        raise ValueError(f"the clock speed must be > 0, got {speed:g}")
    global _clock
    real = time.time()
    _clock = CommunityClock(float(speed), real, max(real, float(not_before)))
    os.environ[CLOCK_ENV] = _clock.encode()
    return _clock


def minute_of(unix_seconds: float) -> int:
    """The Unix minute that contains the instant ``unix_seconds`` (any second)."""
    return int(unix_seconds) // SECONDS_PER_MINUTE


def aligned_minute(unix_seconds: float) -> int:
    """A minute-aligned instant (UTC Unix seconds) → its Unix minute; anything else is an
    error, since the chain stores readings and bands per whole minute."""
    seconds = int(unix_seconds)
    if seconds != unix_seconds or seconds % SECONDS_PER_MINUTE:
        raise UnitError(f"time {unix_seconds!r} is not aligned to a whole minute")
    return seconds // SECONDS_PER_MINUTE


def minute_start(minute: int) -> int:
    """Unix minute → the UTC Unix second it starts at."""
    return minute * SECONDS_PER_MINUTE


def floor_to_minute(unix_seconds: float) -> int:
    """The start (Unix seconds) of the minute that contains ``unix_seconds``."""
    return minute_start(minute_of(unix_seconds))


def seconds_to_next_minute(unix_seconds: float, offset_s: float = 0.0) -> float:
    """Seconds from ``unix_seconds`` until ``offset_s`` past the next minute boundary (or
    this minute's, if that is still ahead)."""
    into_minute = unix_seconds % SECONDS_PER_MINUTE
    if into_minute <= offset_s:
        return offset_s - into_minute
    return SECONDS_PER_MINUTE - into_minute + offset_s


def duration_minutes(seconds: float) -> int:
    """A duration in seconds (a whole number of minutes) → minutes, as the chain stores it."""
    whole = int(seconds)
    if whole != seconds or whole < 0 or whole % SECONDS_PER_MINUTE:
        raise UnitError(f"duration {seconds!r} s is not a whole, non-negative number of minutes")
    return whole // SECONDS_PER_MINUTE


@dataclass(frozen=True)
class SlotClock:
    """Market slots of one community (``slot_minutes`` long)."""

    slot_minutes: int

    def slot_of_minute(self, minute: int) -> int:
        """The slot that contains Unix minute ``minute``."""
        return minute // self.slot_minutes

    def slot_of(self, unix_seconds: float) -> int:
        """The slot that contains the instant ``unix_seconds`` (any second)."""
        return self.slot_of_minute(minute_of(unix_seconds))

    def first_minute(self, slot: int) -> int:
        """The first Unix minute of ``slot``."""
        return slot * self.slot_minutes

    def minutes(self, slot: int) -> range:
        """Every Unix minute of ``slot``."""
        return range(self.first_minute(slot), self.first_minute(slot + 1))

    def start(self, slot: int) -> int:
        """UTC Unix seconds at which ``slot`` starts."""
        return minute_start(self.first_minute(slot))

    def end(self, slot: int) -> int:
        """UTC Unix seconds at which ``slot`` ends (the next one starts)."""
        return self.start(slot + 1)
