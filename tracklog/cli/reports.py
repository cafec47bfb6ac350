"""`tracklog report ...` and `tracklog recipient ID`: parse the options, call tracklog.reports,
hand the table to render. Data goes to stdout; notes go to stderr.
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
from tracklog.render import FORMATS, Section, note, render, render_sections
from tracklog.reports import delivery as delivery_reports
from tracklog.reports import funnel as funnel_report
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

F = TypeVar("F", bound=Callable[..., Any])

_HIT_WINDOW_HELP = (
    "Only hits from this date or ISO time on (in the report's zone).",
    "Only hits before this ISO time, or up to the end of this date.",
)
_SENT_WINDOW_HELP = (
    "Only deliveries sent from this date or ISO time on (in the report's zone).",
    "Only deliveries sent before this ISO time, or up to the end of this date.",
)


SCREEN_ROWS = 40


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

    @property
    def screen_rows(self) -> int | None:
        """The rows a ranking's table shows when no --limit is given: its head fits a screen
        (the long tail, one recipient a row, is in CSV and JSON, which always give every row)."""
        return SCREEN_ROWS if self.limit is None else None


def common_options(
    *, limit: bool = True, window_help: tuple[str, str] = _HIT_WINDOW_HELP
) -> Callable[[F], F]:
    """--since/--until/--tz/--limit/--format/--excel-safe (no --limit on a one-object report), and
    the engine: --engine/--lake/--spark-master/--spark-remote."""

    def decorate(func: F) -> F:
        options = [
            click.option("--since", metavar="WHEN", help=window_help[0]),
            click.option("--until", metavar="WHEN", help=window_help[1]),
            click.option(
                "--tz",
                metavar="ZONE",
                help="Show times in this IANA zone and read --since/--until in it "
                "[config key tz, env TRACKLOG_TZ; default UTC].",
            ),
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
                "--spark-remote",
                metavar="URL",
                help="Spark Connect server for --engine spark (sc://host:15002).",
            ),
        ]
        if limit:
            options.insert(
                3, click.option("--limit", type=click.IntRange(min=0), help="At most this many rows.")
            )
        for option in reversed(options):
            func = option(func)
        return wait_option(func)

    return decorate


def common(
    app: App,
    since: str | None,
    until: str | None,
    tz: str | None,
    fmt: str,
    excel_safe: bool,
    engine: str,
    lake: str | None,
    spark_master: str | None,
    spark_remote: str | None,
    limit: int | None = None,
) -> Common:
    zone = parse_tz(tz or app.config.tz)
    if engine == "spark" and not lake:
        raise UsageError(
            "--engine spark reads an exported lake: give --lake DIR|URI (write one with `tracklog export --lake`)"
        )
    if (spark_master or spark_remote) and engine != "spark":
        raise UsageError("--spark-master and --spark-remote go with --engine spark")
    spark = SparkOptions(spark_master, spark_remote)
    return Common(make_window(since, until, zone), zone, limit, fmt, excel_safe, engine, lake, spark)


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
    # machine_opens and bot_clicks: the classification of automated hits fills them
    return [
        (
            f"Not counted: {n['rejected_hits']} rejected (bad signature), {n['failed_hits']} failed (4xx/5xx), "
            f"{n['orphan_hits']} orphan (not in a manifest), {n['clock_hits']} clock (dated outside the "
            f"delivery's window), {n['machine_opens']} machine opens, {n['bot_clicks']} bot clicks"
        )
    ]


@cli.group()
def report() -> None:
    """Tracking reports: indicators, hot clicks, URLs, click streams, statistics."""


@report.command("delivery")
@click.argument("delivery_id", metavar="ID")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the delivery dashboard to FILE: one self-contained page (no network, no script).",
)
@common_options(limit=False)
@pass_app
def delivery_cmd(app: App, /, delivery_id: str, html_file: Path | None, **opts: Any) -> None:
    """The Tracking indicators of one delivery, and its funnel."""
    c = common(app, **opts)
    with reader(app, c) as con:
        table = delivery_reports.delivery_indicators(con, delivery_id, c.window)
        label = table.values("label")[0]
        if html_file is not None:
            from tracklog.reports.delivery_html import dashboard_page

            write_page(app, html_file, dashboard_page(con, delivery_id, c.window, c.tz))
        sections = [
            Section(table, title=f"Tracking indicators: {label} ({delivery_id})", vertical=True),
            Section(
                delivery_reports.funnel(table),
                title="Funnel",
                bars={"": "count"},
                headers={"count": "Recipients", "not_counted": "Automated (not counted)"},
                picture=True,
            ),
        ]
        render_sections(
            sections,
            c.fmt,
            single=True,
            footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (),
            tz=c.tz,
            excel_safe=c.excel_safe,
        )


def write_page(app: App, path: Path, page: str) -> None:
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if not app.quiet:
        note(app.err, f"Wrote {path}")


@report.command("deliveries")
@common_options(window_help=_SENT_WINDOW_HELP)
@pass_app
def deliveries_cmd(app: App, /, **opts: Any) -> None:
    """One row per delivery (sent within --since/--until), newest first, with all-time figures."""
    c = common(app, **opts)
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
@common_options()
@pass_app
def hot_clicks_cmd(app: App, /, delivery_id: str, html_file: Path | None, **opts: Any) -> None:
    """The delivery's links in message order with their clicks, clickers and share."""
    c = common(app, **opts)
    with reader(app, c) as con:
        label, _ = require_delivery(con, delivery_id)
        table = hot_clicks_report.hot_clicks(con, delivery_id, c.window, c.limit)
        if html_file is not None:
            from tracklog.reports.hot_clicks_html import hot_clicks_page

            write_page(app, html_file, hot_clicks_page(con, delivery_id, table, c.window, c.tz))
        render(
            table,
            c.fmt,
            title=f"Hot clicks: {label} ({delivery_id})",
            bars={"": "share"},
            headers={"share": "Share of clicks %"},
            footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (),
            tz=c.tz,
            excel_safe=c.excel_safe,
        )


