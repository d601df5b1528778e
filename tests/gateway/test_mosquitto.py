"""Mosquitto with a password file and the ACL of docs/gateway.md: meters publish only under
their own id, the gateway takes everything, a broker restart loses and doubles nothing."""

from __future__ import annotations

from collections import Counter

import paho.mqtt.client as mqtt

from contracts.ledger import Reading
from gateway.service import MqttSettings, reading_topic
from tests.gateway.brokers import needs_mosquitto
from tests.gateway.conftest import METER_IDS, start_gateway
from tests.gateway.helpers import (
    Publisher,
    recorded,
    recorded_events,
    signed_payload,
    wait_for,
    wait_published,
)
from tests.gateway.test_delivery import readings_for

pytestmark = needs_mosquitto()


def meter_publishers(broker, topic: str) -> dict[str, Publisher]:
    return {m: Publisher(broker.host, broker.port, f"{topic}-{m}", *broker.meter_login(m)) for m in METER_IDS}


def publish(stack, publishers, topic, readings) -> list:
    return [
        publishers[r.meter_id].publish(
            reading_topic(topic, r.meter_id), signed_payload(r, stack.meter_key(r.meter_id).account)
        )
        for r in readings
    ]


def test_acl_confines_meters_and_every_reading_lands_once(
    stack, artifacts, mosquitto, tmp_path, topic_community
):
    first_block = stack.head_block()
    settings = MqttSettings.from_url(mosquitto.gateway_url)
    gateway = start_gateway(stack, artifacts, tmp_path / "q", settings, topic_community)
    publishers = meter_publishers(mosquitto, topic_community)
    try:
        wrong = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="intruder")
        wrong.username_pw_set("M01", "not-the-password")
        assert wrong.connect(mosquitto.host, mosquitto.port) == mqtt.MQTT_ERR_SUCCESS
        wrong.loop(timeout=2)
        assert not wrong.is_connected(), "a wrong password must not connect"

        readings = readings_for(stack, METER_IDS, stack.take_minutes(5))
        forged_minute = stack.take_minutes(1)[0]
        impostor = Reading("M02", forged_minute, 9.0, 0.0, 1.0, 0.0)  # M02's key, M01's login
        infos = publish(stack, publishers, topic_community, readings)
        infos.append(
            publishers["M01"].publish(
                reading_topic(topic_community, "M02"),
                signed_payload(impostor, stack.meter_key("M02").account),
            )
        )
        wait_published(infos)
        pairs = [(r.meter_id, r.time) for r in readings]
        wait_for(lambda: all(recorded(stack.community, pairs)), 180, "all readings on chain")
        events = Counter(recorded_events(stack.community, first_block))
        assert {pair: events[pair] for pair in pairs} == dict.fromkeys(pairs, 1)
        assert recorded(stack.community, [("M02", forged_minute)]) == [False], "the ACL let M01 speak for M02"
        assert gateway.stats()["accepted"] == len(readings)
    finally:
        for publisher in publishers.values():
            publisher.close()
        gateway.stop()


def test_broker_restart_keeps_the_gateway_session(stack, artifacts, mosquitto, tmp_path, topic_community):
    first_block = stack.head_block()
    settings = MqttSettings.from_url(mosquitto.gateway_url)
    gateway = start_gateway(stack, artifacts, tmp_path / "q", settings, topic_community)
    publishers = meter_publishers(mosquitto, topic_community)
    try:
        before = readings_for(stack, METER_IDS, stack.take_minutes(2))
        wait_published(publish(stack, publishers, topic_community, before))
        wait_for(lambda: gateway.stats().get("accepted", 0) == len(before), 60, "the first readings")
        during = readings_for(stack, METER_IDS, stack.take_minutes(2))
        mosquitto.stop()
        publish(stack, publishers, topic_community, during)  # the meters keep them until they reconnect
        mosquitto.start()
        wait_for(lambda: all(p.connected.is_set() for p in publishers.values()), 120, "meters to reconnect")
        wait_published(publish(stack, publishers, topic_community, before))  # meters repeat themselves
        pairs = [(r.meter_id, r.time) for r in before + during]
        wait_for(lambda: all(recorded(stack.community, pairs)), 180, "all readings on chain")
        events = Counter(recorded_events(stack.community, first_block))
        assert {pair: events[pair] for pair in pairs} == dict.fromkeys(pairs, 1)
        wait_for(gateway.connected.is_set, 120, "the gateway to reconnect")
        assert gateway.stats()["accepted"] == len(pairs)
    finally:
        for publisher in publishers.values():
            publisher.close()
        gateway.stop()
