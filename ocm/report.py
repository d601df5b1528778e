"""The files of a time series of bands: ``bands.csv``, ``bands.json`` and the plots."""

from __future__ import annotations

import json
from pathlib import Path

from ocm.plots import write_plots
from ocm.timeseries import TimeSeriesResult


def write_results(result: TimeSeriesResult, out_dir: str | Path) -> list[Path]:
    """``bands.csv``, ``bands.json`` and the plots in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "bands.csv", out / "bands.json"
    result.table().to_csv(csv_path, index=False)
    json_path.write_text(json.dumps(result.to_json_dict(), indent=1) + "\n", encoding="utf-8")
    return [csv_path, json_path, *write_plots(result, out)]
