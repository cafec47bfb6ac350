"""`tracklog export`: the files of each kind against an independent computation over the test
data set, a golden file, byte-identical reruns, a real SIGKILL in the middle, path escapes, the
Parquet tree read back as one Hive-partitioned table, and the pushdown of the day's filter.

Golden files: tests/golden/export/; regenerate with TRACKLOG_REGEN_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner, Result
from conftest import Delivery, Hit, Model, build_db, make_dataset, store_hits

from tracklog import derived
from tracklog.cli import cli
from tracklog.errors import ExitCode
from tracklog.export import KINDS, day_window, kind_query
from tracklog.store import ROW_GROUP_SIZE, open_writer

GOLDEN = Path(__file__).parent / "golden" / "export"
REGEN = os.environ.get("TRACKLOG_REGEN_GOLDEN") == "1"
DAY = dt.date(2026, 11, 3)
EMPTY_DAY = dt.date(2026, 11, 10)
DAYS = (dt.date(2026, 11, 3), dt.date(2026, 11, 4), dt.date(2026, 12, 1), dt.date(2026, 12, 2))
HOSTILE_LABEL = '=HYPERLINK("http://evil.example/","Totals, 2026")'
NL3_SENT = dt.datetime(2026, 11, 3, 20, 0)


def export_dataset() -> Any:
    """The conftest data set plus a delivery whose label and link are written to hurt a CSV or a
    spreadsheet (quotes, commas, a formula, a leading @ and -)."""
    data = make_dataset()
    data.deliveries.append(
        Delivery(
            "NL3",
            HOSTILE_LABEL,
            NL3_SENT,
            "-1+2",
            None,
            [("x", "https://shop.example.com/a?b=1,2", "@SUM(A1:A9)", None)],
            [("r1", "jane@example.com", "sent"), ("r9", '"quoted"@example.com', "sent")],
        )
    )
    data.hits += [
        Hit("NL3", "r9", "click", NL3_SENT + dt.timedelta(minutes=5), "x", ua="+cmd", ip="198.51.100.7"),
        Hit("NL3", "r9", "unsubscribe", NL3_SENT + dt.timedelta(minutes=6), method="POST", ip="192.0.2.1"),
        Hit("NL3", "r1", "open", NL3_SENT + dt.timedelta(minutes=7)),
    ]
    return data


@pytest.fixture
def data() -> Any:
    return export_dataset()


@pytest.fixture
def xmodel(data: Any) -> Model:
    return Model(data)


@pytest.fixture
def db(tmp_path: Path, data: Any) -> Path:
    return build_db(tmp_path / "export.duckdb", data)


def run(db: Path, *args: str, env: dict[str, str | None] | None = None) -> Result:
    base: dict[str, str | None] = {"TRACKLOG_CONFIG": "", "TRACKLOG_DB": None, "TRACKLOG_TZ": None}
    return CliRunner().invoke(
        cli, ["--db", str(db), *args], env={**base, **(env or {})}, catch_exceptions=False
    )


def ok(db: Path, *args: str) -> Result:
    result = run(db, *args)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == "" or args[0] != "export"  # an export prints nothing
    return result


def files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# --- the independent computation: rows as the CSV must hold them -------------------------------


def iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def csv_cell(v: Any) -> str:
    """A value as the export's CSV writes it (pyarrow: text always quoted, NULL empty)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, dt.datetime):
        v = iso(v)
    return '"' + str(v).replace('"', '""') + '"'


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    return "".join(",".join(csv_cell(v) for v in r) + "\n" for r in [header, *rows]).replace(
        ",".join(csv_cell(v) for v in header), ",".join(f'"{h}"' for h in header), 1
    )


def nulls_last(row: list[Any]) -> list[tuple[bool, Any]]:
    return [(v is None, "" if v is None else v) for v in row]


def day_events(model: Model, day: dt.date) -> list[Hit]:
    start = dt.datetime.combine(day, dt.time())
    return model.events(since=start, until=start + dt.timedelta(days=1))


