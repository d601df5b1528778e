"""Payload parsing, canonical form and signatures, without a broker or chain."""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.ledger import PhaseReading, Reading
from gateway.payload import (
    MAX_PAYLOAD_BYTES,
    SECP256K1_N,
    JsonNumber,
    Reason,
    Rejection,
    _recover,
    canonical_bytes,
    canonical_json,
    decode_json,
    parse_payload,
    sign_payload,
)

KEY = Account.from_key("0x" + "11" * 32)
READING = Reading("M01", 1_767_225_600, 1.25, -0.1, 1.012, -0.42)


def plain(**overrides) -> dict:
    fields = {"meter_id": "M01", "time": READING.time, "seq": 7, "p_kw": 1.25, "q_kvar": -0.1, "v_pu": 1.012,
              "theta_deg": -0.42}  # fmt: skip
    return sign_payload({**fields, **overrides}, KEY)


def parse(payload, topic_meter: str = "M01") -> object:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_payload(raw, topic_meter, 230.0)


def reason_of(payload, topic_meter: str = "M01") -> Reason:
    with pytest.raises(Rejection) as caught:
        parse(payload, topic_meter)
    return caught.value.reason


def test_canonical_form_sorts_keys_drops_signature_and_keeps_number_text():
    raw = b'{"v_pu": 1.0100, "meter_id": "M\xc3\xa9", "signature": "0x00", "obis": {"b": 1e3, "a": -0}}'
    assert (
        canonical_bytes(decode_json(raw))
        == '{"meter_id":"Mé","obis":{"a":-0,"b":1e3},"v_pu":1.0100}'.encode()
    )


def test_signed_json_payload_parses_to_the_reading_and_signer():
    signed = parse(plain())
    assert signed.reading == READING and signed.seq == 7 and signed.signer == KEY.address
    assert parse(plain()).digest == signed.digest != parse(plain(seq=8)).digest


def test_voltage_in_volt_uses_the_nominal_voltage():
    fields = {k: v for k, v in plain().items() if k not in ("v_pu", "signature")}
    signed = parse(sign_payload({**fields, "v_volt": 235.75}, KEY))
    assert signed.reading.v_pu == pytest.approx(235.75 / 230)


def test_a_number_the_meter_wrote_its_own_way_verifies():
    fields = {k: v for k, v in plain().items() if k != "signature"}
    fields["p_kw"] = JsonNumber("1.2500")
    raw = canonical_json(sign_payload(fields, KEY)).encode()
    assert parse(raw).reading.p_kw == 1.25


def test_obis_form_maps_import_minus_export_and_units():
    obis = {
        "1-0:1.7.0": "0.000*kW",
        "1-0:2.7.0": 2500,  # a bare number is in kW
        "1-0:3.7.0": "120*var",
        "1-0:4.7.0": 0,
        "1-0:32.7.0": "232.3*V",
        "1-0:52.7.0": 230.1,
        "1-0:72.7.0": "229.9*V",
        "1-0:81.7.4": "-1.5*deg",
        "1-0:1.8.0": "12345.6*kWh",  # other codes are signed but ignored
    }
    signed = parse(sign_payload({"meter_id": "M01", "time": READING.time, "seq": 1, "obis": obis}, KEY))
    reading = signed.reading
    assert (reading.p_kw, reading.q_kvar, reading.theta_deg) == (-2500.0, 0.12, -1.5)
    assert reading.v_pu == pytest.approx((232.3 + 230.1 + 229.9) / 3 / 230)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{}", Reason.MALFORMED),
        (b'{"meter_id": "M01",', Reason.MALFORMED),
        (b"[1, 2]", Reason.MALFORMED),
        (b'{"p_kw": NaN}', Reason.MALFORMED),
        (b'{"seq": 1, "seq": 2}', Reason.MALFORMED),
        (b" " * (MAX_PAYLOAD_BYTES + 1), Reason.TOO_LARGE),
        ({"meter_id": "M01"}, Reason.SCHEMA),
        (plain(extra=1), Reason.SCHEMA),
        (plain(time=READING.time + 1), Reason.SCHEMA),
        (plain(seq=-1), Reason.SCHEMA),
        (plain(p_kw="1.0"), Reason.SCHEMA),
        (plain(v_volt=230.0), Reason.SCHEMA),
        (plain(meter_id="M02"), Reason.METER_MISMATCH),
        (canonical_json(plain(p_kw=JsonNumber("1e400"))).encode(), Reason.OUT_OF_RANGE),
        ({**plain(), "signature": "0x" + "00" * 65}, Reason.BAD_SIGNATURE),
        ({**plain(), "signature": "abc"}, Reason.BAD_SIGNATURE),
    ],
)
def test_refusals_name_their_reason(payload, reason):
    assert reason_of(payload) == reason


