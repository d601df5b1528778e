"""``lec gateway run`` (MQTT meter gateway) and ``lec meters simulate`` (meter simulator)."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from node.cli.errors import CliError

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".lec") / "community"
DEFAULT_RPC_URL = "http://127.0.0.1:8545"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"

GATEWAY_HELP = """\
Run the MQTT meter gateway: every signed meter reading ends on chain exactly once.

Meters publish one reading per minute (QoS 1) on
  lec/<community>/meter/<meter_id>/reading
a JSON object signed by the meter's key (the one registered for it in CommunityRegistry):
  {"meter_id": "M01", "time": 1767225600, "seq": 17, "p_kw": 1.25, "q_kvar": 0.1,
   "v_pu": 1.012, "theta_deg": -0.42, "signature": "0x…65 bytes…"}
(v_volt instead of v_pu, or OBIS codes under "obis", are accepted too; the signature is
EIP-191 personal_sign over the canonical JSON of all other fields: sorted keys, no
spaces, numbers as sent). Refused readings are answered on
  lec/<community>/meter/<meter_id>/rejected
as {"reason": "bad_signature", "detail": "…", "time": …, "seq": …}; reasons: too_large,
malformed, schema, meter_mismatch, out_of_range, unknown_meter, inactive_meter,
bad_signature, from_future, too_old, duplicate, chain_refused.

Accepted readings are committed to a SQLite queue (DATA_DIR/gateway/queue.sqlite)
before the MQTT acknowledgement, then recorded in MeasurementLedger in batches with the
data directory's "gateway" key (it needs GATEWAY_ROLE); a reading leaves the queue when
its transaction is confirmed. Stop with Ctrl-C; kill it and start again: nothing is lost
and nothing recorded twice. docs/gateway.md has the details, the OBIS codes and a
Mosquitto set-up with passwords and an ACL.

Several gateways share the load through one Mosquitto broker: give each a --name (its
key in keys.json, its MQTT client id and its queue DATA_DIR/<name>/queue.sqlite) and the
same --share-group (an MQTT shared subscription: each reading goes to one of them). A
new name needs GATEWAY_ROLE and gas; --enroll grants both with the data directory's
admin key. Under overload a gateway takes messages only while its queue holds fewer
than --max-backlog readings; the rest waits in the broker's persistent session. Each
transaction is half the newest minutes (fresh for the OCM) and half the oldest backlog.

examples:
  lec gateway run --embedded-broker                    broker on 127.0.0.1:1883, node on :8545
  lec gateway run --rpc-url http://10.0.0.5:8545 --mqtt-url mqtt://gateway:secret@10.0.0.6:1883
  lec gateway run --name gateway-2 --share-group gateways --enroll --mqtt-url mqtt://gateway-2:pw@host
  mosquitto_sub -t 'lec/demo-energy-community/meter/+/rejected' -v
"""

METERS_HELP = """\
Simulate the community's smart meters on a real low-voltage feeder and publish their
signed readings to the gateway's MQTT topics.

Each registered meter is placed at its bus of the feeder (a pandapower/native network
file, or the built-in Kerber "Landnetz" feeder). Per minute and meter: household load
from the BDEW H0 standard profile with noise, rooftop PV from a clear-sky curve
(pvlib) with passing clouds, EV charging sessions and a home battery that stores PV
surplus; then a HELM load flow of the feeder gives each bus's voltage magnitude and
angle, so P, Q, V and θ of all meters are consistent. Meters sign with their own keys
(DATA_DIR/keys.json, names meter-<id>).

The clock runs in real time (one reading per meter each minute, published a few seconds
after the minute ends) or accelerated: --start replays past minutes up to now at
--speed times real time (the ledger refuses minutes that have not started yet).

