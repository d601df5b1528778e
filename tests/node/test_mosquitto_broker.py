"""The production Mosquitto (node/mosquitto.py): logins derived from a private secret, an
ACL that confines each meter to its own topics (checked against Mosquitto 2.0.11 itself,
shared subscriptions included), reloads for new meters, and `lec up`'s choice of broker."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from contracts.paths import PROJECT_ROOT
from node.mosquitto import MosquittoBroker, MosquittoError, load_secret, meter_password
from tests.node.test_cli import lec
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(
    not MosquittoBroker.available(), reason="mosquitto is not installed (apt-get install mosquitto)"
)

TOPIC = "c"  # the <community> topic level


def reading(meter_id: str) -> str:
    return f"lec/{TOPIC}/meter/{meter_id}/reading"


@pytest.fixture
def broker(tmp_path):
    started = MosquittoBroker(tmp_path / "mosquitto", "127.0.0.1", 0, ["M01", "M02"]).start()
    yield started
    started.stop()


class Client:
    """A paho client that logs in, subscribes and collects what it receives."""

    def __init__(self, broker: MosquittoBroker, user: str | None, password: str | None, client_id=None):
        self.messages: list[tuple[str, bytes]] = []
        self.result = None
        self._answered = threading.Event()
        self._subscribed = threading.Event()
        durable = client_id is not None  # a persistent session, as the gateway's
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"t-{user}-{time.time_ns()}",
            clean_session=not durable,
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._answered.wait(20), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.result is None:
            self.result = reason_code
            self._answered.set()
        if reason_code.is_failure:
            client.disconnect()  # no retries with a refused login

    @property
    def accepted(self) -> bool:
        return not self.result.is_failure

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(10), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)

    def payloads(self) -> list[bytes]:
        return [payload for _, payload in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(broker):
    opened: list[Client] = []

    def login(user, password=None, client_id=None) -> Client:
        opened.append(Client(broker, user, password, client_id))
        return opened[-1]

    yield login
    for client in opened:
        client.close()


def gateway(broker, clients, client_id=None) -> Client:
    return clients(*broker.gateway_login(), client_id)


def meter(broker, clients, meter_id: str) -> Client:
    return clients(*broker.meter_login(meter_id))


def test_files_are_private_and_passwords_derived_from_the_secret(broker, tmp_path):
    directory = tmp_path / "mosquitto"
    for name in ("secret", "passwd"):
        assert (directory / name).stat().st_mode & 0o077 == 0, f"{name} is private to its owner"
    user, password = broker.meter_login("M01")
    assert user == "M01" and password == meter_password(directory, "M01")
    assert password != broker.meter_login("M02")[1] != broker.gateway_login()[1]
    again = MosquittoBroker(directory, port=0)  # whoever holds the directory computes the same
    assert again.meter_login("M01") == (user, password)
    secret = load_secret(directory).hex()
    for name in ("passwd", "acl", "mosquitto.conf", "mosquitto.log"):
        text = (directory / name).read_text()
        assert password not in text and broker.gateway_login()[1] not in text and secret not in text
    assert "M01:" in (directory / "passwd").read_text()  # hashed by mosquitto_passwd
    assert not list(directory.glob("*.draft")), "the clear-text draft is removed"
    assert user not in broker.url and password not in broker.url
    assert broker.gateway_url() == f"mqtt://gateway:{broker.gateway_login()[1]}@127.0.0.1:{broker.port}"


def test_docs_show_the_acl_that_is_written(broker):
    docs = (PROJECT_ROOT / "docs" / "gateway.md").read_text()
    shown = docs.split("# DATA_DIR/mosquitto/acl\n", 1)[1].split("```", 1)[0]
    written = (broker.directory / "acl").read_text()
    assert written.endswith(shown) and written[: -len(shown)].lstrip("\n").startswith("# written by lec")


def test_wrong_password_unknown_user_and_anonymous_are_refused(broker, clients):
    assert not clients("M01", "not-the-password").accepted
    assert not clients("M99", meter_password(broker.directory, "M99")).accepted  # never added
    assert not clients(None).accepted
    assert meter(broker, clients, "M01").accepted


def test_meter_publishes_only_its_own_readings_and_reads_none(broker, clients):
    gate = gateway(broker, clients)
    gate.subscribe(reading("+"))
    spy = meter(broker, clients, "M02")
    spy.subscribe(reading("+"))  # Mosquitto 2.0.11 grants it (the ACL checks delivery only)
    spy.subscribe(f"$share/g/{reading('+')}")
    spy.subscribe("#")
    # Mosquitto 2.0.11 acknowledges a denied QoS 1 PUBLISH, drops it and then closes the
    # connection; the denial happens before the PUBACK, so what M01 sends next comes later
    meter(broker, clients, "M01").publish(reading("M02"), "forged")
    meter(broker, clients, "M01").publish(reading("M01"), "own")
    wait_for(lambda: b"own" in gate.payloads(), "the gateway to receive M01's reading", 20)
    time.sleep(0.5)
    assert gate.payloads() == [b"own"], "one meter spoke for another"
    assert spy.messages == [], "a meter read readings"


def test_gateway_reads_through_a_shared_subscription_and_answers_rejections(broker, clients):
    gate = gateway(broker, clients)
    gate.subscribe(f"$share/g/lec/{TOPIC}/meter/+/reading")
    outsider = meter(broker, clients, "M02")
    outsider.subscribe(f"$share/other/lec/{TOPIC}/meter/+/reading")
    outsider.subscribe(f"lec/{TOPIC}/meter/M01/rejected")
    m01 = meter(broker, clients, "M01")
    m01.subscribe(f"lec/{TOPIC}/meter/M01/rejected")
    for n in range(5):
        m01.publish(reading("M01"), f"r{n}")
    wait_for(lambda: len(gate.messages) == 5, "the gateway to receive 5 readings", 20)
    gate.publish(f"lec/{TOPIC}/meter/M01/rejected", "refused")
    wait_for(lambda: m01.payloads() == [b"refused"], "M01 to read its rejection", 20)
    time.sleep(0.5)
    assert gate.payloads() == [f"r{n}".encode() for n in range(5)]
    assert outsider.messages == [], "a meter read another meter's readings or rejections"


def test_a_meter_in_the_gateways_share_group_swallows_readings(broker, clients):
    """Mosquitto 2.0.11's ACL file does not check subscriptions, and a shared subscription
    hands each message to one member: a meter that joins the gateways' group gets its
    turns, the ACL denies it the message, and nobody else gets it. Gateways on a shared
    subscription must use a group name that meters cannot guess."""
    gate = gateway(broker, clients)
    gate.subscribe(f"$share/gateways/{reading('+')}")
    meter(broker, clients, "M02").subscribe(f"$share/gateways/{reading('+')}")
    m01 = meter(broker, clients, "M01")
    for n in range(10):
        m01.publish(reading("M01"), f"r{n}")
    time.sleep(1)
    assert 0 < len(gate.messages) < 10


def test_the_simulator_logs_every_meter_in_as_itself(stack, broker, clients):
    from gateway.service import MqttSettings
    from node.simulation.meters import SimulatorSettings, run_simulation

    broker.add_meters(stack.community.registry.meter_ids())
    gate = gateway(broker, clients)
    gate.subscribe(reading("+"))
    now = int(time.time())
    published = run_simulation(
        stack.community,
        stack.keyring,
        MqttSettings(broker.host, broker.port),  # no login: each meter brings its own
        TOPIC,
        SimulatorSettings(start_offset_minutes=-3, minutes=1, speed=1000),
        clock=lambda: now,
        meter_login=broker.meter_login,
    )
    wait_for(lambda: len(gate.messages) == published, "every simulated reading", 60)
    senders = {topic.split("/")[3] for topic, _ in gate.messages}
    assert published == len(senders) >= 40  # one reading per meter, each through its own login
    assert all(json.loads(payload)["meter_id"] == topic.split("/")[3] for topic, payload in gate.messages)
    logins = re.findall(
        r"as lec-meter-\S+ \(.*u'([^']+)'\)", (broker.directory / "mosquitto.log").read_text()
    )
    assert set(logins) == senders


def mosquitto_version() -> tuple[int, ...]:
    command = [shutil.which("mosquitto", path=f"{os.environ.get('PATH', '')}:/usr/sbin"), "-h"]
    said = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    return tuple(int(n) for n in re.search(r"mosquitto version (\d+)\.(\d+)\.(\d+)", said).groups())


def test_a_restart_keeps_a_durable_gateways_subscription_but_2_0_11_not_a_shared_one(broker, clients):
    """Mosquitto 2.0.11 saves no shared subscriptions (src/persist_write.c saves them from
    2.0.19): after a restart, readings published before a gateway on ``$share/...``
    subscribes again reach nobody. A plain subscription of a durable session is kept."""
    for client_id, topic in (("g-plain", reading("+")), ("g-shared", f"$share/g/{reading('+')}")):
        gateway(broker, clients, client_id).subscribe(topic)
    broker.stop()
    broker.start()
    meter(broker, clients, "M01").publish(reading("M01"), "after the restart")
    plain, shared = (gateway(broker, clients, client_id) for client_id in ("g-plain", "g-shared"))
    wait_for(lambda: plain.payloads() == [b"after the restart"], "the queued reading", 20)
    if mosquitto_version() == (2, 0, 11):
        time.sleep(0.5)
        assert shared.messages == []


def test_added_meters_log_in_at_once_and_survive_a_restart(broker, clients):
    assert not meter(broker, clients, "M03").accepted
    assert broker.add_meters(["M03", "M01", "gateway-x", "bad/id"]) == ["M03"]
    assert meter(broker, clients, "M03").accepted
    broker.stop()
    broker.start()  # a new free port (port 0)
    assert meter(broker, clients, "M03").accepted and gateway(broker, clients).accepted


def test_a_taken_port_is_a_clear_error(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        broker = MosquittoBroker(tmp_path / "mosquitto", "127.0.0.1", port)
        with pytest.raises(MosquittoError, match="in use"):
            broker.start()
    assert not broker.running


def test_a_broker_left_running_by_a_killed_node_is_stopped(tmp_path):
    first = MosquittoBroker(tmp_path / "mosquitto", "127.0.0.1", 0).start()
    orphan, first._process = first._process, None  # as if its node had been killed
    second = MosquittoBroker(tmp_path / "mosquitto", "127.0.0.1", 0).start()
    try:
        orphan.wait(timeout=60)
        assert second.running
    finally:
        second.stop()


def test_lec_up_falls_back_to_the_embedded_broker_without_mosquitto(tmp_path, monkeypatch, caplog):
    from node.broker import EmbeddedBroker
    from node.composition import NodeSettings, describe_broker, start_broker

    monkeypatch.setattr(MosquittoBroker, "available", staticmethod(lambda: False))
    settings = NodeSettings(data_dir=tmp_path, mqtt_port=0)
    with caplog.at_level(logging.WARNING, logger="node.composition"):
        broker, gateway_mqtt, meter_login = start_broker(settings, ["M01"])
    try:
        assert isinstance(broker, EmbeddedBroker) and meter_login is None
        assert gateway_mqtt.port == broker.port and gateway_mqtt.password is None
        assert "Mosquitto is not installed" in caplog.text and "no passwords and no ACL" in caplog.text
        assert "no passwords, no ACL" in describe_broker(broker)
    finally:
        broker.stop()
    assert not (tmp_path / "mosquitto").exists()


def test_lec_up_starts_mosquitto_with_a_login_per_meter(tmp_path):
    from node.composition import NodeSettings, describe_broker, start_broker

    settings = NodeSettings(data_dir=tmp_path, mqtt_port=0)
    broker, gateway_mqtt, meter_login = start_broker(settings, ["M01", "M02"])
    try:
        assert isinstance(broker, MosquittoBroker) and broker.running
        assert (gateway_mqtt.username, gateway_mqtt.password) == broker.gateway_login()
        assert meter_login("M02") == ("M02", meter_password(tmp_path / "mosquitto", "M02"))
        summary = describe_broker(broker)
        assert summary.startswith(f"mosquitto on mqtt://127.0.0.1:{broker.port} (a password per meter, ACL")
        assert gateway_mqtt.password not in summary and gateway_mqtt.password not in str(gateway_mqtt)
    finally:
        broker.stop()


def test_lec_mqtt_password_prints_a_meters_password(broker, tmp_path):
    completed = lec("mqtt", "password", "M01", "--data-dir", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == broker.meter_login("M01")[1] + "\n"
    completed = lec("mqtt", "password", "M01", "--data-dir", str(tmp_path / "nowhere"))
    assert completed.returncode == 2 and "no MQTT secret" in completed.stderr
