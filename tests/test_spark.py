"""The reports on Apache Spark over the lake: every report gives the same output as on the
database and as DuckDB on the same lake (the same SQL text on both engines), and the command
line with --engine spark prints the database's figures and nothing else.

Marked `spark`: skipped where pyspark or Java is missing, except under TRACKLOG_CI=1 (.ci/run
installs both), where that fails. One local Spark session for the module.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import skip_or_fail
from test_lake import REPORTS, build_lake, outputs_of, outputs_on_the_database, report_tables

from tracklog import derived
from tracklog.engines import SparkConnection, SparkOptions, spark_session

# one worker runs them all under pytest-xdist: one Spark session (a JVM) for the module
pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

REPO = Path(__file__).resolve().parent.parent
# Every report and each of its query paths (all time: the figures' definitions; a window; a
# delivery); test_lake runs all of REPORTS on DuckDB. Left out, to keep a Spark query (a few
# seconds each on a small machine) for what differs: the same SQL text as one kept, with
# another constant (a --by dimension, a bucket, a delivery id, a limit).
SPARK_SKIPS = {
    "deliveries-limit",
    "delivery-NL2",
    "hot-clicks-NL2",
    "urls-url",
    "urls-label",
    "streams-NL2",
    "stats-3h",
    "stats-1d",
    "stats-by-os",
    "stats-by-device",
    "stats-by-browser-NL1-window",
    "stats-by-device-NL1-window",
    "recipient-r2",
}
SPARK_REPORTS = [name for name in REPORTS if name not in SPARK_SKIPS]


@pytest.fixture(scope="module")
def lake_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_lake(tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="module")
def store_outputs(lake_db: tuple[Path, Path]) -> dict[str, str]:
    return outputs_on_the_database(lake_db[0])


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    if importlib.util.find_spec("pyspark") is None:
        skip_or_fail("pyspark is not installed (pip install -e '.[spark]')")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        skip_or_fail(
            "Java is not installed (Spark needs Java 17 or later: apt-get install default-jre-headless)"
        )
    session = spark_session(SparkOptions(master="local[2]"), "tracklog-tests")
    try:
        yield session
    finally:
        session.stop()


def test_every_report_on_spark_is_the_report_on_the_database_and_on_duckdb(
    spark: Any, lake_db: tuple[Path, Path], store_outputs: dict[str, str]
) -> None:
    db, lake = lake_db
    con = SparkConnection(spark, str(lake))
    try:
        got = report_tables(con, SPARK_REPORTS)
    finally:
        con.close()
    for name, text in outputs_of(got).items():
        assert text == store_outputs[name], name
    # column names and kinds of values as DuckDB's (Spark's integers may be narrower: both integer)
    with derived.open_reader(db, 10) as store:
        expected = report_tables(store, SPARK_REPORTS)
    for name, tables in got.items():
        for key, table in tables.items():
            if not isinstance(table, str):
                assert (table.names, table.kinds) == (expected[name][key].names, expected[name][key].kinds), (
                    name
                )


def test_the_command_line_on_spark_prints_the_figures_and_no_spark_noise(
    spark: Any, lake_db: tuple[Path, Path]
) -> None:
    """A real process, its own JVM: stdout is the database's JSON, stderr stays empty."""
    db, lake = lake_db
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "tracklog"]
    expected = subprocess.run(
        [*base, "--db", str(db), "report", "deliveries", "--format", "json"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert expected.returncode == 0, expected.stderr
    got = subprocess.run(
        [
            *base,
            "report",
            "deliveries",
            "--format",
            "json",
            "--engine",
            "spark",
            "--spark-master",
            "local[1]",
            "--lake",
            str(lake),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected.stdout
    assert got.stderr == ""
