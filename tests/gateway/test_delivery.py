"""End to end on the embedded broker: readings of many meters reach the chain exactly once,
through redeliveries, a broker restart and a chain outage (neither needs a port bound again:
the broker comes back on a new port behind a relay, the chain is cut off by one)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter

import pytest

from contracts.ledger import Reading
from gateway.service import MqttSettings, reading_topic
from node.broker import EmbeddedBroker
from tests.gateway.brokers import AmqttBroker, Relay
from tests.gateway.conftest import METER_IDS, start_gateway
from tests.gateway.helpers import (
    Publisher,
    recorded,
    recorded_events,
    signed_payload,
    wait_for,
    wait_published,
)


def readings_for(stack, meters, minutes) -> list[Reading]:
    return [
        Reading(meter, time_s, 1.0 + i / 100, 0.1, 1.0 - i / 1000, -0.5)
        for time_s in minutes
        for i, meter in enumerate(meters)
    ]


def publish_all(stack, publishers, topic, readings, times: int = 1) -> None:
    infos = []
    for copy in range(times):
        for n, reading in enumerate(readings):
            payload = signed_payload(reading, stack.meter_key(reading.meter_id).account, seq=n)
            publisher = publishers[(n + copy) % len(publishers)]
            infos.append(publisher.publish(reading_topic(topic, reading.meter_id), payload))
    wait_published(infos)


def republish_until_recorded(stack, publisher, topic, readings, limit: float = 180) -> None:
    """Wait until every reading is on chain, publishing the missing ones again every 15 s, as
    meters repeat what they were not sure of (a message that reached the new broker before
    the gateway's subscription did has no one to go to)."""
    deadline = time.monotonic() + limit
    pairs = [(r.meter_id, r.time) for r in readings]
    while True:
        with contextlib.suppress(AssertionError):
            wait_for(lambda: all(recorded(stack.community, pairs)), 15, "all readings on chain")
            return
        missing = [r for r, done in zip(readings, recorded(stack.community, pairs), strict=True) if not done]
        assert time.monotonic() < deadline, f"{len(missing)} readings not on chain after {limit:.0f} s"
        publish_all(stack, [publisher], topic, missing)


def gateway_settings(broker: EmbeddedBroker | AmqttBroker) -> MqttSettings:
    return MqttSettings(broker.host, broker.port, username="gateway")


@pytest.fixture
def restartable_broker():
    """The embedded broker behind a relay: restarted, it comes back at the same address."""
    broker = AmqttBroker()
    yield broker
    broker.close()


def test_many_meters_exactly_once_despite_redelivery(stack, artifacts, broker, tmp_path, topic_community):
    first_block = stack.head_block()
    gateway = start_gateway(
        stack, artifacts, tmp_path / "q.sqlite", gateway_settings(broker), topic_community
    )
    publishers = [Publisher(broker.host, broker.port, f"meters-{n}") for n in range(4)]
    try:
        readings = readings_for(stack, METER_IDS, stack.take_minutes(10))
        publish_all(stack, publishers, topic_community, readings, times=2)  # every message twice
        pairs = [(r.meter_id, r.time) for r in readings]
        wait_for(lambda: all(recorded(stack.community, pairs)), 180, f"{len(pairs)} readings on chain")
        wait_for(lambda: gateway.stats()["queued"] == 0, 60, "the queue to empty")
        events = Counter(recorded_events(stack.community, first_block))
        assert {pair: events[pair] for pair in pairs} == dict.fromkeys(pairs, 1)
        stats = gateway.stats()
        assert (stats["accepted"], stats["redelivered"]) == (len(readings), len(readings))
        assert not any(key.startswith("rejected") for key in stats), stats
    finally:
        for publisher in publishers:
            publisher.close()
        gateway.stop()


def test_broker_restart_reconnects_and_redelivery_does_not_double(
    stack, artifacts, restartable_broker, tmp_path, topic_community
):
    broker = restartable_broker
    first_block = stack.head_block()
    gateway = start_gateway(
        stack, artifacts, tmp_path / "q.sqlite", gateway_settings(broker), topic_community
    )
    publisher = Publisher(broker.host, broker.port, "meters-restart", reconnect=False)
    try:
        before = readings_for(stack, METER_IDS[:20], stack.take_minutes(3))
        publish_all(stack, [publisher], topic_community, before)
        wait_for(lambda: gateway.stats().get("accepted", 0) == len(before), 60, "the first readings")
        during = readings_for(stack, METER_IDS[:20], stack.take_minutes(3))
        pending = [
            publisher.publish(
                reading_topic(topic_community, r.meter_id),
                signed_payload(r, stack.meter_key(r.meter_id).account),
            )
            for r in during
        ]
        gateway.connected.clear()  # set again when the gateway has connected and subscribed anew
        broker.restart()  # some of `during` in flight, some queued by the publisher; sessions gone
        wait_for(lambda: not publisher.connected.is_set(), 60, "the publisher to lose the broker")
        wait_for(gateway.connected.is_set, 120, "the gateway to reconnect to the new broker")
        publisher.resume()  # resends what the old broker did not acknowledge
        wait_published(pending)
        publish_all(stack, [publisher], topic_community, before + during)  # meters repeat themselves
        pairs = [(r.meter_id, r.time) for r in before + during]
        republish_until_recorded(stack, publisher, topic_community, before + during)
        events = Counter(recorded_events(stack.community, first_block))
        assert {pair: events[pair] for pair in pairs} == dict.fromkeys(pairs, 1)
        assert gateway.stats()["accepted"] == len(pairs)
    finally:
        publisher.close()
        gateway.stop()


def test_chain_outage_queues_and_drains(stack, artifacts, broker, tmp_path, topic_community):
    chain_port = int(stack.url.rsplit(":", 1)[1])
    relay = Relay(chain_port)  # the gateway's way to the chain, cut for the outage
    relayed = dataclasses.replace(stack, url=f"http://{relay.host}:{relay.port}")
    gateway = start_gateway(
        relayed, artifacts, tmp_path / "q.sqlite", gateway_settings(broker), topic_community
    )
    publisher = Publisher(broker.host, broker.port, "meters-outage")
    try:
        relay.pause()
        try:
            readings = readings_for(stack, METER_IDS, stack.take_minutes(5))
            publish_all(stack, [publisher], topic_community, readings)
            wait_for(lambda: gateway.stats()["queued"] == len(readings), 120, "the readings to be queued")
            assert gateway.stats()["delivered"] == 0
        finally:
            relay.retarget(chain_port)
        pairs = [(r.meter_id, r.time) for r in readings]
        wait_for(lambda: gateway.stats()["queued"] == 0, 180, "the queue to drain after the outage")
        assert all(recorded(stack.community, pairs))
        assert gateway.stats()["delivered"] == len(readings)
    finally:
        publisher.close()
        gateway.stop()
        relay.close()
