"""A member's own view and transactions (Bearer token from SIWE; MEMBER role on chain).

Reads are filtered to the signed-in address; writes answer unsigned transactions that
only the member's wallet can sign, and ``POST /v1/tx`` relays the signed ones."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from contracts import clock
from contracts.market import AssetKind, OrderRequest, OrderStatus, Side, TimeInForce
from contracts.registry import Role
from gateway.api import transactions
from gateway.api.auth import role_holder
from gateway.api.context import ApiContext
from gateway.api.models import (
    MAX_TIME,
    Balance,
    BandsAnswer,
    Me,
    MeterInfo,
    OrderInfo,
    OrderInput,
    Prepared,
    RawTransaction,
    ReadingInfo,
    Relayed,
    Statement,
    TokensInput,
    TradeInfo,
    TransactionStatus,
    Violation,
)
from gateway.api.problems import Problem
from gateway.api.routes.common import (
    flexibility_bands,
    flexibility_info,
    limited,
    order_info,
    statement,
    tokens,
    trade_info,
    violation,
    window,
)

TIME_IN_FORCE = {
    "good_till_cancelled": TimeInForce.GOOD_TILL_CANCELLED,
    "immediate_or_cancel": TimeInForce.IMMEDIATE_OR_CANCEL,
    "fill_or_kill": TimeInForce.FILL_OR_KILL,
    "all_or_none": TimeInForce.ALL_OR_NONE,
}
AUTH_RESPONSES = {401: {"description": "no or a bad token"}, 403: {"description": "not a member"}}


def router(context: ApiContext) -> APIRouter:
    community = context.community

    member = role_holder(context.sessions, context.roles, Role.MEMBER)

    api = APIRouter(tags=["member"], responses=AUTH_RESPONSES)

    @api.get("/me", response_model=Me, summary="Who I am: roles, meters, flexibilities")
    def me(address: str = Depends(member)) -> Me:
        registry = community.registry
        meters = [registry.meter(meter_id) for meter_id in registry.meters_of(address)]
        flexibilities = [registry.flexibility(flex_id) for flex_id in registry.flexibilities_of(address)]
        return Me(
            address=address,
            name=registry.member_name(address),
            roles=sorted(role.name for role in context.roles.roles_of(address)),
            meters=[MeterInfo(meter_id=m.meter_id, bus=m.bus, active=m.active) for m in meters],
            flexibilities=[flexibility_info(context, flex) for flex in flexibilities],
        )

    @api.get(
        "/me/balance", response_model=Balance, summary="Wallet, deposit (free and locked), debt and credit"
    )
    def balance(address: str = Depends(member)) -> Balance:
        deposit = community.settlement.deposit_of(address)
        return Balance(
            wallet_tokens=tokens(community.token.balance(address)),
            deposit_free=tokens(deposit.free),
            deposit_locked=tokens(deposit.locked),
            debt=tokens(community.settlement.debt_of(address)),
            credit=tokens(community.settlement.credit_of(address)),
        )

    @api.get(
        "/me/bands", response_model=BandsAnswer, summary="My flexibilities' bands and my traded schedule"
    )
    def my_bands(
        address: str = Depends(member),
        from_time: int | None = Query(default=None, ge=0, le=MAX_TIME, description="Unix s; default 2 h ago"),
        to_time: int | None = Query(default=None, ge=0, le=MAX_TIME, description="Unix s; default in 1 h"),
    ) -> BandsAnswer:
        start, end = window(from_time, to_time)
        flex_ids = community.registry.flexibilities_of(address)
        return BandsAnswer(
            from_time=start,
            to_time=end,
            flexibilities=flexibility_bands(context, flex_ids, start, end, with_schedule=True),
        )

    @api.get("/me/orders", response_model=list[OrderInfo], summary="My orders, newest last")
    def my_orders(
        address: str = Depends(member),
        open_only: bool = Query(default=False, description="only orders still open"),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[OrderInfo]:
        book = context.index.refresh().book
        mine = [
            order
            for order in sorted(book.orders.values(), key=lambda o: o.order_id)
            if order.owner == address and (not open_only or order.status == OrderStatus.OPEN)
        ]
        return [order_info(order) for order in limited(mine, limit)]

    @api.get("/me/trades", response_model=list[TradeInfo], summary="Trades I bought or sold in, newest last")
    def my_trades(
        address: str = Depends(member), limit: int = Query(default=100, ge=1, le=1000)
    ) -> list[TradeInfo]:
        book = context.index.refresh().book
        mine = [
            trade
            for trade in sorted(book.trades.values(), key=lambda t: t.trade_id)
            if address in (book.orders[trade.buy_order].owner, book.orders[trade.sell_order].owner)
        ]
        return [trade_info(book, trade) for trade in limited(mine, limit)]

    @api.get("/me/readings", response_model=list[ReadingInfo], summary="My meters' readings, oldest first")
    def my_readings(
        address: str = Depends(member),
        meter_id: str | None = Query(
            default=None, max_length=31, description="one of my meters; default: all"
        ),
        since: int | None = Query(default=None, ge=0, le=MAX_TIME, description="Unix s; default 1 h ago"),
        limit: int = Query(default=1000, ge=1, le=10_000),
    ) -> list[ReadingInfo]:
        mine = community.registry.meters_of(address)
        if meter_id is not None and meter_id not in mine:
            raise Problem(404, "Not found", f"meter_id: {meter_id} is not one of your meters")
        chosen = [meter_id] if meter_id else mine
        oldest = since if since is not None else int(clock.now()) - 3600
        views = context.index.refresh()
        found = sorted(
            (r for m in chosen for r in views.readings.get(m, ()) if r.time >= oldest),
            key=lambda r: (r.time, r.meter_id),
        )
        return [ReadingInfo.of(reading) for reading in limited(found, limit)]

    @api.get(
        "/me/statements", response_model=list[Statement], summary="My settlement statements, newest last"
    )
    def my_statements(
        address: str = Depends(member), limit: int = Query(default=100, ge=1, le=1000)
    ) -> list[Statement]:
        records = [r for r in context.index.refresh().statements if r.member == address]
        return [statement(record) for record in limited(records, limit)]

    @api.get("/me/violations", response_model=list[Violation], summary="Band violations of my flexibilities")
    def my_violations(
        address: str = Depends(member), limit: int = Query(default=100, ge=1, le=1000)
    ) -> list[Violation]:
        records = [r for r in context.index.refresh().violations if r.owner == address]
        return [violation(record) for record in limited(records, limit)]

    # ----------------------------------------------------------- transactions

    @api.post(
        "/me/orders/prepare", response_model=Prepared, summary="An order, as a transaction for my wallet"
    )
    def prepare_order(body: OrderInput, address: str = Depends(member)) -> Prepared:
        side = Side.BUY if body.side == "buy" else Side.SELL
        kind = AssetKind.METER if body.asset_kind == "meter" else AssetKind.FLEXIBILITY
        request = OrderRequest(
            slot=body.slot,
            side=side,
            asset_id=body.asset_id,
            energy_kwh=body.energy_kwh,
            limit_price=body.limit_price,
            asset_kind=kind,
            time_in_force=TIME_IN_FORCE[body.time_in_force],
        )
        call = community.market.place_order_call(request)
        summary = (
            f"{body.side} {body.energy_kwh:g} kWh for slot {body.slot} "
            f"(from {clock.minute_start(community.clock.first_minute(body.slot))}) "
            f"at most {body.limit_price} tokens/kWh, {body.asset_kind} {body.asset_id}"
        )
        return transactions.prepared(community.client, [call], address, summary)

    @api.post(
        "/me/orders/{order_id}/cancel/prepare",
        response_model=Prepared,
        summary="Cancelling my order, as a transaction",
    )
    def prepare_cancel(order_id: int = Path(ge=1, le=2**32 - 1), address: str = Depends(member)) -> Prepared:
        call = community.market.cancel_order_call(order_id)
        return transactions.prepared(community.client, [call], address, f"cancel order {order_id}")

    @api.post(
        "/me/deposit/prepare",
        response_model=Prepared,
        summary="Moving tokens into my deposit: an approval, then the deposit (two transactions)",
    )
    def prepare_deposit(body: TokensInput, address: str = Depends(member)) -> Prepared:
        calls = [
            community.token.approve_call(community.settlement.address, body.tokens),
            community.settlement.deposit_call(body.tokens),
        ]
        return transactions.prepared(community.client, calls, address, f"deposit {body.tokens} tokens")

    @api.post(
        "/me/withdraw/prepare", response_model=Prepared, summary="Withdrawing free tokens from my deposit"
    )
    def prepare_withdraw(body: TokensInput, address: str = Depends(member)) -> Prepared:
        call = community.settlement.withdraw_call(body.tokens)
        return transactions.prepared(community.client, [call], address, f"withdraw {body.tokens} tokens")

    return api


def relay_router(context: ApiContext) -> APIRouter:
    """``/tx``: relaying signed transactions to the community's contracts, and their status."""
    api = APIRouter(tags=["transactions"])
    community = context.community
    allowed = {address for address in community.deployment.addresses.values()}

    @api.post(
        "/tx",
        response_model=Relayed,
        status_code=202,
        summary="Relay a transaction signed by its sender to one of the community's contracts",
    )
    def relay(body: RawTransaction) -> Relayed:
        return Relayed(hash=transactions.relay(community.client, body.raw, allowed))

    @api.get("/tx/{tx_hash}", response_model=TransactionStatus, summary="Pending, mined or failed (and why)")
    def tx_status(tx_hash: str = Path(pattern=r"^0x[0-9a-fA-F]{64}$")) -> TransactionStatus:
        return transactions.status(community.client, tx_hash)

    return api
