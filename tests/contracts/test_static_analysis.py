"""Static analysis of ``contracts/*.sol`` with slither: no high or medium impact finding that is
not accepted, with a written reason, in ``contracts/slither.config.json``.

Slither reads the AST of the project's own offline compiler: a subclass of crytic-compile's
standard-JSON platform (``SolcStandardJson``) runs the solcjs wrapper
``contracts/solc/solc-standard-json.js`` (``--standard-json`` on stdin/stdout; no download, no
native solc) on the build's ``COMPILER_SETTINGS`` (london, viaIR, optimizer) with the output
narrowed to what slither's detectors read: the ``ast`` of every source and each contract's ABI
and NatSpec. No bytecode is generated (viaIR code generation in WebAssembly takes ~30-45 s, the
analysis ~3-6 s; no detector reads bytecode), so crytic-compile gets empty bytecode and source
maps; the build (``contracts/build.py``, ``test_build.py``) compiles the code for real.
``@openzeppelin/`` is remapped to ``node_modules/@openzeppelin/`` so every source unit is a real
file under the project root; OpenZeppelin counts as a dependency and findings only there are
dropped. The contracts are compiled and analysed once per test module.

The config is the only place to accept a finding: slither's ``// slither-disable…`` comments
and triage database are not honoured (``show_ignored_findings``), so every acceptance has a
reason next to it. Low, informational and optimization findings are listed, never failed on.
"""

from __future__ import annotations

import inspect
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from crytic_compile import CryticCompile
from crytic_compile.compilation_unit import CompilationUnit
from crytic_compile.compiler.compiler import CompilerVersion
from crytic_compile.platform.exceptions import InvalidCompilation
from crytic_compile.platform.solc import get_version
from crytic_compile.platform.solc_standard_json import (
    SolcStandardJson,
    parse_standard_json_output,
    run_solc_standard_json,
)
from slither import Slither
from slither.detectors import all_detectors
from slither.detectors.abstract_detector import AbstractDetector

from contracts.build import COMPILER_SETTINGS
from contracts.paths import CONTRACTS_DIR, PROJECT_ROOT, SOLC_EXECUTABLE

CONFIG_FILE = CONTRACTS_DIR / "slither.config.json"
FAILING_IMPACTS = ("High", "Medium")
IMPACT_ORDER = (*FAILING_IMPACTS, "Low", "Informational", "Optimization")
REMAPPINGS = ["@openzeppelin/=node_modules/@openzeppelin/"]
ANALYSIS_OUTPUT = ["abi", "devdoc", "userdoc"]  # per contract; the AST comes per source
NO_CODE = {"object": "", "sourceMap": ""}  # bytecode and source map crytic-compile expects
ACCEPTANCE_KEYS = {"detector", "contract", "function", "description_contains", "reason"}
MIN_REASON_LENGTH = 30


# ------------------------------------------------------------------ compiling for slither


def standard_input() -> dict:
    """The build's Standard JSON input, asking for the AST and no bytecode."""
    settings = {key: value for key, value in COMPILER_SETTINGS.items() if key != "outputSelection"}
    settings["remappings"] = REMAPPINGS
    settings["outputSelection"] = {"*": {"*": ANALYSIS_OUTPUT, "": ["ast"]}}
    sources = {
        path.relative_to(PROJECT_ROOT).as_posix(): {"content": path.read_text()}
        for path in sorted(CONTRACTS_DIR.glob("*.sol"))
    }
    return {"language": "Solidity", "sources": sources, "settings": settings}


class ProjectSolc(SolcStandardJson):
    """crytic-compile's standard-JSON platform on the project's offline solcjs wrapper, without
    code generation; OpenZeppelin under ``node_modules`` is a dependency."""

    def compile(self, crytic_compile: CryticCompile, **kwargs) -> None:
        solc_input = self.to_dict()
        settings = solc_input["settings"]
        unit = CompilationUnit(crytic_compile, "lec-node")
        unit.compiler_version = CompilerVersion(
            compiler="solc",
            version=get_version(str(SOLC_EXECUTABLE), None),
            optimized=settings["optimizer"]["enabled"],
            optimize_runs=settings["optimizer"].get("runs"),
            via_ir=settings.get("viaIR", False),
        )
        output = run_solc_standard_json(
            solc_input,
            unit.compiler_version,
            solc_disable_warnings=True,
            working_dir=str(PROJECT_ROOT),
            solc=str(SOLC_EXECUTABLE),
        )
        for contracts in output.get("contracts", {}).values():
            for info in contracts.values():
                info.setdefault("evm", {"bytecode": dict(NO_CODE), "deployedBytecode": dict(NO_CODE)})
        parse_standard_json_output(output, unit, solc_working_dir=str(PROJECT_ROOT))

    def is_dependency(self, path: str) -> bool:
        return "node_modules" in Path(path).parts


# ------------------------------------------------------------------ findings and the config


@dataclass(frozen=True)
class Finding:
    detector: str
    impact: str
    confidence: str
    contract: str | None
    function: str | None  # name of the function (or modifier) the finding is in
    signature: str | None
    location: str  # file#Lstart-Lend
    description: str

    @property
    def where(self) -> str:
        return ".".join(part for part in (self.contract, self.signature or self.function) if part) or "?"

    def headline(self) -> str:
        return f"[{self.impact}/{self.confidence}] {self.detector} in {self.where} ({self.location})"

    def render(self) -> str:
        return f"  {self.headline()}\n{textwrap.indent(self.description.strip(), '      ')}"


