"""Benchmark `tracklog ingest` on a large access log, plain and gzipped, against GoAccess.

Generates bench/out/access-<N>.log and its .gz copy once (reused afterwards), then, per file and
per run, ingests it into a fresh database and has GoAccess parse the same file into a JSON report,
one after the other (tracklog, GoAccess, tracklog, GoAccess, ...: a change in the machine's load
hits both). Prints each run's wall and CPU seconds, lines/s and peak RSS (every child measured on
its own), the ratio tracklog / GoAccess in lines/s, and gzip / plain in wall time.

GoAccess 1.7 (Debian 12: `apt-get install -y goaccess`) is not built with zlib there, so the
.gz file is piped to it (`gzip -dc FILE | goaccess - ...`); its CPU seconds count both processes.

--log-format tracklog: the same traffic in the format `tracklog nginx-config` has nginx write
(bench/out/access-tracklog-<N>.log), which real tracking servers log; GoAccess reads it with the
equivalent --log-format (and parses the same requests as valid). --log-format main: nginx's own
`main` format (combined, then "$http_x_forwarded_for"); main-iso: the same with [$time_iso8601];
upstream: `main` then nginx's upstream timings (rt=$request_time uct="..." ...); ingress: ingress-nginx's
default format (combined, then $request_length $request_time [...] ... $req_id). --pages SHARE: that share of
the lines are the site's page tags (web tracking), bench/out/access[-tracklog]-pagesNN-<N>.log.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_log import DEFAULT_LINES, FORMATS, write_log, write_manifests
from measure import BENCH_SECRET, OUT, CommandFailed, Run, print_table, run_tracklog, tracklog_env

from tracklog.ingest.formats import COMBINED  # gen_log put the checkout on sys.path
from tracklog.nginx import LOG_FORMAT as NGINX_LOG_FORMAT

TARGET_RATIO = 10.0  # tracklog lines/s >= 10x GoAccess's on the same file
TARGET_GZ = 1.3  # gzip wall <= 1.3x plain wall
TARGET_RSS_MB = 500.0
GOACCESS_INSTALL = "apt-get update && apt-get install -y goaccess"
# --no-ip-validation: gen_log.py writes IPv6 addresses GoAccess 1.7 rejects as invalid (about 8% of
# the lines), which it would then skip; with it, GoAccess does the full work on them, as on a real
# log. --no-global-config: /etc/goaccess/goaccess.conf plays no part.
GOACCESS_ARGS = ("--no-global-config", "--no-ip-validation", "--no-progress")
GOACCESS_FORMATS = {
    "combined": ("--log-format=COMBINED",),
    # $msec (%x: seconds, the milliseconds skipped), then as combined; the uid variables skipped
    "tracklog": (
        '--log-format=%x.%^ %h "%r" %s %b "%R" "%u" %^',
        "--date-format=%s",
        "--time-format=%s",
        "--datetime-format=%s",
    ),
    # nginx's `main`: combined, then "$http_x_forwarded_for" (skipped)
    "main": (
        '--log-format=%h %^[%d:%t %^] "%r" %s %b "%R" "%u" %^',
        "--date-format=%d/%b/%Y",
        "--time-format=%T",
    ),
    # the same with [$time_iso8601] (the offset skipped: the generator writes +00:00)
    "main-iso": (
        '--log-format=%h %^[%dT%t+%^] "%r" %s %b "%R" "%u" %^',
        "--date-format=%Y-%m-%d",
        "--time-format=%T",
    ),
    # `main`, then the upstream timings: the request time read (as tracklog keeps it), the others skipped
    "upstream": (
        '--log-format=%h %^[%d:%t %^] "%r" %s %b "%R" "%u" "%^" rt=%T uct="%^" uht="%^" urt="%^"',
        "--date-format=%d/%b/%Y",
        "--time-format=%T",
    ),
    # ingress-nginx's: the request time read, the rest of the line not
    "ingress": (
        '--log-format=%h %^[%d:%t %^] "%r" %s %b "%R" "%u" %^ %T',
        "--date-format=%d/%b/%Y",
        "--time-format=%T",
    ),
}
# what `tracklog ingest --log-format` is given: nginx-config's format (tracklog/nginx.py)
TRACKLOG_FORMATS = {
    "combined": "combined",
    "tracklog": NGINX_LOG_FORMAT,
    "main": COMBINED + ' "$http_x_forwarded_for"',
    "main-iso": COMBINED.replace("[$time_local]", "[$time_iso8601]") + ' "$http_x_forwarded_for"',
    "upstream": COMBINED
    + ' "$http_x_forwarded_for" rt=$request_time uct="$upstream_connect_time" uht="$upstream_header_time"'
    + ' urt="$upstream_response_time"',
    "ingress": COMBINED
    + " $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name]"
    + " $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id",
}


def log_files(lines: int, fmt: str = "combined", pages: float = 0.0) -> tuple[Path, Path]:
    """The plain log and its gzip copy, generated when missing."""
    name = (
        "access" + ("" if fmt == "combined" else f"-{fmt}") + (f"-pages{round(pages * 100)}" if pages else "")
    )
    plain = OUT / f"{name}-{lines}.log"
    gz = plain.with_name(plain.name + ".gz")
    if not plain.exists():
        print(f"generating {plain} ({lines:,} lines)...", file=sys.stderr)
        started = time.perf_counter()
        write_log(plain, lines, BENCH_SECRET.encode(), fmt=fmt, pages=pages)
        print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if not gz.exists():
        print(f"compressing {gz}...", file=sys.stderr)
        part = gz.with_name(gz.name + ".part")
        with (
            plain.open("rb") as src,
            part.open("wb") as raw,
            gzip.GzipFile(plain.name, "wb", 6, raw, mtime=0) as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
        part.replace(gz)
    return plain, gz


def stored_hits(db: Path) -> str:
    """How many hits the run stored, as a sanity check that it did the work. Counted in a child
    process: on Linux a child's peak RSS starts at its parent's, so this process stays small."""
    code = (
        "import sys, duckdb\n"
        "with duckdb.connect(sys.argv[1], read_only=True) as con:\n"
        "    print(con.execute('SELECT count(*) FROM hits').fetchone()[0])"
    )
    done = subprocess.run([sys.executable, "-c", code, str(db)], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        return f"? ({(done.stderr.strip().splitlines() or ['no output'])[-1]})"
    return f"{int(done.stdout):,} hits"


def run_pipeline(
    cmds: Sequence[Sequence[str]], cwd: Path, env: dict[str, str] | None = None
) -> tuple[Run, str]:
    """Run `cmds[0] | cmds[1] | ...` and measure it: wall time until the last one ends, CPU time
    (user + system) of all of them, and the peak RSS of the last one (the parser: from wait4() on
    that very child). Returns the run and their stderr; raises CommandFailed if any fails."""
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        stdin = subprocess.DEVNULL
        for i, cmd in enumerate(cmds):
            last = i == len(cmds) - 1
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=stdin,
                stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                stderr=err,
            )
            if procs:
                assert procs[-1].stdout is not None
                procs[-1].stdout.close()  # the next process owns the read end now
            stdin = proc.stdout  # type: ignore[assignment]
            procs.append(proc)
        cpu, rss_kb, failed = 0.0, 0, []
        for proc, cmd in zip(procs, cmds, strict=True):
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
            rss_kb = usage.ru_maxrss  # the last one's
            if proc.returncode != 0:
                failed.append(f"exit code {proc.returncode}: {' '.join(cmd)}")
        wall = time.perf_counter() - started
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if failed:
        raise CommandFailed(
            "command failed with " + "; ".join(failed) + f"\n--- its stderr ---\n{stderr.strip()}"
        )
    rss_mb = (rss_kb / 1024 if sys.platform == "darwin" else rss_kb) / 1024  # macOS counts bytes
    return Run(wall_s=wall, cpu_s=cpu, peak_rss_mb=rss_mb), stderr


def run_goaccess(goaccess: str, path: Path, tmp: Path, fmt: str) -> tuple[Run, str]:
    """GoAccess parses the whole file and writes its JSON report; returns the run and what it
    parsed (valid of total requests, from the report) as a check that it did the work."""
    report = tmp / "goaccess.json"
    options = [*GOACCESS_FORMATS[fmt], *GOACCESS_ARGS, "-o", str(report)]
    if path.suffix == ".gz":
        cmds = [["gzip", "-dc", str(path)], [goaccess, "-", *options]]
    else:
        cmds = [[goaccess, str(path), *options]]
    run, _ = run_pipeline(cmds, cwd=tmp)
    try:
        general = json.loads(report.read_text())["general"]
        check = f"{general['valid_requests']:,} of {general['total_requests']:,} requests"
    except (OSError, ValueError, KeyError) as exc:
        check = f"? ({exc})"
    return run, check


def run_tracklog_ingest(
    path: Path, tmp: Path, manifests: list[Path], no_verify: bool, profile: bool, fmt: str = "combined"
) -> tuple[Run, str]:
    """Load the manifests into a fresh database (untimed), then time `tracklog ingest FILE`.
    Returns the run and the hits stored, or with `profile` the `--profile` table it printed."""
    db = tmp / "bench.duckdb"
    if no_verify:
        (tmp / "tracklog.toml").write_text("verify_signatures = false\n")
    if manifests:
        manifest_args = [a for m in manifests for a in ("--manifest", str(m))]
        run_tracklog(["--db", str(db), "--quiet", "ingest", *manifest_args], cwd=tmp)
    args = ["--db", str(db), "--quiet", "ingest", "--log-format", TRACKLOG_FORMATS[fmt], str(path)]
    if profile:
        run, stderr = run_pipeline(
            [[sys.executable, "-m", "tracklog", *args, "--profile"]], tmp, tracklog_env()
        )
        return run, stderr
    return run_tracklog(args, cwd=tmp), stored_hits(db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, help="log lines (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per file (default: %(default)s)")
    parser.add_argument(
        "--no-manifests",
        action="store_true",
        help="ingest into an empty database (by default the 5 deliveries' manifests are loaded first, untimed)",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="verify_signatures = false: the engine without the HMAC"
    )
    parser.add_argument(
        "--no-goaccess", action="store_true", help="tracklog only, no comparison with GoAccess"
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="combined",
        help="combined, the format `tracklog nginx-config` writes (tracklog), nginx's main, main with "
        "[$time_iso8601] (main-iso), main with the upstream timings (upstream), or ingress-nginx's default "
        "format (ingress) (default: %(default)s)",
    )
    parser.add_argument(
        "--pages",
        type=float,
        default=0.0,
        help="share of the log's lines that are page tags (web tracking; default: %(default)s)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then one more tracklog run per file with `ingest --profile`: where the time goes",
    )
    args = parser.parse_args()

    goaccess = None
    if not args.no_goaccess:
        goaccess = shutil.which("goaccess")
        if goaccess is None:
            sys.exit(
                "Error: goaccess is not installed, and this benchmark compares tracklog with it.\n"
                f"Install it with `{GOACCESS_INSTALL}` (GoAccess 1.7 on Debian 12), "
                "or run with --no-goaccess to time tracklog alone."
            )
        said = subprocess.run([goaccess, "--version"], check=False, capture_output=True, text=True).stdout
        version = next((line.strip(" .") for line in said.splitlines() if line.strip()), "goaccess")

    if not 0 <= args.pages < 1:
        parser.error("--pages: a share from 0 to below 1")
    plain, gz = log_files(args.lines, args.log_format, args.pages)
    manifests = [] if args.no_manifests else write_manifests(OUT / "manifests")
    uncompressed_mb = plain.stat().st_size / 1e6
    rows: list[list[str]] = []
    walls: dict[tuple[str, Path], list[float]] = {}
    rss: dict[tuple[str, Path], list[float]] = {}
    profiles: list[tuple[Path, Run, str]] = []

    def record(tool: str, path: Path, run_no: int, run: Run, check: str, ratio: str) -> None:
        walls.setdefault((tool, path), []).append(run.wall_s)
        rss.setdefault((tool, path), []).append(run.peak_rss_mb)
        rows.append(
            [
                path.name,
                f"{path.stat().st_size / 1e6:,.0f}",
                str(run_no),
                tool,
                f"{run.wall_s:.2f}",
                f"{run.cpu_s:.1f}",
                f"{args.lines / run.wall_s:,.0f}",
                f"{uncompressed_mb / run.wall_s:,.1f}",
                f"{run.peak_rss_mb:,.0f}",
                ratio,
                check,
            ]
        )

    try:
        for path in (plain, gz):
            for run_no in range(1, args.repeat + 1):
                with tempfile.TemporaryDirectory(prefix="tracklog-bench-") as tmp:
                    print(f"tracklog ingest {path.name} (run {run_no})...", file=sys.stderr)
                    ours, check = run_tracklog_ingest(
                        path, Path(tmp), manifests, args.no_verify, profile=False, fmt=args.log_format
                    )
                    record("tracklog", path, run_no, ours, check, "")
                if goaccess is None:
                    continue
                with tempfile.TemporaryDirectory(prefix="goaccess-bench-") as tmp:
                    print(f"goaccess {path.name} (run {run_no})...", file=sys.stderr)
                    theirs, check = run_goaccess(goaccess, path, Path(tmp), args.log_format)
                    record("goaccess", path, run_no, theirs, check, f"{theirs.wall_s / ours.wall_s:.1f}x")
            if args.profile:
                with tempfile.TemporaryDirectory(prefix="tracklog-bench-") as tmp:
                    print(f"tracklog ingest --profile {path.name}...", file=sys.stderr)
                    run, table = run_tracklog_ingest(
                        path, Path(tmp), manifests, args.no_verify, profile=True, fmt=args.log_format
                    )
                    profiles.append((path, run, table))
    except CommandFailed as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)

    print(
        f"{args.lines:,} lines ({uncompressed_mb:,.0f} MB uncompressed); manifests: "
        f"{'none' if not manifests else f'{len(manifests)} deliveries loaded first (untimed)'}; "
        f"signatures: {'not verified' if args.no_verify else 'verified'}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    if goaccess is not None:
        print(
            f"{version}: `goaccess FILE {' '.join(GOACCESS_FORMATS[args.log_format] + GOACCESS_ARGS)} "
            "-o REPORT.json`, the .gz piped from `gzip -dc`"
        )
    header = ["file", "MB", "run", "tool", "wall s", "CPU s", "lines/s", "raw MB/s", "peak RSS MB"]
    header += ["tracklog / GoAccess", "check"]
    if goaccess is None:  # no ratio column
        header, rows = header[:-2] + header[-1:], [row[:-2] + row[-1:] for row in rows]
    print_table(header, rows)

    print(f"\nmedians of {args.repeat} runs:" if args.repeat > 1 else "")
    med = {key: statistics.median(values) for key, values in walls.items()}
    for path in (plain, gz):
        ours = med[("tracklog", path)]
        line = f"{path.name}: tracklog {args.lines / ours:,.0f} lines/s"
        if goaccess is not None:
            theirs = med[("goaccess", path)]
            ratio = theirs / ours
            line += (
                f", GoAccess {args.lines / theirs:,.0f} lines/s: tracklog / GoAccess = {ratio:.1f}x "
                f"(target {TARGET_RATIO:.0f}x: {'met' if ratio >= TARGET_RATIO else 'not met'})"
            )
        print(line)
    gz_ratio = med[("tracklog", gz)] / med[("tracklog", plain)]
    line = f"gzip / plain, wall: tracklog {gz_ratio:.2f}x (target {TARGET_GZ}x: {'met' if gz_ratio <= TARGET_GZ else 'not met'})"
    if goaccess is not None:
        line += f", GoAccess {med[('goaccess', gz)] / med[('goaccess', plain)]:.2f}x"
    print(line)
    peak = max(max(rss[("tracklog", p)]) for p in (plain, gz))
    print(
        f"tracklog's largest peak RSS: {peak:,.0f} MB "
        f"(target under {TARGET_RSS_MB:.0f} MB: {'met' if peak < TARGET_RSS_MB else 'not met'})"
    )

    for path, run, table in profiles:
        print(
            f"\n`tracklog ingest --profile {path.name}` (one more run): {run.wall_s:.2f} s wall, "
            f"{run.cpu_s:.1f} s CPU, peak RSS {run.peak_rss_mb:,.0f} MB"
        )
        print(table.rstrip())


if __name__ == "__main__":
    main()
