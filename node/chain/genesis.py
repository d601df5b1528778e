"""Genesis of a community chain: chain id, initial sealers, funded accounts, block period.

Stored as ``genesis.json`` in the data directory; the same genesis can be written in
geth's format for other clique clients (geth, Besu, Nethermind).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eth.consensus.clique.constants import NONCE_DROP, SIGNATURE_LENGTH, VANITY_LENGTH
from eth.constants import ZERO_ADDRESS
from eth_utils import to_canonical_address, to_checksum_address

GENESIS_FILE = "genesis.json"
DEFAULT_CHAIN_ID = 4242
DEFAULT_GAS_LIMIT = 30_000_000
INITIAL_BASE_FEE = 1_000_000_000  # 1 gwei
EPOCH_LENGTH = 30_000


@dataclass(frozen=True)
class GenesisConfig:
    """Everything that fixes block 0 and the consensus parameters."""

    chain_id: int
    sealers: tuple[str, ...]
    alloc: dict[str, int] = field(default_factory=dict)  # address -> wei
    period: int = 2  # seconds between blocks
    gas_limit: int = DEFAULT_GAS_LIMIT
    timestamp: int = 0

    def __post_init__(self) -> None:
        if not self.sealers:
            raise ValueError("a clique chain needs at least one sealer")
        if self.period < 1:
            raise ValueError("the block period must be at least 1 second")
        object.__setattr__(self, "sealers", tuple(to_checksum_address(s) for s in self.sealers))
        object.__setattr__(self, "alloc", {to_checksum_address(a): int(w) for a, w in self.alloc.items()})
        if not self.timestamp:
            object.__setattr__(self, "timestamp", int(time.time()))

    def extra_data(self) -> bytes:
        """Clique checkpoint extra data: vanity, the sorted sealers, an empty seal."""
        signers = b"".join(sorted(to_canonical_address(s) for s in self.sealers))
        return b"\x00" * VANITY_LENGTH + signers + b"\x00" * SIGNATURE_LENGTH

    def header_params(self) -> dict:
        return {
            "difficulty": 1,
            "gas_limit": self.gas_limit,
            "timestamp": self.timestamp,
            "extra_data": self.extra_data(),
            "coinbase": ZERO_ADDRESS,
            "nonce": NONCE_DROP,
            "base_fee_per_gas": INITIAL_BASE_FEE,
        }

    def state(self) -> dict:
        return {
            to_canonical_address(address): {"balance": wei, "nonce": 0, "code": b"", "storage": {}}
            for address, wei in self.alloc.items()
        }

    def save(self, data_dir: Path) -> Path:
        path = data_dir / GENESIS_FILE
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, data_dir: Path) -> GenesisConfig | None:
        path = data_dir / GENESIS_FILE
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["sealers"] = tuple(raw["sealers"])
        return cls(**raw)

    def to_geth(self) -> dict:
        """The same genesis in geth's JSON format (clique, London from block 0)."""
        return {
            "config": {
                "chainId": self.chain_id,
                **{
                    f"{fork}Block": 0
                    for fork in (
                        "homestead",
                        "eip150",
                        "eip155",
                        "eip158",
                        "byzantium",
                        "constantinople",
                        "petersburg",
                        "istanbul",
                        "berlin",
                        "london",
                    )
                },
                "clique": {"period": self.period, "epoch": EPOCH_LENGTH},
            },
            "difficulty": "0x1",
            "gasLimit": hex(self.gas_limit),
            "timestamp": hex(self.timestamp),
            "extraData": "0x" + self.extra_data().hex(),
            "baseFeePerGas": hex(INITIAL_BASE_FEE),
            "alloc": {address[2:].lower(): {"balance": hex(wei)} for address, wei in self.alloc.items()},
            "nonce": "0x0",
            "mixHash": "0x" + "00" * 32,
            "coinbase": "0x" + "00" * 20,
            "parentHash": "0x" + "00" * 32,
        }
