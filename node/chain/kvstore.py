"""A durable key-value store for py-evm: SQLite in WAL mode, committed once per block.

py-evm writes state trie nodes, headers, bodies and receipts as key-value pairs. All
writes between two ``commit()`` calls become durable together, so after a crash (even
kill -9) the store holds exactly the chain as of the last committed block.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path

from eth.db.backends.base import BaseDB

READ_CACHE_ENTRIES = 200_000


class SqliteStore(BaseDB):
    """py-evm ``DatabaseAPI`` on one SQLite file; call ``commit()`` to make writes durable."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
        )
        self._pending: dict[bytes, bytes | None] = {}
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.RLock()

    def __getitem__(self, key: bytes) -> bytes:
        with self._lock:
            if key in self._pending:
                value = self._pending[key]
                if value is None:
                    raise KeyError(key)
                return value
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            row = self._connection.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(key)
            self._remember(key, row[0])
            return row[0]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        with self._lock:
            self._pending[bytes(key)] = bytes(value)

    def __delitem__(self, key: bytes) -> None:
        with self._lock:
            if not self._exists(key):
                raise KeyError(key)
            self._pending[bytes(key)] = None

    def _exists(self, key: bytes) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def commit(self) -> None:
        """Write every pending change in one SQLite transaction."""
        with self._lock:
            if not self._pending:
                return
            writes = [(key, value) for key, value in self._pending.items() if value is not None]
            deletes = [(key,) for key, value in self._pending.items() if value is None]
            connection = self._connection
            connection.execute("BEGIN")
            try:
                connection.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", writes)
                connection.executemany("DELETE FROM kv WHERE key = ?", deletes)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            for key, value in writes:
                self._remember(key, value)
            for (key,) in deletes:
                self._cache.pop(key, None)
            self._pending.clear()

    def discard(self) -> None:
        """Forget every change since the last commit."""
        with self._lock:
            self._pending.clear()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def _remember(self, key: bytes, value: bytes) -> None:
        self._cache[key] = value
        if len(self._cache) > READ_CACHE_ENTRIES:
            self._cache.popitem(last=False)
