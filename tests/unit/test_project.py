"""The project's own rules: the layers and small modules, documented commands, README = CI, schema =
migrations."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import click
import grimp
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from creditmeter.cli import main
from creditmeter.store.schema import metadata
from creditmeter.store.sql import SCHEMA_REVISION, SqlStore

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src/creditmeter"

def test_the_layers_hold() -> None:
    """The import-linter contracts in pyproject.toml (docs/architecture.md draws them): no edge
    imports another edge or the store, nothing imports an edge, the core does no I/O."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_module_imports_itself_in_a_circle() -> None:
    graph = grimp.build_graph("creditmeter", exclude_type_checking_imports=True)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert circles == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path: Path) -> None:
    """A module holds one capability (at most 450 lines); a function fits on a screen (80)."""
    if "migrations" in path.parts:
        return
    text = path.read_text()
    assert len(text.splitlines()) <= 450, f"{path.name} has {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 80, f"{node.name} (line {node.lineno}) has {length} lines"


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    names = []
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            names += _commands(command, full + " ")
        else:
            names.append(full)
    return names


def test_every_cli_command_is_documented() -> None:
    docs = (ROOT / "docs/cli.md").read_text()
    commands = _commands(main)
    assert len(commands) >= 20
    for command in commands:
        assert f"`creditmeter {command}" in docs, f"'creditmeter {command}' is missing from docs/cli.md"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    assert "creditmeter demo" in blocks[0]
    test_command = blocks[1].strip()
    assert "pytest" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert test_command in ci_lines


# Wording that points outside the project: at a document it was built from, or at the work of
# building it. Whole words only, so "specify", "specific" or "issues grants" stay legal.
OUTSIDE_WORDING = re.compile(
    r"\bSPEC\b|§|(?i:\bthe spec\b|\bspec says\b|billing page|this product mirrors"
    r"|where the contract is silent|\bthe (issue|ticket)\b|\(issue\b|\bticket\b)")


def _shipped_text_files() -> list[Path]:
    shipped = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*"))]
    shipped += [p for p in sorted(PACKAGE.rglob("*")) if "__pycache__" not in p.parts]
    return [p for p in shipped if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".html", ".css", ".svg",
                                                                  ".js", ".mako", ".txt", "")]


def test_outside_wording_is_caught() -> None:
    for text in ("Plans (SPEC §7)", "as the spec says", "the billing page this product mirrors",
                 "the choices made where the contract is silent", "target (issue: PostgreSQL)"):
        assert OUTSIDE_WORDING.search(text), text
    for text in ("specify a time", "a specific model", "each kind issues grants", "sample_spec",
                 "spectrum", "Inspect the ledger"):
        assert not OUTSIDE_WORDING.search(text), text


@pytest.mark.parametrize("path", _shipped_text_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_files_speak_only_of_the_project(path: Path) -> None:
    """The package, the README and the docs say what creditmeter does, never which document or
    work it came from."""
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if OUTSIDE_WORDING.search(line)]
    assert found == []


def test_the_migrations_build_exactly_the_schema_the_code_uses(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path}/m.db")
    store.upgrade()
    assert store.revision() == SCHEMA_REVISION
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.close()
    assert diff == []


def test_the_database_refuses_an_old_schema(tmp_path: Path) -> None:
    from creditmeter.errors import SchemaError

    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('0000')")
    engine.dispose()
    store = SqlStore(url)
    with pytest.raises(SchemaError, match="creditmeter db upgrade"), store.transaction():
        pass
    store.close()
