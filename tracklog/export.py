"""Nightly files: one CSV or Parquet file per kind and UTC day, `OUT/<kind>/date=YYYY-MM-DD/`;
or the lake (`lake=True`): the base tables the metric definitions read, as Parquet, for the
engines of tracklog.engines (`hits/date=YYYY-MM-DD/hits.parquet`, one snapshot file per small table).

Owns what each kind's columns are (over the metric definitions of tracklog.metrics), and how the
files are written: byte-identical for the same data, atomically (temporary name, fsync, rename,
fsync of the folder), never through a symlink, under a lock in OUT that lets a run clean what a
killed one left behind; to a URI (s3://...) through fsspec, where an object appears whole when
written. No click, no printing: the caller opens the database.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tracklog import derived, metrics
from tracklog.duck import duckdb, load_arrow
from tracklog.engines import LAKE_HITS, LAKE_SNAPSHOTS, LAKE_TABLES, is_uri
from tracklog.errors import DataError, LockBusyError, UsageError
from tracklog.schema import CLASS_COLUMNS, RESOLUTION_COLUMNS
from tracklog.spreadsheet import neutralised_table

load_arrow()  # this module hands Arrow tables to DuckDB

KINDS = ("events", "deliveries", "recipients", "unsubscribes")
FORMATS = ("csv", "parquet")
LOCK_NAME = ".tracklog-export.lock"
TMP_SUFFIX = ".tmp"  # a file being written is `.<kind>.<format>.tmp` in its partition folder
MAX_DAYS = 3660  # one run exports at most ten years of days
CSV_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # times in CSV: ISO 8601 UTC, seconds (as every tracklog CSV)

# The columns of the events export, in file order: name -> SQL over the `events` view `e`.
# The one list: the query, the sort and the README's column order all follow it.
EVENT_COLUMNS: dict[str, str] = {
    "time": "e.ts",
    "type": "e.type",
    "delivery_id": "e.delivery_id",
    "delivery_label": "e.delivery_label",
    "recipient_id": "e.recipient_id",
    "link_id": "e.link_id",
    "link_label": "e.link_label",
    "link_url": "e.link_url",
    "class": "e.class",
    "reasons": "e.reasons",
}
# What the events export lists: the counted events (people's, class human), and the hits that
# tracklog.classify flagged as machines' (machine_open, bot_click, with their reasons) of a
# manifest recipient, as the recipient tab shows them: nothing hidden, each row saying what it is.
EVENT_ROWS = """
SELECT e.ts, e.type, e.delivery_id, e.delivery_label, e.recipient_id, e.link_id, e.link_label,
    e.link_url, 'human' AS class, CAST(NULL AS VARCHAR) AS reasons
FROM events e
UNION ALL
SELECT c.ts, c.type, c.delivery_id, d.label, c.recipient_id, c.link_id, l.label, l.url, c.class,
    c.reasons
