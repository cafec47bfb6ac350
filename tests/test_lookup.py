"""The recipients of an ingest's chunks looked up in the compiled extension's hash table
(tracklog/ingest/lookup.py) store exactly what the join with `recipient_keys` stores (the
reference, and the path of everything else): every column of every hit, every derived table."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from conftest import run_sample as run
from logmaker import sig

from tracklog.ingest import engine, sources
from tracklog.ingest import lookup as lookup_module
from tracklog.ingest.fastpath import extension_available
from tracklog.ingest.lookup import LOAD_RATIO, RecipientLookup
from tracklog.metrics import LOOKED_UP
from tracklog.store import open_writer

SAMPLE = Path(__file__).parent.parent / "sample_logs"
SECRET = b"tracklog-demo-secret-NOT-FOR-PRODUCTION-4f9c2e"  # sample_logs/tracklog.toml

pytestmark = pytest.mark.skipif(not extension_available(), reason="the compiled extension is not built")


def hit(path: str, *, signed: bool = True) -> bytes:
    query = f"?s={sig(path, SECRET)}" if signed else ""
    stamp = DEFERRED.get(path, "[29/Nov/2026:10:00:00 +0000]")
    return (
        f'198.51.100.7 - - {stamp} "GET {path}{query} HTTP/1.1" 200 43 "-" '
        '"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"\n'
    ).encode()


# (path, the resolution and email domain a reader of the manifests gives it by hand)
CASES = [
    ("/o/NL-2026-11/r000001.gif", "event", "outlook.com"),  # lea.robert@outlook.com
    ("/o/NL-2026-11/r000006.gif", "recipient", None),  # a recipient of PROMO-BF-2026 only
    ("/o/PROMO-BF-2026/r000006.gif", "event", None),  # domain: read from its CSV below
    ("/o/NL-2026-11/R000001.gif", "recipient", None),  # ids compare case-sensitively
    ("/o/NL-2026-11/r00000.gif", "recipient", None),  # a prefix of an id
    ("/o/NOPE-2026/r000001.gif", "delivery", None),  # no such delivery
    ("/c/NL-2026-11/hero/r000008", "event", None),  # a click of an NL-only recipient
    ("/o/NL-2026-11/r000002.gif", "event", "live.fr"),  # nathalie.gauthier22@live.fr, deferred:
]
# a time nginx never writes (a lower-case month), which the compiled pass leaves to the SQL
# (DuckDB's strptime reads it): the deferred rows are looked up as the others
DEFERRED = {"/o/NL-2026-11/r000002.gif": "[29/nov/2026:10:00:00 +0000]"}


def domain_of(csv_name: str, recipient: str) -> str:
    for row in (SAMPLE / "manifests" / csv_name).read_text().splitlines()[1:]:
        rid, email = row.split(",")[:2]
        if rid == recipient:
            return email.split("@")[1].lower()
    raise AssertionError(recipient)


def ingest(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch, *, lookup: bool
) -> tuple[Path, list[bool]]:
    """The sample's logs (and CASES) ingested in chunks of about 64 KiB, each stored resolved;
    whether each chunk's recipients were looked up (the first ones are joined: LOAD_RATIO)."""
    logs = tmp_path / "logs"
    if not logs.exists():
        logs.mkdir()
        (logs / "access.log.2").write_bytes(gzip.decompress((SAMPLE / "access.log.2.gz").read_bytes()))
        (logs / "access.log.1").write_bytes(
            (SAMPLE / "access.log.1").read_bytes() + b"".join(hit(p) for p, *_ in CASES)
        )
        (logs / "access.log").write_bytes((SAMPLE / "access.log").read_bytes())
    monkeypatch.setattr(engine, "SMALL_CHUNK_LINES", 1)
    monkeypatch.setattr(sources, "CHUNK", 64 * 1024)
    monkeypatch.setattr(sources, "READ", 16 * 1024)
    ready: list[bool] = []
    real = RecipientLookup.ready

    def logged(self: RecipientLookup, tables: list[pa.Table], *, lines: int | None = None) -> bool:
        ready.append(real(self, tables, lines=lines))
        return ready[-1]

    monkeypatch.setattr(RecipientLookup, "ready", logged)
    monkeypatch.setattr(RecipientLookup, "available", staticmethod(lambda: lookup))
    db = tmp_path / f"{name}.duckdb"
    run(
        db,
        "ingest",
        "--manifest",
        str(SAMPLE / "manifests" / "*.json"),
        *(str(logs / n) for n in sorted(logs.iterdir())),
    )
    return db, ready


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


TABLES = (
    "hits", "delivery_totals", "delivery_dimensions", "delivery_domains", "delivery_minutes",
    "delivery_not_counted", "readers", "click_browsers", "dimension_values", "user_agent_families",
    "quarantine",
)  # fmt: skip


