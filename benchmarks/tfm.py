"""Clearing time of the TFM (market.pricing): the central LP (scipy HiGHS) and ADMM between
market operator and DSO, on seeded random markets of 100 and 1,000 bids (market.pricing.synthetic:
two load-point groups, two congestion hours, payback hours limited by one feeder limit per
group). Central is measured in the same run as the baseline; the ratio is ADMM / central.
Then the dynamic tariffs' solve time for 100 and 1,000 devices over 24 hours (benchmarks/dt.py).
``--quick``: 20 and 100 bids (and devices), for a smoke run."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]

from market.pricing.admm import clear_admm  # noqa: E402
from market.pricing.synthetic import random_market  # noqa: E402
from market.pricing.tfm import clear_central  # noqa: E402


def best_of(repeats: int, run):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 and 100 bids, one seed")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = (20, 100) if args.quick else (100, 1_000)
    header = ("bids", "central s", "ADMM s", "iter", "ratio", "rel. cost gap", "max |Δx|")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 10, 9, 6, 7, 14, 9), strict=True)))
    for size in sizes:
        requirements, bids, network = random_market(size, args.seed)
        central_time, central = best_of(3, partial(clear_central, requirements, bids, network))
        admm_time, admm = best_of(1, partial(clear_admm, requirements, bids, network))
        gap = abs(admm.clearing.cost - central.cost) / central.cost
        worst = max(
            abs(admm.clearing.fractions[b][h] - f)
            for b, per_hour in central.fractions.items()
            for h, f in per_hour.items()
        )
        flag = "" if admm.converged else "  (not converged)"
        print(
            f"{size:>6} {central_time:>10.4f} {admm_time:>9.3f} {admm.iterations:>6} "
            f"{admm_time / central_time:>7.1f} {gap:>14.2e} {worst:>9.1e}{flag}"
        )
    print("\ndynamic tariffs (benchmarks/dt.py):")
    dynamic_tariffs = importlib.util.spec_from_file_location("dt_benchmark", HERE / "dt.py")
    module = importlib.util.module_from_spec(dynamic_tariffs)
    dynamic_tariffs.loader.exec_module(module)
    module.main([*(["--quick"] if args.quick else []), "--seed", str(args.seed)])


if __name__ == "__main__":
    main()
