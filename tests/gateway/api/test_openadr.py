"""The OpenADR 3.0.1 VTN: an unmodified OpenADR 3 client (PyPI ``openadr3``) reads a
device's capacity band over HTTP as IMPORT/EXPORT_CAPACITY_LIMIT events, the limits are the
chain's band in force, every VEN sees only its own, and tokens stay in their lane."""

from __future__ import annotations

import argparse
import base64
import time

import openadr3
import pytest
from openadr3.entities.raw import RawEvent, RawProgram, RawVen

from contracts import clock
from contracts.limits import LimitationKind, LimitedFlexibility
from gateway.api.auth import Session
from gateway.api.openadr import (
    BASE_PATH,
    BL_CLIENT_ID,
    EXPORT_LIMIT,
    HORIZON_MINUTES,
    IMPORT_LIMIT,
    TOKEN_TTL_S,
    VtnAuthority,
    VtnClient,
    capacity_intervals,
    client_secret,
    combine,
    dso_layer,
    limit_types,
)
from gateway.api.problems import Problem
from node.cli import openadr as openadr_cli
from node.cli.errors import CliError
from tests.gateway.api.conftest import SECRET, sign_in

PROBLEM = "application/problem+json"
TOKEN = BASE_PATH + "/auth/token"
# OpenADR 3.0.1's program fields (the 3.1 client's RawProgram knows fewer and ignores the rest)
PROGRAM_FIELDS_301 = {
    "id", "createdDateTime", "modificationDateTime", "objectType", "programName", "programLongName",
    "retailerName", "retailerLongName", "programType", "country", "principalSubdivision", "timeZoneOffset",
    "intervalPeriod", "programDescriptions", "bindingEvents", "localPrice", "payloadDescriptors", "targets",
}  # fmt: skip


def is_problem(answer, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM), answer.headers["content-type"]
    body = answer.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def oauth_error(answer, status: int, error: str) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == error, body
    assert answer.headers["cache-control"] == "no-store"
    return body


def token_of(api, client_id: str) -> dict[str, str]:
    form = {"grant_type": "client_credentials", "client_id": client_id}
    form["client_secret"] = client_secret(SECRET, client_id)
    answer = api.post(TOKEN, data=form)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def ev01(api) -> dict[str, str]:
    return token_of(api, "EV01")


@pytest.fixture(scope="module")
def dso(api) -> dict[str, str]:
    return token_of(api, BL_CLIENT_ID)


def per_minute(raw_event: dict) -> dict[int, dict[str, float]]:
    """Minute → {payload type: kW} of an event, read through the client's own models."""
    limits = {}
    for interval in openadr3.coerce(raw_event).resolved_intervals():
        start, end = interval.interval_period.period
        for minute in range(clock.minute_of(start.timestamp()), clock.minute_of(end.timestamp())):
            assert minute not in limits, "intervals overlap"
            limits[minute] = {payload.type: payload.values[0] for payload in interval.payloads}
    return limits


def assert_round_trip(model, raw: dict) -> None:
    """The client's raw model takes ``raw`` as it is and knows every field of it."""
    assert model.model_validate(raw).model_dump(by_alias=True, exclude_unset=True) == raw


# ----------------------------------------------------------------- the client


