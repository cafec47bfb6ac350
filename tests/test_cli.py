"""The command-line surface: every command has help, `python -m tracklog` works, and errors
are one line with the documented exit code, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tracklog.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


@pytest.mark.parametrize("path", _commands(cli), ids=lambda p: " ".join(p) or "tracklog")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    res = CliRunner().invoke(cli, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("Usage: ")
    assert res.stderr == ""


def test_every_area_is_registered() -> None:
    names = set(cli.commands)
    assert {"ingest", "status", "link", "recipient", "report", "export", "nginx-config", "check"} <= names


def test_python_dash_m(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tracklog", "--db", str(tmp_path / "x.duckdb"), "report", "delivery", "NOPE"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "TRACKLOG_CONFIG": ""},
        cwd=tmp_path,
    )
    assert proc.returncode == 4
    assert proc.stdout == ""
    assert proc.stderr.startswith("Error: ") and "NOPE" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_option_is_a_usage_error() -> None:
    res = CliRunner().invoke(cli, ["ingest", "--no-such-option"])
    assert res.exit_code == 2
    assert "No such option" in res.stderr and res.stdout == ""