@report.command("urls")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only this delivery.")
@click.option("--by", type=click.Choice(list(urls_report.GROUPINGS)), default="url", show_default=True)
@common_options()
@pass_app
def urls_cmd(app: App, /, delivery_id: str | None, by: str, **opts: Any) -> None:
    """Clicks and distinct clickers per URL, label or category, across deliveries."""
    c = common(app, **opts)
    with reader(app, c) as con:
        table = urls_report.urls(con, by, delivery_id, c.window, c.limit)
        render(
            table,
            c.fmt,
            title=f"Clicks by {by}",
            bars={"": "share"},
            headers={"share": "Share of clicks %"},
            footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (),
            max_rows=c.screen_rows,
            tz=c.tz,
            excel_safe=c.excel_safe,
        )


@report.command("streams")
@click.option("--delivery", "delivery_id", metavar="ID", required=True, help="The delivery.")
@table_option(("sequences", "transitions"))
@common_options()
@pass_app
def streams_cmd(app: App, /, delivery_id: str, table_name: str | None, **opts: Any) -> None:
    """Click streams: the paths of recipients who clicked more than once."""
    c = common(app, **opts)
    with reader(app, c) as con:
        label, _ = require_delivery(con, delivery_id)
        if table_name is None:  # both, from one read of the delivery's clicks
            both = streams_report.sequences_and_transitions(con, delivery_id, c.window, c.limit)
            tables = dict(zip(("sequences", "transitions"), both, strict=True))
        elif table_name == "sequences":
            tables = {"sequences": streams_report.sequences(con, delivery_id, c.window, c.limit)}
        else:
            tables = {"transitions": streams_report.transitions(con, delivery_id, c.window, c.limit)}
        shown = {
            "sequences": (f"Click sequences: {label} ({delivery_id})", "recipients"),
            "transitions": ("Link-to-link transitions", "count"),
        }
        sections = [
            Section(table, name=name, title=shown[name][0], bars={"": shown[name][1]})
            for name, table in tables.items()
        ]
        render_sections(
            chosen(sections, table_name),
            c.fmt,
            footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (),
            tz=c.tz,
            excel_safe=c.excel_safe,
            max_rows=c.screen_rows,
        )


@report.command("funnel")
@click.option("--delivery", "delivery_id", metavar="ID", required=True, help="The delivery.")
@click.option(
    "--table",
    "table_name",
    type=click.Choice(["funnel", "web", "revenue"]),
    help="Print only this table (CSV prints one table: funnel unless this names another).",
)
@common_options()
@pass_app
def funnel_cmd(app: App, /, delivery_id: str, table_name: str | None, **opts: Any) -> None:
    """Conversion funnel: delivered -> opened -> clicked -> visited -> converted, then the
    web-tracking indicators (visits, visitors, transactions) and the revenue per currency."""
    c = common(app, **opts)
    with reader(app, c) as con:
        label, _ = require_delivery(con, delivery_id)
        sections = [
            Section(
                funnel_report.funnel(con, delivery_id, c.window),
                name="funnel",
                title=f"Conversion funnel: {label} ({delivery_id})",
                bars={"": "readers"},
            ),
            Section(
                funnel_report.web_indicators(con, delivery_id, c.window),
                name="web",
                title="Web tracking (page tags with the delivery's landing token)",
            ),
            Section(
                funnel_report.revenue(con, delivery_id, c.window),
                name="revenue",
                title="Revenue per currency",
            ),
        ]
        sections = chosen(sections, table_name)
        notes: list[str] = []
        if c.fmt == "table":
            anon = funnel_report.anonymous_views(con, c.window)
            notes = [
                *footer(con, delivery_id, c.window),
                (
                    f"Counted apart, of no delivery: {anon['page_views']} anonymous page views (no token), "
                    f"{anon['visits']} visits, {anon['transactions']} transactions"
                ),
            ]
        render_sections(sections, c.fmt, footer=notes, tz=c.tz, excel_safe=c.excel_safe)


