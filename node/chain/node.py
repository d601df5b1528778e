"""The embedded proof-of-authority node: chain on disk, transaction pool, Clique sealing.

One ``PoaNode`` holds at most one sealer key. It seals a block every ``period`` seconds
when it is the in-turn signer (difficulty 2); when the in-turn signer stays silent it
seals out of turn (difficulty 1) after a delay that grows with its distance from the
in-turn signer, so two backups rarely collide. Nodes in one process can be linked as
peers: sealed blocks and new transactions are passed on, and every imported block is
validated by Clique's rules and re-executed. The heavier chain (total difficulty) wins.

Block timestamps follow the node's clock (``use_clock``; real time by default). On an
accelerated clock (``speed`` community seconds per real second, for demos and tests) blocks
come every ``period`` clock seconds but at most every ``MIN_REAL_BLOCK_INTERVAL_S`` real
seconds (at 20×: 10 clock seconds apart), so contracts see minutes and slots pass at the
clock's pace and a transaction still lands within seconds of clock time.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import rlp
from eth.abc import BlockAPI, BlockHeaderAPI, SignedTransactionAPI
from eth.chains.base import Chain
from eth.consensus.clique import _utils as clique_utils
from eth.constants import SECPK1_N, ZERO_ADDRESS
from eth.db.atomic import AtomicDB
from eth.db.backends.memory import MemoryDB
from eth.exceptions import HeaderNotFound
from eth_keys.datatypes import PrivateKey
from eth_typing import Address
from eth_utils import ValidationError, to_canonical_address

from node.chain.consensus import (
    Vote,
    build_and_seal,
    build_block,
    chain_class,
    in_turn_signer,
    recently_signed,
    signer_of,
    sorted_signers,
    state_at,
    validate_clique_extras,
)
from node.chain.export import CHAIN_FILE
from node.chain.genesis import GenesisConfig
from node.chain.kvstore import SqliteStore
from node.chain.pool_journal import PoolJournal
from node.chain.txpool import AccountView, TransactionRejected, TxPool

log = logging.getLogger(__name__)

POOL_FILE = "txpool.sqlite"
OUT_OF_TURN_STEP_S = 0.5
MIN_REAL_BLOCK_INTERVAL_S = 0.5  # however fast the clock: py-evm seals a block in ~50 ms


@dataclass(frozen=True)
class ImportOutcome:
    block: BlockAPI
    became_head: bool


class PoaNode:
    """A Clique node: one optional sealer key, a chain database, a transaction pool."""

    def __init__(
        self,
        genesis: GenesisConfig,
        data_dir: Path | None = None,
        sealer_key: PrivateKey | None = None,
        name: str = "node",
    ):
        self.genesis = genesis
        self.name = name
        self.period = genesis.period
        self.sealer_key = sealer_key
        self.sealer = sealer_key.public_key.to_canonical_address() if sealer_key else None
        self.lock = threading.RLock()
        self.head_changed = threading.Condition(self.lock)
        self._store = SqliteStore(data_dir / CHAIN_FILE) if data_dir else None
        database = AtomicDB(self._store if self._store is not None else MemoryDB())
        chain_type = chain_class(genesis.chain_id)
        try:
            self.chain: Chain = chain_type(database)
            self._check_genesis()
        except HeaderNotFound:
            self.chain = chain_type.from_genesis(database, genesis.header_params(), genesis.state())
            self._commit()
        self.pool = TxPool()
        self._journal = PoolJournal(data_dir / POOL_FILE) if data_dir else None
        self.votes: dict[Address, bool] = {}
        self.peers: list[PoaNode] = []
        self.sealing_enabled = sealer_key is not None
        self._inbox: queue.Queue = queue.Queue()
        self._running = False
        self._threads: list[threading.Thread] = []
        self._block_listeners: list[Callable[[BlockAPI], None]] = []
        self._transaction_listeners: list[Callable[[SignedTransactionAPI], None]] = []
        self._pending_cache: tuple[tuple, BlockAPI] | None = None
        self._head_cache: tuple | None = None
        self._builds = 0  # blocks being built outside the lock (see _discard)
        self.now: Callable[[], float] = time.time  # the clock block timestamps follow
        self.clock_speed = 1.0
        self._restore_pool()

    def use_clock(self, now: Callable[[], float], speed: float = 1.0) -> None:
        """Follow the clock ``now`` (Unix seconds) that runs ``speed`` seconds per real second."""
        if not speed > 0:
            raise ValueError(f"the clock speed must be > 0, got {speed:g}")
        self.now, self.clock_speed = now, float(speed)
        # py-evm's Clique refuses headers from the future by real time; an accelerated clock
        # is ahead of it. Its check is process-wide, as the community clock is.
        clique_utils.eth_now = lambda: int(max(time.time(), now()))
        with self.head_changed:
            self.head_changed.notify_all()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> PoaNode:
        """Start the sealing and peer-message threads."""
        self._running = True
        for target, label in ((self._seal_loop, "seal"), (self._inbox_loop, "inbox")):
            thread = threading.Thread(target=target, name=f"{self.name}-{label}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("%s started at block %d", self.name, self.head.block_number)
        return self

    def stop(self) -> None:
        """Stop the threads and close the database (all sealed blocks are on disk)."""
        self._running = False
        self._inbox.put(None)
        with self.head_changed:
            self.head_changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        for peer in self.peers:
            if self in peer.peers:
                peer.peers.remove(self)
        self.peers.clear()
        with self.lock:
            if self._store is not None:
                self._store.close()
            if self._journal is not None:
                self._journal.close()
        log.info("%s stopped", self.name)

    @property
    def running(self) -> bool:
        return self._running

    def on_block(self, listener: Callable[[BlockAPI], None]) -> None:
        """Call ``listener(block)`` for every new canonical head."""
        self._block_listeners.append(listener)

    def on_transaction(self, listener: Callable[[SignedTransactionAPI], None]) -> None:
        """Call ``listener(transaction)`` for every transaction newly admitted to the pool
        (from a client or a peer; not for those that return from a dropped branch)."""
        self._transaction_listeners.append(listener)

    # ------------------------------------------------------------------- reading

    @property
    def head(self) -> BlockHeaderAPI:
        with self.lock:
            return self.chain.get_canonical_head()

    def signers(self, header: BlockHeaderAPI | None = None) -> list[Address]:
        with self.lock:
            return sorted_signers(self.chain, header or self.chain.get_canonical_head())

    def account_view(self, address: Address) -> AccountView:
        with self.lock:
            head = self.chain.get_canonical_head()
            state, base_fee = self._head_state(head)
            return AccountView(
                nonce=state.get_nonce(address),
                balance=state.get_balance(address),
                base_fee=base_fee,
                block_gas_limit=head.gas_limit,
            )

    def _head_state(self, head: BlockHeaderAPI):
        """The head's state (read only, its account reads cached) and the next base fee,
        kept until the head changes; the caller holds the lock."""
        if self._head_cache is None or self._head_cache[0] != head.hash:
            self._head_cache = (head.hash, state_at(self.chain, head), self.next_base_fee())
        return self._head_cache[1], self._head_cache[2]

    def next_base_fee(self) -> int:
        """The base fee of the block that will follow the head (EIP-1559)."""
        with self.lock:
            head = self.chain.get_canonical_head()
            vm_class = self.chain.get_vm_class_for_block_number(head.block_number + 1)
            return vm_class.create_header_from_parent(head).base_fee_per_gas

    def pending_nonce(self, address: Address) -> int:
        """The next nonce of ``address`` counting its executable transactions in the pool."""
        with self.lock:
            nonce_of = self.chain_nonce_reader()
            queued = sum(1 for tx in self.pool.executable(nonce_of) if tx.sender == address)
            return nonce_of(address) + queued

    # -------------------------------------------------------------- transactions

    def submit_raw_transaction(self, raw: bytes) -> bytes:
        """Decode, check and admit a signed transaction; returns its hash. Raises
        ``TransactionRejected`` with the reason a client expects."""
        transaction = self.decode_transaction(raw)
        with self.lock:
            tx_hash = self.pool.add(transaction, self.account_view(transaction.sender), len(raw))
            if self._journal is not None:
                self._journal.add(transaction)
        log.debug("%s accepted transaction 0x%s", self.name, tx_hash.hex())
        for listener in self._transaction_listeners:
            try:
                listener(transaction)
            except Exception:
                log.exception("transaction listener failed")
        for peer in list(self.peers):
            peer._inbox.put(("transaction", raw))
        return tx_hash

    def decode_transaction(self, raw: bytes) -> SignedTransactionAPI:
        with self.lock:
            builder = self.chain.get_vm().get_transaction_builder()
        try:
            transaction = builder.decode(raw)
        except (rlp.DecodingError, rlp.DeserializationError, ValidationError, ValueError, TypeError) as error:
            raise TransactionRejected(f"rlp: invalid transaction encoding ({error})") from None
        chain_id = getattr(transaction, "chain_id", None)
        if chain_id is None:
            raise TransactionRejected("only replay-protected (EIP-155) transactions allowed over RPC")
        if chain_id != self.genesis.chain_id:
            raise TransactionRejected(
                f"invalid chain id for signer: have {chain_id} want {self.genesis.chain_id}"
            )
        if not (0 < transaction.r < SECPK1_N and 0 < transaction.s <= SECPK1_N // 2):  # EIP-2: low s
            raise TransactionRejected("invalid transaction v, r, s values")
        try:
            transaction.sender  # noqa: B018 (one recovery validates the signature and is cached)
        except (ValidationError, ValueError, Exception) as error:
            raise TransactionRejected(f"invalid sender: {error}") from None
        return transaction

    # ------------------------------------------------------------------- sealing

    def propose(self, address: str, authorize: bool) -> None:
        """Vote (in the blocks this node seals) to add or drop ``address`` as a signer."""
        with self.lock:
            self.votes[to_canonical_address(address)] = authorize

    def discard_proposal(self, address: str) -> None:
        with self.lock:
            self.votes.pop(to_canonical_address(address), None)

    def seal_delay(self, parent: BlockHeaderAPI, now: float) -> float | None:
        """Clock seconds (``now`` is the clock's) until this node should seal the child of
        ``parent``; None if it may not."""
        if self.sealer is None or not self.sealing_enabled:
            return None
        signers = sorted_signers(self.chain, parent)
        if self.sealer not in signers:
            return None
        if recently_signed(self.chain, parent, self.sealer, len(signers)):
            return None
        due = parent.timestamp + max(self.period, MIN_REAL_BLOCK_INTERVAL_S * self.clock_speed)
        in_turn = in_turn_signer(signers, parent.block_number + 1)
        if in_turn != self.sealer:
            distance = (signers.index(self.sealer) - signers.index(in_turn)) % len(signers)
            due += OUT_OF_TURN_STEP_S * self.clock_speed * (len(signers) // 2 + distance)
        return max(0.0, due - now)

    def seal_next_block(self) -> BlockAPI | None:
        """Seal the child of the current head now (the caller checked it is due). The block
        is built without the node's lock, so reads and admissions go on meanwhile; it is
        dropped (None) if another block became the head in the meantime."""
        with self.lock:
            parent = self.chain.get_canonical_head()
            candidates = self.pool.executable(self.chain_nonce_reader())
            vote = self._next_vote(parent)
        timestamp = max(parent.timestamp + self.period, int(self.now()))
        with self._building_outside_lock():
            sealed = build_and_seal(self.chain, self.sealer_key, candidates, timestamp, vote, parent)
        with self.lock:
            if self.chain.get_canonical_head() != parent:
                log.debug(
                    "%s: the head moved while block %d was built; dropped", self.name, parent.block_number + 1
                )
                return None
            try:
                result = self.chain.persist_block(sealed.block)
            except Exception:
                self._discard()
                raise
            self._commit()
            self.pool.remove(sealed.included)
            for transaction, reason in sealed.dropped:
                log.warning("%s dropped transaction 0x%s: %s", self.name, transaction.hash.hex(), reason)
            self.pool.remove(tx for tx, _ in sealed.dropped)
            self._after_new_head(result.new_canonical_blocks, result.old_canonical_blocks)
        block = sealed.block
        level = logging.INFO if block.transactions else logging.DEBUG
        log.log(
            level,
            "%s sealed block %d (%d transactions, %d gas, difficulty %d)",
            self.name,
            block.number,
            len(block.transactions),
            block.header.gas_used,
            block.header.difficulty,
        )
        self._broadcast(block)
        return block

    def pending_block(self) -> BlockAPI:
        """geth's pending block: what this node would seal now (the pool's executable
        transactions on the head), unsealed. Cached until the head or the pool changes."""
        with self.lock:
            parent = self.chain.get_canonical_head()
            candidates = self.pool.executable(self.chain_nonce_reader())
        key = (parent.hash, tuple(tx.hash for tx in candidates))
        cached = self._pending_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        timestamp = max(parent.timestamp + self.period, int(self.now()))
        with self._building_outside_lock():
            block = build_block(self.chain, parent, self.sealer or ZERO_ADDRESS, candidates, timestamp).block
        self._pending_cache = (key, block)
        return block

    # ------------------------------------------------------------- block import

    def import_block(self, block: BlockAPI) -> ImportOutcome:
        """Validate (Clique rules, re-execution) and store a block from a peer."""
        with self.lock:
            try:
                self.chain.get_block_header_by_hash(block.hash)
                return ImportOutcome(block, False)  # already known
            except HeaderNotFound:
                pass
            validate_clique_extras(self.chain, block.header, self.period)
            try:
                result = self.chain.import_block(block)
            except Exception:
                self._discard()
                raise
            self._commit()
            became_head = bool(result.new_canonical_blocks)
            self._after_new_head(result.new_canonical_blocks, result.old_canonical_blocks)
        log.debug("%s imported block %d by 0x%s", self.name, block.number, signer_of(block.header).hex())
        return ImportOutcome(block, became_head)

    # ---------------------------------------------------------------- internals

    def _restore_pool(self) -> None:
        """Re-admit the journalled transactions that are still valid (see ``PoolJournal``)."""
        if self._journal is None:
            return
        restored = dropped = 0
        with self.lock:
            for raw in self._journal.load():
                try:
                    transaction = self.decode_transaction(raw)
                    self.pool.add(transaction, self.account_view(transaction.sender), len(raw))
                    restored += 1
                except TransactionRejected:
                    dropped += 1  # mined meanwhile, or no longer valid
            self._journal.match(self.pool.transactions())
        if restored or dropped:
            log.info(
                "%s restored %d pending transactions from its journal (%d no longer valid)",
                self.name,
                restored,
                dropped,
            )

    def _check_genesis(self) -> None:
        stored = self.chain.get_canonical_block_header_by_number(0)
        if stored.extra_data != self.genesis.extra_data() or stored.gas_limit != self.genesis.gas_limit:
            raise ValueError("the chain database belongs to a different genesis")

    def _commit(self) -> None:
        if self._store is not None:
            self._store.commit()

    def _discard(self) -> None:
        """Forget the uncommitted writes of a refused block, unless a block is being built
        outside the lock: its new state is among them. What a refused block left behind
        is unreferenced trie nodes (py-evm writes headers and bodies only once a block is
        valid), harmless to commit with the next block."""
        if self._store is not None and self._builds == 0:
            self._store.discard()

    @contextlib.contextmanager
    def _building_outside_lock(self):
        with self.lock:
            self._builds += 1
        try:
            yield
        finally:
            with self.lock:
                self._builds -= 1

    def chain_nonce_reader(self) -> Callable[[Address], int]:
        """``nonce_of(address)`` on the state of the canonical head (the caller holds the lock)."""
        return self._head_state(self.chain.get_canonical_head())[0].get_nonce

    def _next_vote(self, parent: BlockHeaderAPI) -> Vote | None:
        """A pending proposal that would change the signer set (others are dropped)."""
        signers = set(sorted_signers(self.chain, parent))
        for subject, authorize in list(self.votes.items()):
            if (subject in signers) != authorize:
                return Vote(subject, authorize)
            del self.votes[subject]
        return None

    def _after_new_head(self, new_blocks, old_blocks) -> None:
        if not new_blocks:
            return
        included = {tx.hash for block in new_blocks for tx in block.transactions}
        reverted = [tx for block in old_blocks for tx in block.transactions if tx.hash not in included]
        nonce_of = self.chain_nonce_reader()
        for transaction in reverted:  # transactions of blocks that left the canonical chain
            with contextlib.suppress(TransactionRejected):
                self.pool.add(transaction, self.account_view(transaction.sender), 0)
        self.pool.prune(nonce_of)
        if self._journal is not None:
            self._journal.match(self.pool.transactions())
        self.head_changed.notify_all()
        for block in new_blocks:
            for listener in self._block_listeners:
                try:
                    listener(block)
                except Exception:
                    log.exception("block listener failed")

    def _broadcast(self, block: BlockAPI) -> None:
        for peer in list(self.peers):
            peer._inbox.put(("block", (block, self)))

    def _seal_loop(self) -> None:
        """Seal whenever it is due; an error is logged and sealing goes on (the thread never
        dies while the node runs)."""
        while self._running:
            try:
                with self.head_changed:
                    parent = self.chain.get_canonical_head()
                    delay = self.seal_delay(parent, self.now())
                    if delay is None or delay > 0:
                        wait = 1.0 if delay is None else delay / self.clock_speed
                        self.head_changed.wait(timeout=min(wait, 1.0))
                        continue
                self.seal_next_block()  # drops its block itself if the head moved meanwhile
            except Exception:
                log.exception("%s failed to seal a block", self.name)
                time.sleep(self.period)

    def _inbox_loop(self) -> None:
        while self._running:
            message = self._inbox.get()
            if message is None:
                return
            kind, payload = message
            try:
                if kind == "block":
                    self._receive_block(*payload)
                else:
                    self.submit_raw_transaction(payload)
            except TransactionRejected:
                pass  # already known, or stale
            except Exception as error:
                log.warning("%s refused a %s from a peer: %s", self.name, kind, error)

    def _receive_block(self, block: BlockAPI, sender: PoaNode) -> None:
        for ancestor in self._missing_ancestors(block, sender):
            self.import_block(ancestor)
        outcome = self.import_block(block)
        if outcome.became_head:
            self._broadcast(block)

    def _knows(self, block_hash: bytes) -> bool:
        with self.lock:
            try:
                self.chain.get_block_header_by_hash(block_hash)
            except HeaderNotFound:
                return False
            return True

    def _missing_ancestors(self, block: BlockAPI, sender: PoaNode) -> list[BlockAPI]:
        """Blocks between our chain and ``block``, fetched from ``sender`` (catch-up after
        an outage). Never holds both nodes' locks at once."""
        missing: list[BlockAPI] = []
        parent_hash = block.header.parent_hash
        while not self._knows(parent_hash):
            with sender.lock:
                ancestor = sender.chain.get_block_by_hash(parent_hash)
            missing.append(ancestor)
            parent_hash = ancestor.header.parent_hash
        return list(reversed(missing))


def link(*nodes: PoaNode) -> None:
    """Make every node a peer of every other (an in-process network)."""
    for node in nodes:
        for other in nodes:
            if other is not node and other not in node.peers:
                node.peers.append(other)
