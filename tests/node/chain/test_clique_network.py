"""Clique consensus on embedded nodes linked in process: sealing in turn, a sealer
outage with out-of-turn sealing, votes that add and remove sealers, and the rules
py-evm leaves out."""

from __future__ import annotations

import itertools
import time

import pytest
from eth_keys import keys
from eth_utils import ValidationError, to_checksum_address

from node.chain.consensus import signer_of
from node.chain.genesis import GenesisConfig
from node.chain.node import MIN_REAL_BLOCK_INTERVAL_S, PoaNode, link
from tests.waiting import wait_for

PERIOD = 1


def sealer_keys(count):
    return [keys.PrivateKey(bytes([index + 1]) * 32) for index in range(count)]


def address(key):
    return key.public_key.to_canonical_address()


@pytest.fixture
def network():
    """Start ``count`` linked nodes, the first ``sealers`` of them in the genesis."""
    started: list[PoaNode] = []

    def start(count, sealers=None):
        all_keys = sealer_keys(count)
        genesis = GenesisConfig(
            chain_id=4242,
            sealers=tuple(key.public_key.to_checksum_address() for key in all_keys[: sealers or count]),
            period=PERIOD,
        )
        nodes = [PoaNode(genesis, None, key, name=f"n{i}") for i, key in enumerate(all_keys)]
        link(*nodes)
        for node in nodes:
            started.append(node.start())
        return nodes

    yield start
    for node in started:
        if node.running:
            node.stop()


def canonical_headers(node, first=1):
    with node.lock:
        head = node.chain.get_canonical_head().block_number
        return [node.chain.get_canonical_block_header_by_number(n) for n in range(first, head + 1)]


def test_three_sealers_take_turns_and_agree(network):
    nodes = network(3)
    wait_for(lambda: all(n.head.block_number >= 7 for n in nodes), what="seven blocks on every node")
    reference = canonical_headers(nodes[0])[:6]
    signers = nodes[0].signers()
    for header in reference:
        assert header.difficulty == 2, "with every sealer up, every block is sealed in turn"
        assert signer_of(header) == signers[header.block_number % 3]
    for other in nodes[1:]:
        assert [h.hash for h in canonical_headers(other)[:6]] == [h.hash for h in reference]


def test_sealer_outage_is_covered_out_of_turn(network):
    nodes = network(3)
    wait_for(lambda: nodes[0].head.block_number >= 2, what="first blocks")
    down = nodes[2]
    down.stop()
    start = nodes[0].head.block_number
    wait_for(lambda: nodes[0].head.block_number >= start + 6, timeout=180, what="six blocks without a sealer")
    headers = [h for h in canonical_headers(nodes[0], start + 1)]
    missing_turns = [h for h in headers if nodes[0].signers()[h.block_number % 3] == address(down.sealer_key)]
    assert missing_turns, "the stopped sealer had turns in this range"
    for header in missing_turns:
        assert header.difficulty == 1, "another sealer sealed out of turn"
        assert signer_of(header) != address(down.sealer_key)
    for header in headers:
        assert header.timestamp - canonical_headers(nodes[0], header.block_number - 1)[0].timestamp >= PERIOD
    assert (
        nodes[1].head.hash == nodes[0].head.hash
        or abs(nodes[1].head.block_number - nodes[0].head.block_number) <= 1
    )


def test_a_sealer_is_added_and_removed_by_votes(network):
    nodes = network(3, sealers=2)  # n2 starts as a follower
    newcomer = address(nodes[2].sealer_key)
    assert newcomer not in nodes[0].signers()
    for voter in nodes[:2]:
        voter.propose(to_checksum_address(newcomer), True)
    wait_for(lambda: newcomer in nodes[0].signers(), timeout=180, what="the newcomer to be voted in")
    wait_for(
        lambda: any(signer_of(h) == newcomer for h in canonical_headers(nodes[0])),
        what="a block by the newcomer",
    )
    # Now three signers: dropping n1 needs two of them.
    dropped = address(nodes[1].sealer_key)
    for voter in (nodes[0], nodes[2]):
        voter.propose(to_checksum_address(dropped), False)
    wait_for(lambda: dropped not in nodes[0].signers(), timeout=180, what="n1 to be voted out")
    assert sorted(nodes[0].signers()) == sorted([address(nodes[0].sealer_key), newcomer])
    assert nodes[2].signers() == nodes[0].signers()


