"""Malformed, forged and refused readings: answered on the rejected topic, never on chain,
while the valid stream goes through; chain refusals end in the dead-letter table."""

from __future__ import annotations

import json
import random
import time

from eth_account import Account

from contracts.ledger import Reading
from gateway.payload import Reason
from gateway.service import reading_topic
from tests.gateway.conftest import METER_IDS, register_meters, start_gateway
from tests.gateway.helpers import Publisher, recorded, signed_payload, wait_for, wait_published
from tests.gateway.test_delivery import gateway_settings, readings_for

FORGED_COUNT = 2000


def forged_payloads(stack, rng: random.Random, minutes: list[int]) -> list[tuple[str, bytes]]:
    """(topic meter id, raw payload) pairs that must all be refused, for the given minutes."""
    stranger = Account.from_key(bytes(rng.getrandbits(8) for _ in range(31)) + b"\x01")

    def reading(meter: str) -> Reading:
        return Reading(meter, rng.choice(minutes), rng.uniform(-5, 5), 0.1, 1.0, -0.3)

    def valid(meter: str) -> dict:
        return signed_payload(reading(meter), stack.meter_key(meter).account, seq=rng.randrange(1000))

    def compact(payload: dict) -> bytes:
        return json.dumps(payload, separators=(",", ":")).encode()

    def flipped(meter: str) -> bytes:
        raw = bytearray(compact(valid(meter)))
        end = raw.index(b'"signature"')  # change one byte of the signed part
        position = rng.randrange(1, end)
        raw[position] = rng.choice([b for b in b'0123456789abcdefz"{}:,.-' if b != raw[position]])
        return bytes(raw)

    def without_a_field(meter: str) -> bytes:
        dropped = rng.choice(["p_kw", "seq", "time", "meter_id", "signature"])
        return compact({k: v for k, v in valid(meter).items() if k != dropped})

    generators = [
        lambda m: bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))),
        lambda m: compact(valid(m))[: rng.randrange(1, 100)],
        flipped,
        without_a_field,
        lambda m: compact(signed_payload(reading(m), stranger)),
        lambda m: compact({**valid(m), "v_pu": rng.choice(["1.0", None, [1], {"v": 1}, True])}),
        lambda m: compact(signed_payload(reading(m), stack.meter_key(m).account, v_pu=5.0)),
        lambda m: compact(valid(METER_IDS[(METER_IDS.index(m) + 1) % len(METER_IDS)])),
        lambda m: b'{"meter_id":"' + m.encode() + b'","pad":"' + b"x" * 5000 + b'"}',
    ]
    return [
        (meter, rng.choice(generators)(meter))
        for meter in (rng.choice(METER_IDS) for _ in range(FORGED_COUNT))
    ]


def special_refusals(stack, now: int, valid: Reading) -> list[tuple[str, dict, Reason]]:
    """One payload per reason that needs a chain or a clock to decide."""
    key = stack.meter_key
    return [
        ("ZZ9", signed_payload(Reading("ZZ9", valid.time, 1, 0, 1, 0), key("ZZ9").account),
         Reason.UNKNOWN_METER),
        ("DX1", signed_payload(Reading("DX1", valid.time, 1, 0, 1, 0), key("DX1").account),
         Reason.INACTIVE_METER),
        ("M01", signed_payload(Reading("M01", valid.time, 1, 0, 1, 0), key("M02").account),
         Reason.BAD_SIGNATURE),
        ("M01", signed_payload(Reading("M01", now - now % 60 + 3600, 1, 0, 1, 0), key("M01").account),
         Reason.FROM_FUTURE),
        ("M01", signed_payload(Reading("M01", now - now % 60 - 86400 * 3, 1, 0, 1, 0),
                               key("M01").account), Reason.TOO_OLD),
        ("M01", signed_payload(Reading("M01", valid.time, 1, 0, 1, 0), key("M01").account,
                               phases={"L2": {"p_kw": 2, "q_kvar": 0, "v_pu": 1, "theta_deg": -120}}),
         Reason.INCONSISTENT),
        (valid.meter_id, signed_payload(valid, key(valid.meter_id).account, p_kw=valid.p_kw + 1),
         Reason.DUPLICATE),
    ]  # fmt: skip


def deregister(stack, meter_id: str) -> None:
    stack.community.registry.deregister_meter(stack["admin"], meter_id)


