"""Meter payloads: parsing the JSON and OBIS forms, the canonical form, signing and recovery.

A payload is a JSON object. Its **canonical form** is the JSON text of every field except
``signature``: keys sorted by Unicode code point at every level, no whitespace, strings
as JSON strings in UTF-8 (no ``\\u`` escapes beyond what JSON requires), numbers exactly
as they appear in the received text. The meter signs the UTF-8 bytes of the canonical
form with EIP-191 ``personal_sign`` (``"\\x19Ethereum Signed Message:\\n" + len + bytes``,
keccak, secp256k1) using the key registered for it in ``CommunityRegistry``; the
``signature`` field carries the 65 bytes ``r‖s‖v`` as ``0x`` hex. docs/gateway.md has
the fields, the OBIS codes and examples.

``parse_payload`` turns raw bytes into a ``SignedReading`` (the recovered signer address
included) or raises ``Rejection`` with a machine-readable reason.

A meter that measures per phase adds ``phases`` (JSON form: an object keyed ``L1``, ``L2``,
``L3`` with the phases it measures) or the per-phase OBIS codes (21/41/61.7.0 …); its totals
may then be left out (derived from the phases) or must agree with the phases' sum within
``PHASE_SUM_TOLERANCE_KW`` + ``PHASE_SUM_TOLERANCE_SHARE`` (refused as ``inconsistent``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from coincurve import PublicKey
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak

from contracts import clock, units
from contracts.ledger import PHASE_DISPLACEMENT_DEG, PHASE_NAMES, PhaseReading, Phases, Reading, wrap_degrees

MAX_PAYLOAD_BYTES = 4096
MAX_SEQ = 2**63 - 1
DEFAULT_NOMINAL_VOLTAGE_V = 230.0

PLAIN_FIELDS = {"meter_id", "time", "seq", "p_kw", "q_kvar", "theta_deg", "signature"}
OBIS_FIELDS = {"meter_id", "time", "seq", "obis", "signature"}
PHASE_FIELDS = {"meter_id", "time", "seq", "phases", "signature"}  # required with phases; totals optional
PHASE_VALUE_FIELDS = {"p_kw", "q_kvar", "theta_deg"}  # and v_pu or v_volt, per phase
# The totals may differ from the sum of the phases by this much (both meter registers are
# rounded on their own): 0.01 kW (kvar) plus 1 % of the sum of the phases' magnitudes.
PHASE_SUM_TOLERANCE_KW = 0.01
PHASE_SUM_TOLERANCE_SHARE = 0.01

OBIS_ACTIVE_IMPORT = "1-0:1.7.0"
OBIS_ACTIVE_EXPORT = "1-0:2.7.0"
OBIS_REACTIVE_IMPORT = "1-0:3.7.0"
OBIS_REACTIVE_EXPORT = "1-0:4.7.0"
OBIS_VOLTAGES = ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0")  # L1, L2, L3
OBIS_ANGLE = "1-0:81.7.4"
# Per phase L1, L2, L3: +P, −P, +Q, −Q, voltage, and the angle of U(Lk) behind U(L1)
# (DLMS C=81, E = 10·reference + quantity with U(L1)=0, U(L2)=1, U(L3)=2: 81.7.1 = U(L2) vs
# U(L1), 81.7.2 = U(L3) vs U(L1); L1 has none).
OBIS_PHASES = (
    ("1-0:21.7.0", "1-0:22.7.0", "1-0:23.7.0", "1-0:24.7.0", "1-0:32.7.0", None),
    ("1-0:41.7.0", "1-0:42.7.0", "1-0:43.7.0", "1-0:44.7.0", "1-0:52.7.0", "1-0:81.7.1"),
    ("1-0:61.7.0", "1-0:62.7.0", "1-0:63.7.0", "1-0:64.7.0", "1-0:72.7.0", "1-0:81.7.2"),
)
OBIS_CODE = re.compile(r"^\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(\*\d{1,3})?$")
OBIS_VALUE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\*\s*(\S+)\s*$")
# accepted unit spellings per quantity (the first is the unit of a bare number) -> conversion
ACTIVE_UNITS: dict[str, Callable[[float], float]] = {"kW": float, "W": units.w_to_kw}
REACTIVE_UNITS: dict[str, Callable[[float], float]] = {"kvar": float, "var": units.var_to_kvar}
VOLTAGE_UNITS: dict[str, Callable[[float], float]] = {"V": float}
ANGLE_UNITS: dict[str, Callable[[float], float]] = {"deg": float, "°": float}


class Reason(enum.StrEnum):
    """Why a payload was refused (the ``reason`` of a rejection message)."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    SCHEMA = "schema"
    METER_MISMATCH = "meter_mismatch"
    OUT_OF_RANGE = "out_of_range"
    INCONSISTENT = "inconsistent"
    UNKNOWN_METER = "unknown_meter"
    INACTIVE_METER = "inactive_meter"
    BAD_SIGNATURE = "bad_signature"
    FROM_FUTURE = "from_future"
    TOO_OLD = "too_old"
    DUPLICATE = "duplicate"
    CHAIN_REFUSED = "chain_refused"


