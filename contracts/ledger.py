"""Typed binding of ``MeasurementLedger`` and the one ``Reading`` type that travels from a
meter's payload through the gateway to the chain and back to the OCM oracle.

A reading holds the meter's totals (P, Q, V, θ) and, from a meter that measures per phase,
the values of each phase L1, L2, L3 (``phases``; ``None`` for a phase it does not measure).
A reading without phases is a balanced three-phase total, as every reading was before;
on chain it stays the 52-byte record of ``recordReadings``, a reading with phases is the
101-byte record of ``recordPhaseReadings`` (docs/gateway.md, "Per-phase readings")."""

from __future__ import annotations

import math
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
# What a phase record adds to it: the mask of measured phases (bit 0 = L1), then W, var, µpu,
# µdeg of L1, L2 and L3 (zeros for a phase not measured).
PACKED_PHASES = struct.Struct(">B" + "iiIi" * 3)
PACKED_PHASE_READING_BYTES = PACKED_READING.size + PACKED_PHASES.size  # 101
PHASE_NAMES = ("L1", "L2", "L3")  # = phases a, b, c of the grid model
# Nominal voltage angle of each phase relative to L1 (positive sequence L1 → L2 → L3), degrees.
PHASE_DISPLACEMENT_DEG = (0.0, -120.0, 120.0)

ChainPhases = tuple[int, tuple[tuple[int, int, int, int], ...]]  # (mask, W, var, µpu, µdeg per phase)


@dataclass(frozen=True)
class PhaseReading:
    """One phase of a reading: P in kW, Q in kvar (load convention), V in pu of the
    phase-to-neutral nominal voltage, θ in degrees (the phase's own voltage angle in the
    feeder's reference: about θ − 120° on L2 and θ + 120° on L3 of a balanced feeder)."""

    p_kw: float
    q_kvar: float
    v_pu: float
    theta_deg: float

    @property
    def chain(self) -> tuple[int, int, int, int]:
        """(W, var, µpu, µdeg)."""
        return (
            units.kw_to_w(self.p_kw),
            units.kvar_to_var(self.q_kvar),
            units.pu_to_micro_pu(self.v_pu),
            units.deg_to_micro_deg(self.theta_deg),
        )

    @classmethod
    def from_chain(cls, p_w: int, q_var: int, v_micro_pu: int, theta_micro_deg: int) -> PhaseReading:
        return cls(
            units.w_to_kw(p_w),
            units.var_to_kvar(q_var),
            units.micro_pu_to_pu(v_micro_pu),
            units.micro_deg_to_deg(theta_micro_deg),
        )


Phases = tuple[PhaseReading | None, PhaseReading | None, PhaseReading | None]


@dataclass(frozen=True)
class Reading:
    """One minute of one meter in Python units: ``time`` is the minute's start (UTC Unix
    seconds), P in kW and Q in kvar (load convention), V in pu, θ in degrees.

    ``chain`` is the reading as ``MeasurementLedger`` stores it, converted once (and
    raising ``UnitError`` when a value cannot be represented).

    ``phases`` (L1, L2, L3) from a meter that measures per phase, ``None`` for a phase it
    does not measure; ``phases`` itself is ``None`` for a balanced three-phase total."""

    meter_id: str
    time: int
    p_kw: float
    q_kvar: float
    v_pu: float
    theta_deg: float
    phases: Phases | None = None

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
    def chain_phases(self) -> ChainPhases | None:
        """(mask of measured phases, (W, var, µpu, µdeg) of L1, L2, L3), or None without phases."""
        if self.phases is None:
            return None
        mask = sum(1 << k for k, phase in enumerate(self.phases) if phase is not None)
        return mask, tuple((0, 0, 0, 0) if phase is None else phase.chain for phase in self.phases)

    @cached_property
    def packed(self) -> bytes:
        """The reading in ``MeasurementLedger``'s packed layout: 52 bytes, or 101 with phases."""
        return pack_reading(self.chain, self.chain_phases)

    @classmethod
    def from_chain(
        cls,
        meter: bytes,
        minute: int,
        p_w: int,
        q_var: int,
        v_micro_pu: int,
        theta_micro_deg: int,
        phases: ChainPhases | None = None,
    ):
        """The reading the chain recorded, in Python units."""
        return cls(
            units.decode_id(meter),
            clock.minute_start(minute),
            units.w_to_kw(p_w),
            units.var_to_kvar(q_var),
            units.micro_pu_to_pu(v_micro_pu),
            units.micro_deg_to_deg(theta_micro_deg),
            None if phases is None else _phases_from_chain(*phases),
        )