def test_imported_blocks_must_follow_clique_rules(network):
    (sealer,) = network(1)
    wait_for(lambda: sealer.head.block_number >= 1, what="a block")
    sealer.stop()
    genesis = sealer.genesis
    outsider = keys.PrivateKey(b"\x77" * 32)
    forger = PoaNode(genesis, None, outsider, name="forger")
    with forger.lock:  # the forger builds a block with its own key, as if it were a sealer
        from node.chain.consensus import build_and_seal

        forged = build_and_seal(forger.chain, outsider, [], int(time.time()) + 0).block
    follower = PoaNode(genesis, None, None, name="follower")
    with pytest.raises(ValidationError, match=r"unauthorised|not in"):
        follower.import_block(forged)
    with sealer.lock:
        too_early = build_and_seal(follower.chain, sealer.sealer_key, [], genesis.timestamp + 0).block
    with pytest.raises(ValidationError, match=r"period|timestamp"):
        follower.import_block(too_early)


def test_on_an_accelerated_clock_block_timestamps_follow_it_at_most_two_blocks_a_second(network, monkeypatch):
    from eth.consensus.clique import _utils as clique_utils

    monkeypatch.setattr(clique_utils, "eth_now", clique_utils.eth_now)  # use_clock replaces it
    (node,) = network(1)
    speed, began = 20.0, time.time()

    def community_now():
        return began + (time.time() - began) * speed

    node.use_clock(community_now, speed)
    wait_for(lambda: node.head.timestamp >= began + 120, "two community minutes of blocks", timeout=30)
    real_s = time.time() - began
    new = [header for header in canonical_headers(node) if header.timestamp > began + PERIOD]
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(new)]
    spacing = MIN_REAL_BLOCK_INTERVAL_S * speed  # 10 community seconds
    assert gaps and min(gaps) >= spacing  # not a block every PERIOD community seconds
    assert len(new) <= real_s / MIN_REAL_BLOCK_INTERVAL_S + 1
    assert abs(node.head.timestamp - community_now()) <= 3 * spacing  # the chain keeps pace


def test_a_signer_may_not_seal_two_of_any_two_consecutive_blocks():
    """With three signers, floor(3/2) + 1 = 2: nobody seals twice in a row."""
    from node.chain.consensus import build_and_seal

    all_keys = sealer_keys(3)
    genesis = GenesisConfig(
        chain_id=4242,
        sealers=tuple(k.public_key.to_checksum_address() for k in all_keys),
        period=PERIOD,
        timestamp=int(time.time()) - 100,
    )
    builder, follower = PoaNode(genesis, None, None), PoaNode(genesis, None, None)
    greedy = all_keys[0]
    with builder.lock:
        first = build_and_seal(builder.chain, greedy, [], genesis.timestamp + PERIOD).block
        builder.chain.persist_block(first)
        second = build_and_seal(builder.chain, greedy, [], genesis.timestamp + 2 * PERIOD).block
    follower.import_block(first)
    with pytest.raises(ValidationError, match="signed recently"):
        follower.import_block(second)


def test_a_refused_block_does_not_discard_the_state_of_a_block_being_built(tmp_path):
    from eth.consensus.clique._utils import sign_block_header

    from node.chain.consensus import build_and_seal

    (sealer_key,) = sealer_keys(1)
    genesis = GenesisConfig(
        chain_id=4242, sealers=(sealer_key.public_key.to_checksum_address(),), period=PERIOD
    )
    node = PoaNode(genesis, tmp_path, sealer_key, name="builder")
    with node.lock:  # sealed by the right key, but its state root is wrong: refused on execution
        built = build_and_seal(node.chain, sealer_key, [], genesis.timestamp + PERIOD).block
    forged = built.copy(header=sign_block_header(built.header.copy(state_root=b"\x42" * 32), sealer_key))
    try:
        with node._building_outside_lock():
            node._store[b"state of the block being built"] = b"trie node"
            with pytest.raises(ValidationError, match="state_root"):
                node.import_block(forged)
            assert node._store[b"state of the block being built"] == b"trie node"
        node._store[b"left by a refused block"] = b"trie node"
        with pytest.raises(ValidationError, match="state_root"):
            node.import_block(forged)
        with pytest.raises(KeyError):  # with no build running, a refused block's writes go
            node._store[b"left by a refused block"]
    finally:
        node.stop()
