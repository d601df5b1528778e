"""Every state-changing function names the role it needs and refuses every other role."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from eth_utils import keccak

from contracts import units
from contracts.ledger import pack_reading
from contracts.registry import Meter, Role
from tests.contracts.conftest import ROLE_HOLDERS
from tests.reverts import expect_revert

ZERO_ADDRESS = "0x" + "00" * 20
DAY_S = 24 * 3600
ROLE_NAMES = (
    "DSO_ROLE",
    "OCM_ORACLE_ROLE",
    "GATEWAY_ROLE",
    "MARKET_OPERATOR_ROLE",
    "AGGREGATOR_ROLE",
    "MEMBER_ROLE",
)
ROLE_CHECKING_CONTRACTS = (
    "CommunityRegistry",
    "MeasurementLedger",
    "CapacityLimits",
    "CommunityToken",
    "EnergyMarket",
    "Settlement",
    "DynamicTariff",
    "FlexibilityMarket",
    "DeviceStates",
)


@dataclass(frozen=True)
class Guarded:
    contract: str  # attribute of Community
    function: str
    arguments: Callable  # env -> tuple
    role: Role
    allowed: tuple[str, ...]  # holders that may call it
    prepare: Callable | None = None  # env -> None: makes the allowed call valid (run before it)


def _future(env, minutes=30):
    return (env.now_minute() // 15 + 2) * 15 + minutes


def _register_household_meter(env):
    """A meter of alice that measures no flexibility yet (for registerFlexibility)."""
    env.community.registry.register_meter(
        env["admin"], Meter("M99", 1, env["alice"].address, env["alice"].address)
    )


GUARDED = [
    Guarded(
        "registry",
        "grantRole",
        lambda env: (env.community.registry.role_id(Role.DSO), env["stranger"].address),
        Role.ADMIN,
        ("admin",),
    ),
    Guarded(
        "registry",
        "revokeRole",
        lambda env: (env.community.registry.role_id(Role.DSO), env["dso"].address),
        Role.ADMIN,
        ("admin",),
    ),
    Guarded(
        "registry",
        "addMember",
        lambda env: (env["stranger"].address, units.encode_id("s")),
        Role.ADMIN,
        ("admin",),
    ),
    Guarded("registry", "removeMember", lambda env: (env["bob"].address,), Role.ADMIN, ("admin",)),
    Guarded(
        "registry",
        "registerMeter",
        lambda env: (units.encode_id("M99"), 1, env["alice"].address, env["alice"].address),
        Role.ADMIN,
        ("admin",),
    ),
    Guarded(
        "registry",
        "setMeterSigner",
        lambda env: (units.encode_id("M01"), env["alice"].address),
        Role.ADMIN,
        ("admin",),
    ),
    Guarded("registry", "deregisterMeter", lambda env: (units.encode_id("M01"),), Role.ADMIN, ("admin",)),
    Guarded(
        "registry",
        "registerFlexibility",
        lambda env: (
            units.encode_id("X99"),
            env["alice"].address,
            1,
            0,
            -1000,
            1000,
            0,
            units.encode_id("M99"),
        ),
        Role.ADMIN,
        ("admin",),
        prepare=_register_household_meter,
    ),
    Guarded(
        "registry",
        "deactivateFlexibility",
        lambda env: (units.encode_id("CS01"),),
        Role.ADMIN,
        ("admin",),
    ),
    Guarded(
        "registry",
        "beginDefaultAdminTransfer",
        lambda env: (env["stranger"].address,),
        Role.ADMIN,
        ("admin",),
    ),
    Guarded("registry", "cancelDefaultAdminTransfer", lambda env: (), Role.ADMIN, ("admin",)),
    Guarded("registry", "changeDefaultAdminDelay", lambda env: (3 * DAY_S,), Role.ADMIN, ("admin",)),
    Guarded("registry", "rollbackDefaultAdminDelay", lambda env: (), Role.ADMIN, ("admin",)),
    Guarded(
        "ledger",
        "recordReadings",
        lambda env: (pack_reading((units.encode_id("M01"), env.now_minute() - 1, 1000, 0, 1_000_000, 0)),),
        Role.GATEWAY,
        ("gateway",),
    ),
    Guarded(
        "ledger",
        "recordPhaseReadings",
        lambda env: (
            pack_reading(
                (units.encode_id("M01"), env.now_minute() - 1, 1000, 0, 1_000_000, 0),
                (0b010, ((0, 0, 0, 0), (1000, 0, 1_000_000, -120_000_000), (0, 0, 0, 0))),
            ),
        ),
        Role.GATEWAY,
        ("gateway",),
    ),
    Guarded(
        "limits",
        "publishBands",
        lambda env: ([(units.encode_id("CS01"), _future(env), _future(env) + 15, 0, 5000)],),
        Role.OCM_ORACLE,
        ("ocm",),
    ),
    Guarded(
        "limits",
        "postFlexibilityLimitation",
        lambda env: (units.encode_id("CS01"), _future(env), _future(env) + 15, 0, 5000, 0, "r"),
        Role.DSO,
        ("dso",),
    ),
    Guarded(
        "limits",
        "postFeederLimitation",
        lambda env: (
            units.encode_id("F"),
            [units.encode_id("CS01")],
            _future(env),
            _future(env) + 1,
            0,
            5000,
            1,
            "r",
        ),
        Role.DSO,
        ("dso",),
    ),
    Guarded(
        "token",
        "mint",
        lambda env: (env["alice"].address, 10**18),
        Role.MARKET_OPERATOR,
        ("operator", "admin"),
    ),
    Guarded(  # the owner alone (NotFlexibilityOwner for another member: test_device_states.py)
        "devices",
        "report",
        lambda env: (units.encode_id("BAT01"), False, 0, 5000, 10_000, 1000),
        Role.MEMBER,
        ("alice",),
    ),
]

# ERC-20 holder functions need no role: they act on the caller's own balance or allowance.
HOLDER_FUNCTIONS = {("token", "transfer"), ("token", "approve"), ("token", "transferFrom")}
# Only the account itself: renouncing one's own role, accepting the admin role offered to one.
SELF_ONLY_FUNCTIONS = {("registry", "renounceRole"), ("registry", "acceptDefaultAdminTransfer")}


def test_every_state_changing_function_is_covered(env):
    covered = {(g.contract, g.function) for g in GUARDED} | HOLDER_FUNCTIONS | SELF_ONLY_FUNCTIONS
    for attribute in ("registry", "ledger", "limits", "token", "devices"):
        abi = getattr(env.community, attribute).contract.abi
        for item in abi:
            if item["type"] == "function" and item["stateMutability"] in ("nonpayable", "payable"):
                assert (attribute, item["name"]) in covered, f"{attribute}.{item['name']} has no role test"


@pytest.mark.parametrize("guarded", GUARDED, ids=lambda g: f"{g.contract}.{g.function}")
def test_every_other_role_is_refused(env, guarded):
    contract = getattr(env.community, guarded.contract).contract
    arguments = guarded.arguments(env)
    for holder in ROLE_HOLDERS:
        if holder in guarded.allowed:
            continue
        signer = env[holder]
        expect_revert(
            "AccessControlUnauthorizedAccount",
            lambda signer=signer: env.client.transact(
                getattr(contract.functions, guarded.function)(*arguments), signer
            ),
            account=signer.address,
            neededRole=env.community.registry.role_id(guarded.role),
        )
    if guarded.prepare is not None:
        guarded.prepare(env)
    for holder in guarded.allowed:  # the same call succeeds for the role that may make it
        env.client.transact(
            getattr(contract.functions, guarded.function)(*guarded.arguments(env)), env[holder]
        )
        if guarded.function in {
            "addMember",
            "registerMeter",
            "registerFlexibility",
            "removeMember",
        }:
            break  # the second holder would hit a duplicate


def test_every_role_checking_contract_exposes_the_role_ids(env):
    addresses = env.community.deployment.addresses
    for name in ROLE_CHECKING_CONTRACTS:
        contract = env.client.contract(name, addresses[name])
        for role_name in ROLE_NAMES:
            role_id = env.client.call(getattr(contract.functions, role_name)())
            assert role_id == keccak(text=role_name), f"{name}.{role_name}"
        assert env.client.call(contract.functions.DEFAULT_ADMIN_ROLE()) == bytes(32), name


def test_renounce_role_only_for_oneself(env):
    registry = env.community.registry.contract.functions
    for holder in ROLE_HOLDERS:
        if holder == "dso":
            continue
        expect_revert(
            "AccessControlBadConfirmation",
            lambda holder=holder: env.client.transact(
                registry.renounceRole(env.community.registry.role_id(Role.DSO), env["dso"].address),
                env[holder],
            ),
        )
    env.client.transact(
        registry.renounceRole(env.community.registry.role_id(Role.DSO), env["dso"].address), env["dso"]
    )
    assert not env.community.registry.has_role(Role.DSO, env["dso"].address)


def test_the_admin_renounces_only_after_a_scheduled_transfer_to_nobody(env):
    registry, admin = env.community.registry, env["admin"]
    functions, client = registry.contract.functions, env.client
    admin_role = registry.role_id(Role.ADMIN)

    def renounce():
        return client.transact(functions.renounceRole(admin_role, admin.address), admin)

    expect_revert("AccessControlEnforcedDefaultAdminDelay", renounce, schedule=0)
    client.transact(functions.beginDefaultAdminTransfer(ZERO_ADDRESS), admin)
    (_, schedule) = client.call(functions.pendingDefaultAdmin())
    expect_revert("AccessControlEnforcedDefaultAdminDelay", renounce, schedule=schedule)
    env.travel(schedule + 1)
    renounce()
    assert client.call(functions.defaultAdmin()) == ZERO_ADDRESS
    assert not registry.has_role(Role.ADMIN, admin.address)
    expect_revert(
        "AccessControlUnauthorizedAccount",
        lambda: registry.add_member(admin, env["stranger"].address, "s"),
        account=admin.address,
    )


def test_only_the_offered_account_accepts_the_admin_role(env):
    registry, admin, successor = env.community.registry, env["admin"], env["bob"]
    functions, client = registry.contract.functions, env.client
    client.transact(functions.beginDefaultAdminTransfer(successor.address), admin)
    (_, schedule) = client.call(functions.pendingDefaultAdmin())
    env.travel(schedule + 1)
    for holder in ROLE_HOLDERS:  # the admin itself included
        signer = env[holder]
        expect_revert(
            "AccessControlInvalidDefaultAdmin",
            lambda signer=signer: client.transact(functions.acceptDefaultAdminTransfer(), signer),
            defaultAdmin=signer.address,
        )
    client.transact(functions.acceptDefaultAdminTransfer(), successor)
    assert client.call(functions.defaultAdmin()) == successor.address


def test_token_transfers_act_only_on_the_callers_own_funds(env):
    token, client = env.community.token.contract.functions, env.client
    env.community.token.mint(env["operator"], env["alice"].address, 5)
    client.transact(token.transfer(env["bob"].address, units.tokens_to_units(2)), env["alice"])
    assert env.community.token.balance_units(env["bob"].address) == units.tokens_to_units(2)
    expect_revert(
        "ERC20InsufficientBalance",
        lambda: client.transact(token.transfer(env["bob"].address, 1), env["stranger"]),
        sender=env["stranger"].address,
    )
    expect_revert(
        "ERC20InsufficientAllowance",
        lambda: client.transact(
            token.transferFrom(env["alice"].address, env["stranger"].address, 1), env["stranger"]
        ),
        spender=env["stranger"].address,
    )
    client.transact(token.approve(env["stranger"].address, 7), env["alice"])
    client.transact(token.transferFrom(env["alice"].address, env["stranger"].address, 7), env["stranger"])
    assert env.community.token.balance_units(env["stranger"].address) == 7
