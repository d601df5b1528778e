"""Queued readings → ``MeasurementLedger.recordReadings`` transactions, until confirmed.

Every ``flush_interval_s`` the submitter sends the queued readings whose minute has
started on chain, in batches of at most ``max_batch``, several transactions in flight
(pipelined nonces, fixed gas: nothing is estimated). Each batch is half fresh readings
(the newest minutes, newest first: what the OCM needs now) and half the oldest backlog
(so it drains), sorted by meter and minute so that the ledger writes a meter's slot once;
readings with phases go in ``recordPhaseReadings`` transactions of their own.
A reading leaves the queue only when a receipt shows it recorded. Idempotency per
(meter, minute): a reading that was sent before (a retry, or a restart after a crash) is
first looked up on chain (``Ledger.recorded``), and a refused batch is explained by
``Ledger.explain_refusal``: a reading the ledger already holds is marked delivered and the
rest sent again; a reading it will never take (unknown or deregistered meter, value out of range) goes to the
dead-letter table. Anything else (node down, lost transaction, missing role) leaves the
readings queued and is retried with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from web3.exceptions import TransactionNotFound

from contracts import clock
from contracts.client import ChainError, ContractRevert, Signer
from contracts.community import Community
from contracts.ledger import Ledger
from gateway.queue import QueuedReading, ReadingQueue
from gateway.ratelimit import ThrottledLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitterSettings:
    max_batch: int = 300  # readings per transaction (52 or 101 calldata bytes and ≤ 32k gas each)
    max_in_flight: int = 64  # transactions sent but not yet confirmed (a node pools 256 per sender)
    flush_interval_s: float = 0.1
    fresh_share: float = 0.5  # of each batch for the newest minutes (ReadingQueue.take)
    base_gas: int = 100_000
    gas_per_reading: int = 32_000  # the worst case (a new meter and slot word) is ~31k with calldata
    lost_after_s: float = 30.0  # no receipt by then: ask the node whether it still has it
    max_backoff_s: float = 10.0
    receipt_scan_blocks: int = 20  # up to this many new blocks: one eth_getBlockReceipts each


@dataclass
class InFlight:
    tx_hash: bytes
    items: list[QueuedReading]
    sent_at: float = field(default_factory=time.monotonic)


DeadLetterHandler = Callable[[Sequence[QueuedReading], str], None]


class Submitter:
    """Moves readings from the queue onto the chain, in its own thread."""

    def __init__(
        self,
        community: Community,
        signer: Signer,
        queue: ReadingQueue,
        settings: SubmitterSettings | None = None,
        on_dead_letter: DeadLetterHandler | None = None,
    ):
        self.community = community
        self.signer = signer
        self.queue = queue
        self.settings = settings or SubmitterSettings()
        self.delivered = 0
        self._on_dead_letter = on_dead_letter or (lambda items, detail: None)
        self._in_flight: dict[bytes, InFlight] = {}
        self._head_number: int | None = None
        self._head_time = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors = ThrottledLog(log, logging.WARNING)

    def start(self) -> Submitter:
        self._thread = threading.Thread(target=self._run, name="gateway-submitter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def in_flight(self) -> int:
        return sum(len(entry.items) for entry in self._in_flight.values())

    def step(self) -> None:
        """One round: follow the head, settle receipts, send what is ready."""
        client = self.community.client
        head = client.w3.eth.get_block("latest")
        if head["number"] != self._head_number:
            self._settle_receipts(self._head_number, head["number"])
            self._head_number, self._head_time = head["number"], head["timestamp"]
        self._release_lost()
        latest_minute_start = clock.floor_to_minute(self._head_time)
        while len(self._in_flight) < self.settings.max_in_flight:
            batch = self.queue.take(self.settings.max_batch, latest_minute_start, self.settings.fresh_share)
            if not batch:
                return
            try:
                batch = self._drop_recorded(batch)
                if batch:
                    self._send(batch)
            except BaseException:
                self.queue.release([item.id for item in batch])
                raise

    # ------------------------------------------------------------------ internals

    def _run(self) -> None:
        backoff = self.settings.flush_interval_s
        while not self._stop.is_set():
            try:
                self.step()
                backoff = self.settings.flush_interval_s
            except Exception as error:  # node unreachable or refusing: keep the queue, retry
                self._errors.log("step", "cannot reach the chain, readings stay queued: %s", _brief(error))
                self.community.client.forget_nonces()
                backoff = min(2 * backoff, self.settings.max_backoff_s)
            self._stop.wait(backoff)

    def _drop_recorded(self, batch: list[QueuedReading]) -> list[QueuedReading]:
        """Deliver the retried readings the chain already holds; the rest is to send."""
        retried = [item for item in batch if item.attempts > 0]
        if not retried:
            return batch
        recorded = self.community.ledger.recorded([item.reading for item in retried])
        held = {item.id for item, is_recorded in zip(retried, recorded, strict=True) if is_recorded}
        if held:
            self.queue.deliver(sorted(held), None, None)
            self.delivered += len(held)
        return [item for item in batch if item.id not in held]

    def _send(self, batch: list[QueuedReading]) -> None:
        """One transaction per kind of reading in ``batch``: without phases (``recordReadings``),
        with phases (``recordPhaseReadings``)."""
        batch = sorted(batch, key=lambda item: (item.reading.meter_id, item.reading.time))
        for kind in (False, True):
            of_kind = [item for item in batch if (item.reading.phases is not None) == kind]
            if not of_kind:
                continue
            gas = self.settings.base_gas + self.settings.gas_per_reading * len(of_kind)
            call = self.community.ledger.record_readings_call([item.reading for item in of_kind])
            tx_hash = self.community.client.send(call, self.signer, gas=gas)
            self._in_flight[tx_hash] = InFlight(tx_hash, of_kind)
            log.debug("sent %d readings in 0x%s", len(of_kind), tx_hash.hex())

    def _settle_receipts(self, last_seen: int | None, head: int) -> None:
        """Deliver the readings of confirmed transactions, handle the failed ones."""
        if not self._in_flight:
            return
        receipts = self._receipts(last_seen, head)
        deliveries = []
        for tx_hash, receipt in receipts.items():
            entry = self._in_flight.pop(tx_hash)
            if receipt["status"] == 1:
                deliveries += [(item.id, tx_hash, receipt["blockNumber"]) for item in entry.items]
                continue
            try:
                self.community.client.wait(tx_hash)  # decodes the revert
            except ContractRevert as revert:
                self._handle_revert(entry, revert)
            except ChainError as error:  # failed without a decodable reason: retry, checking first
                self._errors.log("failed", "batch transaction failed, retrying its readings: %s", error)
                self.queue.release([item.id for item in entry.items])
        if deliveries:
            self.queue.deliver_all(deliveries)
            self.delivered += len(deliveries)

    def _receipts(self, last_seen: int | None, head: int) -> dict[bytes, dict]:
        """Receipts of in-flight transactions mined up to ``head``: one call per new block,
        or one per transaction after a long gap."""
        w3 = self.community.client.w3
        found = {}
        if last_seen is not None and head - last_seen <= self.settings.receipt_scan_blocks:
            for number in range(last_seen + 1, head + 1):
                for receipt in w3.eth.get_block_receipts(number):
                    tx_hash = bytes(receipt["transactionHash"])
                    if tx_hash in self._in_flight:
                        found[tx_hash] = receipt
            return found
        for tx_hash in self._in_flight:
            with contextlib.suppress(TransactionNotFound):
                found[tx_hash] = w3.eth.get_transaction_receipt(tx_hash)
        return found

    def _handle_revert(self, entry: InFlight, revert: ContractRevert) -> None:
        """Deliver what the ledger holds, dead-letter what it never takes, queue the rest again."""
        refusal = Ledger.explain_refusal(revert, [item.reading for item in entry.items])
        settled = set(refusal.already_recorded) | set(refusal.never_accepted)
        self.queue.release([item.id for i, item in enumerate(entry.items) if i not in settled])
        if refusal.already_recorded:
            self.queue.deliver([entry.items[i].id for i in refusal.already_recorded], None, None)
            self.delivered += len(refusal.already_recorded)
        if refusal.never_accepted:
            culprits = [entry.items[i] for i in refusal.never_accepted]
            detail = f"the ledger refused it: {refusal.error}"
            self.queue.dead_letter([item.id for item in culprits], "chain_refused", detail)
            meters = sorted({item.reading.meter_id for item in culprits})
            self._errors.log(
                refusal.error, "%d readings of %s dead-lettered: %s", len(culprits), meters, detail
            )
            self._on_dead_letter(culprits, detail)
        if not refusal.already_recorded and not refusal.never_accepted:
            self._errors.log(refusal.error, "batch refused, readings stay queued: %s", revert)

    def _release_lost(self) -> None:
        """Send again what the node no longer knows (it restarted without its pool)."""
        now = time.monotonic()
        lost = []
        for tx_hash, entry in self._in_flight.items():
            if now - entry.sent_at < self.settings.lost_after_s:
                continue
            try:
                self.community.client.w3.eth.get_transaction(tx_hash)
                entry.sent_at = now  # still pending: ask again later
            except TransactionNotFound:
                lost.append(tx_hash)
        for tx_hash in lost:
            self.queue.release([item.id for item in self._in_flight.pop(tx_hash).items])
            self._errors.log("lost", "the node lost 0x%s; its readings go out again", tx_hash.hex())
        if lost:
            self.community.client.forget_nonces()


def _brief(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:200] + "…"
