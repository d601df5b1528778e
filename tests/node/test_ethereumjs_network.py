"""A real multi-node proof-of-authority network: three EthereumJS clients sealing one
Clique chain on 127.0.0.1, used through the project's own chain client and deploy code.

The tests share one network and run in file order: peering and sealing in turn, the
community contracts deployed on one node and read on another, then one sealer stopped
while blocks and transactions continue.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from contracts import clock
from contracts.accounts import Keyring
from contracts.client import ChainClient
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.ledger import Reading
from contracts.limits import Band, BandSource
from contracts.registry import Flexibility, FlexKind, Meter, Role
from node import ethereumjs
from node.ethereumjs import (
    CHAIN_ID,
    ETHEREUMJS,
    CliqueNetwork,
    block_signer,
    clique_genesis,
    fixes_source,
    start_order,
)

needs_ethereumjs = pytest.mark.skipif(
    not ETHEREUMJS.exists(), reason="npm package @ethereumjs/client missing"
)

PERIOD = 2
SEALERS = 3
STOPPED = 2  # the sealer taken down in the last test
CONFIRMATIONS = 2  # several sealers reorganise short branches: build on settled blocks only
ACCOUNTS = ("admin", "gateway", "ocm", "alice", "meter-M01")


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    keyring = Keyring()
    for name in ACCOUNTS:
        keyring.signer(name)
    return keyring


@pytest.fixture(scope="module")
def network(keyring, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ethereumjs")
    with CliqueNetwork(
        sealers=SEALERS, period=PERIOD, data_dir=data_dir, fund=keyring_addresses(keyring)
    ) as net:
        yield net
    assert all(not node.running for node in net.nodes), "a client outlived the network"


def keyring_addresses(keyring: Keyring) -> list[str]:
    return [keyring[name].address for name in keyring.names]


@pytest.fixture(scope="module")
def community_state():
    """What the community test leaves for the sealer-stop test."""
    return {}


def wait_for(predicate, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def wait_for_block(client: ChainClient, number: int, timeout: float = 180.0) -> None:
    wait_for(lambda: client.w3.eth.block_number >= number, f"block {number} on {client.w3.provider}", timeout)


def test_genesis_is_clique_with_london_and_no_merge():
    sealers = ["0x" + "bb" * 20, "0x" + "AA" * 20]
    genesis = clique_genesis(sealers, period=3, alloc={"0x" + "cc" * 20: 5}, timestamp=1_700_000_000)
    config = genesis["config"]
    assert config["chainId"] == CHAIN_ID
    assert config["londonBlock"] == config["berlinBlock"] == config["homesteadBlock"] == 0
    assert config["clique"] == {"period": 3, "epoch": 30_000}
    assert not {"terminalTotalDifficulty", "mergeNetsplitBlock", "shanghaiTime", "cancunTime"} & set(config)
    vanity, signers, seal = (
        bytes.fromhex(genesis["extraData"][2:])[i:j] for i, j in ((0, 32), (32, 72), (72, None))
    )
    assert vanity == bytes(32) and seal == bytes(65)
    assert signers == bytes.fromhex("aa" * 20 + "bb" * 20), "sealers sorted by address"
    assert genesis["alloc"] == {"cc" * 20: {"balance": "0x5"}}
    assert int(genesis["timestamp"], 16) == 1_700_000_000 and int(genesis["baseFeePerGas"], 16) == 10**9


def test_node_zero_is_the_in_turn_sealer_of_block_one():
    sealers = ["0x" + digit * 40 for digit in "3a1"]
    ranked = sorted(sealers)
    order = start_order(sealers)
    assert sorted(order) == ranked
    for index, sealer in enumerate(order):  # node i seals in turn the blocks n with n % N == (i + 1) % N
        assert sealer == ranked[(index + 1) % len(sealers)]


@needs_ethereumjs
def test_the_fixes_import_the_clients_own_modules():
    source = fixes_source()
    assert not re.search(r"'__[A-Z_]+__'", source), "a module of the client was not found"
    assert source.count("from 'file:///") == 9
    assert "__AWAIT__" not in source and "process.env.LEC_CLIQUE_AWAIT_BLOCK_ONE" in source


@pytest.mark.slow
@needs_ethereumjs
def test_three_clients_peer_and_seal_in_turn(network, keyring):
    assert len(network.nodes) == SEALERS and len(set(network.sealers)) == SEALERS
    for node in network.nodes:
        others = {other.node_id for other in network.nodes if other is not node}
        assert others <= network.peer_ids(node.index), (
            f"node {node.index} is not connected to every other node"
        )
        assert int(node.rpc("eth_chainId"), 16) == CHAIN_ID

    head = network.wait_for_blocks(2 * SEALERS)
    numbers = range(head - 2 * SEALERS + 1, head + 1)
    signers = network.signers(0, numbers)
    assert set(signers.values()) == set(network.sealers), f"not every sealer sealed: {signers}"
    ranked = sorted(network.sealers, key=lambda address: int(address, 16))
    for number in numbers:
        block = network.block(0, number)
        if int(block["difficulty"], 16) == 2:  # in turn: Clique's signer of block n is sorted(signers)[n % N]
            assert block_signer(block) == ranked[number % SEALERS], f"block {number} sealed out of order"
        for index in (1, 2):
            assert network.block(index, number)["hash"] == block["hash"], (
                f"node {index} differs at block {number}"
            )

    # sealer keys stay in the key files (mode 0600) and out of every log
    for node in network.nodes:
        assert node.key_file.stat().st_mode & 0o077 == 0
        secret = node.key_file.read_text().strip()
        assert secret not in node.log_file.read_text()


@pytest.mark.slow
@needs_ethereumjs
def test_community_contracts_work_across_nodes(network, keyring, artifacts, community_state):
    admin, gateway, ocm, alice = (keyring[name] for name in ("admin", "gateway", "ocm", "alice"))
    writer = ChainClient.connect(network.rpc_urls[0], artifacts, confirmations=CONFIRMATIONS)
    deployment = deploy_community(writer, admin, CommunityConfig(name="EthereumJS network", slot_minutes=15))
    assert deployment.chain_id == CHAIN_ID
    community = Community(writer, deployment)
    community.registry.grant_role(admin, Role.GATEWAY, gateway.address)
    community.registry.grant_role(admin, Role.OCM_ORACLE, ocm.address)
    community.registry.add_member(admin, alice.address, "alice")
    community.registry.register_meter(admin, Meter("M01", 2, alice.address, keyring["meter-M01"].address))
    community.registry.register_flexibility(
        admin, Flexibility("BAT01", alice.address, 2, FlexKind.BATTERY, -5.0, 5.0, 0, "M01")
    )

    # readings for minutes already begun and a band for minutes still to come, by block time
    minute = clock.minute_of(writer.latest_timestamp())
    slot = (minute - 1) // 15
    past = [m for m in range(minute - 3, minute) if m // 15 == slot] or [minute - 1]
    readings = [Reading("M01", clock.minute_start(m), 1.0 + i, 0.2, 0.99, -1.0) for i, m in enumerate(past)]
    recorded = community.ledger.record_readings(gateway, readings)
    band = Band("BAT01", clock.minute_start(minute + 3), clock.minute_start(minute + 5), -2.0, 3.0)
    published = community.limits.publish_bands(ocm, [band])

    reader = ChainClient.connect(network.rpc_urls[1], artifacts)
    wait_for_block(reader, published["blockNumber"])
    read = Community(reader, deployment)
    assert read.registry.meter("M01").member == alice.address
    assert read.registry.flexibility("BAT01").p_high_kw == 5.0
    assert all(read.ledger.has_reading("M01", reading.time) for reading in readings)
    energy = read.ledger.slot_energy("M01", slot)
    assert energy.readings == len(readings)
    assert energy.active_kwh == pytest.approx(sum(1.0 + i for i in range(len(readings))) / 60)
    in_force = read.limits.band_at("BAT01", band.start)
    assert (in_force.p_min_kw, in_force.p_max_kw, in_force.source) == (-2.0, 3.0, BandSource.OCM)
    for index in range(SEALERS):  # the same blocks everywhere
        for receipt in (recorded, published):
            assert (
                network.block(index, receipt["blockNumber"])["hash"]
                == "0x" + bytes(receipt["blockHash"]).hex()
            )
    community_state["deployment"] = deployment


@pytest.mark.slow
@needs_ethereumjs
def test_chain_continues_after_a_sealer_stops(network, keyring, artifacts, community_state):
    if "deployment" not in community_state:
        pytest.skip("needs the community deployed by the previous test")
    network.stop_node(STOPPED)
    assert not network.nodes[STOPPED].running
    remaining = [node.index for node in network.nodes if node.index != STOPPED]

    head = network.wait_for_blocks(2 * SEALERS, index=remaining[0])
    numbers = range(head - 2 * SEALERS + 1, head + 1)
    signers = network.signers(remaining[0], numbers)
    assert set(signers.values()) == {network.sealers[index] for index in remaining}, signers

    # a transaction sent to one remaining node is mined and seen by the other
    admin = keyring["admin"]
    sender = Community(
        ChainClient.connect(network.rpc_urls[remaining[1]], artifacts, confirmations=CONFIRMATIONS),
        community_state["deployment"],
    )
    dso = keyring.signer("dso").address
    receipt = sender.registry.grant_role(admin, Role.DSO, dso)
    other = Community(
        ChainClient.connect(network.rpc_urls[remaining[0]], artifacts), community_state["deployment"]
    )
    wait_for_block(other.client, receipt["blockNumber"])
    assert other.registry.has_role(Role.DSO, dso)
    assert (
        network.block(remaining[0], receipt["blockNumber"])["hash"]
        == "0x" + bytes(receipt["blockHash"]).hex()
    )
    assert network.wait_for_blocks(2, index=remaining[0]) > receipt["blockNumber"]


@pytest.mark.slow
@needs_ethereumjs
def test_a_client_whose_port_another_program_took_starts_on_new_ports(tmp_path, monkeypatch):
    taken = socket.create_server(("0.0.0.0", 0))  # another program got the RLPx port first
    pick = ethereumjs.free_ports
    picks = iter([[taken.getsockname()[1], *pick(1)]])
    monkeypatch.setattr(ethereumjs, "free_ports", lambda count: next(picks, None) or pick(count))
    with taken, CliqueNetwork(sealers=1, period=1, data_dir=tmp_path / "net", watch=False) as network:
        node = network.nodes[0]
        assert node.p2p_port != taken.getsockname()[1]
        assert "EADDRINUSE" in node.log_file.read_text(), "the first start did not meet the taken port"
        assert network.wait_for_blocks(1) >= 3
