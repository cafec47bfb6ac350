"""Run one tracklog command as a child process and measure it: wall time and peak RSS.

Peak RSS comes from wait4() on that very child, so every run is measured on its own (the
RUSAGE_CHILDREN total would keep the largest run seen so far). Used by the bench_* scripts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"  # gitignored
BENCH_SECRET = "bench-secret-not-for-production"


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # user + system, every thread of the child
    peak_rss_mb: float


class CommandFailed(Exception):
    pass


def tracklog_env() -> dict[str, str]:
    """The environment of the child: the bench secret, and no stray TRACKLOG_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKLOG_")}
    env["TRACKLOG_SECRET"] = BENCH_SECRET
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_tracklog(args: Sequence[str], cwd: Path) -> Run:
    """Run `tracklog ARGS` in cwd (an empty folder, so no tracklog.toml is picked up)."""
    return run_tracklog_capturing(args, cwd)[0]


def run_tracklog_capturing(args: Sequence[str], cwd: Path) -> tuple[Run, str]:
    """As run_tracklog, with the child's stderr (where `--profile` prints)."""
    cmd = [sys.executable, "-m", "tracklog", *args]
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=cwd, env=tracklog_env(), stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise CommandFailed(
            f"command failed with exit code {code}: {' '.join(cmd)}\n--- its stderr ---\n"
            + (stderr.strip() or "(no output on stderr)")
        )
    rss_kb = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss  # macOS counts bytes
    return Run(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, peak_rss_mb=rss_kb / 1024), stderr


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
