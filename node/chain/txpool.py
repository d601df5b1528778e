"""Pending transactions: admission checks with geth's error messages, nonce ordering.

A transaction is admitted when it is well formed and could pay for itself; it waits
until its nonce is next for its sender. Blocks take executable transactions in nonce
order per sender, senders by tip (then arrival).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from eth.abc import SignedTransactionAPI
from eth_typing import Address

MAX_TRANSACTION_BYTES = 128 * 1024
MAX_QUEUED_PER_SENDER = 256
MAX_POOL_SIZE = 20_000
REPLACEMENT_BUMP_PERCENT = 10


class TransactionRejected(ValueError):
    """A transaction the pool refuses; the message is what geth would answer."""


@dataclass(order=True)
class _Entry:
    tip: int
    arrival: int
    transaction: SignedTransactionAPI = field(compare=False)


def max_fee(transaction: SignedTransactionAPI) -> int:
    return getattr(transaction, "max_fee_per_gas", None) or transaction.gas_price


def max_tip(transaction: SignedTransactionAPI) -> int:
    return getattr(transaction, "max_priority_fee_per_gas", None) or transaction.gas_price


@dataclass(frozen=True)
class AccountView:
    """What admission needs to know of the sender and the chain."""

    nonce: int
    balance: int
    base_fee: int
    block_gas_limit: int


class TxPool:
    """Pending transactions by sender and nonce."""

    def __init__(self) -> None:
        self._by_sender: dict[Address, dict[int, _Entry]] = {}
        self._by_hash: dict[bytes, SignedTransactionAPI] = {}
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._by_hash

    def get(self, tx_hash: bytes) -> SignedTransactionAPI | None:
        return self._by_hash.get(tx_hash)

    def add(self, transaction: SignedTransactionAPI, account: AccountView, size: int) -> bytes:
        """Admit ``transaction`` or raise ``TransactionRejected``; returns its hash."""
        if transaction.hash in self._by_hash:
            raise TransactionRejected("already known")
        self._check(transaction, account, size)
        sender = transaction.sender
        queue = self._by_sender.setdefault(sender, {})
        previous = queue.get(transaction.nonce)
        if previous is not None:
            old = previous.transaction
            bump = 100 + REPLACEMENT_BUMP_PERCENT
            if (
                max_fee(transaction) * 100 < max_fee(old) * bump
                or max_tip(transaction) * 100 < max_tip(old) * bump
            ):
                raise TransactionRejected("replacement transaction underpriced")
            del self._by_hash[old.hash]
        elif len(queue) >= MAX_QUEUED_PER_SENDER:
            raise TransactionRejected(f"txpool is full for sender 0x{sender.hex()}")
        elif len(self._by_hash) >= MAX_POOL_SIZE:
            raise TransactionRejected("txpool is full")
        queue[transaction.nonce] = _Entry(-max_tip(transaction), next(self._arrivals), transaction)
        self._by_hash[transaction.hash] = transaction
        return transaction.hash

    def transactions(self) -> list[SignedTransactionAPI]:
        return list(self._by_hash.values())

    def by_sender(self) -> dict[Address, dict[int, SignedTransactionAPI]]:
        """Every pooled transaction by sender and nonce (a copy)."""
        return {
            sender: {nonce: entry.transaction for nonce, entry in sorted(queue.items())}
            for sender, queue in self._by_sender.items()
        }

    def executable(self, nonce_of) -> list[SignedTransactionAPI]:
        """Transactions that can run now, in inclusion order; ``nonce_of(sender)`` gives
        the sender's next nonce on chain."""
        runs: list[list[_Entry]] = []
        for sender, queue in self._by_sender.items():
            nonce, run = nonce_of(sender), []
            while nonce in queue:
                run.append(queue[nonce])
                nonce += 1
            if run:
                runs.append(run)
        ordered: list[SignedTransactionAPI] = []
        while runs:  # the best head of any sender's run goes next (keeps nonce order)
            best = min(range(len(runs)), key=lambda i: runs[i][0])
            ordered.append(runs[best].pop(0).transaction)
            if not runs[best]:
                runs.pop(best)
        return ordered

    def remove(self, transactions) -> None:
        for transaction in transactions:
            self._forget(transaction.sender, transaction.nonce, transaction.hash)

    def prune(self, nonce_of) -> None:
        """Drop transactions whose nonce the chain has passed."""
        for sender in list(self._by_sender):
            floor = nonce_of(sender)
            for nonce, entry in list(self._by_sender[sender].items()):
                if nonce < floor:
                    self._forget(sender, nonce, entry.transaction.hash)

    def _forget(self, sender: Address, nonce: int, tx_hash: bytes) -> None:
        queue = self._by_sender.get(sender)
        if queue and nonce in queue and queue[nonce].transaction.hash == tx_hash:
            del queue[nonce]
            if not queue:
                del self._by_sender[sender]
        self._by_hash.pop(tx_hash, None)

    @staticmethod
    def _check(transaction: SignedTransactionAPI, account: AccountView, size: int) -> None:
        if size > MAX_TRANSACTION_BYTES:
            raise TransactionRejected(
                f"oversized data: transaction size {size}, limit {MAX_TRANSACTION_BYTES}"
            )
        if transaction.nonce < account.nonce:
            raise TransactionRejected(
                f"nonce too low: next nonce {account.nonce}, tx nonce {transaction.nonce}"
            )
        if transaction.gas > account.block_gas_limit:
            raise TransactionRejected("exceeds block gas limit")
        intrinsic = transaction.intrinsic_gas
        if transaction.gas < intrinsic:
            raise TransactionRejected(
                f"intrinsic gas too low: gas {transaction.gas}, minimum needed {intrinsic}"
            )
        tip, fee_cap = max_tip(transaction), max_fee(transaction)
        if tip > fee_cap:
            raise TransactionRejected(
                "max priority fee per gas higher than max fee per gas: "
                f"address 0x{transaction.sender.hex()}, maxPriorityFeePerGas: {tip}, maxFeePerGas: {fee_cap}"
            )
        if max_fee(transaction) < account.base_fee:
            raise TransactionRejected(
                f"max fee per gas less than block base fee: address 0x{transaction.sender.hex()}, "
                f"maxFeePerGas: {max_fee(transaction)}, baseFee: {account.base_fee}"
            )
        cost = transaction.gas * max_fee(transaction) + transaction.value
        if account.balance < cost:
            raise TransactionRejected(
                f"insufficient funds for gas * price + value: address 0x{transaction.sender.hex()} "
                f"have {account.balance} want {cost}"
            )