def test_a_charger_reads_its_program_and_events_with_the_openadr3_client(served, world):
    base = served + BASE_PATH
    before = clock.minute_of(time.time())
    token = openadr3.fetch_token(base, "EV01", client_secret(SECRET, "EV01"), scopes=["read_all"])
    with openadr3.create_ven_client(base, token) as ven:
        raw_programs = ven.get_programs().json()
        (raw_program,) = raw_programs
        RawProgram.model_validate(raw_program)
        assert set(raw_program) <= PROGRAM_FIELDS_301
        program = ven.find_program_by_name("api test")
        assert program is not None and program.id == raw_program["id"] == "api-test"
        assert {(d.payload_type, d.units) for d in program.payload_descriptors} == {
            (IMPORT_LIMIT, "KW"),
            (EXPORT_LIMIT, "KW"),
        }
        assert program.interval_period.start.timestamp() <= time.time()
        assert ven.program(program.id).program_name == "api test"

        raw_events = ven.get_events(programID=program.id).json()
        (raw_event,) = raw_events
        assert_round_trip(RawEvent, raw_event)
        event = ven.event(raw_event["id"])
        assert event.id == "band-EV01" and event.program_id == program.id
        assert [(d.payload_type, d.units) for d in event.payload_descriptors] == [(IMPORT_LIMIT, "KW")]
        assert [i.id for i in event.intervals] == list(range(len(event.intervals)))

        (raw_ven,) = ven.get_vens().json()
        assert_round_trip(RawVen, raw_ven)
        assert ven.ven("EV01").ven_name == "EV01"
    after = clock.minute_of(time.time())

    limits = per_minute(raw_event)
    first = min(limits)
    assert before <= first <= after and sorted(limits) == list(range(first, first + HORIZON_MINUTES))
    assert limits[first] == {IMPORT_LIMIT: 7.0}  # the fixture's band, 0..7 kW
    for minute, payload in limits.items():  # every minute the band in force on chain
        in_force = world.community.limits.band_at("EV01", clock.minute_start(minute))
        assert payload == {IMPORT_LIMIT: max(in_force.p_max_kw, 0.0)}, minute


def test_a_battery_gets_import_and_export_limits(api):
    bat01 = token_of(api, "BAT01")
    (raw,) = api.get(BASE_PATH + "/events", headers=bat01).json()
    assert_round_trip(RawEvent, raw)
    assert raw["id"] == "band-BAT01"
    assert [(d["payloadType"], d["units"]) for d in raw["payloadDescriptors"]] == [
        (IMPORT_LIMIT, "KW"),
        (EXPORT_LIMIT, "KW"),
    ]
    limits = per_minute(raw)
    assert limits[min(limits)] == {IMPORT_LIMIT: 4.5, EXPORT_LIMIT: 4.0}  # band -4..4.5 kW
    (ven,) = api.get(BASE_PATH + "/vens", headers=bat01).json()
    attributes = {a["type"]: a["values"] for a in ven["attributes"]}
    assert attributes["MAX_POWER_CONSUMPTION"] == [5.0] and attributes["MAX_POWER_EXPORT"] == [5.0]


def test_the_dso_reads_every_event_and_filters_them(api, dso):
    events = api.get(BASE_PATH + "/events", headers=dso).json()
    assert [e["id"] for e in events] == ["band-BAT01", "band-EV01"]
    for raw in events:
        assert_round_trip(RawEvent, raw)
    query = {"targetType": "VEN_NAME", "targetValues": ["EV01"]}
    assert [e["id"] for e in api.get(BASE_PATH + "/events", params=query, headers=dso).json()] == [
        "band-EV01"
    ]
    page = api.get(BASE_PATH + "/events", params={"skip": 1, "limit": 1}, headers=dso).json()
    assert [e["id"] for e in page] == ["band-EV01"]
    assert api.get(BASE_PATH + "/events", params={"limit": 0}, headers=dso).json() == []
    assert api.get(BASE_PATH + "/events", params={"programID": "other"}, headers=dso).json() == []
    assert api.get(BASE_PATH + "/events/band-BAT01", headers=dso).json()["id"] == "band-BAT01"
    assert [v["venName"] for v in api.get(BASE_PATH + "/vens", headers=dso).json()] == ["BAT01", "EV01"]
    assert [
        v["id"] for v in api.get(BASE_PATH + "/vens", params={"venName": "EV01"}, headers=dso).json()
    ] == ["EV01"]
    named = {"targetType": "PROGRAM_NAME", "targetValues": ["api test"]}
    assert len(api.get(BASE_PATH + "/programs", params=named, headers=dso).json()) == 1
    named["targetValues"] = ["another"]
    assert api.get(BASE_PATH + "/programs", params=named, headers=dso).json() == []

    is_problem(api.get(BASE_PATH + "/events", params={"limit": 51}, headers=dso), 422)
    is_problem(api.get(BASE_PATH + "/events", params={"skip": -1}, headers=dso), 422)
    is_problem(api.get(BASE_PATH + "/events", params={"programID": "a b"}, headers=dso), 422)
    group = {"targetType": "GROUP", "targetValues": ["x"]}
    assert (
        "targetType" in is_problem(api.get(BASE_PATH + "/events", params=group, headers=dso), 400)["detail"]
    )
    is_problem(api.get(BASE_PATH + "/events", params={"targetType": "VEN_NAME"}, headers=dso), 400)


