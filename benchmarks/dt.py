"""Solve time of the dynamic tariffs (market.pricing.dt): the DSO's day-ahead QP (Clarabel) over
seeded random fleets of 100 and 1,000 flexible devices (half EVs, half heat pumps) over 24 hours,
with one line above each of three load points cut below the peak of the cheapest plan
(dt.feeder_limits). The aggregators' own solve at spot + DT (no network) is measured in the same
run as the baseline; the ratio is DSO / aggregators, and max |ΔP| is how far the aggregators'
schedules are from the DSO's plan. Times are medians. ``--quick``: 20 and 100 devices;
``--highs``: HiGHS's QP solver too, for fleets of up to 100 (it takes minutes at 1,000)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]

from market.pricing.dt import (  # noqa: E402
    aggregator_response,
    feeder_limits,
    random_fleet,
    solve_tariffs,
    spot_price_shape,
)


def median_of(repeats: int, run):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 and 100 devices")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--highs",
        action="store_true",
        help="also time the DSO QP with HiGHS's active set (100 devices at most)",
    )
    args = parser.parse_args(argv)
    sizes = (20, 100) if args.quick else (100, 1_000)
    header = ("devices", "DSO s", "aggr. s", "ratio", "binding", "max DT", "max |ΔP| kW")
    widths = (8, 8, 8, 6, 8, 9, 12)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for size in sizes:
        fleet = random_fleet(size, 24, seed=args.seed)
        spot = spot_price_shape(24, seed=args.seed)
        network = feeder_limits(fleet, spot)
        dso_time, plan = median_of(args.repeats, partial(solve_tariffs, fleet, spot, network))
        agg_time, response = median_of(args.repeats, partial(aggregator_response, fleet, spot, plan))
        worst = max(float(np.abs(response.schedules[k] - p).max()) for k, p in plan.schedules.items())
        print(
            f"{size:>8} {dso_time:>8.3f} {agg_time:>8.3f} {dso_time / agg_time:>6.1f} "
            f"{len(plan.binding):>8} {plan.max_tariff:>9.5f} {worst:>12.1e}"
            + ("" if plan.feasible else f"  ({plan.status})")
        )
        if args.highs and size <= 100:
            highs_time, highs = median_of(1, partial(solve_tariffs, fleet, spot, network, solver="highs"))
            gap = max(float(np.abs(highs.schedules[k] - p).max()) for k, p in plan.schedules.items())
            print(
                f"{'':>8} {highs_time:>8.3f}  (HiGHS active set; max |ΔP| from Clarabel's plan {gap:.1e} kW)"
            )


if __name__ == "__main__":
    main()
