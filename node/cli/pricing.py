"""``lec dt`` and ``lec tfm``: the DSO's price instruments (seeds/000) on a network and a day:
dynamic network tariffs for flexible demand, and the transactive flexibility market."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from pathlib import Path

import numpy as np

from node.cli.arguments import non_negative_float, positive_float, positive_int
from node.cli.errors import CliError

log = logging.getLogger(__name__)
POST_BATCH = 96  # DynamicTariff.MAX_ENTRIES

COMMON = """\
NET is a pandapower network (pandapower.to_json) or a native lec-network file. The day's
fixed load per bus: without --profiles, the network's loads shaped by the BDEW H0 household
profile of --day (default 2016-01-14), peaking at their network values; --profiles simbench
uses the SimBench profiles the network carries; --profiles CSV the ocm profiles format (docs/ocm.md),
averaged per hour. Load points are the buses with a load (named bus<index>, the bus number
meters carry on chain).

The flexible demand is a seeded fleet of --devices EVs and heat pumps (half each; EV 40-75 kWh,
11 kW, home from 16-20 h to 6-8 h; heat pump 2-5 kW, COP 2.3-3.0, comfort 20-24 °C) spread
over the load points and --aggregators aggregators, or the devices of --fleet FILE: a JSON list
of {"kind": "ev" or "heat_pump", "id", "bus", "aggregator", ...} with any field of the models
(EV: battery_kwh, charger_kw, arrival, departure, soc_arrival, soc_target, soc_min, soc_max,
efficiency; heat pump: rated_kw, cop, resistance, capacitance, t_initial, t_min, t_max,
outdoor: 24 °C values; docs/pricing.md). Spot prices per kWh for the 24 hours come
from --spot FILE (24 numbers, one per line or comma-separated) or a seeded day-ahead shape.
Limits: bus min_vm_pu/max_vm_pu (default 0.95/1.05), line and trafo max_loading_percent (100).
Every result is checked by a full HELM load flow of the schedules; the linearised limits are
corrected and the problem solved again while that load flow still finds a limit broken.
"""

DT_HELP = f"""\
Dynamic network tariffs (seeds/000 §5.1): the DSO plans the flexible demand at least cost
(spot price + a small quadratic term) within the network limits; the tariff of each load point
and hour is the shadow price of the limits it loads. Aggregators that optimise alone at spot
price + tariff reach the same plan (checked and reported). --rho R relaxes the limits with
penalty R per kWh: tariffs never exceed R and the congestion left is reported for the
scheduled re-profiling product (SRP). --srp-elasticity E finds the R at which the DSO's tariff
revenue pays for the SRP (E kW of re-profiling per unit of flexibility price behind each limit).

{COMMON}
Writes to --out (default dt-out): tariffs.csv (load_point, bus, hour, tariff), schedules.csv
(device, kind, load_point, hour, kw_spot, kw_plan), summary.json, tariffs.png, loadings.png.
--json prints the summary.

--post puts the tariffs of --day on chain (DynamicTariff.postTariffs, signed with the key
"dso" of --data-dir, through --rpc-url): every (bus, hour) whose tariff differs from what the
chain holds, in batches; the contract takes tariffs only until the gate closes for the hour's
first slot, so post tomorrow's tariffs today. Settlement then charges them on every meter's
metered consumption at that bus and hour.

Exit status: 0 a plan exists (with --rho or --srp-elasticity: always), 1 the limits cannot be
kept by any plan of the fleet (the least excess is reported) or the chain refused the posting,
2 bad input.

examples:
  lec dt feeder.json
  lec dt feeder.json --devices 80 --rho 0.2 --out dt/
  lec dt simbench_lv.json --profiles simbench --day 2016-01-14 --srp-elasticity 40
  lec dt feeder.json --day $(date -u -d tomorrow +%F) --post --data-dir .lec/community
