"""Every state-changing function of EnergyMarket and Settlement names who may call it and
refuses everybody else: roles, asset and order owners, the bound settlement and the market
contracts, and the functions open to anyone (each acts only on the caller's own deposit or
on rules that do not depend on who calls)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from contracts import units
from contracts.market import AssetKind, Side
from contracts.registry import Role
from tests.market_setup import (
    EXPORT_PRICE,
    IMPORT_PRICE,
    MEMBERS,
    MISSING_MINUTE_W,
    PENALTY_PRICE,
    PRICE,
    ROLE_HOLDERS,
    SLOT_MINUTES,
    TOKEN,
)
from tests.reverts import expect_revert

BUY, SELL = Side.BUY, Side.SELL
# every account of the test community: the role holders, the members and the treasury (no role)
HOLDERS = (*ROLE_HOLDERS, "treasury")

# Who may call each state-changing function: a role, or one of these.
ASSET_OWNER = "a member, for an asset it owns"
ORDER_OWNER = "the order's owner"
SETTLEMENT = "the bound settlement contract"
MARKET = "the market contract"
ANYONE = "anyone"
ACCESS = {
    ("market", "setClearingMode"): Role.MARKET_OPERATOR,
    ("market", "setGateClosure"): Role.MARKET_OPERATOR,
    ("market", "setPaused"): Role.MARKET_OPERATOR,
    ("market", "removeOrder"): Role.MARKET_OPERATOR,
    ("market", "bindSettlement"): Role.ADMIN,
    ("market", "placeOrder"): Role.MEMBER,  # and only for its own asset (ASSET_OWNER)
    ("market", "cancelOrder"): ORDER_OWNER,
    ("market", "release"): SETTLEMENT,
    ("market", "expireOrders"): ANYONE,  # after gate closure
    ("market", "clearAuction"): ANYONE,  # after gate closure
    ("market", "curtail"): ANYONE,  # before finalization, to the band in force
    ("market", "finalizeSlot"): ANYONE,  # after gate closure
    ("settlement", "setTerms"): Role.MARKET_OPERATOR,
    ("settlement", "setTreasury"): Role.ADMIN,
    ("settlement", "lock"): MARKET,
    ("settlement", "unlock"): MARKET,
    ("settlement", "deposit"): ANYONE,  # into the caller's own deposit
    ("settlement", "withdraw"): ANYONE,  # from the caller's own free deposit
    ("settlement", "claimCredit"): ANYONE,  # paid to the member it names
    ("settlement", "settle"): ANYONE,  # after the data deadline, once the market finalized the slot
}


@dataclass(frozen=True)
class Guarded:
    contract: str  # "market" or "settlement"
    function: str
    arguments: Callable  # env -> tuple (may prepare the chain)
    allowed: tuple[str, ...]
    allowed_error: str | None = None  # what the allowed caller gets instead (role check passed)

    @property
    def role(self) -> Role:
        return ACCESS[(self.contract, self.function)]


def far_slot(env) -> int:
    """A slot well beyond the settlement's notice period (two days)."""
    return env.now() // 60 // SLOT_MINUTES + 400


def invalid_order(env) -> tuple[int]:
    """An open order of dave, who is then removed from the community."""
    order_id, _ = env.place("dave", env.open_slot(), BUY, 10, PRICE)
    env.community.registry.remove_member(env["admin"], env["dave"].address)
    return (order_id,)


GUARDED = [
    Guarded("market", "setClearingMode", lambda env: (1,), ("operator",)),
    Guarded("market", "setGateClosure", lambda env: (10,), ("operator",)),
    Guarded("market", "setPaused", lambda env: (True,), ("operator",)),
    Guarded("market", "removeOrder", invalid_order, ("operator",)),
    Guarded(
        "market",
        "bindSettlement",
        lambda env: (env["stranger"].address,),
        ("admin",),
        "SettlementAlreadyBound",
    ),
    Guarded(
        "market",
        "placeOrder",
        lambda env: ((env.open_slot(), 0, 0, 0, units.encode_id("MD"), 10, PRICE), 0),
        MEMBERS,
    ),
    Guarded(
        "settlement",
        "setTerms",
        lambda env: ((far_slot(env), MISSING_MINUTE_W, IMPORT_PRICE, EXPORT_PRICE, PENALTY_PRICE),),
        ("operator",),
    ),
    Guarded("settlement", "setTreasury", lambda env: (env["dso"].address, far_slot(env)), ("admin",)),
]


def contract_of(env, name):
    return env.contract if name == "market" else env.settlement


def test_every_state_changing_function_names_who_may_call_it(env):
    in_abi = {
        (name, item["name"])
        for name in ("market", "settlement")
        for item in contract_of(env, name).abi
        if item["type"] == "function" and item["stateMutability"] in ("nonpayable", "payable")
    }
    assert in_abi == set(ACCESS), "ACCESS must name exactly the state-changing functions"
    by_role = {key for key, who in ACCESS.items() if isinstance(who, Role)}
    assert {(g.contract, g.function) for g in GUARDED} == by_role


@pytest.mark.parametrize("guarded", GUARDED, ids=lambda g: f"{g.contract}.{g.function}")
def test_every_other_role_is_refused(env, guarded):
    function = getattr(contract_of(env, guarded.contract).functions, guarded.function)
    arguments = guarded.arguments(env)
    refused = [h for h in HOLDERS if h not in guarded.allowed]
    assert refused
    for holder in refused:
        signer = env[holder]
        expect_revert(
            "AccessControlUnauthorizedAccount",
            lambda signer=signer: env.client.transact(function(*arguments), signer),
            account=signer.address,
            neededRole=env.community.registry.role_id(guarded.role),
        )
    for holder in guarded.allowed:
        if guarded.allowed_error:
            expect_revert(
                guarded.allowed_error, lambda h=holder: env.client.transact(function(*arguments), env[h])
            )
        elif guarded.function == "placeOrder":  # members need to own the asset: see below
            continue
        else:
            env.client.transact(function(*arguments), env[holder])


