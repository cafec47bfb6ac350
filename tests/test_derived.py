"""The derived tables: hits merged commit by commit, in any batches, with manifests arriving at
any point, give exactly what the metric definitions compute over all the events at once; and a
database of schema 2 is upgraded with the same figures."""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import DataSet, Hit, Model, build_db, store_manifests, stored_and_defined
from conftest import run_sample as run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracklog import derived
from tracklog.reports.delivery import delivery_indicators
from tracklog.schema import DERIVED_TABLES, HIT_COLUMNS, SCHEMA_VERSION, apply_schema
from tracklog.store import open_writer

SAMPLE = Path(__file__).parent.parent / "sample_logs"


def commit_batch(con: duckdb.DuckDBPyConnection, batch: list[tuple[int, Hit]], *, merge: bool = True) -> None:
    """Store the hits of `batch` as an ingest stores a chunk, in one transaction; then, when
    `merge`, merge what is stored (this batch's and any stored before without a merge) in a
    transaction of its own, as an ingest does every few chunks."""
    con.execute("BEGIN TRANSACTION")
    con.execute(f"CREATE OR REPLACE TEMP TABLE batch AS SELECT {', '.join(HIT_COLUMNS)} FROM hits LIMIT 0")
    insert_hits(con, batch, "batch")
    derived.store_hits(con, "batch")
    con.execute("COMMIT")
    if merge:
        con.execute("BEGIN TRANSACTION")
        derived.merge_stored(con)
        con.execute("COMMIT")