"""

TFM_HELP = f"""\
Transactive flexibility market (seeds/000 §5.2): the DSO's Flexibility Requirement Table from
a load flow of the baseline (the aggregators' own plans at spot price): per congested hour the
load points that relieve it, the minimum kW, the allowed payback hours (no congestion, headroom
left), --payback-cap and --price-cap. Each aggregator bids from an LP over its devices (kW per
congestion hour, one payback hour, price = re-profiling cost + --markup per kW); the clearing
takes a fraction of every bid at least pay-as-bid cost meeting every requirement within the
caps and the network limits (payback included): one LP, or with --admm by ADMM between the
market operator and the DSO, so the operator never sees network data.

{COMMON}
Writes to --out (default tfm-out): requirements.csv, bids.csv (with the accepted fraction per
hour), summary.json, bids.png, loadings.png. --json prints the summary.

Exit status: 0 cleared and no limit broken after delivery, 1 a requirement cannot be met or a
limit stays broken (reported), 2 bad input.

examples:
  lec tfm feeder.json
  lec tfm feeder.json --devices 100 --aggregators 4 --admm --out tfm/
  lec tfm simbench_lv.json --profiles simbench --day 2016-01-14 --price-cap 2
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    dt = subparsers.add_parser(
        "dt",
        help="dynamic network tariffs per load point and hour for flexible demand",
        description=DT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(dt, "dt-out")
    relax = dt.add_mutually_exclusive_group()
    relax.add_argument("--rho", type=non_negative_float, help="penalty per kWh of congestion left")
    relax.add_argument(
        "--srp-elasticity",
        type=positive_float,
        metavar="E",
        help="coordinate with the SRP: kW of re-profiling per unit of price behind each limit",
    )
    dt.add_argument(
        "--post",
        action="store_true",
        help="post the tariffs of --day on chain as the DSO (key 'dso' of --data-dir)",
    )
    dt.add_argument("--data-dir", type=Path, default=Path(".lec") / "community", help="keys and deployment")
    dt.add_argument("--rpc-url", default="http://127.0.0.1:8545", help="JSON-RPC endpoint of the chain")
    dt.set_defaults(func=run_dt)
    tfm = subparsers.add_parser(
        "tfm",
        help="transactive flexibility market: requirements, aggregator bids, network-aware clearing",
        description=TFM_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(tfm, "tfm-out")
    tfm.add_argument("--price-cap", type=positive_float, default=1.5, help="price cap per kW (default 1.5)")
    tfm.add_argument("--payback-cap", type=non_negative_float, default=1.5, help="payback kW per kW (1.5)")
    tfm.add_argument("--markup", type=non_negative_float, default=0.3, help="margin per kW (0.3)")
    tfm.add_argument("--admm", action="store_true", help="clear by ADMM (operator and DSO apart)")
    tfm.set_defaults(func=run_tfm)


def _common_options(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("net", metavar="NET", help="network file: pandapower JSON or native lec-network JSON")
    parser.add_argument("--profiles", metavar="simbench|CSV", help="where the day's fixed load comes from")
    parser.add_argument("--day", metavar="YYYY-MM-DD", help="the day (default 2016-01-14 without --profiles)")
    fleet = parser.add_mutually_exclusive_group()
    fleet.add_argument("--devices", type=positive_int, help="EVs and heat pumps (default: 1 per load point)")
    fleet.add_argument("--fleet", metavar="FILE", help="the flexible devices, as JSON (see above)")
    parser.add_argument("--aggregators", type=positive_int, default=4, help="aggregators (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="seed of fleet and spot prices (default 1)")
    parser.add_argument("--spot", metavar="FILE", help="24 spot prices per kWh (default: a seeded day shape)")
    parser.add_argument("--out", metavar="DIR", default=out, help=f"output folder (default {out})")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_dt(args: argparse.Namespace) -> int:
    from market.pricing.congestion import dt_on_grid
    from market.pricing.dt import SrpSupply
    from market.pricing.plots import natural_order, plot_loadings, plot_tariffs, save

    case, grid, fleet, spot = _setup(args)
    srp = SrpSupply(args.srp_elasticity) if args.srp_elasticity else None
    log.info("planning %d devices on %s (%d load points)", len(fleet), case.name, len(case.load_points))
    outcome = _solve(lambda: dt_on_grid(grid, fleet, spot, rho=args.rho, srp=srp))
    out = _out_dir(args)
    plan = outcome.plan
    written = [out / "tariffs.csv", out / "schedules.csv"]
    _write_csv(
        written[0],
        ("load_point", "bus", "hour", "tariff"),
        [
            (lp, case.bus_of(lp), hour, f"{value:.6f}")
            for lp, values in sorted(plan.tariffs.items(), key=lambda item: natural_order(item[0]))
            for hour, value in enumerate(values)
        ],
    )
    own = outcome_schedules_at_spot(fleet, spot)
    _write_csv(
        written[1],
        ("device", "kind", "load_point", "hour", "kw_spot", "kw_plan"),
        [
            (d.device_id, d.kind, d.load_point, hour, f"{own[d.device_id][hour]:.4f}", f"{kw:.4f}")
            for d in fleet
            for hour, kw in enumerate(plan.schedules[d.device_id])
        ],
    )
    title = f"{case.name}, {case.day}: before = aggregators at spot price, after = DSO plan (spot + DT)"
    written.append(save(plot_loadings(grid, outcome.before, outcome.after, title), out / "loadings.png"))
    heat_map = plot_tariffs(plan.tariffs, f"dynamic tariffs, {case.name}, {case.day}")
    written.append(save(heat_map, out / "tariffs.png"))
    summary = {
        "network": case.name,
        "day": case.day,
        "devices": len(fleet),
        "status": plan.status,
        "rho": plan.rho,
        "max_tariff": plan.max_tariff,
        "revenue": plan.revenue,
        "energy_cost": plan.energy_cost,
        "congestion_left_kw": {f"{name}@t{hour}": kw for (name, hour), kw in plan.congestion_left.items()},
        "broken_before": len(outcome.violations_before),
        "broken_after": [str(v) for v in outcome.violations_after],
        "response_gap_kw": outcome.response_gap_kw,
        "rounds": outcome.rounds,
        "srp": None
        if outcome.coordination is None
        else {
            "status": outcome.coordination.status,
            "rho": outcome.coordination.rho,
            "revenue": outcome.coordination.revenue,
            "cost": outcome.coordination.srp_cost,
        },
        "files": [str(p) for p in [*written, out / "summary.json"]],
    }
    if args.post and plan.feasible:
        summary["posted"] = _post_tariffs(args, case, plan.tariffs)
    _finish(args, out, summary, outcome.report)
    return 0 if plan.feasible else 1


def _post_tariffs(args: argparse.Namespace, case, tariffs) -> int:
    """Post the tariffs that differ from the chain's; returns how many entries were sent."""
    from decimal import Decimal

    import pandas as pd

    from contracts.client import ChainError
    from contracts.tariff import Tariff, hour_of
    from node.cli.community import open_community

    community, keyring = open_community(args.data_dir, args.rpc_url)
    first_hour = hour_of(pd.Timestamp(case.day, tz="UTC").timestamp())
    wanted = [
        Tariff(case.bus_of(lp), first_hour + hour, Decimal(f"{max(value, 0.0):.6f}"))
        for lp, values in sorted(tariffs.items())
        for hour, value in enumerate(values)
    ]
    try:
        posted = _posted_tariffs(community, {t.hour for t in wanted})
        changed = [t for t in wanted if posted.get((t.bus, t.hour), Decimal(0)) != t.price]
        for start in range(0, len(changed), POST_BATCH):
            community.tariff.post_tariffs(keyring["dso"], changed[start : start + POST_BATCH])
    except ChainError as error:
        raise CliError(f"posting the tariffs failed: {error}", exit_code=1) from None
    log.info("posted %d tariffs of %s (%d unchanged)", len(changed), case.day, len(wanted) - len(changed))
    return len(changed)


def _posted_tariffs(community, hours: set[int]) -> dict:
    """(bus, hour) → the tariff on chain for ``hours``, from the ``TariffPosted`` events (one
    log query instead of a read per bus and hour; the latest posting wins, as on chain)."""
    posted = {}
    for tariff in community.tariff.follow_tariffs(0).poll().items:
        if tariff.hour in hours:
            posted[(tariff.bus, tariff.hour)] = tariff.price
    return posted


def outcome_schedules_at_spot(fleet, spot):
    from market.pricing.dt import aggregator_response

    return aggregator_response(fleet, spot).schedules


def run_tfm(args: argparse.Namespace) -> int:
    from market.pricing.aggregator import aggregator_bids, baseline_schedules, per_load_point
    from market.pricing.congestion import tfm_on_grid
    from market.pricing.plots import plot_bids, plot_loadings, save

    case, grid, fleet, spot = _setup(args)
    baseline = baseline_schedules(fleet, spot)
    flexible = per_load_point(fleet, baseline, grid.hours)
    offered = []

    def bids_for(table):
        offered[:] = aggregator_bids(fleet, spot, table, markup=args.markup, baseline=baseline).bids
        log.info("%d requirements published; %d bids", len(table.requirements), len(offered))
        return offered

    outcome = _solve(
        lambda: tfm_on_grid(
            grid,
            bids_for,
            flexible_baseline_kw=flexible,
            method="admm" if args.admm else "central",
            price_cap=args.price_cap,
            payback_cap=args.payback_cap,
        )
    )
    out = _out_dir(args)
    table, clearing = outcome.table, outcome.clearing
    written = [out / "requirements.csv", out / "bids.csv"]
    rows = table.rows()
    _write_csv(written[0], tuple(rows[0]) if rows else ("hour",), [tuple(r.values()) for r in rows])
    _write_csv(
        written[1],
        ("bid", "aggregator", "load_point", "price", "hour", "kw", "fraction", "payback_hour", "payback_kw"),
        [
            (
                b.bid_id,
                b.aggregator,
                b.load_point,
                b.price,
                hour,
                kw,
                f"{clearing.fractions.get(b.bid_id, {}).get(hour, 0.0):.6f}",
                b.payback_hour,
                b.payback_kw,
            )
            for b in offered
            for hour, kw in sorted(b.kw.items())
        ],
    )
    title = f"{case.name}, {case.day}: before = aggregators' own plans, after = cleared flexibility delivered"
    written.append(save(plot_loadings(grid, outcome.before, outcome.after, title), out / "loadings.png"))
    written.append(save(plot_bids(table.requirements, offered, clearing), out / "bids.png"))
    summary = {
        "network": case.name,
        "day": case.day,
        "devices": len(fleet),
        "requirements": len(table.requirements),
        "bids": len(offered),
        "status": clearing.status,
        "cost": clearing.cost,
        "procured_kw": clearing.procured_kw,
        "shortfall_kw": clearing.shortfall_kw,
        "not_relievable": list(table.not_relievable),
        "broken_before": len(outcome.violations_before),
        "broken_after": [str(v) for v in outcome.violations_after],
        "rounds": outcome.rounds,
        "files": [str(p) for p in [*written, out / "summary.json"]],
    }
    _finish(args, out, summary, outcome.report)
    return 0 if outcome.resolved else 1


# ------------------------------------------------------------------------------ shared


def _setup(args: argparse.Namespace):
    from market.pricing.dt import random_fleet, spot_price_shape
    from market.pricing.grid_limits import GridLimits
    from market.pricing.network import PricingInputError
    from node.pricing_case import HOURS, load_pricing_case, read_fleet
    from ocm.grid.errors import NetworkError
    from ocm.profiles import ProfileError

    if args.day is not None and args.profiles is None and not _is_date(args.day):
        raise CliError(f"--day {args.day!r} is not a date (YYYY-MM-DD)")
    try:
        case = load_pricing_case(args.net, args.profiles, args.day)
        spot = _read_spot(args.spot, HOURS) if args.spot else spot_price_shape(HOURS, seed=args.seed)
        if args.fleet:
            fleet, case = read_fleet(args.fleet, case)
        else:
            count = args.devices or len(case.load_points)
            points = list(case.load_points)
            fleet = random_fleet(count, HOURS, points, seed=args.seed, aggregators=args.aggregators)
        grid = GridLimits(case.grid, case.p_kw, case.q_kvar, case.load_points)
    except (NetworkError, ProfileError, PricingInputError, OSError) as error:
        raise CliError(str(error)) from None
    return case, grid, fleet, spot


def _solve(compute):
    from market.pricing.network import PricingInputError

    try:
        return compute()
    except PricingInputError as error:
        raise CliError(str(error)) from None


def _read_spot(path: str, hours: int) -> np.ndarray:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise CliError(f"--spot {path}: {error.strerror}") from None
    values = []
    for number, line in enumerate(text.splitlines(), 1):
        for field in line.replace(";", ",").split(","):
            field = field.strip()
            if not field:
                continue
            try:
                value = float(field)
            except ValueError:
                if number == 1 and not values:
                    continue  # a header
                raise CliError(f"--spot {path}, line {number}: {field!r} is not a number") from None
            if not math.isfinite(value):
                raise CliError(f"--spot {path}, line {number}: {field!r} is not a finite price")
            values.append(value)
    if len(values) != hours:
        raise CliError(f"--spot {path}: {len(values)} prices, one per hour needed ({hours})")
    return np.array(values)


def _is_date(text: str) -> bool:
    import pandas as pd

    try:
        pd.Timestamp(text)
    except ValueError:
        return False
    return True


def _out_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"--out {out}: {error.strerror}") from None
    return out


def _write_csv(path: Path, header, rows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _finish(args: argparse.Namespace, out: Path, summary: dict, report: str) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    if args.json:
        print(json.dumps(summary, indent=1, default=float))
    else:
        print(f"network {summary['network']}, {summary['day']}: {summary['devices']} flexible devices")
        print(report)
        print("wrote " + ", ".join(summary["files"]))
