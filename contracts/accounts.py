"""Named signing accounts of a node (admin, DSO, OCM oracle, gateway, ...).

Keys are generated once and kept in ``keys.json`` in the data directory, readable only
by the owner; they are never logged or printed (``Signer`` hides them from reprs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account

from contracts.client import Signer

KEYS_FILE = "keys.json"
SERVICE_ACCOUNTS = ("admin", "dso", "ocm", "gateway", "operator", "aggregator")


class Keyring:
    """Signers by name; new names get a fresh key."""

    def __init__(self, keys: dict[str, str] | None = None, path: Path | None = None):
        self._signers = {name: Signer.from_key(name, key) for name, key in (keys or {}).items()}
        self._path = path

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Keyring:
        """The keyring stored in ``data_dir`` (created, mode 0600, if missing)."""
        path = data_dir / KEYS_FILE
        keys = json.loads(path.read_text()) if path.exists() else {}
        keyring = cls(keys, path)
        for name in SERVICE_ACCOUNTS:
            keyring.signer(name)
        return keyring

    @classmethod
    def ephemeral(cls) -> Keyring:
        """A keyring that lives in memory only (tests, throw-away demos)."""
        keyring = cls()
        for name in SERVICE_ACCOUNTS:
            keyring.signer(name)
        return keyring

    def signer(self, name: str) -> Signer:
        """The signer called ``name``, created (and saved) on first use."""
        if name not in self._signers:
            self._signers[name] = Signer(name, Account.create())
            self._save()
        return self._signers[name]

    def __getitem__(self, name: str) -> Signer:
        return self.signer(name)

    @property
    def names(self) -> list[str]:
        return list(self._signers)

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        payload = {name: signer.account.key.hex() for name, signer in self._signers.items()}
        temporary = self._path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(payload, handle, indent=1)
        temporary.replace(self._path)
