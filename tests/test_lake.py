"""The lake (`tracklog export --lake`) and DuckDB over it: the files, and every report giving
the same output on the lake as on the database, locally and on S3 (a moto server on
127.0.0.1). The same comparison on Spark is in test_spark.py; the figures themselves are
checked against the independent model here.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from conftest import Model, build_db, make_dataset, skip_or_fail

from tracklog import derived
from tracklog.cli import cli
from tracklog.engines import LAKE_SNAPSHOTS, Connection, duckdb_lake
from tracklog.errors import ExitCode
from tracklog.export import export
from tracklog.render import Section, render_sections
from tracklog.reports import bots, delivery, funnel, hot_clicks, recipient, stats, streams, urls
from tracklog.reports.common import Window, excluded_hits
from tracklog.reports.hot_clicks_html import hot_clicks_page
from tracklog.schema import CLASS_COLUMNS, HIT_COLUMNS, RESOLUTION_COLUMNS

DAYS = (dt.date(2026, 11, 3), dt.date(2026, 11, 4), dt.date(2026, 12, 1), dt.date(2026, 12, 2))
EMPTY_DAY = dt.date(2026, 11, 20)
NOV = Window(dt.datetime(2026, 11, 3, 9, 30), dt.datetime(2026, 11, 4))


def _text(tables: dict[str, Any]) -> str:
    """What a user sees of the tables: the JSON and the CSV of each (render's one output path)."""
    out = io.StringIO()
    for name, table in tables.items():
        if isinstance(table, str):
            out.write(f"{name}\n{table}\n")
            continue
        for fmt in ("json", "csv"):
            render_sections([Section(table, name=name)], fmt, out=out)
    return out.getvalue()


def _hot_clicks_with_page(con: Connection, delivery_id: str) -> dict[str, Any]:
    table = hot_clicks.hot_clicks(con, delivery_id)
    return {"table": table, "page": hot_clicks_page(con, delivery_id, table)}


def one(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[Connection], dict[str, Any]]:
    """A report of one table: fn(con, *args, **kwargs)."""
    return lambda con: {"t": fn(con, *args, **kwargs)}


def both(
    first: Callable[..., Any], second: Callable[..., Any], *args: Any
) -> Callable[[Connection], dict[str, Any]]:
    """A report of two tables (streams, stats): both with the same arguments."""
    return lambda con: {"first": first(con, *args), "second": second(con, *args)}


def footer(*args: Any) -> Callable[[Connection], dict[str, Any]]:
    return lambda con: {"n": json.dumps(excluded_hits(con, *args), sort_keys=True)}


# Every report (each option that changes its query) and the footer of excluded hits.
REPORTS: dict[str, Callable[[Connection], dict[str, Any]]] = {
    "deliveries": one(delivery.deliveries),
    "deliveries-limit": one(delivery.deliveries, limit=1),
    "delivery-NL1": one(delivery.delivery_indicators, "NL1"),
    "delivery-NL2": one(delivery.delivery_indicators, "NL2"),
    "delivery-window": one(delivery.delivery_indicators, "NL1", NOV),
    "hot-clicks-NL1": lambda c: _hot_clicks_with_page(c, "NL1"),
    "hot-clicks-NL2": one(hot_clicks.hot_clicks, "NL2", limit=1),
    "hot-clicks-window": one(hot_clicks.hot_clicks, "NL1", NOV),
    **{f"urls-{by}": one(urls.urls, by) for by in urls.GROUPINGS},
    "urls-delivery-window": one(urls.urls, "url", "NL1", NOV),
    **{f"streams-{d}": both(streams.sequences, streams.transitions, d) for d in ("NL1", "NL2")},
    "streams-window": both(streams.sequences, streams.transitions, "NL1", NOV),
    **{
        f"stats-{b}": lambda c, b=b: {"t": stats.timeline(c, b), "reach": stats.reach(c)}
        for b in stats.BUCKETS
    },
    "stats-delivery-window": lambda c: {
        "t": stats.timeline(c, "1h", "NL1", NOV),
        "reach": stats.reach(c, "NL1", NOV),
    },
    **{f"stats-by-{by}": one(stats.breakdown, by) for by in stats.BREAKDOWNS},
    **{f"stats-by-{by}-NL1-window": one(stats.breakdown, by, "NL1", NOV) for by in stats.BREAKDOWNS},
    "recipient-r1": one(recipient.recipient_events, "r1"),
    "recipient-r2": one(recipient.recipient_events, "r2"),
    "recipient-delivery-window": one(recipient.recipient_events, "r1", "NL1", NOV, limit=3),
    "recipient-r1-humans-only": one(recipient.recipient_events, "r1", humans_only=True),
    "bots": one(bots.classes),
    "bots-NL1-window": one(bots.classes, "NL1", NOV),
    "bots-agents": one(bots.agents, None, Window(), 5),
    "bots-networks": one(bots.networks, None, Window(), 5),
    "funnel-NL1": one(funnel.funnel, "NL1"),
    "funnel-web-NL1": one(funnel.web_indicators, "NL1"),
    "funnel-revenue-NL1": one(funnel.revenue, "NL1"),
    "footer": footer(None, Window()),
    "footer-NL1-window": footer("NL1", NOV),
}


def report_tables(con: Connection, names: Iterable[str] = REPORTS) -> dict[str, dict[str, Any]]:
    return {name: REPORTS[name](con) for name in names}


def outputs_of(tables: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: _text(t) for name, t in tables.items()}


def report_outputs(con: Connection) -> dict[str, str]:
    return outputs_of(report_tables(con))


def write_lake(db: Path, out: Path | str) -> None:
    export(lambda: derived.open_reader(db, 10), out, [*DAYS, EMPTY_DAY], lake=True)


def build_lake(where: Path) -> tuple[Path, Path]:
    """The hand-made data set in a database, and its lake."""
    db = build_db(where / "tracking.duckdb", make_dataset())
    write_lake(db, where / "lake")
    return db, where / "lake"


def outputs_on_the_database(db: Path) -> dict[str, str]:
    with derived.open_reader(db, 10) as con:
        return report_outputs(con)


@pytest.fixture(scope="module")
def lake_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_lake(tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="module")
def store_outputs(lake_db: tuple[Path, Path]) -> dict[str, str]:
    return outputs_on_the_database(lake_db[0])


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# -- the files -------------------------------------------------------------------------------


def test_lake_layout_hits_by_day_without_the_resolution_and_whole_small_tables(
    lake_db: tuple[Path, Path],
) -> None:
    lake = lake_db[1]
    data = make_dataset()
    for day in (*DAYS, EMPTY_DAY):
        table = pq.read_table(lake / "hits" / f"date={day}" / "hits.parquet")
        expected = sorted(h.ts for h in data.hits if h.ts.date() == day)
        assert sorted(t.replace(tzinfo=None) for t in table.column("ts").to_pylist()) == expected
        # the columns of the table `hits`, whatever they are, but the derived resolution
        assert set(HIT_COLUMNS) <= set(table.column_names)
        # the resolution is recomputed on the lake; the classification travels with the hit
        assert not (set(RESOLUTION_COLUMNS) - set(CLASS_COLUMNS)) & set(table.column_names)
        assert set(CLASS_COLUMNS) <= set(table.column_names)
    assert sorted(p.name for p in (lake / "hits").iterdir()) == sorted(
        f"date={d}" for d in (*DAYS, EMPTY_DAY)
    )
    counts = {
        "deliveries": len(data.deliveries),
        "links": sum(len(d.links) for d in data.deliveries),
        "recipients": sum(len(d.recipients) for d in data.deliveries),
    }
    for table_name in LAKE_SNAPSHOTS:
        assert [p.name for p in (lake / table_name).iterdir()] == [f"{table_name}.parquet"]
        table = pq.read_table(lake / table_name / f"{table_name}.parquet")
        if table_name in counts:
            assert table.num_rows == counts[table_name]
    agents = pq.read_table(lake / "user_agent_families" / "user_agent_families.parquet")
    opened_or_clicked = {h.ua for h in Model(data).events() if h.kind in ("open", "click") and h.ua}
    assert set(agents.column("user_agent").to_pylist()) == opened_or_clicked


def test_a_lake_export_again_gives_the_same_bytes(lake_db: tuple[Path, Path], tmp_path: Path) -> None:
    db, lake = lake_db
    write_lake(db, tmp_path / "again")
    first = {p.relative_to(lake): p.read_bytes() for p in lake.rglob("*.parquet")}
    again = {
        p.relative_to(tmp_path / "again"): p.read_bytes() for p in (tmp_path / "again").rglob("*.parquet")
    }
    assert first == again


def test_the_lake_and_the_nightly_files_never_share_a_folder(
    lake_db: tuple[Path, Path], tmp_path: Path
) -> None:
    db, lake = lake_db
    nightly = tmp_path / "nightly"
    assert run("--db", str(db), "export", "--out", str(nightly), "--date", "2026-11-03").exit_code == 0
    for args in (
        ("--out", str(nightly), "--lake"),
        ("--out", str(lake)),
        ("--out", str(tmp_path / "x"), "--lake", "--what", "events"),
    ):
        result = run("--db", str(db), "export", "--date", "2026-11-03", *args)
        assert result.exit_code == ExitCode.USAGE_ERROR, result.output
        assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1


# -- DuckDB on the lake ------------------------------------------------------------------------


def test_every_report_on_the_lake_is_the_report_on_the_database(
    lake_db: tuple[Path, Path], store_outputs: dict[str, str]
) -> None:
    db, lake = lake_db
    con = duckdb_lake(str(lake))
    try:
        got = report_tables(con)
        assert outputs_of(got) == store_outputs
        # and the same kinds of values, column for column
        with derived.open_reader(db, 10) as store:
            expected = report_tables(store)
        for name, tables in got.items():
            for key, table in tables.items():
                if not isinstance(table, str):
                    assert (table.names, table.kinds) == (
                        expected[name][key].names,
                        expected[name][key].kinds,
                    ), name
    finally:
        con.close()


def test_lake_figures_are_the_independent_computation(lake_db: tuple[Path, Path]) -> None:
    model = Model(make_dataset())
    con = duckdb_lake(str(lake_db[1]))
    try:
        for d in ("NL1", "NL2"):
            assert delivery.delivery_indicators(con, d).to_pylist() == [model.indicators(d)]
        since, until = NOV.since, NOV.until
        assert delivery.delivery_indicators(con, "NL1", NOV).to_pylist() == [
            model.indicators("NL1", since, until)
        ]
        keys = ("link_id", "url", "clicks", "clickers")
        assert [{k: r[k] for k in keys} for r in hot_clicks.hot_clicks(con, "NL1").to_pylist()] == [
            {k: r[k] for k in keys} for r in model.hot_clicks("NL1")[0]
        ]
    finally:
        con.close()


def test_a_manifest_replaced_after_the_export_resolves_the_old_days_again(tmp_path: Path) -> None:
    """The lake's hits carry no resolution: a day exported before a manifest changed is read
    against the manifests of the last export, as the database reads it."""
    data = make_dataset()
    db = build_db(tmp_path / "t.duckdb", data)
    write_lake(db, tmp_path / "lake")
    # r99 (an orphan click of NL1 on 2026-11-03) joins NL1's manifest; only a later day is exported
    with duckdb.connect(str(db)) as con:
        con.execute("INSERT INTO recipients VALUES ('NL1', 'r99', 'new@mail.test', 'sent', NULL)")
        con.execute("UPDATE deliveries SET manifest_sha256 = ? WHERE delivery_id = 'NL1'", ["1" * 64])
    export(lambda: derived.open_reader(db, 10), tmp_path / "lake", [EMPTY_DAY], lake=True)
    lake = duckdb_lake(str(tmp_path / "lake"))
    try:
        with derived.open_reader(db, 10) as store:
            assert report_outputs(lake) == report_outputs(store)
        row = delivery.delivery_indicators(lake, "NL1").to_pylist()[0]
        before = Model(make_dataset()).indicators("NL1")
        assert (row["sent"], row["clicks_unique"]) == (before["sent"] + 1, before["clicks_unique"] + 1)
    finally:
        lake.close()


def test_report_cli_on_the_lake(lake_db: tuple[Path, Path]) -> None:
    db, lake = lake_db
    for args in (
        ("report", "deliveries"),
        ("report", "delivery", "NL1", "--since", "2026-11-03", "--until", "2026-11-03"),
        ("report", "hot-clicks", "--delivery", "NL1"),
        ("report", "urls", "--by", "category"),
        ("report", "streams", "--delivery", "NL1"),
        ("report", "stats", "--by", "os"),
        ("report", "stats", "--delivery", "NL2", "--bucket", "3h"),
        ("recipient", "r1"),
    ):
        for fmt in ("json", "table") if args[0] == "recipient" else ("json",):
            on_db = run("--db", str(db), *args, "--format", fmt)
            on_lake = run("--db", str(tmp_path_missing(db)), *args, "--format", fmt, "--lake", str(lake))
            assert on_db.exit_code == on_lake.exit_code == 0, on_lake.output
            assert on_lake.stdout == on_db.stdout, args


def tmp_path_missing(db: Path) -> Path:
    """A database path that does not exist: --lake never opens the database."""
    return db.with_name("no-such.duckdb")


def test_engine_options_are_checked(lake_db: tuple[Path, Path], tmp_path: Path) -> None:
    db, lake = lake_db
    usage = [
        ("report", "deliveries", "--engine", "spark"),
        ("report", "deliveries", "--spark-master", "local[1]"),
        ("report", "deliveries", "--engine", "hive", "--lake", str(lake)),
    ]
    for args in usage:
        result = run("--db", str(db), *args)
        assert result.exit_code == ExitCode.USAGE_ERROR, args
    result = run("--db", str(db), "report", "deliveries", "--lake", str(tmp_path))
    assert result.exit_code == ExitCode.DATA_ERROR
    assert "not a tracklog lake" in result.stderr and len(result.stderr.splitlines()) == 1
    result = run("--db", str(db), "report", "delivery", "NL7", "--lake", str(lake))
    assert result.exit_code == ExitCode.NOT_FOUND


# -- S3 (a moto server) ------------------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with an empty bucket; the AWS settings point at it."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        skip_or_fail("moto[server] and s3fs are not installed (pip install -e '.[test]')")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    import fsspec

    fsspec.config.conf.pop("s3", None)
    fsspec.filesystem("s3").clear_instance_cache()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="tracking")
        yield endpoint
    finally:
        server.stop()


