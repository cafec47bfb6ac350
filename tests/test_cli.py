"""The command-line surface: every command has help, `python -m tracklog` works, and errors
are one line with the documented exit code, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import DataSet

from tracklog.cli import LAZY_COMMANDS, cli
from tracklog.useragent import installed_version


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
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
    ctx = click.Context(cli)
    names = set(cli.list_commands(ctx))
    assert {"ingest", "status", "link", "recipient", "report", "export", "nginx-config", "check"} <= names
    assert all(cli.get_command(ctx, name) is not None for name in names)


def test_lazy_help_lines_are_the_commands_own() -> None:
    ctx = click.Context(cli)
    for name, (_module, line) in LAZY_COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and (command.help or "").splitlines()[0] == line, name


def test_help_imports_no_database_arrow_or_rich() -> None:
    """`tracklog --help` stays fast because it loads no command module: checked by what it
    imported, not by timing it."""
    code = (
        "import sys\n"
        "from tracklog.cli import main\n"
        "sys.argv = ['tracklog', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('duckdb', 'pyarrow', 'rich', 'tracklog.ingest.engine', 'tracklog.derived')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout and "report" in proc.stdout and "ingest" in proc.stdout


def _heavy_modules_of(args: list[str]) -> list[str]:
    """Which of the costly modules `tracklog ARGS` imported (its output discarded)."""
    code = (
        "import io, sys\n"
        "from tracklog.cli import main\n"
        f"sys.argv = ['tracklog', *{args!r}]\n"
        "sys.stdout = io.StringIO()\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "heavy = ('pyarrow', 'rich', 'tracklog.classify', 'tracklog.ingest.engine', 'crawleruseragents',"
        " 'duckdb', 'importlib.metadata')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("HEAVY ")]
    assert line, proc.stderr
    return eval(line[0].removeprefix("HEAVY "))  # a list of names printed just above


def test_reports_import_no_arrow_or_classifier(tracking_db: Path) -> None:
    """A report's start-up is its cost: the rows come from DuckDB as Python values (no pyarrow),
    the classifier (and its crawler list) is not needed to read, and rich only for a table;
    DuckDB's engine comes without the duckdb package's Python layer, and no package version
    through importlib.metadata (tracklog.duck). Checked by what each command imported, not by
    timing it."""
    db = ["--db", str(tracking_db)]
    _heavy_modules_of([*db, "status"])  # once: brings the derived tables of the new database up to date
    for report in (["report", "deliveries"], ["report", "delivery", "NL1"], ["recipient", "r1"], ["status"]):
        assert _heavy_modules_of([*db, *report, "--format", "json"]) == [], report
    assert _heavy_modules_of([*db, "report", "stats", "--format", "csv"]) == []
    assert _heavy_modules_of([*db, "report", "hot-clicks", "--delivery", "NL1"]) == ["rich"]


def test_installed_versions_are_importlib_metadatas() -> None:
    """The versions read from the .dist-info names (without importing importlib.metadata) are
    the ones importlib.metadata reads from the metadata files."""
    from importlib import metadata

    for package in ("ua-parser", "ua-parser-builtins", "duckdb", "click", "rich", "pyarrow"):
        assert installed_version(package) == metadata.version(package), package
    assert installed_version("no-such-distribution-of-tracklog") == "none"


def test_status_counts_each_deliverys_links_and_recipients(tracking_db: Path, dataset: DataSet) -> None:
    res = CliRunner().invoke(cli, ["--db", str(tracking_db), "status", "--format", "json"])
    assert res.exit_code == 0, res.output
    got = {d["delivery_id"]: (d["links"], d["recipients"]) for d in json.loads(res.stdout)["deliveries"]}
    assert got == {d.delivery_id: (len(d.links), len(d.recipients)) for d in dataset.deliveries}


def test_python_dash_m(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tracklog", "--db", str(tmp_path / "x.duckdb"), "report", "delivery", "NOPE"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "TRACKLOG_CONFIG": "", "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        cwd=tmp_path,
    )
    assert proc.returncode == 4
    assert proc.stdout == ""
    assert proc.stderr.startswith("Error: no database at ") and "x.duckdb" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_option_is_a_usage_error() -> None:
    res = CliRunner().invoke(cli, ["ingest", "--no-such-option"])
    assert res.exit_code == 2
    assert "No such option" in res.stderr and res.stdout == ""