examples:
  lec meters simulate --register --meters 20           register 20 meters, publish live
  lec meters simulate --start -120 --speed 60          replay the last two hours in 2 minutes
  lec meters simulate --network feeder.json --mqtt-url mqtt://sim:pw@10.0.0.6:1883
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    gateway = subparsers.add_parser(
        "gateway",
        help="run the MQTT meter gateway (signed readings → MeasurementLedger)",
        description=GATEWAY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = gateway.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="run the gateway until stopped",
        description=GATEWAY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _chain_options(run)
    run.add_argument(
        "--embedded-broker",
        action="store_true",
        help="start an in-process MQTT broker (amqtt) at the --mqtt-url address",
    )
    run.add_argument(
        "--nominal-voltage", type=float, default=230.0, help="V for v_volt and OBIS voltages (default 230)"
    )
    run.add_argument(
        "--max-age-minutes", type=int, default=1440, help="refuse older readings (default 1440 = 1 day)"
    )
    run.add_argument("--max-batch", type=int, default=300, help="readings per transaction (default 300)")
    run.add_argument(
        "--name",
        default="gateway",
        help="this gateway's key, client id and queue directory (default gateway)",
    )
    run.add_argument("--share-group", help="MQTT shared subscription group of several gateways (Mosquitto)")
    run.add_argument(
        "--max-backlog",
        type=int,
        default=20_000,
        help="queued readings at which the gateway stops taking messages (default 20000)",
    )
    run.add_argument(
        "--enroll", action="store_true", help="grant GATEWAY_ROLE and gas to --name with the admin key"
    )
    run.set_defaults(func=run_gateway)

    meters = subparsers.add_parser(
        "meters",
        help="simulate smart meters publishing signed readings",
        description=METERS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    meter_actions = meters.add_subparsers(dest="action", metavar="ACTION", required=True)
    simulate = meter_actions.add_parser(
        "simulate",
        help="publish simulated readings of the registered meters",
        description=METERS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _chain_options(simulate)
    simulate.add_argument("--network", type=Path, help="feeder network file (default: Kerber Landnetz)")
    simulate.add_argument(
        "--register", action="store_true", help="register missing meters with the admin key (needs --meters)"
    )
    simulate.add_argument(
        "--meters", type=int, default=0, help="with --register: how many meters the community should have"
    )
    simulate.add_argument(
        "--start", type=int, default=0, help="first minute relative to now, e.g. -120 (default: live)"
    )
    simulate.add_argument("--minutes", type=int, help="stop after this many minutes (default: run on)")
    simulate.add_argument("--speed", type=float, default=1.0, help="clock speed while replaying (default 1)")
    simulate.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    simulate.add_argument("--format", choices=("json", "obis"), default="json", help="payload form")
    simulate.set_defaults(func=run_simulator)


def _chain_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="keys.json, deployment.json and the gateway queue (default: .lec/community)",
    )
    parser.add_argument("--rpc-url", default=DEFAULT_RPC_URL, help=f"JSON-RPC node ({DEFAULT_RPC_URL})")
    parser.add_argument(
        "--mqtt-url", default=DEFAULT_MQTT_URL, help=f"mqtt[s]://user:password@host:port ({DEFAULT_MQTT_URL})"
    )
    parser.add_argument("--community", help="topic level <community> (default: from the community name)")


def _open_community(args: argparse.Namespace):
    """(community, keyring) of the data directory, on the node at --rpc-url."""
    from node.cli.community import open_community

    return open_community(args.data_dir, args.rpc_url)


def _mqtt_settings(args: argparse.Namespace):
    from gateway.service import MqttSettings

    try:
        return MqttSettings.from_url(args.mqtt_url)
    except ValueError as error:
        raise CliError(str(error)) from None


def run_gateway(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from gateway.service import GatewayService, subscription, topic_name
    from gateway.submitter import SubmitterSettings
    from gateway.validation import AcceptancePolicy
    from node.broker import EmbeddedBroker
    from node.cli.node import shutdown_requested

    if args.nominal_voltage <= 0 or args.max_age_minutes < 1 or not 1 <= args.max_batch <= 600:
        raise CliError("--nominal-voltage must be > 0, --max-age-minutes >= 1, --max-batch 1..600")
    if args.max_backlog < 1:
        raise CliError("--max-backlog must be at least 1")
    if not re.fullmatch(r"gateway[A-Za-z0-9_-]*", args.name):
        raise CliError(
            f"--name must start with 'gateway' and hold letters, digits, - or _; got {args.name!r}"
        )
    settings = _mqtt_settings(args)
    community, keyring = _open_community(args)
    signer = keyring[args.name]
    if args.enroll:
        _enroll(community, keyring, signer)
    else:
        _warn_without_role(community, signer)
    stop = shutdown_requested()
    broker = None
    if args.embedded_broker:
        try:
            broker = EmbeddedBroker(settings.host, settings.port).start()
        except OSError as error:
            raise CliError(str(error)) from None
        settings = replace(settings, username=settings.username or "gateway")  # a persistent session
    policy = AcceptancePolicy(nominal_voltage_v=args.nominal_voltage, max_age_s=60 * args.max_age_minutes)
    try:
        service = GatewayService(
            community,
            signer,
            args.data_dir / args.name / "queue.sqlite",
            settings,
            args.community or topic_name(community.deployment.config.name),
            policy,
            SubmitterSettings(max_batch=args.max_batch),
            name=args.name,
            share_group=args.share_group,
            max_backlog=args.max_backlog,
        )
    except ValueError as error:  # a share group the broker could not take
        raise CliError(f"--share-group: {error}") from None
    service.start()
    print(
        f"lec gateway: {args.name} ({signer.address}), {len(service.directory)} meters, "
        f"{subscription(service.topic_community, args.share_group)} on {settings}"
        f"{' (embedded broker)' if broker else ''}, chain {args.rpc_url}",
        flush=True,
    )
    stop.wait()
    service.stop()
    if broker is not None:
        broker.stop()
    print(f"lec gateway: stopped ({service.stats()})", flush=True)
    return 0


ENROLL_FUNDING_WEI = 10**20  # 100 ether of the community chain: gas for a long time
ENROLL_TOP_UP_BELOW_WEI = 10**19


def _enroll(community, keyring, signer) -> None:
    """Grant ``signer`` GATEWAY_ROLE and gas with the admin key of the data directory."""
    from contracts.client import ChainError
    from contracts.registry import Role

    admin = keyring["admin"]
    try:
        if not community.registry.has_role(Role.GATEWAY, signer.address):
            community.registry.grant_role(admin, Role.GATEWAY, signer.address)
            log.info("granted GATEWAY_ROLE to %s (%s)", signer.name, signer.address)
        if community.client.w3.eth.get_balance(signer.address) < ENROLL_TOP_UP_BELOW_WEI:
            community.client.transfer_ether(admin, signer.address, ENROLL_FUNDING_WEI)
            log.info("funded %s (%s) with gas", signer.name, signer.address)
    except ChainError as error:
        raise CliError(
            f"cannot enroll {signer.name} with the admin key of the data directory: {error}"
        ) from None


def _warn_without_role(community, signer) -> None:
    """Say so when the gateway's key cannot record yet (its readings stay queued until it can)."""
    from contracts.registry import Role

    try:
        allowed = community.registry.has_role(Role.GATEWAY, signer.address)
    except Exception as error:  # the node may come later; the submitter retries
        log.warning("cannot check GATEWAY_ROLE of %s yet: %s", signer.name, error)
        return
    if not allowed:
        log.warning(
            "key %r (%s) lacks GATEWAY_ROLE: readings stay queued until the admin grants it "
            "(or run with --enroll, which uses the admin key of --data-dir)",
            signer.name,
            signer.address,
        )


def run_simulator(args: argparse.Namespace) -> int:
    from gateway.service import topic_name
    from node.simulation.meters import SimulatorSettings, run_simulation

    if args.register and args.meters < 1:
        raise CliError("--register needs --meters N (how many meters the community should have)")
    if args.speed <= 0:
        raise CliError("--speed must be positive")
    community, keyring = _open_community(args)
    settings = SimulatorSettings(
        network=args.network,
        start_offset_minutes=args.start,
        minutes=args.minutes,
        speed=args.speed,
        seed=args.seed,
        payload_form=args.format,
        register_meters=args.meters if args.register else 0,
    )
    topic = args.community or topic_name(community.deployment.config.name)
    try:
        run_simulation(community, keyring, _mqtt_settings(args), topic, settings)
    except ValueError as error:
        raise CliError(str(error)) from None
    return 0
