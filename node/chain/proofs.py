"""Merkle proofs of accounts and storage slots (EIP-1186, ``eth_getProof``).

An account proof is the path of state-trie nodes from the block's state root to the
account's leaf (key ``keccak(address)``); a storage proof the path in the account's
storage trie from its storage root to the slot (key ``keccak(slot as 32 bytes)``). Each
node is given RLP-encoded, as it is hashed into its parent; nodes shorter than 32 bytes
live inside their parent and are not listed on their own. A missing account or slot gets
the path that proves its absence (and, as geth answers, zero code and storage hashes).
"""

from __future__ import annotations

from dataclasses import dataclass

import rlp
from eth.abc import BlockHeaderAPI
from eth.chains.base import Chain
from eth.constants import BLANK_ROOT_HASH, EMPTY_SHA3, ZERO_HASH32
from eth.rlp.accounts import Account
from eth_hash.auto import keccak
from eth_typing import Address
from trie import HexaryTrie


@dataclass(frozen=True)
class StorageProof:
    slot: int
    value: int
    proof: list[bytes]


@dataclass(frozen=True)
class AccountProof:
    address: Address
    nonce: int
    balance: int
    code_hash: bytes
    storage_hash: bytes
    proof: list[bytes]
    storage: list[StorageProof]


def _encoded_path(trie: HexaryTrie, key: bytes) -> list[bytes]:
    nodes = [rlp.encode(node) for node in trie.get_proof(key)]
    return [node for index, node in enumerate(nodes) if index == 0 or len(node) >= 32]


def prove(chain: Chain, header: BlockHeaderAPI, address: Address, slots: list[int]) -> AccountProof:
    """The account of ``address`` and its ``slots`` after ``header``, with their proofs."""
    database = chain.chaindb.db
    state_trie = HexaryTrie(database, header.state_root)
    account_key = keccak(address)
    encoded = state_trie.get(account_key)
    account = rlp.decode(encoded, sedes=Account) if encoded else Account(0, 0, BLANK_ROOT_HASH, EMPTY_SHA3)
    storage_trie = HexaryTrie(database, account.storage_root)
    absent = ZERO_HASH32 if not encoded else None  # geth reports zero hashes for a missing account
    storage = []
    for slot in slots:
        slot_key = keccak(slot.to_bytes(32, "big"))
        raw = storage_trie.get(slot_key)
        value = rlp.decode(raw, sedes=rlp.sedes.big_endian_int) if raw else 0
        storage.append(StorageProof(slot, value, _encoded_path(storage_trie, slot_key)))
    return AccountProof(
        address=address,
        nonce=account.nonce,
        balance=account.balance,
        code_hash=absent or account.code_hash,
        storage_hash=absent or account.storage_root,
        proof=_encoded_path(state_trie, account_key),
        storage=storage,
    )
