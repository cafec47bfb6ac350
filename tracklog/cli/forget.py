"""`tracklog forget RECIPIENT`: erase a recipient from the database (GDPR erasure)."""

from __future__ import annotations

import click

from tracklog.cli import App, cli, pass_app, wait_option
from tracklog.forget import forget
from tracklog.store import writer_session


@cli.command("forget")
@click.argument("recipient_id", metavar="RECIPIENT")
@click.option("--delivery", "delivery_id", metavar="ID", help="Only the recipient of this delivery.")
@wait_option
@pass_app
def forget_cmd(app: App, /, recipient_id: str, delivery_id: str | None) -> None:
    """Erase a recipient (GDPR): its hits, manifest rows and what was derived from them.

    Every table is corrected (the deliveries concerned are recomputed) and a tombstone, a
    keyed hash of the id (never the id), keeps re-ingested manifests and logs from bringing
    the recipient back (it needs the secret; without one, no tombstone is kept). The database
    file is then written anew, so no byte of the erased rows stays in it (this takes as long
    as copying the database). Files exported before are not touched: export those days again.
    """
    with writer_session(app.db, app.config.wait, on_wait=app.waiting_notice("finish")) as session:
        done = forget(session.con, recipient_id, delivery_id, app.config.secret)
        session.rewrite()  # the erased rows' bytes must not linger in free blocks of the file
    if not done.tombstone:
        click.echo(
            "Warning: no secret set, so no tombstone was kept: re-ingesting an old manifest or log "
            "brings the recipient back",
            err=True,
        )
    if not app.quiet:
        click.echo(
            f"Forgot recipient {recipient_id}: {done.hits} hit(s), {done.manifest_rows} manifest row(s), "
            f"{done.quarantined} quarantined line(s); {done.deliveries} deliveries recomputed",
            err=True,
        )
