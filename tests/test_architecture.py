"""The layering of the code base (ARCHITECTURE.md, issue 10), read from the imports.

Every arrow points down: physics (``ocm.grid`` < ``ocm``) knows nothing of the chain; the
contracts' Python face (``contracts``) knows nothing of the services; the services
(``gateway``, ``market``, ``ocm.oracle``) import only the layers below; the node
(``node``) sits on top and nothing imports it. The chain server (``node.chain``) imports
no project code at all. Imports inside functions count too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("contracts", "ocm", "gateway", "market", "node")

# component → the components it may import (besides itself); the most specific prefix of a
# module's name is its component.
ALLOWED: dict[str, set[str]] = {
    # physics: pure computation
    "ocm.grid": set(),
    "ocm": {"ocm.grid"},
    "market.pricing": {"ocm", "ocm.grid"},  # TFM/DT: pure computation on our grid model
    # the contracts' Python face
    "contracts": set(),
    # services
    "gateway": {"contracts"},
    "market": {"contracts", "market.pricing"},
    "ocm.oracle": {"contracts", "ocm", "ocm.grid"},
    # the node on top
    "node.chain": set(),
    "node": {
        "contracts",
        "ocm",
        "ocm.grid",
        "ocm.oracle",
        "gateway",
        "market",
        "market.pricing",
        "node.chain",
    },
}

# Raw web3 contract access (ABI names) is the contracts package's business alone.
RAW_CONTRACT_ACCESS = re.compile(r"\.functions\.|\.events\.|\bget_logs\b|\.eth\.contract\(")


def component_of(module: str) -> str | None:
    best = None
    for name in ALLOWED:
        if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best)):
            best = name
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the project modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".")
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    project = {name for name in found if name.split(".")[0] in PACKAGES}
    modules = {module_name(p) for p in source_files()}
    # ``from pkg import name`` names either a module or an object in pkg: keep what exists.
    return {name for name in project if name in modules}


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) - {module_name(path)} for path in source_files()}


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for source, targets in graph.items():
        own = component_of(source)
        for target in sorted(targets):
            other = component_of(target)
            if own is None or other is None:
                problems.append(f"{source} → {target}: module outside every component")
            elif other != own and other not in ALLOWED[own]:
                problems.append(f"{source} → {target}: {own} may not import {other}")
    return problems


def cycles(graph: dict[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Imports between folders (packages and subpackages), e.g. ``ocm`` → ``ocm.grid``."""
    folders: dict[str, set[str]] = {}
    package_names = {module_name(p) for p in source_files() if p.name == "__init__.py"}

    def folder(module: str) -> str:
        return module if module in package_names else module.rsplit(".", 1)[0]

    for source, targets in graph.items():
        mine = folder(source)
        folders.setdefault(mine, set()).update(
            folder(t) for t in targets if folder(t) != mine and not mine.startswith(folder(t) + ".")
        )
    return folders


# ------------------------------------------------------------------------- the rules


def test_every_import_points_down_the_layers():
    assert layering_violations(import_graph()) == []


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_no_import_cycle_between_folders():
    assert cycles(folder_graph(import_graph())) == []


def test_top_level_folders_form_no_cycle():
    top: dict[str, set[str]] = {}
    for source, targets in import_graph().items():
        top.setdefault(source.split(".")[0], set()).update(t.split(".")[0] for t in targets)
    for package, targets in top.items():
        targets.discard(package)
    assert cycles(top) == []
    assert not any("node" in targets for targets in top.values()), "nothing may import node"


def test_the_allowed_layers_themselves_are_acyclic():
    assert cycles(ALLOWED) == []


def test_contract_abi_names_are_used_only_in_the_contracts_package():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in source_files()
        if not module_name(path).startswith("contracts")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if RAW_CONTRACT_ACCESS.search(line)
    ]
    assert offenders == []


def test_every_package_says_its_one_job():
    for init in sorted(p for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring) > 40, f"{init.relative_to(ROOT)} has no docstring"


SHADOW_GUARD = 'sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]'


def test_no_benchmark_shadows_a_package():
    """A script puts its own folder first on the import path: a benchmark named like a
    package must take benchmarks/ off it before it imports anything of the project."""
    for script in (ROOT / "benchmarks").glob("*.py"):
        if script.stem in PACKAGES:
            source = script.read_text()
            assert SHADOW_GUARD in source, f"{script.name} shadows the {script.stem} package"
            first_import = min(i for p in PACKAGES if (i := source.find(f"\nfrom {p}")) >= 0)
            assert source.index(SHADOW_GUARD) < first_import, f"{script.name}: guard too late"


# -------------------------------------------------- the checker catches what it should


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"ocm.grid.helm": {"contracts.client"}}, "ocm.grid may not import contracts"),
        ({"contracts.client": {"node.embedded"}}, "contracts may not import node"),
        ({"gateway.service": {"market.agents"}}, "gateway may not import market"),
        ({"node.chain.rpc": {"contracts.client"}}, "node.chain may not import contracts"),
        ({"ocm.bands": {"ocm.oracle"}}, "ocm may not import ocm.oracle"),
    ],
)
def test_the_checker_reports_an_upward_import(graph, expected):
    assert any(expected in problem for problem in layering_violations(graph))


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
