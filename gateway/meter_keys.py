"""Which meters exist, which key signs for each and whether it is active, kept current
from the registry's ``MeterRegistered``, ``MeterSignerChanged`` and ``MeterDeregistered``
events (one ``eth_getLogs`` per sync, from the deployment block on)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

from eth_utils import event_abi_to_log_topic, to_checksum_address

from contracts import units
from contracts.community import Community

log = logging.getLogger(__name__)

MIN_SYNC_INTERVAL_S = 1.0
MAX_BLOCKS_PER_QUERY = 5_000


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
        registry = community.registry
        self._events = {
            event_abi_to_log_topic(event.abi): event
            for event in (
                registry.events.MeterRegistered(),
                registry.events.MeterSignerChanged(),
                registry.events.MeterDeregistered(),
            )
        }
        self._meters: dict[str, MeterEntry] = {}
        self._next_block = community.deployment.block
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
            w3 = self._community.client.w3
            head = w3.eth.block_number
            applied = 0
            while self._next_block <= head:
                last = min(head, self._next_block + MAX_BLOCKS_PER_QUERY - 1)
                logs = w3.eth.get_logs(
                    {
                        "address": self._community.registry.address,
                        "fromBlock": self._next_block,
                        "toBlock": last,
                        "topics": [list(self._events)],
                    }
                )
                for entry in logs:
                    self._apply(self._events[bytes(entry["topics"][0])].process_log(entry))
                applied += len(logs)
                self._next_block = last + 1
            return applied

    def _apply(self, event) -> None:
        args = event["args"]
        meter_id = units.decode_id(args["meterId"])
        known = self._meters.get(meter_id)
        if event["event"] == "MeterRegistered":
            signer = to_checksum_address(args["signer"])
            self._meters[meter_id] = MeterEntry(meter_id, signer, args["bus"], active=True)
        elif known is not None and event["event"] == "MeterSignerChanged":
            self._meters[meter_id] = replace(known, signer=to_checksum_address(args["signer"]))
        elif known is not None:
            self._meters[meter_id] = replace(known, active=False)
