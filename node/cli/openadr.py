"""``lec openadr credentials``: a device's OAuth2 client credentials for the OpenADR 3 VTN."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from node.cli.errors import CliError

DEFAULT_DATA_DIR = Path(".lec") / "community"
CLIENT_ID = re.compile(r"[a-zA-Z0-9_-]{1,32}")

HELP = """\
Client credentials for the OpenADR 3.0.1 VTN that the API serves under /openadr3/3.0.1.

A device (or a charge-point operator's back end) is a VEN of one flexibility: its client
id is the flexibility id, its secret is derived from the API's secret in DATA_DIR/api-secret
(HMAC-SHA256; nothing else is stored, so printing it again gives the same secret). With
them it fetches a token (POST /openadr3/3.0.1/auth/token, grant_type=client_credentials)
and reads its capacity band as IMPORT_CAPACITY_LIMIT / EXPORT_CAPACITY_LIMIT events
(GET /openadr3/3.0.1/events). Client id "dso" is the business-logic client that reads the
events of every flexibility. The secret is printed to stdout and nowhere else.

examples:
  lec openadr credentials CS01
  lec openadr credentials EV01 --data-dir /srv/lec > ev01.credentials
  lec openadr credentials dso
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    openadr = subparsers.add_parser(
        "openadr",
        help="OpenADR 3 VTN: a device's client credentials",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = openadr.add_subparsers(dest="action", metavar="ACTION", required=True)
    credentials = actions.add_parser(
        "credentials",
        help="print a flexibility's OpenADR client id and secret (for provisioning the device)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    credentials.add_argument("flex_id", metavar="FLEX_ID", help='the flexibility id (or "dso")')
    credentials.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="the API's data directory, where api-secret is (default: .lec/community)",
    )
    credentials.set_defaults(func=print_credentials)


def print_credentials(args: argparse.Namespace) -> int:
    from gateway.api.context import SECRET_FILE
    from gateway.api.openadr import client_secret

    if not CLIENT_ID.fullmatch(args.flex_id):
        raise CliError(
            f"{args.flex_id!r} cannot be an OpenADR client id: use 1-32 letters, digits, '-' or '_'"
        )
    path = args.data_dir / SECRET_FILE
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise CliError(f"no API secret in {path}: the API makes it on its first start") from None
    except (OSError, ValueError) as error:
        raise CliError(f"cannot read the API secret {path}: {error}") from None
    print(f"client_id: {args.flex_id}")
    print(f"client_secret: {client_secret(secret, args.flex_id)}")
    return 0
