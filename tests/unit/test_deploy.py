"""The example deployment (docs/deploy/compose.yaml) runs the documented commands.

Each service's command is parsed by foliodiff's own command line (options,
their types, the command's name), without running it, so a renamed option
or command breaks this test rather than a user's fleet.  The README's
"Fleets" paragraph names the same two commands.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
import yaml

from service.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docs" / "deploy" / "compose.yaml"


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


@pytest.mark.parametrize("name", ["worker", "queue", "serve"])
def test_each_command_parses_with_foliodiffs_command_line(name: str) -> None:
    argv = _services()[name]["command"]
    assert argv[0] == "foliodiff"
    command = typer.main.get_command(app).commands[argv[1]]     # type: ignore[attr-defined]
    ctx = command.make_context(argv[1], list(argv[2:]))     # raises on a bad option or value
    assert ctx.params["db"] == "postgresql+psycopg://foliodiff:foliodiff@db:5432/foliodiff"
    if name == "queue":
        assert ctx.params["fleet"] is True


def test_a_renamed_option_would_be_caught() -> None:
    worker = typer.main.get_command(app).commands["worker"]      # type: ignore[attr-defined]
    with pytest.raises(Exception, match="No such option: --database"):
        worker.make_context("worker", ["--database", "x"])


def test_the_readme_documents_the_commands_the_deployment_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "`foliodiff worker --db URL [--campaign" in readme
    assert "foliodiff fuzz --fleet" in readme
    # The image installs this checkout, and the worker command is the one per machine.
    assert "pip install --no-cache-dir /src" in (COMPOSE.parent / "Dockerfile").read_text()
