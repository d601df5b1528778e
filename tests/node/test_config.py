"""The community configuration of ``lec up``: parsing and validation (every error names its
key), the shipped demo, and applying a file to a chain: bootstrap, then resume with
additions (nothing registered twice) and refusals of what the chain cannot take."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from contracts.accounts import Keyring
from contracts.clock import SlotClock
from contracts.community import Community
from contracts.deploy import ensure_deployment
from contracts.paths import PROJECT_ROOT
from contracts.registry import FlexKind
from node.cli.main import main
from node.composition import trading_agents
from node.config import ConfigError, load_community, load_demo
from node.demo import check_sealers, prepare_feeder, set_up_community
from node.embedded import open_embedded_chain

VALID = """\
[community]
name = "Test community"
slot_minutes = 15
feeder = "kerber-dorfnetz"

[market]
import_price = "0.30"
export_price = 0.05
penalty_price = 1
treasury_tokens = "500"

[[members]]
name = "alice"
tokens = "100"

[[members]]
name = "bob"
key = "bob-key"
tokens = 100.5

[[members]]
name = "homes"

[households]
member = "homes"

[[meters]]
id = "MA"
bus = 1
member = "alice"

[[flexibilities]]
id = "BAT"
owner = "alice"
kind = "battery"
p_min_kw = -10
p_max_kw = 10.0
bus = 1
agent = { capacity_kwh = 100.0, soc_kwh = 50.0 }

