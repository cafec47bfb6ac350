"""`tracklog ingest` and `tracklog status`."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING

import click

from tracklog.cli import App, cli, pass_app, wait_option
from tracklog.errors import DataError, UsageError
from tracklog.render import FORMATS, Section, inert, json_value, render, render_sections

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from tracklog.ingest.run import IngestReport


@cli.command()
@click.argument("inputs", nargs=-1, metavar="[FILE|DIR|GLOB|-]...")
@click.option(
    "--manifest",
    "manifests",
    multiple=True,
    metavar="FILE",
    help="Delivery manifest (JSON) to load; repeatable, globs allowed.",
)
@click.option(
    "--log-format",
    metavar="NAME|SPEC",
    help="combined (default), common, json, a name from the config file, or an nginx log_format string.",
)
@click.option(
    "--source",
    metavar="NAME",
    help="The tracking server these logs come from (default: the name of the directory given, if any).",
)
@click.option(
    "--max-bad-ratio",
    type=click.FloatRange(0, 1),
    help="Roll a new file back when more than this share of its first 1000 lines do not parse [0.5].",
)
@click.option(
    "--exclude",
    "exclude",
    multiple=True,
    metavar="GLOB",
    help="Skip files of a DIR or GLOB whose name matches (repeatable; config key exclude; "
    "error.log* always).",
)
@click.option(
    "--truncate-ips/--no-truncate-ips",
    default=None,
    help="Store each hit's IP truncated: IPv4 to its /24, IPv6 to its /48 (config key truncate_ips).",
)
@wait_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Print the run summary in this format (default: a table, only on a terminal).",
)
@click.option(
    "--profile",
    is_flag=True,
    help="Print where the time went (wall and CPU seconds per phase) to stderr at the end.",
)
@pass_app
def ingest(
    app: App,
    inputs: tuple[str, ...],
    manifests: tuple[str, ...],
    log_format: str | None,
    source: str | None,
    max_bad_ratio: float | None,
    exclude: tuple[str, ...],
    truncate_ips: bool | None,
    fmt: str | None,
    profile: bool,
) -> None:
    """Ingest nginx access logs and delivery manifests into the database.

    Each log is read from where the last run stopped (files are recognised by their
    content, so rotated and gzipped copies are not read twice). Lines that are not
    tracking hits are counted as ignored; lines that do not parse are quarantined.
    """
    from tracklog.ingest.run import run_ingest
    from tracklog.profiling import Phases

    config = app.config
    if max_bad_ratio is not None:
        config.max_bad_ratio = max_bad_ratio
    if truncate_ips is not None:
        config.truncate_ips = truncate_ips
    if not inputs and not manifests:
        raise click.UsageError(
            "nothing to ingest: give log files (FILE, DIR, GLOB or -) and/or --manifest FILE"
        )
    if source is not None and (not source or len(source) > 128 or not source.isprintable()):
        raise click.BadParameter("1-128 printable characters", param_hint="--source")
    show_progress = not app.quiet and app.err.is_terminal and sys.stdout.isatty()
    phases = Phases() if profile else None
    with _progress_bar(app, show_progress) as progress:
        report = run_ingest(
            config,
            list(inputs),
            list(manifests),
            log_format=log_format,
            source=source,
            progress=progress,
            phases=phases,
            on_wait=app.waiting_notice("finish"),
            exclude=list(exclude),
        )
        if progress is not None:
            progress.finish(report)
    for line in report.errors:
        click.echo(f"Error: {inert(line)}", err=True)
    for line in report.warnings:
        click.echo(f"Warning: {inert(line)}", err=True)
    if not app.quiet and (fmt is not None or sys.stdout.isatty()):
        if report.files or report.skipped:
            render(report.summary_table(), fmt or "table", title="Ingest summary")
        for m in report.manifests:
            if m.ok and (fmt or "table") == "table":
                click.echo(f"manifest {inert(m.message)}")
    if phases is not None:
        render(
            phases.table(), "table", out=sys.stderr, title="Where the time went (seconds)", console=app.err
        )
        for note in phases.notes:
            click.echo(note, err=True)
    if report.failed:
        raise DataError(f"{len(report.errors)} input(s) could not be ingested (see above)")


class _progress_bar:
    """A rich progress bar on stderr (bytes and lines per second), or nothing. Rates are this
    run's averages (bytes read / elapsed), so a finished bar keeps its figures."""

    def __init__(self, app: App, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.started: dict[str, tuple[float, int]] = {}  # name -> (monotonic start, first byte position)
        self.app = app

    def __enter__(self) -> _progress_bar | None:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.fields[name]}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[speed]}", markup=False),
            TextColumn("{task.fields[lines]:,} lines", markup=False),
            TextColumn("{task.fields[rate]}", markup=False),
            TimeElapsedColumn(),
            console=self.app.err,
            transient=False,
        )
        self.bar.start()
        return self

    def __call__(self, name: str, done: int, lines: int) -> None:
        assert self.bar is not None
        task = self.tasks.get(name)
        if task is None:
            label = inert(os.path.basename(name) or name)
            task = self.bar.add_task("", total=_size(name), name=label, lines=0, rate="", speed="")
            self.tasks[name] = task
            self.started[name] = (time.monotonic(), done)
        self._show(name, done, lines)

    def _show(self, name: str, done: int, lines: int) -> None:
        assert self.bar is not None
        start, first = self.started[name]
        elapsed = time.monotonic() - start
        speed = rate = ""
        if lines == 0:
            rate = "nothing new"
        elif elapsed > 0:
            speed = f"{(done - first) / elapsed / 1e6:,.1f} MB/s"
            rate = f"{lines / elapsed:,.0f} lines/s"
        self.bar.update(self.tasks[name], completed=done, lines=lines, rate=rate, speed=speed)

    def finish(self, report: IngestReport) -> None:
        """Every input read to its end shows as complete (an unchanged file too: it was read up to
        its end before), with its final rates; a failed one stays where it stopped."""
        assert self.bar is not None
        for f in report.files:
            task = self.tasks.get(f.name)
            if task is None or f.status == "error":
                continue
            total = self.bar.tasks[task].total
            done = int(total) if total is not None else int(self.bar.tasks[task].completed)
            self._show(f.name, done, f.lines)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _size(name: str) -> int | None:
    try:
        return os.stat(name).st_size
    except OSError:
        return None


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@wait_option
@pass_app
def status(app: App, fmt: str) -> None:
    """What has been ingested: files, counts, quarantine by reason, orphans, last run."""
    from tracklog.status import status_tables

    sections = status_tables(app.existing_db(), app.config.wait, app.waiting_notice())
    if fmt == "json":
        data = {
            name: [{k: json_value(v) for k, v in r.items()} for r in t.to_pylist()] for name, t in sections
        }
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    from tracklog.reports.common import parse_tz

    tables = [
        Section(table, name=name, title=name.replace("_", " ").capitalize()) for name, table in sections
    ]
    render_sections(tables, "table", tz=parse_tz(app.config.tz))


@cli.command()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@wait_option
@pass_app
def reverify(app: App, fmt: str) -> None:
    """Check every stored hit's signature again with the current secrets.

    Brings the figures up to date without the original logs: after fixing a wrong secret or
    adding a key."""
    from tracklog.ingest.reverify import reverify as reverify_hits

    config = app.config
    if not config.verify_signatures:
        raise UsageError("verify_signatures is false in the config: there is nothing to verify")
    changes = reverify_hits(config.db, config.require_secrets(), config.wait, app.waiting_notice())
    render(changes, fmt, title="Signature verdicts changed")
    if not app.quiet:
        n = sum(changes.column("hits").to_pylist())
        app.err.print(f"{n} hits changed verdict; the figures of their deliveries are up to date")
