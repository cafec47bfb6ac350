"""Benchmark an incremental ingest: 100,000 new lines into a 10M-hit database vs into an empty one.

The target: ingesting new lines into a large database costs at most 1.5x the same lines into an
empty one (the report caches take in the new hits instead of recomputing whole deliveries).

Builds once, under bench/out/ (reused afterwards, --rebuild to force): the 10M-hit database of
bench_reports.py (10 deliveries x 200,000 recipients, hits in time order; see _datasets.py) and
the same database without hits, both brought to their steady state by the product's own refresh
(bring_up_to_date below); and two logs of --lines new lines, later than every stored hit, signed
with the bench secret: one over all 10 deliveries, one of delivery D09 only. Then times
`tracklog --db DB --quiet ingest LOG` as a child process, each run on a fresh copy of its starting
database (the copy is not timed):

  (a) the all-deliveries log into the database with the manifests and no hits
  (b) the same log into the 10M-hit database
  (c) the one-delivery log into the 10M-hit database
  (d) the one-delivery log into the database with no hits (the baseline of (c) with the same lines)

and prints a markdown table (median wall and CPU seconds of --runs runs, the ratios to (a)), the
ratios b/a, c/a and c/d, then the `ingest --profile` breakdown of one more run of (b).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import importlib
import multiprocessing
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))
import duckdb
from _datasets import (
    DELIVERIES,
    LINKS_PER_DELIVERY,
    RECIPIENTS_PER_DELIVERY,
    build,
    delivery_id,
    last_hit_bound,
    link_id,
    recipient_id,
)
from gen_log import (
    BROWSER_UA_WEIGHTS,
    BROWSER_UAS,
    MALFORMED,
    MONTHS,
    NOISE,
    ONE_CLICK_UAS,
    OPEN_UA_WEIGHTS,
    OPEN_UAS,
    ip_pool,
    weighted_table,
)
from measure import BENCH_SECRET, OUT, CommandFailed, Run, run_tracklog, run_tracklog_capturing

from tracklog.signing import SIG_BYTES, sign_path

DEFAULT_HITS = DELIVERIES * 1_000_000
DEFAULT_LINES = 100_000
ONE_DELIVERY = DELIVERIES - 1  # the newest send, as in a log the day after it went out
LOG_SPAN_SECONDS = 86_400  # the new lines cover one day, starting an hour after the last stored hit
# As gen_log.py: open, click, mirror, opt-out GET, one-click POST, noise, malformed, bad signature
KIND_WEIGHTS = (600, 300, 30, 14, 6, 48, 1.5, 0.5)
CLICK_WEIGHTS = (30, 16, 11, 8, 6, 4, 3, 3, 2, 2, 1)  # links l0..l10 by position; the trap l11 apart
TARGET_RATIO = 1.5
T = TypeVar("T")


def bring_up_to_date(db: Path) -> None:
    """Bring the derived tables (the report caches) of `db` to the state an ingest leaves them
    in: the one place that names the product's step for it (a no-op when already current).
    Before the store's redesign, `tracklog ingest` ends with metrics.refresh_derived() on its
    writer connection (tracklog.ingest.run.run_ingest); with it, tracklog.derived.sync() merges
    whatever hits are not merged yet (here: all of them, stored straight into `hits`)."""
    from tracklog import metrics
    from tracklog.store import open_writer

    with open_writer(db) as con:
        refresh = getattr(metrics, "refresh_derived", None)  # the code before the redesign
        if refresh is None:
            refresh = importlib.import_module("tracklog.derived").sync
        refresh(con)


# -- inputs ----------------------------------------------------------------------------------


def in_fresh_process(func: Callable[..., T], *args: object) -> T:
    """func(*args) in a new Python process. On Linux a child's peak RSS (wait4, and `ingest
    --profile`) counts its parent's RSS when it was started, so this process stays small (about
    60 MB, less than any tracklog run) and leaves the DuckDB work to children."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(func, *args).result()


def prepare_database(hits: int, rebuild: bool) -> Path:
    """The database with `hits` hits (0: the manifests only), built when missing, then brought
    up to date (a no-op unless the product's caches changed since it was built)."""
    path = OUT / f"incremental-{hits}.duckdb"
    if rebuild or not path.exists():
        part = path.with_name(path.stem + ".part.duckdb")
        for stale in (part, Path(f"{part}.wal"), path, Path(f"{path}.wal")):
            stale.unlink(missing_ok=True)
        OUT.mkdir(parents=True, exist_ok=True)
        print(f"building {path.name} ({hits:,} hits)...", file=sys.stderr)
        started = time.perf_counter()
        build(part, hits)
        print(f"  built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        started = time.perf_counter()
        bring_up_to_date(part)
        print(f"  caches brought up to date in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        part.replace(path)
        for side in OUT.glob(f"{part.name}.*"):  # the writer's lock file and the like
            side.unlink()
    started = time.perf_counter()
    bring_up_to_date(path)
    took = time.perf_counter() - started
    if took > 1:
        print(f"{path.name}: caches brought up to date in {took:.1f} s", file=sys.stderr)
    return path


def log_lines(n: int, secret: bytes, seed: int, deliveries: Sequence[int], start: datetime) -> Iterator[str]:
    """n combined-format lines for the deliveries, links and recipients of the built database,
    in time order from `start` over LOG_SPAN_SECONDS, with gen_log.py's mix: opens through image
    proxies and mail clients, clicks (a few on the trap), mirror pages, opt-outs and one-click
    POSTs, noise, a few bad signatures and malformed or truncated lines; about 1% of the hits
    from recipients beyond the manifests (orphans), as in the database."""
    rng = random.Random(seed)
    ids = [delivery_id(d) for d in deliveries]
    recipients = RECIPIENTS_PER_DELIVERY * 101 // 100
    ips = ip_pool(rng, 40_000)
    kinds = weighted_table(range(len(KIND_WEIGHTS)), KIND_WEIGHTS, 4096)
    link_of = weighted_table([link_id(k) for k in range(LINKS_PER_DELIVERY - 1)], CLICK_WEIGHTS, 256)
    trap = link_id(LINKS_PER_DELIVERY - 1)
    open_ua_of = weighted_table(OPEN_UAS, OPEN_UA_WEIGHTS, 256)
    browser_ua_of = weighted_table(BROWSER_UAS, BROWSER_UA_WEIGHTS, 256)
    base = hmac.new(secret, digestmod=hashlib.sha256)

    def signed(path: str) -> str:
        mac = base.copy()
        mac.update(path.encode())
        return f"{path}?s={base64.urlsafe_b64encode(mac.digest()[:SIG_BYTES]).rstrip(b'=').decode()}"

    probe = f"/o/{ids[0]}/{recipient_id(1)}.gif"
    assert signed(probe) == f"{probe}?s={sign_path(secret, probe)}"

    mean_gap = LOG_SPAN_SECONDS / n
    t = start.replace(tzinfo=UTC).timestamp()
    minute = -1
    prefix = ""
    for _ in range(n):
        r = rng.getrandbits(96)
        t += mean_gap * 2 * ((r >> 80) & 0xFFFF) / 0x10000
        second = int(t)
        if second // 60 != minute:
            minute = second // 60
            d = datetime.fromtimestamp(minute * 60, UTC)
            prefix = f" - - [{d.day:02d}/{MONTHS[d.month - 1]}/{d.year}:{d:%H:%M}:"
        stamp = f"{prefix}{second % 60:02d} +0000]"
        kind = kinds[r & 4095]
        who = (r >> 12) % recipients
        jitter = (r >> 30) & 7
        ip = ips[(who * 7 + jitter) % len(ips)]
        if kind == 5:
            req, status, size, ua = NOISE[who % len(NOISE)]
            yield f'{ip}{stamp} "{req}" {status} {size} "-" "{ua}"'
            continue
        if kind == 6:
            yield f"{ip}{stamp} {MALFORMED[who % 2]}"
            continue
        d_id = ids[((r >> 33) & 0xFFFF) % len(ids)]
        rid = recipient_id(who)
        rare = (r >> 50) & 1023
        if kind == 0:
            target = signed(f"/o/{d_id}/{rid}.gif")
            cached = jitter == 0
            method, status, size, ua = (
                "GET",
                304 if cached else 200,
                0 if cached else 43,
                open_ua_of[(r >> 60) & 255],
            )
        elif kind == 1:
            link = trap if rare < 4 else link_of[(r >> 60) & 255]
            target = signed(f"/c/{d_id}/{link}/{rid}")
            method, status, size, ua = "GET", 302, 145, browser_ua_of[(r >> 68) & 255]
        elif kind == 2:
            target = signed(f"/m/{d_id}/{rid}")
            method, status, size, ua = "GET", 200, 24816 + jitter, browser_ua_of[(r >> 68) & 255]
        elif kind == 3:
            target = signed(f"/u/{d_id}/{rid}")
            method, status, size, ua = "GET", 200, 2650, browser_ua_of[(r >> 68) & 255]
        elif kind == 4:
            target = signed(f"/u/{d_id}/{rid}")
            method, status, size, ua = "POST", 200, 0, ONE_CLICK_UAS[jitter % 2]
        else:  # kind 7: a bad or missing signature
            target = signed(f"/o/{d_id}/{rid}.gif")
            target = target[: target.index("?")] if jitter < 3 else target[:-4] + "AAAA"
            method, status, size, ua = "GET", 200, 43, browser_ua_of[(r >> 68) & 255]
        if rare == 1023:  # a truncated line now and then, as after a crash mid-write
            yield f'{ip}{stamp} "{method} {target[:30]}'
            continue
        yield f'{ip}{stamp} "{method} {target} HTTP/1.1" {status} {size} "-" "{ua}"'


def log_file(name: str, lines: int, seed: int, deliveries: Sequence[int], rebuild: bool) -> Path:
    """bench/out/incremental-<name>-<lines>.log, generated when missing."""
    path = OUT / f"incremental-{name}-{lines}.log"
    if rebuild or not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        start = last_hit_bound() + timedelta(hours=1)
        with part.open("w") as fh:
            for line in log_lines(lines, BENCH_SECRET.encode(), seed, deliveries, start):
                fh.write(line + "\n")
        part.replace(path)
        print(f"wrote {path.name} ({lines:,} lines, {path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return path


# -- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    db: Path
    log: Path
    hits_before: int


def count_hits(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM hits").fetchone()
    return int(row[0]) if row else 0


def ingest_copy(scenario: Scenario, profile: bool = False) -> tuple[Run, int, str]:
    """One timed `tracklog ingest` of the scenario's log into a fresh copy of its database:
    the run, the hits it added, and its stderr when profiled."""
    with tempfile.TemporaryDirectory(prefix="incremental-run-", dir=OUT) as tmp:
        db = Path(tmp) / "tracklog.duckdb"
        shutil.copyfile(scenario.db, db)
        os.sync()  # the copy's dirty pages are written now, not during the timed run
        args = ["--db", str(db), "--quiet", "ingest", str(scenario.log)]
        if profile:
            run, stderr = run_tracklog_capturing([*args, "--profile"], cwd=Path(tmp))
        else:
            run, stderr = run_tracklog(args, cwd=Path(tmp)), ""
        return run, in_fresh_process(count_hits, db) - scenario.hits_before, stderr


# -- output ----------------------------------------------------------------------------------


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def profile_rows(stderr: str) -> list[list[str]]:
    """The rows (phase, wall s, CPU s, peak RSS MB) of the rich table `ingest --profile` prints."""
    rows = []
    for line in stderr.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        cells = [c for c in cells if c]
        if len(cells) == 4 and all(re.fullmatch(r"[\d.,]+", c) for c in cells[1:]):
            rows.append(cells)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default: %(default)s)")
    parser.add_argument(
        "--lines", type=int, default=DEFAULT_LINES, help="new log lines (default: %(default)s)"
    )
    parser.add_argument(
        "--hits", type=int, default=DEFAULT_HITS, help="hits in the large database (default: %(default)s)"
    )
    parser.add_argument("--rebuild", action="store_true", help="build the databases and logs again")
    parser.add_argument("--no-profile", action="store_true", help="skip the extra --profile run of (b)")
    args = parser.parse_args()

    large = in_fresh_process(prepare_database, args.hits, args.rebuild)
    empty = in_fresh_process(prepare_database, 0, args.rebuild)
    in_large, in_empty = in_fresh_process(count_hits, large), in_fresh_process(count_hits, empty)
    spread = log_file("all", args.lines, 1, range(DELIVERIES), args.rebuild)
    one = log_file(delivery_id(ONE_DELIVERY), args.lines, 2, [ONE_DELIVERY], args.rebuild)
    big = f"{args.hits / 1e6:g}M-hit"
    scenarios = [
        Scenario(
            "a", f"(a) into the database with the {DELIVERIES} manifests and no hits", empty, spread, in_empty
        ),
        Scenario("b", f"(b) into the {big} database, all {DELIVERIES} deliveries", large, spread, in_large),
        Scenario("c", f"(c) into the {big} database, one delivery", large, one, in_large),
        Scenario(
            "d", "(d) one delivery into the database with no hits (the baseline of c)", empty, one, in_empty
        ),
    ]

    load_before = os.getloadavg()[0]
    runs: dict[str, list[Run]] = {s.key: [] for s in scenarios}
    added: dict[str, set[int]] = {s.key: set() for s in scenarios}
    try:
        for run_no in range(1, args.runs + 1):  # interleaved, so that drift hits every scenario alike
            for s in scenarios:
                run, hits, _ = ingest_copy(s)
                runs[s.key].append(run)
                added[s.key].add(hits)
                print(
                    f"run {run_no} {s.key}: {run.wall_s:.2f} s wall, {run.cpu_s:.2f} s CPU, "
                    f"{run.peak_rss_mb:.0f} MB, {hits:,} hits added",
                    file=sys.stderr,
                )
        profile = None if args.no_profile else ingest_copy(scenarios[1], profile=True)
    except CommandFailed as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)

    wall = {k: statistics.median(r.wall_s for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r.cpu_s for r in v) for k, v in runs.items()}
    rss = {k: max(r.peak_rss_mb for r in v) for k, v in runs.items()}
    print(
        f"{args.lines:,} new lines per run ({spread.stat().st_size / 1e6:.1f} MB), median of {args.runs} "
        f"run(s), each on a fresh copy of its database; DuckDB {duckdb.__version__}, {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} before the runs and {os.getloadavg()[0]:.1f} after\n"
    )
    print(
        markdown(
            [
                "ingest of 100,000 new lines"
                if args.lines == DEFAULT_LINES
                else f"ingest of {args.lines:,} new lines",
                "wall s",
                "CPU s",
                "wall ÷ (a)",
                "CPU ÷ (a)",
                "peak RSS MB",
            ],
            [
                [
                    s.label,
                    f"{wall[s.key]:.2f}",
                    f"{cpu[s.key]:.2f}",
                    f"{wall[s.key] / wall['a']:.2f}",
                    f"{cpu[s.key] / cpu['a']:.2f}",
                    f"{rss[s.key]:,.0f}",
                ]
                for s in scenarios
            ],
        )
    )
    print()
    for num, den in (("b", "a"), ("c", "a"), ("c", "d")):
        ratio = wall[num] / wall[den]
        verdict = "met" if ratio <= TARGET_RATIO else "not met"
        print(
            f"{num}/{den}: {ratio:.2f} wall, {cpu[num] / cpu[den]:.2f} CPU "
            f"(target: at most {TARGET_RATIO} wall: {verdict})"
        )
    print(
        "hits added per run: "
        + ", ".join(f"{k} {'/'.join(f'{n:,}' for n in sorted(v))}" for k, v in added.items())
    )
    if profile is not None:
        run, _, stderr = profile
        print(
            f"\n`tracklog ingest --profile`, one more run of (b): {run.wall_s:.2f} s wall, {run.cpu_s:.2f} s CPU\n"
        )
        rows = profile_rows(stderr)
        if rows:
            print(markdown(["phase", "wall s", "CPU s", "peak RSS MB"], rows))
        else:
            print(stderr.rstrip())


if __name__ == "__main__":
    main()
