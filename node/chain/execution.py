"""Read-only execution for ``eth_call`` and ``eth_estimateGas`` on py-evm.

A call runs in a costless copy of the state at the requested block, in that block's own
context as geth runs it (gas price and base fee zero, nothing is kept). Gas estimation runs
the transaction once at the cap, then brackets the smallest sufficient limit with few
extra runs instead of a blind bisection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from eth.abc import BlockHeaderAPI, ComputationAPI, StateAPI
from eth.chains.base import Chain
from eth.exceptions import Revert
from eth.vm.spoof import SpoofTransaction
from eth_typing import Address
from eth_utils import ValidationError

from node.chain.consensus import vm_for_simulation
from node.chain.txpool import max_fee

ESTIMATE_TOLERANCE = 0.015  # stop bisecting when the bracket is within 1.5 % (as geth)


@dataclass(frozen=True)
class AccountOverride:
    """geth's state override of one account for a simulation (``eth_call``'s third
    parameter): what is given replaces the account's value; ``storage`` replaces all of its
    storage, ``storage_diff`` only the slots it names."""

    address: Address
    balance: int | None = None
    nonce: int | None = None
    code: bytes | None = None
    storage: dict[int, int] | None = None
    storage_diff: dict[int, int] | None = None

    def apply(self, state) -> None:
        if self.balance is not None:
            state.set_balance(self.address, self.balance)
        if self.nonce is not None:
            state.set_nonce(self.address, self.nonce)
        if self.code is not None:
            state.set_code(self.address, self.code)
        if self.storage is not None:
            state.delete_storage(self.address)
        for slot, value in {**(self.storage or {}), **(self.storage_diff or {})}.items():
            state.set_storage(self.address, slot, value)


@dataclass(frozen=True)
class CallRequest:
    """A transaction to simulate; missing fields take the usual defaults."""

    sender: Address
    to: Address | None
    data: bytes = b""
    value: int = 0
    gas: int | None = None
    nonce: int | None = None
    overrides: tuple[AccountOverride, ...] = ()


class ExecutionReverted(Exception):
    """The call reverted; ``data`` is the revert payload (custom error or Error(string))."""

    def __init__(self, data: bytes, message: str = "execution reverted"):
        super().__init__(message)
        self.data = data


class ExecutionFailed(Exception):
    """The call failed without revert data (out of gas, invalid opcode, bad transaction)."""


@contextmanager
def costless_state(vm) -> Iterator[StateAPI]:
    """The state after ``vm``'s header in that header's own block context (NUMBER,
    TIMESTAMP, BLOCKHASH of its ancestors), as geth runs ``eth_call``; base fee zero;
    every change is dropped afterwards. (py-evm's ``in_costless_state`` would run in the
    context of a new child block.)"""
    header = vm.get_header()
    free = header.copy(base_fee_per_gas=0)
    state = vm.build_state(vm.chaindb.db, free, vm.chain_context, vm.previous_hashes)
    snapshot = state.snapshot()
    try:
        yield state
    finally:
        state.revert(snapshot)


def run_request(
    vm, state: StateAPI, request: CallRequest, gas: int
) -> tuple[SpoofTransaction, ComputationAPI]:
    """Run ``request`` (its state overrides first) on ``state`` without fees."""
    for override in request.overrides:
        override.apply(state)
    nonce = request.nonce if request.nonce is not None else state.get_nonce(request.sender)
    unsigned = vm.create_unsigned_transaction(
        nonce=nonce, gas_price=0, gas=gas, to=request.to or b"", value=request.value, data=request.data
    )
    transaction = SpoofTransaction(unsigned, from_=request.sender)
    try:
        return transaction, state.costless_execute_transaction(transaction)
    except ValidationError as error:
        raise ExecutionFailed(str(error)) from None


def _run(chain: Chain, header: BlockHeaderAPI, request: CallRequest, gas: int) -> ComputationAPI:
    vm = vm_for_simulation(chain, header)
    with costless_state(vm) as state:
        return run_request(vm, state, request, gas)[1]


def _raise_if_failed(computation: ComputationAPI) -> None:
    if not computation.is_error:
        return
    error = computation.error
    if isinstance(error, Revert):
        data = error.args[0] if error.args and isinstance(error.args[0], bytes) else b""
        raise ExecutionReverted(data)
    raise ExecutionFailed(str(error) or type(error).__name__)


def call(chain: Chain, header: BlockHeaderAPI, request: CallRequest) -> bytes:
    """Return data of ``request`` run on the state after ``header``."""
    computation = _run(chain, header, request, request.gas or header.gas_limit)
    _raise_if_failed(computation)
    return computation.output


def estimate_gas(chain: Chain, header: BlockHeaderAPI, request: CallRequest) -> int:
    """Smallest gas limit with which ``request`` succeeds (within 1.5 %)."""
    cap = request.gas or header.gas_limit
    computation = _run(chain, header, request, cap)
    _raise_if_failed(computation)
    used = cap - computation.get_gas_remaining()

    def succeeds(gas: int) -> bool:
        return not _run(chain, header, request, gas).is_error

    low, high = used - 1, None
    for candidate in (used, used + used // 63 + 2_300, used * 2):
        if candidate >= cap:
            break
        if succeeds(candidate):
            high = candidate
            break
        low = candidate
    if high is None:
        high = cap
    while (high - low) / high > ESTIMATE_TOLERANCE and high - low > 1:
        middle = (low + high) // 2
        if succeeds(middle):
            high = middle
        else:
            low = middle
    return high


def effective_gas_price(transaction, base_fee: int) -> int:
    """What a mined transaction paid per gas (EIP-1559)."""
    tip = getattr(transaction, "max_priority_fee_per_gas", None)
    if tip is None:
        return transaction.gas_price
    return min(max_fee(transaction), base_fee + tip)
