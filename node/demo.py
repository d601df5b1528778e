"""The community of ``lec up`` on chain, from its definition (``node.config``): the demo of
``node/communities/demo.toml`` unless ``--config`` names another file.

The feeder is a network file, or pandapower's Kerber Dorfnetz (116 buses, 57 house
connections; seeded, since pandapower draws its cable lengths at random) written once to
``DATA_DIR/feeder.json``, so the meter simulator and the OCM service see the same grid.

``set_up_community`` reads what the chain holds, compares it with the definition and then
registers only what is missing, so the first start bootstraps and every later start
resumes:

- the service accounts get their roles (DSO, OCM oracle, gateway, market operator,
  aggregator) when they lack them;
- a member not on chain yet is added (its key in ``DATA_DIR/keys.json`` is made on first
  use), given gas money, minted its ``tokens`` and deposits them in the settlement; tokens
  are minted once, when a member joins;
- meters (each with its own key ``meter-<id>``) and flexibilities not on chain yet are
  registered; each flexibility's sub-meter is registered at its bus for its owner;
- on the first start the market operator funds the treasury (the admin's account unless
  configured) with ``market.treasury_tokens``, deposited.

A fact the chain already holds that the definition contradicts (the community name, the
slot length, a member's name or key, a meter's bus or member, anything about a
flexibility) is refused with a ``ConfigError`` naming the key, before any transaction is
sent. Harmless differences are logged as warnings: the market prices (the standing terms
are fixed at deployment; a change needs ``Settlement.setTerms`` two days ahead), and
members, meters or flexibilities on chain that the definition does not list (left as
they are).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from contracts import units
from contracts.accounts import Keyring
from contracts.community import Community
from contracts.registry import Flexibility, Meter, Role
from node.config import CommunityDefinition, FlexibilityConfig, MemberConfig
from node.embedded import FAUCET_ACCOUNT, SEALER_ACCOUNT

log = logging.getLogger(__name__)

FEEDER_FILE = "feeder.json"
FEEDER_SEED = 1
REGISTRATION_GAS = 400_000
MEMBER_GAS_MONEY_WEI = 10 * 10**18
SERVICE_ROLES = {
    "dso": Role.DSO,
    "ocm": Role.OCM_ORACLE,
    "gateway": Role.GATEWAY,
    "operator": Role.MARKET_OPERATOR,
    "aggregator": Role.AGGREGATOR,
}


@dataclass(frozen=True)
class Feeder:
    """The feeder's network file, its house buses (buses with a load, sorted) and all its buses."""

    path: Path
    houses: list[int]
    buses: frozenset[int]

    def bus_at(self, position: float) -> int:
        """The house bus at ``position`` along the sorted house buses (0 = first, 1 = last)."""
        return self.houses[round(position * (len(self.houses) - 1))]


@dataclass
class CommunityPlan:
    """What the chain lacks of a definition: the registrations ``apply_plan`` sends."""

    roles: list[tuple[str, Role]] = field(default_factory=list)  # (service account, role)
    members: list[MemberConfig] = field(default_factory=list)
    meters: list[Meter] = field(default_factory=list)
    flexibilities: list[Flexibility] = field(default_factory=list)
    fund_treasury: bool = False

    def is_empty(self) -> bool:
        return not (self.roles or self.members or self.meters or self.flexibilities or self.fund_treasury)

    def summary(self) -> str:
        return (
            f"{len(self.roles)} roles granted, {len(self.members)} members added, {len(self.meters)} meters "
            f"and {len(self.flexibilities)} flexibilities registered"
            + (", treasury funded" if self.fund_treasury else "")
        )


# ----------------------------------------------------------------------- the feeder


def prepare_feeder(definition: CommunityDefinition, data_dir: Path) -> Feeder:
    """The definition's feeder (the built-in one written to ``DATA_DIR/feeder.json`` on first
    use), checked against every bus the definition names."""
    from ocm.grid.errors import NetworkError
    from ocm.grid.network_io import read_network_tables

    path = write_feeder(data_dir) if isinstance(definition.feeder, str) else definition.feeder
    try:
        tables = read_network_tables(path)
    except NetworkError as error:
        raise definition.error("community.feeder", str(error)) from None
    feeder = Feeder(
        path, sorted({int(bus) for bus in tables.load.bus}), frozenset(int(bus) for bus in tables.bus.index)
    )
    check_feeder(definition, feeder)
    return feeder