FROM hits_classified c
JOIN recipients r ON r.delivery_id = c.delivery_id AND r.recipient_id = c.recipient_id
JOIN deliveries d ON d.delivery_id = c.delivery_id
LEFT JOIN links l ON l.delivery_id = c.delivery_id AND l.link_id = c.link_id
WHERE c.resolution = 'automated'
"""

# Per delivery and recipient with an event of the day: the reader flags of tracklog.metrics and
# what they are made of, over `events AS e`.
RECIPIENT_COLUMNS: dict[str, str] = {
    "delivery_id": "e.delivery_id",
    "recipient_id": "e.recipient_id",
    "opened": f"count(*) FILTER (WHERE {metrics.READER_FLAGS['opened']}) > 0",
    "clicked": f"count(*) FILTER (WHERE {metrics.READER_FLAGS['clicked']}) > 0",
    "first_open": f"min(e.ts) FILTER (WHERE {metrics.READER_FLAGS['opened']})",
    "first_click": f"min(e.ts) FILTER (WHERE {metrics.READER_FLAGS['clicked']})",
    "clicks": metrics.EVENT_COUNTS["clicks_total"],
    "opted_out": f"{metrics.EVENT_COUNTS['optout_clicks']} > 0",
    "unsubscribed": f"count(*) FILTER (WHERE {metrics.READER_FLAGS['unsubscribed']}) > 0",
}

# The suppression list: who unsubscribed that day, by which way (first time of each way).
UNSUBSCRIBE_METHODS = {"unsubscribe": "one-click", "optout": "opt-out-link"}
UNSUBSCRIBE_COLUMNS: dict[str, str] = {
    "recipient_id": "e.recipient_id",
    "email": "r.email",
    "delivery_id": "e.delivery_id",
    "time": "min(e.ts)",
    "method": "CASE "
    + " ".join(f"WHEN e.type = '{t}' THEN '{m}'" for t, m in UNSUBSCRIBE_METHODS.items())
    + " END",
}


def _select(columns: dict[str, str]) -> str:
    return ", ".join(f'{sql} AS "{name}"' for name, sql in columns.items())


def kind_query(kind: str, since: dt.datetime, until: dt.datetime) -> tuple[str, list[object]]:
    """The SQL (and its parameters) of one kind over the hits of [since, until), UTC.

    Every query filters the hits' `ts` with bound constants, which DuckDB pushes into the scan
    of `hits`, so row groups of other days are skipped by their min/max (zonemaps)."""
    window = "e.ts >= ? AND e.ts < ?"
    if kind == "events":
        order = ", ".join(f'"{name}"' for name in EVENT_COLUMNS)
        sql = f"SELECT {_select(EVENT_COLUMNS)} FROM ({EVENT_ROWS}) e WHERE {window} ORDER BY {order}"
        return sql, [since, until]
    if kind == "recipients":
        sql = (
            f"SELECT {_select(RECIPIENT_COLUMNS)} FROM events e WHERE {window} "
            "GROUP BY e.delivery_id, e.recipient_id ORDER BY delivery_id, recipient_id"
        )
        return sql, [since, until]
    if kind == "unsubscribes":
        types = ", ".join(f"'{t}'" for t in UNSUBSCRIBE_METHODS)
        sql = (
            f"SELECT {_select(UNSUBSCRIBE_COLUMNS)} FROM events e "
            "LEFT JOIN recipients r ON r.delivery_id = e.delivery_id AND r.recipient_id = e.recipient_id "
            f"WHERE {window} AND e.type IN ({types}) "
            "GROUP BY e.delivery_id, e.recipient_id, r.email, e.type "
            'ORDER BY "time", delivery_id, recipient_id, method'
        )
        return sql, [since, until]
    if kind == "deliveries":
        # the indicators of `report delivery ID --since DAY --until DAY`, one row per delivery
        # with a hit that day: the same definitions, the same names
        totals, params = derived.totals((since, until))
        indicators = metrics.indicators_sql(totals, delivery_where="t.delivery_id IS NOT NULL")
        return f"SELECT * FROM ({indicators}) i ORDER BY delivery", params
    raise ValueError(f"unknown kind {kind!r}")


def day_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time())
    return start, start + dt.timedelta(days=1)


def day_tables(con: duckdb.DuckDBPyConnection, day: dt.date, kinds: Sequence[str]) -> dict[str, pa.Table]:
    """The rows of each kind for the UTC day `day`, typed (times are naive UTC)."""
    since, until = day_window(day)
    tables = {}
    for kind in kinds:
        sql, params = kind_query(kind, since, until)
        tables[kind] = con.sql(sql, params=params).to_arrow_table().combine_chunks()
    return tables


# The lake's small tables, whole, in the order of a key (the same tables give the same bytes).
# The deliveries and recipients carry the keys the database numbered them with (the derived
# delivery_keys and recipient_keys): the engines then need no window over every recipient.
SNAPSHOT_QUERIES = {
    "deliveries": "SELECT d.*, k.delivery_key FROM deliveries d "
    "LEFT JOIN delivery_keys k ON k.delivery_id = d.delivery_id ORDER BY d.delivery_id",
    "links": "SELECT * FROM links ORDER BY delivery_id, link_id",
    "recipients": "SELECT r.*, k.recipient_key FROM recipients r "
    "LEFT JOIN recipient_keys k ON k.delivery_id = r.delivery_id AND k.recipient_id = r.recipient_id "
    "ORDER BY r.delivery_id, r.recipient_id",
    "user_agent_families": "SELECT * FROM user_agent_families ORDER BY user_agent",
    # the settings the definitions read: the clock window (metrics.clock_sql)
    "meta": "SELECT key, value FROM meta WHERE key LIKE 'clock_%' ORDER BY key",
}


def lake_hits_query(
    con: duckdb.DuckDBPyConnection, since: dt.datetime, until: dt.datetime
) -> tuple[str, list[object]]:
    """The stored hits of [since, until): every column of `hits` (whatever the table has) but
    the resolution, which the engines compute from the definitions against the manifests as
    they are (a day exported before its manifest changed stays right)."""
    columns = [c for c in con.table("hits").columns if c not in RESOLUTION_COLUMNS or c in CLASS_COLUMNS]
    cols = ", ".join(f'h."{c}"' for c in columns)
    return f"SELECT {cols} FROM hits h WHERE h.ts >= ? AND h.ts < ? ORDER BY h.source_id, h.line_no", [
        since,
        until,
    ]


def lake_day_table(con: duckdb.DuckDBPyConnection, day: dt.date) -> pa.Table:
    sql, params = lake_hits_query(con, *day_window(day))
    return con.sql(sql, params=params).to_arrow_table().combine_chunks()


def snapshot_tables(con: duckdb.DuckDBPyConnection) -> dict[str, pa.Table]:
    """The small tables of the lake, whole: the manifests and the parsed user agents."""
    return {t: con.sql(SNAPSHOT_QUERIES[t]).to_arrow_table().combine_chunks() for t in LAKE_SNAPSHOTS}


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every date from `first` to `last`, both included."""
    if last < first:
        raise UsageError(f"--since {first} is after --until {last}")
    n = (last - first).days + 1
    if n > MAX_DAYS:
        raise UsageError(f"{n} days is too many for one export (at most {MAX_DAYS})")
    return [first + dt.timedelta(days=i) for i in range(n)]


