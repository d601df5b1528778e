"""Every state-changing function of EnergyMarket and Settlement names who may call it and
refuses everybody else: roles, asset and order owners, the bound settlement contract."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from contracts import units
from contracts.market import AssetKind, Side
from contracts.registry import Role
from tests.market_setup import MEMBERS, PRICE, ROLE_HOLDERS
from tests.reverts import expect_revert

BUY, SELL = Side.BUY, Side.SELL


@dataclass(frozen=True)
class Guarded:
    contract: str  # "market" or "settlement"
    function: str
    arguments: Callable  # env -> tuple
    role: Role
    allowed: tuple[str, ...]
    allowed_error: str | None = None  # what the allowed caller gets instead (role check passed)


GUARDED = [
    Guarded("market", "setClearingMode", lambda env: (1,), Role.MARKET_OPERATOR, ("operator",)),
    Guarded("market", "setGateClosure", lambda env: (10,), Role.MARKET_OPERATOR, ("operator",)),
    Guarded(
        "market",
        "bindSettlement",
        lambda env: (env["stranger"].address,),
        Role.ADMIN,
        ("admin",),
        "SettlementAlreadyBound",
    ),
    Guarded(
        "market",
        "placeOrder",
        lambda env: ((env.open_slot(), 0, 0, 0, units.encode_id("MD"), 10, PRICE), 0),
        Role.MEMBER,
        MEMBERS,
    ),
    Guarded(
        "settlement", "setTreasury", lambda env: (env["dso"].address,), Role.MARKET_OPERATOR, ("operator",)
    ),
    Guarded(
        "settlement",
        "setGridPrices",
        lambda env: (env.open_slot(), 2, 1),
        Role.MARKET_OPERATOR,
        ("operator",),
    ),
    Guarded("settlement", "setFinalityDelay", lambda env: (30,), Role.MARKET_OPERATOR, ("operator",)),
]
OWNER_ONLY = {("market", "placeOrder"), ("market", "cancelOrder")}
SETTLEMENT_ONLY = {("market", "release")}
ANYONE = {
    ("market", "expireOrders"),
    ("market", "clearAuction"),
    ("market", "curtail"),
    ("settlement", "settle"),
    ("settlement", "settleDebts"),
}


def contract_of(env, name):
    return env.contract if name == "market" else env.settlement


def test_every_state_changing_function_is_covered(env):
    covered = {(g.contract, g.function) for g in GUARDED} | OWNER_ONLY | SETTLEMENT_ONLY | ANYONE
    for name in ("market", "settlement"):
        for item in contract_of(env, name).abi:
            if item["type"] == "function" and item["stateMutability"] in ("nonpayable", "payable"):
                assert (name, item["name"]) in covered, f"{name}.{item['name']} has no role test"


@pytest.mark.parametrize("guarded", GUARDED, ids=lambda g: f"{g.contract}.{g.function}")
def test_every_other_role_is_refused(env, guarded):
    function = getattr(contract_of(env, guarded.contract).functions, guarded.function)
    arguments = guarded.arguments(env)
    for holder in ROLE_HOLDERS:
        if holder in guarded.allowed or (guarded.role == Role.MEMBER and holder in MEMBERS):
            continue
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
    for holder in ROLE_HOLDERS:
        if holder == "alice":
            continue
        expect_revert(
            "NotOrderOwner",
            lambda h=holder: env.client.transact(cancel, env[h]),
            account=env[holder].address,
            owner=env["alice"].address,
        )
    env.client.transact(cancel, env["alice"])


def test_only_the_bound_settlement_may_release_positions(env):
    slot = env.open_slot()
    env.to_final(slot)
    release = env.contract.functions.release(env["alice"].address, slot)
    for holder in (*ROLE_HOLDERS, "treasury"):
        expect_revert(
            "NotSettlement",
            lambda h=holder: env.client.transact(release, env[h]),
            account=env[holder].address,
            settlement=env.settlement.address,
        )


def test_anyone_may_expire_curtail_and_settle(env):
    slot = env.open_slot()
    for name, meter in zip(MEMBERS, ("MA", "MB", "MPV", "MD"), strict=True):
        env.place(name, slot, BUY, 10, PRICE // 10, asset=(AssetKind.METER, meter))
    env.to_final(slot)
    for holder in ROLE_HOLDERS:
        signer = env[holder]
        env.client.transact(env.contract.functions.expireOrders(slot), signer)
        env.client.transact(env.contract.functions.curtail(units.encode_id("EV"), slot + 1), signer)
        env.client.transact(env.settlement.functions.settleDebts(env["alice"].address), signer)
        env.client.transact(env.settlement.functions.settle(slot, [signer.address]), signer)
    assert env.escrow_held() == 0


def test_anyone_may_clear_an_auction(env):
    env.client.transact(env.contract.functions.setClearingMode(1), env["operator"])
    first = env.open_slot()
    env.place("carol", first, SELL, 10, PRICE)
    env.place("bob", first, BUY, 10, PRICE)
    env.to_gate_closure(first + len(ROLE_HOLDERS))
    for offset, holder in enumerate(ROLE_HOLDERS):
        env.client.transact(env.contract.functions.clearAuction(first + offset), env[holder])