def write_feeder(data_dir: Path) -> Path:
    """``DATA_DIR/feeder.json``: pandapower's Kerber Dorfnetz (written on first use, seeded)."""
    import pandapower as pp
    import pandapower.networks as pn

    path = data_dir / FEEDER_FILE
    if not path.exists():
        state = random.getstate()
        random.seed(FEEDER_SEED)
        try:
            net = pn.create_kerber_dorfnetz()
        finally:
            random.setstate(state)
        data_dir.mkdir(parents=True, exist_ok=True)
        pp.to_json(net, str(path))
    return path


def check_feeder(definition: CommunityDefinition, feeder: Feeder) -> None:
    """Every bus the definition names is a bus of the feeder; house connections exist
    where the definition needs them."""
    needing_houses = ["households"] if definition.households is not None else []
    needing_houses += [
        f"flexibilities[{i}].feeder_position"
        for i, flex in enumerate(definition.flexibilities)
        if flex.feeder_position is not None
    ]
    if needing_houses and not feeder.houses:
        raise definition.error(
            needing_houses[0], f"the feeder {feeder.path} has no house connection (no bus with a load)"
        )
    located = [(f"meters[{i}].bus", meter.bus) for i, meter in enumerate(definition.meters)]
    located += [(f"flexibilities[{i}].bus", flex.bus) for i, flex in enumerate(definition.flexibilities)]
    for key, bus in located:
        if bus is not None and bus not in feeder.buses:
            raise definition.error(key, f"bus {bus} is not a bus of the feeder {feeder.path}")


def check_sealers(definition: CommunityDefinition, keyring: Keyring) -> None:
    """The embedded node seals alone: ``chain.sealers`` may name only its own key."""
    own = keyring[SEALER_ACCOUNT].address
    for index, address in enumerate(definition.sealers):
        if address != own:
            raise definition.error(
                f"chain.sealers[{index}]",
                f"{address} is not this node's sealer ({own}): the embedded chain of lec up has no "
                "peer-to-peer network, so another sealer could never seal its turn and Clique would "
                "stop; leave chain.sealers out (or list only this node's key), and run several "
                "sealers as a geth network (lec network geth)",
            )


# ---------------------------------------------------------------------- the chain


def set_up_community(
    community: Community, keyring: Keyring, definition: CommunityDefinition, feeder: Feeder
) -> CommunityPlan:
    """Register what the chain lacks of ``definition`` (everything on first start); a
    contradiction raises ``ConfigError`` before anything is sent. Returns what was done."""
    check_deployment(community, definition)
    plan = plan_community(community, keyring, definition, feeder)
    if plan.is_empty():
        log.info("community %r: everything in %s is on chain", definition.name, definition.source)
        return plan
    apply_plan(community, keyring, definition, plan)
    log.info("community %r: %s", definition.name, plan.summary())
    return plan


def check_deployment(community: Community, definition: CommunityDefinition) -> None:
    """Name and slot length are fixed at deployment: refused if they differ; different
    prices are a warning (the standing terms stay the chain's)."""
    recorded = community.deployment.config.name
    if recorded != definition.name:
        raise definition.error(
            "community.name",
            f"{definition.name!r}, but the community in this data directory was deployed as {recorded!r} "
            "(fixed at deployment): use that name, or a fresh --data-dir for a new community",
        )
    slot_minutes = community.registry.slot_minutes()
    if slot_minutes != definition.slot_minutes:
        raise definition.error(
            "community.slot_minutes",
            f"{definition.slot_minutes}, but the community in this data directory was deployed with "
            f"{slot_minutes}-minute slots (fixed at deployment): use {slot_minutes}, or a fresh --data-dir",
        )
    chain_terms = community.settlement.terms_at(community.clock.slot_of(community.client.latest_timestamp()))
    wanted = definition.market.terms()
    for key in ("import_price", "export_price", "penalty_price", "missing_minute_kw"):
        if getattr(wanted, key) != getattr(chain_terms, key):
            log.warning(
                "%s: market.%s is %s, the chain's standing terms say %s; not applied (terms change only "
                "with two days' notice, Settlement.setTerms by the market operator)",
                definition.source,
                key,
                getattr(wanted, key),
                getattr(chain_terms, key),
            )


def plan_community(
    community: Community, keyring: Keyring, definition: CommunityDefinition, feeder: Feeder
) -> CommunityPlan:
    """What the chain lacks of ``definition``; ``ConfigError`` on a contradiction."""
    registry, plan = community.registry, CommunityPlan()
    plan.roles = [
        (name, role)
        for name, role in SERVICE_ROLES.items()
        if not registry.has_role(role, keyring[name].address)
    ]
    plan.fund_treasury = bool(plan.roles) and definition.market.treasury_tokens > 0
    accounts = _plan_members(community, keyring, definition, plan)
    _plan_meters(community, keyring, definition, feeder, accounts, plan)
    _plan_flexibilities(community, definition, feeder, accounts, plan)
    return plan


