"""One deploy step for every component: the community's contracts, recorded on disk.

The deployment record (chain id, addresses, block) is written to ``deployment.json`` in
the data directory so a restarted node and its services find the same contracts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from node.client import ChainClient, Signer

log = logging.getLogger(__name__)

DEPLOYMENT_FILE = "deployment.json"


@dataclass(frozen=True)
class CommunityConfig:
    """What a community chooses once, at deployment."""

    name: str = "Demo energy community"
    slot_minutes: int = 15
    token_name: str = "Community Energy Token"
    token_symbol: str = "CET"


@dataclass(frozen=True)
class Deployment:
    """Where a community's contracts live."""

    chain_id: int
    block: int
    config: CommunityConfig
    addresses: dict[str, str] = field(default_factory=dict)

    def save(self, data_dir: Path) -> Path:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / DEPLOYMENT_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        temporary.replace(path)
        return path

    @classmethod
    def load(cls, data_dir: Path) -> Deployment | None:
        """The recorded deployment in ``data_dir``, or None if there is none."""
        path = data_dir / DEPLOYMENT_FILE
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(
            chain_id=raw["chain_id"],
            block=raw["block"],
            config=CommunityConfig(**raw["config"]),
            addresses=dict(raw["addresses"]),
        )


def deploy_community(client: ChainClient, admin: Signer, config: CommunityConfig) -> Deployment:
    """Deploy registry, ledger, capacity limits and token; ``admin`` gets the admin role."""
    registry = client.deploy("CommunityRegistry", admin, admin.address, config.name, config.slot_minutes)
    ledger = client.deploy("MeasurementLedger", admin, registry.address)
    limits = client.deploy("CapacityLimits", admin, registry.address)
    token = client.deploy("CommunityToken", admin, registry.address, config.token_name, config.token_symbol)
    deployment = Deployment(
        chain_id=client.chain_id,
        block=client.w3.eth.block_number,
        config=config,
        addresses={
            "CommunityRegistry": registry.address,
            "MeasurementLedger": ledger.address,
            "CapacityLimits": limits.address,
            "CommunityToken": token.address,
        },
    )
    log.info(
        "community %r deployed on chain %d at block %d",
        config.name,
        deployment.chain_id,
        deployment.block,
    )
    return deployment


def ensure_deployment(
    client: ChainClient, admin: Signer, data_dir: Path, config: CommunityConfig
) -> tuple[Deployment, bool]:
    """The community recorded in ``data_dir`` if its contracts exist on this chain,
    otherwise a fresh deployment (recorded). Returns (deployment, newly deployed)."""
    recorded = Deployment.load(data_dir)
    if recorded is not None and recorded.chain_id == client.chain_id:
        registry = recorded.addresses.get("CommunityRegistry", "")
        if registry and client.w3.eth.get_code(registry):
            log.info("using the community recorded in %s", data_dir / DEPLOYMENT_FILE)
            return recorded, False
        log.warning("recorded contracts are not on chain %d; deploying anew", client.chain_id)
    deployment = deploy_community(client, admin, config)
    deployment.save(data_dir)
    return deployment, True
