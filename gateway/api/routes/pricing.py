"""The DSO's price instruments over HTTP: the dynamic tariffs per bus and hour and the
flexibility market's requirements with their bids (public: what members pay and what the DSO
asks for are no secret), the DSO's postings and the aggregators' bids, each prepared as a
transaction for the caller's own key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from contracts import clock
from contracts.client import ContractRevert
from contracts.flexibility import Bid, PlacedBid, PostedRequirement, Requirement, escrow_units
from contracts.registry import Role
from contracts.tariff import Tariff, hour_of, hour_start
from contracts.units import units_to_tokens
from gateway.api import transactions
from gateway.api.auth import role_holder
from gateway.api.context import ApiContext
from gateway.api.models import (
    MAX_HOUR,
    FlexibilityBidInfo,
    FlexibilityBidInput,
    Prepared,
    RequirementInfo,
    RequirementInput,
    TariffInfo,
    TariffsInput,
)
from gateway.api.problems import Problem
from gateway.api.routes.common import tokens

MAX_TARIFF_HOURS = 7 * 24
POSTING_GAS = 400_000  # postRequirement at its largest (8 load points, 8 payback hours): 268 k
AUTH_RESPONSES = {401: {"description": "no or a bad token"}, 403: {"description": "not the needed role"}}


def router(context: ApiContext) -> APIRouter:
    community = context.community
    dso = role_holder(context.sessions, context.roles, Role.DSO)
    aggregator = role_holder(context.sessions, context.roles, Role.AGGREGATOR)
    api = APIRouter(tags=["Tariffs and flexibility market"])

    @api.get("/tariffs", response_model=list[TariffInfo], summary="Dynamic tariffs per bus and hour")
    def tariffs(
        bus: Annotated[list[int] | None, Query(description="only these buses (repeat it)")] = None,
        from_hour: int | None = Query(default=None, ge=0, le=MAX_HOUR, description="Unix hour; now"),
        to_hour: int | None = Query(default=None, ge=0, le=MAX_HOUR, description="exclusive; +48 h"),
    ) -> list[TariffInfo]:
        first = hour_of(clock.now()) if from_hour is None else from_hour
        last = first + 48 if to_hour is None else to_hour
        if not first < last <= first + MAX_TARIFF_HOURS:
            raise Problem(
                422,
                "Invalid request",
                f"to_hour: must be after from_hour, at most {MAX_TARIFF_HOURS} h later",
            )
        wanted = None if bus is None else set(bus)
        posted = context.index.refresh().tariffs
        return [
            TariffInfo(bus=b, hour=h, start=hour_start(h), price=tokens(price))
            for (b, h), price in sorted(posted.items(), key=lambda item: (item[0][1], item[0][0]))
            if first <= h < last and (wanted is None or b in wanted)
        ]

    @api.post(
        "/dso/tariffs/prepare",
        response_model=Prepared,
        summary="Tariffs (at most 96 per transaction), as a transaction for the DSO",
        responses=AUTH_RESPONSES,
    )
    def prepare_tariffs(body: TariffsInput, address: str = Depends(dso)) -> Prepared:
        entries = [Tariff(t.bus, t.hour, t.price) for t in body.tariffs]
        call = community.tariff.post_tariffs_call(entries)
        hours = sorted({t.hour for t in entries})
        summary = f"post {len(entries)} tariffs for hours {hours[0]}..{hours[-1]}"
        return transactions.prepared(community.client, [call], address, summary)

    @api.post(
        "/dso/flexibility/requirements/prepare",
        response_model=Prepared,
        summary="A flexibility requirement: the escrow's approval and the posting, for the DSO",
        responses=AUTH_RESPONSES,
    )
    def prepare_requirement(body: RequirementInput, address: str = Depends(dso)) -> Prepared:
        requirement = Requirement(
            hour=body.hour,
            load_points=tuple(body.load_points),
            min_kw=body.min_kw,
            payback_hours=frozenset(body.payback_hours),
            payback_cap=body.payback_cap,
            price_cap=body.price_cap,
            bid_deadline=body.bid_deadline,
        )
        market = community.flexibility_market
        escrow = units_to_tokens(escrow_units(body.min_kw, body.price_cap))
        posting = market.post_requirement_call(requirement)
        try:  # the contract checks the requirement before it takes the escrow: a refusal shows now
            community.client.unsigned_transaction(posting, address)
        except ContractRevert as error:
            if not error.error.startswith("ERC20Insufficient"):  # the approval comes first
                raise
        calls = [community.token.approve_call(market.address, escrow), posting]
        summary = f"require {body.min_kw:g} kW at hour {body.hour}, escrowing {tokens(escrow)} tokens"
        return transactions.prepared(community.client, calls, address, summary, later_gas=POSTING_GAS)

    @api.get(
        "/flexibility/requirements",
        response_model=list[RequirementInfo],
        summary="The DSO's flexibility requirements, newest first, with their bids and clearing",
    )
    def requirements(limit: int = Query(default=20, ge=1, le=100)) -> list[RequirementInfo]:
        market = community.flexibility_market
        newest = market.requirement_count()
        answer = []
        for i in range(newest, max(0, newest - limit), -1):
            posted = market.requirement(i)
            answer.append(_requirement_info(posted, [market.bid(b) for b in posted.bid_ids]))
        return answer

    @api.get(
        "/aggregator/bids",
        response_model=list[FlexibilityBidInfo],
        summary="The caller's bids among the newest requirements",
        responses=AUTH_RESPONSES,
    )
    def my_bids(
        address: str = Depends(aggregator), limit: int = Query(default=20, ge=1, le=100)
    ) -> list[FlexibilityBidInfo]:
        market = community.flexibility_market
        newest = market.requirement_count()
        mine = []
        for i in range(newest, max(0, newest - limit), -1):
            for bid_id in market.requirement(i).bid_ids:
                placed = market.bid(bid_id)
                if placed.aggregator.lower() == address.lower():
                    mine.append(_bid_info(placed))
        return mine

    @api.post(
        "/aggregator/bids/prepare",
        response_model=Prepared,
        summary="A bid on a requirement, as a transaction for the aggregator",
        responses={**AUTH_RESPONSES, 404: {"description": "no such requirement"}},
    )
    def prepare_bid(body: FlexibilityBidInput, address: str = Depends(aggregator)) -> Prepared:
        if body.requirement_id > community.flexibility_market.requirement_count():
            raise Problem(404, "Not found", f"requirement_id: no requirement {body.requirement_id}")
        bid = Bid(
            requirement_id=body.requirement_id,
            load_point=body.load_point,
            price=body.price,
            kw=body.kw,
            payback_hour=body.payback_hour,
            payback_kw=body.payback_kw,
            meters=tuple(body.meters),
        )
        call = community.flexibility_market.place_bid_call(bid)
        summary = f"bid {body.kw:g} kW at {body.price} per kW on requirement {body.requirement_id}"
        return transactions.prepared(community.client, [call], address, summary)

    return api


def _requirement_info(posted: PostedRequirement, bids: list[PlacedBid]) -> RequirementInfo:
    r = posted.requirement
    return RequirementInfo(
        requirement_id=posted.requirement_id,
        dso=posted.dso,
        hour=r.hour,
        start=hour_start(r.hour),
        load_points=list(r.load_points),
        min_kw=r.min_kw,
        payback_hours=sorted(r.payback_hours),
        payback_cap=r.payback_cap,
        price_cap=tokens(r.price_cap),
        bid_deadline=r.bid_deadline,
        escrow=tokens(posted.escrow),
        paid=tokens(posted.paid),
        cleared=posted.cleared,
        refunded=posted.refunded,
        bids=[_bid_info(b) for b in bids],
    )


def _bid_info(placed: PlacedBid) -> FlexibilityBidInfo:
    b = placed.bid
    return FlexibilityBidInfo(
        bid_id=placed.bid_id,
        aggregator=placed.aggregator,
        load_point=b.load_point,
        price=tokens(b.price),
        kw=b.kw,
        payback_hour=b.payback_hour,
        payback_kw=b.payback_kw,
        meters=list(b.meters),
        fraction=placed.fraction,
        cleared_kw=placed.cleared_kw,
        settled=placed.settled,
    )
