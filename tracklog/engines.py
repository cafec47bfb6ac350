"""The query engines over an exported lake (`tracklog export --lake`): DuckDB in this process or
Apache Spark (local, a cluster, or Spark Connect). Both register the lake's base tables, then
the same view definitions of tracklog.metrics on top, so a report is one SQL text that runs on
the store, on DuckDB over the lake, or on Spark over the lake.

pyspark (the `spark` extra) and fsspec (for `s3://` and other URIs) are imported only when used.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracklog import metrics
from tracklog.duck import duckdb
from tracklog.errors import DataError, UsageError
from tracklog.schema import HIT_COLUMNS, RESOLUTION_COLUMNS

if TYPE_CHECKING:  # pyarrow only where Spark's results are read: a report on DuckDB needs none
    import pyarrow as pa
    from pyspark.sql import SparkSession

ENGINES = ("duckdb", "spark")

# The lake: `hits` partitioned by UTC day (`hits/date=YYYY-MM-DD/hits.parquet`, every stored
# column but the derived resolution), and the small tables as one snapshot file each
# (`<table>/<table>.parquet`; deliveries and recipients with their keys). The resolution and
# the figures are views over them.
LAKE_HITS = "hits"
LAKE_SNAPSHOTS = ("deliveries", "links", "recipients", "user_agent_families", "meta")
LAKE_TABLES = (LAKE_HITS, *LAKE_SNAPSHOTS)
_RAW_HITS = "lake_hits"  # the hits as read from the files, before the resolution

_URI = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def is_uri(location: str) -> bool:
    """Whether `location` is a URI (s3://bucket/lake, gs://...) rather than a local folder."""
    return bool(_URI.match(location))


def lake_views() -> dict[str, str]:
    """The views every engine creates over the lake's base tables, in order, with the same text:
    the keys and the resolution of the hits (metrics.resolve_sql), the views of
    metrics.views(), and the figures that the store keeps merged (delivery_totals,
    delivery_dimensions, delivery_domains, delivery_minutes, delivery_not_counted) as their
    definitions over all time."""
    resolved = ", ".join(f"r.{c}" for c in (*HIT_COLUMNS, *RESOLUTION_COLUMNS))
    dimensions = " UNION ALL ".join(
        f"SELECT * FROM ({metrics.dimension_figures_sql(d)}) x{i}" for i, d in enumerate(metrics.DIMENSIONS)
    )
    views = metrics.views()
    first = {name: views.pop(name) for name in ("hits_classified", "events")}
    return {
        # the keys the database numbered the manifests with, exported with them
        "delivery_keys": "SELECT d.delivery_id, d.delivery_key FROM deliveries d",
        "recipient_keys": (
            "SELECT r.delivery_id, r.recipient_id, r.email, r.status, r.recipient_key FROM recipients r"
        ),
        "hits": f"SELECT {resolved} FROM ({metrics.resolve_sql(_RAW_HITS)}) r",
        **first,  # what the figures read
        "delivery_totals": metrics.delivery_totals_sql(),
        "delivery_dimensions": dimensions,
        "delivery_domains": metrics.domain_figures_sql(),
        "delivery_minutes": metrics.minute_figures_sql(),
        "delivery_not_counted": metrics.not_counted_sql(),
        **views,  # and what reads the figures (delivery_indicators)
    }


def _create_views(run: Any) -> None:
    for name, sql in lake_views().items():
        run(f"CREATE OR REPLACE TEMPORARY VIEW {name} AS {sql}")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lake_path(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts])


def _check_local_lake(location: str) -> None:
    if is_uri(location):
        return
    missing = [t for t in LAKE_TABLES if not Path(location, t).is_dir()]
    if missing:
        raise DataError(
            f"--lake {location}: not a tracklog lake (no {', '.join(missing)} folder; "
            "write one with `tracklog export --lake --out DIR`)"
        )


# -- DuckDB ----------------------------------------------------------------------------------