@pytest.mark.parametrize(
    "kind, asset, owner", [(AssetKind.FLEXIBILITY, "BAT", "alice"), (AssetKind.METER, "MD", "dave")]
)
def test_only_the_owner_of_the_asset_may_order_for_it(env, kind, asset, owner):
    slot = env.open_slot()
    for member in MEMBERS:
        if member == owner:
            continue
        expect_revert(
            "NotAssetOwner",
            lambda m=member: env.place(m, slot, BUY, 10, PRICE, asset=(kind, asset)),
            account=env[member].address,
            kind=int(kind),
            asset=units.encode_id(asset),
            owner=env[owner].address,
        )
    env.place(owner, slot, BUY, 10, PRICE, asset=(kind, asset))


def test_only_the_owner_of_an_order_may_cancel_it(env):
    order_id, _ = env.place("alice", env.open_slot(), BUY, 10, PRICE)
    cancel = env.contract.functions.cancelOrder(order_id)
    for holder in HOLDERS:
        if holder == "alice":
            continue
        expect_revert(
            "NotOrderOwner",
            lambda h=holder: env.client.transact(cancel, env[h]),
            account=env[holder].address,
            owner=env["alice"].address,
        )
    env.client.transact(cancel, env["alice"])
    assert env.deposit("alice") == (1000 * TOKEN, 0)


def test_only_the_bound_settlement_may_release_positions(env):
    slot = env.open_slot()
    env.to_final(slot)
    env.client.transact(env.contract.functions.finalizeSlot(slot), env["stranger"])
    release = env.contract.functions.release(env["alice"].address, slot)
    for holder in HOLDERS:
        expect_revert(
            "NotSettlement",
            lambda h=holder: env.client.transact(release, env[h]),
            account=env[holder].address,
            settlement=env.settlement.address,
        )


def test_only_the_market_may_lock_and_unlock_deposits(env):
    settlement = env.settlement.functions
    alice = env["alice"].address
    for holder in HOLDERS:  # a member, the operator, the admin and everybody else
        for call in (settlement.lock(alice, 1), settlement.unlock(alice, 1)):
            expect_revert(
                "NotMarket",
                lambda c=call, h=holder: env.client.transact(c, env[h]),
                account=env[holder].address,
            )
    assert env.deposit("alice") == (1000 * TOKEN, 0)


def test_anyone_may_expire_finalize_curtail_and_settle(env):
    slot = env.open_slot()
    for name, meter in (("alice", "MA"), ("bob", "MB"), ("dave", "MD")):
        env.place(name, slot, BUY, 10, PRICE // 10, asset=(AssetKind.METER, meter))
    env.place("carol", slot, SELL, 10, 10 * PRICE)
    env.to_final(slot)
    market = env.contract.functions
    for offset, holder in enumerate(HOLDERS):
        signer = env[holder]
        env.client.transact(market.expireOrders(slot), signer)
        env.client.transact(market.curtail(units.encode_id("EV"), slot + 1), signer)
        env.client.transact(market.finalizeSlot(slot - offset), signer)  # each its own closed slot
        assert env.client.call(market.book(slot - offset))[9]  # finalized
        env.client.transact(env.settlement.functions.settle(slot, [signer.address]), signer)
        assert env.client.call(env.settlement.functions.isSettled(signer.address, slot))
    assert env.escrow_held() == 0


def test_anyone_may_deposit_withdraw_and_claim_credit_for_itself(env):
    token, settlement = env.community.token.contract.functions, env.settlement.functions
    env.client.transact_all(
        [(token.mint(env[holder].address, TOKEN), env["operator"]) for holder in HOLDERS], gas=200_000
    )
    for holder in HOLDERS:
        signer, before = env[holder], env.deposit(holder)
        env.client.transact(token.approve(env.settlement.address, TOKEN), signer)
        env.client.transact(settlement.deposit(TOKEN), signer)
        assert env.deposit(holder) == (before[0] + TOKEN, before[1])
        env.client.transact(settlement.claimCredit(env["carol"].address), signer)  # nothing owed: no-op
        env.client.transact(settlement.withdraw(before[0] + TOKEN), signer)
        assert env.deposit(holder) == (0, 0)
        expect_revert(  # only its own deposit, and it is empty now
            "InsufficientDeposit",
            lambda s=signer: env.client.transact(settlement.withdraw(1), s),
            account=signer.address,
            amount=1,
            free=0,
        )
    assert env.wallet(env.settlement.address) == 0


def test_anyone_may_clear_an_auction(env):
    env.client.transact(env.contract.functions.setClearingMode(1), env["operator"])
    first = env.open_slot()
    env.place("carol", first, SELL, 10, PRICE)
    env.place("bob", first, BUY, 10, PRICE)
    env.to_gate_closure(first + len(HOLDERS))
    for offset, holder in enumerate(HOLDERS):
        receipt = env.client.transact(env.contract.functions.clearAuction(first + offset), env[holder])
        assert len(env.events("AuctionCleared", receipt)) == 1
    assert env.client.call(env.contract.functions.position(env["bob"].address, first))[0] == 10
