"""The command-line layer: click commands that parse options, call the core, and render.

`main` is the console script. It turns TracklogError into one line on stderr and its exit
code; a traceback only with --debug. Commands live in the sibling modules, one per area.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
import duckdb
from rich.console import Console

from tracklog.config import Config, load_config
from tracklog.derived import open_reader
from tracklog.errors import ExitCode, TracklogError
from tracklog.store import OnWait

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """What every command gets: settings (loaded on first use) and the stderr console."""

    db_flag: str | None
    config_flag: str | None
    debug: bool
    quiet: bool
    err: Console
    wait_flag: float | None = None  # a command's --wait
    _config: Config | None = field(default=None, repr=False)

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

    def open_reader(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return open_reader(self.db, self.config.wait, self.waiting_notice(), self.upgrade_notice())

    def upgrade_notice(self) -> Callable[[], None] | None:
        """What to call when a reader must first bring the database up to date (after an upgrade
        of tracklog): a line on stderr when a person can see it, else nothing."""
        if self.quiet or not self.err.is_terminal:
            return None
        return lambda: self.err.print(
            "bringing the database up to date for this version of tracklog (once; about 20 s per "
            "million hits)..."
        )

    def waiting_notice(self, until: str = "commit") -> OnWait | None:
        """What to call when the command starts waiting for an ingest: a line on stderr when a
        person can see it (a terminal, not --quiet), else nothing."""
        if self.quiet or not self.err.is_terminal:
            return None

        def notice(holder: str | None) -> None:
            who = f"the ingest ({holder})" if holder else "the process writing the database"
            self.err.print(f"waiting for {who} to {until}...")

        return notice


pass_app = click.make_pass_decorator(App)


def _set_wait(ctx: click.Context, _param: click.Parameter, value: float | None) -> None:
    app = ctx.find_object(App)
    if value is not None and app is not None:
        app.wait_flag = value


def wait_option(func: F) -> F:
    """--wait SECONDS on every command that opens the database; folded into the settings."""
    return click.option(
        "--wait",
        type=click.FloatRange(0),
        metavar="SECONDS",
        expose_value=False,
        callback=_set_wait,
        help="Wait up to this long for an ingest holding the database "
        "[config key wait, env TRACKLOG_WAIT; default 60].",
    )(func)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


class TracklogGroup(click.Group):
    """Turns every failure into one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> object:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except TracklogError as exc:
            if debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(int(exc.exit_code))
        except BrokenPipeError:
            ctx.exit(int(ExitCode.OK))
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: one line unless --debug
            if debug:
                raise
            click.echo(f"Error: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", err=True)
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
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors on stderr.")
@click.version_option(package_name="tracklog")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config_file: str | None, debug: bool, quiet: bool) -> None:
    """Email message tracking analytics from nginx access logs.

    Ingest the tracking domain's access logs and the delivery manifests, then ask who
    opened and clicked what: `tracklog recipient ID`, `tracklog report delivery ID`, ...
    """
    ctx.obj = App(db_flag=db, config_flag=config_file, debug=debug, quiet=quiet, err=stderr_console())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="tracklog")


# Commands register themselves on `cli` when their module is imported.
from tracklog.cli import classify as _classify  # noqa: F401
from tracklog.cli import ingest as _ingest  # noqa: F401
from tracklog.cli import link as _link  # noqa: F401
from tracklog.cli import reports as _reports  # noqa: F401
