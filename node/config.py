"""The community configuration file of ``lec up`` (TOML): name, slot length, feeder,
members, meters, flexibilities, market terms, tokens and sealers, read and validated into
dataclasses. Every error names the file and the key (``flexibilities[2].p_max_kw: ...``;
arrays count from 0); unknown keys are refused. Nothing here touches the chain:
``node.demo`` applies a definition to one. The shipped default is
``node/communities/demo.toml``; README.md ("Community configuration") describes the keys."""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from eth_utils import is_address, to_checksum_address

from contracts.accounts import SERVICE_ACCOUNTS
from contracts.deploy import CommunityConfig
from contracts.registry import FlexKind
from contracts.settlement import Terms
from contracts.units import ID_BYTES, TOKEN_DECIMALS
from node.cli.errors import CliError
from node.embedded import FAUCET_ACCOUNT, SEALER_ACCOUNT

DEMO_CONFIG = Path(__file__).parent / "communities" / "demo.toml"
BUILTIN_FEEDERS = ("kerber-dorfnetz",)
# keys of DATA_DIR/keys.json that belong to the node's own services, never to a member
RESERVED_KEYS = (*SERVICE_ACCOUNTS, SEALER_ACCOUNT, FAUCET_ACCOUNT)
METER_KEY_PREFIX = "meter-"

TOP_KEYS = ("community", "chain", "market", "members", "households", "meters", "flexibilities")
COMMUNITY_KEYS = ("name", "slot_minutes", "feeder")
CHAIN_KEYS = ("sealers",)
MARKET_KEYS = ("import_price", "export_price", "penalty_price", "missing_minute_kw", "treasury_tokens")
MEMBER_KEYS = ("name", "key", "tokens")
HOUSEHOLD_KEYS = ("member", "prefix", "phase")
METER_KEYS = ("id", "bus", "member", "phase")
FLEXIBILITY_KEYS = (
    "id", "owner", "kind", "p_min_kw", "p_max_kw", "priority_group",
    "bus", "feeder_position", "meter", "meter_phase", "agent",
)  # fmt: skip
# The phases a meter is connected to: one (a single-phase meter on phase a, b or c = L1, L2,
# L3) or all three ("abc", the default: a three-phase connection).
METER_PHASES = ("abc", "a", "b", "c")
FLEX_KINDS = {kind.name.lower(): kind for kind in FlexKind}
# the trading agent ``lec up`` runs for a flexibility of each kind, and its parameters
AGENT_KEYS = {
    FlexKind.BATTERY: ("capacity_kwh", "soc_kwh"),
    FlexKind.EV_CHARGER: ("energy_kwh", "deadline_slots"),
    FlexKind.PV: ("surplus_kw",),
}

MAX_SLOT_MINUTES = 64  # CommunityRegistry.MAX_SLOT_MINUTES
MAX_BUS = 2**32 - 1  # buses are uint32 on chain
MAX_PRIORITY_GROUP = 255  # uint8
MAX_FLEX_POWER_KW = 1_000_000.0  # CommunityRegistry.MAX_FLEX_POWER_W
MAX_MISSING_MINUTE_KW = 1_000.0  # Settlement.MAX_MISSING_MINUTE_W
MAX_PRICE = Decimal(2**96 - 1).scaleb(-TOKEN_DECIMALS)  # prices are uint96 token units per kWh
MAX_AGENT_SLOTS = 10_000

REQUIRED = object()  # marks a key without a default


class ConfigError(CliError):
    """A community configuration that cannot be used; names the file and the key (and the
    command line option that set it, ``via``)."""

    def __init__(self, source: Path | str, key: str, problem: str, via: str | None = None):
        where = f"{key} (from {via})" if via else key
        super().__init__(f"{source}: {where}: {problem}" if key else f"{source}: {problem}")
        self.key = key


@dataclass(frozen=True)
class MemberConfig:
    """A member: its name on chain, its key's name in DATA_DIR/keys.json, and the tokens it
    is minted (and deposits in the settlement) when it joins."""

    name: str
    key: str
    tokens: Decimal = Decimal(0)


@dataclass(frozen=True)
class MeterConfig:
    meter_id: str
    bus: int
    member: str  # a member's name
    phase: str = "abc"  # METER_PHASES


