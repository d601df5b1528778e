"""A day of a feeder for the DSO's price instruments (``lec dt``, ``lec tfm``): the network, the
hourly load of everything that is not flexible demand, and the load points.

Where the hourly load comes from:
- ``profiles=None``: the network's own loads, sgens and storages, each shaped over the day by the
  BDEW H0 household profile of ``day`` (demandlib) scaled so that the day's peak equals the
  element's value in the network (generation keeps its value: a network without profiles has no
  sun to follow);
- ``"simbench"``: the SimBench profiles the network carries for ``day``;
- a profiles CSV (``ocm.profiles`` format): hourly means of its rows within ``day``'s 24 hours
  (the first 24 hours of the file when no day is given).

Load points are the buses that have a load, named ``bus<index>`` (the bus index is what meters
carry on chain, so tariffs map to meters without a lookup table).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from node.simulation.profiles import h0_kw
from ocm.case import OcmCase, load_case
from ocm.grid.model import Grid
from ocm.profiles import ProfileError, profiles_from_frame, read_profiles, simbench_file_profiles

HOURS = 24
DEFAULT_DAY = "2016-01-14"  # a winter Thursday: heat pumps run, the evening peak is high


@dataclass(frozen=True)
class PricingCase:
    """One feeder and one day: fixed load per hour and bus (load convention, kW/kvar)."""

    name: str
    day: str
    grid: Grid
    p_kw: np.ndarray  # (24, n_bus)
    q_kvar: np.ndarray
    load_points: dict[str, int]  # name -> pandapower bus index

    def bus_of(self, load_point: str) -> int:
        return self.load_points[load_point]


def load_pricing_case(
    net_path: str | Path, profiles: str | None = None, day: str | None = None
) -> PricingCase:
    """The case of a network file; ``ProfileError``/``NetworkError`` name what is wrong."""
    case = load_case(net_path, allow_no_flexibility=True)
    name = case.grid.name or Path(net_path).stem
    if profiles is None:
        day = day or DEFAULT_DAY
        p, q = _h0_day(case, _day_start(day))
    elif profiles == "simbench":
        if not day:
            raise ProfileError("--profiles simbench needs --day YYYY-MM-DD")
        frame = simbench_file_profiles(net_path, day, case, minutes=15)
        p, q = _hourly(profiles_from_frame(frame, case), _day_start(day))
    else:
        read = read_profiles(profiles, case)
        start = _day_start(day) if day else float(read.times[0])
        p, q = _hourly(read, start)
        day = day or pd.Timestamp(start, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M")
    load_buses = sorted({int(b) for b in case.tables.load.loc[case.tables.load["in_service"], "bus"]})
    energised = set(case.grid.bus_ids.tolist())
    points = {f"bus{b}": b for b in load_buses if b in energised}
    if not points:
        raise ProfileError(
            f"{net_path}: the network has no load in service, so no load point for flexible demand"
        )
    return PricingCase(name, day, case.grid, p, q, points)


def _day_start(day: str) -> float:
    try:
        return pd.Timestamp(day, tz="UTC").timestamp()
    except ValueError:
        raise ProfileError(f"--day {day!r} is not a date (YYYY-MM-DD)") from None


def _h0_day(case: OcmCase, start: float) -> tuple[np.ndarray, np.ndarray]:
    quarter_hours = start + 900 * np.arange(4 * HOURS)
    h0 = h0_kw(quarter_hours, 1000.0).reshape(HOURS, 4).mean(axis=1)
    shape = h0 / h0.max()
    load_only = _load_per_bus(case)
    p = np.outer(shape, load_only) + (case.point.p_kw - load_only)[None, :]
    q = np.outer(shape, case.point.q_kvar)
    return p, q


def _load_per_bus(case: OcmCase) -> np.ndarray:
    """kW of the network's loads (not sgens or storages) per bus of ``grid.bus_ids``."""
    load = case.tables.load
    load = load[load["in_service"]]
    per_bus = np.zeros(case.grid.n_bus)
    energised = dict(zip(case.grid.bus_ids.tolist(), range(case.grid.n_bus), strict=True))
    for bus, p_mw, scaling in zip(load["bus"], load["p_mw"], load["scaling"], strict=True):
        if int(bus) in energised:
            per_bus[energised[int(bus)]] += 1e3 * p_mw * scaling
    return per_bus