def test_looked_up_recipients_store_what_the_join_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up, chunks = ingest(tmp_path, "lookup", monkeypatch, lookup=True)
    joined, none = ingest(tmp_path, "join", monkeypatch, lookup=False)
    # the first chunks joined (until the lines read reach half the recipients to load), then
    # every other chunk looked up, page tags too
    assert none == [] and chunks[0] is False and chunks.count(True) > 20
    for table in TABLES:
        got = sorted(rows(looked_up, f"SELECT * FROM {table}"), key=repr)
        assert got == sorted(rows(joined, f"SELECT * FROM {table}"), key=repr), table
    assert (
        rows(looked_up, "SELECT count(*) FROM hits WHERE kind = 'page' AND recipient_key IS NOT NULL")[0][0]
        > 0
    )
    # and what a reader of the manifests expects of the lines added to the sample
    for path, resolution, domain in CASES:
        if path == "/o/PROMO-BF-2026/r000006.gif":
            domain = domain_of("promo-bf-2026.recipients.csv", "r000006")
        if path.startswith("/c/NL-2026-11/hero/r000008"):
            domain = domain_of("nl-2026-11.recipients.csv", "r000008")
        got = rows(
            looked_up,
            "SELECT resolution, email_domain, recipient_key IS NOT NULL FROM hits "
            f"WHERE line_no > 1102 AND source_id = (SELECT source_id FROM sources WHERE path LIKE '%access.log.1') "
            f"AND delivery_id || '/' || recipient_id = '{path.split('/')[2]}/{path.rstrip('.gif').split('/')[-1]}'",
        )
        assert got == [(resolution, domain, resolution == "event")], path


def test_the_table_follows_the_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot of `recipient_keys`, loaded once worth it and up to LOAD_MAX recipients,
    dropped when the manifests in force change (a recipient erased, a manifest replaced): the
    next chunk is looked up in the new state."""
    db = tmp_path / "t.duckdb"
    run(db, "ingest", "--manifest", str(SAMPLE / "manifests" / "*.json"))
    chunk = pa.table(
        {
            "delivery_id": pa.array(["NL-2026-11", "NL-2026-11", None, "NOPE"]).dictionary_encode(),
            "recipient_id": ["r000001", "r000002", None, "r000001"],
        }
    )
    with open_writer(db) as con:
        lookup = RecipientLookup(con)
        nl = con.execute("SELECT count(*) FROM recipient_keys WHERE delivery_id = 'NL-2026-11'").fetchall()[
            0
        ][0]
        # loaded once the run has read half as many lines as NL-2026-11 has recipients (a
        # chunk's rows computed again by the SQL counted once: here its first two)
        offered = 0
        while not lookup.ready([chunk, chunk.slice(0, 2)], lines=chunk.num_rows):
            offered += chunk.num_rows
        assert offered < nl / LOAD_RATIO <= offered + chunk.num_rows

        def looked_up() -> list[tuple[Any, ...]]:
            assert lookup.ready([chunk])
            table = lookup.attach(chunk)
            return list(zip(*(table.column(c).to_pylist() for c in LOOKED_UP), strict=True))

        keys = dict(
            con.execute(
                "SELECT recipient_id, recipient_key FROM recipient_keys WHERE delivery_id = 'NL-2026-11' "
                "AND recipient_id IN ('r000001', 'r000002')"
            ).fetchall()
        )
        first = looked_up()
        assert first == [
            (keys["r000001"], "outlook.com"),
            (keys["r000002"], "live.fr"),
            (None, None),
            (None, None),
        ]
        assert looked_up() == first
        con.execute(
            "DELETE FROM recipient_keys WHERE delivery_id = 'NL-2026-11' AND recipient_id = 'r000001'"
        )
        assert looked_up()[:2] == [(None, None), (keys["r000002"], "live.fr")]
        con.execute("UPDATE recipient_keys SET email = 'n@Example.ORG' WHERE recipient_id = 'r000002'")
        con.execute(
            "UPDATE derived_manifests SET manifest_sha256 = 'another' WHERE delivery_id = 'NL-2026-11'"
        )
        assert looked_up()[:2] == [(None, None), (keys["r000002"], "example.org")]
        empty = lookup.attach(chunk.slice(0, 0))
        assert empty.num_rows == 0 and empty.column_names == [*chunk.column_names, *LOOKED_UP]
        # no more than LOAD_MAX recipients held: a chunk of a delivery beyond is joined
        promo = pa.table({"delivery_id": ["PROMO-BF-2026"], "recipient_id": ["r000001"]})
        monkeypatch.setattr(lookup_module, "LOAD_RATIO", 10**6)  # whatever the lines read so far
        monkeypatch.setattr(lookup_module, "LOAD_MAX", nl + 10)
        assert not lookup.ready([promo])
        assert lookup.ready([chunk])  # what it holds is still looked up
        monkeypatch.setattr(lookup_module, "LOAD_MAX", 10**9)
        assert lookup.ready([promo])
        # a key twice (which storing a manifest never leaves): the join resolves, as it always could
        con.execute("INSERT INTO recipient_keys SELECT * FROM recipient_keys WHERE recipient_id = 'r000002'")
        assert not lookup.ready([chunk])
