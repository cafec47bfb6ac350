"""The DuckDB file: connecting (with the writer lock and waiting), the schema and its version.

One process writes at a time: writers take an advisory lock on `<db>.lock` (flock) and
hold it for the whole run; readers open the database read-only. Both wait up to `wait`
seconds for the other side before giving up with LockBusyError.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import duckdb

from tracklog import metrics
from tracklog.errors import DataError, LockBusyError
from tracklog.ingest.routes import PATH_SQL

SCHEMA_VERSION = 2  # 2: hits.path became a virtual column (computed from the route and ids)
# DuckDB's buffer pool fills up to this (cached blocks of the tables being written); the rest of
# the process (two chunks of lines in Arrow, Python) comes on top: ~800 MB peak on 8M lines.
# 512 MB gave the same speed and a 940 MB peak.
WRITER_MEMORY_LIMIT = "400MB"

# The stored columns of `hits`, in order: what an INSERT names (`path` is computed).
HIT_COLUMNS = (
    "source_id",
    "line_no",
    "byte_offset",
    "ts",
    "ip",
    "method",
    "query",
    "status",
    "bytes",
    "referer",
    "user_agent",
    "uid",
    "extra",
    "kind",
    "delivery_id",
    "link_id",
    "recipient_id",
    "sig_status",
)


def hits_ddl(table: str) -> str:
    return f"""
-- every parsed line that hit a tracking route
CREATE TABLE IF NOT EXISTS {table} (
    source_id    INTEGER NOT NULL,
    line_no      BIGINT NOT NULL,       -- 1-based line number in the decompressed source
    byte_offset  BIGINT NOT NULL,       -- offset of the line's first byte in the decompressed source
    ts           TIMESTAMP NOT NULL,    -- UTC
    ip           VARCHAR,
    method       VARCHAR,
    -- The request path: computed from kind and ids, which the route match took from it
    -- exactly, so nothing is lost and no ingest pays for storing it twice.
    path         VARCHAR GENERATED ALWAYS AS ({PATH_SQL}) VIRTUAL,
    query        VARCHAR USING COMPRESSION uncompressed,  -- without the '?'; NULL when absent.
                                        -- Mostly the random ?s= signature: compressing it costs
                                        -- a third of the insert time and saves almost nothing
    status       SMALLINT,
    bytes        BIGINT,
    referer      VARCHAR,
    user_agent   VARCHAR,
    uid          VARCHAR,               -- nginx userid cookie ($uid_got, else $uid_set) when logged
    extra        VARCHAR,               -- JSON object of the other log_format variables, NULL if none
    kind         VARCHAR NOT NULL,      -- open | click | mirror | unsubscribe
    delivery_id  VARCHAR NOT NULL,
    link_id      VARCHAR,               -- clicks only
    recipient_id VARCHAR NOT NULL,
    sig_status   VARCHAR NOT NULL       -- the ?s= signature: valid | invalid | missing | unchecked
);
"""


SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);

-- one row per log stream, recognised by the fingerprint of its first bytes (decompressed)
CREATE TABLE IF NOT EXISTS sources (
    source_id    INTEGER PRIMARY KEY,
    fingerprint  VARCHAR NOT NULL,      -- hex sha256 of the first fp_len bytes
    fp_len       INTEGER NOT NULL,
    path         VARCHAR NOT NULL,      -- the name it was last read under
    compressed   BOOLEAN NOT NULL,
    byte_offset  BIGINT NOT NULL,       -- decompressed bytes consumed (complete lines only)
    lines        BIGINT NOT NULL,
    hits         BIGINT NOT NULL,
    ignored      BIGINT NOT NULL,
    quarantined  BIGINT NOT NULL,
    log_format   VARCHAR NOT NULL,
    first_ingest TIMESTAMP NOT NULL,
    last_ingest  TIMESTAMP NOT NULL
);

"""
    + hits_ddl("hits")
    + """
-- lines that did not parse
CREATE TABLE IF NOT EXISTS quarantine (
    source_id    INTEGER NOT NULL,
    line_no      BIGINT NOT NULL,
    byte_offset  BIGINT NOT NULL,
    reason       VARCHAR NOT NULL,
    raw          BLOB NOT NULL          -- the line's bytes, truncated to 2048
);

CREATE TABLE IF NOT EXISTS runs (
    run_id       INTEGER PRIMARY KEY,
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    files        INTEGER,
    lines        BIGINT,
    hits         BIGINT,
    ignored      BIGINT,
    quarantined  BIGINT,
    rejected     BIGINT,
    errors       INTEGER,
    exit_code    INTEGER
);

CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id     VARCHAR PRIMARY KEY,
    label           VARCHAR NOT NULL,
    sent_at         TIMESTAMP NOT NULL, -- UTC
    subject         VARCHAR,
    content_file    VARCHAR,            -- as named in the manifest
    content_html    VARCHAR,            -- the message's HTML, kept so reports never need the file
    manifest_path   VARCHAR NOT NULL,
    manifest_sha256 VARCHAR NOT NULL,
    loaded_at       TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS links (
    delivery_id  VARCHAR NOT NULL,
    link_id      VARCHAR NOT NULL,
    position     INTEGER NOT NULL,      -- 1-based order of appearance in the message
    url          VARCHAR NOT NULL,
    label        VARCHAR NOT NULL,
    category     VARCHAR
);

CREATE TABLE IF NOT EXISTS recipients (
    delivery_id  VARCHAR NOT NULL,
    recipient_id VARCHAR NOT NULL,
    email        VARCHAR,
    status       VARCHAR NOT NULL,      -- sent | failed
    attributes   VARCHAR                -- JSON object of the other columns, NULL if none
);
"""
)


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> tuple[Any, ...] | None:
    """The first row of a query, with the result fully consumed.

    DuckDB refuses register() and some other calls while a result is only partly fetched,
    so never leave fetchone() results open on a shared connection.
    """
    rows = con.execute(sql, params).fetchall()
    return tuple(rows[0]) if rows else None


