"""The metric definitions (tracklog.metrics) against an independent plain-Python model."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from pathlib import Path

import duckdb
import pytest
from conftest import DataSet, Hit, Model, build_db, half_up_tenths, store_manifests
from hypothesis import given, settings
from hypothesis import strategies as st

from tracklog import derived, metrics
from tracklog.reports.common import Window
from tracklog.reports.delivery import delivery_indicators
from tracklog.store import open_writer


@pytest.mark.parametrize("delivery", ["NL1", "NL2"])
def test_indicators_match_the_model(reader: duckdb.DuckDBPyConnection, model: Model, delivery: str) -> None:
    got = delivery_indicators(reader, delivery).to_pylist()
    assert got == [model.indicators(delivery)]


def test_indicators_have_the_issue_field_names(reader: duckdb.DuckDBPyConnection) -> None:
    names = delivery_indicators(reader, "NL1").column_names
    assert names == ["delivery", "label", "subject", "sent_at", *metrics.INDICATORS]


def test_indicators_within_a_window(reader: duckdb.DuckDBPyConnection, model: Model) -> None:
    since, until = dt.datetime(2026, 11, 3, 9, 7), dt.datetime(2026, 11, 3, 11, 0)
    got = delivery_indicators(reader, "NL1", Window(since, until)).to_pylist()
    assert got == [model.indicators("NL1", since, until)]


def test_hand_checked_figures(reader: duckdb.DuckDBPyConnection) -> None:
    """A few figures worked out by hand from conftest's comments, as a check on the model."""
    row = delivery_indicators(reader, "NL1").to_pylist()[0]
    assert (
        row["opens_unique"] == 6
    )  # r1 r2 r3 (click) r4 (mirror) r5 (unchecked open) r6; not r5's POST alone
    # r1 hero shoes hero blog, r2 blog and shoes (android), r3 hero; out: the trap clicks, r2's
    # shoes click 4 s before its trap click, r5's scanner burst, r2's HEAD, 404, unsigned, orphans
    assert row["clicks_total"] == 7
    assert row["persons_clicked"] == 4  # u1, (ip2, chrome), (ip9, android), u3
    assert row["forwards_estimate"] == 1
    # r4 and r5's POSTs; r4's opt-out link (r5's, seconds after the send and unopened, is a bot's)
    assert row["unsubscribes"] == 2 and row["optout_clicks"] == 1
    assert (row["rejected_hits"], row["failed_hits"]) == (2, 2)
    # r4's two MPP opens; the 2 trap clicks, r2's shoes by the trap, r5's 3, r2's HEAD
    assert (row["machine_opens"], row["bot_clicks"]) == (2, 7)


def test_orphans_are_counted_per_delivery_id(reader: duckdb.DuckDBPyConnection, model: Model) -> None:
    counts = {
        r["delivery_id"]: r for r in reader.sql("SELECT * FROM orphan_counts").to_arrow_table().to_pylist()
    }
    expected: dict[str, int] = {}
    for h in model.orphans():
        expected[h.delivery] = expected.get(h.delivery, 0) + 1
    assert {k: v["orphan_hits"] for k, v in counts.items()} == expected
    assert counts["NL1"]["unknown_recipient"] == 1 and counts["NL1"]["unknown_link"] == 1
    assert counts["NL9"]["unknown_delivery"] == 1 and counts["NL9"]["delivery_known"] is False


def test_hits_before_their_manifest_resolve_once_it_is_stored(
    tmp_path: Path, dataset: DataSet, model: Model
) -> None:
    db = build_db(tmp_path / "late.duckdb", dataset, manifests=False)
    with open_writer(db) as con:
        derived.sync(con)
        assert con.execute("SELECT count(*) FROM events").fetchall() == [(0,)]
        accepted = [h for h in dataset.hits if model.accepted(h)]
        orphan_total = con.execute("SELECT sum(orphan_hits) FROM orphan_counts").fetchall()[0][0]
        # before the manifests every accepted hit is an orphan (trap clicks too: nothing says
        # trap yet, nor when the message was sent), but for the 9 that need no manifest to be
        # machines': r4's 2 MPP opens, r5's 3-link burst, 2 HEADs, the scanner's and the HTTP
        # library's agents
        assert orphan_total == len(accepted) - 9
        store_manifests(con, dataset)
        derived.sync(con)
        assert delivery_indicators(con, "NL1").to_pylist() == [model.indicators("NL1")]


def test_views_are_persistent_and_readers_use_them(tracking_db: Path) -> None:
    """The views are created once by the writer that brings the derived tables up to date;
    a reader opens them as they are (no views are created per report)."""
    with open_writer(tracking_db) as con:
        derived.sync(con)
    con = duckdb.connect(str(tracking_db), read_only=True)
    try:
        assert derived.is_current(con)
        persistent = {
            r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT temporary").fetchall()
        }
        assert set(metrics.views("hit_facts")) <= persistent
        assert not con.execute(
            "SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal"
        ).fetchall()
    finally:
        con.close()


def test_unknown_status_counts_and_4xx_does_not(tmp_path: Path, dataset: DataSet) -> None:
    sent = dt.datetime(2026, 11, 3, 9, 0)
    hits = [Hit("NL1", "r1", "open", sent, status=399), Hit("NL1", "r2", "open", sent, status=400)]
    db = build_db(tmp_path / "s.duckdb", DataSet(dataset.deliveries, hits))
    with open_writer(db) as con:
        con.execute("UPDATE hits SET status = NULL WHERE recipient_id = 'r1'")
        derived.sync(con)
        row = delivery_indicators(con, "NL1").to_pylist()[0]
    assert (row["opens_total"], row["failed_hits"]) == (1, 1)


_MEMORY = duckdb.connect()


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_percentages_round_half_up_like_the_model(num: int, den: int) -> None:
    sql = f"SELECT {metrics.pct_sql('t.num', 't.den')} FROM (SELECT CAST(? AS BIGINT) AS num, CAST(? AS BIGINT) AS den) t"
    got = _MEMORY.execute(sql, [num, den]).fetchall()[0][0]
    assert got == half_up_tenths(100 * num, den)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=12))
def test_shares_add_up_to_100_and_stay_within_a_tenth(values: list[int]) -> None:
    rows = " UNION ALL ".join(f"SELECT {k} AS k, CAST({n} AS BIGINT) AS n" for k, n in enumerate(values))
    sql = metrics.with_shares_sql(rows, ["k", "n"], "n", "k") + " ORDER BY k"
    shares = [r[2] for r in _MEMORY.execute(sql).fetchall()]
    total = sum(values)
    if total == 0:
        assert shares == [0.0] * len(values)
        return
    assert sum(round(s * 10) for s in shares) == 1000
    for share, n in zip(shares, values, strict=True):
        assert abs(Fraction(share).limit_denominator(10) - Fraction(100 * n, total)) < Fraction(1, 10)