def yesterday(tz: dt.tzinfo, now: dt.datetime | None = None) -> dt.date:
    """Yesterday's date on the clocks of `tz`."""
    now = now if now is not None else dt.datetime.now(dt.UTC)
    return now.astimezone(tz).date() - dt.timedelta(days=1)


# -- the bytes of a file ---------------------------------------------------------------------


def parquet_table(table: pa.Table) -> pa.Table:
    """Times marked as UTC instants (Parquet isAdjustedToUTC), the rest as typed."""
    fields = [
        pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def csv_table(table: pa.Table, excel_safe: bool, formatter: duckdb.DuckDBPyConnection) -> pa.Table:
    """The cells as tracklog's CSV writes them: times ISO 8601 UTC (`...Z`), rates with one
    decimal, booleans true/false, text as is (neutralised for spreadsheets on request).
    `formatter`: an in-memory connection of the run."""
    exprs = []
    for f in table.schema:
        col = f'"{f.name}"'
        if pa.types.is_timestamp(f.type):
            exprs.append(f"strftime({col}, '{CSV_TIME_FORMAT}') AS {col}")
        elif pa.types.is_floating(f.type):
            # rates are tenths (metrics.tenths_sql): one decimal, written as a number
            exprs.append(f"CAST({col} AS DECIMAL(18, 1)) AS {col}")
        else:
            exprs.append(col)
    formatter.register("t", table)
    try:
        # no ORDER BY needed: a projection of one in-memory table keeps its order
        text = formatter.sql(f"SELECT {', '.join(exprs)} FROM t").to_arrow_table()
    finally:
        formatter.unregister("t")
    return neutralised_table(text) if excel_safe else text


@dataclass(frozen=True)
class FileFormat:
    """How the tables of a run become bytes."""

    name: str  # csv | parquet
    excel_safe: bool
    formatter: duckdb.DuckDBPyConnection  # in memory, for the CSV cells

    def write(self, fh: BinaryIO, table: pa.Table) -> None:
        if self.name == "parquet":
            pq.write_table(parquet_table(table), fh, compression="zstd")
        else:
            text = csv_table(table, self.excel_safe, self.formatter)
            pa_csv.write_csv(text, fh, pa_csv.WriteOptions(quoting_style="needed"))


# -- the files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    kind: str
    day: dt.date | None  # None: a snapshot of the lake
    path: Path | str  # a str when OUT is a URI
    rows: int


def _open_dir(parent_fd: int, name: str, where: Path, create: bool) -> int:
    """The folder `name` inside `parent_fd`, created if asked; never a symlink."""
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            os.fsync(parent_fd)
        except FileExistsError:
            pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise DataError(
                f"{where / name} is not a folder (a symlink or a file): refusing to write through it"
            ) from exc
        raise


def _leftovers(dir_fd: int) -> list[str]:
    return [n for n in os.listdir(dir_fd) if n.startswith(".") and n.endswith(TMP_SUFFIX)]


def _remove_leftovers(dir_fd: int) -> int:
    removed = 0
    for leftover in _leftovers(dir_fd):
        # a file, or a symlink planted under our name: unlink removes the link itself, never
        # what it points to
        if not stat.S_ISDIR(os.stat(leftover, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            os.unlink(leftover, dir_fd=dir_fd)
            removed += 1
    os.fsync(dir_fd)
    return removed


def clean_leftovers(root_fd: int) -> int:
    """Remove the temporary files a killed run left in any partition folder (or, for the
    lake's snapshots, kind folder); how many."""
    removed = 0
    for kind in (*KINDS, *LAKE_TABLES):
        try:
            kind_fd = os.open(kind, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
        except OSError:
            continue  # absent, or not a folder of ours: nothing of ours in it
        try:
            removed += _remove_leftovers(kind_fd)
            for name in os.listdir(kind_fd):
                if not name.startswith("date="):
                    continue
                try:
                    part_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=kind_fd)
                except OSError:
                    continue
                try:
                    removed += _remove_leftovers(part_fd)
                finally:
                    os.close(part_fd)
        finally:
            os.close(kind_fd)
    return removed


def _write_file(part_fd: int, name: str, table: pa.Table, fmt: FileFormat) -> None:
    """`name` in the folder `part_fd`, atomically: a temporary name, fsync, rename, fsync."""
    tmp = f".{name}{TMP_SUFFIX}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=part_fd)
    except OSError as exc:
        raise DataError(f"cannot write {tmp}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as fh:
        fmt.write(fh, table)
        fh.flush()
        os.fsync(fh.fileno())
    pause = float(os.environ.get("TRACKLOG_FAULT_SLEEP_BEFORE_RENAME") or 0)
    if pause:  # tests: a kill lands here, after the temporary file and before the rename
        time.sleep(pause)
    os.replace(tmp, name, src_dir_fd=part_fd, dst_dir_fd=part_fd)
    os.fsync(part_fd)


@contextmanager
def _locked(root_fd: int, out: Path, wait: float) -> Iterator[None]:
    """The export lock of `out`: one export at a time writes there."""
    fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=root_fd)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusyError(
                        f"another export is writing to {out} ({out / LOCK_NAME}); try again later"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def open_out(out: Path) -> int:
    """The folder --out (created when missing), opened."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        return os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise DataError(f"--out {out}: cannot create or open this folder ({exc.strerror or exc})") from exc


def export(
    reader: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
    out: Path | str,
    days: Sequence[dt.date],
    kinds: Sequence[str] = KINDS,
    fmt: str = "csv",
    *,
    excel_safe: bool = False,
    wait: float = 60.0,
    on_file: Callable[[Written], None] | None = None,
    lake: bool = False,
) -> list[Written]:
    """Write `OUT/<kind>/date=YYYY-MM-DD/<kind>.<fmt>` for every kind and day, replacing what
    is there; with `lake`, the lake instead: `OUT/hits/date=YYYY-MM-DD/hits.parquet` for every
    day, then `OUT/<table>/<table>.parquet` for the small tables (`kinds` and `fmt` unused).
    The database is read one day at a time (`reader()` opens it), and closed before that day's
    files are written, so an ingest waits for a query, not for the disk. OUT may be a URI
    (s3://bucket/prefix) of a filesystem fsspec knows: objects are written whole, without the
    lock (one export at a time there is the caller's job)."""
    file_format = FileFormat("parquet" if lake else fmt, excel_safe, duckdb.connect(":memory:"))
    try:
        if is_uri(str(out)):
            return _export_to(_RemoteOut(str(out)), reader, days, kinds, file_format, on_file, lake)
        out = Path(out)
        root_fd = open_out(out)
        try:
            with _locked(root_fd, out, wait):
                clean_leftovers(root_fd)
                return _export_to(_LocalOut(root_fd, out), reader, days, kinds, file_format, on_file, lake)
        except OSError as exc:
            raise DataError(f"export to {out}: {exc.strerror or exc}") from exc
        finally:
            os.close(root_fd)
    finally:
        file_format.formatter.close()


def _export_to(
    target: _LocalOut | _RemoteOut,
    reader: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
    days: Sequence[dt.date],
    kinds: Sequence[str],
    fmt: FileFormat,
    on_file: Callable[[Written], None] | None,
    lake: bool,
) -> list[Written]:
    # the lake and the nightly kinds share folder names (deliveries, recipients): never mixed
    other = "events" if lake else LAKE_HITS
    if target.has(other):
        raise UsageError(
            f"{target.where} holds {'nightly files' if lake else 'a lake'} (an {other} folder): "
            f"write the {'lake' if lake else 'nightly files'} to another folder"
        )
    written: list[Written] = []

    def done(w: Written) -> None:
        written.append(w)
        if on_file is not None:
            on_file(w)

    for day in days:
        with reader() as con:
            tables = {LAKE_HITS: lake_day_table(con, day)} if lake else day_tables(con, day, kinds)
        for kind, table in tables.items():
            partition = f"date={day.isoformat()}"  # a date, never an id: no path can leave OUT
            path = target.write([kind, partition], f"{kind}.{fmt.name}", table, fmt)
            done(Written(kind, day, path, table.num_rows))
    if lake:
        with reader() as con:
            snapshots = snapshot_tables(con)
        for kind, table in snapshots.items():
            done(Written(kind, None, target.write([kind], f"{kind}.{fmt.name}", table, fmt), table.num_rows))
    return written


@dataclass(frozen=True)
class _LocalOut:
    """A local OUT: atomic files, never through a symlink."""

    root_fd: int
    out: Path

    @property
    def where(self) -> str:
        return str(self.out)

    def has(self, folder: str) -> bool:
        try:
            os.stat(folder, dir_fd=self.root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def write(self, folders: list[str], name: str, table: pa.Table, fmt: FileFormat) -> Path:
        fds = [self.root_fd]
        where = self.out
        try:
            for folder in folders:
                fds.append(_open_dir(fds[-1], folder, where, create=True))
                where = where / folder
            _write_file(fds[-1], name, table, fmt)
        finally:
            for fd in fds[1:]:
                os.close(fd)
        return where / name


class _RemoteOut:
    """OUT as a URI, through fsspec (s3fs for s3://): an object is written whole on close."""

    def __init__(self, uri: str) -> None:
        try:
            import fsspec
        except ImportError:
            raise UsageError(
                f"--out {uri}: writing to a URI needs fsspec (pip install 'tracklog[s3]')"
            ) from None
        try:
            self.fs: Any
            self.fs, self.root = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError) as exc:
            raise UsageError(f"--out {uri}: {exc}") from None
        self.where = uri
        self.protocol = uri.split("://", 1)[0]

    def has(self, folder: str) -> bool:
        return bool(self.fs.exists(f"{self.root.rstrip('/')}/{folder}"))

    def write(self, folders: list[str], name: str, table: pa.Table, fmt: FileFormat) -> str:
        path = "/".join([self.root.rstrip("/"), *folders, name])
        try:
            with self.fs.open(path, "wb") as fh:
                fmt.write(fh, table)
        except OSError as exc:
            raise DataError(f"export to {self.where}: {exc.strerror or exc}") from exc
        return f"{self.protocol}://{path}"
