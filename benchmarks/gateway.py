"""Meter ingest: the chain's capacity for reading batches, the gateway's through Mosquitto,
their ratio, latency at 80 % of capacity and throughput at 2x, with one and two gateways.

Everything runs as the community runs it, each part in its own process: the embedded node
(`lec node start`, 2 s blocks), Mosquitto with a password per meter and the ACL
(node/mosquitto.py), the gateways (`lec gateway run`, two on one shared subscription) and
the meters (a process of paho clients publishing pre-signed QoS 1 payloads at a fixed rate,
each meter logged in as itself). A watcher stamps each reading when the block holding it
appears; latency = that moment - the publish moment.

Printed, in one run:
  stages      each stage of the path alone, in readings/s (payload parsing + signature
              recovery + registry lookup, the durable queue's commit, encoding and signing
              a batch transaction, the chain's execution of recordReadings batches)
  capacity    the chain's own capacity (batches sent directly) and the gateway's through
              the broker (confirmed readings/s while offered 2x the chain's capacity);
              target ratio >= 0.9, and at 2x: >= 0.9 x capacity confirmed
  latency     p50/p95 publish -> confirmation at 80 % of the chain's capacity;
              target p95 <= 2 block periods
Absolute rates depend on the machine (2 shared cores here); compare the ratios. With
--pin (the default on 2 or more cores) the node runs on core 0 alone and everything else
(broker, gateways, the meters' publisher, this watcher) on the other cores, in the direct
run and in the gateway runs alike: a node shares its machine with no meter, and the
question is whether the gateway keeps the chain busy, not how the load generator competes
with the chain for the same core.

usage: .venv/bin/python benchmarks/gateway.py [--seconds 30] [--meters 200] [--period 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow
# the `gateway` package it measures.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]

import numpy as np  # noqa: E402

from contracts import clock  # noqa: E402
from contracts.accounts import Keyring  # noqa: E402
from contracts.build import build_contracts  # noqa: E402
from contracts.client import ChainClient  # noqa: E402
from contracts.community import Community  # noqa: E402
from contracts.deploy import CommunityConfig, deploy_community  # noqa: E402
from contracts.ledger import Reading  # noqa: E402
from contracts.paths import PROJECT_ROOT  # noqa: E402
from contracts.registry import Meter, Role  # noqa: E402
from gateway.meter_keys import MeterDirectory  # noqa: E402
from gateway.payload import sign_payload  # noqa: E402
from gateway.queue import ReadingQueue  # noqa: E402
from gateway.service import reading_topic  # noqa: E402
from gateway.submitter import SubmitterSettings  # noqa: E402
from gateway.validation import AcceptancePolicy, ReadingValidator  # noqa: E402
from node.mosquitto import MosquittoBroker  # noqa: E402
from node.ports import free_port  # noqa: E402

TOPIC = "bench"
SHARE_GROUP = "bench-gateways"
GATEWAYS = ("gateway", "gateway-2")
BATCH = SubmitterSettings().max_batch
GAS_PER_BATCH = SubmitterSettings().base_gas + SubmitterSettings().gas_per_reading * BATCH
SETUP_GAS = 400_000
FUNDING_WEI = 10**22


# ------------------------------------------------------------------------------ set-up


def start_node(work: Path, period: int, cores: set[int] | None) -> tuple[str, subprocess.Popen]:
    """`lec node start` in its own process (on ``cores`` if given); returns its JSON-RPC
    URL once it answers."""
    port = free_port("127.0.0.1")
    log = work / "node.log"
    command = [sys.executable, "-m", "node.cli.main", "-q", "node", "start",
               "--data-dir", str(work / "chain"), "--port", str(port), "--ws-port", "0",
               "--period", str(period)]  # fmt: skip
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, preexec_fn=pin
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if ChainClient.connect(url).w3.eth.block_number >= 0:
                return url, process
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start: {log.read_text()}") from None
            time.sleep(0.2)


def set_up_community(
    url: str, node_keys: Keyring, keyring: Keyring, meters: int
) -> tuple[Community, list[str]]:
    """Deploy a community, grant every gateway key its role and gas, register the meters."""
    client = ChainClient.connect(url, build_contracts().artifacts)
    funder = node_keys["admin"]  # funded in the node's genesis
    for name in ("admin", "member", *GATEWAYS):
        client.transfer_ether(funder, keyring[name].address, FUNDING_WEI)
    admin, member = keyring["admin"], keyring["member"].address
    config = CommunityConfig(name="bench", data_delay_minutes=24 * 60)
    community = Community(client, deploy_community(client, admin, config))
    meter_ids = [f"B{i:04d}" for i in range(meters)]
    calls = [(community.registry.grant_role_call(Role.GATEWAY, keyring[g].address), admin) for g in GATEWAYS]
    calls.append((community.registry.add_member_call(member, "member"), admin))
    calls += [
        (community.registry.register_meter_call(Meter(m, 1, member, keyring[f"meter-{m}"].address)), admin)
        for m in meter_ids
    ]
    for start in range(0, len(calls), 200):  # the pool holds 256 per sender
        client.transact_all(calls[start : start + 200], gas=SETUP_GAS)
    return community, meter_ids


class Workload:
    """Distinct, valid readings for every run: each run takes the next minutes back in time."""

    def __init__(self, community: Community, keyring: Keyring, meter_ids: list[str]):
        self.keyring, self.meter_ids = keyring, meter_ids
        now = clock.minute_of(community.client.latest_timestamp())
        self._next_minute = now - 2

    def readings(self, count: int) -> list[Reading]:
        minutes = -(-count // len(self.meter_ids))
        first = self._next_minute - minutes + 1
        self._next_minute = first - 1
        readings = [
            Reading(m, clock.minute_start(first + k), 1.0 + i / 1000, 0.1, 1.0, -0.5)
            for k in range(minutes)
            for i, m in enumerate(self.meter_ids)
        ]
        return readings[:count]

    def payloads(self, readings: list[Reading]) -> list[tuple[str, str, str]]:
        """(meter id, topic, signed JSON) per reading, signed before any clock runs."""
        out = []
        for n, r in enumerate(readings):
            fields = {"meter_id": r.meter_id, "time": r.time, "seq": n, "p_kw": r.p_kw, "q_kvar": r.q_kvar,
                      "v_pu": r.v_pu, "theta_deg": r.theta_deg}  # fmt: skip
            signed = sign_payload(fields, self.keyring[f"meter-{r.meter_id}"].account)
            out.append((r.meter_id, reading_topic(TOPIC, r.meter_id), json.dumps(signed)))
        return out


# ------------------------------------------------------------------------------ stages


def stage_capacities(community: Community, keyring: Keyring, workload: Workload, work: Path) -> dict:
    """Readings per second of each stage of the gateway on its own, in this process."""
    readings = workload.readings(3000)
    payloads = workload.payloads(readings)
    directory = MeterDirectory(community)
    directory.sync()
    validator = ReadingValidator(directory, AcceptancePolicy())
    started = time.perf_counter()
    signed = [validator.validate(meter, payload.encode()) for meter, _, payload in payloads]
    parse = len(signed) / (time.perf_counter() - started)
    queue = ReadingQueue(work / "stage-queue.sqlite")
    started = time.perf_counter()
    for start in range(0, len(signed), 100):
        queue.accept([(item, time.time()) for item in signed[start : start + 100]])
    commit = len(signed) / (time.perf_counter() - started)
    queue.close()
    client = community.client
    fees = client.suggested_fees()
    gateway = keyring["gateway"]
    started = time.perf_counter()
    for start in range(0, len(readings), BATCH):
        call = community.ledger.record_readings_call(readings[start : start + BATCH])
        transaction = call.build_transaction(
            {"from": gateway.address, "nonce": 0, "gas": GAS_PER_BATCH, "chainId": client.chain_id, **fees}
        )
        gateway.account.sign_transaction(transaction)
    encode = len(readings) / (time.perf_counter() - started)
    return {"parse + verify + lookup": parse, "queue commit (fsync)": commit, "encode + sign batch": encode}


def chain_capacity(community: Community, keyring: Keyring, workload: Workload, seconds: float, guess: float):
    """Readings per second the node confirms when batches are sent to it directly, at
    steady state: the readings of the blocks after the first, over the time from the
    first block to the last (block timestamps)."""
    readings = workload.readings(max(8 * BATCH, int(seconds * guess)))
    client = community.client
    gateway = keyring["gateway"]
    hashes = [
        client.send(
            community.ledger.record_readings_call(readings[s : s + BATCH]), gateway, gas=GAS_PER_BATCH
        )
        for s in range(0, len(readings), BATCH)
    ]
    per_block: dict[int, int] = {}
    for start, tx_hash in zip(range(0, len(readings), BATCH), hashes, strict=True):
        block = client.wait(tx_hash, "reading batch")["blockNumber"]
        per_block[block] = per_block.get(block, 0) + len(readings[start : start + BATCH])
    first, last = min(per_block), max(per_block)
    timestamps = {n: client.w3.eth.get_block(n)["timestamp"] for n in (first, last)}
    return (sum(per_block.values()) - per_block[first]) / max(1, timestamps[last] - timestamps[first])


# ------------------------------------------------------------------------------ runs


def publish_process(broker_url_parts, logins, payloads, rate, start_at, results) -> None:
    """The meters: one paho client per meter, publishing ``payloads`` at ``rate`` per second."""
    import paho.mqtt.client as mqtt

    host, port = broker_url_parts
    clients = {}
    for meter, (user, password) in logins.items():
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{meter}")
        client.username_pw_set(user, password)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.connect(host, port)
        client.loop_start()
        clients[meter] = client
    time.sleep(max(0.0, start_at - time.time()))
    start = time.time()
    stamps = []
    infos = []
    for n, (meter, topic, payload) in enumerate(payloads):
        delay = start + n / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        stamps.append(time.time())
        infos.append(clients[meter].publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(timeout=120)
    results.put(stamps)
    for client in clients.values():
        client.disconnect()
        client.loop_stop()


class Watcher:
    """Stamps every recorded reading with the moment its block was first seen."""

    def __init__(self, community: Community):
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
            items = self._readings.poll().items
            seen = time.time()
            for item in items:
                self.confirmed.setdefault((item.reading.meter_id, item.reading.time), seen)


@dataclass
class RunResult:
    offered: float
    confirmed_rate: float
    p50: float
    p95: float
    missing: int


def gateway_run(community, broker, workload, gateways, rate: float, seconds: float) -> RunResult:
    """Offer ``rate`` readings/s for ``seconds`` through the broker; measure what is confirmed."""
    readings = workload.readings(int(rate * seconds))
    payloads = workload.payloads(readings)
    logins = {m: broker.meter_login(m) for m in workload.meter_ids}
    results = multiprocessing.get_context("spawn").Queue()
    start_at = time.time() + 5 + len(logins) / 100  # the meters connect first
    publisher = multiprocessing.get_context("spawn").Process(
        target=publish_process, args=((broker.host, broker.port), logins, payloads, rate, start_at, results)
    )
    watcher = Watcher(community)
    publisher.start()
    stamps = results.get(timeout=seconds * 4 + 300)
    publisher.join(timeout=60)
    published = dict(zip(((r.meter_id, r.time) for r in readings), stamps, strict=True))
    deadline = time.time() + max(60, seconds * 3)
    while len(watcher.confirmed.keys() & published.keys()) < len(published) and time.time() < deadline:
        time.sleep(0.2)
    watcher.stop()
    confirmed = {key: watcher.confirmed[key] for key in published if key in watcher.confirmed}
    latencies = np.array([confirmed[key] - published[key] for key in confirmed])
    # steady state: readings confirmed in the second half of the publishing
    window_start, window_end = stamps[0] + seconds / 2, stamps[-1]
    in_window = sum(1 for t in confirmed.values() if window_start <= t <= window_end)
    steady = in_window / max(1e-9, window_end - window_start)
    return RunResult(rate, steady, float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95)),
                     len(published) - len(confirmed))  # fmt: skip


class GatewayProcesses:
    """``lec gateway run`` processes, one per name, on one shared subscription."""

    def __init__(self, work: Path, url: str, broker, keyring: Keyring, community: Community, names):
        self.processes = []
        for name in names:
            data_dir = work / name
            data_dir.mkdir(parents=True, exist_ok=True)
            keys = data_dir / "keys.json"
            keys.write_text(json.dumps({name: keyring[name].account.key.hex()}))
            keys.chmod(0o600)
            community.deployment.save(data_dir)
            command = [sys.executable, "-m", "node.cli.main", "gateway", "run", "--data-dir", str(data_dir),
                       "--rpc-url", url, "--mqtt-url", broker.gateway_url(name), "--community", TOPIC,
                       "--name", name, "--share-group", SHARE_GROUP]  # fmt: skip
            log = data_dir / "gateway.log"
            with log.open("ab") as output:
                process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT)
            self.processes.append((process, log))
        for process, log in self.processes:
            deadline = time.monotonic() + 120
            while "connected to" not in log.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not start: {log.read_text()[-3000:]}")
                time.sleep(0.2)

    def stop(self) -> None:
        for process, _ in self.processes:
            process.send_signal(signal.SIGINT)
        for process, _ in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30, help="how long the meters publish in each run")
    parser.add_argument("--meters", type=int, default=200, help="registered meters (one MQTT login each)")
    parser.add_argument("--period", type=int, default=2, help="block period of the node (s)")
    parser.add_argument(
        "--gateways", type=int, nargs="+", default=[1, 2], choices=(1, 2), help="gateway counts to run (1 2)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs of node, gateways)")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="let the node share every core with the rest"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="lec-gateway-bench-"))
    cores = sorted(os.sched_getaffinity(0))
    node_cores = {cores[0]} if args.pin and len(cores) >= 2 else None
    url, node = start_node(work, args.period, node_cores)
    if node_cores:  # this process and all it starts from now on: the other cores
        os.sched_setaffinity(0, set(cores[1:]))
    broker = None
    try:
        node_keys = Keyring.load_or_create(work / "chain")
        keyring = Keyring.ephemeral()
        community, meter_ids = set_up_community(url, node_keys, keyring, args.meters)
        workload = Workload(community, keyring, meter_ids)
        broker = MosquittoBroker(work / "mosquitto", "127.0.0.1", 0, meter_ids, GATEWAYS).start()

        print(f"{args.meters} meters, {args.period} s blocks, batches of {BATCH}, {args.seconds:g} s per run")
        where = f"core {cores[0]}, the rest on cores {cores[1:]}" if node_cores else "all cores shared"
        print(f"node on {where}")
        print("stages alone (readings/s):")
        for stage, rate in stage_capacities(community, keyring, workload, work).items():
            print(f"  {stage:<26} {rate:>8,.0f}")
        capacity = chain_capacity(community, keyring, workload, args.seconds, guess=1000)
        print(f"  {'chain: recordReadings':<26} {capacity:>8,.0f}   (sent directly: the chain's capacity)")
        print()
        print(
            f"{'gateways':>8} {'offered/s':>10} {'confirmed/s':>12} {'ratio':>6} "
            f"{'p50 s':>6} {'p95 s':>6} {'missing':>8}"
        )
        for count in args.gateways:
            gateways = GatewayProcesses(work / f"g{count}", url, broker, keyring, community, GATEWAYS[:count])
            try:
                for share in (2.0, 0.8):
                    result = gateway_run(community, broker, workload, count, share * capacity, args.seconds)
                    print(f"{count:>8} {result.offered:>10,.0f} {result.confirmed_rate:>12,.0f} "
                          f"{result.confirmed_rate / capacity:>6.2f} {result.p50:>6.1f} {result.p95:>6.1f} "
                          f"{result.missing:>8}", flush=True)  # fmt: skip
            finally:
                gateways.stop()
        print()
        print("ratio = confirmed / the chain's capacity; at 2x offered that is the gateway's capacity")
        print(f"targets: ratio >= 0.9 at 2x offered; p95 <= {2 * args.period} s (2 block periods) at 0.8x")
    finally:
        if broker is not None:
            broker.stop()
        node.terminate()
        node.wait(timeout=60)
        if args.keep:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
