"""The project's own rules: import directions, documented commands, README = CI, schema = migrations."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from creditmeter.cli import main
from creditmeter.store.schema import metadata
from creditmeter.store.sql import SCHEMA_REVISION, SqlStore

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src/creditmeter"

# Module -> the creditmeter modules it may import. Edges → engine → pure core; nothing imports an edge.
CORE = {"money", "timeutil", "errors", "domain", "burndown", "pricing", "ledger", "events", "invariants",
        "keys", "plans", "subscriptions", "enterprise"}
ALLOWED = {
    "errors": set(),
    "money": {"errors"},
    "timeutil": {"errors"},
    "domain": {"errors"},
    "burndown": {"domain"},
    "pricing": {"errors", "money"},
    "events": {"domain", "errors", "timeutil"},
    "ledger": {"burndown", "domain"},
    "invariants": {"domain"},
    "keys": {"errors"},
    "plans": {"domain", "errors", "events", "money", "pricing", "timeutil"},
    "subscriptions": {"domain", "errors", "plans", "timeutil"},
    "enterprise": {"domain", "keys"},
    "store": CORE | {"store"},
    "engine": CORE | {"store"},
    "present": {"domain", "engine", "enterprise", "errors", "keys", "money", "pricing", "store",
                "subscriptions", "timeutil"},
    "api": CORE | {"api", "engine", "present", "store", "ingest", "cli", "serverconfig", "console",
                   "gateway"},
    "console": CORE | {"console", "engine", "present", "store", "ingest"},
    "gateway": CORE | {"gateway", "engine", "present", "store", "serverconfig"},
    "serverconfig": {"errors", "pricing"},
    "ingest": {"domain", "engine", "errors", "money", "store", "timeutil"},
    "tables": set(),
    "demo": CORE | {"engine", "present", "store", "tables"},
    "cli": CORE | {"engine", "present", "store", "ingest", "tables", "demo", "api", "serverconfig",
                   "gateway"},
    "__init__": CORE | {"engine", "store"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("creditmeter"):
            parts = node.module.split(".")
            found.add(parts[1] if len(parts) > 1 else node.names[0].name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("creditmeter."):
                    found.add(alias.name.split(".")[1])
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    module = relative.parts[0] if len(relative.parts) > 1 else path.stem
    assert module in ALLOWED, f"{relative} is not placed in a layer (add it to ALLOWED)"
    illegal = _imports(path) - ALLOWED[module] - {module}
    assert not illegal, f"{relative} imports {sorted(illegal)}"


def test_the_engine_never_imports_an_edge_or_a_web_framework() -> None:
    for name in CORE | {"engine"}:
        for path in [*PACKAGE.glob(f"{name}.py"), *PACKAGE.glob(f"{name}/**/*.py")]:  # module or package
            text = path.read_text()
            assert not re.search(r"^\s*(import|from)\s+(click|rich|fastapi|starlette)", text, re.M), name


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
