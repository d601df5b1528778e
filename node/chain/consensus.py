"""Clique (EIP-225) on py-evm's London VM: the chain class, sealing and the rules
py-evm leaves out.

py-evm validates a Clique header's integrity, signer and difficulty (in turn = 2, out of
turn = 1) and tallies votes. Two more rules of EIP-225 are checked here: a signer may
sign only one of any ``floor(N/2) + 1`` consecutive blocks, and a block's timestamp is
at least ``period`` after its parent's.

Building a block needs the sealer known in advance: the London VM credits transaction
fees to the block's signer, which py-evm recovers from the seal; the seal is made last,
so the block is built by a VM whose consensus names the sealer directly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from eth.abc import BlockAPI, BlockHeaderAPI, ReceiptAPI, SignedTransactionAPI
from eth.chains.base import Chain
from eth.consensus.clique import CliqueApplier, CliqueConsensus
from eth.consensus.clique._utils import get_block_signer, sign_block_header
from eth.consensus.clique.constants import NONCE_AUTH, NONCE_DROP, SIGNATURE_LENGTH, VANITY_LENGTH
from eth.constants import ZERO_ADDRESS
from eth.vm.chain_context import ChainContext
from eth.vm.forks.london import LondonVM
from eth_keys.datatypes import PrivateKey
from eth_typing import Address
from eth_utils import ValidationError

from node.chain.genesis import EPOCH_LENGTH
from node.chain.votes import CommunityCliqueContext


class CliqueLondonVM(LondonVM):
    """The London VM as Clique runs it: no block reward, and the header's coinbase (a vote's
    subject, or zero) is not touched. py-evm credits a zero reward to the coinbase, which
    leaves an empty account that EIP-161 forbids, so geth would reject the state root."""

    def _assign_block_rewards(self, block: BlockAPI) -> None:
        return None


def chain_class(chain_id: int) -> type[Chain]:
    """A py-evm chain running Clique on the London VM from block 0."""
    return Chain.configure(
        __name__="CommunityPoaChain",
        vm_configuration=CliqueApplier().amend_vm_configuration(((0, CliqueLondonVM),)),
        chain_id=chain_id,
        consensus_context_class=CommunityCliqueContext,
    )


def sorted_signers(chain: Chain, header: BlockHeaderAPI) -> list[Address]:
    """The authorised signers after ``header`` (the set that seals its child)."""
    consensus = CliqueConsensus(chain.consensus_context)
    return list(consensus.get_snapshot(header).get_sorted_signers())


def in_turn_signer(signers: list[Address], block_number: int) -> Address:
    return signers[block_number % len(signers)]


def signer_of(header: BlockHeaderAPI) -> Address | None:
    """The address that sealed ``header`` (None for genesis)."""
    return None if header.block_number == 0 else get_block_signer(header)


def recently_signed(chain: Chain, parent: BlockHeaderAPI, signer: Address, signer_count: int) -> bool:
    """True when ``signer`` sealed one of the last ``floor(N/2)`` blocks up to ``parent``
    (EIP-225: then it may not seal the next block)."""
    limit = signer_count // 2 + 1
    header = parent
    for _ in range(limit - 1):
        if header.block_number == 0:
            return False
        if signer_of(header) == signer:
            return True
        header = chain.get_block_header_by_hash(header.parent_hash)
    return False


def validate_clique_extras(chain: Chain, header: BlockHeaderAPI, period: int) -> None:
    """EIP-225 rules py-evm does not check: signing limit and minimum block period."""
    parent = chain.get_block_header_by_hash(header.parent_hash)
    if header.timestamp < parent.timestamp + period:
        raise ValidationError(
            f"block {header.block_number} comes {header.timestamp - parent.timestamp} s after its parent; "
            f"the block period is {period} s"
        )
    signers = sorted_signers(chain, parent)
    signer = signer_of(header)
    if signer not in signers:
        raise ValidationError(f"block {header.block_number} sealed by unauthorised {signer.hex()}")
    if recently_signed(chain, parent, signer, len(signers)):
        raise ValidationError(
            f"signer 0x{signer.hex()} signed recently and may not seal block {header.block_number}"
        )


@dataclass(frozen=True)
class Vote:
    """A Clique proposal: authorise (True) or drop (False) ``subject`` as a signer."""

    subject: Address
    authorize: bool


@dataclass
class SealedBlock:
    block: BlockAPI
    receipts: list[ReceiptAPI]
    included: list[SignedTransactionAPI]
    dropped: list[tuple[SignedTransactionAPI, str]]  # transactions that could not be applied


@functools.lru_cache(maxsize=64)
def vm_class_paying(base_vm_class: type, fee_recipient: Address) -> type:
    """``base_vm_class`` with the fee recipient fixed (the sealer while building a block;
    anyone for a simulated call, whose header has no seal to recover a signer from)."""

    class SealerKnownConsensus(CliqueConsensus):
        @classmethod
        def get_fee_recipient(cls, header: BlockHeaderAPI) -> Address:
            return fee_recipient

    return base_vm_class.configure(consensus_class=SealerKnownConsensus)


def vm_for_simulation(chain: Chain, header: BlockHeaderAPI):
    """A VM on the state after ``header`` for reading state, calls and gas estimates.
    (py-evm's Clique recovers the fee recipient from the seal and fails on genesis.)"""
    vm_class = vm_class_paying(chain.get_vm_class(header), ZERO_ADDRESS)
    return vm_class(
        header=header,
        chaindb=chain.chaindb,
        chain_context=ChainContext(chain.chain_id),
        consensus_context=chain.consensus_context,
    )


def build_block(
    chain: Chain,
    parent: BlockHeaderAPI,
    sealer: Address,
    transactions: list[SignedTransactionAPI],
    timestamp: int,
    vote: Vote | None = None,
) -> SealedBlock:
    """Build the unsealed child of ``parent`` with ``transactions`` (those that fail to
    apply are dropped; one that does not fit in the gas left waits in the pool with every
    later transaction of its sender), fees paid to
    ``sealer``. New state goes to the chain database (content-addressed trie nodes, so
    concurrent readers of older states are unaffected); nothing becomes canonical."""
    number = parent.block_number + 1
    signers = sorted_signers(chain, parent)
    checkpoint = number % EPOCH_LENGTH == 0
    signer_list = b"".join(signers) if checkpoint else b""
    vm_class = vm_class_paying(chain.get_vm_class_for_block_number(number), sealer)
    header = vm_class.create_header_from_parent(
        parent,
        timestamp=timestamp,
        coinbase=vote.subject if vote and not checkpoint else ZERO_ADDRESS,
        nonce=NONCE_AUTH if vote and vote.authorize and not checkpoint else NONCE_DROP,
        difficulty=2 if in_turn_signer(signers, number) == sealer else 1,
        extra_data=b"\x00" * VANITY_LENGTH + signer_list + b"\x00" * SIGNATURE_LENGTH,
        gas_limit=parent.gas_limit,
    )
    vm = vm_class(
        header=header,
        chaindb=chain.chaindb,
        chain_context=ChainContext(chain.chain_id),
        consensus_context=chain.consensus_context,
    )
    current = vm.get_header()
    receipts, included, dropped = [], [], []
    waiting: set[bytes] = set()  # senders with a transaction left for a later block
    for transaction in transactions:
        if transaction.sender in waiting:
            continue  # its predecessor waits: so does it (trying it now would be a nonce gap)
        if transaction.gas > current.gas_limit - current.gas_used:
            waiting.add(transaction.sender)  # does not fit in this block; stays in the pool
            continue
        try:  # validation (nonce, balance, fee) fails before any state change
            receipt, _ = vm.apply_transaction(current, transaction)
        except ValidationError as error:
            dropped.append((transaction, str(error)))
            continue
        current = vm.add_receipt_to_header(current, receipt)
        receipts.append(receipt)
        included.append(transaction)
    block = vm.set_block_transactions_and_withdrawals(vm.get_block(), current, included, receipts)
    return SealedBlock(vm.finalize_block(block).block, receipts, included, dropped)


def build_and_seal(
    chain: Chain,
    key: PrivateKey,
    transactions: list[SignedTransactionAPI],
    timestamp: int,
    vote: Vote | None = None,
    parent: BlockHeaderAPI | None = None,
) -> SealedBlock:
    """``build_block`` on ``parent`` (default: the canonical head), sealed with ``key``.
    The block is not yet persisted."""
    parent = parent or chain.get_canonical_head()
    built = build_block(chain, parent, key.public_key.to_canonical_address(), transactions, timestamp, vote)
    sealed = built.block.copy(header=sign_block_header(built.block.header, key))
    return SealedBlock(sealed, built.receipts, built.included, built.dropped)


def state_at(chain: Chain, header: BlockHeaderAPI):
    """The account state after ``header`` (read only)."""
    return vm_for_simulation(chain, header).state
