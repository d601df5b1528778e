"""Offline Solidity build: cache by source hash and clear compile errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from contracts import build as solidity
from contracts.paths import CONTRACTS_DIR, PROJECT_ROOT
from node.cli.main import main


def test_build_has_every_contract_and_is_served_from_the_cache(artifacts, monkeypatch):
    for name in ("CommunityRegistry", "MeasurementLedger", "CapacityLimits", "CommunityToken"):
        assert artifacts[name].is_deployable and artifacts[name].abi

    def no_compiler(_sources):
        raise AssertionError("the compiler ran although nothing changed")

    monkeypatch.setattr(solidity, "_compile", no_compiler)
    result = solidity.build_contracts()
    assert result.compiled is False
    assert result.artifacts["CommunityToken"].bytecode == artifacts["CommunityToken"].bytecode


def opcodes(bytecode_hex: str):
    """The opcodes of runtime bytecode, skipping PUSH data and the trailing CBOR metadata."""
    code = bytes.fromhex(bytecode_hex)
    code, position = code[: -(int.from_bytes(code[-2:], "big") + 2)], 0
    while position < len(code):
        opcode = code[position]
        yield opcode
        position += 1 + (opcode - 0x5F if 0x60 <= opcode <= 0x7F else 0)


def test_bytecode_has_no_push0_for_the_london_vm(artifacts):
    """PUSH0 (0x5f) exists only from Shanghai on; the Clique chain runs London."""
    assert solidity.COMPILER_SETTINGS["evmVersion"] == "london"
    for name in ("CommunityRegistry", "MeasurementLedger", "CapacityLimits", "CommunityToken"):
        assert 0x5F not in set(opcodes(artifacts[name].deployed_bytecode)), name


@pytest.fixture
def broken_contracts(tmp_path, monkeypatch):
    source_dir = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, source_dir)
    token = source_dir / "CommunityToken.sol"
    lines = token.read_text().splitlines()
    line_number = next(i for i, line in enumerate(lines) if "_mint(to, amount);" in line)
    lines[line_number] = lines[line_number].replace(";", "")  # a syntax error
    token.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("LEC_BUILD_DIR", str(tmp_path / "build"))
    return source_dir, line_number + 1


def test_a_syntax_error_names_file_and_line(broken_contracts):
    source_dir, line = broken_contracts
    with pytest.raises(solidity.CompileError) as caught:
        solidity.build_contracts(source_dir)
    message = str(caught.value)
    assert (
        f"contracts/CommunityToken.sol:{line + 1}:" in message
        or f"contracts/CommunityToken.sol:{line}:" in message
    )
    assert "ParserError" in message


def test_cli_build_of_broken_sources_exits_non_zero_with_the_message(capsys, broken_contracts):
    source_dir, _ = broken_contracts
    assert main(["contracts", "build", "--contracts-dir", str(source_dir)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: Solidity compilation failed") and "CommunityToken.sol" in error


def test_cli_build_of_the_real_contracts_uses_the_cache(artifacts):
    completed = subprocess.run(
        [sys.executable, "-m", "node.cli.main", "contracts", "build"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "unchanged" in completed.stdout and "CommunityRegistry" in completed.stdout


def test_no_contracts_is_a_clear_error(tmp_path):
    with pytest.raises(solidity.CompileError, match="no Solidity files"):
        solidity.build_contracts(tmp_path)
