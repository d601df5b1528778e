"""Load and generation profiles for OCM time series: the CSV format and a SimBench source.

A profiles CSV has a ``time`` column, then one column per element quantity::

    time,load.3.p_kw,load.3.q_kvar,sgen.1.p_kw,sgen.2.max_p_kw
    2016-06-01T00:00:00Z,3.2,1.05,0.0,0.0
    2016-06-01T00:01:00Z,3.1,1.02,0.0,0.0

- ``time``: UTC, as ISO 8601 (``Z`` or an offset; without one it is taken as UTC) or as Unix
  seconds; strictly increasing (OCM runs at one-minute resolution, but any steps work).
- ``<element>.<index>.<field>``: ``element`` is ``load``, ``sgen`` or ``storage`` and ``index``
  its pandapower index. Fields, in kW/kvar and the element's own sign convention (as in the
  network: an sgen's ``p_kw`` is generation): ``p_kw`` and ``q_kvar`` for elements that are
  not flexibilities; ``q_kvar``, ``min_p_kw`` and ``max_p_kw`` (time-varying hardware limits,
  e.g. a PV inverter's available power) for flexibilities. Values are multiplied by the
  element's ``scaling``, as pandapower's ``ConstControl`` does.
- Elements and fields without a column keep the network's values. A flexibility's ``p_kw`` is
  refused: OCM decides it; so is the ``q_kvar`` of an inverter with a reactive power control
  (``q_control``): the control sets it from the inverter's P (and bus voltage).

Errors name the column and the CSV line. ``simbench_profiles`` writes this format from the
profiles that SimBench networks carry, interpolated to one minute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ocm.case import OcmCase
from ocm.flexibility import ELEMENTS, LOAD_SIGN
from ocm.grid.reactive import InverterState
from ocm.problem import OperatingPoint

COLUMN = re.compile(r"^(load|sgen|storage)\.(\d+)\.(p_kw|q_kvar|min_p_kw|max_p_kw)$")
FLEXIBILITY_FIELDS = ("q_kvar", "min_p_kw", "max_p_kw")
OTHER_FIELDS = ("p_kw", "q_kvar")


class ProfileError(ValueError):
    """Profiles that cannot be used; the message names the column and line at fault."""


@dataclass(frozen=True)
class Profiles:
    """Per time step: the operating point (per bus of the grid) and the flexibilities'
    hardware limits (load convention, kW)."""

    times: np.ndarray  # Unix seconds
    p_kw: np.ndarray  # (T, n_bus)
    q_kvar: np.ndarray  # (T, n_bus)
    p_low_kw: np.ndarray  # (T, n_flex)
    p_high_kw: np.ndarray  # (T, n_flex)
    inverters: InverterState | None = None  # controlled inverters, their P per step: (T, n)

    def __len__(self) -> int:
        return len(self.times)

    def point(self, step: int) -> OperatingPoint:
        if self.inverters is None:
            return OperatingPoint(self.p_kw[step], self.q_kvar[step])
        state = InverterState(self.inverters.controls, self.inverters.p_kw[step])
        return OperatingPoint(self.p_kw[step], self.q_kvar[step], state)

    def head(self, steps: int) -> Profiles:
        """The first ``steps`` steps."""
        arrays = (getattr(self, f)[:steps] for f in ("times", "p_kw", "q_kvar", "p_low_kw", "p_high_kw"))
        inverters = self.inverters
        if inverters is not None:
            inverters = InverterState(inverters.controls, inverters.p_kw[:steps])
        return Profiles(*arrays, inverters)


def read_profiles(path: str | Path, case: OcmCase) -> Profiles:
    """Profiles of a CSV file for the elements of ``case``."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ProfileError(f"{path} is not a profiles CSV file ({error})") from None
    return profiles_from_frame(frame, case)


