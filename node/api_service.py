"""Starting the dApp API for a community (``lec up`` and ``lec api``)."""

from __future__ import annotations

import logging
from pathlib import Path

from contracts.community import Community
from gateway.api.app import create_app
from gateway.api.context import ApiContext, ApiSettings, load_or_create_secret
from gateway.api.server import ApiServer
from node.feeder_drawing import feeder_drawing

log = logging.getLogger(__name__)

OCM_STATUS_FILE = Path("ocm") / "status.json"


def start_api(
    community: Community,
    data_dir: Path,
    host: str,
    port: int,
    feeder: Path | None,
    settings: ApiSettings | None = None,
) -> ApiServer:
    """The API of ``community`` on ``host:port``, its token secret in ``data_dir``, the
    feeder drawn from the network file ``feeder``, the OCM status read from
    ``data_dir/ocm/status.json``. A taken port raises ``OSError``."""
    drawing = None
    if feeder is not None:
        try:
            drawing = feeder_drawing(feeder)
        except Exception as error:  # the API still serves everything else
            log.warning("the feeder %s cannot be drawn (%s); /v1/feeder answers 404", feeder, error)
    context = ApiContext(
        community,
        load_or_create_secret(data_dir),
        feeder=drawing,
        ocm_status_file=data_dir / OCM_STATUS_FILE,
        settings=settings,
    )
    return ApiServer(create_app(context), host, port).start()
