"""The market operator's view (MARKET_OPERATOR role): slots with their gate closure and
state, the clearing mode and the standing prices."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from contracts import clock, units
from contracts.market import Side
from contracts.registry import Role
from gateway.api.auth import role_holder
from gateway.api.context import ApiContext
from gateway.api.models import MarketSettings, SlotInfo, Terms
from gateway.api.routes.common import price

AUTH_RESPONSES = {401: {"description": "no or a bad token"}, 403: {"description": "not the market operator"}}


def router(context: ApiContext) -> APIRouter:
    community = context.community

    operator = role_holder(context.sessions, context.roles, Role.MARKET_OPERATOR)

    api = APIRouter(tags=["market operator"], responses=AUTH_RESPONSES)

    @api.get(
        "/operator/slots", response_model=list[SlotInfo], summary="Recent and coming slots and their state"
    )
    def slots(
        address: str = Depends(operator),
        back: int = Query(default=4, ge=0, le=96, description="slots before the current one"),
        ahead: int = Query(default=4, ge=0, le=96, description="slots after the current one"),
    ) -> list[SlotInfo]:
        current = community.clock.slot_of(clock.now())
        book = context.index.refresh().book
        answer = []
        for slot in range(current - back, current + ahead + 1):
            slot_trades = book.slot_trades(slot)
            auction = book.auction_prices.get(slot)
            answer.append(
                SlotInfo(
                    slot=slot,
                    start=community.clock.start(slot),
                    end=community.clock.end(slot),
                    gate_closure=community.market.gate_closure_time(slot),
                    open_bids=len(book.open_orders(slot, Side.BUY)),
                    open_asks=len(book.open_orders(slot, Side.SELL)),
                    trades=len(slot_trades),
                    energy_kwh=units.wh_to_kwh(sum(t.quantity_wh for t in slot_trades)),
                    finalized=community.market.finalized(slot),
                    auction_price=price(auction) if auction is not None else None,
                )
            )
        return answer

    @api.get(
        "/operator/market",
        response_model=MarketSettings,
        summary="Clearing mode, pause, gate closure, prices",
    )
    def market(address: str = Depends(operator)) -> MarketSettings:
        current = community.clock.slot_of(clock.now())
        terms = community.settlement.terms_at(current)
        return MarketSettings(
            clearing_mode=community.market.clearing_mode().name.lower(),
            paused=community.market.paused(),
            slot_minutes=community.slot_minutes,
            current_slot=current,
            gate_closure_next_slot=community.market.gate_closure_time(current + 1),
            terms=Terms(
                import_price=float(terms.import_price),
                export_price=float(terms.export_price),
                penalty_price=float(terms.penalty_price),
            ),
        )

    return api
