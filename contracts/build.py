"""Offline Solidity build: py-solc-x drives the npm ``solc`` (WebAssembly) compiler.

Artifacts (ABI and bytecode per contract) are cached under ``build/contracts`` by a hash
of every source, the compiler version, the OpenZeppelin version and the settings; a build
with nothing changed does not start the compiler.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import solcx
from solcx.exceptions import SolcError

from contracts.paths import CONTRACTS_DIR, NODE_MODULES, PROJECT_ROOT, SOLC_EXECUTABLE, build_dir

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = 2  # bump when the cached file layout changes
EVM_VERSION = "london"  # Clique is pre-merge: no PUSH0
COMPILER_SETTINGS = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": EVM_VERSION,
    "viaIR": True,
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "devdoc", "userdoc"]}
    },
}


class CompileError(Exception):
    """The compiler refused the sources; the message lists each error with file and line."""


@dataclass(frozen=True)
class ContractArtifact:
    """What deployment needs of one compiled contract."""

    name: str
    abi: list
    bytecode: str
    deployed_bytecode: str = ""

    @property
    def is_deployable(self) -> bool:
        return len(self.bytecode) > 0


@dataclass(frozen=True)
class BuildResult:
    artifacts: dict[str, ContractArtifact]
    cache_file: Path
    compiled: bool  # False when served from the cache


def build_contracts(contracts_dir: Path = CONTRACTS_DIR, force: bool = False) -> BuildResult:
    """Compile every ``*.sol`` in ``contracts_dir`` (cached by source hash)."""
    sources = _read_sources(contracts_dir)
    compiler_version = _compiler_version()
    key = _cache_key(sources, compiler_version)
    cache_file = build_dir() / "contracts" / f"{key}.json"
    if cache_file.exists() and not force:
        log.info("contracts unchanged, using cached build %s", cache_file.name)
        return BuildResult(_load_artifacts(cache_file), cache_file, compiled=False)

    log.info("compiling %d Solidity files with solc %s", len(sources), compiler_version)
    output = _compile(sources)
    artifacts = {
        name: {
            "abi": entry["abi"],
            "bytecode": entry["evm"]["bytecode"]["object"],
            "deployed_bytecode": entry["evm"]["deployedBytecode"]["object"],
        }
        for path in sorted(output.get("contracts", {}))
        if path in sources
        for name, entry in output["contracts"][path].items()
    }
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    payload = {"compiler": compiler_version, "settings": COMPILER_SETTINGS, "contracts": artifacts}
    temporary = cache_file.with_suffix(f".{os.getpid()}.tmp")  # parallel test workers compile too
    temporary.write_text(json.dumps(payload, indent=1, sort_keys=True))
    temporary.replace(cache_file)
    return BuildResult(_load_artifacts(cache_file), cache_file, compiled=True)


def _read_sources(contracts_dir: Path) -> dict[str, str]:
    files = sorted(contracts_dir.glob("*.sol"))
    if not files:
        raise CompileError(f"no Solidity files (*.sol) in {contracts_dir}")
    root = contracts_dir.parent
    return {path.relative_to(root).as_posix(): path.read_text() for path in files}


def _compiler_version() -> str:
    if shutil.which("node") is None:
        raise CompileError("Node.js is not on PATH; the npm solc compiler needs it")
    if not (NODE_MODULES / "solc").is_dir():
        raise CompileError(f"npm package solc missing in {NODE_MODULES}; run scripts/setup.sh")
    try:
        return solcx.wrapper.get_version_str_from_solc_binary(SOLC_EXECUTABLE)
    except (OSError, subprocess.CalledProcessError, SolcError) as error:
        raise CompileError(f"cannot run the solc wrapper {SOLC_EXECUTABLE}: {error}") from error


def _openzeppelin_version() -> str:
    package = NODE_MODULES / "@openzeppelin" / "contracts" / "package.json"
    return json.loads(package.read_text())["version"] if package.exists() else "missing"


def _cache_key(sources: dict[str, str], compiler_version: str) -> str:
    digest = hashlib.sha256()
    material = {
        "format": ARTIFACT_FORMAT,
        "sources": sources,
        "compiler": compiler_version,
        "openzeppelin": _openzeppelin_version(),
        "settings": COMPILER_SETTINGS,
    }
    digest.update(json.dumps(material, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def _compile(sources: dict[str, str]) -> dict:
    standard_input = {
        "language": "Solidity",
        "sources": {path: {"content": text} for path, text in sources.items()},
        "settings": COMPILER_SETTINGS,
    }
    try:
        output = solcx.compile_standard(
            standard_input, base_path=PROJECT_ROOT, solc_binary=SOLC_EXECUTABLE, allow_empty=True
        )
    except SolcError as error:
        raise CompileError(_describe_errors(getattr(error, "stdout_data", "") or "", error)) from error
    errors = [item for item in output.get("errors", []) if item.get("severity") == "error"]
    if errors:
        raise CompileError(_format_errors(errors))
    for warning in output.get("errors", []):
        log.debug("solc: %s", warning.get("formattedMessage", warning.get("message")))
    return output


def _describe_errors(stdout: str, error: SolcError) -> str:
    try:
        errors = [e for e in json.loads(stdout).get("errors", []) if e.get("severity") == "error"]
    except ValueError:
        errors = []
    return _format_errors(errors) if errors else str(error)


def _format_errors(errors: list[dict]) -> str:
    """``file:line:column: Type: message`` per error, followed by solc's source excerpt."""
    lines = ["Solidity compilation failed:"]
    for item in errors:
        text = item.get("formattedMessage") or item.get("message", "")
        match = re.search(r"--> (\S+?):(\d+):(\d+):", text)
        where = ":".join(match.groups()) if match else item.get("sourceLocation", {}).get("file", "?")
        lines.append(f"{where}: {item.get('type', 'Error')}: {item.get('message', '').strip()}")
        excerpt = text.split("\n", 1)[1] if "\n" in text else ""
        lines.append(excerpt.rstrip())
    return "\n".join(lines)


def _load_artifacts(cache_file: Path) -> dict[str, ContractArtifact]:
    contracts = json.loads(cache_file.read_text())["contracts"]
    return {
        name: ContractArtifact(
            name=name,
            abi=entry["abi"],
            bytecode=entry["bytecode"],
            deployed_bytecode=entry["deployed_bytecode"],
        )
        for name, entry in contracts.items()
    }
