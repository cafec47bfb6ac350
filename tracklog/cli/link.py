"""`tracklog link`: the signed tracked URLs (or List-Unsubscribe headers) of a stored delivery."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pyarrow as pa

from tracklog.cli import App, cli, pass_app, wait_option
from tracklog.errors import UsageError
from tracklog.manifest import load_recipients
from tracklog.tracked_urls import (
    KINDS,
    check_id,
    check_recipients_known,
    delivery_targets,
    delivery_urls,
    unsubscribe_headers,
)


@cli.command()
@click.option(
    "--delivery", "delivery", required=True, metavar="ID", help="The delivery, as ingested from its manifest."
)
@click.option(
    "--recipient", "recipient_ids", multiple=True, metavar="ID", help="Only this recipient (repeatable)."
)
@click.option(
    "--recipients-file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Only the recipients in FILE (CSV with a recipient_id column, or Parquet), in its order.",
)
@click.option(
    "--type",
    "kinds",
    multiple=True,
    type=click.Choice(KINDS),
    help="Only this kind of URL (repeatable) [default: every click link, open, mirror, unsubscribe].",
)
@click.option(
    "--headers",
    is_flag=True,
    help="Print the List-Unsubscribe and List-Unsubscribe-Post (RFC 8058 one-click) headers instead.",
)
@click.option(
    "--base-url",
    required=True,
    envvar="TRACKLOG_BASE_URL",
    show_envvar=True,
    metavar="URL",
    help="The tracking domain, e.g. https://t.example.com (required unless TRACKLOG_BASE_URL is set).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "csv"]),
    default="text",
    show_default=True,
    help="text: one URL per line; csv: recipient_id,type,link_id,url,landing_url for a sending system "
    "to merge (landing_url: a web-tracking link's URL with its tl= token).",
)
@wait_option
@pass_app
def link(
    app: App,
    delivery: str,
    recipient_ids: tuple[str, ...],
    recipients_file: str | None,
    kinds: tuple[str, ...],
    headers: bool,
    base_url: str,
    fmt: str,
) -> None:
    """Print the signed tracked URLs of a delivery's recipients.

    Links and recipients come from the delivery's manifest in the database; with --recipient
    or --recipients-file, only those recipients (each must be in the manifest).
    """
    if recipient_ids and recipients_file:
        raise UsageError("give --recipient or --recipients-file, not both")
    if headers and kinds:
        raise UsageError("--headers prints the unsubscribe headers only; leave out --type")
    secret = app.config.require_secret()
    asked = _asked_recipients(recipient_ids, recipients_file)
    with app.open_reader() as con:
        targets = delivery_targets(con, delivery, ["unsubscribe"] if headers else kinds or KINDS)
        if asked is not None:
            check_recipients_known(con, delivery, asked)
        batches = delivery_urls(con, base_url, secret, targets, recipients=asked, delivery=delivery)
        if headers:
            _write_headers(batches, fmt)
        else:
            _write_urls(batches, fmt)


def _asked_recipients(recipient_ids: tuple[str, ...], recipients_file: str | None) -> pa.Table | None:
    if recipients_file:
        return load_recipients(Path(recipients_file))
    if recipient_ids:
        for recipient in recipient_ids:
            check_id("recipient", recipient)
        return pa.table({"recipient_id": pa.array(list(dict.fromkeys(recipient_ids)), pa.string())})
    return None


def _write_urls(batches: Iterator[pa.RecordBatch], fmt: str) -> None:
    out = sys.stdout
    writer = csv.writer(out, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(["recipient_id", "type", "link_id", "url", "landing_url"])
    for batch in batches:
        if fmt == "csv":
            writer.writerows(zip(*(batch.column(c).to_pylist() for c in range(5)), strict=True))
        elif batch.num_rows:
            out.write("\n".join(batch.column("url").to_pylist()) + "\n")


def _write_headers(batches: Iterator[pa.RecordBatch], fmt: str) -> None:
    out = sys.stdout
    writer = csv.writer(out, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(["recipient_id", "list_unsubscribe", "list_unsubscribe_post"])
    first = True
    for batch in batches:
        ids, urls = batch.column("recipient_id").to_pylist(), batch.column("url").to_pylist()
        for recipient, url in zip(ids, urls, strict=True):
            header = unsubscribe_headers(url)
            if fmt == "csv":
                writer.writerow([recipient, *header.values()])
                continue
            out.write(
                ("" if first else "\n") + "".join(f"{name}: {value}\n" for name, value in header.items())
            )
            first = False
