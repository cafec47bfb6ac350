"""`tracklog report ...` and `tracklog recipient ID`: parse the options, call tracklog.reports,
hand the Arrow table to render. Data goes to stdout; notes go to stderr.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from tracklog.cli import App, cli, pass_app, wait_option
from tracklog.engines import ENGINES, Connection, SparkOptions, open_lake
from tracklog.errors import DataError, UsageError
from tracklog.render import FORMATS, Section, render, render_sections
from tracklog.reports import delivery as delivery_reports
from tracklog.reports import hot_clicks as hot_clicks_report
from tracklog.reports import recipient as recipient_report
from tracklog.reports import stats as stats_report
from tracklog.reports import streams as streams_report
from tracklog.reports import urls as urls_report
from tracklog.reports.common import (
    ALL_TIME,
    Window,
    excluded_hits,
    make_window,
    parse_tz,
    require_delivery,
)
from tracklog.reports.hot_clicks_html import hot_clicks_page

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Common:
    """The options every report takes."""

    window: Window
    tz: dt.tzinfo | None
    limit: int | None
    fmt: str
    excel_safe: bool
    engine: str = "duckdb"
    lake: str | None = None
    spark: SparkOptions = field(default_factory=SparkOptions)


def common_options(func: F) -> F:
    options = [
        click.option(
            "--since", metavar="WHEN", help="Only hits from this date or ISO time on (UTC unless --tz)."
        ),
        click.option(
            "--until", metavar="WHEN", help="Only hits before this ISO time, or up to the end of this date."
        ),
        click.option(
            "--tz", metavar="ZONE", help="Show times in this IANA zone (and read --since/--until in it)."
        ),
        click.option("--limit", type=click.IntRange(min=0), help="At most this many rows."),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMATS),
            default="table",
            show_default=True,
            help="Output format.",
        ),
        click.option(
            "--excel-safe",
            is_flag=True,
            help="CSV for spreadsheets: prefix text cells starting with = + - @ (or tab, CR) with '.",
        ),
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="duckdb",
            show_default=True,
            help="Query engine: duckdb (the database, or --lake), spark (--lake; the spark extra).",
        ),
        click.option(
            "--lake",
            metavar="DIR|URI",
            help="Read the lake written by `tracklog export --lake` instead of the database.",
        ),
        click.option(
            "--spark-master", metavar="URL", help="Spark master for --engine spark [default local[*]]."
        ),
        click.option(
            "--spark-remote", metavar="URL", help="Spark Connect server for --engine spark (sc://host:15002)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return wait_option(func)


def common(
    since: str | None,
    until: str | None,
    tz: str | None,
    limit: int | None,
    fmt: str,
    excel_safe: bool,
    engine: str,
    lake: str | None,
    spark_master: str | None,
    spark_remote: str | None,
) -> Common:
    zone = parse_tz(tz)
    if engine == "spark" and not lake:
        raise UsageError(
            "--engine spark reads an exported lake: give --lake DIR|URI (write one with `tracklog export --lake`)"
        )
    if (spark_master or spark_remote) and engine != "spark":
        raise UsageError("--spark-master and --spark-remote go with --engine spark")
    spark = SparkOptions(spark_master, spark_remote)
    return Common(
        make_window(since, until, zone), zone if tz else None, limit, fmt, excel_safe, engine, lake, spark
    )


def table_option(names: tuple[str, str]) -> Callable[[F], F]:
    """--table NAME of a report made of two tables: print only that one (CSV prints one table,
    the first unless this names the other; JSON prints both unless this names one)."""
    return click.option(
        "--table",
        "table_name",
        type=click.Choice(names),
        help=f"Print only this table (CSV prints one table: {names[0]} unless this says {names[1]}).",
    )


def chosen(sections: list[Section], table_name: str | None) -> list[Section]:
    return [s for s in sections if table_name in (None, s.name)]


@contextmanager
def reader(app: App, c: Common) -> Iterator[Connection]:
    """The database, or the lake in the engine asked for."""
    if c.lake is not None:
        with open_lake(c.lake, c.engine, c.spark) as con:
            yield con
        return
    with app.open_reader() as db:
        yield db


def footer(con: Connection, delivery_id: str | None, window: Window) -> list[str]:
    """The hits shown under a table but never counted in it."""
    n = excluded_hits(con, delivery_id, window)
    return [
        (
            f"Not counted: {n['rejected_hits']} rejected (bad signature), {n['failed_hits']} failed (4xx/5xx), "
            f"{n['orphan_hits']} orphan (not in a manifest), {n['machine_opens']} machine opens, "
            f"{n['bot_clicks']} bot clicks"
        )
    ]


@cli.group()
def report() -> None:
    """Tracking reports: indicators, hot clicks, URLs, click streams, statistics."""


@report.command("delivery")
@click.argument("delivery_id", metavar="ID")
@common_options
@pass_app
def delivery_cmd(app: App, /, delivery_id: str, **opts: Any) -> None:
    """The Tracking indicators of one delivery."""
    c = common(**opts)
    with reader(app, c) as con:
        table = delivery_reports.delivery_indicators(con, delivery_id, c.window)
        label = table.column("label")[0].as_py()
        render(
            table,
            c.fmt,
            single=True,
            title=f"Tracking indicators: {label} ({delivery_id})",
            footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (),
            tz=c.tz,
            excel_safe=c.excel_safe,
        )


@report.command("deliveries")
@common_options
@pass_app
def deliveries_cmd(app: App, /, **opts: Any) -> None:
    """One row per delivery (sent within --since/--until), newest first."""
    c = common(**opts)
    with reader(app, c) as con:
        table = delivery_reports.deliveries(con, c.window, c.limit)
        render(
            table,
            c.fmt,
            title="Deliveries",
            footer=footer(con, None, ALL_TIME) if c.fmt == "table" else (),
            tz=c.tz,
            excel_safe=c.excel_safe,
        )


@report.command("hot-clicks")
@click.option("--delivery", "delivery_id", metavar="ID", required=True, help="The delivery.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the annotated message to FILE.",
)
@common_options
@pass_app
def hot_clicks_cmd(app: App, /, delivery_id: str, html_file: Path | None, **opts: Any) -> None:
    """The delivery's links in message order with their clicks, clickers and share."""
    c = common(**opts)
    with reader(app, c) as con:
        label, _ = require_delivery(con, delivery_id)
        table = hot_clicks_report.hot_clicks(con, delivery_id, c.window, c.limit)
        if html_file is not None:
            page = hot_clicks_page(con, delivery_id, table)
            try:
                html_file.write_text(page, encoding="utf-8")
            except OSError as exc:
                raise DataError(f"cannot write {html_file}: {exc.strerror or exc}") from exc
            if not app.quiet:
                app.err.print(f"Wrote {html_file}")
        render(
            table,
            c.fmt,
            title=f"Hot clicks: {label} ({delivery_id})",
            bars={"": "share"},
            footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (),
            tz=c.tz,
            excel_safe=c.excel_safe,
        )


