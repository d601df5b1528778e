"""Gas per meter reading and per published band on the community contracts.

Prints, for batches of 1, 10 and 100 readings (one reading per meter, all meters at the
same minute, the way the gateway batches a minute of a community):
  - gas per reading at the first minute of a market slot (new storage word per meter),
  - gas per reading at a later minute of the slot (word already written),
  - the average over a whole 15-minute slot, which is what a community pays.
and the same for readings with phases (``recordPhaseReadings``, 101-byte records) from
three-phase meters (L1, L2, L3) and single-phase meters (L2 only), and gas per band for
bands covering 1, 15 and 60 minutes (new and overwritten).
Target (issue 13): ≤ 10,000 gas per reading in batches of 100, averaged over a slot.

Gas is deterministic, so one run is enough: the in-process chain (eth-tester, py-evm) is
used; gas does not depend on the machine.

usage: .venv/bin/python benchmarks/gas.py
"""

from __future__ import annotations

from contracts import clock
from contracts.accounts import Keyring
from contracts.build import build_contracts
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.devchain import fund, start_eth_tester
from contracts.ledger import PhaseReading, Reading
from contracts.limits import Band
from contracts.registry import Flexibility, FlexKind, Meter, Role

BATCH_SIZES = (1, 10, 100)
SLOT_MINUTES = 15
TARGET_GAS_PER_READING = 10_000


def setup(meter_count: int):
    client, funder, _ = start_eth_tester(build_contracts().artifacts)
    keyring = Keyring.ephemeral()
    fund(client, funder, [keyring[name].address for name in ("admin", "gateway", "ocm", "member")])
    admin = keyring["admin"]
    community = Community(
        client,
        deploy_community(
            client, admin, CommunityConfig(slot_minutes=SLOT_MINUTES, data_delay_minutes=24 * 60)
        ),
    )
    community.registry.grant_role(admin, Role.GATEWAY, keyring["gateway"].address)
    community.registry.grant_role(admin, Role.OCM_ORACLE, keyring["ocm"].address)
    member = keyring["member"].address
    community.registry.add_member(admin, member, "member")
    for index in range(meter_count):
        community.registry.register_meter(admin, Meter(f"M{index:04d}", index, member, member))
    community.registry.register_meter(admin, Meter("BAT-M", 1, member, member))
    community.registry.register_flexibility(
        admin, Flexibility("BAT", member, 1, FlexKind.BATTERY, -50, 50, meter_id="BAT-M")
    )
    return client, keyring, community


def plain_reading(meter_id: str, minute: int, i: int) -> Reading:
    return Reading(meter_id, clock.minute_start(minute), 1.234 + i, 0.1, 0.987, -1.25)


def three_phase_reading(meter_id: str, minute: int, i: int) -> Reading:
    phases = tuple(PhaseReading(0.411 + i / 3, 0.033, 0.987, -1.25 + shift) for shift in (0, -120, 120))
    return Reading(meter_id, clock.minute_start(minute), 1.233 + i, 0.099, 0.987, -1.25, phases)


def single_phase_reading(meter_id: str, minute: int, i: int) -> Reading:
    phase = PhaseReading(1.234 + i, 0.1, 0.987, -121.25)
    return Reading(meter_id, clock.minute_start(minute), 1.234 + i, 0.1, 0.987, -1.25, (None, phase, None))


READING_KINDS = {
    "plain": plain_reading,  # recordReadings: no phases (a balanced three-phase total)
    "L1-L3": three_phase_reading,  # recordPhaseReadings: all three phases
    "L2": single_phase_reading,  # recordPhaseReadings: one phase
}


def reading_gas(client, keyring, community, kind: str = "plain") -> list[tuple[int, float, float, float]]:
    rows = []
    now = clock.minute_of(client.latest_timestamp())
    slots_back = 20 + 4 * list(READING_KINDS).index(kind)  # each kind on slots of its own
    slot_start = (now // SLOT_MINUTES - slots_back) * SLOT_MINUTES
    for round_index, size in enumerate(BATCH_SIZES):
        first_minute = slot_start - round_index * SLOT_MINUTES
        per_reading = []
        for minute in (first_minute, first_minute + 1):
            batch = [READING_KINDS[kind](f"M{i:04d}", minute, i) for i in range(size)]
            receipt = community.ledger.record_readings(keyring["gateway"], batch)
            per_reading.append(receipt["gasUsed"] / size)
        slot_average = (per_reading[0] + (SLOT_MINUTES - 1) * per_reading[1]) / SLOT_MINUTES
        rows.append((size, per_reading[0], per_reading[1], slot_average))
    return rows


def band_gas(client, keyring, community) -> list[tuple[int, float, float]]:
    rows = []
    now = clock.minute_of(client.latest_timestamp())
    start = (now // 60 + 2) * 60  # two hours ahead, on a whole hour
    for minutes in (1, 15, 60):
        gas = []
        for p_max in (40.0, 30.0):  # first publication, then an overwrite of the same minutes
            band = Band(
                "BAT",
                clock.minute_start(start),
                clock.minute_start(start + minutes),
                -10.0,
                p_max,
            )
            gas.append(community.limits.publish_bands(keyring["ocm"], [band])["gasUsed"])
        rows.append((minutes, gas[0], gas[1]))
        start += 120
    return rows


def main() -> None:
    client, keyring, community = setup(max(BATCH_SIZES))
    print(f"Gas per meter reading (MeasurementLedger.recordReadings, slot = {SLOT_MINUTES} min)")
    print(f"{'batch':>6} {'1st minute of slot':>19} {'later minute':>13} {'slot average':>13}")
    for size, first, later, average in reading_gas(client, keyring, community):
        print(f"{size:>6} {first:>19,.0f} {later:>13,.0f} {average:>13,.0f}")
    print(f"target: <= {TARGET_GAS_PER_READING:,} gas per reading in batches of 100 (slot average)")
    print()
    print("Gas per meter reading with phases (MeasurementLedger.recordPhaseReadings, 101 bytes each)")
    print(f"{'phases':>6} {'batch':>6} {'1st minute of slot':>19} {'later minute':>13} {'slot average':>13}")
    for kind in ("L1-L3", "L2"):
        for size, first, later, average in reading_gas(client, keyring, community, kind):
            print(f"{kind:>6} {size:>6} {first:>19,.0f} {later:>13,.0f} {average:>13,.0f}")
    print()
    print("Gas per published band (CapacityLimits.publishBands, one band per transaction)")
    print(f"{'minutes':>8} {'new':>10} {'overwrite':>10} {'new per minute':>15}")
    for minutes, new, overwrite in band_gas(client, keyring, community):
        print(f"{minutes:>8} {new:>10,} {overwrite:>10,} {new / minutes:>15,.0f}")


if __name__ == "__main__":
    main()