def test_fuzzed_and_forged_payloads_never_reach_the_chain(
    stack, artifacts, broker, tmp_path, topic_community
):
    register_meters(stack.community, stack.keyring, ["DX1"], stack["member"].address)
    deregister(stack, "DX1")
    gateway = start_gateway(stack, artifacts, tmp_path / "q", gateway_settings(broker), topic_community)
    meters = Publisher(broker.host, broker.port, "meters-valid")
    attacker = Publisher(broker.host, broker.port, "attacker")
    attacker.subscribe_rejections(topic_community)
    try:
        valid = readings_for(stack, METER_IDS, stack.take_minutes(5))
        forged_minutes = stack.take_minutes(5)
        forged = forged_payloads(stack, random.Random(6), forged_minutes)
        valid_infos = []
        for n, (meter, raw) in enumerate(forged):
            attacker.publish(reading_topic(topic_community, meter), raw)
            if n % 10 == 0 and n // 10 < len(valid):  # the valid stream runs alongside
                reading = valid[n // 10]
                payload = signed_payload(reading, stack.meter_key(reading.meter_id).account)
                valid_infos.append(meters.publish(reading_topic(topic_community, reading.meter_id), payload))
        for reading in valid[len(valid_infos) :]:
            payload = signed_payload(reading, stack.meter_key(reading.meter_id).account)
            valid_infos.append(meters.publish(reading_topic(topic_community, reading.meter_id), payload))
        wait_published(valid_infos)
        wait_for(lambda: gateway.stats().get("accepted", 0) == len(valid), 60, "the valid readings")
        specials = special_refusals(stack, int(time.time()), valid[0])
        for meter, payload, _ in specials:
            attacker.publish(reading_topic(topic_community, meter), payload)
        rejected = len(forged) + len(specials)
        wait_for(lambda: len(attacker.rejections) >= rejected, 60, f"{rejected} rejection messages")
        valid_pairs = [(r.meter_id, r.time) for r in valid]
        wait_for(lambda: all(recorded(stack.community, valid_pairs)), 60, "the valid readings on chain")

        forged_pairs = [(m, t) for m in METER_IDS for t in forged_minutes]
        assert not any(recorded(stack.community, forged_pairs)), "a forged reading reached the chain"
        expected_reasons = {str(reason) for reason in Reason} - {"chain_refused"}
        assert set(attacker.reasons()) == expected_reasons
        specials_seen = [m for t, m in attacker.rejections[-len(specials) :]]
        assert [m["reason"] for m in specials_seen] == [str(reason) for _, _, reason in specials]
        assert all(m["time"] == valid[0].time for m in specials_seen[:3])
        stats = gateway.stats()
        assert sum(v for k, v in stats.items() if k.startswith("rejected.")) == rejected
        assert stats["accepted"] == len(valid) and stats["delivered"] == len(valid)
        duplicate = valid[0]
        on_chain = [
            item.reading
            for item in stack.community.ledger.follow_readings(0).poll().items
            if (item.reading.meter_id, item.reading.time) == (duplicate.meter_id, duplicate.time)
        ]
        assert [reading.p_kw for reading in on_chain] == [duplicate.p_kw]
    finally:
        meters.close()
        attacker.close()
        gateway.stop()


def test_reading_the_chain_refuses_goes_to_dead_letter_and_is_answered(
    stack, artifacts, broker, tmp_path, topic_community
):
    register_meters(stack.community, stack.keyring, ["DX2"], stack["member"].address)
    gateway = start_gateway(stack, artifacts, tmp_path / "q", gateway_settings(broker), topic_community)
    gateway.submitter.stop()  # submit by hand, after the meter is gone
    publisher = Publisher(broker.host, broker.port, "meter-dx2")
    publisher.subscribe_rejections(topic_community, "DX2")
    try:
        times = stack.take_minutes(2)
        readings = [Reading("DX2", t, 2.0, 0.0, 1.0, 0.0) for t in times]
        readings.append(Reading("M05", times[0], 2.0, 0.0, 1.0, 0.0))
        wait_published(
            [
                publisher.publish(
                    reading_topic(topic_community, r.meter_id),
                    signed_payload(r, stack.meter_key(r.meter_id).account),
                )
                for r in readings
            ]
        )
        wait_for(lambda: gateway.stats().get("accepted", 0) == 3, 30, "three accepted readings")
        deregister(stack, "DX2")

        def submitted() -> bool:
            gateway.submitter.step()
            return gateway.stats()["queued"] == 0

        wait_for(submitted, 60, "the queue to settle")
        assert [(d.reading.meter_id, d.reason) for d in gateway.queue.dead_letters()] == [
            ("DX2", "chain_refused"),
            ("DX2", "chain_refused"),
        ]
        assert recorded(stack.community, [("M05", times[0]), ("DX2", times[0])]) == [True, False]
        wait_for(lambda: len(publisher.rejections) == 2, 30, "two chain_refused messages")
        assert {m["reason"] for _, m in publisher.rejections} == {"chain_refused"}
        assert sorted(m["time"] for _, m in publisher.rejections) == times
    finally:
        publisher.close()
        gateway.stop()
