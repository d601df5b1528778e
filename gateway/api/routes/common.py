"""Conversions from the contracts' dataclasses to the API's models, and shared lookups."""

from __future__ import annotations

from decimal import Decimal

from contracts import clock, units
from contracts.market import AssetKind, Side
from contracts.orderbook import BookOrder, BookTrade, OrderBookView
from contracts.registry import Flexibility
from contracts.settlement import BandViolation, MemberSettlement
from gateway.api.context import ApiContext
from gateway.api.models import (
    BandNow,
    BandPoint,
    BookEntry,
    FlexibilityBands,
    FlexibilityInfo,
    OrderInfo,
    SchedulePoint,
    Statement,
    TariffLine,
    TradeInfo,
    Violation,
)
from gateway.api.problems import Problem

MAX_WINDOW_S = 2 * 24 * 3600  # a bands query spans at most two days
MAX_SLOTS = 200


def tokens(amount: Decimal) -> str:
    return format(amount.normalize(), "f") if amount else "0"


def price(units_per_kwh: int) -> float:
    return float(units.units_per_kwh_to_price(units_per_kwh))


def flexibility_info(context: ApiContext, flex: Flexibility, with_band: bool = True) -> FlexibilityInfo:
    band = None
    if with_band and flex.active:
        now = context.community.limits.band_at(flex.flex_id, int(clock.now()))
        band = BandNow(p_min_kw=now.p_min_kw, p_max_kw=now.p_max_kw, source=now.source.name.lower())
    return FlexibilityInfo(
        flex_id=flex.flex_id,
        owner=flex.owner,
        bus=flex.bus,
        kind=flex.kind.name.lower(),
        p_low_kw=flex.p_low_kw,
        p_high_kw=flex.p_high_kw,
        priority_group=flex.priority_group,
        meter_id=flex.meter_id,
        active=flex.active,
        band_now=band,
    )


def window(
    from_time: int | None, to_time: int | None, before_s: int = 2 * 3600, after_s: int = 3600
) -> tuple[int, int]:
    """A time window (minute-aligned) defaulting to ``before_s`` back and ``after_s`` ahead."""
    now = int(clock.now())
    start = clock.floor_to_minute(from_time if from_time is not None else now - before_s)
    end = clock.floor_to_minute(to_time if to_time is not None else now + after_s)
    if end <= start:
        raise Problem(422, "Invalid request", "to_time: must be after from_time")
    if end - start > MAX_WINDOW_S:
        raise Problem(
            422, "Invalid request", f"to_time: the window may span at most {MAX_WINDOW_S // 3600} hours"
        )
    return start, end


def band_points(bands: dict[int, tuple[float, float]], start: int, end: int) -> list[BandPoint]:
    """The published band of each minute in ``[start, end)`` that has one."""
    points = []
    for minute in range(clock.minute_of(start), clock.minute_of(end)):
        band = bands.get(minute)
        if band is not None:
            points.append(BandPoint(time=clock.minute_start(minute), p_min_kw=band[0], p_max_kw=band[1]))
    return points


def flexibility_bands(
    context: ApiContext, flex_ids: list[str], start: int, end: int, with_schedule: bool = False
) -> list[FlexibilityBands]:
    views = context.index.refresh()
    community = context.community
    answer = []
    for flex_id in flex_ids:
        schedule = []
        if with_schedule:
            slot_clock = community.clock
            first, last = slot_clock.slot_of(start), slot_clock.slot_of(end - 1)
            for slot in range(first, min(last, first + MAX_SLOTS) + 1):
                planned = community.market.schedule(flex_id, slot)
                if planned.matched_buy_kwh or planned.matched_sell_kwh:
                    hours = community.slot_minutes / 60
                    schedule.append(
                        SchedulePoint(
                            slot=slot,
                            start=slot_clock.start(slot),
                            end=slot_clock.end(slot),
                            matched_net_kwh=planned.matched_net_kwh,
                            avg_kw=planned.matched_net_kwh / hours,
                        )
                    )
        points = band_points(views.bands.get(flex_id, {}), start, end)
        answer.append(FlexibilityBands(flex_id=flex_id, points=points, schedule=schedule))
    return answer


def side_name(side: Side) -> str:
    return "buy" if side == Side.BUY else "sell"


def book_entry(order: BookOrder) -> BookEntry:
    return BookEntry(
        order_id=order.order_id,
        owner=order.owner,
        side=side_name(order.side),
        asset_id=order.asset_id,
        asset_kind="meter" if order.asset_kind == AssetKind.METER else "flexibility",
        price=price(order.limit_price),
        energy_kwh=units.wh_to_kwh(order.quantity_wh),
        remaining_kwh=units.wh_to_kwh(order.remaining_wh),
        status=order.status.name.lower(),
    )


def order_info(order: BookOrder) -> OrderInfo:
    return OrderInfo(
        **book_entry(order).model_dump(),
        slot=order.slot,
        close_reason=order.close_reason.name.lower() if order.close_reason is not None else None,
    )


def trade_info(book: OrderBookView, trade: BookTrade) -> TradeInfo:
    return TradeInfo(
        trade_id=trade.trade_id,
        slot=trade.slot,
        buy_order=trade.buy_order,
        sell_order=trade.sell_order,
        buyer=book.orders[trade.buy_order].owner,
        seller=book.orders[trade.sell_order].owner,
        energy_kwh=units.wh_to_kwh(trade.quantity_wh),
        curtailed_kwh=units.wh_to_kwh(trade.curtailed_wh),
        price=price(trade.price),
    )


def statement(record: MemberSettlement) -> Statement:
    return Statement(
        member=record.member,
        slot=record.slot,
        traded_kwh=record.traded_kwh,
        metered_kwh=record.metered_kwh,
        missing_minutes=record.missing_minutes,
        imbalance_kwh=record.imbalance_kwh,
        charge=tokens(record.charge),
        credit=tokens(record.credit),
        penalty=tokens(record.penalty),
        paid_to_treasury=tokens(record.paid_to_treasury),
        paid_by_treasury=tokens(record.paid_by_treasury),
        debt=tokens(record.debt),
        credit_owed=tokens(record.credit_owed),
        tariff=tokens(record.tariff),
        paid_for_tariff=tokens(record.paid_for_tariff),
        tariff_debt=tokens(record.tariff_debt),
        tariff_lines=[
            TariffLine(
                meter_id=line.meter_id,
                bus=line.bus,
                consumed_kwh=line.consumed_kwh,
                price=tokens(line.price),
                charge=tokens(line.charge),
            )
            for line in record.tariff_lines
        ],
    )


def violation(record: BandViolation) -> Violation:
    return Violation(**record.__dict__)


def limited(items: list, limit: int) -> list:
    """The newest ``limit`` items (the lists are in chain order)."""
    return items[-limit:] if limit else []
