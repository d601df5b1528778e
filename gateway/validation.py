"""The gateway's acceptance policy: a payload becomes a reading only if it parses, names an
active registered meter, carries that meter's signature, holds physically possible values
and falls inside the accepted time window. Duplicates are the queue's business."""

from __future__ import annotations

import time
from dataclasses import dataclass

from contracts.ledger import PHASE_NAMES, Reading
from gateway.meter_keys import MeterDirectory
from gateway.payload import DEFAULT_NOMINAL_VOLTAGE_V, Reason, Rejection, SignedReading, parse_payload

# The ledger's limits (MeasurementLedger.sol), in chain integers.
MAX_ABS_POWER = 100_000_000  # W and var
MAX_VOLTAGE_MICRO_PU = 2_000_000
MAX_ABS_ANGLE_MICRO_DEG = 180_000_000


@dataclass(frozen=True)
class AcceptancePolicy:
    """Tunable limits of what the gateway accepts."""

    nominal_voltage_v: float = DEFAULT_NOMINAL_VOLTAGE_V  # for v_volt and OBIS voltages
    max_age_s: int = 24 * 3600  # readings older than this are refused as too_old
    future_tolerance_s: int = 60  # meter clocks may run this much ahead of the gateway's


class ReadingValidator:
    """Turns a payload published under a meter's topic into a ``SignedReading`` or raises
    ``Rejection``."""

    def __init__(self, directory: MeterDirectory, policy: AcceptancePolicy, clock=time.time):
        self.directory = directory
        self.policy = policy
        self._clock = clock

    def validate(self, topic_meter_id: str, raw: bytes) -> SignedReading:
        signed = parse_payload(raw, topic_meter_id, self.policy.nominal_voltage_v)
        reading = signed.reading

        def refuse(reason: Reason, detail: str) -> Rejection:
            return Rejection(reason, detail, reading.time, signed.seq)

        meter = self.directory.get(reading.meter_id)
        if meter is None:
            raise refuse(Reason.UNKNOWN_METER, f"meter {reading.meter_id!r} is not registered")
        if not meter.active:
            raise refuse(Reason.INACTIVE_METER, f"meter {reading.meter_id!r} is deregistered")
        if signed.signer != meter.signer:
            raise refuse(Reason.BAD_SIGNATURE, "not signed by the key registered for this meter")
        _check_ranges(reading, refuse)
        now = self._clock()
        if reading.time > now + self.policy.future_tolerance_s:
            raise refuse(Reason.FROM_FUTURE, f"minute starts {reading.time - now:.0f} s in the future")
        if reading.time < now - self.policy.max_age_s:
            raise refuse(Reason.TOO_OLD, f"older than the accepted window of {self.policy.max_age_s} s")
        return signed


def _check_ranges(reading: Reading, refuse) -> None:
    """The totals and every measured phase within the ledger's limits."""
    _check_range(reading.chain[2:], refuse)
    for name, phase in zip(PHASE_NAMES, reading.phases or (), strict=False):
        if phase is not None:
            _check_range(phase.chain, refuse, f"phases.{name}.")


def _check_range(values: tuple, refuse, where: str = "") -> None:
    p_w, q_var, v_micro_pu, theta_micro_deg = values
    if abs(p_w) > MAX_ABS_POWER or abs(q_var) > MAX_ABS_POWER:
        raise refuse(Reason.OUT_OF_RANGE, f"|{where}p_kw| and |{where}q_kvar| must be at most 100000")
    if not 0 <= v_micro_pu <= MAX_VOLTAGE_MICRO_PU:
        raise refuse(Reason.OUT_OF_RANGE, f"{where}voltage must be 0..2 pu")
    if abs(theta_micro_deg) > MAX_ABS_ANGLE_MICRO_DEG:
        raise refuse(Reason.OUT_OF_RANGE, f"{where}theta_deg must be -180..180")
