"""The layering of ../shared/STYLE.md holds: import-linter's contracts in pyproject.toml are
kept, and every module imports on its own in a fresh interpreter, so no import cycle hides
behind the order in which the rest of the suite happens to import things."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tracklog

ROOT = Path(__file__).resolve().parent.parent
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def test_import_contracts_are_kept() -> None:
    run = subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def tracklog_modules() -> list[str]:
    # __main__ runs the command line when imported: it is `python -m tracklog`, not a module
    found = pkgutil.walk_packages(tracklog.__path__, prefix="tracklog.")
    return ["tracklog", *sorted(m.name for m in found if not m.name.endswith(".__main__"))]


def import_alone(module: str) -> str | None:
    """None when `module` imports in a fresh interpreter, else the last line of the error."""
    run = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return None if run.returncode == 0 else (run.stderr.strip().splitlines() or ["(no output)"])[-1]


def test_every_module_imports_on_its_own() -> None:
    modules = tracklog_modules()
    assert "tracklog.routes" in modules and "tracklog.reports.hot_clicks_html" in modules
    with ThreadPoolExecutor() as pool:
        errors = dict(zip(modules, pool.map(import_alone, modules), strict=True))
    assert {m: e for m, e in errors.items() if e is not None} == {}
