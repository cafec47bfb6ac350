"""A database written by the previous version (schema 2: the bundled sample ingested by tracklog
as it was at commit 8c43be5, with its report caches) opens with this version, is upgraded once,
and every report gives exactly what this version gives for the same logs ingested afresh (what
that version printed, tests/data/schema2/*.json, counted machines as people: the figures the
classifier leaves alone are checked against it)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from tracklog.cli import cli
from tracklog.errors import ExitCode
from tracklog.schema import SCHEMA_VERSION

DATA = Path(__file__).parent / "data" / "schema2"
DELIVERIES = ("NL-2026-11", "PROMO-BF-2026", "TX-WELCOME-2026-11")
CASES = {
    "deliveries": ["report", "deliveries"],
    "urls": ["report", "urls"],
    "urls-category": ["report", "urls", "--by", "category"],
    "stats": ["report", "stats"],
    "stats-window": ["report", "stats", "--delivery", "NL-2026-11", "--since", "2026-11-04", "--until", "2026-11-06"],
    "delivery-window": [
        "report", "delivery", "NL-2026-11", "--since", "2026-11-03T10:00:00Z", "--until", "2026-11-05",
    ],
    "recipient-r000014": ["recipient", "r000014"],
    **{f"stats-{by}": ["report", "stats", "--by", by] for by in ("browser", "os", "device", "domain")},
    **{f"delivery-{d}": ["report", "delivery", d] for d in DELIVERIES},
    **{f"hot-clicks-{d}": ["report", "hot-clicks", "--delivery", d] for d in DELIVERIES},
    **{f"streams-{d}": ["report", "streams", "--delivery", d] for d in DELIVERIES},
}  # fmt: skip


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("upgrade") / "sample.duckdb"
    db.write_bytes(gzip.decompress((DATA / "sample.duckdb.gz").read_bytes()))
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [("2",)]
    con.close()
    return db


def run(db: Path, *args: str) -> str:
    result = CliRunner().invoke(
        cli, ["--db", str(db), *args, "--format", "json"], env={"TRACKLOG_CONFIG": ""}
    )
    assert result.exit_code == 0, result.stderr
    return result.stdout


SAMPLE = Path(__file__).parent.parent / "sample_logs"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same sample logs and manifests ingested by this version."""
    folder = tmp_path_factory.mktemp("fresh")
    db = folder / "sample.duckdb"
    # the logs the schema-2 database was made of: today's sample without the site's page tags
    # (added since, as lines of their own; every older line is byte for byte the same)
    logs = []
    for name in ("access.log.2.gz", "access.log.1", "access.log"):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(SAMPLE / name, "rt", encoding="utf-8") as f:
            kept = [line for line in f if '"GET /w/' not in line and '"HEAD /w/' not in line]
        (folder / name.removesuffix(".gz")).write_text("".join(kept), encoding="utf-8")
        logs.append(str(folder / name.removesuffix(".gz")))
    args = ["--db", str(db), "--config", str(SAMPLE / "tracklog.toml"), "--quiet", "ingest"]
    result = CliRunner().invoke(cli, [*args, "--manifest", str(SAMPLE / "manifests" / "*.json"), *logs])
    assert result.exit_code == 0, result.stderr
    return db


@pytest.mark.parametrize("case", list(CASES))
def test_every_report_after_the_upgrade_is_a_fresh_ingest_s(upgraded: Path, fresh: Path, case: str) -> None:
    assert json.loads(run(upgraded, *CASES[case])) == json.loads(run(fresh, *CASES[case]))


def test_what_classification_leaves_alone_is_what_the_previous_version_printed(upgraded: Path) -> None:
    unchanged = ("delivery", "label", "sent", "delivered", "rejected_hits", "failed_hits", "unsubscribes")
    before = json.loads((DATA / "deliveries.json").read_text())
    after = json.loads(run(upgraded, "report", "deliveries"))
    assert [{k: r[k] for k in unchanged if k in r} for r in after] == [
        {k: r[k] for k in unchanged if k in r} for r in before
    ]


def test_the_upgrade_happens_once_and_keeps_every_hit(upgraded: Path) -> None:
    run(upgraded, "report", "deliveries")
    con = duckdb.connect(str(upgraded), read_only=True)
    try:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [
            (str(SCHEMA_VERSION),)
        ]
        assert con.execute("SELECT count(*) FROM hits WHERE resolution IS NULL").fetchall() == [(0,)]
        # schema 4: each stream's newest hit, taken from its stored hits; no server known yet
        assert (
            con.execute(
                "SELECT count(*) FROM sources s WHERE s.server IS NULL AND s.last_hit IS NOT DISTINCT FROM "
                "(SELECT max(ts) FROM hits h WHERE h.source_id = s.source_id)"
            ).fetchall()
            == con.execute("SELECT count(*) FROM sources").fetchall()
        )
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert not tables & {"hit_facts", "delivery_totals_stored", "delivery_breakdowns"}
    finally:
        con.close()
    status = json.loads(run(upgraded, "status"))
    assert {k: status[k] for k in ("quarantine", "signatures", "orphans")} == json.loads(
        (DATA / "status.json").read_text()
    )


def test_a_reader_that_cannot_write_the_upgrade_gets_one_clear_line(tmp_path: Path) -> None:
    """The upgrade needs the writer; a reader that cannot take it (here its lock file cannot be
    opened: a folder stands in its place, as a read-only folder would refuse it) is told what to
    do, with exit code 1 and no traceback."""
    db = tmp_path / "sample.duckdb"
    db.write_bytes(gzip.decompress((DATA / "sample.duckdb.gz").read_bytes()))
    (tmp_path / "sample.duckdb.lock").mkdir()
    result = CliRunner().invoke(cli, ["--db", str(db), "report", "deliveries"], env={"TRACKLOG_CONFIG": ""})
    assert result.exit_code == ExitCode.DATA_ERROR
    assert result.stdout == ""
    assert result.stderr.startswith("Error: database ") and "must be brought up to date" in result.stderr
    assert result.stderr.count("\n") == 1