@dataclass(frozen=True)
class HouseholdMeters:
    """One meter per house connection (a bus with a load) of the feeder, owned by ``member``:
    ``prefix`` + 001, 002, ... in the order of the sorted house buses."""

    member: str
    prefix: str = "S"
    phase: str = "abc"  # of every household meter (METER_PHASES)

    def meter_id(self, number: int) -> str:
        """The id of the ``number``-th household meter (from 1)."""
        return f"{self.prefix}{number:03d}"

    def owns_id(self, meter_id: str) -> bool:
        return re.fullmatch(re.escape(self.prefix) + r"\d{3,}", meter_id) is not None


@dataclass(frozen=True)
class FlexibilityConfig:
    """A flexibility (kW, load convention) at ``bus``, or at ``feeder_position`` along the
    sorted house buses (0 = the first, 1 = the last), with its own sub-meter ``meter_id``;
    ``agent`` holds the parameters of the trading agent ``lec up`` runs for it (None: none)."""

    flex_id: str
    owner: str  # a member's name
    kind: FlexKind
    p_min_kw: float
    p_max_kw: float
    priority_group: int
    meter_id: str
    bus: int | None = None
    feeder_position: float | None = None
    agent: dict[str, float] | None = None
    meter_phase: str = "abc"  # the phases its sub-meter measures (METER_PHASES)


@dataclass(frozen=True)
class MarketConfig:
    """Standing settlement terms (tokens per kWh, as ``contracts.settlement.Terms``) and the
    tokens the treasury is funded with on first start."""

    import_price: Decimal = Decimal("0.30")
    export_price: Decimal = Decimal("0.08")
    penalty_price: Decimal = Decimal("1.00")
    missing_minute_kw: float = 20.0
    treasury_tokens: Decimal = Decimal(0)

    def terms(self) -> Terms:
        return Terms(self.import_price, self.export_price, self.penalty_price, self.missing_minute_kw)


@dataclass(frozen=True)
class CommunityDefinition:
    """Everything a community configuration file says, validated."""

    source: Path  # the file (named in error messages)
    name: str
    slot_minutes: int
    feeder: str | Path  # a built-in feeder's name or a network file
    members: tuple[MemberConfig, ...] = ()
    households: HouseholdMeters | None = None
    meters: tuple[MeterConfig, ...] = ()
    flexibilities: tuple[FlexibilityConfig, ...] = ()
    market: MarketConfig = field(default_factory=MarketConfig)
    sealers: tuple[str, ...] = ()  # checksummed addresses; empty: this node's own key
    overrides: dict[str, str] = field(default_factory=dict)  # key -> the command line option that set it

    def member(self, name: str) -> MemberConfig:
        return next(member for member in self.members if member.name == name)

    def meter_phase(self, meter_id: str) -> str:
        """The phases ``meter_id`` is connected to ("a", "b", "c" or "abc"): as its
        ``[[meters]]``, flexibility's ``meter_phase`` or ``[households]`` entry says; "abc"
        for a meter the file does not define."""
        for meter in self.meters:
            if meter.meter_id == meter_id:
                return meter.phase
        for flex in self.flexibilities:
            if flex.meter_id == meter_id:
                return flex.meter_phase
        if self.households is not None and self.households.owns_id(meter_id):
            return self.households.phase
        return "abc"

    def deployment_config(self) -> CommunityConfig:
        """What the contracts are deployed with on first start."""
        market = self.market
        return CommunityConfig(
            name=self.name,
            slot_minutes=self.slot_minutes,
            import_price=str(market.import_price),
            export_price=str(market.export_price),
            penalty_price=str(market.penalty_price),
            missing_minute_kw=market.missing_minute_kw,
        )

    def with_overrides(self, name: str | None = None, slot_minutes: int | None = None) -> CommunityDefinition:
        """This definition with the command line's ``--community`` / ``--slot-minutes``."""
        changes: dict[str, Any] = {"overrides": dict(self.overrides)}
        if name is not None:
            if not name.strip():
                raise CliError("--community must not be empty")
            changes["name"] = name
            changes["overrides"]["community.name"] = "--community"
        if slot_minutes is not None:
            changes["slot_minutes"] = slot_minutes
            changes["overrides"]["community.slot_minutes"] = "--slot-minutes"
        return replace(self, **changes)

    def error(self, key: str, problem: str) -> ConfigError:
        """An error about ``key`` of this definition (applied to a chain, read from a feeder)."""
        return ConfigError(self.source, key, problem, self.overrides.get(key))


def load_demo() -> CommunityDefinition:
    """The shipped demo community (``node/communities/demo.toml``)."""
    return load_community(DEMO_CONFIG)


