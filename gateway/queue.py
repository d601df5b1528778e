"""The durable reading queue: SQLite in WAL mode, ``synchronous=FULL``.

Three tables. ``queue`` holds accepted readings until their transaction is confirmed
(``in_flight`` marks those taken for a transaction; a restart clears the marks, and a
reading sent before is looked up on chain before it goes out again);
``delivered`` remembers what reached the chain (meter, minute, digest, transaction) for
the accepted window, so a redelivered message is recognised; ``dead_letter`` keeps the
readings the chain refused for good, with the reason. A (meter, minute) is in at most one
of them. Every method is one transaction; a commit returns only once it is on disk.
A reading's phases (if any) are kept as JSON in ``phases``: ``[[P, Q, V, θ] or null]`` for
L1, L2, L3 (NULL: no phases, a balanced total).
"""

from __future__ import annotations

import contextlib
import enum
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from contracts import clock
from contracts.ledger import PhaseReading, Phases, Reading
from gateway.payload import SignedReading

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY,
    meter_id TEXT NOT NULL,
    time INTEGER NOT NULL,
    p_kw REAL NOT NULL,
    q_kvar REAL NOT NULL,
    v_pu REAL NOT NULL,
    theta_deg REAL NOT NULL,
    phases TEXT,
    seq INTEGER NOT NULL,
    digest BLOB NOT NULL,
    received_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    UNIQUE (meter_id, time)
);
CREATE INDEX IF NOT EXISTS queue_by_time ON queue (time);
CREATE TABLE IF NOT EXISTS delivered (
    meter_id TEXT NOT NULL,
    time INTEGER NOT NULL,
    digest BLOB NOT NULL,
    tx_hash BLOB,
    block INTEGER,
    delivered_at REAL NOT NULL,
    PRIMARY KEY (meter_id, time)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_time ON delivered (time);
CREATE TABLE IF NOT EXISTS dead_letter (
    meter_id TEXT NOT NULL,
    time INTEGER NOT NULL,
    p_kw REAL NOT NULL,
    q_kvar REAL NOT NULL,
    v_pu REAL NOT NULL,
    theta_deg REAL NOT NULL,
    phases TEXT,
    seq INTEGER NOT NULL,
    digest BLOB NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    failed_at REAL NOT NULL,
    PRIMARY KEY (meter_id, time)
) WITHOUT ROWID;
"""


class AcceptOutcome(enum.Enum):
    NEW = "new"  # queued now
    REDELIVERED = "redelivered"  # the same reading is already queued, delivered or dead-lettered
    CONFLICT = "conflict"  # a different reading holds this (meter, minute)


@dataclass(frozen=True)
class QueuedReading:
    id: int
    reading: Reading
    seq: int
    attempts: int
    received_at: float


@dataclass(frozen=True)
class DeadLetter:
    reading: Reading
    seq: int
    reason: str
    detail: str


FRESH_WINDOW_S = 60  # "fresh": a reading of the newest two minutes in the queue


class ReadingQueue:
    """Accepted readings waiting for the chain; safe to use from several threads."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(queue)")}
        if columns and "in_flight" not in columns:  # a queue of an earlier version
            self._db.execute("ALTER TABLE queue ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0")
        for table in ("queue", "dead_letter"):  # queues of before per-phase readings
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if columns and "phases" not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN phases TEXT")
        self._db.executescript(SCHEMA)
        self._db.execute("UPDATE queue SET in_flight = 0")  # nothing is in flight after a restart
        self.queued = self._db.execute("SELECT count(*) FROM queue").fetchone()[0]  # rows of ``queue``
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def accept(self, readings: Sequence[tuple[SignedReading, float]]) -> list[AcceptOutcome]:
        """Queue ``(reading, received_at)`` pairs in one committed transaction."""
        with self._lock, self._transaction():
            outcomes = [self._accept_one(signed, received_at) for signed, received_at in readings]
            self.queued += outcomes.count(AcceptOutcome.NEW)
        return outcomes

    def take(self, limit: int, latest_time: int, fresh_share: float = 0.5) -> list[QueuedReading]:
        """Up to ``limit`` readings of minutes up to ``latest_time`` that are not in flight,
        marked in flight and attempted. Fresh readings (the newest two minutes in the queue,
        newest first) fill up to ``fresh_share`` of them, so the newest minute of a meter is
        never stuck behind a backlog; the oldest readings fill the rest, so the backlog
        drains. ``attempts`` in the result counts the sends before this one."""
        columns = "id, meter_id, time, p_kw, q_kvar, v_pu, theta_deg, phases, seq, attempts, received_at"
        with self._lock, self._transaction():
            newest = self._db.execute(
                "SELECT max(time) FROM queue WHERE in_flight = 0 AND time <= ?", (latest_time,)
            ).fetchone()[0]
            if newest is None:
                return []
            fresh = self._db.execute(
                f"SELECT {columns} FROM queue WHERE in_flight = 0 AND time BETWEEN ? AND ? "
                "ORDER BY time DESC, id LIMIT ?",
                (newest - FRESH_WINDOW_S, latest_time, max(1, int(limit * fresh_share))),
            ).fetchall()
            chosen = {row[0] for row in fresh}
            oldest = self._db.execute(
                f"SELECT {columns} FROM queue WHERE in_flight = 0 AND time <= ? ORDER BY id LIMIT ?",
                (latest_time, limit),
            ).fetchall()
            rows = fresh + [row for row in oldest if row[0] not in chosen][: limit - len(fresh)]
            self._db.executemany(
                "UPDATE queue SET in_flight = 1, attempts = attempts + 1 WHERE id = ?",
                [(r[0],) for r in rows],
            )
        return [QueuedReading(row[0], _reading(row[1:8]), row[8], row[9], row[10]) for row in rows]

    def release(self, ids: Sequence[int]) -> None:
        """Readings taken for a transaction that did not record them: queued again."""
        with self._lock, self._transaction():
            self._db.executemany("UPDATE queue SET in_flight = 0 WHERE id = ?", [(i,) for i in ids])

    def deliver(self, ids: Sequence[int], tx_hash: bytes | None, block: int | None) -> None:
        """Move readings the chain holds from the queue to ``delivered``."""
        self.deliver_all([(reading_id, tx_hash, block) for reading_id in ids])

    def deliver_all(self, deliveries: Sequence[tuple[int, bytes | None, int | None]]) -> None:
        """``deliver`` for (reading id, transaction, block) triples, in one transaction."""
        now = clock.now()
        with self._lock, self._transaction():
            for reading_id, tx_hash, block in deliveries:
                self._db.execute(
                    "INSERT OR REPLACE INTO delivered SELECT meter_id, time, digest, ?, ?, ? "
                    "FROM queue WHERE id = ?",
                    (tx_hash, block, now, reading_id),
                )
                self.queued -= self._db.execute("DELETE FROM queue WHERE id = ?", (reading_id,)).rowcount

    def dead_letter(self, ids: Sequence[int], reason: str, detail: str) -> None:
        """Move readings the chain refuses for good to ``dead_letter``."""
        now = clock.now()
        with self._lock, self._transaction():
            for reading_id in ids:
                self._db.execute(
                    "INSERT OR REPLACE INTO dead_letter (meter_id, time, p_kw, q_kvar, v_pu, theta_deg, "
                    "phases, seq, digest, reason, detail, failed_at) SELECT meter_id, time, p_kw, q_kvar, "
                    "v_pu, theta_deg, phases, seq, digest, ?, ?, ? FROM queue WHERE id = ?",
                    (reason, detail, now, reading_id),
                )
                self.queued -= self._db.execute("DELETE FROM queue WHERE id = ?", (reading_id,)).rowcount

    def prune_delivered(self, before_time: int) -> int:
        """Forget delivered readings of minutes before ``before_time`` (outside the window)."""
        with self._lock, self._transaction():
            return self._db.execute("DELETE FROM delivered WHERE time < ?", (before_time,)).rowcount

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT meter_id, time, p_kw, q_kvar, v_pu, theta_deg, phases, seq, reason, detail "
                "FROM dead_letter ORDER BY failed_at"
            ).fetchall()
        return [DeadLetter(_reading(row[:7]), row[7], row[8], row[9]) for row in rows]

    def counts(self) -> dict[str, int]:
        """Rows per table: ``queued``, ``delivered``, ``dead``."""
        tables = {"queued": "queue", "delivered": "delivered", "dead": "dead_letter"}
        with self._lock:
            return {
                name: self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for name, table in tables.items()
            }

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error); the caller holds the lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _accept_one(self, signed: SignedReading, received_at: float) -> AcceptOutcome:
        reading = signed.reading
        key = (reading.meter_id, reading.time)
        for table in ("queue", "delivered", "dead_letter"):
            query = f"SELECT digest FROM {table} WHERE meter_id = ? AND time = ?"
            row = self._db.execute(query, key).fetchone()
            if row is not None:
                return AcceptOutcome.REDELIVERED if row[0] == signed.digest else AcceptOutcome.CONFLICT
        self._db.execute(
            "INSERT INTO queue (meter_id, time, p_kw, q_kvar, v_pu, theta_deg, phases, seq, digest, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, reading.p_kw, reading.q_kvar, reading.v_pu, reading.theta_deg,
             _phases_text(reading.phases), signed.seq, signed.digest, received_at),
        )  # fmt: skip
        return AcceptOutcome.NEW


def _phases_text(phases: Phases | None) -> str | None:
    if phases is None:
        return None
    values = [None if p is None else [p.p_kw, p.q_kvar, p.v_pu, p.theta_deg] for p in phases]
    return json.dumps(values)


def _reading(row) -> Reading:
    """A reading from (meter_id, time, p_kw, q_kvar, v_pu, theta_deg, phases) columns."""
    *totals, text = row
    if text is None:
        return Reading(*totals)
    phases = tuple(None if values is None else PhaseReading(*values) for values in json.loads(text))
    return Reading(*totals, phases)
