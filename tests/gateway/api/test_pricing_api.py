"""The price instruments over HTTP: dynamic tariffs (public, posted by the DSO's own key) and
the flexibility market's requirements and bids (public; bids prepared for the aggregator)."""

from __future__ import annotations

from decimal import Decimal

from contracts.tariff import hour_of, hour_start
from tests.gateway.api.conftest import sign_in
from tests.gateway.api.test_api import is_problem, signed_and_relayed


def test_the_dso_posts_tariffs_with_its_own_key_and_everyone_reads_them(api, world):
    dso = sign_in(api, world["dso"])
    tomorrow = hour_of(world.now()) + 24
    body = {
        "tariffs": [
            {"bus": 3, "hour": tomorrow, "price": "0.125"},
            {"bus": 4, "hour": tomorrow, "price": "0"},
        ]
    }
    prepared = api.post("/v1/dso/tariffs/prepare", json=body, headers=dso)
    assert prepared.status_code == 200, prepared.text
    (outcome,) = signed_and_relayed(api, world["dso"], prepared.json())
    assert outcome["status"] == "success"
    assert world.community.tariff.tariff_at(3, tomorrow) == Decimal("0.125")
    answer = api.get("/v1/tariffs", params={"bus": [3, 4], "from_hour": tomorrow, "to_hour": tomorrow + 1})
    assert answer.status_code == 200, answer.text
    assert answer.json() == [
        {"bus": 3, "hour": tomorrow, "start": tomorrow * 3600, "price": "0.125"},
        {"bus": 4, "hour": tomorrow, "start": tomorrow * 3600, "price": "0"},
    ]
    assert api.get("/v1/tariffs", params={"bus": 9, "from_hour": tomorrow}).json() == []


def test_tariffs_are_refused_from_anyone_but_the_dso_and_for_hours_already_priced_in(api, world):
    tomorrow = hour_of(world.now()) + 24
    body = {"tariffs": [{"bus": 3, "hour": tomorrow, "price": "0.2"}]}
    refused = is_problem(
        api.post("/v1/dso/tariffs/prepare", json=body, headers=sign_in(api, world["alice"])), 403
    )
    assert refused["needed_role"] == "DSO"
    dso = sign_in(api, world["dso"])
    past = {"tariffs": [{"bus": 3, "hour": hour_of(world.now()), "price": "0.2"}]}
    conflict = is_problem(api.post("/v1/dso/tariffs/prepare", json=past, headers=dso), 409)
    assert "TariffHourClosed" in str(conflict)
    too_high = {"tariffs": [{"bus": 3, "hour": tomorrow, "price": "11"}]}
    assert is_problem(api.post("/v1/dso/tariffs/prepare", json=too_high, headers=dso), 422)["errors"][0][
        "field"
    ].endswith("price")
    assert is_problem(api.post("/v1/dso/tariffs/prepare", json={"tariffs": []}, headers=dso), 422)
    window = {"from_hour": 10, "to_hour": 10 + 24 * 8}
    assert "to_hour" in is_problem(api.get("/v1/tariffs", params=window), 422)["detail"]


def test_an_aggregator_bids_on_a_posted_requirement_through_its_own_wallet(api, world):
    community, keyring = world.community, world.keyring
    flex = community.flexibility_market
    hour = hour_of(world.now()) + 24
    community.client.forget_nonces()  # other tests' wallets sent transactions past this client
    community.token.mint(keyring["operator"], keyring["dso"].address, Decimal(100))
    dso = sign_in(api, world["dso"])
    requirement = {
        "hour": hour,
        "load_points": [3],
        "min_kw": 2.0,
        "payback_hours": [hour + 3],
        "payback_cap": 1.5,
        "price_cap": "1",
        "bid_deadline": hour_start(hour) - 600,
    }
    assert is_problem(
        api.post(
            "/v1/dso/flexibility/requirements/prepare", json=requirement, headers=sign_in(api, world["alice"])
        ),
        403,
    )
    late = dict(requirement, bid_deadline=hour_start(hour) + 60)
    assert "InvalidBidDeadline" in str(
        is_problem(api.post("/v1/dso/flexibility/requirements/prepare", json=late, headers=dso), 409)
    )
    prepared = api.post("/v1/dso/flexibility/requirements/prepare", json=requirement, headers=dso)
    assert prepared.status_code == 200, prepared.text
    assert [o["status"] for o in signed_and_relayed(api, world["dso"], prepared.json())] == ["success"] * 2
    requirement_id = flex.requirement_count()
    community.client.forget_nonces()
    flex.authorize_aggregator(keyring["alice"], "M-A", keyring["aggregator"].address)
    listed = [
        r for r in api.get("/v1/flexibility/requirements").json() if r["requirement_id"] == requirement_id
    ]
    assert listed and listed[0]["min_kw"] == 2.0 and listed[0]["escrow"] == "2" and listed[0]["bids"] == []
    bid = {
        "requirement_id": requirement_id,
        "load_point": 3,
        "price": "0.5",
        "kw": 2.0,
        "payback_hour": hour + 3,
        "payback_kw": 2.0,
        "meters": ["M-A"],
    }
    alice = sign_in(api, world["alice"])
    assert is_problem(api.post("/v1/aggregator/bids/prepare", json=bid, headers=alice), 403)["needed_role"]
    aggregator = sign_in(api, world["aggregator"])
    unknown = dict(bid, requirement_id=requirement_id + 100)
    assert (
        "requirement_id"
        in is_problem(api.post("/v1/aggregator/bids/prepare", json=unknown, headers=aggregator), 404)[
            "detail"
        ]
    )
    above_cap = dict(bid, price="1.5")
    assert "InvalidBidPrice" in str(
        is_problem(api.post("/v1/aggregator/bids/prepare", json=above_cap, headers=aggregator), 409)
    )
    prepared = api.post("/v1/aggregator/bids/prepare", json=bid, headers=aggregator)
    assert prepared.status_code == 200, prepared.text
    (outcome,) = signed_and_relayed(api, world["aggregator"], prepared.json())
    assert outcome["status"] == "success"
    (mine,) = [b for b in api.get("/v1/aggregator/bids", headers=aggregator).json() if b["meters"] == ["M-A"]]
    assert mine["kw"] == 2.0 and mine["price"] == "0.5" and mine["fraction"] == 0.0 and not mine["settled"]
    listed = [
        r for r in api.get("/v1/flexibility/requirements").json() if r["requirement_id"] == requirement_id
    ]
    assert [b["bid_id"] for b in listed[0]["bids"]] == [mine["bid_id"]]
