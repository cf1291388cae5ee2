"""The package is laid out by pipeline stage, and the imports respect the stages (read from the source, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "jimeng_batch"
STAGES = ("intake", "protocol", "engine", "outputs", "sim")
# What each stage may import from the others (besides the shared modules at the top: errors, files, yaml_bounds,
# _version).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),  # the service's data and shapes; the base every other stage builds on
    "intake": {"protocol"},
    "engine": {"intake", "protocol", "sim"},  # a --sim run starts the simulator
    "outputs": {"intake", "protocol", "engine.ledger", "engine.states", "engine.lock"},  # read a ledger, never run one
    "sim": {"protocol.catalog", "protocol.signing", "protocol.aws4"},  # protocol data only
}
SHARED = {"errors", "files", "yaml_bounds", "_version"}


def _imports(path: Path) -> list[str]:
    """The jimeng_batch modules a file imports (those under ``if TYPE_CHECKING:`` left out: they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped |= {id(child) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jimeng_batch"):
            if node.module == "jimeng_batch":
                found += [f"jimeng_batch.{alias.name}" for alias in node.names]
            else:
                found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("jimeng_batch")]
    return found


def _modules() -> set[str]:
    return {".".join(path.relative_to(REPO).with_suffix("").parts) for path in PACKAGE.rglob("*.py")}


def _stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def _allowed(importer: str, imported: str) -> bool:
    stage = _stage_of(importer)
    target = _stage_of(imported)
    if stage is None or target is None or target == stage:
        return True
    name = ".".join(imported.split(".")[1:3])
    return target in ALLOWED[stage] or name in ALLOWED[stage]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_the_stages_it_may(path: Path) -> None:
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    modules = _modules()
    wrong = [name for name in _imports(path) if name in modules and not _allowed(module, name)]
    assert not wrong, f"{module} imports {wrong}"


def test_the_shared_modules_import_no_stage() -> None:
    for name in SHARED:
        imported = [m for m in _imports(PACKAGE / f"{name}.py") if _stage_of(m)]
        assert not imported, f"jimeng_batch.{name} imports {imported}"


def test_the_top_level_holds_only_the_facade_the_cli_and_the_shared_modules() -> None:
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "api", "cli"} | SHARED
    assert {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"} == set(STAGES)


def test_the_check_catches_a_wrong_import() -> None:
    """The rules are not vacuous: an outputs module importing the executor, or the simulator the client, fails."""
    assert not _allowed("jimeng_batch.outputs.report", "jimeng_batch.engine.executor")
    assert not _allowed("jimeng_batch.sim.app", "jimeng_batch.protocol.client")
    assert not _allowed("jimeng_batch.intake.plan", "jimeng_batch.engine.ledger")
    assert not _allowed("jimeng_batch.protocol.drafts", "jimeng_batch.intake.expand")
    assert _allowed("jimeng_batch.outputs.merge", "jimeng_batch.engine.ledger")