EVENT_HEADER = [
    "time",
    "type",
    "delivery_id",
    "delivery_label",
    "recipient_id",
    "link_id",
    "link_label",
    "link_url",
    "class",
    "reasons",
]


def day_machine_hits(model: Model, day: dt.date) -> list[Hit]:
    """The machines' hits of manifest recipients that day (the classifier's rules, by hand)."""
    start = dt.datetime.combine(day, dt.time())
    return [
        h
        for h in model.data.hits
        if model.hit_class(h) not in (None, "human")
        and model.resolves_recipient(h)
        and start <= h.ts < start + dt.timedelta(days=1)
    ]


def expected_events(model: Model, day: dt.date, whole_seconds: bool = False) -> list[list[Any]]:
    """The events file of `day`; `whole_seconds` when the log had no finer times ($time_local),
    so that two hits of one second sort as the database stores them."""
    rows = []
    for h in [*day_events(model, day), *day_machine_hits(model, day)]:
        d = model.by_id[h.delivery]
        link = next((lk for lk in d.links if lk[0] == h.link), None) if h.kind == "click" else None
        rows.append(
            [
                h.ts.replace(microsecond=0) if whole_seconds else h.ts,
                model.event_type(h),
                h.delivery,
                d.label,
                h.recipient,
                h.link if link else None,
                link[2] if link else None,
                link[1] if link else None,
                model.hit_class(h),
                ",".join(model.reasons(h)) or None,
            ]
        )
    return sorted(rows, key=nulls_last)


RECIPIENT_HEADER = [
    "delivery_id",
    "recipient_id",
    "opened",
    "clicked",
    "first_open",
    "first_click",
    "clicks",
    "opted_out",
    "unsubscribed",
]


def expected_recipients(model: Model, day: dt.date) -> list[list[Any]]:
    by_reader: dict[tuple[str, str], list[Hit]] = {}
    for h in day_events(model, day):
        by_reader.setdefault((h.delivery, h.recipient), []).append(h)
    rows = []
    for (delivery, recipient), hits in sorted(by_reader.items()):
        types = [(model.event_type(h), h.ts) for h in hits]
        opening = [t for k, t in types if k in ("open", "click", "mirror", "optout")]
        clicks = [t for k, t in types if k == "click"]
        rows.append(
            [
                delivery,
                recipient,
                bool(opening),
                bool(clicks),
                min(opening, default=None),
                min(clicks, default=None),
                len(clicks),
                any(k == "optout" for k, _ in types),
                any(k == "unsubscribe" for k, _ in types),
            ]
        )
    return rows


UNSUBSCRIBE_HEADER = ["recipient_id", "email", "delivery_id", "time", "method"]


def expected_unsubscribes(model: Model, day: dt.date) -> list[list[Any]]:
    first: dict[tuple[str, str, str], dt.datetime] = {}
    for h in day_events(model, day):
        kind = model.event_type(h)
        if kind in ("unsubscribe", "optout"):
            key = (h.delivery, h.recipient, "one-click" if kind == "unsubscribe" else "opt-out-link")
            first[key] = min(first.get(key, h.ts), h.ts)
    emails = {(d.delivery_id, r[0]): r[1] for d in model.data.deliveries for r in d.recipients}
    rows = [[r, emails[(d, r)], d, t, m] for (d, r, m), t in first.items()]
    return sorted(rows, key=lambda x: (x[3], x[2], x[0], x[4]))


def expected_deliveries(model: Model, day: dt.date) -> tuple[list[str], list[list[Any]]]:
    start = dt.datetime.combine(day, dt.time())
    until = start + dt.timedelta(days=1)
    active = sorted(
        {h.delivery for h in model.data.hits if start <= h.ts < until and h.delivery in model.by_id}
    )
    figures = [model.indicators(d, start, until) for d in active]
    header = list(figures[0]) if figures else []
    return header, [list(f.values()) for f in figures]


# --- the tests --------------------------------------------------------------------------------


