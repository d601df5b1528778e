"""Everything the API's routes read from: the community's contracts, the event index, the
sign-in authority, the feeder drawing, and where the OCM oracle leaves its status."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from contracts.community import Community
from gateway.api.auth import RoleLookup, SessionAuthority
from gateway.api.chain_index import ChainIndex

SECRET_FILE = "api-secret"


@dataclass(frozen=True)
class FeederBus:
    bus: int
    name: str
    vn_kv: float
    x: float  # drawing coordinates (any unit; the page scales them)
    y: float


@dataclass(frozen=True)
class FeederBranch:
    kind: str  # "line" or "trafo"
    index: int  # its row in pandapower's table, as in res_line / res_trafo
    from_bus: int
    to_bus: int
    name: str


@dataclass(frozen=True)
class Feeder:
    """The feeder as plain data for drawing: buses with coordinates, lines and transformers."""

    name: str
    buses: list[FeederBus] = field(default_factory=list)
    branches: list[FeederBranch] = field(default_factory=list)


@dataclass(frozen=True)
class ApiSettings:
    token_ttl_s: int = 900
    requests_per_second: float = 20.0  # per client address, sustained
    burst: int = 120  # per client address, at once
    index_refresh_s: float = 1.0
    relay_wait_s: float = 0.0  # >0: POST /v1/tx waits this long for the receipt


class ApiContext:
    """One community as the API sees it."""

    def __init__(
        self,
        community: Community,
        secret: bytes,
        feeder: Feeder | None = None,
        ocm_status_file: Path | None = None,
        settings: ApiSettings | None = None,
    ):
        self.community = community
        self.settings = settings or ApiSettings()
        self.index = ChainIndex(community, refresh_s=self.settings.index_refresh_s)
        self.sessions = SessionAuthority(secret, community.client.chain_id, self.settings.token_ttl_s)
        self.roles = RoleLookup(community.registry)
        self.secret = secret
        self.feeder = feeder
        self.ocm_status_file = ocm_status_file

    def ocm_status(self) -> dict | None:
        """The OCM oracle's last cycle as it wrote it, or None when there is none yet."""
        if self.ocm_status_file is None:
            return None
        try:
            return json.loads(self.ocm_status_file.read_text())
        except (OSError, ValueError):
            return None


def load_or_create_secret(data_dir: Path) -> bytes:
    """The API's signing secret (tokens), kept in ``DATA_DIR/api-secret`` (mode 0600)."""
    path = data_dir / SECRET_FILE
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret.hex())
    return secret
