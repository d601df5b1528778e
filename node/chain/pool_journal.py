"""The transaction pool's journal: pending transactions on disk, so a restarted node still
seals what it accepted.

Durability: a transaction is in the journal (one SQLite transaction, WAL) before its hash
goes back to the client, so a process crash (even kill -9) loses no accepted transaction;
a power failure may lose the last few (``synchronous=NORMAL``), as it may the last block.
After every new head the journal is made equal to the pool (mined and stale transactions
leave it, those of a dropped branch return). At start the node re-admits every journalled
transaction that is still valid; the others are dropped with a log line.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from eth.abc import SignedTransactionAPI


class PoolJournal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._connection = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS pending"
            " (hash BLOB PRIMARY KEY, raw BLOB NOT NULL, arrival INTEGER NOT NULL)"
        )
        self._lock = threading.Lock()
        (self._arrival,) = self._connection.execute(
            "SELECT COALESCE(MAX(arrival), 0) FROM pending"
        ).fetchone()

    def load(self) -> list[bytes]:
        """The journalled raw transactions in the order they arrived."""
        with self._lock:
            return [row[0] for row in self._connection.execute("SELECT raw FROM pending ORDER BY arrival")]

    def add(self, transaction: SignedTransactionAPI) -> None:
        with self._lock:
            self._arrival += 1
            self._connection.execute(
                "INSERT OR IGNORE INTO pending (hash, raw, arrival) VALUES (?, ?, ?)",
                (transaction.hash, transaction.encode(), self._arrival),
            )

    def match(self, pooled: Iterable[SignedTransactionAPI]) -> None:
        """Make the journal hold exactly ``pooled``."""
        wanted = {transaction.hash: transaction for transaction in pooled}
        with self._lock:
            present = {row[0] for row in self._connection.execute("SELECT hash FROM pending")}
            gone = [(tx_hash,) for tx_hash in present - wanted.keys()]
            new = [wanted[tx_hash] for tx_hash in wanted.keys() - present]
            if not gone and not new:
                return
            self._connection.execute("BEGIN")
            try:
                self._connection.executemany("DELETE FROM pending WHERE hash = ?", gone)
                for transaction in new:
                    self._arrival += 1
                    self._connection.execute(
                        "INSERT INTO pending (hash, raw, arrival) VALUES (?, ?, ?)",
                        (transaction.hash, transaction.encode(), self._arrival),
                    )
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._connection.close()
