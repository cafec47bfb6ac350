"""`tracklog report ...` and `tracklog recipient ID`: parse the options, call tracklog.reports,
hand the Arrow table to render. Data goes to stdout; notes go to stderr.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import duckdb

from tracklog.cli import App, cli, pass_app, wait_option
from tracklog.errors import DataError
from tracklog.render import FORMATS, Section, render, render_sections
from tracklog.reports import bots as bots_report
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
    ]
    for option in reversed(options):
        func = option(func)
    return wait_option(func)


def common(since: str | None, until: str | None, tz: str | None, limit: int | None, fmt: str) -> Common:
    zone = parse_tz(tz)
    return Common(make_window(since, until, zone), zone if tz else None, limit, fmt)


@contextmanager
def reader(app: App) -> Iterator[duckdb.DuckDBPyConnection]:
    with app.open_reader() as con:
        yield con


def footer(con: duckdb.DuckDBPyConnection, delivery_id: str | None, window: Window) -> list[str]:
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
    with reader(app) as con:
        table = delivery_reports.delivery_indicators(con, delivery_id, c.window)
        label = table.column("label")[0].as_py()
        render(
            table,
            c.fmt,
            single=True,
            title=f"Tracking indicators: {label} ({delivery_id})",
            footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (),
            tz=c.tz,
        )


@report.command("deliveries")
@common_options
@pass_app
def deliveries_cmd(app: App, /, **opts: Any) -> None:
    """One row per delivery (sent within --since/--until), newest first."""
    c = common(**opts)
    with reader(app) as con:
        table = delivery_reports.deliveries(con, c.window, c.limit)
        render(
            table,
            c.fmt,
            title="Deliveries",
            footer=footer(con, None, ALL_TIME) if c.fmt == "table" else (),
            tz=c.tz,
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
    with reader(app) as con:
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
        )


@report.command("urls")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only this delivery.")
@click.option("--by", type=click.Choice(list(urls_report.GROUPINGS)), default="url", show_default=True)
@common_options
@pass_app
def urls_cmd(app: App, /, delivery_id: str | None, by: str, **opts: Any) -> None:
    """Clicks and distinct clickers per URL, label or category, across deliveries."""
    c = common(**opts)
    with reader(app) as con:
        table = urls_report.urls(con, by, delivery_id, c.window, c.limit)
        render(
            table,
            c.fmt,
            title=f"Clicks by {by}",
            bars={"": "share"},
            footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (),
            tz=c.tz,
        )


@report.command("streams")
@click.option("--delivery", "delivery_id", metavar="ID", required=True, help="The delivery.")
@common_options
@pass_app
def streams_cmd(app: App, /, delivery_id: str, **opts: Any) -> None:
    """Click streams: the paths of recipients who clicked more than once."""
    c = common(**opts)
    with reader(app) as con:
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
            sections, c.fmt, footer=footer(con, delivery_id, c.window) if c.fmt == "table" else (), tz=c.tz
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
@common_options
@pass_app
def stats_cmd(app: App, /, delivery_id: str | None, bucket: str, by: str | None, **opts: Any) -> None:
    """Tracking statistics: opens and clicks over time since the send, or broken down."""
    c = common(**opts)
    with reader(app) as con:
        notes = footer(con, delivery_id, c.window) if c.fmt == "table" else []
        if by is not None:
            table = stats_report.breakdown(con, by, delivery_id, c.window, c.limit)
            bars = {} if by == "domain" else {"": "share"}
            render(table, c.fmt, title=f"Opens and clicks by {by}", bars=bars, footer=notes, tz=c.tz)
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
        render_sections(sections, c.fmt, footer=notes, tz=c.tz)


@report.command("bots")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only this delivery.")
@common_options
@pass_app
def bots_cmd(app: App, /, delivery_id: str | None, **opts: Any) -> None:
    """Machine opens and bot clicks: hits by class and reason, and the agents and networks
    (/24, /48) behind them, per delivery (--limit: agents and networks per delivery)."""
    c = common(**opts)
    with reader(app) as con:
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
        render_sections(sections, c.fmt, tz=c.tz)


@cli.command("recipient")
@click.argument("recipient_id", metavar="ID")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only this delivery.")
@click.option("--humans-only", is_flag=True, help="Only the counted events (no machine opens or bot clicks).")
@common_options
@pass_app
def recipient_cmd(
    app: App, /, recipient_id: str, delivery_id: str | None, humans_only: bool, **opts: Any
) -> None:
    """The recipient's Tracking tab: every tracking event, newest first, with its class and reasons."""
    c = common(**opts)
    with reader(app) as con:
        table = recipient_report.recipient_events(
            con, recipient_id, delivery_id, c.window, c.limit, humans_only=humans_only
        )
        render(table, c.fmt, title=f"Tracking of recipient {recipient_id}", tz=c.tz)