def test_lake_on_s3_written_and_read_through_fsspec(
    s3: str, lake_db: tuple[Path, Path], store_outputs: dict[str, str]
) -> None:
    import boto3

    db, lake = lake_db
    days = ["--since", "2026-11-03", "--until", "2026-11-04"]
    for more in (days, ["--since", "2026-12-01", "--until", "2026-12-02"], ["--date", str(EMPTY_DAY)]):
        result = run("--db", str(db), "export", "--lake", "--out", "s3://tracking/lake/", *more)
        assert result.exit_code == 0, result.output
    keys = sorted(
        o["Key"] for o in boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="tracking")["Contents"]
    )
    local = sorted(f"lake/{p.relative_to(lake)}" for p in lake.rglob("*.parquet"))
    assert keys == local
    body = boto3.client("s3", endpoint_url=s3).get_object(
        Bucket="tracking", Key="lake/hits/date=2026-11-03/hits.parquet"
    )
    assert body["Body"].read() == (lake / "hits" / "date=2026-11-03" / "hits.parquet").read_bytes()
    con = duckdb_lake("s3://tracking/lake")
    try:
        assert report_outputs(con) == store_outputs
    finally:
        con.close()
    on_s3 = run("report", "deliveries", "--format", "json", "--lake", "s3://tracking/lake")
    on_db = run("--db", str(db), "report", "deliveries", "--format", "json")
    assert on_s3.exit_code == 0 and on_s3.stdout == on_db.stdout
