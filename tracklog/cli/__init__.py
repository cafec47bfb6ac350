"""The command-line layer: click commands that parse options, call the core, and render.

`main` is the console script. It turns TracklogError into one line on stderr and its exit
code; a traceback only with --debug. Commands live in the sibling modules, one per area, imported
only when one of their commands runs (`tracklog --help` stays fast: see LAZY_COMMANDS).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tracklog.config import Config, load_config
from tracklog.errors import ExitCode, NotFoundError, TracklogError
from tracklog.render import inert, note

if TYPE_CHECKING:
    from rich.console import Console

    from tracklog.duck import duckdb
    from tracklog.store import OnWait

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """What every command gets: settings (loaded on first use) and the stderr console."""

    db_flag: str | None
    config_flag: str | None
    debug: bool
    quiet: bool
    wait_flag: float | None = None  # a command's --wait
    _config: Config | None = field(default=None, repr=False)
    _err: Console | None = field(default=None, repr=False)

    @property
    def err(self) -> Console:
        """The stderr console (rich is imported on first use)."""
        if self._err is None:
            self._err = stderr_console()
        return self._err

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_flag, self.db_flag)
        if self.wait_flag is not None:
            self._config.wait = self.wait_flag
        return self._config

    @property
    def db(self) -> Path:
        return self.config.db

    def existing_db(self) -> Path:
        """The database path, which must exist: a report never creates one, and an empty table
        from a wrong path or directory would look like a database without hits. An ingest that
        is starting (it holds the run lock, the file is not there yet) is waited for as usual."""
        from tracklog.store import ingest_running

        if not self.db.exists() and not ingest_running(self.db):
            raise NotFoundError(
                f"no database at {self.db} (run `tracklog ingest` first, or point --db, TRACKLOG_DB "
                "or db in the config file at the database)"
            )
        return self.db

    def open_reader(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        from tracklog.derived import open_reader

        return open_reader(self.existing_db(), self.config.wait, self.waiting_notice(), self.upgrade_notice())

    def upgrade_notice(self) -> Callable[[], None] | None:
        """What to call when a reader must first bring the database up to date (after an upgrade
        of tracklog, or an ingest interrupted before it merged what it stored): a line on stderr
        when a person can see it, else nothing."""
        if self.quiet or not _stderr_is_terminal():
            return None
        return lambda: self.err.print(
            "bringing the database's figures up to date (once, after an upgrade of tracklog or an "
            "interrupted ingest: up to about 40 s per million hits)..."
        )

    def waiting_notice(self, until: str = "commit") -> OnWait | None:
        """What to call when the command starts waiting for an ingest: a line on stderr when a
        person can see it (a terminal, not --quiet), else nothing."""
        if self.quiet or not _stderr_is_terminal():
            return None

        def notice(holder: str | None) -> None:
            who = f"the ingest ({holder})" if holder else "the process writing the database"
            note(self.err, f"waiting for {who} to {until}...")

        return notice


def _stderr_is_terminal() -> bool:
    """Whether a person sees stderr (without importing rich for a piped JSON report)."""
    import sys

    return sys.stderr.isatty()


pass_app = click.make_pass_decorator(App)


def _set_wait(ctx: click.Context, _param: click.Parameter, value: float | None) -> None:
    app = ctx.find_object(App)
    if value is not None and app is not None:
        app.wait_flag = value


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    app = ctx.find_object(App)
    if value and app is not None:
        app.quiet = True


WAIT_HELP = (
    "Wait up to this long for an ingest holding the database "
    "[config key wait, env TRACKLOG_WAIT; default 60]."
)
QUIET_HELP = "Print nothing but errors on stderr."


def wait_option(func: F) -> F:
    """--wait SECONDS and -q/--quiet on every command that opens the database, so that they work
    after the command name as well as before it (`tracklog ingest -q ...`)."""
    func = click.option(
        "-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet, help=QUIET_HELP
    )(func)
    return click.option(
        "--wait",
        type=click.FloatRange(0),
        metavar="SECONDS",
        expose_value=False,
        callback=_set_wait,
        help=WAIT_HELP,
    )(func)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, markup=False, emoji=False)


# command -> (module that registers it, the first line of its help, for `tracklog --help`);
# a test checks these lines against the commands' own help.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("tracklog.cli.ingest", "Ingest nginx access logs and delivery manifests into the database."),
    "link": ("tracklog.cli.link", "Print the signed tracked URLs of a delivery's recipients."),
    "recipient": (
        "tracklog.cli.reports",
        "The recipient's Tracking tab: every tracking event, newest first.",
    ),
    "report": (
        "tracklog.cli.reports",
        "Tracking reports: indicators, hot clicks, URLs, click streams, statistics.",
    ),
    "export": (
        "tracklog.cli.export",
        "Write whole UTC days of tracking data as files, one per kind and day.",
    ),
    "nginx-config": (
        "tracklog.cli.tracking_server",
        "Write the tracking server's nginx configuration from the manifests in the database.",
    ),
    "check": (
        "tracklog.cli.tracking_server",
        "For monitoring: exit 6 when a tracking server's logs stopped arriving.",
    ),
    "reclassify": (
        "tracklog.cli.classify",
        "Apply the [classify] settings of tracklog.toml to every stored hit.",
    ),
    "proxy-ranges": (
        "tracklog.cli.classify",
        "The mail proxies' networks behind the proxy_range signal (Apple's MPP egress ranges).",
    ),
    "forget": (
        "tracklog.cli.forget",
        "Erase a recipient (GDPR): its hits, manifest rows and what was derived from them.",
    ),
    "reverify": ("tracklog.cli.ingest", "Check every stored hit's signature again with the current secrets."),
    "status": (
        "tracklog.cli.ingest",
        "What has been ingested: files, counts, quarantine by reason, orphans, last run.",
    ),
}


def _short(line: str, limit: int) -> str:
    """`line` cut at a word to `limit` characters, ending with '...' as click's own help does."""
    if len(line) <= limit:
        return line
    return line[: max(limit - 3, 0)].rsplit(" ", 1)[0].rstrip(",") + "..."


