"""A fresh clone passes its tests: the tests that read ../shared/corpora/apache_logs skip with a
clear reason where ../shared is absent, and fail under TRACKLOG_CI=1 (set by .ci/run), so CI
keeps running them. Checked on a copy of the repository with nothing beside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, its tests and pyproject.toml copied where no ../shared exists."""
    where = tmp_path_factory.mktemp("fresh") / "tracklog"
    ignore = shutil.ignore_patterns("__pycache__", "*.duckdb*", "out")
    shutil.copytree(ROOT / "tracklog", where / "tracklog", ignore=ignore)
    shutil.copytree(ROOT / "tests", where / "tests", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", where / "pyproject.toml")
    assert not (where.parent / "shared").exists()
    return where


def _pytest(clone: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRACKLOG_CI", "PYTHONPATH")}
    env["PYTHONPATH"] = str(clone)
    if ci:
        env["TRACKLOG_CI"] = "1"
    tests = ["tests/test_formats.py::test_real_corpus", "tests/test_ingest.py::test_real_world_corpus"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-n", "0", "-p", "no:cacheprovider", *tests],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_corpus_tests_skip_with_a_reason_without_shared(clone: Path) -> None:
    run = _pytest(clone, ci=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 skipped" in run.stdout and "corpora/apache_logs is absent" in run.stdout


def test_corpus_tests_fail_in_ci_without_shared(clone: Path) -> None:
    run = _pytest(clone, ci=True)
    assert run.returncode == 1
    assert "2 failed" in run.stdout and "required in CI" in run.stdout