class Rejection(Exception):
    """A refused payload; ``time`` and ``seq`` are echoed when they could be read."""

    def __init__(self, reason: Reason, detail: str, time: int | None = None, seq: int | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.time = time
        self.seq = seq

    def message(self) -> dict[str, Any]:
        """The JSON object published on the ``rejected`` topic."""
        return {"reason": str(self.reason), "detail": self.detail, "time": self.time, "seq": self.seq}


@dataclass(frozen=True)
class SignedReading:
    """A parsed, well-formed reading and the address that signed it."""

    reading: Reading
    seq: int
    signer: str
    digest: bytes  # sha256 of the canonical form: equal digests = the same reading


class JsonNumber(str):
    """A JSON number kept as its original text, so the canonical form repeats it exactly."""


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` (see the module docstring)."""
    if isinstance(value, dict):
        members = (f"{canonical_json(key)}:{canonical_json(item)}" for key, item in sorted(value.items()))
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def canonical_bytes(payload: dict[str, Any]) -> bytes:
    """What the meter signs: the canonical form of every field but ``signature``."""
    return canonical_json({k: v for k, v in payload.items() if k != "signature"}).encode("utf-8")


def sign_payload(fields: dict[str, Any], meter_key: Any) -> dict[str, Any]:
    """``fields`` plus the ``signature`` of ``meter_key`` (a ``LocalAccount``) over their
    canonical form; publish it with ``json.dumps`` so numbers keep the signed text."""
    signature = meter_key.sign_message(encode_defunct(primitive=canonical_bytes(fields))).signature
    return {**fields, "signature": "0x" + bytes(signature).hex()}


def parse_payload(raw: bytes, topic_meter_id: str, nominal_voltage_v: float) -> SignedReading:
    """The reading in ``raw`` (JSON or OBIS form), published under ``topic_meter_id``."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise Rejection(Reason.TOO_LARGE, f"{len(raw)} bytes, at most {MAX_PAYLOAD_BYTES}")
    payload = decode_json(raw)
    time_s, seq = _optional_int(payload, "time"), _optional_int(payload, "seq")

    def refuse(reason: Reason, detail: str) -> Rejection:
        return Rejection(reason, detail, time_s, seq)

    if "obis" in payload:
        required = allowed = OBIS_FIELDS
    elif "phases" in payload:  # the totals may be left out: they follow from the phases
        required, allowed = PHASE_FIELDS, PHASE_FIELDS | PLAIN_FIELDS | {_voltage_field(payload, refuse)}
    else:
        required = allowed = PLAIN_FIELDS | {_voltage_field(payload, refuse)}
    missing, unknown = sorted(required - set(payload)), sorted(set(payload) - allowed)
    if missing or unknown:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unknown {', '.join(unknown)}"] if unknown else []
        raise refuse(Reason.SCHEMA, "; ".join(parts))
    meter_id = payload["meter_id"]
    if not isinstance(meter_id, str) or not _valid_meter_id(meter_id):
        raise refuse(Reason.SCHEMA, "meter_id must be 1..32 bytes of UTF-8 without NUL, '/', '+', '#'")
    if meter_id != topic_meter_id:
        raise refuse(Reason.METER_MISMATCH, f"payload meter_id {meter_id!r} differs from the topic's")
    if time_s is None or time_s < 0 or time_s % clock.SECONDS_PER_MINUTE:
        raise refuse(Reason.SCHEMA, "time must be whole UTC Unix seconds aligned to a minute")
    if seq is None or not 0 <= seq <= MAX_SEQ:
        raise refuse(Reason.SCHEMA, f"seq must be an integer 0..{MAX_SEQ}")
    if "obis" in payload:
        p_kw, q_kvar, v_volt, theta_deg, phases = _obis_values(payload["obis"], nominal_voltage_v, refuse)
        v_pu = v_volt / nominal_voltage_v
    elif "phases" in payload:
        phases = _json_phases(payload["phases"], nominal_voltage_v, refuse)
        p_kw, q_kvar, v_pu, theta_deg = _totals_of_phases(payload, phases, nominal_voltage_v, refuse)
    else:
        p_kw, q_kvar, theta_deg = (_number(payload, name, refuse) for name in ("p_kw", "q_kvar", "theta_deg"))
        v_pu = _voltage_pu(payload, nominal_voltage_v, refuse)
        phases = None
    reading = Reading(meter_id, time_s, p_kw, q_kvar, v_pu, theta_deg, phases)
    canonical = canonical_bytes(payload)
    signer = _recover(canonical, payload["signature"], refuse)
    return SignedReading(reading, seq, signer, hashlib.sha256(canonical).digest())


def decode_json(raw: bytes) -> dict[str, Any]:
    """A payload's JSON object with numbers kept as ``JsonNumber`` text; refuses non-UTF-8,
    invalid JSON, NaN/Infinity, duplicate keys and anything but an object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Rejection(Reason.MALFORMED, f"not UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        payload = json.loads(
            text,
            parse_float=JsonNumber,
            parse_int=JsonNumber,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_keys,
        )
    except (ValueError, RecursionError) as error:
        raise Rejection(Reason.MALFORMED, f"not JSON ({str(error)[:120]})") from None
    if not isinstance(payload, dict):
        raise Rejection(Reason.MALFORMED, "the payload must be a JSON object")
    return payload


# ---------------------------------------------------------------------- internals


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in an object")
    return result


def _voltage_field(payload: dict[str, Any], refuse, where: str = "") -> str:
    if "v_pu" in payload and "v_volt" in payload:
        raise refuse(Reason.SCHEMA, f"give either {where}v_pu or {where}v_volt, not both")
    return "v_volt" if "v_volt" in payload else "v_pu"


def _optional_int(payload: dict[str, Any], name: str) -> int | None:
    """An integer field as sent (``None`` if absent or not an integer literal)."""
    value = payload.get(name)
    if isinstance(value, JsonNumber) and re.fullmatch(r"-?\d{1,20}", value):
        return int(value)
    return None


def _number(payload: dict[str, Any], name: str, refuse, where: str = "") -> float:
    """A number field (``where`` prefixes its name in messages: ``phases.L2.``)."""
    value = payload[name]
    if not isinstance(value, JsonNumber):
        raise refuse(Reason.SCHEMA, f"{where}{name} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise refuse(Reason.OUT_OF_RANGE, f"{where}{name} {value} is not a finite number")
    return number


def _voltage_pu(fields: dict[str, Any], nominal_voltage_v: float, refuse, where: str = "") -> float:
    if "v_pu" in fields:
        return _number(fields, "v_pu", refuse, where)
    return _number(fields, "v_volt", refuse, where) / nominal_voltage_v


def _json_phases(phases: Any, nominal_voltage_v: float, refuse) -> Phases:
    """The ``phases`` object of a JSON payload: ``{"L2": {"p_kw": …, "q_kvar": …, "v_pu": …,
    "theta_deg": …}}`` with the phases the meter measures."""
    if not isinstance(phases, dict):
        raise refuse(Reason.SCHEMA, f"phases must be an object keyed by {', '.join(PHASE_NAMES)}")
    if not phases:
        raise refuse(Reason.SCHEMA, "phases must hold at least one phase")
    if unknown := sorted(set(phases) - set(PHASE_NAMES)):
        raise refuse(Reason.SCHEMA, f"phases.{unknown[0]} is not a phase (use {', '.join(PHASE_NAMES)})")
    parsed: list[PhaseReading | None] = []
    for name in PHASE_NAMES:
        fields, where = phases.get(name), f"phases.{name}."
        if fields is None and name not in phases:
            parsed.append(None)
            continue
        if not isinstance(fields, dict):
            raise refuse(Reason.SCHEMA, f"phases.{name} must be an object of p_kw, q_kvar, v_pu, theta_deg")
        expected = PHASE_VALUE_FIELDS | {_voltage_field(fields, refuse, where)}
        missing, unknown = sorted(expected - set(fields)), sorted(set(fields) - expected)
        if missing or unknown:
            parts = [f"missing {', '.join(where + m for m in missing)}"] if missing else []
            parts += [f"unknown {', '.join(where + u for u in unknown)}"] if unknown else []
            raise refuse(Reason.SCHEMA, "; ".join(parts))
        p_kw, q_kvar, theta_deg = (_number(fields, f, refuse, where) for f in ("p_kw", "q_kvar", "theta_deg"))
        parsed.append(
            PhaseReading(p_kw, q_kvar, _voltage_pu(fields, nominal_voltage_v, refuse, where), theta_deg)
        )
    return tuple(parsed)  # type: ignore[return-value]


def _totals_of_phases(
    payload: dict[str, Any], phases: Phases, nominal_voltage_v: float, refuse
) -> tuple[float, float, float, float]:
    """(P, Q, V, θ) of a JSON payload with phases: each total as given (P and Q checked
    against the phases' sum), or, when left out, derived from the phases."""
    measured = [phase for phase in phases if phase is not None]
    totals = []
    for name in ("p_kw", "q_kvar"):
        given = _number(payload, name, refuse) if name in payload else None
        values = [getattr(phase, name) for phase in measured]
        totals.append(_checked_sum(given, values, name, f"phases.*.{name}", refuse))
    v_pu = (
        _voltage_pu(payload, nominal_voltage_v, refuse)
        if "v_pu" in payload or "v_volt" in payload
        else sum(phase.v_pu for phase in measured) / len(measured)
    )
    theta_deg = _number(payload, "theta_deg", refuse) if "theta_deg" in payload else reference_angle(phases)
    return totals[0], totals[1], v_pu, theta_deg


def _checked_sum(given: float | None, values: Sequence[float], total: str, parts: str, refuse) -> float:
    """The sum of the phases' ``values`` when the total is not ``given``; else the total,
    refused as inconsistent when it is further from the sum than the tolerance."""
    summed = sum(values)
    if given is None:
        return summed
    allowed = PHASE_SUM_TOLERANCE_KW + PHASE_SUM_TOLERANCE_SHARE * sum(abs(v) for v in values)
    if abs(given - summed) > allowed:
        raise refuse(
            Reason.INCONSISTENT,
            f"{total} {given:g} differs from the sum of {parts} {summed:g} by {abs(given - summed):g}, "
            f"more than the {allowed:g} allowed ({PHASE_SUM_TOLERANCE_KW:g} + "
            f"{100 * PHASE_SUM_TOLERANCE_SHARE:g} % of the phases' magnitudes)",
        )
    return given


def reference_angle(phases: Phases) -> float:
    """The L1-referred voltage angle of the measured phases (the circular mean of each
    phase's angle less its nominal displacement), degrees in (−180, 180]: what a reading's
    θ means when the meter gave only its phases' angles."""
    shifted = [
        math.radians(phase.theta_deg - displacement)
        for phase, displacement in zip(phases, PHASE_DISPLACEMENT_DEG, strict=True)
        if phase is not None
    ]
    angle = math.degrees(math.atan2(sum(map(math.sin, shifted)), sum(map(math.cos, shifted))))
    return wrap_degrees(round(angle, 9))


def _valid_meter_id(meter_id: str) -> bool:
    if any(char in meter_id for char in "/+#"):
        return False
    try:
        units.encode_id(meter_id)
    except units.UnitError:
        return False
    return True


def _obis_values(
    obis: Any, nominal_voltage_v: float, refuse
) -> tuple[float, float, float, float, Phases | None]:
    """(P kW, Q kvar, V volt, θ deg, phases) of an OBIS object (load convention: import −
    export). Phases come from the per-phase codes (``OBIS_PHASES``) when any phase's +P or
    −P is given; the totals' codes may then be left out (the phases' sums)."""
    if not isinstance(obis, dict) or not all(OBIS_CODE.match(code) for code in obis):
        raise refuse(Reason.SCHEMA, "obis must be an object keyed by OBIS codes like 1-0:1.7.0")

    def quantity(code: str, accepted: dict[str, Callable[[float], float]]) -> float | None:
        return None if code not in obis else _obis_quantity(code, obis[code], accepted, refuse)

    def magnitude(code: str, accepted: dict[str, Callable[[float], float]]) -> float:
        number = quantity(code, accepted)
        if number is not None and number < 0:
            raise refuse(Reason.OUT_OF_RANGE, f"{code} is a magnitude and cannot be negative")
        return number or 0.0

    def net(positive: str, negative: str, accepted: dict[str, Callable[[float], float]]) -> float:
        return magnitude(positive, accepted) - magnitude(negative, accepted)

    measured = [k for k, codes in enumerate(OBIS_PHASES) if codes[0] in obis or codes[1] in obis]
    has_total_p = OBIS_ACTIVE_IMPORT in obis or OBIS_ACTIVE_EXPORT in obis
    if not measured and not has_total_p:
        raise refuse(Reason.SCHEMA, f"obis needs {OBIS_ACTIVE_IMPORT} or {OBIS_ACTIVE_EXPORT}")
    for required in (OBIS_ANGLE,) if measured else (OBIS_VOLTAGES[0], OBIS_ANGLE):
        if required not in obis:
            raise refuse(Reason.SCHEMA, f"obis needs {required}")
    theta_deg = quantity(OBIS_ANGLE, ANGLE_UNITS)
    voltages = [v for code in OBIS_VOLTAGES if (v := quantity(code, VOLTAGE_UNITS)) is not None]
    p_kw = net(OBIS_ACTIVE_IMPORT, OBIS_ACTIVE_EXPORT, ACTIVE_UNITS) if has_total_p else None
    q_kvar = net(OBIS_REACTIVE_IMPORT, OBIS_REACTIVE_EXPORT, REACTIVE_UNITS)
    if not measured:
        return p_kw, q_kvar, sum(voltages) / len(voltages), theta_deg, None
    phases: list[PhaseReading | None] = [None, None, None]
    for k in measured:
        p_in, p_out, q_in, q_out, voltage, angle = OBIS_PHASES[k]
        if voltage not in obis:
            raise refuse(
                Reason.SCHEMA, f"obis needs {voltage}: phase L{k + 1} is measured ({p_in} or {p_out})"
            )
        # the angle of U(Lk) behind U(L1); without it, the nominal 120° (L2) or 240° (L3)
        lag = quantity(angle, ANGLE_UNITS) if angle in obis else -PHASE_DISPLACEMENT_DEG[k] % 360
        v_pu = quantity(voltage, VOLTAGE_UNITS) / nominal_voltage_v
        phases[k] = PhaseReading(
            net(p_in, p_out, ACTIVE_UNITS),
            net(q_in, q_out, REACTIVE_UNITS),
            v_pu,
            wrap_degrees(theta_deg - lag),
        )
    given = [phases[k] for k in measured]
    p_kw = _checked_sum(
        p_kw, [ph.p_kw for ph in given], "1.7.0 − 2.7.0", "21/41/61.7.0 − 22/42/62.7.0", refuse
    )
    has_total_q = OBIS_REACTIVE_IMPORT in obis or OBIS_REACTIVE_EXPORT in obis
    q_kvar = _checked_sum(
        q_kvar if has_total_q else None,
        [ph.q_kvar for ph in given],
        "3.7.0 − 4.7.0",
        "23/43/63.7.0 − 24/44/64.7.0",
        refuse,
    )
    return p_kw, q_kvar, sum(voltages) / len(voltages), theta_deg, tuple(phases)  # type: ignore[return-value]


def _obis_quantity(code: str, raw: Any, accepted: dict[str, Callable[[float], float]], refuse) -> float:
    """An OBIS value: a number in the first accepted unit, or a string ``"VALUE*UNIT"``."""
    if isinstance(raw, JsonNumber):
        text, unit = str.__str__(raw), next(iter(accepted))
    elif isinstance(raw, str) and (match := OBIS_VALUE.match(raw)):
        text, unit = match.group(1), match.group(2)
    else:
        raise refuse(Reason.SCHEMA, f"{code} must be a number or a string 'VALUE*UNIT'")
    if unit not in accepted:
        raise refuse(Reason.SCHEMA, f"{code} unit {unit!r} not accepted (use {', '.join(accepted)})")
    number = float(text)
    if not math.isfinite(number):
        raise refuse(Reason.OUT_OF_RANGE, f"{code} {text} is not a finite number")
    return accepted[unit](number)


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _recover(canonical: bytes, signature: Any, refuse) -> str:
    """The checksummed address whose key made the EIP-191 ``signature`` over ``canonical``
    (what ``eth_account.Account.recover_message`` answers, with libsecp256k1 directly:
    the gateway's hottest line)."""
    if not isinstance(signature, str) or not re.fullmatch(r"0x[0-9a-fA-F]{130}", signature):
        raise refuse(Reason.BAD_SIGNATURE, "signature must be 65 bytes as 0x-prefixed hex")
    raw = bytes.fromhex(signature[2:])
    r, s, v = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64]
    v = v - 27 if v >= 27 else v
    if v not in (0, 1) or not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise refuse(Reason.BAD_SIGNATURE, "signature does not recover to a public key")
    digest = keccak(b"\x19Ethereum Signed Message:\n" + str(len(canonical)).encode() + canonical)
    try:
        public_key = PublicKey.from_signature_and_message(raw[:64] + bytes([v]), digest, hasher=None)
    except Exception:  # libsecp256k1 finds no point for this r
        raise refuse(Reason.BAD_SIGNATURE, "signature does not recover to a public key") from None
    return _checksum(keccak(public_key.format(compressed=False)[1:])[-20:])


def _checksum(address: bytes) -> str:
    """EIP-55 checksummed form of a 20-byte address."""
    text = address.hex()
    hashed = keccak(text.encode()).hex()
    return "0x" + "".join(c.upper() if int(h, 16) >= 8 else c for c, h in zip(text, hashed[:40], strict=True))
