"""Signed payloads, MQTT publishers and bounded waits for the gateway tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt

from contracts import clock, units
from contracts.community import Community
from contracts.ledger import Reading
from gateway.payload import sign_payload


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def wait_published(infos: list[mqtt.MQTTMessageInfo], timeout: float = 60) -> None:
    """Wait until the broker acknowledged every message of ``infos``."""
    wait_for(lambda: all(info.is_published() for info in infos), timeout, f"{len(infos)} publications")


def signed_payload(reading: Reading, key, seq: int = 0, **overrides) -> dict:
    fields = {
        "meter_id": reading.meter_id,
        "time": reading.time,
        "seq": seq,
        "p_kw": reading.p_kw,
        "q_kvar": reading.q_kvar,
        "v_pu": reading.v_pu,
        "theta_deg": reading.theta_deg,
    }
    return sign_payload({**fields, **overrides}, key)


def recorded(community: Community, pairs: Iterable[tuple[str, int]]) -> list[bool]:
    """``hasReadings`` for (meter id, time) pairs."""
    pairs = list(pairs)
    chain = [(units.encode_id(meter), clock.aligned_minute(time_s)) for meter, time_s in pairs]
    flags: list[bool] = []
    for start in range(0, len(chain), 500):
        part = chain[start : start + 500]
        call = community.ledger.contract.functions.hasReadings([c[0] for c in part], [c[1] for c in part])
        flags += community.client.call(call)
    return flags


def recorded_events(community: Community, from_block: int) -> list[tuple[str, int]]:
    """(meter id, time) of every reading recorded since ``from_block`` (ReadingsRecorded events)."""
    recorded = community.ledger.follow_readings(from_block).poll().items
    return [(item.reading.meter_id, item.reading.time) for item in recorded]


class Publisher:
    """A paho client publishing QoS 1 payloads and collecting rejection messages."""

    def __init__(
        self, host: str, port: int, client_id: str, username=None, password=None, reconnect: bool = True
    ):
        self.rejections: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            reconnect_on_failure=reconnect,
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=2)
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.client.on_connect = lambda client, *_: self.connected.set()
        self.client.on_disconnect = lambda client, *_: self.connected.clear()
        self.client.connect(host, port)
        self.client.loop_start()
        wait_for(self.connected.is_set, 20, f"publisher {client_id} to connect")

    def subscribe_rejections(self, community: str, meter_id: str = "+") -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(f"lec/{community}/meter/{meter_id}/rejected", qos=1)
        wait_for(done.is_set, 10, "the rejection subscription")

    def publish(self, topic: str, payload: bytes | str | dict) -> mqtt.MQTTMessageInfo:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        return self.client.publish(topic, payload, qos=1)

    def resume(self) -> None:
        """Reconnect a publisher made with ``reconnect=False``; paho resends what is unacknowledged."""
        self.client.loop_stop()
        self.connected.clear()
        self.client.reconnect()
        self.client.loop_start()
        wait_for(self.connected.is_set, 20, "the publisher to reconnect")

    def reasons(self) -> list[str]:
        with self._lock:
            return [message.get("reason") for _, message in self.rejections]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.rejections.append((message.topic, json.loads(message.payload)))
