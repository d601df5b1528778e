"""Public reads: the community, its feeder, the order book, trades and prices, bands,
settlement results. Everything here is on chain already; no sign-in needed."""

from __future__ import annotations

from fastapi import APIRouter, Query

from contracts import clock, units
from contracts.market import Side
from gateway.api.context import ApiContext
from gateway.api.models import (
    MAX_SLOT,
    MAX_TIME,
    BandsAnswer,
    CommunityInfo,
    FeederBranchInfo,
    FeederBusInfo,
    FeederInfo,
    FlexibilityInfo,
    OrderBook,
    PlacedFlexibility,
    PlacedMeter,
    SlotPrice,
    Statement,
    Terms,
    TradeInfo,
)
from gateway.api.problems import Problem
from gateway.api.routes.common import (
    MAX_SLOTS,
    book_entry,
    flexibility_bands,
    flexibility_info,
    limited,
    price,
    statement,
    trade_info,
    window,
)

FlexIds = Query(default=None, max_length=40, description="only these flexibilities (repeat the parameter)")


def router(context: ApiContext) -> APIRouter:
    api = APIRouter(tags=["public"])
    community = context.community

    @api.get(
        "/community", response_model=CommunityInfo, summary="The community: contracts, slot length, terms"
    )
    def community_info() -> CommunityInfo:
        client = community.client
        now = int(clock.now())
        slot = community.clock.slot_of(now)
        terms = community.settlement.terms_at(slot)
        return CommunityInfo(
            name=community.deployment.config.name,
            chain_id=client.chain_id,
            head=client.head_block(),
            now=now,
            slot_minutes=community.slot_minutes,
            current_slot=slot,
            gate_closure_lead_s=community.clock.start(slot + 1)
            - community.market.gate_closure_time(slot + 1),
            contracts=dict(community.deployment.addresses),
            members=len(community.registry.members()),
            terms=Terms(
                import_price=float(terms.import_price),
                export_price=float(terms.export_price),
                penalty_price=float(terms.penalty_price),
            ),
        )

    @api.get(
        "/feeder",
        response_model=FeederInfo,
        summary="The feeder for drawing: buses, lines, meters, flexibilities",
    )
    def feeder() -> FeederInfo:
        if context.feeder is None:
            raise Problem(404, "Not found", "this API was started without the feeder's network file")
        registry = community.registry
        meters = [registry.meter(meter_id) for meter_id in registry.meter_ids()]
        flexibilities = [registry.flexibility(flex_id) for flex_id in registry.flexibility_ids()]
        return FeederInfo(
            name=context.feeder.name,
            buses=[FeederBusInfo(**bus.__dict__) for bus in context.feeder.buses],
            branches=[FeederBranchInfo(**branch.__dict__) for branch in context.feeder.branches],
            meters=[PlacedMeter(meter_id=m.meter_id, bus=m.bus) for m in meters if m.active],
            flexibilities=[
                PlacedFlexibility(flex_id=f.flex_id, bus=f.bus, kind=f.kind.name.lower())
                for f in flexibilities
                if f.active
            ],
        )

    @api.get(
        "/flexibilities", response_model=list[FlexibilityInfo], summary="Every flexibility and its band now"
    )
    def flexibilities() -> list[FlexibilityInfo]:
        registry = community.registry
        return [
            flexibility_info(context, registry.flexibility(flex_id)) for flex_id in registry.flexibility_ids()
        ]

    @api.get("/bands", response_model=BandsAnswer, summary="Published bands per flexibility and minute")
    def bands(
        flex_id: list[str] | None = FlexIds,
        from_time: int | None = Query(default=None, ge=0, le=MAX_TIME, description="Unix s; default 2 h ago"),
        to_time: int | None = Query(default=None, ge=0, le=MAX_TIME, description="Unix s; default in 1 h"),
    ) -> BandsAnswer:
        start, end = window(from_time, to_time)
        known = community.registry.flexibility_ids()
        wanted = flex_id or known
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise Problem(404, "Not found", f"flex_id: no flexibility {', '.join(unknown)}")
        return BandsAnswer(
            from_time=start, to_time=end, flexibilities=flexibility_bands(context, wanted, start, end)
        )

    @api.get("/market/book", response_model=OrderBook, summary="Open orders of a delivery slot, best first")
    def order_book(
        slot: int | None = Query(default=None, ge=0, le=MAX_SLOT, description="default: the next slot"),
    ) -> OrderBook:
        if slot is None:
            slot = community.clock.slot_of(clock.now()) + 1
        book = context.index.refresh().book
        return OrderBook(
            slot=slot,
            start=community.clock.start(slot),
            gate_closure=community.market.gate_closure_time(slot),
            bids=[book_entry(order) for order in book.open_orders(slot, Side.BUY)],
            asks=[book_entry(order) for order in book.open_orders(slot, Side.SELL)],
        )

    @api.get("/market/trades", response_model=list[TradeInfo], summary="Trades, newest last")
    def trades(
        slot: int | None = Query(default=None, ge=0, le=MAX_SLOT, description="only this slot"),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[TradeInfo]:
        book = context.index.refresh().book
        chosen = (
            book.slot_trades(slot)
            if slot is not None
            else sorted(book.trades.values(), key=lambda t: t.trade_id)
        )
        return [trade_info(book, trade) for trade in limited(chosen, limit)]

    @api.get("/market/prices", response_model=list[SlotPrice], summary="Traded volume and prices per slot")
    def prices(
        from_slot: int | None = Query(default=None, ge=0, le=MAX_SLOT, description="default: 8 slots back"),
        to_slot: int | None = Query(default=None, ge=0, le=MAX_SLOT, description="default: 4 slots ahead"),
    ) -> list[SlotPrice]:
        current = community.clock.slot_of(clock.now())
        first = current - 8 if from_slot is None else from_slot
        last = current + 4 if to_slot is None else to_slot
        if last < first or last - first > MAX_SLOTS:
            raise Problem(422, "Invalid request", f"to_slot: must be from_slot..from_slot+{MAX_SLOTS}")
        book = context.index.refresh().book
        answer = []
        for slot in range(first, last + 1):
            slot_trades = book.slot_trades(slot)
            energy_wh = sum(t.quantity_wh for t in slot_trades)
            value = sum(t.quantity_wh * t.price for t in slot_trades)
            auction = book.auction_prices.get(slot)
            answer.append(
                SlotPrice(
                    slot=slot,
                    trades=len(slot_trades),
                    energy_kwh=units.wh_to_kwh(energy_wh),
                    vwap=price(value // energy_wh) if energy_wh else None,
                    last=price(slot_trades[-1].price) if slot_trades else None,
                    auction_price=price(auction) if auction is not None else None,
                )
            )
        return answer

    @api.get(
        "/settlements", response_model=list[Statement], summary="Settled members' statements, newest last"
    )
    def settlements(
        slot: int | None = Query(default=None, ge=0, le=MAX_SLOT),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[Statement]:
        records = context.index.refresh().statements
        chosen = [r for r in records if slot is None or r.slot == slot]
        return [statement(record) for record in limited(chosen, limit)]

    return api
