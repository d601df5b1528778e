"""Sustained readings per second from MQTT publish to on-chain confirmation, and latency.

The embedded stack: the embedded node as its own process (`lec node start`, 2 s blocks),
and in this process the embedded MQTT broker (amqtt), the gateway (validation, SQLite
queue, batched recordReadings) and the meters (paho clients publishing pre-signed QoS 1
payloads at a fixed rate). A watcher stamps each ReadingRecorded event when its block
appears; latency = that moment − the publish moment.
Target (issue 6): >= 200 readings/s sustained, p95 latency <= 2 block periods.

usage: .venv/bin/python benchmarks/gateway_throughput.py [--seconds 40] [--rate 250] [--meters 500]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow
# the `gateway` package it measures.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from contracts import clock  # noqa: E402
from contracts.accounts import Keyring  # noqa: E402
from contracts.build import build_contracts  # noqa: E402
from contracts.client import ChainClient  # noqa: E402
from contracts.community import Community  # noqa: E402
from contracts.deploy import CommunityConfig, deploy_community  # noqa: E402
from contracts.paths import PROJECT_ROOT  # noqa: E402
from contracts.registry import Meter, Role  # noqa: E402
from gateway.payload import sign_payload  # noqa: E402
from gateway.service import GatewayService, MqttSettings, reading_topic  # noqa: E402
from node.broker import EmbeddedBroker  # noqa: E402

TOPIC = "bench"
PUBLISHERS = 4
REGISTRATION_GAS = 400_000
REGISTRATIONS_PER_ROUND = 200


def start_node(work: Path, period: int) -> tuple[str, subprocess.Popen]:
    """`lec node start` in its own process; returns its JSON-RPC URL once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = work / "node.log"
    command = [sys.executable, "-m", "node.cli.main", "-q", "node", "start", "--data-dir",
               str(work / "chain"), "--port", str(port),
               "--ws-port", "0", "--period", str(period)]  # fmt: skip
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if ChainClient.connect(url).w3.eth.block_number >= 0:
                return url, process
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start: {log.read_text()}") from None
            time.sleep(0.2)


def set_up_community(url: str, keyring: Keyring, meters: int) -> tuple[Community, list[str]]:
    client = ChainClient.connect(url, build_contracts().artifacts)
    admin, member = keyring["admin"], keyring["faucet"]
    community = Community(
        client, deploy_community(client, admin, CommunityConfig(name="bench", data_delay_minutes=24 * 60))
    )
    meter_ids = [f"B{i:04d}" for i in range(meters)]
    calls = [
        (community.registry.grant_role_call(Role.GATEWAY, keyring["gateway"].address), admin),
        (community.registry.add_member_call(member.address, "member"), admin),
    ]
    calls += [
        (
            community.registry.register_meter_call(
                Meter(m, 1, member.address, keyring[f"meter-{m}"].address)
            ),
            admin,
        )
        for m in meter_ids
    ]
    for start in range(0, len(calls), REGISTRATIONS_PER_ROUND):  # the pool holds 256 per sender
        client.transact_all(calls[start : start + REGISTRATIONS_PER_ROUND], gas=REGISTRATION_GAS)
    return community, meter_ids


class ConfirmationWatcher:
    """Stamps every ReadingRecorded event with the time its block was first seen."""

    def __init__(self, community: Community):
        self.community = community
        self.confirmed: dict[tuple[str, int], float] = {}
        self._readings = community.ledger.follow_readings(community.client.head_block() + 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            recorded = self._readings.poll().items
            seen = time.time()
            for item in recorded:
                self.confirmed[(item.reading.meter_id, item.reading.minute)] = seen


def run(seconds: float, rate: float, meters: int, period: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="lec-gateway-bench-"))
    url, node = start_node(work, period)
    broker = None
    gateway = None
    try:
        keyring = Keyring.load_or_create(work / "chain")
        community, meter_ids = set_up_community(url, keyring, meters)
        count = int(seconds * rate)
        now = int(time.time())
        first_minute = now - now % 60 - 60 * (count // meters + 2)
        keys = {m: keyring[f"meter-{m}"].account for m in meter_ids}
        payloads = []
        for n in range(count):
            meter, minute = meter_ids[n % meters], first_minute + 60 * (n // meters)
            fields = {"meter_id": meter, "time": minute, "seq": n, "p_kw": 1.5, "q_kvar": 0.2, "v_pu": 1.01,
                      "theta_deg": -0.3}  # fmt: skip
            payloads.append((meter, minute, json.dumps(sign_payload(fields, keys[meter]))))

        broker = EmbeddedBroker("127.0.0.1", 0).start()
        gateway_client = ChainClient.connect(url, community.client.artifacts)
        gateway = GatewayService(
            Community(gateway_client, community.deployment),
            keyring["gateway"],
            work / "queue.sqlite",
            MqttSettings(broker.host, broker.port, username="gateway"),
            TOPIC,
        ).start()
        gateway.connected.wait(10)
        watcher = ConfirmationWatcher(community)
        publishers = []
        for n in range(PUBLISHERS):
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-meters-{n}")
            client.max_inflight_messages_set(200)
            client.connect(broker.host, broker.port)
            client.loop_start()
            publishers.append(client)

        published: dict[tuple[bytes, int], float] = {}
        start = time.time()
        for n, (meter, minute, payload) in enumerate(payloads):
            delay = start + n / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            published[(meter, clock.minute_of(minute))] = time.time()
            publishers[n % PUBLISHERS].publish(reading_topic(TOPIC, meter), payload, qos=1)
        publish_end = time.time()
        deadline = publish_end + 60
        while len(watcher.confirmed) < count and time.time() < deadline:
            time.sleep(0.1)
        watcher.stop()
        for client in publishers:
            client.disconnect()
            client.loop_stop()
        latencies = np.array(
            [watcher.confirmed[k] - t for k, t in published.items() if k in watcher.confirmed]
        )
        last = max(watcher.confirmed.values())
        return {
            "published": count,
            "confirmed": len(latencies),
            "publish_rate": count / (publish_end - start),
            "sustained_rate": len(latencies) / (last - start),
            "p50_s": float(np.percentile(latencies, 50)),
            "p95_s": float(np.percentile(latencies, 95)),
            "max_s": float(latencies.max()),
            "rejected": sum(v for k, v in gateway.stats().items() if k.startswith("rejected")),
        }
    finally:
        if gateway is not None:
            gateway.stop()
        if broker is not None:
            broker.stop()
        node.terminate()
        node.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=40, help="how long the meters publish")
    parser.add_argument("--rate", type=float, default=250, help="readings published per second")
    parser.add_argument("--meters", type=int, default=500, help="registered meters")
    parser.add_argument("--period", type=int, default=2, help="block period of the node (s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = run(args.seconds, args.rate, args.meters, args.period)
    print(
        f"published {result['published']} readings at {result['publish_rate']:.0f}/s for {args.seconds:g} s "
        f"({args.meters} meters); confirmed {result['confirmed']}, rejected {result['rejected']}"
    )
    print(f"sustained publish -> confirmation: {result['sustained_rate']:.0f} readings/s (target >= 200)")
    print(
        f"latency publish -> confirmation: p50 {result['p50_s']:.2f} s, p95 {result['p95_s']:.2f} s, "
        f"max {result['max_s']:.2f} s (target p95 <= {2 * args.period} s = 2 block periods)"
    )


if __name__ == "__main__":
    main()