@contextmanager
def manifests_stored(dataset: DataSet) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory database with the data set's manifests stored and the derived tables in
    sync, as an ingest finds it before its first chunk."""
    con = duckdb.connect()
    try:
        apply_schema(con)
        store_manifests(con, dataset)
        derived.sync(con)
        yield con
    finally:
        con.close()


def insert_hits(con: duckdb.DuckDBPyConnection, hits: list[tuple[int, Hit]], table: str = "hits") -> None:
    """Hits as an ingest parses them: (line number, hit), one source."""
    rows = [
        [1, n, 0, h.ts, h.ip, h.method, h.query, h.status, 43, None, h.ua, h.uid, None, h.kind, h.delivery]
        + [h.link, h.recipient, h.sig]
        for n, h in hits
    ]
    if not rows:
        return
    columns = ", ".join(HIT_COLUMNS)
    con.executemany(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['?'] * len(HIT_COLUMNS))})", rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_merging_in_any_batches_in_any_order_gives_the_definitions(
    dataset: DataSet, model: Model, data: st.DataObject
) -> None:
    # the hits in any order (a trap click or a scanner's last click may come in a later batch
    # than the hits it flags, or an earlier one), cut into batches anywhere; numbered in that
    # order, as an ingest numbers the lines of a log
    numbered = list(enumerate(data.draw(st.permutations(dataset.hits), label="order"), start=1))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(numbered)), max_size=5), label="cuts"))
    batches = [numbered[a:b] for a, b in zip([0, *cuts], [*cuts, len(numbered)], strict=True)]
    manifests_at = data.draw(st.integers(0, len(batches)), label="manifests before batch")
    # after which batches the stored hits are merged (the others wait for a later merge, as an
    # ingest's chunks do; the last sync merges what is left)
    merges = data.draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)), label="merges")
    con = duckdb.connect()
    try:
        apply_schema(con)
        derived.sync(con)  # as every ingest run does before its first chunk
        for i, batch in enumerate(batches):
            if i == manifests_at:
                store_manifests(con, dataset)
                derived.sync(con)
            commit_batch(con, batch, merge=merges[i])  # as the ingest of a chunk does
            if merges[i]:
                assert derived.is_current(con)
        if manifests_at == len(batches):
            store_manifests(con, dataset)
        derived.sync(con)
        for stored, defined in stored_and_defined(con):
            assert stored == defined
        for delivery in ("NL1", "NL2"):
            assert delivery_indicators(con, delivery).to_pylist() == [model.indicators(delivery)]
        classes = dict(con.execute("SELECT line_no, class FROM hits").fetchall())
        assert classes == {n: model.hit_class(h) for n, h in numbered}
    finally:
        con.close()


@pytest.mark.parametrize("merged_first", [True, False])
def test_a_trap_click_in_a_later_batch_reclassifies_what_it_flags(
    dataset: DataSet, model: Model, merged_first: bool
) -> None:
    """r2's shoes click is a person's until the trap click 4 s later arrives, one commit later:
    the click leaves every human figure and joins bot_clicks. Also when the first batch was
    stored but not merged yet (an ingest merges every few chunks): it is merged first, once."""
    numbered = list(enumerate(dataset.hits, start=1))
    with manifests_stored(dataset) as con:
        commit_batch(con, numbered[:-1], merge=merged_first)
        # the figures of the first batch (when not merged: as its merge makes them, undone)
        con.execute("BEGIN TRANSACTION")
        derived.merge_stored(con)
        before = delivery_indicators(con, "NL1").to_pylist()[0]
        con.execute("ROLLBACK")
        assert con.execute("SELECT count(*) FROM unmerged").fetchall() == [(0 if merged_first else 1,)]
        commit_batch(con, numbered[-1:])
        after = delivery_indicators(con, "NL1").to_pylist()[0]
        # by hand: the shoes click at 09:31 moves from clicks_total to bot_clicks, with the trap click
        assert after["clicks_total"] == before["clicks_total"] - 1
        assert after["bot_clicks"] == before["bot_clicks"] + 2
        assert after == model.indicators("NL1")
        for stored, defined in stored_and_defined(con):
            assert stored == defined
        flagged = con.execute(
            "SELECT class, reasons FROM hits WHERE recipient_id = 'r2' AND link_id = 'shoes' AND ts = ?",
            [dt.datetime(2026, 11, 3, 9, 31)],
        ).fetchall()
        assert flagged == [("bot_click", "trap")]


def test_stored_hits_left_unmerged_are_merged_in_bounded_steps(
    dataset: DataSet, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hits stored as five chunks and never merged (merges that failed, or crashed, again and
    again) are merged by the next sync MERGE_RANGES ranges per transaction, until none is left:
    the figures are those of the definitions."""
    monkeypatch.setattr(derived, "MERGE_RANGES", 2)
    numbered = list(enumerate(dataset.hits, start=1))
    with manifests_stored(dataset) as con:
        commit_batch(con, numbered, merge=False)
        # as five chunks would have recorded them (stored one by one, a later chunk may change
        # the class of an earlier one's hits, which merges what is pending first)
        [(lo, hi, first, stop)] = con.execute("SELECT * FROM unmerged").fetchall()
        cuts = [first + (stop - first) * k // 5 for k in range(6)]
        con.execute("DELETE FROM unmerged")
        con.executemany(
            "INSERT INTO unmerged VALUES (?, ?, ?, ?)", [[lo, hi, a, b] for a, b in itertools.pairwise(cuts)]
        )
        assert con.execute("SELECT count(*) FROM unmerged").fetchall() == [(5,)]
        commits = []
        original = derived._transaction
        monkeypatch.setattr(derived, "_transaction", lambda c, f: (commits.append(f), original(c, f)))
        derived.sync(con)
        merges = [f for f in commits if getattr(f, "__name__", "") == "step"]
        assert len(merges) == 3  # 2 + 2 + 1 ranges
        assert con.execute("SELECT count(*) FROM unmerged").fetchall() == [(0,)]
        assert derived.is_current(con)
        for stored, defined in stored_and_defined(con):
            assert stored == defined
        for delivery in ("NL1", "NL2"):
            assert delivery_indicators(con, delivery).to_pylist() == [model.indicators(delivery)]


def snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every derived table, in a canonical order (keys numbered by value, so that two histories
    that numbered things in another order compare equal)."""
    queries = {
        "hits": "SELECT * EXCLUDE (source_id, line_no, byte_offset, delivery_key, recipient_key) FROM hits",
        "totals": "SELECT * FROM delivery_totals",
        "dimensions": "SELECT * FROM delivery_dimensions",
        "domains": "SELECT * FROM delivery_domains",
        "minutes": "SELECT * FROM delivery_minutes",
        "not_counted": "SELECT * FROM delivery_not_counted",
        "readers": "SELECT k.recipient_id, r.* EXCLUDE (recipient_key, value_keys) FROM readers r "
        "JOIN recipient_keys k USING (recipient_key)",
        "reader_values": "SELECT k.recipient_id, k.delivery_id, v.dimension, v.value FROM "
        "(SELECT recipient_key, unnest(value_keys) AS value_key FROM readers) m "
        "JOIN recipient_keys k USING (recipient_key) JOIN dimension_values v USING (value_key)",
        "browsers": "SELECT * FROM click_browsers",
        "agents": "SELECT * FROM user_agent_families",
    }
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {name: sorted(con.execute(sql).fetchall(), key=repr) for name, sql in queries.items()}
    finally:
        con.close()


def test_sample_ingested_piece_by_piece_equals_one_run_and_a_rebuild(tmp_path: Path) -> None:
    """The bundled sample, its log appended and ingested in five pieces (five runs, each
    merging only its new lines, manifests last), against one run of everything, and against a
    rebuild of the derived tables from the stored hits."""
    logs = [gzip.decompress((SAMPLE / "access.log.2.gz").read_bytes())]
    logs += [(SAMPLE / name).read_bytes() for name in ("access.log.1", "access.log")]
    lines = b"".join(logs).splitlines(keepends=True)
    manifests = str(SAMPLE / "manifests" / "*.json")

    whole = tmp_path / "whole.duckdb"
    (tmp_path / "all.log").write_bytes(b"".join(lines))
    run(whole, "ingest", "--manifest", manifests, str(tmp_path / "all.log"))

    pieces = tmp_path / "pieces.duckdb"
    growing = tmp_path / "growing.log"
    step = len(lines) // 4 + 1
    for start in range(0, len(lines), step):
        with growing.open("ab") as out:
            out.write(b"".join(lines[start : start + step]))
        run(pieces, "ingest", str(growing))
    run(pieces, "ingest", "--manifest", manifests)

    expected = snapshot(whole)
    assert snapshot(pieces) == expected
    assert run(pieces, "report", "deliveries", "--format", "json") == run(
        whole, "report", "deliveries", "--format", "json"
    )
    with open_writer(pieces) as con:
        con.execute("UPDATE derived_state SET definitions = 'an earlier version'")
        derived.sync(con)  # everything built anew from the stored hits
    assert snapshot(pieces) == expected


def test_a_schema_2_database_is_upgraded_with_the_same_figures(
    tmp_path: Path, dataset: DataSet, model: Model
) -> None:
    """A database as tracklog wrote it before the derived tables (schema 2: caches refreshed
    at the end of a run, views over them) opens, is upgraded once, and reports the same figures."""
    db = build_db(tmp_path / "v2.duckdb", dataset)
    with open_writer(db) as con:
        for table in DERIVED_TABLES:
            con.execute(f"DROP TABLE {table}")
        # what schema 2 had beside the base tables: its caches and views over them
        con.execute("CREATE TABLE hit_facts AS SELECT 1 AS source_id, 1 AS line_no")
        con.execute("CREATE TABLE delivery_totals_stored AS SELECT 'NL1' AS delivery_id, 999 AS opens_total")
        con.execute(
            "CREATE TABLE delivery_breakdowns (delivery_id VARCHAR, dimension VARCHAR, value VARCHAR)"
        )
        con.execute("CREATE TABLE derived_state (hits BIGINT)")
        con.execute("CREATE OR REPLACE VIEW events AS SELECT * FROM hit_facts")
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with derived.open_reader(db, wait=10) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [
            (str(SCHEMA_VERSION),)
        ]
        for delivery in ("NL1", "NL2"):
            assert delivery_indicators(con, delivery).to_pylist() == [model.indicators(delivery)]
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert not tables & {"delivery_totals_stored", "delivery_breakdowns"}


def test_a_replaced_manifest_resolves_its_delivery_again(
    tmp_path: Path, dataset: DataSet, model: Model
) -> None:
    db = build_db(tmp_path / "m.duckdb", dataset)
    with derived.open_reader(db, wait=10) as con:
        before = delivery_indicators(con, "NL1").to_pylist()
    with open_writer(db) as con:
        con.execute("DELETE FROM recipients WHERE delivery_id = 'NL1'")
        con.execute("UPDATE deliveries SET loaded_at = loaded_at + INTERVAL 1 DAY WHERE delivery_id = 'NL1'")
        derived.sync(con)
        # no recipients any more: every NL1 hit is an orphan, nothing counts
        row = delivery_indicators(con, "NL1").to_pylist()[0]
        assert (row["opens_unique"], row["clicks_total"], row["sent"]) == (0, 0, 0)
        con.execute("DELETE FROM deliveries WHERE delivery_id = 'NL1'")
        con.execute("DELETE FROM links WHERE delivery_id = 'NL1'")
        nl1 = DataSet([d for d in dataset.deliveries if d.delivery_id == "NL1"], [])
        store_manifests(con, nl1)
        derived.sync(con)
    with derived.open_reader(db, wait=10) as con:
        assert delivery_indicators(con, "NL1").to_pylist() == before == [model.indicators("NL1")]
        for stored, defined in stored_and_defined(con):
            assert stored == defined


def test_the_classifier_version_a_reader_checks_is_the_classifiers(tmp_path: Path, dataset: DataSet) -> None:
    """is_current reads the classifier's version without importing tracklog.classify once the
    settings and proxy ranges are stored; it is classify.stored_settings' version in every state:
    a new database (nothing stored yet), after an ingest's sync, after a reclassify."""
    from tracklog import classify
    from tracklog.config import ClassifySettings
    from tracklog.store import open_reader

    db = tmp_path / "c.duckdb"
    with open_writer(db):
        pass
    versions = []
    with open_reader(db) as con:  # read-only: nothing stored, the defaults' version
        assert not con.execute("SELECT * FROM classifier_settings").fetchall()
        versions.append((derived.classifier_version(con), classify.stored_settings(con)[1]))
    build_db(db, dataset)
    with open_writer(db) as con:
        derived.sync(con)
        versions.append((derived.classifier_version(con), classify.stored_settings(con)[1]))
        derived.reclassify(con, ClassifySettings(head=False))
        versions.append((derived.classifier_version(con), classify.stored_settings(con)[1]))
    assert all(ours == theirs for ours, theirs in versions), versions
    assert len({theirs for _, theirs in versions}) >= 2  # the settings changed the version


def totals(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return con.execute("SELECT count(*), sum(opens_total + clicks_total) FROM delivery_totals").fetchall()


def test_a_batch_over_stored_lines_is_refused(dataset: DataSet) -> None:
    """store_hits reads a batch back from `hits` as the lines of its sources in its range, so a
    batch whose range holds a stored line (which no ingest makes: it numbers a stream's new
    lines after the stored ones) is refused, and nothing of it is stored or counted."""
    numbered = list(enumerate(dataset.hits, start=1))
    with manifests_stored(dataset) as con:
        commit_batch(con, numbered[1:2])  # line 2
        before = totals(con)
        with pytest.raises(RuntimeError, match="stored already"):
            commit_batch(con, [numbered[0], numbered[2]])  # lines 1 and 3: line 2 lies between
        con.execute("ROLLBACK")
        assert con.execute("SELECT line_no FROM hits").fetchall() == [(2,)]
        assert totals(con) == before
        commit_batch(con, numbered[2:])  # lines 3.. are new: stored and merged
        for stored, defined in stored_and_defined(con):
            assert stored == defined


def test_a_failed_merge_reports_its_own_error_not_the_aborted_transaction(tmp_path: Path) -> None:
    """When a statement of a merge fails (out of memory, a full disk), the clean-up of its
    temporary tables must not replace that error with DuckDB's "transaction is aborted"."""
    with open_writer(tmp_path / "t.duckdb") as con:
        con.execute("BEGIN TRANSACTION")
        try:
            derived.store_hits(con, "no_such_relation")
        except duckdb.Error as exc:
            caught: duckdb.Error = exc
        con.execute("ROLLBACK")
    assert isinstance(caught, duckdb.CatalogException), caught
    assert "no_such_relation" in str(caught)


def _classes_after(dataset: DataSet, batches: list[list[tuple[int, Hit]]]) -> list[tuple[Any, ...]]:
    """(line_no, class, reasons) of the hits of `batches`, each stored and merged as an ingest's
    chunk (in its own transaction) after the manifests; every stored figure is checked against
    its definition on the way."""
    with manifests_stored(dataset) as con:
        for batch in batches:
            commit_batch(con, batch)
        for stored, defined in stored_and_defined(con):
            assert stored == defined
        return con.execute("SELECT line_no, class, reasons FROM hits ORDER BY line_no").fetchall()


@pytest.mark.parametrize("few_stored", [derived._FEW_STORED, 0])
def test_stored_hits_make_a_batch_s_recipient_one_the_window_rules_judge(
    dataset: DataSet, few_stored: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch recipient whose own hits in the batch show no window signal (no trap click, fewer
    links than a burst, nothing near the send) is judged with its stored hits all the same: a
    trap click stored a batch before flags its open (with its MPP agent: both reasons, in the
    documented order); two clicks stored before and one in the batch, on three links within 2 s,
    are a burst (the stored two are classified again). The other hits keep their local signals.
    Expected classes by hand; the same whether the stored hits in the batch's time span are kept
    as they are or first narrowed to the batch's recipients (`few_stored` 0: always)."""
    monkeypatch.setattr(derived, "_FEW_STORED", few_stored)
    later = dt.datetime(2026, 11, 3, 11, 0)  # NL1 was sent at 09:00: `fast` cannot apply

    def at(seconds: float) -> dt.datetime:
        return later + dt.timedelta(seconds=seconds)

    batches = [
        [
            (1, Hit("NL1", "r1", "click", at(0), "trap")),
            (2, Hit("NL1", "r2", "click", at(0), "hero")),
            (3, Hit("NL1", "r2", "click", at(0.5), "shoes")),
            (4, Hit("NL1", "r3", "open", at(0), ua="python-requests/2.31.0")),
        ],
        [
            (5, Hit("NL1", "r1", "open", at(4), ua="Mozilla/5.0")),  # MPP's agent, 4 s after the trap
            (6, Hit("NL1", "r2", "click", at(1.5), "blog")),  # the third link within 2 s
            (7, Hit("NL1", "r3", "open", at(30))),
            (8, Hit("NL1", "r4", "click", at(1), "hero", method="HEAD")),
        ],
    ]
    assert _classes_after(dataset, batches) == [
        (1, "bot_click", "trap"),
        (2, "bot_click", "burst"),
        (3, "bot_click", "burst"),
        (4, "machine_open", "agent"),
        (5, "machine_open", "mpp,trap"),
        (6, "bot_click", "burst"),
        (7, "human", None),
        (8, "bot_click", "head"),
    ]


def test_a_later_batch_never_unflags_a_stored_hit_judged_with_hits_it_does_not_read(dataset: DataSet) -> None:
    """r1's open 5 s after its trap click is a machine's (trap, ±10 s). A later batch brings r1's
    open 25 s after the trap: the stored hits it reads to judge it reach 20 s back (two windows),
    so the earlier open but not the trap click; the earlier open must keep its class (it is judged
    again only with every hit within a window of it). Expected classes by hand."""
    later = dt.datetime(2026, 11, 3, 11, 0)  # NL1 was sent at 09:00: `fast` cannot apply

    def at(seconds: float) -> dt.datetime:
        return later + dt.timedelta(seconds=seconds)

    batches = [
        [(1, Hit("NL1", "r1", "click", at(0), "trap")), (2, Hit("NL1", "r1", "open", at(5)))],
        [(3, Hit("NL1", "r1", "open", at(25))), (4, Hit("NL1", "r3", "open", at(-100)))],
    ]
    assert _classes_after(dataset, batches) == [
        (1, "bot_click", "trap"),
        (2, "machine_open", "trap"),  # 5 s after the trap click
        (3, "human", None),  # 25 s after it
        (4, "human", None),
    ]


def ingest_sample(tmp_path: Path, *, rotated: bool) -> Path:
    """A new database with the sample's manifests and logs ingested (the gzipped rotation too
    when `rotated`: about 3,900 hits in three sources, else two)."""
    logs = {"access.log.2": gzip.decompress((SAMPLE / "access.log.2.gz").read_bytes())} if rotated else {}
    logs |= {name: (SAMPLE / name).read_bytes() for name in ("access.log.1", "access.log")}
    for name, data in logs.items():
        (tmp_path / name).write_bytes(data)
    db = tmp_path / "t.duckdb"
    run(db, "ingest", "--manifest", str(SAMPLE / "manifests" / "*.json"), *(str(tmp_path / n) for n in logs))
    return db


@pytest.mark.parametrize("batch", [97, 1_000])
def test_a_rebuild_in_small_batches_equals_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """The catch-up resolves, classifies and merges the stored hits in batches of CATCH_UP_BATCH
    hits (line ranges of a large source, groups of small ones), each looking up its own
    recipients: a rebuild in batches of a few dozen or a thousand hits (the sample's logs: about
    3,900 hits in three sources) builds exactly the tables one ingest of everything did."""
    db = ingest_sample(tmp_path, rotated=True)
    expected = snapshot(db)
    monkeypatch.setattr(derived, "CATCH_UP_BATCH", batch)
    with open_writer(db) as con:
        per_source = [n for (n,) in con.execute("SELECT count(*) FROM hits GROUP BY source_id").fetchall()]
        assert len(per_source) == 3 and max(per_source) > batch  # a source cut into line ranges
        con.execute("UPDATE derived_state SET definitions = 'an earlier version'")
        derived.sync(con)
        assert con.execute("SELECT count(*) FROM hits WHERE resolution IS NULL").fetchall()[0][0] == 0
    assert snapshot(db) == expected


def batch_values(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of distinct dimension values of each batch merged from now on (those its
    readers were seen with: what decides between the masks and the lists), appended as merged."""
    sizes: list[int] = []
    reader_values = derived._reader_values

    def counted(con: duckdb.DuckDBPyConnection) -> None:
        reader_values(con)
        values = "SELECT count(DISTINCT k) FROM (SELECT unnest(value_keys) AS k FROM _rv)"
        sizes.append(con.execute(values).fetchall()[0][0])

    monkeypatch.setattr(derived, "_reader_values", counted)
    return sizes


@pytest.mark.parametrize("bits", [0, 40])
def test_readers_values_gathered_as_lists_equal_the_masks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bits: int
) -> None:
    """A merge gathers each reader's dimension values as a bit mask over its batch's distinct
    values when they are at most MASK_BITS, else as lists of the events' keys: the sample
    ingested with every batch over the limit (0), or some under and some over it (40, in
    batches of 500 hits), builds exactly the tables the masks did (the sample's figures
    themselves are checked by hand in test_metrics and test_reports)."""
    db = ingest_sample(tmp_path, rotated=False)
    expected = snapshot(db)
    monkeypatch.setattr(derived, "MASK_BITS", bits)
    monkeypatch.setattr(derived, "CATCH_UP_BATCH", 500)
    sizes = batch_values(monkeypatch)
    with open_writer(db) as con:
        con.execute("UPDATE derived_state SET definitions = 'an earlier version'")
        derived.sync(con)
    assert min(sizes) <= bits < max(sizes) if bits else min(sizes) > 0
    assert snapshot(db) == expected


def test_readers_values_past_64_bits_match_the_definitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch with about 100 distinct values (30 links, each with its URL, label and id, and
    three agents): the masks use bits past 64. The readers per link, URL and agent value are
    counted by hand below (every hit here is a human's counted event), and every stored figure
    equals the definitions computed over all the events at once."""
    from conftest import ANDROID, CHROME_WIN, IPHONE, Delivery

    sent = dt.datetime(2026, 11, 2, 9, 0)
    links: list[tuple[str, str, str, str | None]] = [
        (f"L{i:02d}", f"https://shop.example/p/{i}", f"Product {i}", None) for i in range(30)
    ]
    people: list[tuple[str, str | None, str]] = [
        (f"r{i:02d}", f"r{i:02d}@example.org", "delivered") for i in range(45)
    ]
    agents = (IPHONE, CHROME_WIN, ANDROID)
    hits: list[Hit] = []
    clicked: dict[str, set[str]] = {}
    for i, (rid, _, _) in enumerate(people):
        at = sent + dt.timedelta(hours=2, minutes=3 * i)
        ua, ip = agents[i % 3], f"198.51.100.{i + 1}"
        hits.append(Hit("WIDE", rid, "open", at, ua=ua, ip=ip))
        for n, link in enumerate(sorted({links[i % 30][0], links[(7 * i + 3) % 30][0]})):
            hits.append(
                Hit("WIDE", rid, "click", at + dt.timedelta(minutes=20 * (n + 1)), link=link, ua=ua, ip=ip)
            )
            clicked.setdefault(link, set()).add(rid)
    data = DataSet([Delivery("WIDE", "Wide", sent, "Subject", None, links, people)], hits)
    db = build_db(tmp_path / "wide.duckdb", data)
    sizes = batch_values(monkeypatch)
    with derived.open_reader(db, wait=10) as con:
        assert len(sizes) == 1 and 64 < sizes[0] <= derived.MASK_BITS
        readers = {
            (dimension, value): n
            for _, dimension, value, _, _, n in con.execute(
                "SELECT delivery_id, dimension, value, opens, clicks, readers FROM delivery_dimensions"
            ).fetchall()
        }
        for stored, defined in stored_and_defined(con):
            assert stored == defined
    by_url = {url: len(clicked.get(link_id, ())) for link_id, url, _, _ in links}
    assert {v: n for (d, v), n in readers.items() if d == "link"} == {k: len(v) for k, v in clicked.items()}
    assert {v: n for (d, v), n in readers.items() if d == "url"} == {u: n for u, n in by_url.items() if n}
    assert sorted(n for (d, _), n in readers.items() if d == "browser") == [15, 15, 15]