def test_a_tampered_payload_recovers_another_signer():
    assert parse({**plain(), "p_kw": 1.26}).signer != KEY.address


def test_rejection_echoes_time_and_seq_when_readable():
    with pytest.raises(Rejection) as caught:
        parse({**plain(), "signature": "0x1"})
    message = caught.value.message()
    assert (message["reason"], message["time"], message["seq"]) == ("bad_signature", READING.time, 7)


@settings(max_examples=60, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32).filter(lambda k: 0 < int.from_bytes(k, "big") < SECP256K1_N),
    message=st.binary(max_size=300),
    damage=st.one_of(st.none(), st.tuples(st.integers(0, 64), st.integers(1, 255))),
)
def test_signature_recovery_answers_as_eth_account_does(key, message, damage):
    """The gateway recovers signers with libsecp256k1 directly; for valid and damaged
    signatures alike it must name the signer eth_account names, or refuse where it raises."""
    signature = bytearray(Account.from_key(key).sign_message(encode_defunct(primitive=message)).signature)
    if damage is not None:
        position, flip = damage
        signature[position] ^= flip
    text = "0x" + signature.hex()
    try:
        expected = Account.recover_message(encode_defunct(primitive=message), signature=text)
    except Exception:
        expected = None
    try:
        found = _recover(message, text, lambda reason, detail: Rejection(reason, detail))
    except Rejection as rejection:
        assert rejection.reason is Reason.BAD_SIGNATURE
        found = None
    if int.from_bytes(signature[32:64], "big") >= SECP256K1_N or signature[64] not in (0, 1, 27, 28):
        expected = None  # s beyond the curve order or an EIP-155 v: eth_account takes them, the gateway not
    assert found == expected


# ------------------------------------------------------------ per-phase readings (issue 17 part 4)

PHASE_VALUES = {
    "L1": {"p_kw": 1.0, "q_kvar": 0.1, "v_pu": 1.01, "theta_deg": -0.5},
    "L2": {"p_kw": -2.5, "q_kvar": 0.0, "v_pu": 0.99, "theta_deg": -120.5},
    "L3": {"p_kw": 0.75, "q_kvar": -0.2, "v_pu": 1.0, "theta_deg": 119.5},
}


def phased(phases=None, drop=(), **overrides) -> dict:
    fields = {"meter_id": "M01", "time": READING.time, "seq": 7, "p_kw": -0.75, "q_kvar": -0.1, "v_pu": 1.0,
              "theta_deg": -0.5, "phases": PHASE_VALUES if phases is None else phases}  # fmt: skip
    fields = {k: v for k, v in {**fields, **overrides}.items() if k not in drop}
    return sign_payload(fields, KEY)


def rejection_of(payload) -> Rejection:
    with pytest.raises(Rejection) as caught:
        parse(payload)
    return caught.value


def test_a_payload_with_phases_carries_them_and_its_totals():
    reading = parse(phased()).reading
    assert (reading.p_kw, reading.q_kvar, reading.v_pu, reading.theta_deg) == (-0.75, -0.1, 1.0, -0.5)
    assert reading.phases == (
        PhaseReading(1.0, 0.1, 1.01, -0.5),
        PhaseReading(-2.5, 0.0, 0.99, -120.5),
        PhaseReading(0.75, -0.2, 1.0, 119.5),
    )
    assert parse(plain()).reading.phases is None, "a payload without phases is a balanced total, as before"


def test_totals_left_out_are_derived_from_the_phases():
    reading = parse(phased(drop=("p_kw", "q_kvar", "v_pu", "theta_deg"))).reading
    assert reading.p_kw == pytest.approx(-0.75) and reading.q_kvar == pytest.approx(-0.1)
    assert reading.v_pu == pytest.approx(1.0) and reading.theta_deg == pytest.approx(-0.5)


