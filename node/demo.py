"""The demo community of ``lec up``: households and flexibilities on a real LV feeder.

The feeder is pandapower's Kerber Dorfnetz (116 buses, 57 house connections; seeded, since
pandapower draws its cable lengths at random), written once to ``DATA_DIR/feeder.json`` so
the meter simulator and the OCM service see the same grid. On first start:

- the service accounts get their roles (DSO, OCM oracle, gateway, market operator,
  aggregator);
- every house connection gets a meter (``S001``…, member ``sim-member``), published to by
  the meter simulator;
- four members own flexibilities at houses along the feeder: a community battery
  (±50 kW, priority group 0, as in the paper's pilot), two EV chargers (22 and 11 kW), a PV
  system (10 kWp) and a heat pump (6 kW), all in group 1;
- the market operator mints each member 1,000 tokens, members allow the market and the
  settlement to take them, the operator's account is the treasury, and grid prices are
  0.30 (import) and 0.08 (export) tokens per kWh.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from contracts.accounts import Keyring
from contracts.community import Community
from contracts.registry import Flexibility, FlexKind, Role

FEEDER_FILE = "feeder.json"
FEEDER_SEED = 1
REGISTRATION_GAS = 400_000
MEMBER_TOKENS = "1000"
TREASURY_TOKENS = "100000"
IMPORT_PRICE, EXPORT_PRICE = "0.30", "0.08"
SERVICE_ROLES = {
    "dso": Role.DSO,
    "ocm": Role.OCM_ORACLE,
    "gateway": Role.GATEWAY,
    "operator": Role.MARKET_OPERATOR,
    "aggregator": Role.AGGREGATOR,
}


@dataclass(frozen=True)
class DemoFlexibility:
    flex_id: str
    owner: str
    kind: FlexKind
    p_low_kw: float
    p_high_kw: float
    priority_group: int
    feeder_position: float  # where along the sorted house buses (0 = first, 1 = last)


DEMO_FLEXIBILITIES = (
    DemoFlexibility("BAT01", "community", FlexKind.BATTERY, -50.0, 50.0, 0, 0.5),
    DemoFlexibility("CS01", "bob", FlexKind.EV_CHARGER, 0.0, 22.0, 1, 0.25),
    DemoFlexibility("CS02", "carol", FlexKind.EV_CHARGER, 0.0, 11.0, 1, 1.0),
    DemoFlexibility("PV01", "dave", FlexKind.PV, -10.0, 0.0, 1, 0.75),
    DemoFlexibility("HP01", "dave", FlexKind.HEAT_PUMP, 0.0, 6.0, 1, 0.9),
)
DEMO_MEMBERS = ("community", "bob", "carol", "dave")


def write_feeder(data_dir: Path) -> tuple[Path, list[int]]:
    """The demo feeder file (written on first use) and its house buses, sorted."""
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
        pp.to_json(net, str(path))
        houses = sorted(set(net.load.bus.tolist()))
    else:
        net = pp.from_json(str(path))
        houses = sorted(set(net.load.bus.tolist()))
    return path, houses


def set_up_community(community: Community, keyring: Keyring, houses: list[int]) -> None:
    """Roles, members, flexibilities and market settings (first start only)."""
    from node.simulation.meters import ensure_meters

    admin, operator = keyring["admin"], keyring["operator"]
    calls = [
        (community.registry.grant_role_call(role, keyring[name].address), admin)
        for name, role in SERVICE_ROLES.items()
    ]
    for name in DEMO_MEMBERS:
        calls.append((community.registry.add_member_call(keyring[name].address, name), admin))
    for flex in DEMO_FLEXIBILITIES:
        bus = houses[round(flex.feeder_position * (len(houses) - 1))]
        definition = Flexibility(
            flex.flex_id, keyring[flex.owner].address, bus, flex.kind, flex.p_low_kw, flex.p_high_kw,
            flex.priority_group,
        )  # fmt: skip
        calls.append((community.registry.register_flexibility_call(definition), admin))
    community.client.transact_all(calls, gas=REGISTRATION_GAS)
    ensure_meters(community, keyring, len(houses), houses)

    client, token, settlement = community.client, community.token, community.settlement
    funding = [
        client.send_ether(keyring["faucet"], keyring[name].address, 10 * 10**18) for name in DEMO_MEMBERS
    ]
    for tx_hash in funding:
        client.wait(tx_hash)
    first_priced_slot = community.clock.slot_of(client.latest_timestamp()) + 1
    settings = [
        (token.mint_call(operator.address, TREASURY_TOKENS), operator),
        (settlement.set_treasury_call(operator.address), operator),
        (settlement.set_grid_prices_call(first_priced_slot, IMPORT_PRICE, EXPORT_PRICE), operator),
        # the treasury pays export credits by allowance
        (token.approve_call(settlement.address), operator),
    ]
    for name in DEMO_MEMBERS:
        settings.append((token.mint_call(keyring[name].address, MEMBER_TOKENS), operator))
        for spender in (community.market.address, settlement.address):
            settings.append((token.approve_call(spender), keyring[name]))
    client.transact_all(settings, gas=REGISTRATION_GAS)