def owner_of(element: dict) -> tuple[str | None, str | None, str | None]:
    """(contract, function name, function signature) enclosing a slither result element."""
    contract = function = signature = None
    while element:
        kind = element.get("type")
        if kind in ("function", "modifier") and function is None:
            function = element.get("name")
            signature = element.get("type_specific_fields", {}).get("signature", function)
        elif kind == "contract":
            contract = element.get("name")
            break
        element = element.get("type_specific_fields", {}).get("parent")
    return contract, function, signature


def location_of(element: dict) -> str:
    mapping = element.get("source_mapping", {})
    lines = mapping.get("lines") or [0]
    span = f"L{lines[0]}" if len(lines) == 1 else f"L{lines[0]}-L{lines[-1]}"
    return f"{mapping.get('filename_relative', '?')}#{span}"


def is_dependency_only(result: dict) -> bool:
    mapped = [element["source_mapping"] for element in result["elements"] if "source_mapping" in element]
    return bool(mapped) and all(mapping.get("is_dependency") for mapping in mapped)


def to_finding(result: dict) -> Finding:
    first = result["elements"][0] if result["elements"] else {}
    contract, function, signature = owner_of(first)
    return Finding(
        detector=result["check"],
        impact=result["impact"],
        confidence=result["confidence"],
        contract=contract,
        function=function,
        signature=signature,
        location=location_of(first) if first else "?",
        description=result["description"],
    )


def accepts(acceptance: dict, finding: Finding) -> bool:
    if acceptance["detector"] != finding.detector or acceptance["contract"] != finding.contract:
        return False
    if "function" in acceptance and acceptance["function"] not in (finding.function, finding.signature):
        return False
    return acceptance.get("description_contains", "") in finding.description


def load_config() -> dict:
    config = json.loads(CONFIG_FILE.read_text())
    config.setdefault("excluded_detectors", [])
    config.setdefault("accepted", [])
    return config


def detector_classes() -> list[type[AbstractDetector]]:
    return [
        value
        for value in vars(all_detectors).values()
        if inspect.isclass(value) and issubclass(value, AbstractDetector)
    ]


@dataclass(frozen=True)
class Analysis:
    findings: list[Finding]
    config: dict

    def accepted_by(self, finding: Finding) -> dict | None:
        return next((item for item in self.config["accepted"] if accepts(item, finding)), None)


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    config = load_config()
    excluded = {item["detector"] for item in config["excluded_detectors"]}
    try:
        compiled = CryticCompile(ProjectSolc(standard_input()), cwd=str(PROJECT_ROOT))
    except InvalidCompilation as error:
        pytest.fail(f"the contracts do not compile for slither:\n{error}", pytrace=False)
    slither = Slither(compiled, show_ignored_findings=True)
    for detector in detector_classes():
        if detector.ARGUMENT not in excluded:
            slither.register_detector(detector)
    results = [result for per_detector in slither.run_detectors() for result in per_detector]
    findings = [to_finding(result) for result in results if not is_dependency_only(result)]
    findings.sort(key=lambda f: (IMPACT_ORDER.index(f.impact), f.contract or "", f.where, f.location))
    return Analysis(findings, config)


# ------------------------------------------------------------------ the rules


def test_config_gives_a_reason_for_every_exclusion_and_acceptance():
    config = load_config()
    known = {detector.ARGUMENT for detector in detector_classes()}
    problems = []
    for item in config["excluded_detectors"]:
        if set(item) != {"detector", "reason"}:
            problems.append(f"excluded_detectors entry needs exactly detector and reason: {item}")
    for item in config["accepted"]:
        if not {"detector", "contract", "reason"} <= set(item) <= ACCEPTANCE_KEYS:
            problems.append(
                f"accepted entry needs detector, contract, reason (keys {ACCEPTANCE_KEYS}): {item}"
            )
    for item in config["excluded_detectors"] + config["accepted"]:
        if item.get("detector") not in known:
            problems.append(f"unknown slither detector {item.get('detector')!r}")
        if len(item.get("reason", "").strip()) < MIN_REASON_LENGTH:
            problems.append(f"no real reason given for {item}")
    assert not problems, "contracts/slither.config.json:\n" + "\n".join(problems)


@pytest.mark.slow
def test_no_high_or_medium_finding_without_an_accepted_reason(analysis: Analysis):
    failing = [f for f in analysis.findings if f.impact in FAILING_IMPACTS]
    open_findings = [f for f in failing if not analysis.accepted_by(f)]
    others = [f for f in analysis.findings if f.impact not in FAILING_IMPACTS]
    print(f"slither: {len(failing) - len(open_findings)} high/medium findings accepted in the config")
    print(f"slither: {len(others)} low/informational/optimization findings (not failed on):")
    print("\n".join(f"  {finding.headline()}" for finding in others))
    if open_findings:
        pytest.fail(
            f"{len(open_findings)} high/medium slither finding(s) not accepted in "
            f"{CONFIG_FILE.relative_to(PROJECT_ROOT)}; fix them or accept them there with a reason:\n"
            + "\n".join(finding.render() for finding in open_findings),
            pytrace=False,
        )


@pytest.mark.slow
def test_every_acceptance_still_matches_a_finding(analysis: Analysis):
    stale = [
        item for item in analysis.config["accepted"] if not any(accepts(item, f) for f in analysis.findings)
    ]
    assert not stale, (
        "accepted findings slither no longer reports (remove them from the config):\n"
        + "\n".join(json.dumps(item) for item in stale)
    )