def _plan_members(
    community: Community, keyring: Keyring, definition: CommunityDefinition, plan: CommunityPlan
) -> dict[str, str]:
    """New members into ``plan``; returns every member's account by name."""
    registry = community.registry
    on_chain = {account: registry.member_name(account) for account in registry.members()}  # ever admitted
    accounts = {}
    for index, member in enumerate(definition.members):
        account = keyring[member.key].address
        accounts[member.name] = account
        if account in on_chain:
            if on_chain[account] != member.name:
                raise definition.error(
                    f"members[{index}].name",
                    f"{member.name!r}, but the account of key {member.key!r} ({account}) is member "
                    f"{on_chain[account]!r} on chain (a member's name is fixed when it joins)",
                )
            if not registry.has_role(Role.MEMBER, account):
                raise definition.error(
                    f"members[{index}]", f"member {member.name!r} ({account}) was removed from the community"
                )
            continue
        holders = [holder for holder, name in on_chain.items() if name == member.name]
        if holders:
            raise definition.error(
                f"members[{index}].key",
                f"member {member.name!r} is on chain with account {holders[0]}, not with key "
                f"{member.key!r} ({account}): name the key that holds {holders[0]} in DATA_DIR/keys.json",
            )
        plan.members.append(member)
    unlisted = sorted(name for account, name in on_chain.items() if account not in accounts.values())
    if unlisted:
        log.warning(
            "members on chain but not in %s (left as they are): %s", definition.source, ", ".join(unlisted)
        )
    return accounts


def _plan_meters(
    community: Community,
    keyring: Keyring,
    definition: CommunityDefinition,
    feeder: Feeder,
    accounts: dict[str, str],
    plan: CommunityPlan,
) -> None:
    registry = community.registry
    wanted = _wanted_meters(definition, feeder)
    on_chain = set(registry.meter_ids())
    for meter_id, bus, member, bus_key, member_key in wanted:
        if meter_id not in on_chain:
            signer = keyring[f"meter-{meter_id}"].address
            plan.meters.append(Meter(meter_id, bus, accounts[member], signer))
            continue
        registered = registry.meter(meter_id)
        if registered.bus != bus:
            raise definition.error(
                bus_key,
                f"meter {meter_id} is registered at bus {registered.bus} on chain, the file puts it at bus "
                f"{bus}: a meter cannot move (deregister it and register a new id)",
            )
        if registered.member != accounts[member]:
            raise definition.error(
                member_key,
                f"meter {meter_id} belongs to {registered.member} on chain, not to member {member!r} "
                f"({accounts[member]}): a meter cannot change hands (register a new id)",
            )
        if not registered.active:
            raise definition.error(bus_key, f"meter {meter_id} was deregistered on chain: use a new id")
    unlisted = sorted(on_chain - {meter_id for meter_id, *_ in wanted})
    if unlisted:
        log.warning(
            "%d meters on chain but not in %s (left as they are): %s",
            len(unlisted),
            definition.source,
            ", ".join(unlisted[:10]) + (", ..." if len(unlisted) > 10 else ""),
        )


def _wanted_meters(definition: CommunityDefinition, feeder: Feeder) -> list[tuple[str, int, str, str, str]]:
    """(meter id, bus, member name, key of the bus, key of the member) of every meter the
    definition names: household meters, the listed meters, the flexibilities' sub-meters."""
    wanted = []
    if definition.households is not None:
        households = definition.households
        wanted += [
            (households.meter_id(number), bus, households.member, "households", "households.member")
            for number, bus in enumerate(feeder.houses, start=1)
        ]
    for i, meter in enumerate(definition.meters):
        wanted.append((meter.meter_id, meter.bus, meter.member, f"meters[{i}].bus", f"meters[{i}].member"))
    for i, flex in enumerate(definition.flexibilities):
        located_by = "bus" if flex.bus is not None else "feeder_position"
        keys = (f"flexibilities[{i}].{located_by}", f"flexibilities[{i}].owner")
        wanted.append((flex.meter_id, flexibility_bus(flex, feeder), flex.owner, *keys))
    return wanted


def flexibility_bus(flex: FlexibilityConfig, feeder: Feeder) -> int:
    """The bus of ``flex``: its own, or the house bus at its feeder position."""
    return flex.bus if flex.bus is not None else feeder.bus_at(flex.feeder_position)