def load_community(path: Path) -> CommunityDefinition:
    """Read and validate the community configuration file ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(path, "", f"cannot read the community configuration: {reason}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "", f"not valid TOML: {error}") from None
    return parse_community(raw, path)


def parse_community(raw: dict[str, Any], source: Path) -> CommunityDefinition:
    """A definition from the parsed TOML document ``raw`` of file ``source``."""
    top = Table(raw, "", source, TOP_KEYS)
    community = top.table("community", COMMUNITY_KEYS, required=True)
    name = community.text("name")
    if not name.strip():
        raise community.error("name", "must not be empty")
    slot_minutes = community.integer("slot_minutes", 1, MAX_SLOT_MINUTES, default=15)
    feeder = _feeder(community, source)
    chain = top.table("chain", CHAIN_KEYS)
    sealers = tuple(_sealers(chain)) if chain is not None else ()
    market = _market(top.table("market", MARKET_KEYS))
    members = tuple(_member(table) for table in top.tables("members", MEMBER_KEYS))
    _unique(top, "members", "name", [member.name for member in members])
    _unique(top, "members", "key", [member.key for member in members])
    names = {member.name for member in members}
    household_table = top.table("households", HOUSEHOLD_KEYS)
    households = _households(household_table, names) if household_table is not None else None
    meters = tuple(_meter(table, names) for table in top.tables("meters", METER_KEYS))
    flexibilities = tuple(
        _flexibility(table, names) for table in top.tables("flexibilities", FLEXIBILITY_KEYS)
    )
    _unique(top, "flexibilities", "id", [flex.flex_id for flex in flexibilities])
    _check_meter_ids(top, meters, flexibilities, households)
    return CommunityDefinition(
        source=source,
        name=name,
        slot_minutes=slot_minutes,
        feeder=feeder,
        members=members,
        households=households,
        meters=meters,
        flexibilities=flexibilities,
        market=market,
        sealers=sealers,
    )


# ------------------------------------------------------------------------ sections


def _feeder(community: Table, source: Path) -> str | Path:
    value = community.text("feeder", default=BUILTIN_FEEDERS[0])
    if value in BUILTIN_FEEDERS:
        return value
    path = Path(value).expanduser()
    path = path if path.is_absolute() else source.parent / path
    if not path.is_file():
        builtin = ", ".join(repr(name) for name in BUILTIN_FEEDERS)
        raise community.error("feeder", f"no network file {str(path)!r} (nor a built-in feeder: {builtin})")
    return path


def _sealers(chain: Table) -> list[str]:
    sealers = []
    for index, value in enumerate(chain.array("sealers", default=[])):
        key = f"sealers[{index}]"
        if not isinstance(value, str) or not is_address(value):
            raise chain.error(key, f"must be an Ethereum address (0x and 40 hex digits), got {value!r}")
        sealers.append(to_checksum_address(value))
    return sealers


def _market(market: Table | None) -> MarketConfig:
    if market is None:
        return MarketConfig()
    defaults = MarketConfig()
    import_price = market.tokens("import_price", defaults.import_price, MAX_PRICE)
    export_price = market.tokens("export_price", defaults.export_price, MAX_PRICE)
    if export_price > import_price:
        raise market.error("export_price", f"must be <= import_price (got {export_price} > {import_price})")
    return MarketConfig(
        import_price=import_price,
        export_price=export_price,
        penalty_price=market.tokens("penalty_price", defaults.penalty_price, MAX_PRICE),
        missing_minute_kw=market.number(
            "missing_minute_kw", 0.0, MAX_MISSING_MINUTE_KW, defaults.missing_minute_kw
        ),
        treasury_tokens=market.tokens("treasury_tokens", defaults.treasury_tokens),
    )


def _member(member: Table) -> MemberConfig:
    name = member.identifier("name")
    key = member.text("key", default=name)
    if not key.strip():
        raise member.error("key", "must not be empty")
    if key in RESERVED_KEYS or key.startswith(METER_KEY_PREFIX):
        raise member.error(
            "key",
            f"{key!r} is a key of the node itself (its services {', '.join(RESERVED_KEYS)} and the "
            f"meters' {METER_KEY_PREFIX}<id>); give the member a key of its own",
        )
    return MemberConfig(name, key, member.tokens("tokens", Decimal(0)))


def _households(households: Table, members: set[str]) -> HouseholdMeters:
    member = households.member_name("member", members)
    prefix = households.text("prefix", default="S")
    if not prefix or len(prefix.encode()) > ID_BYTES - 4 or "\x00" in prefix:
        raise households.error(
            "prefix", f"must be 1..{ID_BYTES - 4} bytes (the number follows), got {prefix!r}"
        )
    return HouseholdMeters(member, prefix, _phase(households, "phase"))


def _phase(table: Table, name: str) -> str:
    value = table.text(name, default="abc")
    if value not in METER_PHASES:
        raise table.error(
            name, f"must be one of {', '.join(METER_PHASES)} (a single phase, or all three), got {value!r}"
        )
    return value


def _meter(meter: Table, members: set[str]) -> MeterConfig:
    return MeterConfig(
        meter.identifier("id"),
        meter.integer("bus", 0, MAX_BUS),
        meter.member_name("member", members),
        _phase(meter, "phase"),
    )


def _flexibility(flex: Table, members: set[str]) -> FlexibilityConfig:
    flex_id = flex.identifier("id")
    owner = flex.member_name("owner", members)
    kind_name = flex.text("kind")
    if kind_name not in FLEX_KINDS:
        raise flex.error("kind", f"must be one of {', '.join(FLEX_KINDS)}, got {kind_name!r}")
    kind = FLEX_KINDS[kind_name]
    p_min = flex.number("p_min_kw", -MAX_FLEX_POWER_KW, MAX_FLEX_POWER_KW)
    p_max = flex.number("p_max_kw", -MAX_FLEX_POWER_KW, MAX_FLEX_POWER_KW)
    if p_max < p_min:
        raise flex.error("p_max_kw", f"must be >= p_min_kw (got {p_max:g} < {p_min:g})")
    group = flex.integer("priority_group", 0, MAX_PRIORITY_GROUP, default=0)
    bus = flex.integer("bus", 0, MAX_BUS, default=None)
    position = flex.number("feeder_position", 0.0, 1.0, default=None)
    if bus is None and position is None:
        raise flex.error("bus", "missing: give bus, or feeder_position (0..1 along the sorted house buses)")
    if bus is not None and position is not None:
        raise flex.error("feeder_position", "give either bus or feeder_position, not both")
    meter_id = flex.identifier("meter", default=f"M-{flex_id}")
    agent = _agent(flex, kind)
    return FlexibilityConfig(
        flex_id, owner, kind, p_min, p_max, group, meter_id, bus, position, agent, _phase(flex, "meter_phase")
    )


def _agent(flex: Table, kind: FlexKind) -> dict[str, float] | None:
    if "agent" not in flex.raw:
        return None
    if kind not in AGENT_KEYS:
        kinds = ", ".join(kind.name.lower() for kind in AGENT_KEYS)
        raise flex.error("agent", f"no trading agent for a {kind.name.lower()} (agents exist for {kinds})")
    agent = flex.table("agent", AGENT_KEYS[kind])
    if kind == FlexKind.BATTERY:
        capacity = agent.number("capacity_kwh", 0.0, math.inf, exclusive_low=True)
        return {"capacity_kwh": capacity, "soc_kwh": agent.number("soc_kwh", 0.0, capacity)}
    if kind == FlexKind.EV_CHARGER:
        return {
            "energy_kwh": agent.number("energy_kwh", 0.0, math.inf),
            "deadline_slots": agent.integer("deadline_slots", 0, MAX_AGENT_SLOTS),
        }
    return {"surplus_kw": agent.number("surplus_kw", 0.0, MAX_FLEX_POWER_KW, exclusive_low=True)}


def _unique(top: Table, array: str, key: str, values: list[str]) -> None:
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            raise top.error(f"{array}[{index}].{key}", f"{value!r} is already {array}[{seen[value]}].{key}")
        seen[value] = index


def _check_meter_ids(
    top: Table,
    meters: tuple[MeterConfig, ...],
    flexibilities: tuple[FlexibilityConfig, ...],
    households: HouseholdMeters | None,
) -> None:
    """Every meter id (explicit, sub-meter, household) names one meter."""
    seen: dict[str, str] = {}
    keys = [(f"meters[{i}].id", meter.meter_id) for i, meter in enumerate(meters)]
    keys += [(f"flexibilities[{i}].meter", flex.meter_id) for i, flex in enumerate(flexibilities)]
    for key, meter_id in keys:
        if meter_id in seen:
            raise top.error(key, f"meter {meter_id!r} is already {seen[meter_id]}")
        if households is not None and households.owns_id(meter_id):
            prefix = households.prefix
            raise top.error(
                key, f"{meter_id!r} is a household meter id (households.prefix {prefix!r} + number)"
            )
        seen[meter_id] = key


# --------------------------------------------------------------------- TOML tables


def _shown(value: Any) -> str:
    """``value`` as a message shows it (long values cut)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


