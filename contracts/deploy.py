"""One deploy step for every component: the community's contracts, recorded on disk.

The deployment record (chain id, addresses, block) is written to ``deployment.json`` in
the data directory so a restarted node and its services find the same contracts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

import rlp
from eth_utils import keccak, to_canonical_address, to_checksum_address

from contracts.client import ChainClient, ChainError, Signer
from contracts.settlement import Terms

log = logging.getLogger(__name__)

DEPLOYMENT_FILE = "deployment.json"
# EnergyMarket.ClearingMode, by index
CLEARING_MODES = ("continuous", "auction")


@dataclass(frozen=True)
class CommunityConfig:
    """What a community chooses once, at deployment."""

    name: str = "Demo energy community"
    slot_minutes: int = 15
    token_name: str = "Community Energy Token"
    token_symbol: str = "CET"
    clearing_mode: str = "continuous"  # one of CLEARING_MODES; the operator may change it before use
    gate_closure_minutes: int = 5  # orders for a slot close this long before it starts
    data_delay_minutes: int = 15  # meter readings of a slot are taken this long after it ends
    # standing settlement terms (tokens per kWh; kW a missing meter minute counts as)
    import_price: str = "0.30"
    export_price: str = "0.08"
    penalty_price: str = "1.00"
    missing_minute_kw: float = 20.0
    treasury: str = ""  # the treasury account; empty: the admin
    tariff_payee: str = ""  # whose deposit receives the DSO's tariff revenue; empty: the admin

    def terms(self) -> Terms:
        """The standing settlement terms."""
        return Terms(
            Decimal(self.import_price),
            Decimal(self.export_price),
            Decimal(self.penalty_price),
            self.missing_minute_kw,
        )


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


# Gas limits per deployment (generous: unused gas is refunded; together 27.5 M, within one 30 M block).
DEPLOY_GAS = {
    "CommunityRegistry": 2_500_000,
    "MeasurementLedger": 2_000_000,
    "CapacityLimits": 2_500_000,
    "CommunityToken": 1_500_000,
    "EnergyMarket": 7_000_000,
    "DynamicTariff": 1_500_000,
    "Settlement": 4_500_000,
    "FlexibilityMarket": 5_000_000,
    "DeviceStates": 1_000_000,
}
BIND_GAS = 100_000


def deploy_community(client: ChainClient, admin: Signer, config: CommunityConfig) -> Deployment:
    """Deploy registry, ledger, capacity limits, token, energy market, dynamic tariff,
    settlement, flexibility market and device states, and bind the market to its settlement;
    ``admin`` gets the admin role.

    Everything is sent at once (pipelined, fixed gas), so it usually lands in one block:
    each contract's address follows from the admin's nonce, and later constructors run
    after earlier ones in the same block."""
    if config.clearing_mode not in CLEARING_MODES:
        raise ValueError(f"clearing mode {config.clearing_mode!r} is not one of {CLEARING_MODES}")
    nonce = client.w3.eth.get_transaction_count(admin.address, "pending")
    names = list(DEPLOY_GAS)
    at = {name: _create_address(admin.address, nonce + i) for i, name in enumerate(names)}
    arguments = {
        "CommunityRegistry": (admin.address, config.name, config.slot_minutes),
        "MeasurementLedger": (at["CommunityRegistry"], config.data_delay_minutes),
        "CapacityLimits": (at["CommunityRegistry"],),
        "CommunityToken": (at["CommunityRegistry"], config.token_name, config.token_symbol),
        "EnergyMarket": (
            at["CommunityRegistry"],
            at["CapacityLimits"],
            CLEARING_MODES.index(config.clearing_mode),
            config.gate_closure_minutes,
        ),
        "Settlement": (
            at["CommunityRegistry"],
            at["MeasurementLedger"],
            at["CapacityLimits"],
            at["CommunityToken"],
            at["EnergyMarket"],
            at["DynamicTariff"],
            config.treasury or admin.address,
            config.terms().to_chain(),
        ),
        "DynamicTariff": (at["CommunityRegistry"], at["EnergyMarket"], config.tariff_payee or admin.address),
        "FlexibilityMarket": (
            at["CommunityRegistry"],
            at["MeasurementLedger"],
            at["Settlement"],
            at["CommunityToken"],
        ),
        "DeviceStates": (at["CommunityRegistry"],),
    }
    sent = []
    for name in names:
        artifact = client.artifacts[name]
        factory = client.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        tx_hash = client.send(
            factory.constructor(*arguments[name]), admin, gas=DEPLOY_GAS[name], where=f"deploy {name}"
        )
        sent.append((name, tx_hash))
    bind = client.contract("EnergyMarket", at["EnergyMarket"]).functions.bindSettlement(at["Settlement"])
    sent.append(
        ("bindSettlement", client.send(bind, admin, gas=BIND_GAS, where="EnergyMarket.bindSettlement"))
    )
    for name, tx_hash in sent:
        receipt = client.wait(tx_hash, f"deploy {name}")
        if name in at and receipt["contractAddress"] != at[name]:
            raise ChainError(f"{name} landed at {receipt['contractAddress']}, expected {at[name]}")
    for name, address in at.items():
        client.contract(name, address)  # names the address in error messages
    deployment = Deployment(
        chain_id=client.chain_id, block=client.w3.eth.block_number, config=config, addresses=dict(at)
    )
    log.info(
        "community %r deployed on chain %d at block %d", config.name, deployment.chain_id, deployment.block
    )
    return deployment


def _create_address(sender: str, nonce: int) -> str:
    """The address of the contract that ``sender`` creates with transaction ``nonce``."""
    return to_checksum_address(keccak(rlp.encode([to_canonical_address(sender), nonce]))[12:])


def ensure_deployment(
    client: ChainClient, admin: Signer, data_dir: Path, config: CommunityConfig
) -> tuple[Deployment, bool]:
    """The community recorded in ``data_dir`` if its contracts exist on this chain,
    otherwise a fresh deployment (recorded). Returns (deployment, newly deployed)."""
    recorded = Deployment.load(data_dir)
    if recorded is not None and recorded.chain_id == client.chain_id:
        complete = set(DEPLOY_GAS) <= set(recorded.addresses)
        if complete and all(client.w3.eth.get_code(address) for address in recorded.addresses.values()):
            log.info("using the community recorded in %s", data_dir / DEPLOYMENT_FILE)
            return recorded, False
        log.warning(
            "the community recorded in %s is incomplete or not on chain %d; deploying anew",
            data_dir / DEPLOYMENT_FILE,
            client.chain_id,
        )
    deployment = deploy_community(client, admin, config)
    deployment.save(data_dir)
    return deployment, True
