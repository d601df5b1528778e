"""Typed binding of ``MeasurementLedger`` and the one ``Reading`` type that travels from a
meter's payload through the gateway to the chain and back to the OCM oracle."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import TxReceipt

from contracts import clock, units
from contracts.binding import ContractBinding
from contracts.client import ContractRevert, Signer
from contracts.events import ChainEvent, EventFollower

# One packed reading of MeasurementLedger: meter id, Unix minute, W, var, µpu, µdeg (big-endian).
PACKED_READING = struct.Struct(">32sIiiIi")


@dataclass(frozen=True)
class Reading:
    """One minute of one meter in Python units: ``time`` is the minute's start (UTC Unix
    seconds), P in kW and Q in kvar (load convention), V in pu, θ in degrees.

    ``chain`` is the reading as ``MeasurementLedger`` stores it, converted once (and
    raising ``UnitError`` when a value cannot be represented)."""

    meter_id: str
    time: int
    p_kw: float
    q_kvar: float
    v_pu: float
    theta_deg: float

    @property
    def minute(self) -> int:
        return clock.aligned_minute(self.time)

    @cached_property
    def chain(self) -> tuple[bytes, int, int, int, int, int]:
        """(meter id, Unix minute, W, var, µpu, µdeg): the contract's ``Reading`` struct."""
        return (
            units.encode_id(self.meter_id),
            self.minute,
            units.kw_to_w(self.p_kw),
            units.kvar_to_var(self.q_kvar),
            units.pu_to_micro_pu(self.v_pu),
            units.deg_to_micro_deg(self.theta_deg),
        )

    @cached_property
    def packed(self) -> bytes:
        """The reading in ``MeasurementLedger``'s packed layout (52 bytes)."""
        return pack_reading(self.chain)

    @classmethod
    def from_chain(
        cls, meter: bytes, minute: int, p_w: int, q_var: int, v_micro_pu: int, theta_micro_deg: int
    ):
        """The reading the chain recorded, in Python units."""
        return cls(
            units.decode_id(meter),
            clock.minute_start(minute),
            units.w_to_kw(p_w),
            units.var_to_kvar(q_var),
            units.micro_pu_to_pu(v_micro_pu),
            units.micro_deg_to_deg(theta_micro_deg),
        )


def pack_reading(chain: tuple[bytes, int, int, int, int, int]) -> bytes:
    """A reading as (meter id, Unix minute, W, var, µpu, µdeg) → its 52 packed bytes;
    ``UnitError`` when a value does not fit its field (32-bit W, var, µpu and µdeg)."""
    try:
        return PACKED_READING.pack(*chain)
    except struct.error as error:
        raise units.UnitError(f"reading {chain[1:]} does not fit the packed layout: {error}") from None


def unpack_readings(packed: bytes) -> list[tuple[bytes, int, int, int, int, int]]:
    """The (meter id, Unix minute, W, var, µpu, µdeg) tuples of a packed batch."""
    if len(packed) % PACKED_READING.size:
        raise ValueError(f"a packed batch is a multiple of {PACKED_READING.size} bytes, got {len(packed)}")
    return list(PACKED_READING.iter_unpack(packed))


@dataclass(frozen=True)
class RecordedReading:
    """A reading as the chain recorded it, and in which block."""

    reading: Reading
    block_number: int


@dataclass(frozen=True)
class BatchRefusal:
    """Why the ledger refused a batch, by position in the batch: readings it already holds
    (deliver them, send the rest again) and readings it will never take (an unknown or
    deregistered meter, a value out of range, a slot past its data deadline). Both empty:
    a refusal of the whole batch that may pass later (a reading from the future, an outage)."""

    error: str
    already_recorded: list[int]
    never_accepted: list[int]


@dataclass(frozen=True)
class SlotEnergy:
    readings: int
    active_kwh: float
    reactive_kvarh: float


class Ledger(ContractBinding):
    """``MeasurementLedger``: every meter's readings, minute by minute."""

    CONTRACT = "MeasurementLedger"

    def record_readings_call(self, readings: Sequence[Reading]) -> ContractFunction:
        """``recordReadings`` of the packed batch, readings in the given order (the ledger
        writes a meter's slot word once per run of its consecutive readings of a slot)."""
        return self._function("recordReadings", b"".join(reading.packed for reading in readings))

    def record_readings(self, gateway: Signer, readings: Sequence[Reading]) -> TxReceipt:
        return self._transact(gateway, self.record_readings_call(readings))

    def has_reading(self, meter_id: str, time: int) -> bool:
        return self._view("hasReading", units.encode_id(meter_id), clock.aligned_minute(time))

    def recorded(self, readings: Sequence[Reading]) -> list[bool]:
        """For each reading, whether the chain holds a reading of its meter and minute."""
        if not readings:
            return []
        return list(
            self._view(
                "hasReadings",
                [reading.chain[0] for reading in readings],
                [reading.chain[1] for reading in readings],
            )
        )

    @staticmethod
    def explain_refusal(revert: ContractRevert, batch: Sequence[Reading]) -> BatchRefusal:
        """Which readings of ``batch`` the ``recordReadings`` revert ``revert`` is about."""
        args, index = revert.args_by_name, revert.args_by_name.get("index")
        at_index = [index] if isinstance(index, int) and 0 <= index < len(batch) else []
        if revert.error == "DuplicateReading":
            return BatchRefusal(revert.error, at_index, [])
        if revert.error in ("ReadingOutOfRange", "ReadingPastDeadline"):
            return BatchRefusal(revert.error, [], at_index)
        if revert.error == "UnknownMeter":  # the meter names every reading it refuses
            meter = bytes(args.get("meter", b""))
            return BatchRefusal(revert.error, [], [i for i, r in enumerate(batch) if r.chain[0] == meter])
        return BatchRefusal(revert.error, [], [])

    def data_deadline(self, slot: int) -> int:
        """When readings of ``slot`` stop being accepted (Unix seconds)."""
        return self._view("dataDeadline", slot)

    def slot_energy(self, meter_id: str, slot: int) -> SlotEnergy:
        count, active, reactive = self._view("slotEnergy", units.encode_id(meter_id), slot)
        return SlotEnergy(count, units.watt_minutes_to_kwh(active), units.watt_minutes_to_kwh(reactive))

    def follow_readings(self, from_block: int) -> EventFollower[RecordedReading]:
        """Every recorded reading from ``from_block`` on (``ReadingsRecorded`` events), one
        item per reading."""
        return self._follower(("ReadingsRecorded",), from_block, _recorded_readings, many=True)

    def readings_in(self, receipt: TxReceipt) -> list[Reading]:
        """The readings a ``recordReadings`` transaction recorded (none if it failed)."""
        events = self.contract.events.ReadingsRecorded().process_receipt(receipt, errors=DISCARD)
        return [
            Reading.from_chain(*item) for event in events for item in unpack_readings(event.args.readings)
        ]


def _recorded_readings(event: ChainEvent) -> list[RecordedReading]:
    return [
        RecordedReading(Reading.from_chain(*item), event.block_number)
        for item in unpack_readings(event.args["readings"])
    ]