def _plan_flexibilities(
    community: Community,
    definition: CommunityDefinition,
    feeder: Feeder,
    accounts: dict[str, str],
    plan: CommunityPlan,
) -> None:
    registry = community.registry
    on_chain = set(registry.flexibility_ids())
    new_meters = {meter.meter_id for meter in plan.meters}
    for index, flex in enumerate(definition.flexibilities):
        wanted = Flexibility(
            flex.flex_id,
            accounts[flex.owner],
            flexibility_bus(flex, feeder),
            flex.kind,
            flex.p_min_kw,
            flex.p_max_kw,
            flex.priority_group,
            flex.meter_id,
        )
        if flex.flex_id in on_chain:
            _compare_flexibility(definition, index, flex, wanted, registry.flexibility(flex.flex_id))
            continue
        if flex.meter_id not in new_meters and (measured := registry.flexibility_of_meter(flex.meter_id)):
            raise definition.error(
                f"flexibilities[{index}].meter",
                f"meter {flex.meter_id} already measures flexibility {measured}",
            )
        plan.flexibilities.append(wanted)
    unlisted = sorted(on_chain - {flex.flex_id for flex in definition.flexibilities})
    if unlisted:
        log.warning(
            "flexibilities on chain but not in %s (left as they are): %s",
            definition.source,
            ", ".join(unlisted),
        )


def _compare_flexibility(
    definition: CommunityDefinition,
    index: int,
    flex: FlexibilityConfig,
    wanted: Flexibility,
    registered: Flexibility,
) -> None:
    """A registered flexibility cannot change: every field must be as on chain."""
    if not registered.active:
        raise definition.error(
            f"flexibilities[{index}].id", f"flexibility {flex.flex_id} was deactivated on chain: use a new id"
        )
    kw = units.kw_to_w  # compare powers in whole watts, as the chain stores them
    located_by = "bus" if flex.bus is not None else "feeder_position"
    fields = (
        ("owner", "owner", wanted.owner, registered.owner),
        (located_by, "bus", wanted.bus, registered.bus),
        ("kind", "kind", wanted.kind.name.lower(), registered.kind.name.lower()),
        ("p_min_kw", "p_min_kw", kw(wanted.p_low_kw), kw(registered.p_low_kw)),
        ("p_max_kw", "p_max_kw", kw(wanted.p_high_kw), kw(registered.p_high_kw)),
        ("priority_group", "priority group", wanted.priority_group, registered.priority_group),
        ("meter", "meter", wanted.meter_id, registered.meter_id),
    )
    for key, what, mine, theirs in fields:
        if mine != theirs:
            if key.endswith("_kw"):
                mine, theirs = f"{units.w_to_kw(mine):g} kW", f"{units.w_to_kw(theirs):g} kW"
            raise definition.error(
                f"flexibilities[{index}].{key}",
                f"flexibility {flex.flex_id} is registered with {what} {theirs} on chain, the file gives "
                f"{mine}: a registered flexibility cannot change (deactivate it and register a new id)",
            )


def apply_plan(
    community: Community, keyring: Keyring, definition: CommunityDefinition, plan: CommunityPlan
) -> None:
    """Send ``plan``'s registrations, then fund the new members (and the treasury)."""
    admin, operator = keyring["admin"], keyring["operator"]
    registry, client, token, settlement = (
        community.registry,
        community.client,
        community.token,
        community.settlement,
    )
    calls = [(registry.grant_role_call(role, keyring[name].address), admin) for name, role in plan.roles]
    calls += [(registry.add_member_call(keyring[m.key].address, m.name), admin) for m in plan.members]
    if calls:
        client.transact_all(calls, gas=REGISTRATION_GAS)
    calls = [(registry.register_meter_call(meter), admin) for meter in plan.meters]
    calls += [(registry.register_flexibility_call(flex), admin) for flex in plan.flexibilities]
    if calls:
        client.transact_all(calls, gas=REGISTRATION_GAS)

    for tx_hash in [
        client.send_ether(keyring[FAUCET_ACCOUNT], keyring[m.key].address, MEMBER_GAS_MONEY_WEI)
        for m in plan.members
    ]:
        client.wait(tx_hash)
    holders = [(keyring[m.key], m.tokens) for m in plan.members if m.tokens > 0]
    if plan.fund_treasury and settlement.treasury_at(0) == admin.address:  # we hold the treasury's key
        holders.append((admin, definition.market.treasury_tokens))  # it pays export credits from its deposit
    if not holders:
        return
    client.transact_all(
        [(token.mint_call(holder.address, tokens), operator) for holder, tokens in holders],
        gas=REGISTRATION_GAS,
    )
    deposits = []
    for holder, tokens in holders:
        deposits.append((token.approve_call(settlement.address, tokens), holder))
        deposits.append((settlement.deposit_call(tokens), holder))
    client.transact_all(deposits, gas=REGISTRATION_GAS)