class Table:
    """One TOML table being read: each getter checks one key and names it in its errors;
    keys outside ``known`` are refused at once."""

    def __init__(self, raw: Any, path: str, source: Path, known: tuple[str, ...]):
        self.raw, self.path, self.source = raw, path, source
        if not isinstance(raw, dict):
            raise ConfigError(source, path, f"must be a table, got {_shown(raw)} ({_type_name(raw)})")
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
                hint = f"did you mean {close[0]!r}? " if close else ""
                allowed = ", ".join(known) if known else "none"
                raise self.error(key, f"unknown key ({hint}known keys: {allowed})")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), problem)

    def _get(self, name: str, default: Any, kinds: tuple[type, ...], expected: str) -> Any:
        if name not in self.raw:
            if default is REQUIRED:
                raise self.error(name, "missing (required)")
            return default
        value = self.raw[name]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.error(name, f"must be {expected}, got {_shown(value)} ({_type_name(value)})")
        return value

    def text(self, name: str, default: Any = REQUIRED) -> str:
        return self._get(name, default, (str,), "a string")

    def identifier(self, name: str, default: Any = REQUIRED) -> str:
        """A name or id stored on chain as bytes32: 1..32 bytes of UTF-8, no NUL."""
        value = self.text(name, default)
        if not value or len(value.encode()) > ID_BYTES or "\x00" in value:
            raise self.error(name, f"must be 1..{ID_BYTES} bytes of UTF-8 (an id on chain), got {value!r}")
        return value

    def member_name(self, name: str, members: set[str]) -> str:
        value = self.text(name)
        if value not in members:
            known = ", ".join(sorted(members)) or "none"
            raise self.error(name, f"{value!r} is not a member (members: {known})")
        return value

    def integer(self, name: str, low: int, high: int, default: Any = REQUIRED) -> int:
        value = self._get(name, default, (int,), "an integer")
        if value is not None and not low <= value <= high:
            raise self.error(name, f"must be {low}..{high}, got {value}")
        return value

    def number(
        self, name: str, low: float, high: float, default: Any = REQUIRED, exclusive_low: bool = False
    ) -> float:
        value = self._get(name, default, (int, float), "a number")
        if value is None:
            return value
        value = float(value)
        too_low = value <= low if exclusive_low else value < low
        if not math.isfinite(value) or too_low or value > high:
            bound = f"> {low:g}" if exclusive_low else f">= {low:g}"
            limit = f" and <= {high:g}" if math.isfinite(high) else ""
            raise self.error(name, f"must be {bound}{limit}, got {value:g}")
        return value

    def tokens(self, name: str, default: Any = REQUIRED, high: Decimal | None = None) -> Decimal:
        """A token amount (a number or a decimal string, exact to 18 decimals), >= 0."""
        value = self._get(name, default, (int, float, str, Decimal), "a number of tokens")
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            raise self.error(name, f"must be a number of tokens, got {value!r}") from None
        if not amount.is_finite() or amount < 0:
            raise self.error(name, f"must be a finite number >= 0, got {value!r}")
        if amount.normalize().as_tuple().exponent < -TOKEN_DECIMALS:  # type: ignore[operator]
            raise self.error(name, f"has more than {TOKEN_DECIMALS} decimals: {value!r}")
        if high is not None and amount > high:
            raise self.error(name, f"must be <= {high:.0f}, got {value!r}")
        return amount

    def array(self, name: str, default: Any = REQUIRED) -> list:
        return self._get(name, default, (list,), "an array")

    def table(self, name: str, known: tuple[str, ...], required: bool = False) -> Table | None:
        if name not in self.raw:
            if required:
                raise self.error(name, "missing (required)")
            return None
        return Table(self.raw[name], self.key(name), self.source, known)

    def tables(self, name: str, known: tuple[str, ...]) -> list[Table]:
        """An array of tables (``[[name]]``), each checked against ``known``."""
        items = self.array(name, default=[])
        return [
            Table(item, f"{self.key(name)}[{index}]", self.source, known) for index, item in enumerate(items)
        ]