[[flexibilities]]
id = "HP"
owner = "bob"
kind = "heat_pump"
p_min_kw = 0
p_max_kw = 6
priority_group = 1
feeder_position = 0.5
meter = "HP-METER"
"""


def write(tmp_path: Path, text: str, name: str = "community.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_valid_file_is_read_with_its_defaults(tmp_path):
    definition = load_community(write(tmp_path, VALID))
    assert (definition.name, definition.slot_minutes, definition.feeder) == (
        "Test community",
        15,
        "kerber-dorfnetz",
    )
    assert [(m.name, m.key, m.tokens) for m in definition.members] == [
        ("alice", "alice", Decimal("100")),
        ("bob", "bob-key", Decimal("100.5")),
        ("homes", "homes", Decimal(0)),
    ]
    assert definition.households.member == "homes" and definition.households.meter_id(7) == "S007"
    battery, heat_pump = definition.flexibilities
    assert (battery.kind, battery.p_min_kw, battery.p_max_kw, battery.bus, battery.meter_id) == (
        FlexKind.BATTERY, -10.0, 10.0, 1, "M-BAT"
    )  # fmt: skip
    assert battery.agent == {"capacity_kwh": 100.0, "soc_kwh": 50.0}
    assert (heat_pump.feeder_position, heat_pump.meter_id, heat_pump.priority_group) == (0.5, "HP-METER", 1)
    terms = definition.market.terms()
    assert (terms.import_price, terms.export_price, terms.penalty_price) == (
        Decimal("0.30"), Decimal("0.05"), Decimal(1)
    )  # fmt: skip
    assert terms.missing_minute_kw == 20.0 and definition.market.treasury_tokens == 500
    config = definition.deployment_config()
    assert (config.name, config.slot_minutes, config.terms()) == ("Test community", 15, terms)


def test_a_meter_may_be_single_phase_on_a_b_or_c(tmp_path):
    text = VALID.replace('bus = 1\nmember = "alice"', 'bus = 1\nmember = "alice"\nphase = "b"')
    text = text.replace('meter = "HP-METER"', 'meter = "HP-METER"\nmeter_phase = "c"')
    definition = load_community(
        write(tmp_path, text.replace('member = "homes"', 'member = "homes"\nphase = "a"'))
    )
    assert [definition.meter_phase(m) for m in ("MA", "HP-METER", "M-BAT", "S012", "OTHER")] == [
        "b", "c", "abc", "a", "abc"
    ]  # fmt: skip
    assert load_community(write(tmp_path, VALID, "plain.toml")).meter_phase("MA") == "abc"  # the default


def test_a_minimal_file_is_enough(tmp_path):
    definition = load_community(write(tmp_path, '[community]\nname = "Tiny"\n'))
    assert (definition.slot_minutes, definition.feeder, definition.members, definition.flexibilities) == (
        15, "kerber-dorfnetz", (), ()
    )  # fmt: skip
    assert definition.households is None and definition.sealers == ()


def test_a_relative_feeder_path_is_read_from_the_config_files_folder(tmp_path):
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "feeder.json").write_text("{}")
    path = write(tmp_path, '[community]\nname = "X"\nfeeder = "grids/feeder.json"\n')
    assert load_community(path).feeder == tmp_path / "grids" / "feeder.json"


def test_the_readmes_example_is_a_valid_file(tmp_path):
    readme = (PROJECT_ROOT / "README.md").read_text()
    example = readme.split("## Community configuration", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "lindenweg.json").write_text("{}")  # read when lec up starts, not now
    definition = load_community(write(tmp_path, example))
    assert [flex.flex_id for flex in definition.flexibilities] == ["BAT01"]
    assert definition.households.meter_id(1) == "H001" and definition.market.treasury_tokens == 10_000


def test_the_shipped_demo_is_the_demo_community():
    demo = load_demo()
    assert (demo.name, demo.slot_minutes, demo.feeder) == ("Demo energy community", 15, "kerber-dorfnetz")
    flexibilities = [
        (f.flex_id, f.owner, f.kind, f.p_min_kw, f.p_max_kw, f.meter_id) for f in demo.flexibilities
    ]
    assert flexibilities == [
        ("BAT01", "community", FlexKind.BATTERY, -50.0, 50.0, "M-BAT01"),
        ("CS01", "bob", FlexKind.EV_CHARGER, 0.0, 22.0, "M-CS01"),
        ("CS02", "carol", FlexKind.EV_CHARGER, 0.0, 11.0, "M-CS02"),
        ("PV01", "dave", FlexKind.PV, -10.0, 0.0, "M-PV01"),
        ("HP01", "dave", FlexKind.HEAT_PUMP, 0.0, 6.0, "M-HP01"),
    ]
    assert [m.name for m in demo.members] == ["community", "bob", "carol", "dave", "sim-member"]
    assert [m.tokens for m in demo.members] == [Decimal(1000)] * 4 + [Decimal(0)]
    assert demo.households.member == "sim-member" and demo.households.meter_id(1) == "S001"
    assert demo.deployment_config().terms() == demo.market.terms()
    assert (demo.market.import_price, demo.market.export_price, demo.market.penalty_price) == (
        Decimal("0.30"), Decimal("0.08"), Decimal("1.00")
    )  # fmt: skip


def test_the_demo_agents_come_from_the_configuration_the_battery_last():
    community = SimpleNamespace(clock=SlotClock(15))
    agents = trading_agents(load_demo(), Keyring.ephemeral(), community)
    assert [(type(a).__name__, a.asset_id) for a in agents] == [
        ("PvProsumer", "PV01"),
        ("EvOwner", "CS01"),
        ("EvOwner", "CS02"),
        ("BatteryOwner", "BAT01"),  # it takes what the others leave open
    ]
    assert (agents[0].surplus_kw, agents[3].capacity_kwh, agents[1].needed_kwh) == (6.0, 100.0, 20.0)


BAD_INPUTS = [
    # (text replaced, replacement, key named, what is said)
    (
        'name = "Test community"\n',
        'name = "Test community"\ncolour = "red"\n',
        "community.colour",
        "unknown key",
    ),
    ("p_max_kw = 10.0", "p_max_KW = 10.0", "flexibilities[0].p_max_KW", "did you mean 'p_max_kw'?"),
    ('name = "Test community"\n', "", "community.name", "missing (required)"),
    ('name = "Test community"', 'name = " "', "community.name", "must not be empty"),
    ("slot_minutes = 15", "slot_minutes = 0", "community.slot_minutes", "must be 1..64, got 0"),
    (
        "slot_minutes = 15",
        'slot_minutes = "15"',
        "community.slot_minutes",
        "must be an integer, got '15' (string)",
    ),
    ("slot_minutes = 15", "slot_minutes = true", "community.slot_minutes", "(boolean)"),
    ('feeder = "kerber-dorfnetz"', 'feeder = "nowhere.json"', "community.feeder", "no network file"),
    (
        "export_price = 0.05",
        'export_price = "0.5"',
        "market.export_price",
        "must be <= import_price (got 0.5 > 0.30)",
    ),
    ("penalty_price = 1", "penalty_price = -1", "market.penalty_price", "must be a finite number >= 0"),
    ("penalty_price = 1", 'penalty_price = "lots"', "market.penalty_price", "must be a number of tokens"),
    (
        "penalty_price = 1",
        "penalty_price = 1\nmissing_minute_kw = 2000",
        "market.missing_minute_kw",
        "<= 1000",
    ),
    (
        'treasury_tokens = "500"',
        'treasury_tokens = "1e-19"',
        "market.treasury_tokens",
        "more than 18 decimals",
    ),
    (
        'name = "alice"\ntokens',
        'name = "alice"\nkey = "admin"\ntokens',
        "members[0].key",
        "a key of the node",
    ),
    ('key = "bob-key"', 'key = "meter-MA"', "members[1].key", "a key of the node"),
    ('name = "bob"', 'name = "alice"', "members[1].name", "'alice' is already members[0].name"),
    ('key = "bob-key"', 'key = "alice"', "members[1].key", "'alice' is already members[0].key"),
    ('name = "bob"', 'name = "' + "b" * 33 + '"', "members[1].name", "must be 1..32 bytes"),
    ("tokens = 100.5", "tokens = -3", "members[1].tokens", "must be a finite number >= 0, got -3"),
    ('member = "homes"', 'member = "nobody"', "households.member", "'nobody' is not a member"),
    ('member = "homes"', 'member = "homes"\nprefix = ""', "households.prefix", "must be 1..28 bytes"),
    ('member = "alice"', 'member = "zed"', "meters[0].member", "'zed' is not a member"),
    ("bus = 1\nmember", "bus = -1\nmember", "meters[0].bus", "must be 0..4294967295, got -1"),
    ('id = "MA"', 'id = "S001"', "meters[0].id", "'S001' is a household meter id"),
    ("bus = 1\nmember", 'phase = "d"\nbus = 1\nmember', "meters[0].phase", "must be one of abc, a, b, c"),
    ('member = "homes"', 'member = "homes"\nphase = "ab"', "households.phase", "must be one of abc, a, b, c"),
    ('meter = "HP-METER"', 'meter = "HP-METER"\nmeter_phase = 2', "flexibilities[1].meter_phase", "a string"),
    ('meter = "HP-METER"', 'meter = "MA"', "flexibilities[1].meter", "meter 'MA' is already meters[0].id"),
    ('id = "HP"', 'id = "BAT"', "flexibilities[1].id", "'BAT' is already flexibilities[0].id"),
    ('kind = "battery"', 'kind = "windmill"', "flexibilities[0].kind", "must be one of battery, ev_charger"),
    ('owner = "bob"', 'owner = "eve"', "flexibilities[1].owner", "'eve' is not a member"),
    ("p_max_kw = 6", "p_max_kw = -3", "flexibilities[1].p_max_kw", "must be >= p_min_kw (got -3 < 0)"),
    ("p_max_kw = 10.0", "p_max_kw = 2e6", "flexibilities[0].p_max_kw", "must be >= -1e+06 and <= 1e+06"),
    ("p_max_kw = 10.0", "p_max_kw = nan", "flexibilities[0].p_max_kw", "got nan"),
    ("priority_group = 1", "priority_group = 256", "flexibilities[1].priority_group", "must be 0..255"),
    ("feeder_position = 0.5", "feeder_position = 1.5", "flexibilities[1].feeder_position", "<= 1, got 1.5"),
    (
        "feeder_position = 0.5",
        "feeder_position = 0.5\nbus = 3",
        "flexibilities[1].feeder_position",
        "not both",
    ),
    ("bus = 1\nagent", "agent", "flexibilities[0].bus", "missing: give bus, or feeder_position"),
    (
        "soc_kwh = 50.0",
        "soc_kwh = 150.0",
        "flexibilities[0].agent.soc_kwh",
        "must be >= 0 and <= 100, got 150",
    ),
    ("soc_kwh = 50.0", "surplus_kw = 5.0", "flexibilities[0].agent.surplus_kw", "unknown key"),
    (
        'meter = "HP-METER"',
        'meter = "HP-METER"\nagent = {}',
        "flexibilities[1].agent",
        "no trading agent for a heat_pump",
    ),
    (
        "[market]",
        '[chain]\nsealers = ["0x123"]\n\n[market]',
        "chain.sealers[0]",
        "must be an Ethereum address",
    ),
    ("[community]", "[community", "", "not valid TOML"),
]


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"), BAD_INPUTS, ids=[case[2] or "toml" for case in BAD_INPUTS]
)
def test_every_bad_input_is_refused_naming_its_key(tmp_path, old, new, key, problem):
    assert old in VALID, old
    path = write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_community(path)
    message = str(caught.value)
    assert caught.value.key == key and message.startswith(f"{path}: ")
    assert problem in message, message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (
            '[community]\nname = "X"\n\n[members]\nalice = 1\n',
            "members",
            "must be an array, got {'alice': 1} (table)",
        ),
        ('community = "X"\n', "community", "must be a table, got 'X' (string)"),
        (
            '[community]\nname = "X"\n\n[extras]\n',
            "extras",
            "extras: unknown key (known keys: community, chain, market",
        ),
        ("[market]\n", "community", "missing (required)"),
        ('[community]\nname = "X"\n\n[chain]\nsealers = "0xab"\n', "chain.sealers", "must be an array"),
    ],
)
def test_the_files_shape_is_checked(tmp_path, text, key, problem):
    with pytest.raises(ConfigError) as caught:
        load_community(write(tmp_path, text))
    assert caught.value.key == key and problem in str(caught.value), str(caught.value)


def test_lec_up_refuses_a_bad_file_before_starting_anything(tmp_path, capsys):
    path = write(tmp_path, VALID.replace("p_max_kw = 6", "p_max_kw = -3"))
    assert main(["up", "--config", str(path), "--data-dir", str(tmp_path / "data")]) == 2
    error = capsys.readouterr().err
    assert f"error: {path}: flexibilities[1].p_max_kw: must be >= p_min_kw (got -3 < 0)" in error
    assert not (tmp_path / "data").exists()
    assert main(["up", "--config", str(tmp_path / "missing.toml"), "--data-dir", str(tmp_path)]) == 2
    assert "cannot read the community configuration: No such file or directory" in capsys.readouterr().err


def test_only_the_nodes_own_key_may_be_a_sealer(tmp_path):
    keyring = Keyring.ephemeral()
    own, other = keyring["sealer"].address, Keyring.ephemeral()["sealer"].address

    def with_sealers(*addresses: str):
        listed = ", ".join(f'"{address}"' for address in addresses)
        return load_community(
            write(tmp_path, VALID.replace("[market]", f"[chain]\nsealers = [{listed}]\n\n[market]"))
        )

    check_sealers(with_sealers(own.lower()), keyring)
    with pytest.raises(ConfigError) as caught:
        check_sealers(with_sealers(own, other), keyring)
    assert caught.value.key == "chain.sealers[1]" and "no peer-to-peer network" in str(caught.value)


# ------------------------------------------------------------- applied to a chain

FEEDER_BUSES = (0, 1, 2, 3, 4)  # bus 0: the grid connection; houses at 2, 3, 4
SMALL = """\
[community]
name = "Small community"
slot_minutes = 15
feeder = "feeder.json"