def test_a_ven_reads_only_its_own_objects(api, ev01):
    assert [e["id"] for e in api.get(BASE_PATH + "/events", headers=ev01).json()] == ["band-EV01"]
    other = {"targetType": "VEN_NAME", "targetValues": ["BAT01"]}
    assert api.get(BASE_PATH + "/events", params=other, headers=ev01).json() == []
    assert "another VEN" in is_problem(api.get(BASE_PATH + "/events/band-BAT01", headers=ev01), 403)["detail"]
    is_problem(api.get(BASE_PATH + "/vens/BAT01", headers=ev01), 403)
    assert [v["id"] for v in api.get(BASE_PATH + "/vens", headers=ev01).json()] == ["EV01"]
    is_problem(api.get(BASE_PATH + "/events/band-NOPE", headers=ev01), 404)
    is_problem(api.get(BASE_PATH + "/events/EV01", headers=ev01), 404)
    is_problem(api.get(BASE_PATH + "/programs/nope", headers=ev01), 404)
    is_problem(api.get(BASE_PATH + "/vens/NOPE", headers=ev01), 404)
    is_problem(api.get(BASE_PATH + "/reports", headers=ev01), 501)
    is_problem(api.post(BASE_PATH + "/subscriptions", json={}, headers=ev01), 501)
    is_problem(api.get(BASE_PATH + "/reports"), 401)


# -------------------------------------------------------------- credentials


