"""Property-based tests: random batches of readings and bands, malformed ones among them.

A model in Python predicts, for every batch, whether the contract accepts it and, if not,
which item and error it names. After every step the chain's storage must equal the model:
nothing wrong is stored and nothing valid is lost.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from contracts import units
from contracts.client import ContractRevert
from contracts.ledger import pack_reading
from tests.contracts.conftest import FLEXIBILITIES, METERS
from tests.threads import in_fresh_thread

KNOWN_METERS = sorted(METERS)
MAX_POWER_W = 100_000_000
SLOT = 15
DATA_DELAY = 15  # minutes after its slot's end a reading is still taken (CommunityConfig default)

reading_values = st.fixed_dictionaries(
    {
        "p": st.one_of(st.integers(-MAX_POWER_W, MAX_POWER_W), st.integers(-(2**31), 2**31 - 1)),
        "q": st.one_of(st.integers(-50_000, 50_000), st.integers(-(2**31), 2**31 - 1)),
        "v": st.one_of(st.integers(900_000, 1_100_000), st.integers(0, 2**32 - 1)),
        "theta": st.one_of(st.integers(-5_000_000, 5_000_000), st.integers(-(2**31), 2**31 - 1)),
    }
)
valid_values = st.fixed_dictionaries(
    {
        "p": st.integers(-MAX_POWER_W, MAX_POWER_W),
        "q": st.integers(-50_000, 50_000),
        "v": st.integers(900_000, 1_100_000),
        "theta": st.integers(-5_000_000, 5_000_000),
    }
)
# Minutes are offsets into the three slots of readings (see LedgerAndLimitsMachine): the
# first slot is past its data deadline, the second open, the third the current one.
open_reading = st.tuples(st.sampled_from(KNOWN_METERS), st.integers(SLOT, 2 * SLOT + 7), valid_values)
any_reading = st.tuples(
    st.sampled_from([*KNOWN_METERS, "NOPE"]),
    st.one_of(st.integers(0, 3 * SLOT - 1), st.just("future")),
    reading_values,
)
raw_reading = st.one_of(open_reading, open_reading, any_reading)  # most readings are valid
raw_band = st.tuples(
    st.sampled_from([*sorted(FLEXIBILITIES), "NOPE"]),
    st.integers(0, 40),
    st.integers(-2, 12),
    st.integers(-60_000, 60_000),
    st.integers(-60_000, 60_000),
)


def reading_error(meter, minute, now, values):
    """The error the ledger raises for one reading on its own, or None (``now``: the Unix
    minute of the block that records the batch)."""
    if meter not in KNOWN_METERS:
        return "UnknownMeter"
    if minute > now:
        return "ReadingFromFuture"
    if abs(values["p"]) > MAX_POWER_W or abs(values["q"]) > MAX_POWER_W:
        return "ReadingOutOfRange"
    if values["v"] > 2_000_000 or abs(values["theta"]) > 180_000_000:
        return "ReadingOutOfRange"
    if now >= (minute // SLOT + 1) * SLOT + DATA_DELAY:
        return "ReadingPastDeadline"
    return None


class LedgerAndLimitsMachine(RuleBasedStateMachine):
    def __init__(self, env):
        super().__init__()
        self.env = env
        self.snapshot = env.tester.take_snapshot()
        ledger = env.community.ledger.contract.functions
        assert env.client.call(ledger.dataDelayMinutes()) == DATA_DELAY
        # Every batch lands in minute 7 of a slot (an example mines a few blocks, one second
        # apart): of the three slots of readings, the first is past its data deadline, the
        # second open and the third the current one (its minutes 8..14 are in the future).
        slot_start = (env.now_minute() // SLOT + 2) * SLOT
        env.travel((slot_start + 7) * 60)
        self.reading_base = slot_start - 2 * SLOT
        self.band_base = (slot_start // SLOT + 8) * SLOT  # well in the future
        self.readings: dict[tuple[str, int], tuple[int, int]] = {}
        self.bands: dict[tuple[str, int], tuple[int, int]] = {}

    def teardown(self):
        self.env.tester.revert_to_snapshot(self.snapshot)
        self.env.client.forget_nonces()

    @rule(batch=st.lists(raw_reading, min_size=1, max_size=12))
    def record_batch(self, batch):
        now = self.env.next_timestamp() // 60
        items, expected_error, seen = [], None, set()
        for index, (meter, offset, values) in enumerate(batch):
            minute = now + 5 if offset == "future" else self.reading_base + offset
            items.append(
                (
                    units.encode_id(meter),
                    minute,
                    values["p"],
                    values["q"],
                    values["v"],
                    values["theta"],
                )
            )
            error = reading_error(meter, minute, now, values)
            if error is None and ((meter, minute) in self.readings or (meter, minute) in seen):
                error = "DuplicateReading"
            seen.add((meter, minute))
            if error and expected_error is None:
                expected_error = (index, error)
        packed = b"".join(pack_reading(item) for item in items)
        call = self.env.community.ledger.contract.functions.recordReadings(packed)
        try:
            self.env.client.transact(call, self.env["gateway"])
        except ContractRevert as refusal:
            assert expected_error is not None, f"valid batch refused: {refusal}"
            assert (refusal.args_by_name.get("index", expected_error[0]), refusal.error) == expected_error
            return
        assert expected_error is None, f"batch accepted although item {expected_error} is bad"
        for meter_id, minute, p, q, _, _ in items:
            self.readings[(units.decode_id(meter_id), minute)] = (p, q)

    @rule(raw=st.lists(raw_band, min_size=1, max_size=6))
    def publish_bands(self, raw):
        items, expected_error = [], None
        for index, (flex, offset, length, low, high) in enumerate(raw):
            start = self.band_base + offset
            items.append((units.encode_id(flex), start, start + length, low, high))
            if flex not in FLEXIBILITIES:
                error = "UnknownFlexibility"
            elif length <= 0:
                error = "InvalidMinuteRange"
            elif low > high:
                error = "InvertedBand"
            else:
                hw_low, hw_high = (units.kw_to_w(v) for v in FLEXIBILITIES[flex][3:5])
                error = "BandOutsideHardwareBounds" if low < hw_low or high > hw_high else None
            if error and expected_error is None:
                expected_error = (index, error)
        call = self.env.community.limits.contract.functions.publishBands(items)
        try:
            self.env.client.transact(call, self.env["ocm"])
        except ContractRevert as refusal:
            assert expected_error is not None, f"valid bands refused: {refusal}"
            assert (refusal.args_by_name.get("index", expected_error[0]), refusal.error) == expected_error
            return
        assert expected_error is None
        for flex_id, start, end, low, high in items:
            for minute in range(start, end):
                self.bands[(units.decode_id(flex_id), minute)] = (low, high)

    @invariant()
    def slot_energy_matches_the_model(self):
        ledger = self.env.community.ledger.contract.functions
        for meter in KNOWN_METERS:
            for slot in range(self.reading_base // SLOT, self.reading_base // SLOT + 3):
                minutes = [m for (name, m) in self.readings if name == meter and m // SLOT == slot]
                count, active, reactive = self.env.client.call(
                    ledger.slotEnergy(units.encode_id(meter), slot)
                )
                assert count == len(minutes)
                assert active == sum(self.readings[(meter, m)][0] for m in minutes)
                assert reactive == sum(self.readings[(meter, m)][1] for m in minutes)

    @invariant()
    def bands_match_the_model(self):
        limits = self.env.community.limits.contract.functions
        for flex, (*_, low_kw, high_kw, _, _) in FLEXIBILITIES.items():
            hardware = (units.kw_to_w(low_kw), units.kw_to_w(high_kw))
            for slot in range(self.band_base // SLOT, self.band_base // SLOT + 4):
                in_force = [
                    self.bands.get((flex, m), hardware) for m in range(slot * SLOT, (slot + 1) * SLOT)
                ]
                expected = (max(b[0] for b in in_force), min(b[1] for b in in_force))
                low, high, _ = self.env.client.call(limits.tightestBand(units.encode_id(flex), slot))
                assert (low, high) == expected


def test_random_batches_store_exactly_the_valid_ones(env):
    in_fresh_thread(lambda: _run_machine(env))


def _run_machine(env):
    run_state_machine_as_test(
        lambda: LedgerAndLimitsMachine(env),
        settings=settings(
            max_examples=10,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
