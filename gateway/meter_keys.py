"""Which meters exist, which key signs for each and whether it is active, kept current
from the registry's meter events (``Registry.follow_meters``: one ``eth_getLogs`` per
sync, from the deployment block on; rebuilt after a reorganisation of the chain)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

from contracts.community import Community
from contracts.registry import MeterChange, MeterEvent

log = logging.getLogger(__name__)

MIN_SYNC_INTERVAL_S = 1.0


@dataclass(frozen=True)
class MeterEntry:
    meter_id: str
    signer: str
    bus: int
    active: bool


class MeterDirectory:
    """Meter id → signer, bus and active flag, as the registry's events tell."""

    def __init__(self, community: Community, clock=time.monotonic):
        self._community = community
        self._clock = clock
        self._follower = community.registry.follow_meters(community.deployment.block)
        self._meters: dict[str, MeterEntry] = {}
        self._last_sync = float("-inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._meters)

    def get(self, meter_id: str) -> MeterEntry | None:
        """The meter as last synced; an unknown id triggers a sync (at most one a second)."""
        entry = self._meters.get(meter_id)
        if entry is None and self._clock() - self._last_sync >= MIN_SYNC_INTERVAL_S:
            try:
                self.sync()
            except Exception as error:  # the chain may be unreachable; the caller refuses the meter
                log.debug("meter directory sync failed: %s", error)
            entry = self._meters.get(meter_id)
        return entry

    def sync(self) -> int:
        """Apply the registry events of the blocks not seen yet; returns how many."""
        with self._lock:
            self._last_sync = self._clock()
            update = self._follower.poll()
            if update.rewound_from is not None:  # rebuild: events of dropped blocks are void
                self._follower = self._community.registry.follow_meters(self._community.deployment.block)
                self._meters.clear()
                update = self._follower.poll()
            for event in update.items:
                self._apply(event)
            return len(update.items)

    def _apply(self, event: MeterEvent) -> None:
        known = self._meters.get(event.meter_id)
        if event.change == MeterChange.REGISTERED:
            self._meters[event.meter_id] = MeterEntry(event.meter_id, event.signer, event.bus, active=True)
        elif known is not None and event.change == MeterChange.SIGNER_CHANGED:
            self._meters[event.meter_id] = replace(known, signer=event.signer)
        elif known is not None:
            self._meters[event.meter_id] = replace(known, active=False)
