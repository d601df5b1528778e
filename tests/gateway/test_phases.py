"""Per-phase readings through the real broker, gateway and chain (issue 17 part 4): three-phase,
single-phase (L2 only) and plain readings of the same minutes all land on chain as sent, in
their own record kinds; an inconsistent or malformed phase payload is answered on the
rejected topic and costs nothing already accepted. The queue keeps phases across a restart
and opens a queue of before phases."""

from __future__ import annotations

import sqlite3

from contracts.ledger import PhaseReading, Reading
from gateway.payload import Reason, SignedReading, sign_payload
from gateway.queue import ReadingQueue
from gateway.service import reading_topic
from tests.gateway.conftest import start_gateway
from tests.gateway.helpers import Publisher, recorded, signed_payload, wait_for, wait_published
from tests.gateway.test_delivery import gateway_settings

L1 = PhaseReading(1.0, 0.1, 1.01, -0.5)
L2 = PhaseReading(-2.5, 0.0, 0.99, -120.5)
L3 = PhaseReading(0.75, -0.2, 1.0, 119.5)


def phase_payload(reading: Reading, key, seq: int = 0, **overrides) -> dict:
    phases = {
        name: {"p_kw": ph.p_kw, "q_kvar": ph.q_kvar, "v_pu": ph.v_pu, "theta_deg": ph.theta_deg}
        for name, ph in zip(("L1", "L2", "L3"), reading.phases, strict=True)
        if ph is not None
    }
    fields = {"meter_id": reading.meter_id, "time": reading.time, "seq": seq, "p_kw": reading.p_kw,
              "q_kvar": reading.q_kvar, "v_pu": reading.v_pu, "theta_deg": reading.theta_deg,
              "phases": phases}  # fmt: skip
    return sign_payload({**fields, **overrides}, key)


def test_phase_readings_reach_the_chain_next_to_plain_ones_and_bad_ones_are_answered(
    stack, artifacts, broker, tmp_path, topic_community
):
    gateway = start_gateway(stack, artifacts, tmp_path / "q", gateway_settings(broker), topic_community)
    publisher = Publisher(broker.host, broker.port, "meters-phases")
    publisher.subscribe_rejections(topic_community)
    first_block = stack.head_block()
    try:
        minutes = stack.take_minutes(3)
        good = []
        for t in minutes:
            good += [
                Reading("M30", t, -0.75, -0.1, 1.0, -0.5, (L1, L2, L3)),
                Reading("M31", t, -2.5, 0.0, 0.99, -0.5, (None, L2, None)),
                Reading("M32", t, 1.5, 0.2, 1.0, -0.4),
            ]
        only_l1 = (L1, None, None)
        bad = [  # (reading, payload fields changed, reason)
            (Reading("M33", minutes[0], 9.0, 0.1, 1.0, 0.0, only_l1), {}, Reason.INCONSISTENT),
            (Reading("M33", minutes[1], 1.0, 0.1, 1.0, 0.0, only_l1), {"p_kw": "1"}, Reason.SCHEMA),
            (
                Reading("M33", minutes[2], 1.0, 0.1, 1.0, 0.0, only_l1),
                {"phases": {"L1": {**vars(L1), "v_pu": 2.5}}},
                Reason.OUT_OF_RANGE,
            ),
        ]
        infos = []
        for reading in good:
            key = stack.meter_key(reading.meter_id).account
            payload = phase_payload(reading, key) if reading.phases else signed_payload(reading, key)
            infos.append(publisher.publish(reading_topic(topic_community, reading.meter_id), payload))
        for reading, changed, _ in bad:
            payload = phase_payload(reading, stack.meter_key(reading.meter_id).account, **changed)
            infos.append(publisher.publish(reading_topic(topic_community, reading.meter_id), payload))
        wait_published(infos)
        wait_for(lambda: len(publisher.rejections) >= len(bad), 30, "the rejections")
        pairs = [(r.meter_id, r.time) for r in good]
        wait_for(lambda: all(recorded(stack.community, pairs)), 60, "the readings on chain")

        reasons = sorted(m["reason"] for _, m in publisher.rejections)
        assert reasons == sorted(str(reason) for _, _, reason in bad)
        details = {m["reason"]: m["detail"] for _, m in publisher.rejections}
        assert "p_kw 9 differs from the sum of phases.*.p_kw 1" in details["inconsistent"]
        assert details["out_of_range"] == "phases.L1.voltage must be 0..2 pu"
        on_chain = {
            (item.reading.meter_id, item.reading.time): item.reading
            for item in stack.community.ledger.follow_readings(first_block).poll().items
        }
        for reading in good:
            assert on_chain[(reading.meter_id, reading.time)] == reading
        assert not any(recorded(stack.community, [("M33", t) for t in minutes]))
        # the chain has them; the gateway counts them once it has settled their receipts
        wait_for(lambda: gateway.stats()["delivered"] == len(good), 30, "the gateway to count the deliveries")
    finally:
        publisher.close()
        gateway.stop()


def test_the_queue_keeps_phases_and_opens_a_queue_of_before_phases(tmp_path):
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(  # the tables as they were before per-phase readings
        """CREATE TABLE queue (id INTEGER PRIMARY KEY, meter_id TEXT NOT NULL, time INTEGER NOT NULL,
        p_kw REAL NOT NULL, q_kvar REAL NOT NULL, v_pu REAL NOT NULL, theta_deg REAL NOT NULL,
        seq INTEGER NOT NULL, digest BLOB NOT NULL, received_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, in_flight INTEGER NOT NULL DEFAULT 0, UNIQUE (meter_id, time));
        CREATE TABLE dead_letter (meter_id TEXT NOT NULL, time INTEGER NOT NULL, p_kw REAL NOT NULL,
        q_kvar REAL NOT NULL, v_pu REAL NOT NULL, theta_deg REAL NOT NULL, seq INTEGER NOT NULL,
        digest BLOB NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, failed_at REAL NOT NULL,
        PRIMARY KEY (meter_id, time)) WITHOUT ROWID;
        INSERT INTO queue (meter_id, time, p_kw, q_kvar, v_pu, theta_deg, seq, digest, received_at)
        VALUES ('M01', 60, 1.5, 0.0, 1.0, 0.0, 1, x'00', 0);"""
    )
    old.commit()
    old.close()
    queue = ReadingQueue(path)
    phased = Reading("M02", 60, -2.5, 0.0, 0.99, -0.5, (None, L2, None))
    queue.accept([(SignedReading(phased, 2, "0x0", b"d2"), 0.0)])
    taken = {item.reading.meter_id: item for item in queue.take(10, 60)}
    assert taken["M01"].reading == Reading("M01", 60, 1.5, 0.0, 1.0, 0.0)
    assert taken["M02"].reading == phased
    queue.dead_letter([taken["M02"].id], "chain_refused", "test")
    queue.close()
    (dead,) = ReadingQueue(path).dead_letters()
    assert dead.reading == phased and dead.reason == "chain_refused"
