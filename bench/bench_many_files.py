"""Many small inputs: N one-line log files (a signed open each, one delivery's manifest loaded
first) ingested in one run; prints wall and CPU seconds per file. The fixed cost per input is
what this measures (issue 12: 20,000 one-line files took 0.15 s each).

    python bench/bench_many_files.py --files 2000 [--repo /path/to/another/checkout]

--repo runs another checkout's tracklog (for a before/after comparison on the same machine).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import BENCH_SECRET, tracklog_env


def _sig(path: str) -> str:
    mac = hmac.new(BENCH_SECRET.encode(), path.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def make_inputs(folder: Path, files: int) -> Path:
    logs = folder / "logs"
    logs.mkdir()
    for i in range(files):
        path = f"/o/BENCH/r{i % 1000:05d}.gif"
        ts = f"03/Nov/2026:{10 + i // 3600 % 10:02d}:{i // 60 % 60:02d}:{i % 60:02d} +0000"
        (logs / f"access-{i:06d}.log").write_text(
            f'203.0.113.{i % 250} - - [{ts}] "GET {path}?s={_sig(path)} HTTP/1.1" 200 43 "-" "Mozilla/5.0"\n'
        )
    manifest = folder / "bench.json"
    recipients = [{"recipient_id": f"r{i:05d}"} for i in range(1000)]
    manifest.write_text(
        json.dumps(
            {"delivery": "BENCH", "sent_at": "2026-11-03T08:00:00Z", "links": [], "recipients": recipients}
        )
    )
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repo", type=Path, help="the checkout whose tracklog runs (default: this one)")
    args = parser.parse_args()
    env = tracklog_env()
    if args.repo is not None:
        env["PYTHONPATH"] = str(args.repo.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_inputs(folder, args.files)
        db = folder / "t.duckdb"
        cmd = [
            sys.executable,
            "-m",
            "tracklog",
            "--db",
            str(db),
            "ingest",
            "--manifest",
            str(manifest),
            str(folder / "logs"),
        ]
        started = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"ingest failed: {' '.join(cmd)}")
        cpu = usage.ru_utime + usage.ru_stime
        print(
            f"{args.files} one-line files: {wall:.1f} s wall ({1000 * wall / args.files:.1f} ms per file), "
            f"{cpu:.1f} CPU-s ({1000 * cpu / args.files:.1f} ms per file)"
        )


if __name__ == "__main__":
    main()
