"""One `tracklog ingest` run: manifests and log inputs into the database under the writer lock,
with a record in the runs table. Returns what happened; printing is the caller's job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import pyarrow as pa

from tracklog import classify, derived
from tracklog.config import Config
from tracklog.duck import duckdb
from tracklog.errors import ConfigError
from tracklog.ingest.engine import FileResult, Ingester, Progress
from tracklog.ingest.formats import LogFormat, resolve_format
from tracklog.ingest.sources import DEFAULT_EXCLUDE, InputSpec, expand_inputs
from tracklog.profiling import NoPhases, Phases
from tracklog.routes import HIT_KINDS as KINDS
from tracklog.store import (
    CHUNK_MEMORY_LIMIT,
    LOG_FORMAT_KEY,
    OnWait,
    WriterSession,
    cleanup,
    environment_problem,
    fetch_one,
    meta_value,
    set_memory_limit,
    writer_session,
)


def _checkpoint_within_chunks_limit(session: WriterSession) -> None:
    """The last checkpoint of an ingest (when the connection closes) rewrites the row groups its
    chunks left, merging the partial ones when a small chunk turned DuckDB's vacuum on: with the
    writer's limit it took the peak of nginx-config's 2M-line log (whose last chunk is small) to
    476-496 MB, against 416-447 MB while the chunks were stored. It keeps the chunks' limit."""
    try:
        set_memory_limit(session.con, CHUNK_MEMORY_LIMIT)
    except duckdb.Error:
        pass  # a failed transaction refuses it: the close reports what failed


@dataclass
class ManifestLine:
    name: str
    ok: bool
    message: str


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    manifests: list[ManifestLine] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line each, in the order they happened
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files of a DIR or GLOB excluded by name
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    @property
    def lines(self) -> int:
        return sum(f.lines for f in self.files)

    def summary_table(self) -> pa.Table:
        """One row per input (skipped ones too) plus a total row: the end-of-run summary."""
        rows = [_row(f.name, f.status, [f]) for f in self.files]
        rows += [_row(name, "skipped (excluded)", []) for name in self.skipped]
        by_status = Counter(f.status for f in self.files)
        if self.skipped:
            by_status["skipped"] = len(self.skipped)
        rows.append(_row("total", ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())), self.files))
        lines_per_s = self.lines / self.seconds if self.seconds > 0 else 0.0
        rows[-1]["lines_per_s"] = int(lines_per_s)
        for r in rows[:-1]:
            r["lines_per_s"] = None
        return pa.Table.from_pylist(rows)


def _row(name: str, status: str, files: list[FileResult]) -> dict[str, object]:
    row: dict[str, object] = {"input": name, "status": status, "lines": sum(f.lines for f in files)}
    for k in KINDS:
        row[k] = sum(f.hits[k] for f in files)  # hits per route (`unsubscribe`: every /u/ hit)
    row["rejected"] = sum(f.rejected for f in files)
    row["ignored"] = sum(f.ignored for f in files)
    row["quarantined"] = sum(f.quarantined for f in files)
    return row


def run_ingest(
    config: Config,
    inputs: list[str],
    manifests: list[str],
    *,
    log_format: str | None = None,
    source: str | None = None,
    progress: Progress | None = None,
    phases: Phases | None = None,
    on_wait: OnWait | None = None,
    exclude: list[str] | None = None,
) -> IngestReport:
    """Ingest `manifests` then the log `inputs`; errors of one input never stop the others.
    `source` names the tracking server of every input (else a directory's name, if any).
    `phases`, when given, collects where the time went; `on_wait` is called if another ingest
    holds the database. Files of a DIR or GLOB named like nginx's error log, like a glob of
    config.exclude or of `exclude` are skipped (listed in the report)."""
    report = IngestReport()
    phases = phases if phases is not None else NoPhases()
    asked = log_format or config.log_format
    fmt = resolve_format(asked, config.log_formats) if asked else None
    patterns = [*DEFAULT_EXCLUDE, *config.exclude, *(exclude or [])]
    specs, errors, report.skipped = expand_inputs(inputs, patterns)
    if source is not None:
        specs = [dataclasses.replace(spec, server=source) for spec in specs]
    report.errors.extend(errors)
    if specs and config.verify_signatures and config.secret is None:
        raise ConfigError(
            "no signing secret, so tracking hits cannot be verified: set TRACKLOG_SECRET or secret_file "
            "in the config file (or verify_signatures = false if your tracked URLs carry no signature)"
        )
    started = time.monotonic()
    with ExitStack() as stack:
        with phases.phase("open database"):
            session = stack.enter_context(writer_session(config.db, config.wait, on_wait=on_wait))
        try:
            _run(session, config, fmt, specs, manifests, report, phases, progress, started)
        except Exception as exc:
            # a full disk or a damaged file: the errors so far, then why the run stopped
            if (problem := environment_problem(exc)) is None:
                raise
            report.errors.append(f"database {config.db}: {problem}")
        closing = stack.pop_all()  # closed below, timed: the checkpoint happens there
        if specs:
            _checkpoint_within_chunks_limit(session)
    with phases.phase("close database (checkpoint)"):
        try:
            closing.close()
        except Exception as exc:
            if (problem := environment_problem(exc)) is None:
                raise
            report.errors.append(f"database {config.db}: {problem}")
    return report


