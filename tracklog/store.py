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
from tracklog.schema import apply_schema

# DuckDB's buffer pool fills up to this (cached blocks of the tables being written); the rest of
# the process (two chunks of lines in Arrow, Python) comes on top: ~800 MB peak on 8M lines.
# 512 MB gave the same speed and a 940 MB peak.
WRITER_MEMORY_LIMIT = "400MB"


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> tuple[Any, ...] | None:
    """The first row of a query, with the result fully consumed.

    DuckDB refuses register() and some other calls while a result is only partly fetched,
    so never leave fetchone() results open on a shared connection.
    """
    rows = con.execute(sql, params).fetchall()
    return tuple(rows[0]) if rows else None


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
            apply_schema(con)
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
            apply_schema(con)
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
