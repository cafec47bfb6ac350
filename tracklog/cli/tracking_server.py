"""`tracklog nginx-config` (the tracking server, generated) and `tracklog check` (are its logs
arriving?)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import click
import pyarrow as pa

from tracklog.cli import App, cli, pass_app, wait_option
from tracklog.errors import LateLogsError
from tracklog.nginx import Settings, generate
from tracklog.render import FORMATS, inert, render
from tracklog.status import server_lags
from tracklog.store import writer_session

_DURATION_PART = re.compile(r"([0-9]+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@cli.command("nginx-config")
@click.option("--server-name", required=True, metavar="HOST", help="The tracking domain, e.g. t.example.com.")
@click.option(
    "--out",
    default="tracklog-nginx",
    show_default=True,
    metavar="DIR",
    help="Folder to write the files into (created; nginx includes them from there).",
)
@click.option("--listen", default="80", show_default=True, metavar="[ADDR:]PORT", help="The server's listen.")
@click.option(
    "--access-log",
    metavar="PATH",
    help="Where nginx writes the tracking log [default /var/log/nginx/HOST/access.log].",
)
@click.option(
    "--mirror-upstream",
    metavar="URL",
    help="Proxy mirror pages to this http(s)://HOST[:PORT] instead of serving the static copies.",
)
@click.option(
    "--unsubscribe-page",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="HTML page shown on GET /u/... [default: a page with a one-button form that POSTs].",
)
@click.option("--cookie-name", default="uid", show_default=True, help="userid cookie name.")
@click.option(
    "--cookie-expires", default="365d", show_default=True, help="userid cookie lifetime (nginx time)."
)
@click.option("--cookie-domain", metavar="DOMAIN", help="userid cookie domain [default: the host only].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@wait_option
@pass_app
def nginx_config(
    app: App,
    server_name: str,
    out: str,
    listen: str,
    access_log: str | None,
    mirror_upstream: str | None,
    unsubscribe_page: Path | None,
    cookie_name: str,
    cookie_expires: str,
    cookie_domain: str | None,
    fmt: str,
) -> None:
    """Write the tracking server's nginx configuration from the manifests in the database.

    A map of every delivery/link to its URL (clicks answer 302 to it; anything else 404), the
    four tracking locations, the log format (recorded, so `tracklog ingest` reads it without
    --log-format), and the mirror copies. Then: nginx -t && nginx -s reload.
    """
    settings = Settings(
        server_name=server_name,
        out=Path(out),
        listen=listen,
        access_log=Path(access_log) if access_log else None,
        mirror_upstream=mirror_upstream,
        unsubscribe_page=unsubscribe_page,
        cookie_name=cookie_name,
        cookie_expires=cookie_expires,
        cookie_domain=cookie_domain,
    ).checked()  # before taking the database: a typo needs no lock
    with writer_session(app.db, app.config.wait, on_wait=app.waiting_notice("finish")) as session:
        result = generate(session.con, settings)
    for line in result.refused:
        click.echo(f"Warning: left out of the map (answers 404): {inert(line)}", err=True)
    table = pa.table(
        {
            "file": [str(p) for p, _ in result.files],
            "changed": [changed for _, changed in result.files],
        }
    )
    if not app.quiet:
        render(table, fmt, title=f"nginx configuration: {result.links} link(s) mapped")


class Duration(click.ParamType[dt.timedelta]):
    """2h, 90m, 1d, 1h30m, 3600s."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        text = str(value).strip()
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            self.fail(f"{value!r} is not a duration like 2h, 90m, 1d or 1h30m", param, ctx)
        return dt.timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


@cli.command()
@click.option(
    "--max-lag",
    type=Duration(),
    required=True,
    metavar="DURATION",
    help="Late when a server's newest tracking hit is older than this (2h, 90m, 1d).",
)
@click.option(
    "--server", "servers", multiple=True, metavar="NAME", help="Check only this server (repeatable)."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@wait_option
@pass_app
def check(app: App, max_lag: dt.timedelta, servers: tuple[str, ...], fmt: str) -> None:
    """For monitoring: exit 6 when a tracking server's logs stopped arriving.

    Prints each server's newest tracking hit and its lag; when one is later than --max-lag
    (or none was ever ingested), one line per late server on stderr and exit code 6.
    """
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    table, late = server_lags(app.db, app.config.wait, max_lag, now, servers, app.waiting_notice())
    if not app.quiet:
        render(table, fmt, title="Tracking servers")
    if late:
        for line in late[:-1]:
            click.echo(f"Error: {inert(line)}", err=True)
        raise LateLogsError(late[-1])