[market]
treasury_tokens = "500"

[[members]]
name = "alice"
tokens = "100"

[[members]]
name = "homes"

[households]
member = "homes"
prefix = "H"

[[meters]]
id = "MA"
bus = 1
member = "alice"

[[flexibilities]]
id = "BAT"
owner = "alice"
kind = "battery"
p_min_kw = -10
p_max_kw = 10
bus = 1
"""
CAROL = """
[[members]]
name = "carol"
tokens = "50"

[[flexibilities]]
id = "EV"
owner = "carol"
kind = "ev_charger"
p_min_kw = 0
p_max_kw = 11
feeder_position = 1.0
"""


def write_small_feeder(path: Path) -> None:
    """A five-bus feeder: a line from the grid connection (bus 0) to buses 1..4, houses at 2..4."""
    import pandapower as pp

    net = pp.create_empty_network()
    for _ in FEEDER_BUSES:
        pp.create_bus(net, vn_kv=0.4)
    pp.create_ext_grid(net, 0)
    for bus in FEEDER_BUSES[1:]:
        pp.create_line(net, bus - 1, bus, 0.1, "NAYY 4x150 SE")
    for bus in (2, 3, 4):
        pp.create_load(net, bus, p_mw=0.002)
    pp.to_json(net, str(path))


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ("bus = 1\nmember", "bus = 99\nmember", "meters[0].bus", "bus 99 is not a bus of the feeder"),
        ("p_max_kw = 10\nbus = 1", "p_max_kw = 10\nbus = 7", "flexibilities[0].bus", "bus 7 is not a bus"),
        (
            'feeder = "feeder.json"',
            'feeder = "community.toml"',
            "community.feeder",
            "is not a JSON network file",
        ),
    ],
    ids=["meter", "flexibility", "not a network"],
)
def test_the_feeder_is_checked_against_the_file(tmp_path, old, new, key, problem):
    write_small_feeder(tmp_path / "feeder.json")
    definition = load_community(write(tmp_path, SMALL.replace(old, new, 1)))
    with pytest.raises(ConfigError) as caught:
        prepare_feeder(definition, tmp_path / "data")
    assert caught.value.key == key and problem in str(caught.value), str(caught.value)


@pytest.fixture(scope="module")
def small_chain(tmp_path_factory, artifacts):
    """An embedded chain (1 s blocks) of a fresh data directory and the small feeder's folder."""
    folder = tmp_path_factory.mktemp("small")
    write_small_feeder(folder / "feeder.json")
    chain = open_embedded_chain(folder / "data", period=1)
    yield chain, chain.client(artifacts), folder
    chain.stop()