def recorded_format(con: duckdb.DuckDBPyConnection) -> LogFormat:
    """The log format `tracklog nginx-config` recorded in the database, else combined."""
    recorded = meta_value(con, LOG_FORMAT_KEY)
    if recorded is None or "\n" not in recorded:
        return resolve_format("combined", {})
    name, spec = recorded.split("\n", 1)
    return resolve_format(name, {name: spec})


def _run(
    session: WriterSession,
    config: Config,
    fmt: LogFormat | None,
    specs: list[InputSpec],
    manifests: list[str],
    report: IngestReport,
    phases: Phases,
    progress: Progress | None,
    started: float,
) -> None:
    """The run inside the open database: manifests, derived tables, inputs, the runs record."""
    con = session.con
    run_id = _start_run(con)
    if manifests:
        with phases.phase("manifests"):
            _ingest_manifests(con, manifests, report, config.verify_secrets())
    derived.use_clock_window(con, config.clock_window_days)
    # new or replaced manifests resolve their deliveries' stored hits again (and a database
    # of an earlier version, or classified with other settings, is brought up to date)
    # before new hits merge, chunk by chunk
    with phases.phase("derived tables (manifests, upgrades)"):
        _store_classifier_settings(con, config)
        derived.sync(con)
    if specs:
        ingester = Ingester(
            con,
            fmt or recorded_format(con),
            secret=config.verify_secrets(),
            verify_signatures=config.verify_signatures,
            max_bad_ratio=config.max_bad_ratio,
            progress=progress,
            phases=phases,
            between_commits=_between_commits(session),
            truncate_ips=config.truncate_ips,
        )
        if config.secret is None and ingester.has_tombstones():
            report.warnings.append(
                "the database holds tombstones of `tracklog forget` but no secret is set: hits of "
                "forgotten recipients in these logs are stored again (set TRACKLOG_SECRET)"
            )
        for spec in specs:
            result = ingester.ingest(spec)
            report.files.append(result)
            if result.error:
                report.errors.append(result.error)
        ingester.merge_pending()
        report.errors.extend(ingester.problems)
    report.seconds = time.monotonic() - started
    _finish_run(con, run_id, report)


def _store_classifier_settings(con: duckdb.DuckDBPyConnection, config: Config) -> None:
    """The [classify] settings of the config become the ones in force (derived.sync then
    reclassifies the stored hits if their version changed)."""
    con.execute("BEGIN TRANSACTION")
    try:
        classify.store_settings(con, config.classify)
        con.execute("COMMIT")
    except BaseException:
        cleanup(con, "ROLLBACK")
        raise


def _between_commits(session: WriterSession) -> Callable[[Callable[[], None]], None]:
    """The hand-off to waiting readers after each commit. Tests: TRACKLOG_FAULT_SLEEP_AFTER_COMMIT=
    SECONDS first sleeps that long still holding the database, so that readers wait for it."""
    pause = float(os.environ.get("TRACKLOG_FAULT_SLEEP_AFTER_COMMIT") or 0)
    if not pause:
        return session.hand_off

    def sleep_then_hand_off(prepare: Callable[[], None]) -> None:
        time.sleep(pause)
        session.hand_off(prepare)

    return sleep_then_hand_off


def _ingest_manifests(
    con: duckdb.DuckDBPyConnection, manifests: list[str], report: IngestReport, secret: list[bytes]
) -> None:
    from tracklog.manifest import expand_manifest_args, ingest_manifests

    paths, missing = expand_manifest_args(manifests)
    report.errors.extend(missing)
    for outcome in ingest_manifests(con, paths, secret):
        report.manifests.append(ManifestLine(str(outcome.path), outcome.ok, outcome.message))
        if not outcome.ok:
            report.errors.append(outcome.message)


def _start_run(con: duckdb.DuckDBPyConnection) -> int:
    row = fetch_one(con, "SELECT coalesce(max(run_id), 0) + 1 FROM runs")
    run_id = int(row[0]) if row else 1
    con.execute("INSERT INTO runs (run_id, started_at) VALUES (?, ?)", [run_id, _now()])
    return run_id


def _finish_run(con: duckdb.DuckDBPyConnection, run_id: int, report: IngestReport) -> None:
    files = report.files
    con.execute(
        "UPDATE runs SET finished_at = ?, files = ?, lines = ?, hits = ?, ignored = ?, quarantined = ?, "
        "rejected = ?, errors = ?, exit_code = ? WHERE run_id = ?",
        [
            _now(),
            len(files),
            report.lines,
            sum(f.hit_count for f in files),
            sum(f.ignored for f in files),
            sum(f.quarantined for f in files),
            sum(f.rejected for f in files),
            len(report.errors),
            1 if report.failed else 0,
            run_id,
        ],
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
