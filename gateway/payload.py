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
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coincurve import PublicKey
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak

from contracts import clock, units
from contracts.ledger import Reading

MAX_PAYLOAD_BYTES = 4096
MAX_SEQ = 2**63 - 1
DEFAULT_NOMINAL_VOLTAGE_V = 230.0

PLAIN_FIELDS = {"meter_id", "time", "seq", "p_kw", "q_kvar", "theta_deg", "signature"}
OBIS_FIELDS = {"meter_id", "time", "seq", "obis", "signature"}

OBIS_ACTIVE_IMPORT = "1-0:1.7.0"
OBIS_ACTIVE_EXPORT = "1-0:2.7.0"
OBIS_REACTIVE_IMPORT = "1-0:3.7.0"
OBIS_REACTIVE_EXPORT = "1-0:4.7.0"
OBIS_VOLTAGES = ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0")  # L1, L2, L3
OBIS_ANGLE = "1-0:81.7.4"
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

    fields = OBIS_FIELDS if "obis" in payload else PLAIN_FIELDS | {_voltage_field(payload, refuse)}
    missing, unknown = sorted(fields - set(payload)), sorted(set(payload) - fields)
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
        p_kw, q_kvar, v_volt, theta_deg = _obis_values(payload["obis"], refuse)
        v_pu = v_volt / nominal_voltage_v
    else:
        p_kw, q_kvar, theta_deg = (_number(payload, name, refuse) for name in ("p_kw", "q_kvar", "theta_deg"))
        if "v_pu" in payload:
            v_pu = _number(payload, "v_pu", refuse)
        else:
            v_pu = _number(payload, "v_volt", refuse) / nominal_voltage_v
    reading = Reading(meter_id, time_s, p_kw, q_kvar, v_pu, theta_deg)
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


def _voltage_field(payload: dict[str, Any], refuse) -> str:
    if "v_pu" in payload and "v_volt" in payload:
        raise refuse(Reason.SCHEMA, "give either v_pu or v_volt, not both")
    return "v_volt" if "v_volt" in payload else "v_pu"


def _optional_int(payload: dict[str, Any], name: str) -> int | None:
    """An integer field as sent (``None`` if absent or not an integer literal)."""
    value = payload.get(name)
    if isinstance(value, JsonNumber) and re.fullmatch(r"-?\d{1,20}", value):
        return int(value)
    return None


def _number(payload: dict[str, Any], name: str, refuse) -> float:
    value = payload[name]
    if not isinstance(value, JsonNumber):
        raise refuse(Reason.SCHEMA, f"{name} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise refuse(Reason.OUT_OF_RANGE, f"{name} {value} is not a finite number")
    return number


def _valid_meter_id(meter_id: str) -> bool:
    if any(char in meter_id for char in "/+#"):
        return False
    try:
        units.encode_id(meter_id)
    except units.UnitError:
        return False
    return True


def _obis_values(obis: Any, refuse) -> tuple[float, float, float, float]:
    """(P kW, Q kvar, V volt, θ deg) of an OBIS object (load convention: import − export)."""
    if not isinstance(obis, dict) or not all(OBIS_CODE.match(code) for code in obis):
        raise refuse(Reason.SCHEMA, "obis must be an object keyed by OBIS codes like 1-0:1.7.0")

    def quantity(code: str, accepted: dict[str, Callable[[float], float]]) -> float | None:
        return None if code not in obis else _obis_quantity(code, obis[code], accepted, refuse)

    def magnitude(code: str, accepted: dict[str, Callable[[float], float]]) -> float:
        number = quantity(code, accepted)
        if number is not None and number < 0:
            raise refuse(Reason.OUT_OF_RANGE, f"{code} is a magnitude and cannot be negative")
        return number or 0.0

    if OBIS_ACTIVE_IMPORT not in obis and OBIS_ACTIVE_EXPORT not in obis:
        raise refuse(Reason.SCHEMA, f"obis needs {OBIS_ACTIVE_IMPORT} or {OBIS_ACTIVE_EXPORT}")
    for required in (OBIS_VOLTAGES[0], OBIS_ANGLE):
        if required not in obis:
            raise refuse(Reason.SCHEMA, f"obis needs {required}")
    p_kw = magnitude(OBIS_ACTIVE_IMPORT, ACTIVE_UNITS) - magnitude(OBIS_ACTIVE_EXPORT, ACTIVE_UNITS)
    q_kvar = magnitude(OBIS_REACTIVE_IMPORT, REACTIVE_UNITS) - magnitude(OBIS_REACTIVE_EXPORT, REACTIVE_UNITS)
    voltages = [v for code in OBIS_VOLTAGES if (v := quantity(code, VOLTAGE_UNITS)) is not None]
    return p_kw, q_kvar, sum(voltages) / len(voltages), quantity(OBIS_ANGLE, ANGLE_UNITS)


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