def profiles_from_frame(frame: pd.DataFrame, case: OcmCase) -> Profiles:
    """Profiles of a table in the CSV format (values may be strings or numbers)."""
    if len(frame.columns) == 0 or frame.columns[0] != "time":
        raise ProfileError("profiles: the first column must be 'time'")
    if frame.empty:
        raise ProfileError("profiles: no time steps")
    times = _times(frame["time"])
    grid, point = case.grid, case.point
    flexible = {(f.element, f.index): k for k, f in enumerate(case.flexibilities)}
    n = len(frame)
    p = np.repeat(point.p_kw[None, :], n, axis=0)
    q = np.repeat(point.q_kvar[None, :], n, axis=0)
    # hardware limits in the elements' own convention (an sgen's are generation)
    is_sgen = np.array([f.element == "sgen" for f in case.flexibilities])
    low = np.array([f.p_low_kw for f in case.flexibilities])
    high = np.array([f.p_high_kw for f in case.flexibilities])
    own_low = np.repeat(np.where(is_sgen, -high, low)[None, :], n, axis=0)
    own_high = np.repeat(np.where(is_sgen, -low, high)[None, :], n, axis=0)
    controls = point.inverters.controls if point.inverters is not None else None
    controlled = {} if controls is None else {key: j for j, key in enumerate(controls.keys)}
    inverter_p = None if controls is None else np.repeat(point.inverters.p_kw[None, :], n, axis=0)
    for column in frame.columns.drop("time"):
        element, index, field = _parse_column(column)
        row = _element_row(case, element, index, column)
        values = _values(frame[column], column)
        flexibility = flexible.get((element, index))
        allowed = FLEXIBILITY_FIELDS if flexibility is not None else OTHER_FIELDS
        if field not in allowed:
            what = "a flexibility (OCM decides its p_kw)" if flexibility is not None else "not a flexibility"
            raise ProfileError(
                f"column {column}: {element} {index} is {what}; allowed fields: {', '.join(allowed)}"
            )
        inverter = controlled.get(f"{element}.{index}")
        if inverter is not None and field == "q_kvar":
            raise ProfileError(
                f"column {column}: {element} {index} has a reactive power control (q_control), "
                "which sets its q_kvar"
            )
        if field in ("min_p_kw", "max_p_kw"):
            target = own_low if field == "min_p_kw" else own_high
            target[:, flexibility] = values
            continue
        scaling = 1.0 if pd.isna(row.get("scaling")) else float(row["scaling"])
        net_value = row.get("p_mw" if field == "p_kw" else "q_mvar")
        net_value = 0.0 if net_value is None or pd.isna(net_value) else float(net_value) * 1e3
        position = grid.bus_positions([row["bus"]])[0]
        change = LOAD_SIGN[element] * (values - net_value) * scaling
        (p if field == "p_kw" else q)[:, position] += change
        if inverter is not None:
            inverter_p[:, inverter] = LOAD_SIGN[element] * values * scaling
    low = np.where(is_sgen, -own_high, own_low)
    high = np.where(is_sgen, -own_low, own_high)
    _check_limits(low, high, case)
    inverters = None if controls is None else InverterState(controls, inverter_p)
    return Profiles(times, p, q, low, high, inverters)


