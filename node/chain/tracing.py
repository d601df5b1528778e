"""Call traces in the format of geth's ``callTracer`` (``debug_traceTransaction``,
``debug_traceCall``), built from py-evm's computation tree.

A mined transaction is traced by re-executing its block up to it: the transactions before
it run on the parent's state in the block's own context (number, timestamp, gas limit,
base fee, and the sealer as fee recipient, recovered from the seal), then the transaction
itself. The VM starts from a copy of the block's header whose state root is the parent's;
its changes stay in its journal and are dropped with it (nothing is persisted), so tracing
never writes to the chain database. A simulated call runs as ``eth_call`` does
(``execution.call``: a costless copy of the state after the block, state overrides applied).

py-evm keeps every message it ran as a child computation of its caller, with the message
(sender, target, code address, value, gas, data) and the outcome (output, error, gas
left). What the message does not say is which opcode made it: DELEGATECALL to its own
address and STATICCALL look alike, and CREATE and CREATE2 do. The VM used for tracing
therefore runs a computation class whose CALL, CALLCODE, DELEGATECALL, STATICCALL, CREATE
and CREATE2 note their opcode for the child they create, and whose SELFDESTRUCT notes the
balance it sends (geth reports a SELFDESTRUCT as a frame of its own).

Frames follow geth's ``callTracer``: ``type``, ``from``, ``to`` (none for a failed
CREATE), ``value`` (none for STATICCALL; a DELEGATECALL carries its caller's value, as
geth reports it), ``gas``, ``gasUsed``, ``input``, ``output`` (the return data of a
success, the revert data of a revert, none otherwise or when empty), ``error`` (geth's
texts, e.g. ``execution reverted``, ``out of gas``), ``revertReason`` (a decoded
``Error(string)`` or ``Panic(uint256)``) and ``calls``; addresses in lower case. The top
frame's ``gas`` is the transaction's gas limit and its ``gasUsed`` what the receipt
counts (intrinsic gas included, refund deducted).

A CALL or CREATE that py-evm refuses before it starts a message (value above the caller's
balance, depth above 1024, an address collision of CREATE/CREATE2) leaves no frame, as in
geth 1.13.15 (the version this node is checked against); geth 1.14 and later, and anvil,
show a frame for it with the error ``insufficient balance for transfer``, ``max call depth
exceeded`` or ``contract address collision``. geth's ``withLog`` option (logs in frames) is
not offered.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from eth.abc import BlockAPI, BlockHeaderAPI, ComputationAPI
from eth.chains.base import Chain
from eth.constants import ZERO_ADDRESS
from eth.exceptions import (
    ContractCreationCollision,
    FullStack,
    InsufficientFunds,
    InsufficientStack,
    InvalidInstruction,
    InvalidJumpDestination,
    OutOfBoundsRead,
    OutOfGas,
    ReservedBytesInCode,
    Revert,
    StackDepthLimit,
    VMError,
    WriteProtection,
)
from eth.vm.chain_context import ChainContext
from eth_typing import Address

from node.chain.consensus import signer_of, vm_class_paying
from node.chain.execution import CallRequest, costless_state, run_request

# The opcodes that start a message, by value.
FRAME_OPCODES = {
    0xF0: "CREATE",
    0xF1: "CALL",
    0xF2: "CALLCODE",
    0xF4: "DELEGATECALL",
    0xF5: "CREATE2",
    0xFA: "STATICCALL",
}
SELFDESTRUCT = 0xFF

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
# Solidity's panic codes, worded as geth words them in ``revertReason``.
PANIC_REASONS = {
    0x00: "generic panic",
    0x01: "assert(false)",
    0x11: "arithmetic underflow or overflow",
    0x12: "division or modulo by zero",
    0x21: "enum overflow",
    0x22: "invalid encoded storage byte array accessed",
    0x31: "out-of-bounds array access; popping on an empty array",
    0x32: "out-of-bounds access of an array or bytesN",
    0x41: "out of memory",
    0x51: "uninitialized function",
}


# ------------------------------------------------------------- tracing VM


class _NotingOpcode:
    """An opcode that notes, on the computation running it, which opcode it is before it
    runs (the child computation it creates takes the note)."""

    __slots__ = ("kind", "mnemonic", "opcode")

    def __init__(self, kind: str, opcode: Any):
        self.kind = kind
        self.opcode = opcode
        self.mnemonic = getattr(opcode, "mnemonic", kind)

    def __call__(self, computation: ComputationAPI) -> None:
        computation.running_opcode = self.kind
        self.opcode(computation=computation)


class _NotingSelfDestruct:
    """SELFDESTRUCT noting the balance it passes on (geth's frame value)."""

    __slots__ = ("mnemonic", "opcode")

    def __init__(self, opcode: Any):
        self.opcode = opcode
        self.mnemonic = getattr(opcode, "mnemonic", "SELFDESTRUCT")

    def __call__(self, computation: ComputationAPI) -> None:
        computation.selfdestruct_value = computation.state.get_balance(computation.msg.storage_address)
        self.opcode(computation=computation)


@functools.lru_cache(maxsize=16)
def _tracing_computation_class(base: type) -> type:
    opcodes = dict(base.opcodes)
    for value, kind in FRAME_OPCODES.items():
        if value in opcodes:
            opcodes[value] = _NotingOpcode(kind, opcodes[value])
    if SELFDESTRUCT in opcodes:
        opcodes[SELFDESTRUCT] = _NotingSelfDestruct(opcodes[SELFDESTRUCT])

    class TracingComputation(base):
        """``base`` noting, on each child computation, the opcode that made it."""

        frame_type: str | None = None  # the opcode that made this computation; None: a transaction's
        running_opcode: str | None = None
        selfdestruct_value: int | None = None

        def generate_child_computation(self, child_msg):
            child = super().generate_child_computation(child_msg)
            child.frame_type = self.running_opcode
            return child

    TracingComputation.opcodes = opcodes
    TracingComputation.__name__ = TracingComputation.__qualname__ = f"Tracing{base.__name__}"
    return TracingComputation


@functools.lru_cache(maxsize=64)
def _tracing_vm_class(vm_class: type) -> type:
    """``vm_class`` running the tracing computation class."""
    state_class = vm_class.get_state_class()
    return vm_class.configure(
        __name__=f"Tracing{vm_class.__name__}",
        _state_class=state_class.configure(
            __name__=f"Tracing{state_class.__name__}",
            computation_class=_tracing_computation_class(state_class.computation_class),
        ),
    )


def _vm(chain: Chain, vm_class: type, header: BlockHeaderAPI):
    return _tracing_vm_class(vm_class)(
        header=header,
        chaindb=chain.chaindb,
        chain_context=ChainContext(chain.chain_id),
        consensus_context=chain.consensus_context,
    )


# ------------------------------------------------------------------ traces


def trace_transaction(chain: Chain, block: BlockAPI, index: int, only_top_call: bool = False) -> dict:
    """The call frame tree of transaction ``index`` of ``block`` (see the module doc)."""
    header = block.header
    if not 0 <= index < len(block.transactions):
        raise IndexError(f"block {header.block_number} has no transaction {index}")
    parent = chain.get_block_header_by_hash(header.parent_hash)
    # the seal names the fee recipient; the copy below no longer matches it
    vm_class = vm_class_paying(chain.get_vm_class(header), signer_of(header))
    start = header.copy(state_root=parent.state_root, gas_used=0, bloom=0)
    vm = _vm(chain, vm_class, start)
    current = start
    for earlier in block.transactions[:index]:
        receipt, _ = vm.apply_transaction(current, earlier)
        current = vm.add_receipt_to_header(current, receipt)
    transaction = block.transactions[index]
    receipt, computation = vm.apply_transaction(current, transaction)
    return _top_frame(
        computation, transaction.sender, transaction.gas, receipt.gas_used - current.gas_used, only_top_call
    )


def trace_call(
    chain: Chain, header: BlockHeaderAPI, request: CallRequest, only_top_call: bool = False
) -> dict:
    """The call frame tree of ``request`` run like ``eth_call`` on the state after
    ``header``. Raises ``ExecutionFailed`` when the request is not a valid transaction
    (e.g. its value exceeds the sender's balance)."""
    vm = _vm(chain, vm_class_paying(chain.get_vm_class(header), ZERO_ADDRESS), header)
    gas = request.gas or header.gas_limit
    with costless_state(vm) as state:
        transaction, computation = run_request(vm, state, request, gas)
        gas_used = vm.finalize_gas_used(transaction, computation)
    return _top_frame(computation, request.sender, gas, gas_used, only_top_call)


# ------------------------------------------------------------------ frames


def _top_frame(
    computation: ComputationAPI, sender: Address, gas: int, gas_used: int, only_top_call: bool
) -> dict:
    kind = "CREATE" if computation.msg.is_create else "CALL"
    frame = _frame(computation, kind, sender, descend=not only_top_call)
    frame["gas"] = hex(gas)
    frame["gasUsed"] = hex(gas_used)
    return frame


def _frame(computation: ComputationAPI, kind: str, sender: Address, descend: bool) -> dict:
    msg = computation.msg
    create = msg.is_create
    frame: dict[str, Any] = {"type": kind, "from": _address(sender)}
    if not create:
        frame["to"] = _address(msg.code_address)
    elif computation.is_success:
        frame["to"] = _address(msg.storage_address)
    if kind != "STATICCALL":
        frame["value"] = hex(msg.value)
    frame["gas"] = hex(msg.gas)
    frame["gasUsed"] = hex(computation.get_gas_used())
    frame["input"] = _data(msg.code if create else msg.data_as_bytes)
    if computation.is_success:
        if computation.output:
            frame["output"] = _data(computation.output)
    else:
        error = computation.error
        frame["error"] = error_text(error, len(getattr(computation, "_stack", ())))
        if isinstance(error, Revert) and computation.output:
            frame["output"] = _data(computation.output)
            reason = revert_reason(computation.output)
            if reason is not None:
                frame["revertReason"] = reason
    if descend:
        calls = [
            _frame(child, _child_type(child), msg.storage_address, descend) for child in computation.children
        ]
        beneficiaries = getattr(computation, "beneficiaries", None)
        if beneficiaries and computation.selfdestruct_value is not None:
            calls.append(
                {
                    "type": "SELFDESTRUCT",
                    "from": _address(msg.storage_address),
                    "to": _address(beneficiaries[0]),
                    "value": hex(computation.selfdestruct_value),
                    "gas": "0x0",
                    "gasUsed": "0x0",
                    "input": "0x",
                }
            )
        if calls:
            frame["calls"] = calls
    return frame


def _child_type(child: ComputationAPI) -> str:
    noted = getattr(child, "frame_type", None)
    if noted is not None:
        return noted
    return "CREATE" if child.msg.is_create else "CALL"  # not reached: every child is noted


_INVALID_OPCODE = re.compile(r"Invalid opcode 0x([0-9a-f]+)")
_MISSING_ITEMS = re.compile(r"Wanted (\d+) stack items, only had (\d+)")
_DUP_OR_SWAP = re.compile(r"for (DUP|SWAP)(\d+)")


def error_text(error: VMError, stack_size: int = 0) -> str:
    """geth's wording of a failed frame's error (core/vm/errors.go); ``stack_size``: the
    failed frame's stack as the error left it."""
    message = str(error)
    if isinstance(error, Revert):
        return "execution reverted"
    if isinstance(error, OutOfGas):
        if "EIP170" in message:
            return "max code size exceeded"
        if "Write contract code" in message:
            return "contract creation code storage out of gas"
        return "out of gas"
    if isinstance(error, ReservedBytesInCode):
        return "invalid code: must not begin with 0xef"
    if isinstance(error, InvalidJumpDestination):
        return "invalid jump destination"
    if isinstance(error, InvalidInstruction):
        found = _INVALID_OPCODE.search(message)
        if found is None:  # py-evm: a jump onto a byte that is no JUMPDEST
            return "invalid jump destination"
        value = int(found.group(1), 16)
        if value == 0xFE:
            return "invalid opcode: INVALID"
        return f"invalid opcode: opcode {value:#x} not defined"
    if isinstance(error, WriteProtection):
        return "write protection"
    if isinstance(error, OutOfBoundsRead):
        return "return data out of bounds"
    if isinstance(error, InsufficientStack):
        # geth counts the items before the opcode and all it needs. py-evm says so when the
        # opcode takes its items at once (most do) and for DUPn and SWAPn, which take none;
        # an opcode that takes them one by one fails with "stack underflow" alone here.
        found = _MISSING_ITEMS.search(message)
        if found is not None:
            return f"stack underflow ({found.group(2)} <=> {found.group(1)})"
        found = _DUP_OR_SWAP.search(message)
        if found is not None:
            needed = int(found.group(2)) + (found.group(1) == "SWAP")
            return f"stack underflow ({stack_size} <=> {needed})"
        return "stack underflow"
    if isinstance(error, FullStack):
        return "stack limit reached 1024 (1023)"
    if isinstance(error, ContractCreationCollision):
        return "contract address collision"
    if isinstance(error, InsufficientFunds):
        return "insufficient balance for transfer"
    if isinstance(error, StackDepthLimit):
        return "max call depth exceeded"
    return message or type(error).__name__


def revert_reason(output: bytes) -> str | None:
    """The reason in revert data that is an ``Error(string)`` or ``Panic(uint256)``."""
    from eth_abi import decode

    try:
        if output[:4] == ERROR_SELECTOR:
            return decode(["string"], output[4:])[0]
        if output[:4] == PANIC_SELECTOR:
            code = decode(["uint256"], output[4:])[0]
            return PANIC_REASONS.get(code, f"unknown panic code: {code:#x}")
    except Exception:
        return None
    return None


def _address(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def _data(value: bytes) -> str:
    return "0x" + bytes(value).hex()
