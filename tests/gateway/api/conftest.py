"""A community on an embedded chain (1 s blocks) with members, meters, flexibilities,
deposits, published bands and readings, and the API over it: in process (``api``, a
FastAPI TestClient) and served on a free port (``served``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient

from contracts import clock
from contracts.accounts import Keyring
from contracts.client import ChainClient, Signer
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.ledger import PhaseReading, Reading
from contracts.limits import Band
from contracts.registry import Flexibility, FlexKind, Meter, Role
from gateway.api.app import create_app
from gateway.api.context import ApiContext, ApiSettings, Feeder, FeederBranch, FeederBus
from gateway.api.server import ApiServer
from node.embedded import EmbeddedChain, open_embedded_chain
from tests.community_setup import populate

SERVICES = {
    "dso": Role.DSO,
    "ocm": Role.OCM_ORACLE,
    "gateway": Role.GATEWAY,
    "operator": Role.MARKET_OPERATOR,
    "aggregator": Role.AGGREGATOR,
}
MEMBERS = ("alice", "bob")
MEMBER_TOKENS = "500"
FLEXIBILITIES = (
    Flexibility("BAT01", "alice", 3, FlexKind.BATTERY, -5.0, 5.0, 0, "M-BAT01"),
    Flexibility("EV01", "bob", 4, FlexKind.EV_CHARGER, 0.0, 11.0, 1, "M-EV01"),
)
HOUSE_METERS = (("M-A", 3, "alice"), ("M-B", 4, "bob"))


def phase_readings(start: int) -> list[Reading]:
    """M-A's readings of 6 and 7 minutes before ``start``: three phases, then L2 alone."""
    three = tuple(PhaseReading(0.4, 0.05, 0.998, -0.5 + shift) for shift in (0.0, -120.0, 120.0))
    return [
        Reading("M-A", start - 360, 1.2, 0.15, 0.998, -0.5, three),
        Reading(
            "M-A", start - 420, 0.9, 0.0, 0.997, -0.5, (None, PhaseReading(0.9, 0.0, 0.997, -120.5), None)
        ),
    ]


SECRET = b"\x07" * 32
BAND_S = 2 * 3600  # bands are published for the next two hours
MINUTE_MARGIN_S = 20  # set-up transactions for "this minute" need this much of it left


@dataclass
class World:
    chain: EmbeddedChain
    url: str
    community: Community
    keyring: Keyring
    context: ApiContext

    def __getitem__(self, name: str) -> Signer:
        return self.keyring[name]

    def now(self) -> int:
        return self.community.client.latest_timestamp()


def small_feeder() -> Feeder:
    buses = [FeederBus(bus, f"bus {bus}", 0.4 if bus else 20.0, float(bus), 0.0) for bus in range(5)]
    branches = [FeederBranch("trafo", 0, 0, 1, "T1")] + [
        FeederBranch("line", index, index + 1, index + 2, f"L{index}") for index in range(3)
    ]
    return Feeder("test feeder", buses, branches)


@pytest.fixture(scope="package")
def world(artifacts, tmp_path_factory) -> Iterator[World]:
    chain = open_embedded_chain(None, period=1)
    url = chain.serve("127.0.0.1", 0)
    keyring = chain.keyring
    client = ChainClient.connect(url, artifacts)
    community = Community(
        client, deploy_community(client, keyring["admin"], CommunityConfig(name="api test"))
    )
    for name in (*MEMBERS, "stranger", *(f"meter-{m}" for m, _, _ in HOUSE_METERS)):
        keyring.signer(name)
    for name in (*MEMBERS, "stranger"):
        client.transfer_ether(keyring["admin"], keyring[name].address, 10**20)
    meters = [
        Meter(m, bus, keyring[owner].address, keyring[f"meter-{m}"].address) for m, bus, owner in HOUSE_METERS
    ]
    meters += [
        Meter(flex.meter_id, flex.bus, keyring[flex.owner].address, keyring[f"meter-{flex.meter_id}"].address)
        for flex in FLEXIBILITIES
    ]
    flexibilities = [
        Flexibility(
            f.flex_id,
            keyring[f.owner].address,
            f.bus,
            f.kind,
            f.p_low_kw,
            f.p_high_kw,
            f.priority_group,
            f.meter_id,
        )
        for f in FLEXIBILITIES
    ]
    populate(community, keyring, SERVICES, MEMBERS, meters, flexibilities)
    for name in MEMBERS:
        community.token.mint(keyring["operator"], keyring[name].address, MEMBER_TOKENS)
        community.fund(keyring[name], MEMBER_TOKENS)
    now = client.latest_timestamp()
    if clock.seconds_to_next_minute(now) < MINUTE_MARGIN_S:  # the bands start this minute: let
        time.sleep(clock.seconds_to_next_minute(now) + 2)  # the transactions land in it, not the next
        now = client.latest_timestamp()
    start = clock.minute_start(clock.minute_of(now))
    for band in (
        Band("BAT01", start, start + BAND_S, -4.0, 4.5),
        Band("EV01", start, start + BAND_S, 0.0, 7.0),
    ):
        community.limits.publish_bands(keyring["ocm"], [band])  # one per transaction: a minute is a word
    readings = [
        Reading(meter_id, start - 60 * back, 1.5 + 0.1 * back, 0.2, 0.998, -0.5)
        for meter_id in ("M-A", "M-B")
        for back in range(1, 6)
    ]
    community.ledger.record_readings(keyring["gateway"], readings)
    community.ledger.record_readings(keyring["gateway"], phase_readings(start))
    context = ApiContext(
        community,
        SECRET,
        small_feeder(),
        settings=ApiSettings(index_refresh_s=0.0, requests_per_second=1000, burst=5000),
    )
    yield World(chain, url, community, keyring, context)
    chain.stop()


@pytest.fixture(scope="package")
def api(world) -> TestClient:
    return TestClient(create_app(world.context), base_url="http://testserver")


@pytest.fixture(scope="package")
def served(world) -> Iterator[str]:
    """The API served over HTTP on a free port; its base URL."""
    server = ApiServer(create_app(world.context), "127.0.0.1", 0).start()
    yield server.url
    server.stop()


def siwe_message(address: str, domain: str, chain_id: int, nonce: str, issued: float | None = None) -> str:
    """An EIP-4361 message as a wallet would show it."""
    from siwe import SiweMessage

    issued_at = datetime.fromtimestamp(issued if issued is not None else time.time(), UTC)
    return SiweMessage(
        domain=domain,
        address=address,
        statement="Sign in to the energy community.",
        uri=f"http://{domain}",
        version="1",
        chain_id=chain_id,
        nonce=nonce,
        issued_at=issued_at.isoformat().replace("+00:00", "Z"),
    ).prepare_message()


def sign_in(api: TestClient, signer: Signer, domain: str = "testserver") -> dict[str, str]:
    """Sign in as ``signer`` through SIWE; the Authorization header for its requests."""
    nonce = api.get("/v1/auth/nonce").json()["nonce"]
    message = siwe_message(signer.address, domain, api.get("/v1/community").json()["chain_id"], nonce)
    signature = signer.account.sign_message(encode_defunct(text=message)).signature.hex()
    answer = api.post(
        "/v1/auth/siwe", json={"message": message, "signature": "0x" + signature.removeprefix("0x")}
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}
