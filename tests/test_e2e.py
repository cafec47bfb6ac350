"""End to end through the real CLI: signed log lines and manifests in real files, ingested into a
real DuckDB file, then read back with `tracklog recipient`, `tracklog status` and
`tracklog report delivery`. Every expected figure is worked out by hand from the lines written
here (the arithmetic is in the comments), never by the SQL under test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner, Result
from logmaker import ISSUE4_FIELDS, SECRET, line, sig

from tracklog.cli import cli
from tracklog.schema import HIT_COLUMNS

# The JSON field names of the Tracking indicators, as listed in issue 4 (plus the delivery's own
# id, label, subject and sent date, which the report shows too).
HEADER_FIELDS = ["delivery", "label", "subject", "sent_at"]

HERO = "https://shop.example.com/sale"
SHOES = "https://shop.example.com/p/shoes"
LINKS = [
    {"id": "hero", "url": HERO, "label": "Hero banner", "category": "promo"},
    {"id": "shoes", "url": SHOES, "label": "Shoes"},
    {"id": "trap", "url": "https://t.example.com/x", "label": "hidden", "category": "trap"},
]


def ts(minute: int, hour: int = 9) -> str:
    return f"03/Nov/2026:{hour:02d}:{minute:02d}:00 +0000"


def iso(minute: int, hour: int = 9) -> str:
    return f"2026-11-03T{hour:02d}:{minute:02d}:00Z"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # TRACKLOG_CONFIG="" falls back to ./tracklog.toml: work where there is none.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "e2e.duckdb"


def run(db: Path, *args: str) -> Result:
    env = {"TRACKLOG_SECRET": SECRET.decode(), "TRACKLOG_CONFIG": "", "TRACKLOG_DB": None}
    return CliRunner().invoke(cli, ["--db", str(db), *args], env=env, catch_exceptions=False)


def ok(db: Path, *args: str) -> Result:
    res = run(db, *args)
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""
    return res


def as_json(db: Path, *args: str) -> Any:
    res = ok(db, *args, "--format", "json")
    return json.loads(res.stdout)


def indicators(db: Path, delivery: str) -> dict[str, Any]:
    return as_json(db, "report", "delivery", delivery)


def orphans(db: Path) -> dict[str, dict[str, Any]]:
    data = as_json(db, "status")
    return {row["delivery_id"]: row for row in data["orphans"]}


def q(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def hit_rows(db: Path) -> list[tuple[Any, ...]]:
    """The hits as logged (not their resolution against the manifests, which a manifest changes)."""
    return q(db, f"SELECT path, {', '.join(HIT_COLUMNS)} FROM hits ORDER BY source_id, line_no")


def write_log(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_manifest(
    path: Path,
    delivery: str = "NL1",
    *,
    label: str = "November newsletter",
    links: list[dict[str, str]] | None = None,
    recipients: list[dict[str, str]] | str | None = None,
    sent_at: str = "2026-11-03T09:00:00Z",
) -> Path:
    doc = {
        "delivery": delivery,
        "label": label,
        "sent_at": sent_at,
        "subject": "Our November picks",
        "links": LINKS if links is None else links,
        "recipients": recipients
        if recipients is not None
        else [{"recipient_id": f"r{i}"} for i in (1, 2, 3, 4)],
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# --- (a) hits before their manifest ---------------------------------------------------------


def test_hits_ingested_before_their_manifest_resolve_without_reingest(tmp_path: Path, db: Path) -> None:
    log = write_log(
        tmp_path / "access.log",
        [
            line("/o/NL1/r1.gif", ts=ts(15)),
            line("/c/NL1/hero/r1", status=302, ts=ts(16)),
            line("/c/NL1/shoes/r1", status=302, ts=ts(20)),
            line("/m/NL1/r1", ts=ts(30)),
            line("/o/NL1/r2.gif", ts=ts(40)),
        ],
    )
    ok(db, "ingest", str(log))
    assert q(db, "SELECT count(*) FROM hits") == [(5,)]

    # no manifest yet: r1 is in no delivery, a clear message and exit 4 (not found)
    res = run(db, "recipient", "r1", "--format", "json")
    assert res.exit_code == 4
    assert res.stdout == ""
    assert res.stderr.startswith("Error: ") and "r1" in res.stderr
    assert res.stderr.count("\n") == 1

    hits_before = hit_rows(db)
    manifest = write_manifest(tmp_path / "nl1.json")
    ok(db, "ingest", "--manifest", str(manifest))  # the log is not given again
    assert hit_rows(db) == hits_before
    assert q(db, "SELECT count(*) FROM sources") == [(1,)]

    events = as_json(db, "recipient", "r1")
    # newest first: mirror 09:30, click shoes 09:20, click hero 09:16, open 09:15
    assert events == [
        {"ts": iso(30), "type": "mirror", "class": "human", "reasons": None, "delivery": "NL1", "delivery_label": "November newsletter",
         "link_id": None, "label": None, "url": None, "amount": None, "currency": None},
        {"ts": iso(20), "type": "click", "class": "human", "reasons": None, "delivery": "NL1", "delivery_label": "November newsletter",
         "link_id": "shoes", "label": "Shoes", "url": SHOES, "amount": None, "currency": None},
        {"ts": iso(16), "type": "click", "class": "human", "reasons": None, "delivery": "NL1", "delivery_label": "November newsletter",
         "link_id": "hero", "label": "Hero banner", "url": HERO, "amount": None, "currency": None},
        {"ts": iso(15), "type": "open", "class": "human", "reasons": None, "delivery": "NL1", "delivery_label": "November newsletter",
         "link_id": None, "label": None, "url": None, "amount": None, "currency": None},
    ]  # fmt: skip
    # the delivery resolves too: opens r1 + r2 = 2, clicks hero + shoes = 2 by r1 only
    ind = indicators(db, "NL1")
    assert (ind["opens_total"], ind["opens_unique"], ind["clicks_total"], ind["clicks_unique"]) == (
        2,
        2,
        2,
        1,
    )
    assert ind["mirror_views"] == 1
    assert orphans(db) == {}


def test_report_fields_are_exactly_those_of_issue_4(tmp_path: Path, db: Path) -> None:
    ok(db, "ingest", "--manifest", str(write_manifest(tmp_path / "nl1.json")))
    ind = indicators(db, "NL1")
    assert list(ind) == HEADER_FIELDS + ISSUE4_FIELDS
    # an empty delivery: 4 recipients, nothing else, every rate 0 (denominators 4, 4 and 0)
    assert ind["sent"] == ind["delivered"] == 4
    assert all(ind[k] == 0 for k in ISSUE4_FIELDS if k not in ("sent", "delivered"))
    res = run(db, "report", "delivery", "NOPE", "--format", "json")
    assert (res.exit_code, res.stdout) == (4, "")
    assert "NOPE" in res.stderr and res.stderr.count("\n") == 1


# --- (b) orphans ----------------------------------------------------------------------------


def test_orphans_are_counted_per_delivery_and_never_dropped(tmp_path: Path, db: Path) -> None:
    write_manifest(tmp_path / "nl1.json", recipients=[{"recipient_id": "r1"}, {"recipient_id": "r2"}])
    lines = [
        line("/o/NL1/r1.gif", ts=ts(1)),  # resolves
        line("/o/NL1/r77.gif", ts=ts(2)),  # NL1, unknown recipient
        line("/m/NL1/r88", ts=ts(3)),  # NL1, unknown recipient
        line("/c/NL1/gone/r2", status=302, ts=ts(4)),  # NL1, known recipient, unknown link
        line("/o/NL9/r1.gif", ts=ts(5)),  # NL9: no manifest
        line("/o/NL9/r1.gif", ts=ts(6)),
        line("/c/NL9/hero/r2", status=302, ts=ts(7)),
    ]
    log = write_log(tmp_path / "access.log", lines)
    ok(db, "ingest", "--manifest", str(tmp_path / "nl1.json"), str(log))

    assert q(db, "SELECT count(*) FROM hits") == [(7,)]  # every line stored, orphan or not
    got = orphans(db)
    assert set(got) == {"NL1", "NL9"}
    # NL1: r77 + r88 (unknown recipient) + gone (unknown link) = 3; NL9: 3 hits, delivery unknown
    assert (got["NL1"]["orphan_hits"], got["NL1"]["unknown_recipient"], got["NL1"]["unknown_link"]) == (
        3,
        2,
        1,
    )
    assert (got["NL9"]["orphan_hits"], got["NL9"]["unknown_delivery"]) == (3, 3)
    # only r1's open counts for NL1
    ind = indicators(db, "NL1")
    assert (ind["opens_total"], ind["opens_unique"], ind["clicks_total"], ind["mirror_views"]) == (1, 1, 0, 0)

    # the NL9 manifest arrives: its hits resolve (2 opens of r1, 1 click hero by r2); NL1 unchanged
    nl9 = write_manifest(
        tmp_path / "nl9.json", "NL9", recipients=[{"recipient_id": "r1"}, {"recipient_id": "r2"}]
    )
    ok(db, "ingest", "--manifest", str(nl9))
    got = orphans(db)
    assert set(got) == {"NL1"} and got["NL1"]["orphan_hits"] == 3
    ind = indicators(db, "NL9")
    assert (ind["opens_total"], ind["opens_unique"], ind["clicks_total"], ind["clicks_unique"]) == (
        2,
        2,
        1,
        1,
    )
    assert q(db, "SELECT count(*) FROM hits") == [(7,)]


# --- (c) signatures -------------------------------------------------------------------------


def test_bad_signatures_are_stored_but_never_counted(tmp_path: Path, db: Path) -> None:
    p_open1, p_open2, p_open3 = "/o/NL1/r1.gif", "/o/NL1/r2.gif", "/o/NL1/r3.gif"
    p_hero1, p_hero2, p_shoes3 = "/c/NL1/hero/r1", "/c/NL1/hero/r2", "/c/NL1/shoes/r3"
    good = sig(p_hero2)
    flipped = ("B" if good[5] == "A" else "A").join([good[:5], good[6:]])  # one character changed
    lines = [
        line(p_open1, ts=ts(1)),  # valid
        line(p_open2, query=f"s={sig(p_open2, b'not-the-secret')}", ts=ts(2)),  # forged
        line(p_open3, query=None, ts=ts(3)),  # missing: no query at all
        line(p_hero1, query=f"s={sig(p_hero2)}", status=302, ts=ts(4)),  # r2's signature on r1's URL
        line(p_hero2, query=f"s={flipped}", status=302, ts=ts(5)),  # tampered signature
        line(p_shoes3, status=302, ts=ts(6)),  # valid
        line(p_open1, query=f"s={sig(p_open1)}&utm_source=x", ts=ts(7)),  # valid, extra param not signed
        line(p_open2, query="s=", ts=ts(8)),  # empty signature
        line(p_open3, query="utm_source=x", ts=ts(9)),  # a query without s=
    ]
    log = write_log(tmp_path / "access.log", lines)
    ok(db, "ingest", "--manifest", str(write_manifest(tmp_path / "nl1.json")), str(log))

    assert q(db, "SELECT count(*) FROM hits") == [(9,)]
    assert dict(q(db, "SELECT sig_status, count(*) FROM hits GROUP BY ALL")) == {
        "valid": 3,  # lines 1, 6, 7
        "invalid": 3,  # lines 2, 4, 5
        "missing": 3,  # lines 3, 8, 9
    }
    ind = indicators(db, "NL1")
    assert ind["opens_total"] == 2  # lines 1 and 7 (both r1)
    assert ind["clicks_total"] == 1  # line 6 (r3 shoes)
    assert ind["opens_unique"] == 2  # r1 (opens) and r3 (its click proves the open)
    assert ind["clicks_unique"] == 1
    assert ind["rejected_hits"] == 6  # 3 invalid + 3 missing
    assert ind["failed_hits"] == 0
    sigs = {row["sig_status"]: row["hits"] for row in as_json(db, "status")["signatures"]}
    assert sigs == {"valid": 3, "invalid": 3, "missing": 3}
    # r2 is a known recipient whose every hit was rejected: no events, not an error
    assert as_json(db, "recipient", "r2") == []


# --- (d) HTTP status ------------------------------------------------------------------------


def test_error_statuses_are_not_counted_and_a_304_pixel_is_an_open(tmp_path: Path, db: Path) -> None:
    lines = [
        line("/o/NL1/r1.gif", ts=ts(1)),  # open
        line("/o/NL1/r1.gif", status=304, ts=ts(2)),  # open (cached pixel)
        line("/o/NL1/r2.gif", status=304, ts=ts(3)),  # open
        line("/c/NL1/hero/r1", status=302, ts=ts(4)),  # click
        line("/c/NL1/shoes/r4", status=301, ts=ts(5)),  # click (any 3xx)
        line("/c/NL1/hero/r2", status=404, ts=ts(6)),  # failed
        line("/c/NL1/hero/r3", status=500, ts=ts(7)),  # failed
        line("/o/NL1/r3.gif", status=503, ts=ts(8)),  # failed
        line("/m/NL1/r3", status=404, ts=ts(9)),  # failed
        line("/u/NL1/r3", method="POST", status=400, ts=ts(10)),  # failed
    ]
    log = write_log(tmp_path / "access.log", lines)
    ok(db, "ingest", "--manifest", str(write_manifest(tmp_path / "nl1.json")), str(log))

    assert q(db, "SELECT count(*) FROM hits") == [(10,)]
    ind = indicators(db, "NL1")
    assert ind["opens_total"] == 3  # lines 1, 2, 3
    assert ind["clicks_total"] == 2  # lines 4, 5
    assert ind["clicks_unique"] == 2  # r1, r4
    assert ind["opens_unique"] == 3  # r1, r2 (304), r4 (click); r3 only failed
    assert ind["failed_hits"] == 5  # lines 6-10
    assert (ind["mirror_views"], ind["unsubscribes"], ind["rejected_hits"]) == (0, 0, 0)
    assert ind["open_rate"] == 75.0  # 3 / 4 delivered
    assert ind["click_rate"] == 50.0  # 2 / 4
    assert ind["raw_reactivity"] == 66.7  # 2 / 3 = 66.67 -> 66.7
    assert [e["type"] for e in as_json(db, "recipient", "r3")] == []
    assert [(e["ts"], e["type"]) for e in as_json(db, "recipient", "r2")] == [(iso(3), "open")]


# --- (e) unsubscribe ------------------------------------------------------------------------


def test_one_click_post_is_an_unsubscribe_and_a_get_is_an_optout_and_an_open(
    tmp_path: Path, db: Path
) -> None:
    lines = [
        line("/u/NL1/r1", method="POST", ts=ts(1)),  # r1: one-click only
        line("/u/NL1/r2", ts=ts(2)),  # r2: followed the opt-out link
        line("/u/NL1/r3", method="POST", ts=ts(3)),  # r3: two one-click POSTs and a GET
        line("/u/NL1/r3", method="POST", ts=ts(4)),
        line("/u/NL1/r3", ts=ts(5)),
    ]
    log = write_log(tmp_path / "access.log", lines)
    ok(db, "ingest", "--manifest", str(write_manifest(tmp_path / "nl1.json")), str(log))

    ind = indicators(db, "NL1")
    assert ind["unsubscribes"] == 2  # distinct POSTers: r1, r3
    assert ind["optout_clicks"] == 2  # GETs: r2, r3
    assert ind["opens_unique"] == 2  # r2, r3 (GET); r1's POST is not an open
    assert ind["opens_total"] == 0  # no pixel hit
    assert ind["open_rate"] == 50.0  # 2 / 4
    assert [e["type"] for e in as_json(db, "recipient", "r1")] == ["unsubscribe"]
    assert [e["type"] for e in as_json(db, "recipient", "r2")] == ["optout"]
    assert [e["type"] for e in as_json(db, "recipient", "r3")] == ["optout", "unsubscribe", "unsubscribe"]


# --- (f) re-ingesting a changed manifest ----------------------------------------------------


def manifest_rows(db: Path) -> tuple[list[tuple[Any, ...]], ...]:
    return (
        q(db, "SELECT delivery_id, label, sent_at, subject FROM deliveries ORDER BY ALL"),
        q(db, "SELECT * FROM links ORDER BY ALL"),
        q(db, "SELECT * FROM recipients ORDER BY ALL"),
    )


def test_changed_manifest_replaces_its_data_atomically_and_never_touches_hits(
    tmp_path: Path, db: Path
) -> None:
    v1 = write_manifest(
        tmp_path / "nl1.json",
        label="November v1",
        recipients=[{"recipient_id": r} for r in ("r1", "r2", "r3")],
    )
    other = write_manifest(tmp_path / "nl2.json", "NL2", label="Other")
    lines = [
        line("/o/NL1/r1.gif", ts=ts(1)),
        line("/c/NL1/hero/r1", status=302, ts=ts(2)),
        line("/c/NL1/shoes/r2", status=302, ts=ts(3)),
        line("/o/NL1/r3.gif", ts=ts(4)),
        line("/o/NL2/r4.gif", ts=ts(5)),
    ]
    log = write_log(tmp_path / "access.log", lines)
    ok(db, "ingest", "--manifest", str(v1), "--manifest", str(other), str(log))
    hits = hit_rows(db)
    ind = indicators(db, "NL1")
    # v1: 3 recipients; opens by r1, r2 (click), r3 = 3; clicks hero r1 + shoes r2 = 2
    assert (ind["label"], ind["sent"], ind["opens_unique"], ind["clicks_total"]) == ("November v1", 3, 3, 2)
    nl2_before = q(db, "SELECT * FROM links WHERE delivery_id = 'NL2' ORDER BY ALL")

    # v2: new label, hero moves to a new URL and label, shoes is gone, r3 is gone, r4 and r5 new
    new_hero = "https://shop.example.com/winter-sale"
    write_manifest(
        v1,
        label="November v2",
        links=[{"id": "hero", "url": new_hero, "label": "Hero v2"}],
        recipients=[
            {"recipient_id": "r1"},
            {"recipient_id": "r2"},
            {"recipient_id": "r4"},
            {"recipient_id": "r5", "status": "failed"},
        ],
    )
    ok(db, "ingest", "--manifest", str(v1))
    assert hit_rows(db) == hits
    deliveries, links, recipients = manifest_rows(db)
    assert [d[:2] for d in deliveries] == [("NL1", "November v2"), ("NL2", "Other")]
    assert [(k[1], k[2], k[3], k[4]) for k in links if k[0] == "NL1"] == [("hero", 1, new_hero, "Hero v2")]
    assert [(r[1], r[3]) for r in recipients if r[0] == "NL1"] == [
        ("r1", "sent"),
        ("r2", "sent"),
        ("r4", "sent"),
        ("r5", "failed"),
    ]
    assert q(db, "SELECT * FROM links WHERE delivery_id = 'NL2' ORDER BY ALL") == nl2_before

    ind = indicators(db, "NL1")
    # v2: sent 4, delivered 3 (r5 failed); only r1 resolves now: its open and its hero click;
    # r2's shoes click (unknown link) and r3's open (unknown recipient) became orphans
    assert (ind["label"], ind["sent"], ind["delivered"]) == ("November v2", 4, 3)
    assert (ind["opens_total"], ind["opens_unique"], ind["clicks_total"], ind["clicks_unique"]) == (
        1,
        1,
        1,
        1,
    )
    assert ind["open_rate"] == 33.3  # 1 / 3 = 33.33
    got = orphans(db)["NL1"]
    assert (got["orphan_hits"], got["unknown_recipient"], got["unknown_link"]) == (2, 1, 1)
    click = [e for e in as_json(db, "recipient", "r1") if e["type"] == "click"]
    assert click == [{"ts": iso(2), "type": "click", "class": "human", "reasons": None, "delivery": "NL1", "delivery_label": "November v2",
                      "link_id": "hero", "label": "Hero v2", "url": new_hero, "amount": None, "currency": None}]  # fmt: skip

    # the same manifest again changes nothing
    before = manifest_rows(db)
    ok(db, "ingest", "--manifest", str(v1))
    assert manifest_rows(db) == before

    # v3 is broken (a duplicate recipient, found after the links were read): nothing of it is
    # stored, v2 stays whole
    write_manifest(
        v1,
        label="November v3",
        links=[{"id": "shoes", "url": SHOES}],
        recipients=[{"recipient_id": "r1"}, {"recipient_id": "r1"}],
    )
    res = run(db, "ingest", "--manifest", str(v1))
    assert res.exit_code == 1
    assert res.stdout == ""
    assert str(v1) in res.stderr and "r1" in res.stderr
    assert manifest_rows(db) == before
    assert hit_rows(db) == hits


# --- (g) a bad manifest next to good logs ---------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"sent_at": "03/11/2026"}, "sent_at"),
        ({"recipients": "missing.csv"}, "missing.csv"),
        ({"delivery": "NL 2"}, "delivery"),
    ],
    ids=["bad-date", "missing-recipients-file", "bad-id"],
)
def test_bad_manifest_does_not_stop_the_logs(
    tmp_path: Path, db: Path, change: dict[str, str], expect: str
) -> None:
    good = write_manifest(tmp_path / "nl1.json")
    bad = write_manifest(tmp_path / "nl2.json", "NL2")
    doc = json.loads(bad.read_text())
    bad.write_text(json.dumps({**doc, **change}), encoding="utf-8")
    lines = [
        line("/o/NL1/r1.gif", ts=ts(1)),
        line("/c/NL1/hero/r2", status=302, ts=ts(2)),
        line("/o/NL2/r1.gif", ts=ts(3)),
        line("/favicon.ico", status=404, query=None, ts=ts(4)),
    ]
    log = write_log(tmp_path / "access.log", lines)
    res = run(db, "ingest", "--manifest", str(good), "--manifest", str(bad), str(log))

    assert res.exit_code == 1
    assert res.stdout == ""
    errors = res.stderr.splitlines()
    about_bad = [e for e in errors if "nl2.json" in e]
    assert len(about_bad) == 1, res.stderr
    assert about_bad[0].startswith(f"Error: manifest {bad}: ") and expect in about_bad[0]
    assert all(e.startswith("Error: ") for e in errors)
    assert not any("nl1.json" in e or "access.log" in e for e in errors)
    # the logs went in: 3 tracking hits, the favicon ignored; the good manifest is stored
    assert q(db, "SELECT count(*) FROM hits") == [(3,)]
    assert q(db, "SELECT lines, hits, ignored FROM sources") == [(4, 3, 1)]
    assert q(db, "SELECT delivery_id FROM deliveries") == [("NL1",)]
    assert q(db, "SELECT count(*) FROM recipients WHERE delivery_id <> 'NL1'") == [(0,)]
    # NL1: open r1 + click r2 -> 2 openers; the NL2 hit is an orphan until its manifest is fixed
    ind = indicators(db, "NL1")
    assert (ind["opens_total"], ind["opens_unique"], ind["clicks_total"]) == (1, 2, 1)
    assert orphans(db)["NL2"]["orphan_hits"] == 1
