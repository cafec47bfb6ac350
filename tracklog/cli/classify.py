"""`tracklog reclassify` and `tracklog proxy-ranges update`: the classifier's settings and proxy
ranges applied to the stored hits, every figure brought up to date without reading a log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import pyarrow as pa

from tracklog import classify, derived
from tracklog.cli import App, cli, pass_app, wait_option
from tracklog.render import FORMATS, render
from tracklog.store import writer_session


def _bots_per_delivery(app: App, rebuilt: list[str]) -> pa.Table:
    with app.open_reader() as con:
        rows = con.execute(
            "SELECT delivery_id, machine_opens, bot_clicks FROM delivery_totals ORDER BY delivery_id"
        ).fetchall()
    return pa.table(
        {
            "delivery": pa.array([r[0] for r in rows], pa.string()),
            "rebuilt": pa.array([r[0] in rebuilt for r in rows], pa.bool_()),
            "machine_opens": pa.array([r[1] for r in rows], pa.int64()),
            "bot_clicks": pa.array([r[2] for r in rows], pa.int64()),
        }
    )


F = TypeVar("F", bound=Callable[..., Any])


def _format_option(func: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(func)


@cli.command("reclassify")
@_format_option
@wait_option
@pass_app
def reclassify_cmd(app: App, /, fmt: str) -> None:
    """Apply the [classify] settings of tracklog.toml to every stored hit.

    The deliveries whose classes change are rebuilt (no log is read). Prints each delivery's
    machine counts."""
    with writer_session(app.config.db, app.config.wait, on_wait=app.waiting_notice()) as session:
        rebuilt = derived.reclassify(session.con, app.config.classify)
    if not app.quiet:
        app.err.print(
            f"Reclassified: {len(rebuilt)} deliveries rebuilt"
            + (f" ({', '.join(rebuilt)})" if rebuilt else ""),
            markup=False,
            highlight=False,
        )
    render(_bots_per_delivery(app, rebuilt), fmt, title="Machine opens and bot clicks")


@cli.group("proxy-ranges")
def proxy_ranges() -> None:
    """The mail proxies' networks behind the proxy_range signal (Apple's MPP egress ranges)."""


@proxy_ranges.command("update")
@click.option(
    "--from",
    "source",
    metavar="URL|FILE",
    default=classify.APPLE_EGRESS_URL,
    show_default=True,
    help="Where to read the list: Apple's egress CSV or any file of one CIDR per line.",
)
@_format_option
@wait_option
@pass_app
def proxy_ranges_update(app: App, /, source: str, fmt: str) -> None:
    """Replace the proxy ranges with a fresh list and reclassify what it changes."""
    text, name = classify.read_ranges_source(source)
    with writer_session(app.config.db, app.config.wait, on_wait=app.waiting_notice()) as session:
        session.con.execute("BEGIN TRANSACTION")
        try:
            count = classify.replace_ranges(session.con, text, name)
            session.con.execute("COMMIT")
        except BaseException:
            session.con.execute("ROLLBACK")
            raise
        rebuilt = derived.reclassify(session.con, classify.stored_settings(session.con)[0])
    if not app.quiet:
        app.err.print(f"Loaded {count} proxy networks from {name}", markup=False, highlight=False)
    render(_bots_per_delivery(app, rebuilt), fmt, title="Machine opens and bot clicks")