def test_bootstrap_then_resume_registers_each_thing_once(small_chain, caplog):
    chain, client, folder = small_chain
    keyring, data_dir = chain.keyring, folder / "data"
    first = load_community(write(folder, SMALL))
    feeder = prepare_feeder(first, data_dir)
    assert (feeder.path, feeder.houses) == (folder / "feeder.json", [2, 3, 4])
    deployment, fresh = ensure_deployment(client, keyring["admin"], data_dir, first.deployment_config())
    community = Community(client, deployment)
    registry, settlement = community.registry, community.settlement

    plan = set_up_community(community, keyring, first, feeder)
    assert fresh and len(plan.roles) == 5 and plan.fund_treasury
    assert ([m.name for m in plan.members], [f.flex_id for f in plan.flexibilities]) == (
        ["alice", "homes"],
        ["BAT"],
    )
    assert sorted(registry.meter_ids()) == ["H001", "H002", "H003", "M-BAT", "MA"]
    assert [registry.meter(m).bus for m in ("H001", "H002", "H003")] == [2, 3, 4]
    alice = keyring["alice"].address
    assert (
        settlement.deposit_of(alice).free == 100
        and settlement.deposit_of(keyring["admin"].address).free == 500
    )

    # resume with a new member and a new flexibility: only they are registered
    second = load_community(write(folder, SMALL + CAROL))
    plan = set_up_community(community, keyring, second, prepare_feeder(second, data_dir))
    assert (plan.roles, [m.name for m in plan.members], plan.fund_treasury) == ([], ["carol"], False)
    assert [(m.meter_id, m.bus) for m in plan.meters] == [("M-EV", 4)]
    assert [f.flex_id for f in plan.flexibilities] == ["EV"] and registry.flexibility("EV").bus == 4
    assert sorted(registry.member_name(a) for a in registry.members()) == ["alice", "carol", "homes"]
    assert sorted(registry.meter_ids()) == ["H001", "H002", "H003", "M-BAT", "M-EV", "MA"]
    assert registry.flexibility_ids() == ["BAT", "EV"]
    assert settlement.deposit_of(keyring["carol"].address).free == 50
    assert settlement.deposit_of(alice).free == 100 and community.token.balance(alice) == 0  # minted once

    # the same file again: nothing to do
    assert set_up_community(community, keyring, second, prepare_feeder(second, data_dir)).is_empty()
    assert len(registry.members()) == 3 and len(registry.meter_ids()) == 6

    # a change of prices is a warning; the chain's terms stay
    with caplog.at_level(logging.WARNING, logger="node.demo"):
        cheaper = load_community(
            write(folder, SMALL.replace("[market]", '[market]\nimport_price = "0.25"') + CAROL)
        )
        assert set_up_community(community, keyring, cheaper, feeder).is_empty()
    assert "market.import_price is 0.25, the chain's standing terms say 0.30" in caplog.text


