"""``lec status``: what a running community node is doing, read from its chain and its data
directory (human text, or JSON for machines)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from node.cli.errors import CliError

READING_WINDOW_MINUTES = 10
SETTLED_LOOKBACK_SLOTS = 48  # how far back the last settled slot is looked for (one view call each)
RECENT_VIOLATIONS_MINUTES = 60  # band violations of the settlements sent this recently are listed
ORDERS_SHOWN = 10  # per slot and side, in the text form (JSON has all)

HELP = f"""\
The state of a running community node, read from its chain (JSON-RPC at --rpc-url) and
its data directory (the contracts' addresses in deployment.json; the gateway queues):
  head             the newest block (number, age, hash) and the sealers (clique_getSigners)
  readings         meter readings on chain per minute, over the {READING_WINDOW_MINUTES} whole minutes before
                   now (MeasurementLedger events)
  bands            the band in force now for every active flexibility and where it comes
                   from: ocm, dso, ocm_and_dso, or hardware_bounds (nothing published)
  open orders      both sides of the current and the next market slot, and of the first
                   slot whose gate is still open when that is later (members trade there)
  settled          the last settled slot (looked for over the last {SETTLED_LOOKBACK_SLOTS} final slots)
  band violations  per flexibility: settled slots it left its band in, kWh outside
                   (Settlement's running totals), and the BandViolation events of the
                   settlements of the last {RECENT_VIOLATIONS_MINUTES} minutes
  gateway queues   readings accepted but not yet on chain, and dead letters, of every
                   gateway queue in DATA_DIR (read only: a running gateway is not disturbed)
Times are UTC. Exit status 2 when the node cannot be reached or DATA_DIR holds no
deployment.

examples:
  lec status
  lec status --data-dir /srv/lec --rpc-url http://127.0.0.1:8600
  lec status --json | jq .head.age_s
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status",
        help="the state of a running community node: head, readings, bands, orders, settlement",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rpc-url", default="http://127.0.0.1:8545", help="JSON-RPC endpoint of the chain")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".lec") / "community",
        help="deployment.json and the gateway queues (default: .lec/community)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contracts.client import ChainError

    community = connect(args.data_dir, args.rpc_url)
    try:
        status = collect_status(community, args.data_dir, time.time())
    except (ChainError, OSError) as error:  # requests' errors are OSErrors
        raise CliError(f"the node at {args.rpc_url} stopped answering: {error}") from None
    status["rpc_url"] = args.rpc_url
    print(json.dumps(status, indent=2) if args.json else render_text(status))
    return 0


def connect(data_dir: Path, rpc_url: str):
    """The community of ``data_dir``'s deployment on the node at ``rpc_url``; ``CliError``
    (exit status 2) when there is no deployment or no node answers."""
    from contracts.build import CompileError, build_contracts
    from contracts.client import ChainClient, ChainError
    from contracts.community import Community
    from contracts.deploy import DEPLOYMENT_FILE, Deployment

    try:
        deployment = Deployment.load(data_dir)
    except (ValueError, KeyError, TypeError) as error:
        raise CliError(f"{data_dir / DEPLOYMENT_FILE} is damaged: {error}") from None
    if deployment is None:
        raise CliError(
            f"no community deployment recorded in {data_dir} (no {DEPLOYMENT_FILE}): give the data "
            "directory of lec up with --data-dir"
        )
    try:
        artifacts = build_contracts().artifacts
    except CompileError as error:
        raise CliError(str(error), exit_code=1) from None
    try:
        client = ChainClient.connect(rpc_url, artifacts)
        chain_id = client.chain_id
    except (ChainError, OSError) as error:
        raise CliError(f"cannot reach the node: {error}") from None
    if chain_id != deployment.chain_id:
        raise CliError(f"{rpc_url} serves chain {chain_id}, not {deployment.chain_id} (the deployment's)")
    return Community(client, deployment)


# ---------------------------------------------------------------------- collecting


def collect_status(community, data_dir: Path, now: float) -> dict[str, Any]:
    """Everything ``lec status`` shows, at Unix time ``now``, as JSON-ready values."""
    client, config = community.client, community.deployment.config
    head = client.w3.eth.get_block("latest")
    return {
        "now": int(now),
        "community": {
            "name": config.name,
            "chain_id": community.deployment.chain_id,
            "slot_minutes": community.slot_minutes,
            "meters": len(community.registry.meter_ids()),
            "contracts": dict(community.deployment.addresses),
        },
        "head": {
            "number": head["number"],
            "hash": "0x" + bytes(head["hash"]).hex(),
            "timestamp": head["timestamp"],
            "age_s": max(0, int(now - head["timestamp"])),
        },
        "sealers": sealers(client),
        "readings_per_minute": readings_per_minute(community, now),
        "bands": bands_in_force(community, now),
        "open_orders": open_orders(community, now),
        "last_settled_slot": last_settled_slot(community, now),
        "band_violations": band_violations(community, now),
        "gateway_queues": gateway_queues(data_dir),
    }


def sealers(client) -> list[str] | None:
    """The chain's signers (``clique_getSigners``); None when the node is no Clique node."""
    from eth_utils import to_checksum_address

    try:
        answer = client.w3.provider.make_request("clique_getSigners", [])
    except Exception:  # a node without the method may raise instead of answering an error
        return None
    result = answer.get("result") if isinstance(answer, dict) else None
    return [to_checksum_address(address) for address in result] if isinstance(result, list) else None


def readings_per_minute(community, now: float, minutes: int = READING_WINDOW_MINUTES) -> list[dict]:
    """Readings on chain for each of the ``minutes`` whole minutes before ``now``, oldest first."""
    from contracts.clock import minute_of, minute_start

    last = minute_of(now) - 1
    counts = dict.fromkeys(range(last - minutes + 1, last + 1), 0)
    # a reading is recorded no earlier than its minute (the ledger refuses the future)
    first_block = first_block_at(community.client, minute_start(min(counts)))
    for recorded in community.ledger.follow_readings(first_block).poll().items:
        minute = recorded.reading.minute
        if minute in counts:
            counts[minute] += 1
    return [{"minute": minute, "time": minute_start(minute), "readings": n} for minute, n in counts.items()]


def first_block_at(client, timestamp: int) -> int:
    """The first block at or after ``timestamp`` (the head when there is none)."""
    low, high = 0, client.head_block()
    while low < high:
        middle = (low + high) // 2
        if client.w3.eth.get_block(middle)["timestamp"] < timestamp:
            low = middle + 1
        else:
            high = middle
    return low


def bands_in_force(community, now: float) -> list[dict]:
    """The band in force at ``now`` of every active flexibility."""
    registry, limits = community.registry, community.limits
    bands = []
    for flex_id in registry.flexibility_ids():
        flex = registry.flexibility(flex_id)
        if not flex.active:
            continue
        band = limits.band_at(flex_id, now)
        bands.append(
            {
                "flexibility": flex_id,
                "kind": flex.kind.name.lower(),
                "p_min_kw": band.p_min_kw,
                "p_max_kw": band.p_max_kw,
                "source": band.source.name.lower(),
                "hardware_kw": [flex.p_low_kw, flex.p_high_kw],
            }
        )
    return bands


def open_orders(community, now: float) -> list[dict]:
    """The open orders (buys then sells, best first) of the current slot, the next one and
    the first slot whose gate is still open, if that is later (where members trade now)."""
    from contracts.market import Side

    market, registry, clock = community.market, community.registry, community.clock
    current = clock.slot_of(now)
    first_open = current
    while now >= market.gate_closure_time(first_open):
        first_open += 1
    names: dict[str, str] = {}
    slots = []
    for slot, which in ((current, "current"), (current + 1, "next"), (first_open, "trading")):
        if slot in (entry["slot"] for entry in slots):
            continue
        gate = market.gate_closure_time(slot)
        orders = []
        for side in (Side.BUY, Side.SELL):
            for order in market.open_orders(slot, side):
                if order.owner not in names:
                    names[order.owner] = registry.member_name(order.owner)
                orders.append(
                    {
                        "side": side.name.lower(),
                        "order_id": order.order_id,
                        "member": names[order.owner],
                        "owner": order.owner,
                        "asset": order.asset_id,
                        "asset_kind": order.asset_kind.name.lower(),
                        "energy_kwh": order.energy_kwh,
                        "remaining_kwh": order.remaining_kwh,
                        "limit_price": f"{order.limit_price.normalize():f}",
                        "time_in_force": order.time_in_force.name.lower(),
                    }
                )
        slots.append(
            {
                "slot": slot,
                "which": which,
                "start": clock.start(slot),
                "end": clock.end(slot),
                "gate_closure": gate,
                "gate_open": now < gate,
                "orders": orders,
            }
        )
    return slots


def last_settled_slot(community, now: float, lookback: int = SETTLED_LOOKBACK_SLOTS) -> dict | None:
    """The newest settled slot among the ``lookback`` newest final slots: the market operator
    settles every member of a slot at once, so the oldest current member tells (one
    ``isSettled`` view per slot)."""
    from contracts.registry import Role

    registry, settlement, clock = community.registry, community.settlement, community.clock
    oldest = next(
        (account for account in registry.members() if registry.has_role(Role.MEMBER, account)), None
    )
    if oldest is None:
        return None
    current = clock.slot_of(now)
    data_delay = settlement.final_time(current) - clock.end(current)  # the same for every slot
    newest_final = clock.slot_of(now - data_delay) - 1
    for slot in range(newest_final, max(newest_final - lookback, -1), -1):
        if settlement.is_settled(oldest, slot):
            return {"slot": slot, "start": clock.start(slot), "end": clock.end(slot)}
    return None


def band_violations(community, now: float, minutes: int = RECENT_VIOLATIONS_MINUTES) -> dict[str, list]:
    """``totals``: per flexibility, the settled slots in which it left its band and the kWh
    outside (Settlement's running totals); ``recent``: the ``BandViolation`` events of the
    settlements sent in the last ``minutes``."""
    from contracts.settlement import settlement_records

    settlement = community.settlement
    totals = []
    for flex_id in community.registry.flexibility_ids():
        count, outside_kwh = settlement.violations(flex_id)
        totals.append({"flexibility": flex_id, "slots": count, "outside_kwh": outside_kwh})
    first_block = first_block_at(community.client, int(now) - minutes * 60)
    _, violations = settlement_records(settlement.follow_settlements(first_block).poll().items)
    recent = [
        {
            "flexibility": violation.flex_id,
            "slot": violation.slot,
            "owner": violation.owner,
            "outside_kwh": violation.outside_kwh,
            "metered_kwh": violation.metered_kwh,
            "band_kw": [violation.p_min_kw, violation.p_max_kw],
        }
        for violation in violations
    ]
    return {"totals": totals, "recent": recent}


def gateway_queues(data_dir: Path) -> list[dict]:
    """The backlog of every gateway queue in ``data_dir`` (``*/queue.sqlite``), opened read
    only: the gateway that owns it may be running."""
    queues = []
    for path in sorted(data_dir.glob("*/queue.sqlite")):
        entry: dict[str, Any] = {"path": str(path)}
        try:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
                queued, oldest = db.execute("SELECT count(*), min(time) FROM queue").fetchone()
                dead = db.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
        except sqlite3.Error as error:
            entry["error"] = str(error)
        else:
            entry.update(queued=queued, oldest_reading=oldest, dead_letters=dead)
        queues.append(entry)
    return queues


# ----------------------------------------------------------------------- rendering


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def utc(seconds: float, date: bool = False) -> str:
    return time.strftime("%Y-%m-%d %H:%M" if date else "%H:%M", time.gmtime(seconds))


def render_text(status: dict[str, Any]) -> str:
    """``status`` for people."""
    community, head = status["community"], status["head"]
    lines = [
        f"community {community['name']!r} on chain {community['chain_id']} at {status.get('rpc_url', '?')}, "
        f"{community['slot_minutes']}-minute slots, {utc(status['now'], date=True)} UTC",
        f"head: block {head['number']}, {head['age_s']} s ago ({utc(head['timestamp'])}), {head['hash']}",
    ]
    signers = status["sealers"]
    lines.append(
        f"sealers ({len(signers)}): {', '.join(signers)}"
        if signers is not None
        else "sealers: not a Clique node"
    )
    readings = status["readings_per_minute"]
    meters = plural(community["meters"], "meter")
    lines.append(f"readings per minute on chain, last {len(readings)} minutes ({meters} registered):")
    lines.append("  " + "  ".join(f"{utc(entry['time'])} {entry['readings']}" for entry in readings))
    lines.append(_bands_text(status["bands"], status["now"]))
    lines.extend(_orders_text(status["open_orders"]))
    settled = status["last_settled_slot"]
    lines.append(
        f"last settled slot: {settled['slot']} ({utc(settled['start'], date=True)}-{utc(settled['end'])})"
        if settled
        else f"last settled slot: none in the last {SETTLED_LOOKBACK_SLOTS} final slots"
    )
    lines.extend(_violations_text(status["band_violations"]))
    lines.extend(_queues_text(status["gateway_queues"]))
    return "\n".join(lines)


def _bands_text(bands: list[dict], now: float) -> str:
    if not bands:
        return "bands: no flexibility registered"
    rows = [f"bands in force now ({utc(now)}):"]
    for band in bands:
        limits = f"[{band['p_min_kw']:9.3f}, {band['p_max_kw']:9.3f}] kW"
        rows.append(f"  {band['flexibility']:<8} {band['kind']:<10} {limits}  {band['source']}")
    return "\n".join(rows)


def _orders_text(slots: list[dict]) -> list[str]:
    rows = []
    for entry in slots:
        orders = entry["orders"]
        gate = f"gate open until {utc(entry['gate_closure'])}" if entry["gate_open"] else "gate closed"
        when = f"{entry['which']}, {utc(entry['start'])}-{utc(entry['end'])}, {gate}"
        title = f"open orders, slot {entry['slot']} ({when})"
        buys = sum(order["side"] == "buy" for order in orders)
        rows.append(f"{title}: {buys} buy, {len(orders) - buys} sell" if orders else f"{title}: none")
        for side in ("buy", "sell"):
            shown = [order for order in orders if order["side"] == side]
            for order in shown[:ORDERS_SHOWN]:
                left = f"{order['remaining_kwh']:8.3f} of {order['energy_kwh']:.3f} kWh"
                who = f"#{order['order_id']:<6} {order['member']:<12} {order['asset']:<8}"
                rows.append(f"  {side:<4} {who} {left} at {order['limit_price']}")
            if len(shown) > ORDERS_SHOWN:
                rows.append(f"  ... {len(shown) - ORDERS_SHOWN} more {side} orders (--json shows all)")
    return rows


def _violations_text(violations: dict[str, list]) -> list[str]:
    totals = [
        f"{v['flexibility']} {plural(v['slots'], 'slot')}, {v['outside_kwh']:.3f} kWh outside"
        for v in violations["totals"]
        if v["slots"]
    ]
    rows = [f"band violations (all settled slots): {', '.join(totals) or 'none'}"]
    if violations["recent"]:
        rows.append(f"  settled in the last {RECENT_VIOLATIONS_MINUTES} minutes:")
    for v in violations["recent"]:
        band = f"[{v['band_kw'][0]:g}, {v['band_kw'][1]:g}] kW"
        rows.append(f"    slot {v['slot']} {v['flexibility']}: {v['outside_kwh']:.3f} kWh outside {band}")
    return rows


def _queues_text(queues: list[dict]) -> list[str]:
    if not queues:
        return ["gateway queues: none in the data directory"]
    rows = ["gateway queues:"]
    for queue in queues:
        if "error" in queue:
            rows.append(f"  {queue['path']}: unreadable ({queue['error']})")
            continue
        oldest = (
            f", oldest reading {utc(queue['oldest_reading'])}" if queue["oldest_reading"] is not None else ""
        )
        queued, dead = plural(queue["queued"], "reading"), plural(queue["dead_letters"], "dead letter")
        rows.append(f"  {queue['path']}: {queued} queued{oldest}, {dead}")
    return rows