@report.command("stats")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only this delivery.")
@click.option(
    "--bucket",
    type=click.Choice(list(stats_report.BUCKETS)),
    default="auto",
    show_default=True,
    help="Time since the send per row; auto: hourly over the first day then daily, coarser when "
    f"that would be more than {stats_report.MAX_ROWS} rows.",
)
@click.option(
    "--by",
    type=click.Choice(stats_report.BREAKDOWNS),
    help="Instead of time: opens and clicks per browser, os, device type or email domain.",
)
@table_option(("buckets", "reach"))
@common_options()
@pass_app
def stats_cmd(
    app: App, /, delivery_id: str | None, bucket: str, by: str | None, table_name: str | None, **opts: Any
) -> None:
    """Tracking statistics: opens and clicks over time since the send, or broken down."""
    c = common(app, **opts)
    with reader(app, c) as con:
        notes = footer(con, delivery_id, c.window) if c.fmt == "table" else []
        if by is not None:
            table = stats_report.breakdown(con, by, delivery_id, c.window, c.limit)
            bars = {} if by == "domain" else {"": "share"}
            if by != "domain":
                notes.insert(
                    0, f"Share of opens: the {by}'s opens as a percentage of all opens in the report."
                )
            render(
                table,
                c.fmt,
                title=f"Opens and clicks by {by}",
                bars=bars,
                headers={"share": "Share of opens %"},
                footer=notes,
                max_rows=c.screen_rows,
                tz=c.tz,
                excel_safe=c.excel_safe,
            )
            return
        timeline, reach = stats_report.timeline_and_reach(con, bucket, delivery_id, c.window)
        if c.limit is not None:
            timeline = timeline.slice(0, c.limit)
        sections = [
            Section(
                timeline,
                name="buckets",
                title="Opens and clicks since the send",
                bars={"Opens": "opens", "Clicks": "clicks"},
                bar_styles={"Opens": "cyan", "Clicks": "magenta"},
                marks=stats_report.reach_marks(timeline, reach),
                hidden=("hours",),
            ),
            Section(reach, name="reach", title="Hours to reach 50/80/90/95% of the final count"),
        ]
        render_sections(chosen(sections, table_name), c.fmt, footer=notes, tz=c.tz, excel_safe=c.excel_safe)


@report.command("bots")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only this delivery.")
@click.option(
    "--table",
    "table_name",
    type=click.Choice(["classes", "agents", "networks"]),
    help="Print only this table (CSV prints one table: classes unless this names another).",
)
@common_options()
@pass_app
def bots_cmd(app: App, /, delivery_id: str | None, table_name: str | None, **opts: Any) -> None:
    """Machine opens and bot clicks: hits by class and reason, and the agents and networks
    (/24, /48) behind them, per delivery (--limit: agents and networks per delivery)."""
    from tracklog.reports import bots as bots_report  # the classifier's module: only for this report

    c = common(app, **opts)
    with reader(app, c) as con:
        sections = [
            Section(
                bots_report.classes(con, delivery_id, c.window),
                name="classes",
                title="Hits by class and reason",
            ),
            Section(
                bots_report.agents(con, delivery_id, c.window, c.limit),
                name="agents",
                title="Agents behind the machines' hits",
            ),
            Section(
                bots_report.networks(con, delivery_id, c.window, c.limit),
                name="networks",
                title="Networks (/24, /48) behind the machines' hits",
            ),
        ]
        render_sections(
            chosen(sections, table_name), c.fmt, tz=c.tz, excel_safe=c.excel_safe, max_rows=c.screen_rows
        )


@cli.command("recipient")
@click.argument("recipient_id", metavar="ID")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only this delivery.")
@click.option("--humans-only", is_flag=True, help="Only the counted events (no machine opens or bot clicks).")
@common_options()
@pass_app
def recipient_cmd(
    app: App, /, recipient_id: str, delivery_id: str | None, humans_only: bool, **opts: Any
) -> None:
    """The recipient's Tracking tab: every tracking event, newest first.

    Each event shows its class (human, machine_open, bot_click) and the reasons of a machine's."""
    c = common(app, **opts)
    with reader(app, c) as con:
        table = recipient_report.recipient_events(
            con, recipient_id, delivery_id, c.window, c.limit, humans_only=humans_only
        )
        render(table, c.fmt, title=f"Tracking of recipient {recipient_id}", tz=c.tz, excel_safe=c.excel_safe)
