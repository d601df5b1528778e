"""Sustained throughput and read latency of the embedded PoA node, next to anvil and a
geth Clique network on the same workload.

Two workloads, each sent over HTTP JSON-RPC by the same client code, pipelined (many
transactions in flight, local nonces, fixed gas so nothing is estimated per send):
  transfers  plain value transfers from several senders
  readings   MeasurementLedger.recordReadings batches of 100 readings (100 meters, one
             minute per batch), the gateway's workload
While they run, a reader thread calls eth_getBalance at "latest" every 20 ms on its own
connection and records each answer's latency: the p50/p99 a wallet or the event follower
sees while blocks are built and sealed.
The embedded node runs as its own process (`lec node start`, 2 s blocks); anvil
(Foundry, Rust, London rules) runs with the same 2 s block time; geth is three unmodified
geth 1.13.15 Clique sealers (`lec network geth`, same period; transactions to node 0),
skipped when geth is not built. All are measured in this run; the ratios embedded / anvil
and embedded / geth are what to compare between machines.
Targets: >= 200 meter readings per second sustained on the embedded node (issue 3);
throughput >= 1.0 x anvil and read latency p99 not waiting for sealing (issue 12).

usage: .venv/bin/python benchmarks/chain.py [--seconds 40] [--period 2] [--no-geth]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from eth_account import Account

from contracts import clock, units
from contracts.accounts import Keyring
from contracts.build import build_contracts
from contracts.client import ChainClient, Signer
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.ledger import Reading
from contracts.paths import NODE_MODULES, PROJECT_ROOT
from contracts.registry import Role
from node.geth import GethNetwork, geth_executable
from node.ports import free_port

READINGS_PER_BATCH = 100
SENDERS = 8
GAS_PER_BATCH = 3_600_000


def wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                url,
                data=b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}',
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=2).read()
            return
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"node exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)
    raise SystemExit(f"node at {url} did not come up")


def start_embedded(work: Path, period: int) -> tuple[str, subprocess.Popen, Signer]:
    port = free_port()
    data_dir = work / "embedded"
    log = work / "embedded.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli.main",
            "node",
            "start",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--ws-port",
            "0",
            "--period",
            str(period),
        ],
        cwd=PROJECT_ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process, log)
    return url, process, Keyring.load_or_create(data_dir)["faucet"]


def start_anvil(work: Path, period: int) -> tuple[str, subprocess.Popen, Signer]:
    port = free_port()
    log = work / "anvil.log"
    process = subprocess.Popen(
        [
            str(NODE_MODULES / ".bin" / "anvil"),
            "--port",
            str(port),
            "--block-time",
            str(period),
            "--hardfork",
            "london",
            "--chain-id",
            "4243",
            "--gas-limit",
            "30000000",
            "--accounts",
            "1",
            "--balance",
            "1000000",
            "--silent",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process, log)
    # anvil's first dev account (its well-known test mnemonic), funded at start.
    funder = Signer.from_key("funder", "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
    return url, process, funder


def start_geth(work: Path, period: int) -> tuple[str, GethNetwork, Signer]:
    funder = Signer("funder", Account.create())
    network = GethNetwork(sealers=3, period=period, data_dir=work / "geth", fund=[funder.address]).start()
    return network.rpc_urls[0], network, funder


class LatencyProbe:
    """Reads eth_getBalance at "latest" every ``interval`` s on its own connection."""

    def __init__(self, url: str, interval: float = 0.02):
        self.url, self.interval = url, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": ["0x" + "42" * 20, "latest"]}
        ).encode()
        while not self._stop.wait(self.interval):
            request = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}
            )
            started = time.perf_counter()
            urllib.request.urlopen(request, timeout=60).read()
            self.samples.append(time.perf_counter() - started)

    def percentile(self, q: float) -> float:
        if len(self.samples) < 2:
            return float("nan")
        return statistics.quantiles(self.samples, n=100, method="inclusive")[int(q) - 1] * 1000


def pipelined(client: ChainClient, sends: list[Callable[[], bytes]]) -> float:
    """Send everything, wait for every receipt; returns elapsed seconds."""
    started = time.perf_counter()
    hashes = [send() for send in sends]
    for tx_hash in hashes:
        client.wait(tx_hash)
    return time.perf_counter() - started


def transfers_per_second(client: ChainClient, funder: Signer, seconds: float) -> tuple[int, float]:
    senders = [Signer("sender", Account.create()) for _ in range(SENDERS)]
    for sender in senders:
        client.transfer_ether(funder, sender.address, 10**20)
    count = max(SENDERS, int(seconds * 60))
    fees = client.suggested_fees()
    sends = [
        (lambda sender=senders[index % SENDERS]: client.send_ether(sender, "0x" + "42" * 20, 1, fees))
        for index in range(count)
    ]
    elapsed = pipelined(client, sends)
    return count, elapsed


def readings_per_second(client: ChainClient, funder: Signer, seconds: float) -> tuple[int, float]:
    keyring = Keyring.ephemeral()
    for name in ("admin", "gateway", "member"):
        client.transfer_ether(funder, keyring[name].address, 10**22)
    admin = keyring["admin"]
    # the batches cover the past minutes of up to a day: readings are taken for that long
    community = Community(
        client, deploy_community(client, admin, CommunityConfig(data_delay_minutes=24 * 60))
    )
    community.registry.grant_role(admin, Role.GATEWAY, keyring["gateway"].address)
    community.registry.add_member(admin, keyring["member"].address, "member")
    member = keyring["member"].address
    registrations = [
        (
            lambda i=i: client.send(
                community.registry.contract.functions.registerMeter(
                    units.encode_id(f"M{i:03d}"), i, member, member
                ),
                admin,
                gas=200_000,
            )
        )
        for i in range(READINGS_PER_BATCH)
    ]
    pipelined(client, registrations)
    batches = max(2, int(seconds * 2.5))
    now = clock.minute_of(client.latest_timestamp())
    sends = []
    for batch in range(batches):
        minute = now - 1 - batch
        readings = [
            Reading(f"M{i:03d}", clock.minute_start(minute), 1.0 + i / 100, 0.1, 0.98, -1.0)
            for i in range(READINGS_PER_BATCH)
        ]
        call = community.ledger.record_readings_call(readings)
        sends.append(lambda call=call: client.send(call, keyring["gateway"], gas=GAS_PER_BATCH))
    elapsed = pipelined(client, sends)
    return batches * READINGS_PER_BATCH, elapsed


def measure(name: str, url: str, funder: Signer, seconds: float, artifacts) -> dict[str, float]:
    client = ChainClient.connect(url, artifacts)
    with LatencyProbe(url) as probe:
        transfers, transfer_time = transfers_per_second(client, funder, seconds)
        readings, reading_time = readings_per_second(client, funder, seconds)
    print(f"  {name:<9} {transfers} transfers in {transfer_time:.1f} s, ", end="")
    print(f"{readings} readings in {reading_time:.1f} s, {len(probe.samples)} reads")
    return {
        "transfers": transfers / transfer_time,
        "readings": readings / reading_time,
        "read p50 ms": probe.percentile(50),
        "read p99 ms": probe.percentile(99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=40, help="approximate length of each workload")
    parser.add_argument("--period", type=int, default=2, help="block period of every node (s)")
    parser.add_argument("--no-geth", action="store_true", help="leave out the geth network")
    args = parser.parse_args()
    artifacts = build_contracts().artifacts
    work = Path(tempfile.mkdtemp(prefix="lec-bench-chain-"))
    starters = [("embedded", start_embedded), ("anvil", start_anvil)]
    if not args.no_geth:
        if geth_executable() is None:
            print("geth 1.13.15 not built (scripts/setup.sh builds it with Go): the geth column is left out")
        else:
            starters.append(("geth", start_geth))
    results, running = {}, []
    try:
        for name, starter in starters:
            url, process, funder = starter(work, args.period)
            running.append(process)
            results[name] = measure(name, url, funder, args.seconds, artifacts)
            stop(process)
    finally:
        for process in running:
            stop(process)
        shutil.rmtree(work, ignore_errors=True)
    print()
    names = list(results)
    header = f"{'':<24}" + "".join(f"{name:>12}" for name in names)
    ratios = [other for other in names if other != "embedded"]
    print(header + "".join(f"{'embedded/' + other:>18}" for other in ratios))
    rows = (
        ("transfers", "plain transfers /s"),
        ("readings", "meter readings /s"),
        ("read p50 ms", "read latency p50 (ms)"),
        ("read p99 ms", "read latency p99 (ms)"),
    )
    for key, label in rows:
        values = "".join(f"{results[name][key]:>12.1f}" for name in names)
        quotients = "".join(f"{results['embedded'][key] / results[other][key]:>18.2f}" for other in ratios)
        print(f"{label:<24}{values}{quotients}")
    verdict = "meets" if results["embedded"]["readings"] >= 200 else "misses"
    print(f"target: >= 200 readings/s sustained on the embedded node -> {verdict}")
    for key in ("transfers", "readings"):
        ratio = results["embedded"][key] / results["anvil"][key]
        print(f"target: {key} >= 1.0 x anvil -> {ratio:.2f} ({'meets' if ratio >= 1 else 'misses'})")


def stop(process) -> None:
    """Stop a node process or a geth network (idempotent)."""
    if isinstance(process, GethNetwork):
        process.close()
    elif process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