def duckdb_lake(location: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake at `location` (a folder, or a URI of a
    filesystem fsspec knows, such as s3:// with s3fs) and the views of lake_views()."""
    _check_local_lake(location)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        if is_uri(location):
            _register_fsspec(con, location)
        for table in LAKE_TABLES:
            pattern = "*/*.parquet" if table == LAKE_HITS else "*.parquet"
            name = _RAW_HITS if table == LAKE_HITS else table
            try:
                rel = con.read_parquet(_lake_path(location, table, pattern), hive_partitioning=True)
            except (duckdb.Error, OSError) as exc:
                raise DataError(f"--lake {location}: cannot read {table}: {exc}") from exc
            # times are UTC instants in the files; inside, naive UTC as in the store
            cols = ", ".join(
                f"CAST({_quote(c)} AS TIMESTAMP) AS {_quote(c)}"
                if str(t) == "TIMESTAMP WITH TIME ZONE"
                else _quote(c)
                for c, t in zip(rel.columns, rel.types, strict=True)
            )
            rel.project(cols).create_view(name, replace=True)
        _create_views(con.execute)
    except BaseException:
        con.close()
        raise
    return con


def _register_fsspec(con: duckdb.DuckDBPyConnection, location: str) -> None:
    try:
        import fsspec
    except ImportError:
        raise UsageError(
            f"--lake {location}: reading a URI needs fsspec (pip install 'tracklog[s3]')"
        ) from None
    protocol = location.split("://", 1)[0]
    try:
        fs = fsspec.filesystem(protocol)
    except (ImportError, ValueError) as exc:
        raise UsageError(
            f"--lake {location}: no filesystem for {protocol}:// ({exc}; for S3: pip install 'tracklog[s3]')"
        ) from None
    con.register_filesystem(fs)


# -- Spark -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkOptions:
    """Where Spark runs: a master URL (local[*], spark://..., yarn) or a Spark Connect server."""

    master: str | None = None
    remote: str | None = None  # sc://host:15002


class SparkConnection:
    """The lake registered in a Spark session: runs report SQL with bound parameters and returns
    Arrow tables typed as DuckDB's (times naive UTC)."""

    def __init__(self, session: SparkSession, location: str) -> None:
        self.session = session
        self.location = location
        for table in LAKE_TABLES:
            name = _RAW_HITS if table == LAKE_HITS else table
            try:
                session.read.parquet(_lake_path(location, table)).createOrReplaceTempView(name)
            except Exception as exc:  # pyspark raises its own AnalysisException, etc.
                raise DataError(f"--lake {location}: Spark cannot read {table}: {_first_line(exc)}") from exc
        _create_views(session.sql)

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        args = [_spark_value(p) for p in params or []]
        table = self.session.sql(sql, args=args).toArrow()
        return _naive_times(table)

    def close(self) -> None:
        for table in (*lake_views(), *LAKE_SNAPSHOTS, _RAW_HITS):
            self.session.catalog.dropTempView(table)


def _spark_value(value: Any) -> Any:
    # a naive datetime is UTC here; pyspark would read it in the process's local time zone
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _naive_times(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    fields = [
        pa.field(f.name, pa.timestamp("us"), f.nullable)
        if pa.types.is_timestamp(f.type) and f.type.tz is not None
        else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def spark_session(options: SparkOptions, app_name: str = "tracklog") -> SparkSession:
    """A Spark session pinned to UTC, UI off, logs at ERROR. A local JVM's own output (its
    startup lines, Spark's log) goes to a temporary file rather than the user's terminal; its
    end is shown if Spark fails to start."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError("--engine spark needs pyspark: pip install 'tracklog[spark]'") from None
    builder = SparkSession.builder.appName(app_name).config("spark.sql.session.timeZone", "UTC")
    if options.remote:
        if options.master:
            raise UsageError("give --spark-master or --spark-remote, not both")
        try:
            return builder.remote(options.remote).getOrCreate()
        except Exception as exc:
            raise DataError(f"--spark-remote {options.remote}: {_first_line(exc)}") from exc
    builder = (
        builder.master(options.master or "local[*]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    with _jvm_output() as log:
        try:
            session = builder.getOrCreate()
        except Exception as exc:
            raise DataError(f"Spark did not start: {_first_line(exc)}{_tail(log)}") from exc
    session.sparkContext.setLogLevel("ERROR")
    return session


@contextmanager
def _jvm_output() -> Iterator[Any]:
    """While the JVM starts, the process's stderr (fd 2, which the JVM inherits) is a temporary
    file; Python's own stderr comes back as soon as it has started."""
    import tempfile

    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        try:
            os.dup2(log.fileno(), 2)
            try:
                yield log
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)


def _tail(log: Any) -> str:
    log.seek(0)
    lines = [ln for ln in log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return (" (Spark said: " + " | ".join(lines[-3:]) + ")") if lines else ""


@contextmanager
def open_lake(location: str, engine: str, spark: SparkOptions | None = None) -> Iterator[Connection]:
    """A connection-like object over the lake at `location`: what tracklog.reports take."""
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    if engine == "duckdb":
        con = duckdb_lake(location)
        try:
            yield con
        finally:
            con.close()
        return
    _check_local_lake(location)
    active = _active_session()
    session = active or spark_session(spark or SparkOptions())
    spark_con = SparkConnection(session, location)
    try:
        yield spark_con
    finally:
        if active is None:
            session.stop()
        else:  # someone else's session (a notebook, a test): left running, without our views
            spark_con.close()


def _active_session() -> SparkSession | None:
    """The Spark session this process already runs, if any (its master wins)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


Connection = duckdb.DuckDBPyConnection | SparkConnection  # what a report queries
