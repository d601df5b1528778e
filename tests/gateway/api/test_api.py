"""The dApp API over a live community: every route, every role, sign-in, transactions
prepared, signed by the member's own key and relayed, bad input answered as problems."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from eth_account.messages import encode_defunct

from contracts import clock
from contracts.market import Side
from gateway.api.app import create_app
from gateway.api.context import ApiContext, ApiSettings
from tests.gateway.api.conftest import SECRET, sign_in, siwe_message

PROBLEM = "application/problem+json"


def is_problem(answer, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM), answer.headers["content-type"]
    body = answer.json()
    assert (
        body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("https://")
    )
    return body


def signed_and_relayed(api, signer, prepared: dict) -> list[dict]:
    """Sign every prepared transaction with ``signer``'s key (as a wallet would) and relay it;
    the final status of each."""
    outcomes = []
    for transaction in prepared["transactions"]:
        raw = signer.account.sign_transaction(transaction).raw_transaction
        answer = api.post("/v1/tx", json={"raw": "0x" + bytes(raw).hex()})
        assert answer.status_code == 202, answer.text
        tx_hash = answer.json()["hash"]
        deadline = time.monotonic() + 20
        while (status := api.get(f"/v1/tx/{tx_hash}").json())["status"] in ("pending", "unknown"):
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        outcomes.append(status)
    return outcomes


@pytest.fixture(scope="module")
def alice(api, world) -> dict:
    return sign_in(api, world["alice"])


@pytest.fixture(scope="module")
def bob(api, world) -> dict:
    return sign_in(api, world["bob"])


# ------------------------------------------------------------------ public


def test_public_reads_describe_the_community_from_the_chain(api, world):
    info = api.get("/v1/community").json()
    assert info["name"] == "api test" and info["chain_id"] == world.community.client.chain_id
    assert info["contracts"] == world.community.deployment.addresses and info["members"] == 2
    feeder = api.get("/v1/feeder").json()
    assert {b["bus"] for b in feeder["buses"]} == set(range(5)) and len(feeder["branches"]) == 4
    assert {f["flex_id"]: f["bus"] for f in feeder["flexibilities"]} == {"BAT01": 3, "EV01": 4}
    flexibilities = {f["flex_id"]: f for f in api.get("/v1/flexibilities").json()}
    assert flexibilities["EV01"]["band_now"] == {"p_min_kw": 0.0, "p_max_kw": 7.0, "source": "ocm"}
    assert flexibilities["BAT01"]["owner"] == world["alice"].address


def test_bands_are_the_published_ones_minute_by_minute(api, world):
    now = world.now()
    answer = api.get("/v1/bands", params={"flex_id": "BAT01", "from_time": now, "to_time": now + 600}).json()
    (bat,) = answer["flexibilities"]
    assert len(bat["points"]) == 10 and all(
        p["p_min_kw"] == -4.0 and p["p_max_kw"] == 4.5 for p in bat["points"]
    )
    assert [p["time"] for p in bat["points"]] == list(
        range(answer["from_time"], answer["from_time"] + 600, 60)
    )
    is_problem(api.get("/v1/bands", params={"flex_id": "NOPE"}), 404)
    is_problem(api.get("/v1/bands", params={"from_time": now, "to_time": now - 60}), 422)
    is_problem(api.get("/v1/bands", params={"from_time": now, "to_time": now + 10 * 86400}), 422)


# ------------------------------------------------------------------ sign-in


def test_sign_in_gives_a_token_with_the_registry_roles(api, world, alice):
    me = api.get("/v1/me", headers=alice).json()
    assert me["address"] == world["alice"].address and me["name"] == "alice" and me["roles"] == ["MEMBER"]
    assert [f["flex_id"] for f in me["flexibilities"]] == ["BAT01"]
    assert {m["meter_id"] for m in me["meters"]} == {"M-A", "M-BAT01"}


def _signed(api, signer, domain="testserver", chain_id=None, issued=None, nonce=None):
    nonce = nonce or api.get("/v1/auth/nonce").json()["nonce"]
    chain_id = chain_id or api.get("/v1/community").json()["chain_id"]
    message = siwe_message(signer.address, domain, chain_id, nonce, issued)
    signature = "0x" + bytes(signer.account.sign_message(encode_defunct(text=message)).signature).hex()
    return message, signature, nonce


def test_sign_in_refuses_what_does_not_hold(api, world):
    alice, bob = world["alice"], world["bob"]
    message, signature, _nonce = _signed(api, alice, domain="evil.example")
    assert (
        "domain"
        in is_problem(api.post("/v1/auth/siwe", json={"message": message, "signature": signature}), 401)[
            "detail"
        ]
    )
    message, signature, _ = _signed(api, alice, chain_id=1)
    assert (
        "chain id"
        in is_problem(api.post("/v1/auth/siwe", json={"message": message, "signature": signature}), 401)[
            "detail"
        ]
    )
    message, signature, _ = _signed(api, alice, issued=time.time() - 3600)
    assert (
        "issued-at"
        in is_problem(api.post("/v1/auth/siwe", json={"message": message, "signature": signature}), 401)[
            "detail"
        ]
    )
    message, _, _ = _signed(api, alice)
    _, bobs_signature, _ = _signed(api, bob)
    assert (
        "signature"
        in is_problem(api.post("/v1/auth/siwe", json={"message": message, "signature": bobs_signature}), 401)[
            "detail"
        ]
    )
    message, signature, _ = _signed(api, alice, nonce="abcdefgh12345678")
    assert (
        "nonce"
        in is_problem(api.post("/v1/auth/siwe", json={"message": message, "signature": signature}), 401)[
            "detail"
        ]
    )
    message, signature, _ = _signed(api, alice)
    assert api.post("/v1/auth/siwe", json={"message": message, "signature": signature}).status_code == 200
    replay = api.post("/v1/auth/siwe", json={"message": message, "signature": signature})
    assert "nonce" in is_problem(replay, 401)["detail"]  # a nonce signs in once
    bad = is_problem(api.post("/v1/auth/siwe", json={"message": "hello", "signature": signature}), 422)
    assert bad["detail"].startswith("message:")
    bad = is_problem(api.post("/v1/auth/siwe", json={"message": message, "signature": "0x1234"}), 422)
    assert bad["errors"][0]["field"] == "signature"


def test_tokens_expire_and_cannot_be_forged(api, world):
    is_problem(api.get("/v1/me"), 401)
    is_problem(api.get("/v1/me", headers={"Authorization": "Basic abc"}), 401)
    is_problem(api.get("/v1/me", headers={"Authorization": "Bearer not.a.token"}), 401)
    other = ApiContext(world.community, b"\x01" * 32, settings=ApiSettings(token_ttl_s=1))
    from fastapi.testclient import TestClient

    with TestClient(create_app(other)) as foreign:
        foreign_token = sign_in(foreign, world["alice"])
        is_problem(api.get("/v1/me", headers=foreign_token), 401)  # signed with another secret
        time.sleep(2.1)
        assert "expired" in is_problem(foreign.get("/v1/me", headers=foreign_token), 401)["detail"]


# ------------------------------------------------------------------ roles

MEMBER_ROUTES = [
    "/v1/me",
    "/v1/me/balance",
    "/v1/me/bands",
    "/v1/me/orders",
    "/v1/me/trades",
    "/v1/me/readings",
    "/v1/me/statements",
    "/v1/me/violations",
]
DSO_ROUTES = ["/v1/dso/bands", "/v1/dso/violations", "/v1/dso/limitations"]
OPERATOR_ROUTES = ["/v1/operator/slots", "/v1/operator/market"]


def test_every_private_route_refuses_every_other_role(api, world):
    tokens = {name: sign_in(api, world[name]) for name in ("stranger", "dso", "operator", "alice")}
    allowed = {"alice": MEMBER_ROUTES, "dso": DSO_ROUTES, "operator": OPERATOR_ROUTES}
    for route in MEMBER_ROUTES + DSO_ROUTES + OPERATOR_ROUTES:
        is_problem(api.get(route), 401)
        for name, header in tokens.items():
            answer = api.get(route, headers=header)
            if route in allowed.get(name, []):
                assert answer.status_code == 200, (route, name, answer.text)
            else:
                assert is_problem(answer, 403)["needed_role"] in ("MEMBER", "DSO", "MARKET_OPERATOR"), (
                    route,
                    name,
                )
    writes = [
        (
            "/v1/me/orders/prepare",
            {"slot": 1, "side": "buy", "asset_id": "X", "energy_kwh": 1, "limit_price": 1},
        ),
        (
            "/v1/dso/limitations/prepare",
            {"flex_id": "EV01", "start": 60, "end": 120, "p_min_kw": 0, "p_max_kw": 1},
        ),
    ]
    for route, body in writes:
        is_problem(api.post(route, json=body), 401)
        is_problem(api.post(route, json=body, headers=tokens["stranger"]), 403)


def test_a_revoked_role_is_gone_from_the_api(api, world):
    from contracts.registry import Role

    community, keyring = world.community, world.keyring
    header = sign_in(api, world["stranger"])
    community.registry.grant_role(keyring["admin"], Role.DSO, world["stranger"].address)
    world.context.roles._cache.clear()
    assert api.get("/v1/dso/violations", headers=header).status_code == 200
    community.registry.revoke_role(keyring["admin"], Role.DSO, world["stranger"].address)
    world.context.roles._cache.clear()
    is_problem(api.get("/v1/dso/violations", headers=header), 403)


# ------------------------------------------------------------- transactions


def next_slot(world, ahead: int = 2) -> int:
    return world.community.clock.slot_of(world.now()) + ahead


def test_an_order_signed_by_the_member_is_relayed_and_seen_everywhere(api, world, alice):
    slot = next_slot(world)
    body = {"slot": slot, "side": "buy", "asset_id": "BAT01", "energy_kwh": 0.5, "limit_price": "0.2"}
    prepared = api.post("/v1/me/orders/prepare", json=body, headers=alice)
    assert prepared.status_code == 200, prepared.text
    (transaction,) = prepared.json()["transactions"]
    assert (
        transaction["to"] == world.community.market.address
        and transaction["chainId"] == world.community.client.chain_id
    )
    (outcome,) = signed_and_relayed(api, world["alice"], prepared.json())
    assert outcome["status"] == "success"
    (order,) = [
        o for o in world.community.market.open_orders(slot, Side.BUY) if o.owner == world["alice"].address
    ]
    book = api.get("/v1/market/book", params={"slot": slot}).json()
    assert [b["order_id"] for b in book["bids"]] == [order.order_id] and book["bids"][0]["energy_kwh"] == 0.5
    mine = api.get("/v1/me/orders", params={"open_only": True}, headers=alice).json()
    assert order.order_id in [o["order_id"] for o in mine]
    balance = api.get("/v1/me/balance", headers=alice).json()
    assert float(balance["deposit_locked"]) == pytest.approx(0.1)
    cancel = api.post(f"/v1/me/orders/{order.order_id}/cancel/prepare", headers=alice)
    (outcome,) = signed_and_relayed(api, world["alice"], cancel.json())
    assert outcome["status"] == "success"
    assert api.get("/v1/market/book", params={"slot": slot}).json()["bids"] == []


def test_a_trade_between_members_shows_in_trades_prices_and_the_schedule(api, world, alice, bob):
    slot = next_slot(world, 3)
    sell = {"slot": slot, "side": "sell", "asset_id": "BAT01", "energy_kwh": 0.5, "limit_price": "0.15"}
    buy = {"slot": slot, "side": "buy", "asset_id": "EV01", "energy_kwh": 0.5, "limit_price": "0.2"}
    signed_and_relayed(
        api, world["alice"], api.post("/v1/me/orders/prepare", json=sell, headers=alice).json()
    )
    signed_and_relayed(api, world["bob"], api.post("/v1/me/orders/prepare", json=buy, headers=bob).json())
    (trade,) = api.get("/v1/market/trades", params={"slot": slot}).json()
    assert trade["buyer"] == world["bob"].address and trade["seller"] == world["alice"].address
    assert trade["energy_kwh"] == 0.5 and trade["price"] == 0.15
    (price,) = api.get("/v1/market/prices", params={"from_slot": slot, "to_slot": slot}).json()
    assert price["trades"] == 1 and price["vwap"] == 0.15
    assert trade["trade_id"] in [t["trade_id"] for t in api.get("/v1/me/trades", headers=bob).json()]
    start = world.community.clock.start(slot)
    bands = api.get("/v1/me/bands", params={"from_time": start, "to_time": start + 900}, headers=alice).json()
    (bat,) = bands["flexibilities"]
    assert bat["schedule"] == [
        {"slot": slot, "start": start, "end": start + 900, "matched_net_kwh": -0.5, "avg_kw": -2.0}
    ]


def test_an_order_outside_the_band_is_refused_before_it_is_signed(api, world, bob):
    slot = next_slot(world, 4)
    body = {
        "slot": slot,
        "side": "buy",
        "asset_id": "EV01",
        "energy_kwh": 2.5,
        "limit_price": "0.2",
    }  # 10 kW > 7
    problem = is_problem(api.post("/v1/me/orders/prepare", json=body, headers=bob), 409)
    assert problem["error"] and problem["error"] in problem["detail"]


def test_the_relay_forwards_only_signed_transactions_to_the_community(api, world):
    is_problem(api.post("/v1/tx", json={"raw": "0xdeadbeef"}), 422)
    stranger = world["stranger"]
    elsewhere = {
        "to": stranger.address,
        "value": 1,
        "gas": 21000,
        "nonce": 0,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "chainId": world.community.client.chain_id,
    }
    raw = bytes(stranger.account.sign_transaction(elsewhere).raw_transaction).hex()
    assert "community's contracts" in is_problem(api.post("/v1/tx", json={"raw": "0x" + raw}), 422)["detail"]
    assert api.get("/v1/tx/0x" + "ab" * 32).json()["status"] == "unknown"
    is_problem(api.get("/v1/tx/0x1234"), 422)


def test_a_dso_limitation_is_prepared_for_the_dso_to_sign(api, world):
    dso = sign_in(api, world["dso"])
    start = clock.floor_to_minute(world.now()) + 3600
    body = {
        "flex_id": "EV01",
        "start": start,
        "end": start + 600,
        "p_min_kw": 0,
        "p_max_kw": 3,
        "reason": "works",
    }
    prepared = api.post("/v1/dso/limitations/prepare", json=body, headers=dso)
    assert prepared.status_code == 200, prepared.text
    (outcome,) = signed_and_relayed(api, world["dso"], prepared.json())
    assert outcome["status"] == "success"
    (limitation,) = [x for x in api.get("/v1/dso/limitations", headers=dso).json() if x["start"] == start]
    assert limitation["flex_id"] == "EV01" and limitation["p_max_kw"] == 3.0
    bad = dict(body, end=start)
    assert (
        is_problem(api.post("/v1/dso/limitations/prepare", json=bad, headers=dso), 422)["errors"][0]["field"]
        == "end"
    )


# ---------------------------------------------------------------- readings


def test_a_member_reads_only_her_own_meters(api, world, alice):
    readings = api.get("/v1/me/readings", params={"since": 0}, headers=alice).json()
    assert readings and {r["meter_id"] for r in readings} == {"M-A"}
    assert readings == sorted(readings, key=lambda r: r["time"])
    is_problem(api.get("/v1/me/readings", params={"meter_id": "M-B"}, headers=alice), 404)


def test_readings_show_the_phases_a_meter_measures(api, world, alice):
    readings = {r["time"]: r for r in api.get("/v1/me/readings", params={"since": 0}, headers=alice).json()}
    single, three = (readings[t] for t in sorted(readings)[:2])  # 7 and 6 minutes back: L2 alone, then L1-L3
    assert single["phases"] == {"L2": {"p_kw": 0.9, "q_kvar": 0.0, "v_pu": 0.997, "theta_deg": -120.5}}
    assert sorted(three["phases"]) == ["L1", "L2", "L3"] and three["phases"]["L3"]["theta_deg"] == 119.5
    assert [r["phases"] for r in readings.values()].count(None) == len(readings) - 2, "plain: null"


# -------------------------------------------------------------- bad input


def test_bad_input_is_a_problem_naming_the_field(api, world, alice):
    cases = [
        ({"slot": -1, "side": "buy", "asset_id": "BAT01", "energy_kwh": 1, "limit_price": 1}, "slot"),
        ({"slot": 1, "side": "hold", "asset_id": "BAT01", "energy_kwh": 1, "limit_price": 1}, "side"),
        ({"slot": 1, "side": "buy", "asset_id": "BAT01", "energy_kwh": 0, "limit_price": 1}, "energy_kwh"),
        ({"slot": 1, "side": "buy", "asset_id": "BAT01", "energy_kwh": 1, "limit_price": "x"}, "limit_price"),
        ({"slot": 1, "side": "buy", "asset_id": "BAT01", "energy_kwh": 1}, "limit_price"),
    ]
    for body, field in cases:
        problem = is_problem(api.post("/v1/me/orders/prepare", json=body, headers=alice), 422)
        assert [e["field"] for e in problem["errors"]] == [field], problem
    problem = is_problem(api.post("/v1/me/orders/prepare", content=b"{", headers=alice), 422)
    assert problem["errors"]
    is_problem(api.get("/v1/market/book", params={"slot": "soon"}), 422)
    assert "openapi.json" in is_problem(api.get("/v1/nothing"), 404)["detail"]
    is_problem(api.delete("/v1/community"), 405)


def test_no_key_ever_appears_in_an_answer(api, world, alice):
    keys = {bytes(world.keyring[name].account.key).hex() for name in world.keyring.names}
    bodies = [
        api.get(route, headers=alice).text for route in [*MEMBER_ROUTES, "/v1/community", "/v1/flexibilities"]
    ]
    bodies.append(api.get("/openapi.json").text)
    assert not any(key in body for key in keys for body in bodies)


# --------------------------------------------------------------- operations


def test_health_metrics_and_openapi(api, world):
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["head"] >= 1
    api.get("/v1/community")
    metrics = api.get("/metrics").text
    assert 'lec_api_requests_total{method="GET",route="/v1/community",status="200"}' in metrics
    schema = api.get("/openapi.json").json()
    assert "/v1/me/orders/prepare" in schema["paths"] and "/v1/auth/siwe" in schema["paths"]


def test_a_client_over_its_rate_is_told_when_to_come_back(world):
    from fastapi.testclient import TestClient

    context = ApiContext(world.community, SECRET, settings=ApiSettings(requests_per_second=1, burst=3))
    with TestClient(create_app(context)) as client:
        answers = [client.get("/v1/auth/nonce") for _ in range(5)]
        assert [a.status_code for a in answers[:3]] == [200, 200, 200]
        problem = is_problem(answers[4], 429)
        assert int(answers[4].headers["Retry-After"]) >= 1 and "per second" in problem["detail"]
        assert client.get("/health").status_code == 200  # operations are never limited


def test_the_served_api_answers_over_http(served):
    import httpx

    answer = httpx.get(f"{served}/v1/community", timeout=10)
    assert answer.status_code == 200 and json.loads(answer.text)["name"] == "api test"


# ------------------------------------------------------ deposits and settlement


def test_a_deposit_and_a_withdrawal_signed_in_the_wallet(api, world, alice):
    before = api.get("/v1/me/balance", headers=alice).json()
    withdraw = api.post("/v1/me/withdraw/prepare", json={"tokens": "2.5"}, headers=alice)
    assert withdraw.status_code == 200, withdraw.text
    assert [o["status"] for o in signed_and_relayed(api, world["alice"], withdraw.json())] == ["success"]
    deposit = api.post("/v1/me/deposit/prepare", json={"tokens": "1.25"}, headers=alice).json()
    approve, put = deposit["transactions"]
    assert approve["to"] == world.community.token.address and put["to"] == world.community.settlement.address
    assert put["nonce"] == approve["nonce"] + 1
    assert [o["status"] for o in signed_and_relayed(api, world["alice"], deposit)] == ["success", "success"]
    after = api.get("/v1/me/balance", headers=alice).json()
    assert Decimal(after["wallet_tokens"]) == Decimal(before["wallet_tokens"]) + Decimal("1.25")
    assert Decimal(after["deposit_free"]) == Decimal(before["deposit_free"]) - Decimal("1.25")
    too_much = api.post("/v1/me/withdraw/prepare", json={"tokens": "100000"}, headers=alice)
    assert is_problem(too_much, 409)["error"]  # the contract's refusal, before anything is signed
    is_problem(api.post("/v1/me/withdraw/prepare", json={"tokens": "-1"}, headers=alice), 422)


def test_settled_slots_show_as_statements_to_everyone_and_to_the_member(api, world, alice):
    community, keyring = world.community, world.keyring
    slot = community.clock.slot_of(world.now()) - 4  # ended at least 45 minutes ago: final
    community.market.finalize_slot(keyring["operator"], slot)  # no trades: one step
    community.settlement.settle(
        keyring["operator"], slot, [keyring[name].address for name in ("alice", "bob")]
    )
    public = api.get("/v1/settlements", params={"slot": slot}).json()
    assert {s["member"] for s in public} == {world["alice"].address, world["bob"].address}
    mine = api.get("/v1/me/statements", headers=alice).json()
    assert [s["slot"] for s in mine if s["slot"] == slot] == [slot]
    assert all(s["member"] == world["alice"].address for s in mine)
    assert api.get("/v1/me/violations", headers=alice).json() == []


def test_the_operator_sees_slots_and_the_market(api, world):
    operator = sign_in(api, world["operator"])
    slots = api.get("/v1/operator/slots", params={"back": 1, "ahead": 2}, headers=operator).json()
    current = world.community.clock.slot_of(world.now())
    assert [s["slot"] for s in slots] == [current - 1, current, current + 1, current + 2]
    assert all(s["gate_closure"] <= s["start"] for s in slots)
    market = api.get("/v1/operator/market", headers=operator).json()
    assert market["clearing_mode"] == "continuous" and market["terms"]["import_price"] == 0.3
    is_problem(api.get("/v1/operator/slots", params={"back": 1000}, headers=operator), 422)


def test_the_dso_reads_the_oracles_last_cycle(api, world, tmp_path):
    dso = sign_in(api, world["dso"])
    saved = world.context.ocm_status_file
    try:
        world.context.ocm_status_file = tmp_path / "status.json"
        assert "no OCM cycle" in is_problem(api.get("/v1/dso/ocm", headers=dso), 404)["detail"]
        (tmp_path / "status.json").write_text(json.dumps({"version": 1, "minute": 1, "feasible": True}))
        assert api.get("/v1/dso/ocm", headers=dso).json()["feasible"] is True
    finally:
        world.context.ocm_status_file = saved
    bands = api.get("/v1/dso/bands", headers=dso).json()
    assert {f["flex_id"] for f in bands["flexibilities"]} == {"BAT01", "EV01"}
    assert api.get("/v1/dso/violations", headers=dso).json() == []


def test_nested_and_huge_bodies_are_refused_before_they_are_parsed(api):
    deep = "[" * 100_000 + "]" * 100_000  # json.loads of this would crash the process, not raise
    answer = api.post("/v1/tx", content=deep, headers={"content-type": "application/json"})
    assert "nested deeper" in is_problem(answer, 400)["detail"]
    huge = '{"raw": "0x' + "ab" * 300_000 + '"}'
    assert "at most" in is_problem(api.post("/v1/tx", content=huge), 413)["detail"]
    token = {"grant_type": "client_credentials", "client_id": "EV01", "client_secret": "x" * 600_000}
    is_problem(api.post("/openadr3/3.0.1/auth/token", data=token), 413)
    assert api.get("/health").status_code == 200  # the server is still there
