"""`tracklog export`: which days and kinds, then tracklog.export writes the files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from tracklog.cli import App, cli, pass_app, wait_option
from tracklog.engines import is_uri
from tracklog.errors import UsageError
from tracklog.export import FORMATS, KINDS, Written, days_between, export, yesterday


def _date(text: str, option: str) -> dt.date:
    """A YYYY-MM-DD date: the only thing that ever becomes a folder name."""
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise UsageError(f"{option} {text!r} is not a date (YYYY-MM-DD)")


def export_days(
    date: str | None, since: str | None, until: str | None, is_yesterday: bool, tz: str
) -> list[dt.date]:
    """The days asked for: one of --date, --since/--until, --yesterday (the default)."""
    chosen = [name for name, given in (("--date", date), ("--since/--until", since or until)) if given]
    if is_yesterday:
        chosen.append("--yesterday")
    if len(chosen) > 1:
        raise UsageError(
            f"give only one of --date, --since/--until, --yesterday (got {' and '.join(chosen)})"
        )
    if date is not None:
        return [_date(date, "--date")]
    if since or until:
        if not since or not until:
            raise UsageError("--since and --until go together (both dates, both included)")
        return days_between(_date(since, "--since"), _date(until, "--until"))
    return [yesterday(ZoneInfo(tz))]


@cli.command("export")
@click.option(
    "--out",
    required=True,
    metavar="DIR|URI",
    help="Folder of the data set (created when missing), or a URI such as s3://bucket/prefix "
    "(needs the s3 extra).",
)
@click.option("--date", metavar="YYYY-MM-DD", help="Export this UTC day.")
@click.option("--since", metavar="YYYY-MM-DD", help="Export every day from this one ...")
@click.option("--until", metavar="YYYY-MM-DD", help="... to this one (included).")
@click.option(
    "--yesterday",
    "is_yesterday",
    is_flag=True,
    help="Export yesterday, as a date in the configured time zone (config key tz, env TRACKLOG_TZ; "
    "default UTC). The default.",
)
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True, help="File format."
)
@click.option(
    "--what",
    "kinds",
    type=click.Choice(KINDS),
    multiple=True,
    help="Export only this kind (repeatable; default: all four).",
)
@click.option(
    "--excel-safe",
    is_flag=True,
    help="CSV for spreadsheets: prefix text cells starting with = + - @ (or tab, CR) with '.",
)
@click.option(
    "--lake",
    is_flag=True,
    help="Write the lake instead: the day's hits and the manifests as Parquet, which reports read "
    "with --lake OUT --engine duckdb|spark (always Parquet; --what does not apply).",
)
@wait_option
@pass_app
def export_cmd(
    app: App,
    out: str,
    date: str | None,
    since: str | None,
    until: str | None,
    is_yesterday: bool,
    fmt: str,
    kinds: tuple[str, ...],
    excel_safe: bool,
    lake: bool,
) -> None:
    """Write whole UTC days of tracking data as files, one per kind and day.

    Files go to OUT/<kind>/date=YYYY-MM-DD/<kind>.csv (or .parquet), replacing that day's files.

    Kinds: events, deliveries (their indicators over the day), recipients (per delivery and
    recipient), unsubscribes (the suppression list). Rerunning gives the same bytes; a killed
    run leaves each file old or new, never partial.

    With --lake: OUT/hits/date=YYYY-MM-DD/hits.parquet per day and one snapshot file per small
    table (deliveries, links, recipients, user_agent_families), for `--lake OUT` on the reports.
    """
    days = export_days(date, since, until, is_yesterday, app.config.tz)
    chosen = [k for k in KINDS if not kinds or k in kinds]

    def done(w: Written) -> None:
        if not app.quiet and app.err.is_terminal:
            app.err.print(f"wrote {w.path} ({w.rows} rows)", markup=False)

    if lake and (kinds or excel_safe):
        raise UsageError(
            "--lake writes the lake's own tables (always Parquet): leave out --what and --excel-safe"
        )
    if not is_uri(out) and Path(out).is_file():
        raise UsageError(f"--out {out} is a file: give a folder (or a URI such as s3://bucket/prefix)")
    export(
        app.open_reader,
        out if is_uri(out) else Path(out),
        days,
        chosen,
        fmt,
        excel_safe=excel_safe,
        wait=app.config.wait,
        on_file=done,
        lake=lake,
    )
