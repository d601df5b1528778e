"""Reads the element tables of a ``pandapower.to_json`` file without importing pandapower.

Importing pandapower takes seconds (it pulls in matplotlib, scipy.stats, numba-compiled
estimation code, ...), which dominates a short ``lec ocm`` or ``lec loadflow`` call. The file
format is plain: ``{"_class": "pandapowerNet", "_object": {table: {"_class": "DataFrame",
"_object": "<split-oriented JSON>", "dtype": {column: dtype}}, "name": ..., "sn_mva": ...}}``.
``read_tables`` rebuilds every element table (all rows and every column, with the file's
dtypes, as ``pandapower.from_json`` does; ``res_*`` tables and other objects are skipped) and
the net's ``name``, ``sn_mva`` and ``f_hz`` (other tables, without an ``in_service`` column, are
left out when they are not plain). Anything it does not know how to rebuild exactly
(multi-indexes, serialized objects inside cells, unknown dtypes, an element table missing from
the file) raises ``UnsupportedFile``, and the caller falls back to pandapower's own reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

NUMERIC_DTYPES = {
    "float64",
    "float32",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint64",
    "uint32",
    "uint16",
    "uint8",
}
NULLABLE_DTYPES = {"Int64", "Int32", "UInt32", "UInt64", "boolean", "Float64"}


class UnsupportedFile(ValueError):
    """The file uses a feature of the format that only pandapower's reader handles."""


@dataclass(frozen=True)
class PandapowerFile:
    name: str
    sn_mva: float
    f_hz: float
    tables: dict[str, pd.DataFrame]  # every element table of the file (no res_* tables)


def read_tables(data: dict, required: tuple[str, ...]) -> PandapowerFile:
    """The element tables of a parsed pandapower JSON document; ``required`` tables must be in it."""
    if data.get("_class") != "pandapowerNet" or not isinstance(data.get("_object"), dict):
        raise UnsupportedFile("not a pandapowerNet object")
    content = data["_object"]
    tables = {}
    for key, value in content.items():
        if key.startswith(("res_", "_")) or not _is_frame(value):
            continue
        try:
            tables[key] = _frame(key, value)
        except UnsupportedFile:
            if key in required or '"in_service"' in str(value.get("_object")):
                raise  # an element table, needed whole
            # otherwise a table of other data (e.g. SimBench's load cases) that OCM never reads
    missing = [name for name in required if name not in tables]
    if missing:
        raise UnsupportedFile(f"table(s) {', '.join(missing)} missing")
    return PandapowerFile(
        name=_plain(content.get("name"), ""),
        sn_mva=float(_plain(content.get("sn_mva"), 1.0)),
        f_hz=float(_plain(content.get("f_hz"), 50.0)),
        tables=tables,
    )


def _is_frame(value) -> bool:
    return isinstance(value, dict) and value.get("_class") == "DataFrame"


def _plain(value, default):
    if value is None:
        return default
    if isinstance(value, dict):
        raise UnsupportedFile("serialized object where a plain value was expected")
    return value


def _frame(key: str, value: dict) -> pd.DataFrame:
    if value.get("orient", "split") != "split" or value.get("is_multiindex") or value.get("is_multicolumn"):
        raise UnsupportedFile(f"table {key}: only split-oriented tables with a plain index are read")
    body = value.get("_object")
    if not isinstance(body, str):
        raise UnsupportedFile(f"table {key}: stored in a separate file")
    split = json.loads(body)
    columns, index, rows = split["columns"], split["index"], split["data"]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
        raise UnsupportedFile(f"table {key}: non-integer index")
    dtypes = value.get("dtype") or {}
    by_column = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    index = pd.Index(index, dtype=np.int64)
    data = {}
    for position, column in enumerate(columns):
        values = _column(key, column, by_column[position], dtypes.get(column))
        data[column] = pd.Series(values, index=index, dtype=values.dtype, copy=False)
    frame = pd.DataFrame(data, index=index, columns=columns)
    if value.get("index_name") is not None:
        frame.index.name = value["index_name"]
    if value.get("column_name") is not None:
        frame.columns.name = value["column_name"]
    return frame


def _column(key: str, column: str, values: tuple, dtype: str | None):
    if any(isinstance(v, dict | list) for v in values):
        if column != "geo":
            raise UnsupportedFile(f"table {key}: serialized objects in column {column}")
        return _objects(values)
    if dtype is None or dtype == "object":
        return _objects(values)
    if dtype in NUMERIC_DTYPES:
        if dtype.startswith(("int", "uint")) and any(v is None for v in values):
            raise UnsupportedFile(f"table {key}: missing value in integer column {column}")
        return np.array([np.nan if v is None else v for v in values], dtype=dtype)
    if dtype == "bool":
        if any(v is None for v in values):
            raise UnsupportedFile(f"table {key}: missing value in boolean column {column}")
        return np.array(values, dtype=bool)
    if dtype in NULLABLE_DTYPES:
        return pd.array(list(values), dtype=dtype)
    raise UnsupportedFile(f"table {key}: dtype {dtype} of column {column}")


def _objects(values: tuple) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