@report.command("urls")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only this delivery.")
@click.option("--by", type=click.Choice(list(urls_report.GROUPINGS)), default="url", show_default=True)
@common_options
@pass_app
def urls_cmd(app: App, /, delivery_id: str | None, by: str, **opts: Any) -> None:
    """Clicks and distinct clickers per URL, label or category, across deliveries."""
    c = common(**opts)
    with reader(app, c) as con:
        table = urls_report.urls(con, by, delivery_id, c.window, c.limit)
        render(
            table,
            c.fmt,
            title=f"Clicks by {by}",
            bars={"": "share"},
            footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (),
            tz=c.tz,
            excel_safe=c.excel_safe,
        )


@report.command("streams")
@click.option("--delivery", "delivery_id", metavar="ID", required=True, help="The delivery.")
@table_option(("sequences", "transitions"))
@common_options
@pass_app
def streams_cmd(app: App, /, delivery_id: str, table_name: str | None, **opts: Any) -> None:
    """Click streams: the paths of recipients who clicked more than once."""
    c = common(**opts)
    with reader(app, c) as con:
        label, _ = require_delivery(con, delivery_id)
        sections = [
            Section(
                streams_report.sequences(con, delivery_id, c.window, c.limit),
                name="sequences",
                title=f"Click sequences: {label} ({delivery_id})",
                bars={"": "recipients"},
            ),
            Section(
                streams_report.transitions(con, delivery_id, c.window, c.limit),
                name="transitions",
                title="Link-to-link transitions",
                bars={"": "count"},
            ),
        ]
        render_sections(
            chosen(sections, table_name),
            c.fmt,
            footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (),
            tz=c.tz,
            excel_safe=c.excel_safe,
        )


@report.command("stats")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only this delivery.")
@click.option(
    "--bucket",
    type=click.Choice(list(stats_report.BUCKETS)),
    default="1h",
    show_default=True,
    help="Time since the send per row.",
)
@click.option(
    "--by",
    type=click.Choice(stats_report.BREAKDOWNS),
    help="Instead of time: opens and clicks per browser, os, device type or email domain.",
)
@table_option(("buckets", "reach"))
@common_options
@pass_app
def stats_cmd(
    app: App, /, delivery_id: str | None, bucket: str, by: str | None, table_name: str | None, **opts: Any
) -> None:
    """Tracking statistics: opens and clicks over time since the send, or broken down."""
    c = common(**opts)
    with reader(app, c) as con:
        notes = footer(con, delivery_id, c.window) if c.fmt == "table" else []
        if by is not None:
            table = stats_report.breakdown(con, by, delivery_id, c.window, c.limit)
            bars = {} if by == "domain" else {"": "share"}
            render(
                table,
                c.fmt,
                title=f"Opens and clicks by {by}",
                bars=bars,
                footer=notes,
                tz=c.tz,
                excel_safe=c.excel_safe,
            )
            return
        timeline = stats_report.timeline(con, bucket, delivery_id, c.window)
        if c.limit is not None:
            timeline = timeline.slice(0, c.limit)
        sections = [
            Section(
                timeline,
                name="buckets",
                title=f"Opens and clicks per {bucket} since the send",
                bars={"opens ": "opens", "clicks ": "clicks"},
            ),
            Section(
                stats_report.reach(con, delivery_id, c.window),
                name="reach",
                title="Hours to reach 50/80/95% of the final count",
            ),
        ]
        render_sections(chosen(sections, table_name), c.fmt, footer=notes, tz=c.tz, excel_safe=c.excel_safe)


@cli.command("recipient")
@click.argument("recipient_id", metavar="ID")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only this delivery.")
@common_options
@pass_app
def recipient_cmd(app: App, /, recipient_id: str, delivery_id: str | None, **opts: Any) -> None:
    """The recipient's Tracking tab: every tracking event, newest first."""
    c = common(**opts)
    with reader(app, c) as con:
        table = recipient_report.recipient_events(con, recipient_id, delivery_id, c.window, c.limit)
        render(table, c.fmt, title=f"Tracking of recipient {recipient_id}", tz=c.tz, excel_safe=c.excel_safe)