def _hourly(profiles, start: float) -> tuple[np.ndarray, np.ndarray]:
    hour = np.floor((profiles.times - start) / 3600).astype(int)
    inside = (hour >= 0) & (hour < HOURS)
    missing = sorted(set(range(HOURS)) - set(hour[inside].tolist()))
    if missing:
        raise ProfileError(f"the profiles do not cover hour(s) {', '.join(map(str, missing))} of the day")
    p = np.vstack([profiles.p_kw[inside & (hour == h)].mean(axis=0) for h in range(HOURS)])
    q = np.vstack([profiles.q_kvar[inside & (hour == h)].mean(axis=0) for h in range(HOURS)])
    return p, q


FLEET_KINDS = ("ev", "heat_pump")


def read_fleet(path: str | Path, case: PricingCase) -> tuple[list, PricingCase]:
    """The flexible devices of a fleet JSON file, and the case with their buses as load points.

    The file is a list of objects: ``{"kind": "ev" | "heat_pump", "id": str, "bus": int, ...}``
    plus any field of ``market.pricing.dt.ElectricVehicle`` or ``HeatPump`` (``aggregator``,
    ``battery_kwh``, ``arrival``, ``rated_kw``, ``cop``, ...; hours 0-23 of the day). A heat
    pump without ``outdoor`` (24 °C values) gets a winter day (2 °C mean, ±4 °C). Errors name the
    entry and the field."""
    import dataclasses
    import json

    from market.pricing.dt import ElectricVehicle, HeatPump, outdoor_temperature

    try:
        entries = json.loads(Path(path).read_text())
    except OSError as error:
        raise ProfileError(f"--fleet {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ProfileError(f"--fleet {path} is not JSON ({error})") from None
    if not isinstance(entries, list) or not entries:
        raise ProfileError(f"--fleet {path}: a non-empty JSON list of devices is needed")
    energised = set(case.grid.bus_ids.tolist())
    points = dict(case.load_points)
    fleet = []
    for number, entry in enumerate(entries):
        where = f"--fleet {path}, device {number}"
        if not isinstance(entry, dict):
            raise ProfileError(f"{where}: an object with kind, id and bus is needed")
        fields = dict(entry)
        kind, device_id, bus = fields.pop("kind", None), fields.pop("id", None), fields.pop("bus", None)
        if kind not in FLEET_KINDS:
            raise ProfileError(f"{where}: kind {kind!r} is not one of {', '.join(FLEET_KINDS)}")
        if not isinstance(device_id, str) or not device_id:
            raise ProfileError(f"{where}: id must be a non-empty string")
        if not isinstance(bus, int) or bus not in energised:
            raise ProfileError(f"{where} ({device_id}): bus {bus!r} is not an energised bus of the network")
        cls = ElectricVehicle if kind == "ev" else HeatPump
        known = {f.name for f in dataclasses.fields(cls)} - {"device_id", "load_point"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ProfileError(f"{where} ({device_id}): unknown field(s) {', '.join(unknown)} for a {kind}")
        if kind == "heat_pump" and "outdoor" not in fields:
            fields["outdoor"] = tuple(outdoor_temperature(HOURS))
        points.setdefault(f"bus{bus}", bus)
        try:
            fleet.append(cls(device_id, f"bus{bus}", **fields))
        except (TypeError, ValueError) as error:
            raise ProfileError(f"{where} ({device_id}): {error}") from None
    return fleet, dataclasses.replace(case, load_points=points)
