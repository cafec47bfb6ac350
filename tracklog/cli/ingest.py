"""`tracklog ingest` and `tracklog status`."""

from __future__ import annotations

import click

from tracklog.cli import App, cli, pass_app


@cli.command()
@click.argument("inputs", nargs=-1)
@pass_app
def ingest(app: App, inputs: tuple[str, ...]) -> None:
    """Ingest nginx access logs (FILE, DIR, GLOB or - for stdin) and delivery manifests."""
    raise NotImplementedError
