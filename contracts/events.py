"""One event follower for every service: a contract's events block range by block range,
decoded, and safe against reorganisations of the chain.

A follower remembers the hash of the last block of each range it delivered (a
checkpoint). When the chain no longer holds a checkpoint's block, the blocks after the
newest checkpoint still on the chain are delivered again and the update says from which
block (``rewound_from``): a consumer that keeps state derived from events drops what came
from those blocks, or rebuilds. Proof-of-authority chains (Clique) do reorganise when an
out-of-turn block loses to an in-turn one, so this is ordinary operation, not an accident.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from eth_utils import event_abi_to_log_topic
from web3.contract.contract import Contract

from contracts.client import ChainClient

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BLOCKS_PER_QUERY = 5_000
CHECKPOINTS_KEPT = 256


@dataclass(frozen=True)
class ChainEvent:
    """One decoded event log."""

    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int
    transaction_hash: bytes


@dataclass(frozen=True)
class EventUpdate(Generic[T]):
    """What one ``poll`` found: the new items in chain order, the block they reach, and
    the first block delivered again after a reorganisation (None when there was none)."""

    items: list[T]
    head: int
    rewound_from: int | None = None


@dataclass
class EventFollower(Generic[T]):
    """The ``event_names`` events of ``contract`` from ``from_block`` on, each delivered
    once per canonical block (again after a reorganisation), decoded by ``decode`` (which
    returns a list of items per event when ``many`` is set)."""

    client: ChainClient
    contract: Contract
    event_names: Sequence[str]
    from_block: int
    decode: Callable[[ChainEvent], T] = field(default=lambda event: event)  # type: ignore[assignment]
    max_blocks: int = MAX_BLOCKS_PER_QUERY
    many: bool = False
    _checkpoints: list[tuple[int, bytes]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._next_block = self.from_block
        self._events = {}
        for name in self.event_names:
            event = getattr(self.contract.events, name)()
            self._events[event_abi_to_log_topic(event.abi)] = event

    @property
    def next_block(self) -> int:
        """The first block the next poll reads."""
        return self._next_block

    def poll(self, to_block: int | None = None) -> EventUpdate[T]:
        """Every event from the next unread block up to ``to_block`` (default: the head)."""
        w3 = self.client.w3
        rewound_from = self._rewind_if_reorganised()
        head = w3.eth.block_number if to_block is None else to_block
        items: list[T] = []
        while self._next_block <= head:
            last = min(head, self._next_block + self.max_blocks - 1)
            last_hash = bytes(w3.eth.get_block(last)["hash"])
            logs = w3.eth.get_logs(
                {
                    "address": self.contract.address,
                    "fromBlock": self._next_block,
                    "toBlock": last,
                    "topics": [list(self._events)],
                }
            )
            if any(bytes(entry["blockHash"]) != last_hash for entry in logs if entry["blockNumber"] == last):
                continue  # the range's last block changed while we read it: read again
            for entry in logs:
                decoded = self._events[bytes(entry["topics"][0])].process_log(entry)
                event = ChainEvent(
                    name=decoded["event"],
                    args=dict(decoded["args"]),
                    block_number=entry["blockNumber"],
                    log_index=entry["logIndex"],
                    transaction_hash=bytes(entry["transactionHash"]),
                )
                if self.many:
                    items.extend(self.decode(event))  # type: ignore[arg-type]
                else:
                    items.append(self.decode(event))
            self._checkpoints.append((last, last_hash))
            del self._checkpoints[:-CHECKPOINTS_KEPT]
            self._next_block = last + 1
        return EventUpdate(items, self._next_block - 1, rewound_from)

    def _rewind_if_reorganised(self) -> int | None:
        """Go back to the newest checkpoint still on the chain; the first block to read
        again, or None when every checkpoint holds."""
        if not self._checkpoints:
            return None
        w3 = self.client.w3
        kept = len(self._checkpoints)
        while kept and not self._still_canonical(*self._checkpoints[kept - 1], w3):
            kept -= 1
        if kept == len(self._checkpoints):
            return None
        self._next_block = self._checkpoints[kept - 1][0] + 1 if kept else self.from_block
        del self._checkpoints[kept:]
        log.info("chain reorganised: %s events from block %d again", self.contract.address, self._next_block)
        return self._next_block

    @staticmethod
    def _still_canonical(number: int, block_hash: bytes, w3) -> bool:
        try:
            return bytes(w3.eth.get_block(number)["hash"]) == block_hash
        except Exception:  # the block is gone (the chain got shorter)
            return False