def test_bad_credentials_are_refused_as_rfc_6749_says(api):
    good = {
        "grant_type": "client_credentials",
        "client_id": "EV01",
        "client_secret": client_secret(SECRET, "EV01"),
    }
    wrong = dict(good, client_secret=client_secret(SECRET, "BAT01"))
    answer = api.post(TOKEN, data=wrong)
    oauth_error(answer, 401, "invalid_client")
    assert answer.headers["www-authenticate"].startswith("Bearer")
    unknown = dict(good, client_id="NOPE", client_secret=client_secret(SECRET, "NOPE"))
    oauth_error(api.post(TOKEN, data=unknown), 401, "invalid_client")
    oauth_error(api.post(TOKEN, data=dict(good, grant_type="password")), 400, "unsupported_grant_type")
    oauth_error(
        api.post(TOKEN, data={"grant_type": "client_credentials", "client_id": "EV01"}),
        400,
        "invalid_request",
    )
    oauth_error(api.post(TOKEN, data={"client_id": "EV01"}), 400, "invalid_request")
    oauth_error(api.post(TOKEN, json=good), 400, "invalid_request")
    oauth_error(
        api.post(TOKEN, content="grant_type=client_credentials&grant_type=x", headers=FORM),
        400,
        "invalid_request",
    )

    basic = base64.b64encode(f"EV01:{good['client_secret']}".encode()).decode()
    answer = api.post(
        TOKEN, data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == TOKEN_TTL_S and body["access_token"]
    assert answer.headers["cache-control"] == "no-store"
    forged = base64.b64encode(b"EV01:0000").decode()
    answer = api.post(
        TOKEN, data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {forged}"}
    )
    oauth_error(answer, 401, "invalid_client")
    assert answer.headers["www-authenticate"].startswith("Basic")
    both = api.post(TOKEN, data=good, headers={"Authorization": f"Basic {basic}"})
    oauth_error(both, 400, "invalid_request")

    server = api.get(BASE_PATH + "/auth/server").json()
    assert server["tokenURL"] == "http://testserver" + TOKEN


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_tokens_expire_and_stay_in_their_lane(api, world, ev01, dso):
    events = BASE_PATH + "/events"
    missing = is_problem(api.get(events), 401)
    assert "token" in missing["detail"]
    assert api.get(events).headers["www-authenticate"].startswith("Bearer")
    is_problem(api.get(events, headers={"Authorization": "Bearer not.a.token"}), 401)
    is_problem(api.get(events, headers={"Authorization": "Basic abc"}), 401)
    late = VtnAuthority(SECRET, clock=lambda: time.time() - 2 * TOKEN_TTL_S).token_for(VtnClient("EV01"))
    assert (
        "expired" in is_problem(api.get(events, headers={"Authorization": f"Bearer {late}"}), 401)["detail"]
    )
    foreign = VtnAuthority(b"\x01" * 32).token_for(VtnClient("EV01"))
    is_problem(api.get(events, headers={"Authorization": f"Bearer {foreign}"}), 401)
    pretender = VtnAuthority(SECRET).token_for(VtnClient("EV01", business_logic=True))  # BL scope, VEN name
    is_problem(api.get(events, headers={"Authorization": f"Bearer {pretender}"}), 401)

    member = sign_in(api, world["bob"])  # a SIWE member token (bob owns EV01) is no VTN token
    is_problem(api.get(events, headers=member), 401)
    member_token = world.context.sessions.token_for(Session(world["bob"].address, int(time.time()) + 600))
    is_problem(api.get(events, headers={"Authorization": f"Bearer {member_token}"}), 401)
    for vtn_token in (ev01, dso):  # and VTN tokens are no member tokens
        is_problem(api.get("/v1/me", headers=vtn_token), 401)
        with pytest.raises(Problem):
            world.context.sessions.session_of(vtn_token["Authorization"])


# ------------------------------------------------------------------ the bands


def test_a_dso_limitation_tightens_the_event_without_a_view_call_per_minute(api, world, ev01):
    community = world.community
    first = clock.minute_of(world.now()) + 20
    call = community.limits.post_flexibility_limitation_call(
        "EV01",
        clock.minute_start(first),
        clock.minute_start(first + 5),
        0.0,
        2.5,
        LimitationKind.FORESEEN,
        "test",
    )
    community.client.transact(call, world["dso"])
    resolver = api.app.state.openadr.resolver
    reads = resolver.chain_reads
    (raw,) = api.get(BASE_PATH + "/events", headers=ev01).json()
    assert resolver.chain_reads == reads  # every minute of the horizon has an indexed OCM band
    limits = per_minute(raw)
    assert all(limits[minute] == {IMPORT_LIMIT: 2.5} for minute in range(first, first + 5))
    assert limits[first - 1] == limits[first + 5] == {IMPORT_LIMIT: 7.0}
    for minute in range(first - 1, first + 6):
        assert (
            limits[minute][IMPORT_LIMIT]
            == community.limits.band_at("EV01", clock.minute_start(minute)).p_max_kw
        )


def test_minutes_without_a_published_band_ask_the_chain_once(api, world):
    resolver = api.app.state.openadr.resolver
    first = clock.minute_of(world.now()) + 6 * 60  # after the fixture's four hours of bands
    reads = resolver.chain_reads
    bands = resolver.bands(["EV01", "BAT01"], first, 3)
    assert bands == {"EV01": [(0.0, 11.0)] * 3, "BAT01": [(-5.0, 5.0)] * 3}  # the hardware bounds
    assert resolver.chain_reads == reads + 6
    assert resolver.bands(["EV01", "BAT01"], first, 3) == bands and resolver.chain_reads == reads + 6


def test_bands_combine_and_merge_as_the_contract_says():
    assert combine((0.0, 7.0), None) == (0.0, 7.0)
    assert combine((0.0, 7.0), (0.0, 3.0)) == (0.0, 3.0)
    assert combine((-4.0, 4.5), (-2.0, 9.0)) == (-2.0, 4.5)
    assert combine((0.0, 7.0), (8.0, 9.0)) == (8.0, 9.0)  # no overlap: the DSO limitation wins
    limitations = [
        LimitedFlexibility(0, "X", 60 * 10, 60 * 20, 0.0, 3.0, 1),
        LimitedFlexibility(1, "X", 60 * 15, 60 * 16, 0.0, 1.0, 2),  # later: overwrites minute 15
    ]
    layer = dso_layer(limitations, 12, 18)
    assert layer == {
        12: (0.0, 3.0),
        13: (0.0, 3.0),
        14: (0.0, 3.0),
        15: (0.0, 1.0),
        16: (0.0, 3.0),
        17: (0.0, 3.0),
    }

    series = [(0.0, 7.0)] * 3 + [(0.0, 3.0)] * 2 + [(-1.0, 7.0)] + [(1.0, 7.0)] * 61
    intervals = capacity_intervals(series, 100, [IMPORT_LIMIT])
    assert [i["id"] for i in intervals] == [0, 1, 2]  # export does not matter to an import-only device
    assert [i["intervalPeriod"]["duration"] for i in intervals] == ["PT3M", "PT2M", "PT1H2M"]
    assert intervals[1]["intervalPeriod"]["start"] == "1970-01-01T01:43:00Z"
    both = capacity_intervals([(0.5, 2.0), (-3.0, -1.0)], 0, [IMPORT_LIMIT, EXPORT_LIMIT])
    assert [i["payloads"] for i in both] == [
        [{"type": IMPORT_LIMIT, "values": [2.0]}, {"type": EXPORT_LIMIT, "values": [0.0]}],
        [{"type": IMPORT_LIMIT, "values": [0.0]}, {"type": EXPORT_LIMIT, "values": [3.0]}],
    ]
    assert str(both[0]["payloads"][1]["values"][0]) == "0.0"  # never -0.0

    class Flex:
        def __init__(self, low, high):
            self.p_low_kw, self.p_high_kw = low, high

    assert limit_types(Flex(0.0, 11.0)) == [IMPORT_LIMIT]
    assert limit_types(Flex(-5.0, 5.0)) == [IMPORT_LIMIT, EXPORT_LIMIT]
    assert limit_types(Flex(-5.0, 0.0)) == [EXPORT_LIMIT]


# ----------------------------------------------------------------------- CLI


def _lec(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lec")
    openadr_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_the_credentials_command_prints_what_the_vtn_accepts(api, tmp_path, capsys):
    (tmp_path / "api-secret").write_text(SECRET.hex())
    assert _lec(["openadr", "credentials", "EV01", "--data-dir", str(tmp_path)]) == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert printed == {"client_id": "EV01", "client_secret": client_secret(SECRET, "EV01")}
    form = {"grant_type": "client_credentials", **printed}
    assert api.post(TOKEN, data=form).status_code == 200

    with pytest.raises(CliError, match="no API secret"):
        _lec(["openadr", "credentials", "EV01", "--data-dir", str(tmp_path / "elsewhere")])
    with pytest.raises(CliError, match="client id"):
        _lec(["openadr", "credentials", "EV 01", "--data-dir", str(tmp_path)])


def test_the_vtn_is_in_the_openapi_document(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert {
        BASE_PATH + p for p in ("/auth/token", "/programs", "/events", "/events/{eventID}", "/vens")
    } <= set(paths)