class TracklogGroup(click.Group):
    """Turns every failure into one line on stderr and a documented exit code; imports a
    command's module only when the command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            importlib.import_module(LAZY_COMMANDS[cmd_name][0])
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [
            (
                name,
                _short(LAZY_COMMANDS[name][1], limit)
                if name not in self.commands
                else self.commands[name].get_short_help_str(limit),
            )
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except TracklogError as exc:
            if debug:
                raise
            click.echo(f"Error: {inert(str(exc))}", err=True)
            ctx.exit(int(exc.exit_code))
        except BrokenPipeError:
            ctx.exit(int(ExitCode.OK))
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: one line unless --debug
            if debug:
                raise
            # a damaged database file, a full disk, a read-only folder: data errors, not bugs
            from tracklog.store import environment_problem

            if (problem := environment_problem(exc)) is not None:
                click.echo(f"Error: {inert(problem)}", err=True)
                ctx.exit(int(ExitCode.DATA_ERROR))
            click.echo(
                f"Error: internal error: {type(exc).__name__}: {inert(str(exc))} (rerun with --debug)",
                err=True,
            )
            ctx.exit(int(ExitCode.INTERNAL_ERROR))
        return None


@click.group(
    cls=TracklogGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option("--db", metavar="PATH", help="DuckDB file [env TRACKLOG_DB; default ./tracklog.duckdb]")
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help="TOML config file [env TRACKLOG_CONFIG; default ./tracklog.toml when present]",
)
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@click.option("--wait", type=click.FloatRange(0), metavar="SECONDS", help=WAIT_HELP)
@click.version_option(package_name="tracklog")
@click.pass_context
def cli(
    ctx: click.Context, db: str | None, config_file: str | None, debug: bool, quiet: bool, wait: float | None
) -> None:
    """Email message tracking analytics from nginx access logs.

    Ingest the tracking domain's access logs and the delivery manifests, then ask who
    opened and clicked what: `tracklog recipient ID`, `tracklog report delivery ID`, ...
    """
    ctx.obj = App(db_flag=db, config_flag=config_file, debug=debug, quiet=quiet, wait_flag=wait)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="tracklog")