def _apply_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)
    row = fetch_one(con, "SELECT value FROM meta WHERE key = 'schema_version'")
    if row is None:
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    elif int(row[0]) > SCHEMA_VERSION:
        raise DataError(
            f"database was written by a newer tracklog (schema {row[0]}, this one knows {SCHEMA_VERSION})"
        )
    elif int(row[0]) < 2:
        _migrate_path_column(con)


def _migrate_path_column(con: duckdb.DuckDBPyConnection) -> None:
    """Schema 1 -> 2: rebuild `hits` with `path` computed instead of stored (one transaction;
    a rewrite of the table, once). The views are created again by the caller."""
    columns = ", ".join(HIT_COLUMNS)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(hits_ddl("hits_v2"))
        con.execute(f"INSERT INTO hits_v2 ({columns}) SELECT {columns} FROM hits")
        con.execute("DROP TABLE hits")
        con.execute("ALTER TABLE hits_v2 RENAME TO hits")
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


def _acquire_lock(db: Path, wait: float) -> IO[str]:
    path = lock_path(db)
    fh = path.open("a+")
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                fh.close()
                raise LockBusyError(
                    f"database {db} is busy: another tracklog ingest holds {path} ({holder}); "
                    f"waited {wait:g}s (raise it with --wait)"
                ) from None
            time.sleep(0.1)
            continue
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        return fh


def _connect_retrying(db: Path, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise DataError(f"database {db}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise LockBusyError(
                    f"database {db} is busy (another tracklog process has it open for writing); "
                    f"waited {wait:g}s (raise it with --wait)"
                ) from None
            time.sleep(0.1)
        except duckdb.Error as exc:
            raise DataError(f"database {db}: {exc}") from exc


@contextmanager
def open_writer(
    db: Path, wait: float = 10.0, threads: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The single writer: holds `<db>.lock` for as long as the connection is open."""
    if db.parent and not db.parent.exists():
        raise DataError(f"database {db}: folder {db.parent} does not exist")
    lock = _acquire_lock(db, wait)
    try:
        con = _connect_retrying(db, read_only=False, wait=wait)
        try:
            if threads:
                con.execute(f"SET threads = {int(threads)}")
            # DuckDB's default is 80% of RAM: a long ingest would keep growing its buffer pool
            con.execute(f"SET memory_limit = '{WRITER_MEMORY_LIMIT}'")
            _apply_schema(con)
            metrics.ensure_views(con)
            yield con
        finally:
            con.close()
    finally:
        lock.close()


@contextmanager
def open_reader(db: Path, wait: float = 10.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection; a database that does not exist yet reads as empty."""
    if not db.exists():
        con = duckdb.connect(":memory:")
        try:
            _apply_schema(con)
            metrics.ensure_views(con)
            yield con
        finally:
            con.close()
        return
    con = _connect_retrying(db, read_only=True, wait=wait)
    try:
        yield con
    finally:
        con.close()