def test_each_kind_of_a_day_is_the_independent_computation(db: Path, xmodel: Model, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for day in DAYS:
        ok(db, "export", "--out", str(out), "--date", day.isoformat())
        part = f"date={day.isoformat()}"
        got = {k: (out / k / part / f"{k}.csv").read_text(encoding="utf-8") for k in KINDS}
        assert got["events"] == csv_text(EVENT_HEADER, expected_events(xmodel, day))
        assert got["recipients"] == csv_text(RECIPIENT_HEADER, expected_recipients(xmodel, day))
        assert got["unsubscribes"] == csv_text(UNSUBSCRIBE_HEADER, expected_unsubscribes(xmodel, day))
        header, rows = expected_deliveries(xmodel, day)
        assert got["deliveries"] == csv_text(header, rows)
    # the data set has events of every kind and both ways of unsubscribing on the day checked
    assert {r[1] for r in expected_events(xmodel, DAY)} == {
        "open",
        "click",
        "mirror",
        "optout",
        "unsubscribe",
    }
    assert len(expected_unsubscribes(xmodel, DAY)) == 4


def test_golden_csv_of_a_day(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ok(db, "export", "--out", str(out), "--date", DAY.isoformat())
    for kind in KINDS:
        got = (out / kind / f"date={DAY}" / f"{kind}.csv").read_bytes()
        golden = GOLDEN / f"{kind}-{DAY}.csv"
        if REGEN:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_bytes(got)
        assert got == golden.read_bytes(), kind
    text = (GOLDEN / f"events-{DAY}.csv").read_text(encoding="utf-8")
    assert "\r" not in text and text.endswith("\n")
    assert '"=HYPERLINK(""http://evil.example/"",""Totals, 2026"")"' in text  # RFC 4180 quoting


def test_deliveries_are_the_report_figures_of_the_day(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ok(db, "export", "--out", str(out), "--date", DAY.isoformat(), "--what", "deliveries")
    rows = list(
        csv.DictReader(io.StringIO((out / "deliveries" / f"date={DAY}" / "deliveries.csv").read_text()))
    )
    assert [r["delivery"] for r in rows] == ["NL1", "NL3"]
    listed = json.loads(ok(db, "report", "deliveries", "--format", "json").stdout)
    for row in rows:
        report = json.loads(
            ok(
                db,
                "report",
                "delivery",
                row["delivery"],
                "--since",
                str(DAY),
                "--until",
                str(DAY),
                "--format",
                "json",
            ).stdout
        )
        assert list(row) == list(report)
        assert row == {
            k: "" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))
            for k, v in report.items()
        }
        # NL3's hits all fall on DAY, so its all-time row of `report deliveries` is the day's
        if row["delivery"] == "NL3":
            all_time = next(d for d in listed if d["delivery"] == "NL3")
            assert {k: row[k] for k in all_time} == {
                k: f"{v:.1f}" if isinstance(v, float) else str(v) for k, v in all_time.items()
            }


def test_rerun_is_byte_identical_and_a_later_export_replaces_the_day(db: Path, tmp_path: Path) -> None:
    for fmt in ("csv", "parquet"):
        a, b = tmp_path / f"a-{fmt}", tmp_path / f"b-{fmt}"
        for out in (a, b, a):  # a second run into the same folder too
            ok(
                db,
                "export",
                "--out",
                str(out),
                "--since",
                "2026-11-02",
                "--until",
                "2026-11-05",
                "--format",
                fmt,
            )
        assert files_of(a) == files_of(b)
        assert len([n for n in files_of(a) if not n.startswith(".")]) == 4 * 4
    before = (tmp_path / "a-csv" / "events" / f"date={DAY}" / "events.csv").read_text()
    late = Hit("NL1", "r5", "open", dt.datetime(2026, 11, 3, 23, 59, 59), ip="198.51.100.55")
    with open_writer(db) as con:
        store_hits(con, [late])
    ok(db, "export", "--out", str(tmp_path / "a-csv"), "--date", str(DAY), "--what", "events")
    after = (tmp_path / "a-csv" / "events" / f"date={DAY}" / "events.csv").read_text()
    assert after.splitlines()[:-1] == before.splitlines()
    assert after.splitlines()[-1].startswith('"2026-11-03T23:59:59Z","open","NL1"')
    assert len(after.splitlines()) == len(before.splitlines()) + 1


def test_an_empty_day_writes_header_only_files(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ok(db, "export", "--out", str(out), "--date", str(EMPTY_DAY))
    part = f"date={EMPTY_DAY}"
    assert (out / "events" / part / "events.csv").read_text() == ",".join(
        f'"{c}"' for c in EVENT_HEADER
    ) + "\n"
    assert (out / "unsubscribes" / part / "unsubscribes.csv").read_text().count("\n") == 1
    ok(db, "export", "--out", str(out), "--date", str(EMPTY_DAY), "--format", "parquet")
    con = duckdb.connect()
    rel = con.sql(
        "SELECT * FROM read_parquet(?, hive_partitioning = false)",
        params=[str(out / "events" / part / "events.parquet")],
    )
    assert rel.columns == EVENT_HEADER and rel.fetchall() == []


def _as_text(con: duckdb.DuckDBPyConnection, source: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Every row of `source` with each column as the CSV writes it."""
    rel = con.sql(f"SELECT * FROM {source}", params=params)
    cols = []
    for name, typ in zip(rel.columns, rel.types, strict=True):
        col = f'"{name}"'
        t = str(typ)
        if t.startswith("TIMESTAMP"):
            cols.append(f"strftime({col}, '%Y-%m-%dT%H:%M:%SZ')")
        elif t == "DOUBLE":
            cols.append(f"CAST(CAST({col} AS DECIMAL(18, 1)) AS VARCHAR)")
        elif t == "BOOLEAN":
            cols.append(f"CASE WHEN {col} THEN 'true' WHEN NOT {col} THEN 'false' END")
        else:
            cols.append(f"CAST({col} AS VARCHAR)")
    return sorted(
        con.sql(f"SELECT {', '.join(cols)} FROM {source}", params=params).fetchall(),
        key=lambda r: [(v is None, v or "") for v in r],
    )


def test_parquet_tree_reads_back_as_one_hive_table_with_the_csv_rows(db: Path, tmp_path: Path) -> None:
    for first, last in (("2026-11-02", "2026-11-05"), ("2026-12-01", "2026-12-02")):
        span = ["--since", first, "--until", last]
        ok(db, "export", "--out", str(tmp_path / "p"), *span, "--format", "parquet")
        ok(db, "export", "--out", str(tmp_path / "c"), *span)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for kind in KINDS:
        pq_rows = _as_text(
            con, "read_parquet(?, hive_partitioning = true)", [str(tmp_path / "p" / kind / "*" / "*.parquet")]
        )
        csv_rows = _as_text(
            con,
            "read_csv(?, hive_partitioning = true, all_varchar = true, header = true)",
            [str(tmp_path / "c" / kind / "*" / "*.csv")],
        )
        assert pq_rows == csv_rows, kind
        assert pq_rows, kind
    types = dict(
        con.sql(
            "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning = true))",
            params=[str(tmp_path / "p" / "events" / "*" / "*.parquet")],
        ).fetchall()
    )
    assert types["time"] == "TIMESTAMP WITH TIME ZONE" and types["date"] == "DATE"
    meta = con.sql(
        "SELECT DISTINCT compression FROM parquet_metadata(?)",
        params=[str(tmp_path / "p" / "events" / "*" / "*.parquet")],
    ).fetchall()
    assert meta == [("ZSTD",)]


def test_excel_safe_neutralises_formula_cells_only_on_request(db: Path, tmp_path: Path) -> None:
    exact, safe = tmp_path / "exact", tmp_path / "safe"
    ok(db, "export", "--out", str(exact), "--date", str(DAY))
    ok(db, "export", "--out", str(safe), "--date", str(DAY), "--excel-safe")
    part = f"date={DAY}"
    for kind in KINDS:
        raw = list(csv.reader(io.StringIO((exact / kind / part / f"{kind}.csv").read_text())))
        fixed = list(csv.reader(io.StringIO((safe / kind / part / f"{kind}.csv").read_text())))
        assert len(raw) == len(fixed)
        for r, f in zip(raw, fixed, strict=True):
            assert f == ["'" + c if c[:1] in ("=", "+", "-", "@", "\t", "\r") else c for c in r]
    events = (safe / "events" / part / "events.csv").read_text()
    assert "\"'=HYPERLINK(" in events and '"\'@SUM(A1:A9)"' in events
    # the same rule on a report's CSV
    report = ok(db, "report", "deliveries", "--format", "csv", "--excel-safe").stdout
    assert "'=HYPERLINK(" in report and "\n=" not in report and ",=" not in report
    assert "=HYPERLINK(" in ok(db, "report", "deliveries", "--format", "csv").stdout


def test_sigkill_mid_export_leaves_old_files_and_the_next_run_cleans_up(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ok(db, "export", "--out", str(out), "--date", str(DAY))
    before = files_of(out)
    part = out / "events" / f"date={DAY}"
    env = {**os.environ, "TRACKLOG_CONFIG": "", "TRACKLOG_FAULT_SLEEP_BEFORE_RENAME": "60"}
    env.pop("TRACKLOG_DB", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracklog", "--db", str(db), "export", "--out", str(out), "--date", str(DAY)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (part / ".events.csv.tmp").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (part / ".events.csv.tmp").exists()  # the leftover of the killed run
    assert {k: v for k, v in files_of(out).items() if not k.endswith(".tmp")} == before  # old files whole
    ok(db, "export", "--out", str(out), "--date", "2026-11-04", "--what", "recipients")  # another day
    assert not [p for p in out.rglob("*.tmp")]
    ok(db, "export", "--out", str(out), "--date", str(DAY))
    assert {k: v for k, v in files_of(out).items() if k in before} == before


def test_symlinks_and_bad_dates_never_lead_out_of_out(db: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.csv").write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    # a kind folder that is a symlink to a folder outside
    (out / "events").symlink_to(outside)
    result = run(db, "export", "--out", str(out), "--date", str(DAY), "--what", "events")
    assert result.exit_code == ExitCode.DATA_ERROR
    assert "symlink" in result.stderr and result.stderr.count("\n") == 1
    assert sorted(p.name for p in outside.iterdir()) == ["victim.csv"]
    (out / "events").unlink()
    # a partition folder that is a symlink
    (out / "events").mkdir()
    (out / "events" / f"date={DAY}").symlink_to(outside)
    result = run(db, "export", "--out", str(out), "--date", str(DAY), "--what", "events")
    assert result.exit_code == ExitCode.DATA_ERROR
    assert sorted(p.name for p in outside.iterdir()) == ["victim.csv"]
    (out / "events" / f"date={DAY}").unlink()
    # a symlink where the file (or its temporary name) goes is replaced, never followed
    (out / "events" / f"date={DAY}").mkdir()
    (out / "events" / f"date={DAY}" / "events.csv").symlink_to(outside / "victim.csv")
    (out / "events" / f"date={DAY}" / ".events.csv.tmp").symlink_to(outside / "victim.csv")
    ok(db, "export", "--out", str(out), "--date", str(DAY), "--what", "events")
    assert (outside / "victim.csv").read_text() == "precious\n"
    final = out / "events" / f"date={DAY}" / "events.csv"
    assert not final.is_symlink() and final.read_text().startswith('"time"')
    # dates are parsed: nothing else becomes a folder name
    for bad in ("../../outside", "2026-11-3", "2026-13-01", "2026-11-03/..", "yesterday"):
        result = run(db, "export", "--out", str(out), "--date", bad)
        assert result.exit_code == ExitCode.USAGE_ERROR, bad
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    # --out that cannot be a folder
    (tmp_path / "a-file").write_text("x")
    result = run(db, "export", "--out", str(tmp_path / "a-file"), "--date", str(DAY))
    assert result.exit_code == ExitCode.USAGE_ERROR and "is a file" in result.stderr
    result = run(db, "export", "--out", str(tmp_path / "a-file" / "sub"), "--date", str(DAY))
    assert result.exit_code == ExitCode.DATA_ERROR
    assert result.stderr.startswith("Error: --out ") and result.stderr.count("\n") == 1


def test_days_options(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        run(db, "export", "--out", str(out), "--date", str(DAY), "--yesterday").exit_code
        == ExitCode.USAGE_ERROR
    )
    assert run(db, "export", "--out", str(out), "--since", str(DAY)).exit_code == ExitCode.USAGE_ERROR
    assert (
        run(db, "export", "--out", str(out), "--since", "2026-11-05", "--until", "2026-11-04").exit_code == 2
    )
    # --yesterday (the default) is yesterday's date in the configured zone: at 23:30 UTC it is
    # already tomorrow in Tokyo, so "yesterday" there is today's UTC date
    now = dt.datetime.now(dt.UTC)
    ok(db, "export", "--out", str(out / "utc"), "--what", "events")
    names = {p.parent.name for p in (out / "utc").rglob("events.csv")}
    assert names <= {f"date={now.date() - dt.timedelta(days=d)}" for d in (0, 1)}  # midnight race
    result = run(db, "export", "--out", str(out / "bad"), env={"TRACKLOG_TZ": "Mars/Olympus"})
    assert result.exit_code == ExitCode.CONFIG_ERROR and "Mars/Olympus" in result.stderr


def test_a_days_queries_skip_the_row_groups_of_other_days(tmp_path: Path) -> None:
    """Three days of 125,000 hits each, stored in time order as a log appends them: the queries
    of the middle day scan the row groups of `hits` that hold it (tracklog's writer stores
    groups of store.ROW_GROUP_SIZE rows), not those that hold only the other days."""
    path = build_db(tmp_path / "big.duckdb", make_dataset(), hits=False)
    with derived.open_reader(path, wait=10):
        pass  # the views and derived tables, created once
    with open_writer(path) as con:
        # resolved as an ingest would have, so that the raw reader below sees them as events
        con.execute(
            """INSERT INTO hits (source_id, line_no, byte_offset, ts, ip, method, kind, delivery_id,
                recipient_id, sig_status, resolution)
            SELECT 2, i, 0, TIMESTAMP '2026-11-10 00:00:00' + to_microseconds(i * 691200),
                '198.51.100.1', 'GET', CASE WHEN i % 100 = 0 THEN 'unsubscribe' ELSE 'open' END, 'NL1',
                'r1', 'valid', 'event'
            FROM range(375000) t(i)"""
        )
    # rows 125,000 to 249,999 are the middle day's (0.6912 s apart: 125,000 a day)
    all_groups = -(-375_000 // ROW_GROUP_SIZE)
    middle_day_groups = 249_999 // ROW_GROUP_SIZE - 125_000 // ROW_GROUP_SIZE + 1
    assert middle_day_groups < all_groups
    con = duckdb.connect(str(path), read_only=True)
    since, until = day_window(dt.date(2026, 11, 11))
    for kind in KINDS:
        sql, params = kind_query(kind, since, until)
        assert con.execute(f"SELECT count(*) FROM ({sql}) q", params).fetchall()[0][0] > 0, kind
        plan = con.execute("EXPLAIN ANALYZE " + sql, params).fetchall()[0][1]
        scans = re.findall(r"Table: \S*main\.hits.*?Row Groups Scanned: (\d+) / (\d+)", plan, re.DOTALL)
        assert scans, kind
        for scanned, groups in scans:
            assert (int(scanned), int(groups)) == (middle_day_groups, all_groups), kind


def test_a_second_export_into_the_same_folder_waits_then_exits_3(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ok(db, "export", "--out", str(out), "--date", str(DAY), "--what", "deliveries")
    fd = os.open(out / ".tracklog-export.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running export holds it
        result = run(db, "export", "--out", str(out), "--date", str(DAY), "--wait", "0.2")
        assert result.exit_code == ExitCode.LOCK_BUSY
        assert "another export" in result.stderr and result.stderr.count("\n") == 1
    finally:
        os.close(fd)
    ok(db, "export", "--out", str(out), "--date", str(DAY), "--wait", "0")