def write_profiles(frame: pd.DataFrame, path: str | Path) -> None:
    """Writes a profiles table (``time`` as datetimes or Unix seconds) in the CSV format."""
    frame = frame.copy()
    if pd.api.types.is_datetime64_any_dtype(frame["time"]):
        frame["time"] = frame["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(path, index=False, float_format="%.6g")


def simbench_profiles(net, day: str, case: OcmCase, minutes: int = 1) -> pd.DataFrame:
    """One day of a SimBench network's own profiles, linearly interpolated to ``minutes``.

    ``net`` is a SimBench pandapower net with its ``profiles`` (as returned by
    ``simbench.get_simbench_net`` or saved from it with ``pandapower.to_json``). Elements that
    are not flexibilities get ``p_kw``/``q_kvar``; a PV flexibility (sgen) gets its available
    power as ``max_p_kw`` (capped by its own ``max_p_mw``). SimBench times are taken as UTC.
    """
    try:
        import simbench
    except ImportError:
        raise ProfileError("simbench is not installed: pip install simbench") from None
    if not isinstance(net.get("profiles"), dict) or "load" not in net.profiles:
        raise ProfileError(
            "--profiles simbench needs a SimBench network with its profiles (net.profiles), e.g. "
            "pandapower.to_json(simbench.get_simbench_net('1-LV-rural1--0-sw'), 'net.json')"
        )
    stamps = pd.to_datetime(net.profiles["load"]["time"], format="%d.%m.%Y %H:%M", utc=True)
    start = pd.Timestamp(day, tz="UTC")
    end = start + pd.Timedelta(days=1)
    rows = np.flatnonzero((stamps >= start) & (stamps <= end))
    if rows.size < 2:
        raise ProfileError(
            f"day {day} is not covered by the SimBench profiles ({stamps.iloc[0]:%Y-%m-%d} "
            f"to {stamps.iloc[-1]:%Y-%m-%d})"
        )
    absolute = simbench.get_absolute_values(_with_profiles_only(net), profiles_instead_of_study_cases=True)
    flexible = {(f.element, f.index): f for f in case.flexibilities}
    controlled = set() if case.controls is None else set(case.controls.keys)
    columns = {}
    for (element, quantity), table in absolute.items():
        if element not in ELEMENTS or quantity not in ("p_mw", "q_mvar"):
            continue
        for index in table.columns:
            if not getattr(case.tables, element)["in_service"].get(index, False):
                continue
            values = table[index].to_numpy(float)[rows] * 1e3
            flexibility = flexible.get((element, int(index)))
            if quantity == "q_mvar" and f"{element}.{index}" in controlled:
                continue  # its control sets Q
            if flexibility is None:
                columns[f"{element}.{index}.{'p_kw' if quantity == 'p_mw' else 'q_kvar'}"] = values
            elif element == "sgen" and quantity == "p_mw":
                columns[f"{element}.{index}.max_p_kw"] = np.minimum(values, -flexibility.p_low_kw)
                columns[f"{element}.{index}.min_p_kw"] = np.minimum(-flexibility.p_high_kw, values)
    coarse = pd.DataFrame(columns, index=stamps.iloc[rows].to_numpy())
    fine_times = pd.date_range(start, end, freq=f"{minutes}min", inclusive="left", tz="UTC")
    fine_times = fine_times[fine_times <= coarse.index[-1]]
    fine = coarse.reindex(coarse.index.union(fine_times)).interpolate(method="time").loc[fine_times]
    fine.insert(0, "time", fine_times)
    return fine.reset_index(drop=True)


def simbench_file_profiles(net_path: str | Path, day: str, case: OcmCase, minutes: int = 1) -> pd.DataFrame:
    """:func:`simbench_profiles` of a SimBench network saved with ``pandapower.to_json``."""
    import warnings

    import pandapower

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = pandapower.from_json(str(net_path))
    except Exception as error:  # native files and damaged pandapower files
        raise ProfileError(f"--profiles simbench needs a pandapower SimBench network ({error})") from None
    try:
        return simbench_profiles(net, day, case, minutes)
    except ValueError as error:  # a day that is not a date
        raise ProfileError(f"--day {day}: {error}") from None


def _with_profiles_only(net):
    """The net's profiles and the elements that have one (elements added later, e.g.
    flexibilities, have none)."""
    import pandapower

    source = pandapower.create_empty_network()
    for element in ("load", "sgen", "gen", "storage"):
        table = net[element]
        source[element] = table[table["profile"].notna()] if "profile" in table else table.iloc[:0]
    source["profiles"] = net.profiles
    return source


def _times(column: pd.Series) -> np.ndarray:
    text = column.astype(str).str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all():
        seconds = numeric.to_numpy(float)
    else:
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            raise ProfileError(
                f"column time, line {bad[0] + 2}: {text.iloc[bad[0]]!r} is neither an ISO 8601 time "
                "nor Unix seconds"
            )
        seconds = (parsed - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy()
    if not np.isfinite(seconds).all():
        raise ProfileError("column time: times must be finite")
    backwards = np.flatnonzero(np.diff(seconds) <= 0)
    if backwards.size:
        raise ProfileError(f"column time, line {backwards[0] + 3}: times must increase strictly")
    return seconds


def _parse_column(column: str) -> tuple[str, int, str]:
    match = COLUMN.match(str(column))
    if not match:
        raise ProfileError(
            f"column {column!r}: expected <element>.<index>.<field> with element load, sgen or "
            "storage and field p_kw, q_kvar, min_p_kw or max_p_kw (e.g. load.3.p_kw)"
        )
    return match[1], int(match[2]), match[3]


def _element_row(case: OcmCase, element: str, index: int, column: str) -> pd.Series:
    table = getattr(case.tables, element)
    if index not in table.index:
        raise ProfileError(f"column {column}: the network has no {element} {index}")
    row = table.loc[index]
    in_service = row.get("in_service", True)
    switched_off = not pd.isna(in_service) and not bool(in_service)
    if switched_off or row["bus"] not in set(case.grid.bus_ids.tolist()):
        raise ProfileError(f"column {column}: {element} {index} is out of service or not supplied")
    return row


def _values(column: pd.Series, name: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        value = column.iloc[bad[0]]
        raise ProfileError(f"column {name}, line {bad[0] + 2}: {value!r} is not a finite number")
    return values


def _check_limits(low: np.ndarray, high: np.ndarray, case: OcmCase) -> None:
    bad = np.argwhere(low > high)
    if bad.size:
        step, k = bad[0]
        f = case.flexibilities[k]
        raise ProfileError(
            f"line {step + 2}: {f.key} ({f.label}) has min_p_kw above max_p_kw "
            f"({low[step, k]:g} > {high[step, k]:g} kW in load convention)"
        )
