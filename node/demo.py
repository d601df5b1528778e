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
  system (10 kWp) and a heat pump (6 kW), all in group 1; each has its own sub-meter
  (``M-BAT01``…), which the simulator reports as an idle device (0 W) for now;
- the market operator mints each member 1,000 tokens and each member deposits them in the
  settlement; the operator funds the treasury (the admin's account unless configured) and
  the standing terms are the deployment's (0.30 import, 0.08 export, 1.00 penalty tokens
  per kWh).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from contracts.accounts import Keyring
from contracts.community import Community
from contracts.registry import Flexibility, FlexKind, Meter, Role

FEEDER_FILE = "feeder.json"
FEEDER_SEED = 1
REGISTRATION_GAS = 400_000
MEMBER_TOKENS = "1000"
TREASURY_TOKENS = "100000"
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


def flexibility_meter_id(flex_id: str) -> str:
    """The id of a demo flexibility's own sub-meter."""
    return f"M-{flex_id}"


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
    community.client.transact_all(calls, gas=REGISTRATION_GAS)
    ensure_meters(community, keyring, len(houses), houses)
    calls = []
    for flex in DEMO_FLEXIBILITIES:
        bus = houses[round(flex.feeder_position * (len(houses) - 1))]
        owner = keyring[flex.owner].address
        meter_id = flexibility_meter_id(flex.flex_id)
        meter = Meter(meter_id, bus, owner, keyring[f"meter-{meter_id}"].address)
        definition = Flexibility(
            flex.flex_id, owner, bus, flex.kind, flex.p_low_kw, flex.p_high_kw, flex.priority_group, meter_id
        )
        calls.append((community.registry.register_meter_call(meter), admin))
        calls.append((community.registry.register_flexibility_call(definition), admin))
    community.client.transact_all(calls, gas=REGISTRATION_GAS)

    client, token, settlement = community.client, community.token, community.settlement
    funding = [
        client.send_ether(keyring["faucet"], keyring[name].address, 10 * 10**18) for name in DEMO_MEMBERS
    ]
    for tx_hash in funding:
        client.wait(tx_hash)
    treasury = keyring["admin"] if settlement.treasury_at(0) == keyring["admin"].address else None
    settings = [(token.mint_call(keyring[name].address, MEMBER_TOKENS), operator) for name in DEMO_MEMBERS]
    if treasury is not None:  # the treasury pays export credits from its deposit
        settings.append((token.mint_call(treasury.address, TREASURY_TOKENS), operator))
    client.transact_all(settings, gas=REGISTRATION_GAS)
    deposits = []
    for holder in [keyring[name] for name in DEMO_MEMBERS] + ([treasury] if treasury else []):
        tokens = TREASURY_TOKENS if holder is treasury else MEMBER_TOKENS
        deposits.append((token.approve_call(settlement.address, tokens), holder))
        deposits.append((settlement.deposit_call(tokens), holder))
    client.transact_all(deposits, gas=REGISTRATION_GAS)
