"""``lec mqtt password``: a meter's MQTT password for the Mosquitto of ``lec up``."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.errors import CliError

DEFAULT_DATA_DIR = Path(".lec") / "community"

HELP = """\
The MQTT logins of the Mosquitto broker that lec up runs (files in DATA_DIR/mosquitto/).

A meter logs in with its meter id as user name and a password derived from the secret
in DATA_DIR/mosquitto/secret; the ACL lets it publish only on
lec/<community>/meter/<its id>/reading and read only its own .../rejected topic.
Every registered meter has a login (meters registered while lec up runs get theirs
within a minute). To provision a real meter, print its password and put it into the
meter's MQTT settings; it is printed to stdout and nowhere else.

examples:
  lec mqtt password M01
  lec mqtt password M01 --data-dir /srv/lec > m01.pw
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    mqtt = subparsers.add_parser(
        "mqtt",
        help="MQTT logins of lec up's Mosquitto (a meter's password)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = mqtt.add_subparsers(dest="action", metavar="ACTION", required=True)
    password = actions.add_parser(
        "password",
        help="print a meter's MQTT password (for provisioning the meter)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    password.add_argument("meter_id", metavar="METER_ID", help="the meter id (its MQTT user name)")
    password.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="lec up's data directory (default: .lec/community)",
    )
    password.set_defaults(func=print_password)


def print_password(args: argparse.Namespace) -> int:
    from node.mosquitto import MosquittoError, meter_password

    directory = args.data_dir / "mosquitto"
    try:
        password = meter_password(directory, args.meter_id)
    except FileNotFoundError:
        raise CliError(
            f"no MQTT secret in {directory}: lec up with Mosquitto makes it on its first start"
        ) from None
    except (OSError, MosquittoError) as error:
        raise CliError(str(error)) from None
    print(password)
    return 0