def pack_reading(chain: tuple[bytes, int, int, int, int, int], phases: ChainPhases | None = None) -> bytes:
    """A reading as (meter id, Unix minute, W, var, µpu, µdeg) → its 52 packed bytes, with
    ``phases`` (mask, per-phase values) its 101 bytes; ``UnitError`` when a value does not
    fit its field (32-bit W, var, µpu and µdeg)."""
    try:
        packed = PACKED_READING.pack(*chain)
        if phases is not None:
            mask, values = phases
            packed += PACKED_PHASES.pack(mask, *(number for phase in values for number in phase))
        return packed
    except struct.error as error:
        raise units.UnitError(f"reading {chain[1:]} does not fit the packed layout: {error}") from None


def unpack_readings(packed: bytes) -> list[tuple[bytes, int, int, int, int, int]]:
    """The (meter id, Unix minute, W, var, µpu, µdeg) tuples of a packed batch."""
    if len(packed) % PACKED_READING.size:
        raise ValueError(f"a packed batch is a multiple of {PACKED_READING.size} bytes, got {len(packed)}")
    return list(PACKED_READING.iter_unpack(packed))


def unpack_phase_readings(packed: bytes) -> list[tuple[tuple[bytes, int, int, int, int, int], ChainPhases]]:
    """The ((meter id, Unix minute, W, var, µpu, µdeg), (mask, per-phase values)) of a packed
    batch of phase records (``recordPhaseReadings``, ``PhaseReadingsRecorded``)."""
    size = PACKED_PHASE_READING_BYTES
    if len(packed) % size:
        raise ValueError(f"a packed batch of phase readings is a multiple of {size} bytes, got {len(packed)}")
    result = []
    for offset in range(0, len(packed), size):
        totals = PACKED_READING.unpack_from(packed, offset)
        mask, *values = PACKED_PHASES.unpack_from(packed, offset + PACKED_READING.size)
        result.append((totals, (mask, tuple(tuple(values[4 * k : 4 * k + 4]) for k in range(3)))))
    return result


def wrap_degrees(degrees: float) -> float:
    """``degrees`` in (−180, 180]."""
    wrapped = math.fmod(degrees, 360.0)
    if wrapped > 180.0:
        wrapped -= 360.0
    elif wrapped <= -180.0:
        wrapped += 360.0
    return wrapped


def _phases_from_chain(mask: int, values: Sequence[Sequence[int]]) -> Phases:
    return tuple(  # type: ignore[return-value]
        PhaseReading.from_chain(*values[k]) if mask >> k & 1 else None for k in range(len(PHASE_NAMES))
    )


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
        writes a meter's slot word once per run of its consecutive readings of a slot);
        ``recordPhaseReadings`` when the readings carry phases. A batch is of one kind:
        ``split_by_kind`` first when it may hold both."""
        with_phases = {reading.phases is not None for reading in readings}
        if len(with_phases) > 1:
            raise ValueError("a batch holds readings with phases or without, not both (split_by_kind)")
        function = "recordPhaseReadings" if with_phases == {True} else "recordReadings"
        return self._function(function, b"".join(reading.packed for reading in readings))

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
        if revert.error in ("ReadingOutOfRange", "ReadingPastDeadline", "MalformedPhases"):
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
        """Every recorded reading from ``from_block`` on (``ReadingsRecorded`` and
        ``PhaseReadingsRecorded`` events, in chain order), one item per reading."""
        return self._follower(
            ("ReadingsRecorded", "PhaseReadingsRecorded"), from_block, _recorded_readings, many=True
        )

    def readings_in(self, receipt: TxReceipt) -> list[Reading]:
        """The readings a ``recordReadings`` or ``recordPhaseReadings`` transaction recorded
        (none if it failed)."""
        found = []
        for name in ("ReadingsRecorded", "PhaseReadingsRecorded"):
            events = self.contract.events[name]().process_receipt(receipt, errors=DISCARD)
            found += [reading for event in events for reading in decode_batch(name, event.args.readings)]
        return found


def split_by_kind(readings: Sequence[Reading]) -> list[list[Reading]]:
    """``readings`` as batches of one kind each (without phases, with phases), order kept."""
    kinds = [[r for r in readings if r.phases is None], [r for r in readings if r.phases is not None]]
    return [kind for kind in kinds if kind]


def decode_batch(event_name: str, packed: bytes) -> list[Reading]:
    """The readings of a ``ReadingsRecorded`` or ``PhaseReadingsRecorded`` event's batch."""
    if event_name == "PhaseReadingsRecorded":
        return [Reading.from_chain(*totals, phases) for totals, phases in unpack_phase_readings(packed)]
    return [Reading.from_chain(*item) for item in unpack_readings(packed)]


def _recorded_readings(event: ChainEvent) -> list[RecordedReading]:
    return [
        RecordedReading(reading, event.block_number)
        for reading in decode_batch(event.name, event.args["readings"])
    ]