REFUSED_CHANGES = [
    ("slot_minutes = 15", "slot_minutes = 5", "community.slot_minutes", "deployed with 15-minute slots"),
    ('name = "Small community"', 'name = "Other"', "community.name", "was deployed as 'Small community'"),
    ("bus = 1\nmember", "bus = 3\nmember", "meters[0].bus", "meter MA is registered at bus 1 on chain"),
    (
        'id = "MA"\nbus = 1\nmember = "alice"',
        'id = "MA"\nbus = 1\nmember = "homes"',
        "meters[0].member",
        "cannot change hands",
    ),
    ('member = "homes"\nprefix', 'member = "alice"\nprefix', "households.member", "cannot change hands"),
    (
        "p_max_kw = 10\nbus = 1",
        "p_max_kw = 12\nbus = 1",
        "flexibilities[0].p_max_kw",
        "registered with p_max_kw 10 kW",
    ),
    ('kind = "battery"', 'kind = "pv"', "flexibilities[0].kind", "registered with kind battery"),
    ("p_max_kw = 10\nbus = 1", "p_max_kw = 10\nbus = 2", "flexibilities[0].bus", "registered at bus 1"),
    (
        'name = "alice"',
        'name = "alice"\nkey = "alice-2"',
        "members[0].key",
        "member 'alice' is on chain with account",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"), REFUSED_CHANGES, ids=[c[2] for c in REFUSED_CHANGES]
)
def test_a_change_the_chain_cannot_take_is_refused_before_anything_is_sent(
    small_chain, old, new, key, problem
):
    chain, client, folder = small_chain
    data_dir = folder / "data"
    small = load_community(write(folder, SMALL))
    deployment = ensure_deployment(client, chain.keyring["admin"], data_dir, small.deployment_config())[0]
    community = Community(client, deployment)
    set_up_community(community, chain.keyring, small, prepare_feeder(small, data_dir))  # when run alone
    assert old in SMALL, old
    changed = load_community(write(folder, SMALL.replace(old, new, 1), "changed.toml"))
    meters_before = community.registry.meter_ids()
    with pytest.raises(ConfigError) as caught:
        set_up_community(community, chain.keyring, changed, prepare_feeder(changed, data_dir))
    assert caught.value.key == key, str(caught.value)
    assert problem in str(caught.value)
    assert community.registry.meter_ids() == meters_before


def test_a_command_line_override_is_checked_like_the_file_and_named(small_chain):
    chain, client, folder = small_chain
    small = load_community(write(folder, SMALL))
    deployment = ensure_deployment(
        client, chain.keyring["admin"], folder / "data", small.deployment_config()
    )[0]
    community, feeder = Community(client, deployment), prepare_feeder(small, folder / "data")
    set_up_community(
        community, chain.keyring, small.with_overrides(slot_minutes=15), feeder
    )  # the same: fine
    with pytest.raises(ConfigError) as caught:
        set_up_community(community, chain.keyring, small.with_overrides(slot_minutes=5), feeder)
    assert "community.toml: community.slot_minutes (from --slot-minutes): 5, but" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        set_up_community(community, chain.keyring, small.with_overrides(name="Renamed"), feeder)
    assert "community.name (from --community): 'Renamed', but" in str(caught.value)