def test_a_single_phase_meter_reports_one_phase():
    only_l2 = {"L2": {"p_kw": 3.2, "q_kvar": 0.4, "v_volt": 227.7, "theta_deg": -121.0}}
    reading = parse(phased(only_l2, drop=("p_kw", "q_kvar", "v_pu", "theta_deg"))).reading
    assert reading.phases[0] is None and reading.phases[2] is None
    assert reading.phases[1] == PhaseReading(3.2, 0.4, pytest.approx(227.7 / 230), -121.0)
    assert (reading.p_kw, reading.q_kvar) == (3.2, 0.4)
    assert reading.theta_deg == pytest.approx(-1.0), "θ is the L1-referred angle: L2's plus 120°"
    assert reading.v_pu == pytest.approx(227.7 / 230)


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (phased(p_kw=-0.5), Reason.INCONSISTENT, "p_kw -0.5 differs from the sum of phases.*.p_kw -0.75"),
        (phased(q_kvar=0.5), Reason.INCONSISTENT, "q_kvar 0.5 differs from the sum of phases.*.q_kvar"),
        (phased([1, 2, 3]), Reason.SCHEMA, "phases must be an object keyed by L1, L2, L3"),
        (phased({}), Reason.SCHEMA, "phases must hold at least one phase"),
        (phased({"L4": PHASE_VALUES["L1"]}), Reason.SCHEMA, "phases.L4 is not a phase"),
        (phased({"L1": 1.0}), Reason.SCHEMA, "phases.L1 must be an object"),
        (
            phased({"L2": {"p_kw": 1.0, "v_pu": 1.0, "theta_deg": 0, "x": 1}}, drop=("p_kw", "q_kvar")),
            Reason.SCHEMA,
            "missing phases.L2.q_kvar; unknown phases.L2.x",
        ),
        (
            phased({"L3": {**PHASE_VALUES["L3"], "v_volt": 230}}),
            Reason.SCHEMA,
            "give either phases.L3.v_pu or phases.L3.v_volt",
        ),
        (
            phased({"L1": {**PHASE_VALUES["L1"], "p_kw": "1"}}),
            Reason.SCHEMA,
            "phases.L1.p_kw must be a number",
        ),
        (phased(obis={"1-0:1.7.0": 1}), Reason.SCHEMA, "unknown p_kw, phases"),  # OBIS: per-phase codes
    ],
)
def test_bad_phases_are_refused_naming_the_field(payload, reason, detail):
    rejection = rejection_of(payload)
    assert rejection.reason == reason and detail in rejection.detail, rejection.detail


def test_the_sum_tolerance_allows_independently_rounded_registers():
    assert parse(phased(p_kw=-0.755)).reading.p_kw == -0.755  # within 0.01 kW + 1 % of 4.25 kW
    assert rejection_of(phased(p_kw=-0.81)).reason == Reason.INCONSISTENT  # 0.06 > 0.0525


def test_obis_per_phase_codes_make_phases():
    obis = {
        "1-0:21.7.0": "1.000*kW", "1-0:22.7.0": 0, "1-0:23.7.0": "100*var",
        "1-0:41.7.0": 0, "1-0:42.7.0": 2.5, "1-0:44.7.0": 0,
        "1-0:61.7.0": "750*W", "1-0:64.7.0": 0.2,
        "1-0:32.7.0": "232.3*V", "1-0:52.7.0": 227.7, "1-0:72.7.0": "230*V",
        "1-0:81.7.4": "-0.5*deg", "1-0:81.7.1": "120.5*deg",  # U(L2) lags U(L1) by 120.5°
        "1-0:1.7.0": 0, "1-0:2.7.0": 0.75,
    }  # fmt: skip
    reading = parse(
        sign_payload({"meter_id": "M01", "time": READING.time, "seq": 1, "obis": obis}, KEY)
    ).reading
    l1, l2, l3 = reading.phases
    assert (l1.p_kw, l1.q_kvar, l1.theta_deg) == (1.0, 0.1, -0.5)
    assert (l2.p_kw, l2.v_pu, l2.theta_deg) == (-2.5, pytest.approx(227.7 / 230), -121.0)
    assert (l3.p_kw, l3.q_kvar, l3.theta_deg) == (0.75, -0.2, 119.5), "L3 without 81.7.2: nominal 240° behind"
    assert reading.p_kw == -0.75 and reading.q_kvar == pytest.approx(-0.1), (
        "Q total left out: the phases' sum"
    )


def test_obis_single_phase_on_l2_and_its_refusals():
    def obis_payload(**codes):
        return sign_payload({"meter_id": "M01", "time": READING.time, "seq": 1, "obis": codes}, KEY)

    reading = parse(obis_payload(**{"1-0:41.7.0": 2.0, "1-0:52.7.0": 231, "1-0:81.7.4": 0.5})).reading
    assert reading.phases[0] is None and reading.phases[2] is None
    assert (reading.p_kw, reading.phases[1].theta_deg) == (2.0, -119.5)
    missing_voltage = rejection_of(obis_payload(**{"1-0:41.7.0": 2.0, "1-0:32.7.0": 231, "1-0:81.7.4": 0}))
    assert missing_voltage.reason == Reason.SCHEMA and "obis needs 1-0:52.7.0" in missing_voltage.detail
    inconsistent = rejection_of(
        obis_payload(**{"1-0:41.7.0": 2.0, "1-0:1.7.0": 3.0, "1-0:52.7.0": 231, "1-0:81.7.4": 0})
    )
    assert inconsistent.reason == Reason.INCONSISTENT and "1.7.0 − 2.7.0 3" in inconsistent.detail
