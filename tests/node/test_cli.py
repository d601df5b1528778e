"""The ``lec`` command line: help texts and the embedded-defaults run."""

from __future__ import annotations

import subprocess
import sys

from node.paths import PROJECT_ROOT


def lec(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "node.cli.main", *arguments],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
        check=False,
    )


def test_help_lists_the_subcommands():
    completed = lec("--help")
    assert completed.returncode == 0
    for command in ("up", "contracts"):
        assert command in completed.stdout


def test_unknown_subcommand_is_a_usage_error():
    completed = lec("frobnicate")
    assert completed.returncode == 2 and "invalid choice" in completed.stderr


def test_up_deploys_registers_records_and_publishes(artifacts):
    completed = lec("up")
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    for name in ("CommunityRegistry", "MeasurementLedger", "CapacityLimits", "CommunityToken"):
        assert name in out
    assert "recorded 3 readings" in out
    assert "band of CS01" in out and "[0, 11] kW (OCM)" in out


def test_up_never_prints_or_logs_private_keys(artifacts, capsys, caplog, monkeypatch):
    from node.accounts import Keyring
    from node.cli import up
    from node.cli.main import main

    created: list[Keyring] = []
    original = Keyring.ephemeral

    def remembering_ephemeral():
        keyring = original()
        created.append(keyring)
        return keyring

    monkeypatch.setattr(up.Keyring, "ephemeral", remembering_ephemeral)
    caplog.set_level("DEBUG")
    assert main(["-vv", "up"]) == 0
    captured = capsys.readouterr()
    text = (captured.out + captured.err + caplog.text).lower()
    (keyring,) = created
    for name in keyring.names:
        key = keyring[name].account.key.hex().lower().removeprefix("0x")
        assert key not in text, f"the key of {name} leaked"
    assert keyring["alice"].address.lower() in text, "the output names the accounts it made"
