"""Conversions between Python units and the integers stored on chain.

Python side: kW, kvar, per-unit voltage, degrees, UTC Unix seconds, token units.
Chain side: W, var, µpu (1e-6 pu), µdeg (1e-6 degree), Wh, smallest token units; time
(Unix minutes, market slots) is ``contracts.clock``'s. This is the only module that scales
by 1000 or 1e6; everything else calls it.
Sign convention everywhere: load convention, positive power = consumption.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

TOKEN_DECIMALS = 18
ID_BYTES = 32


class UnitError(ValueError):
    """A value cannot be represented on chain (not finite, not aligned, too long)."""


def _scaled(value: float, factor: float, what: str) -> int:
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise UnitError(f"{what} must be a finite number, got {value!r}")
    return round(number * factor)


def kw_to_w(kw: float) -> int:
    """Active power kW → integer W (rounded to the nearest watt)."""
    return _scaled(kw, 1000, "active power (kW)")


def w_to_kw(watts: int) -> float:
    return watts / 1000


def kw_band_to_w_inward(p_min_kw: float, p_max_kw: float) -> tuple[int, int]:
    """A band in kW → whole watts inside it (P_min up, P_max down). A band narrower than a
    watt becomes the zero-width band at its rounded centre."""
    low_w = math.ceil(_scaled(p_min_kw, 1e6, "band P_min (kW)") / 1000 - 1e-9)
    high_w = math.floor(_scaled(p_max_kw, 1e6, "band P_max (kW)") / 1000 + 1e-9)
    if low_w > high_w:
        low_w = high_w = round((p_min_kw + p_max_kw) * 500)
    return low_w, high_w


def kvar_to_var(kvar: float) -> int:
    """Reactive power kvar → integer var."""
    return _scaled(kvar, 1000, "reactive power (kvar)")


def var_to_kvar(var: int) -> float:
    return var / 1000


def pu_to_micro_pu(pu: float) -> int:
    """Voltage magnitude in per unit → integer µpu."""
    return _scaled(pu, 1_000_000, "voltage (pu)")


def micro_pu_to_pu(micro_pu: int) -> float:
    return micro_pu / 1_000_000


def deg_to_micro_deg(degrees: float) -> int:
    """Voltage angle in degrees → integer µdeg."""
    return _scaled(degrees, 1_000_000, "angle (degree)")


def micro_deg_to_deg(micro_deg: int) -> float:
    return micro_deg / 1_000_000


def kwh_to_wh(kwh: float) -> int:
    """Energy kWh → integer Wh (rounded to the nearest Wh)."""
    return _scaled(kwh, 1000, "energy (kWh)")


def kwh_to_wh_down(kwh: float) -> int:
    """Energy kWh → integer Wh, rounded down (never more than asked, e.g. a band's energy);
    float noise below a µWh (0.19999999999999996 kWh) is not rounded away."""
    _scaled(kwh, 1000, "energy (kWh)")  # validates
    wh = (Decimal(repr(float(kwh))) * 1000).quantize(Decimal("0.000001"))
    return int(wh.to_integral_value(rounding="ROUND_FLOOR"))


def wh_to_kwh(wh: int) -> float:
    return wh / 1000


def slot_energy_kwh(power_kw: float, slot_minutes: int) -> float:
    """Energy of a constant ``power_kw`` over a slot of ``slot_minutes`` (kWh)."""
    return power_kw * slot_minutes / 60


def price_to_units_per_kwh(tokens_per_kwh: float | str | Decimal) -> int:
    """Price in tokens per kWh → smallest token units per kWh (the chain's price unit)."""
    return tokens_to_units(tokens_per_kwh)


def units_per_kwh_to_price(units_per_kwh: int) -> Decimal:
    """Smallest token units per kWh → tokens per kWh, exactly."""
    return units_to_tokens(units_per_kwh)


def watt_minutes_to_kwh(watt_minutes: int) -> float:
    """Energy accumulated by the ledger (sum of W over minutes) → kWh."""
    return watt_minutes / 60_000


def tokens_to_units(tokens: float | str | Decimal) -> int:
    """Token amount (e.g. 2.5 or "2.5") → smallest token units (18 decimals), exactly."""
    try:
        amount = Decimal(str(tokens))
    except InvalidOperation as error:
        raise UnitError(f"token amount must be a number, got {tokens!r}") from error
    if not amount.is_finite():
        raise UnitError(f"token amount must be finite, got {tokens!r}")
    return int(amount.scaleb(TOKEN_DECIMALS).to_integral_value())


def units_to_tokens(units: int) -> Decimal:
    """Smallest token units → token amount, exactly."""
    return Decimal(units).scaleb(-TOKEN_DECIMALS)


def encode_id(human_id: str) -> bytes:
    """Human id of a meter or flexibility (``"CS01"``) → bytes32 (UTF-8, zero padded)."""
    raw = human_id.encode("utf-8")
    if not raw or len(raw) > ID_BYTES or b"\x00" in raw:
        raise UnitError(f"id {human_id!r} must be 1..32 bytes of UTF-8 without NUL")
    return raw.ljust(ID_BYTES, b"\x00")


def decode_id(raw: bytes) -> str:
    """bytes32 id → human id."""
    return bytes(raw).rstrip(b"\x00").decode("utf-8", errors="replace")
