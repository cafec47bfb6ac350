"""The DuckDB file: the single writer, the readers, and how the writer lets waiting readers in.

DuckDB allows one writing process or several read-only ones. An ingest holds the run lock
`<db>.lock` ("pid N") for its whole run, but the file itself only between hand-offs: its
connection is in-memory with the file ATTACHed, and after a commit, when readers wait (each
holds a shared flock on `<db>.wait`), it DETACHes the file, lets them in and ATTACHes it again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tracklog.config import DEFAULT_WAIT_SECONDS
from tracklog.duck import duckdb
from tracklog.errors import ConfigError, DataError, LockBusyError
from tracklog.schema import apply_schema, check_tracklog_database

# DuckDB's buffer pool and temporary tables fill up to these; the rest of the process (two
# chunks of a log, the compiled pass's columns, Python) comes on top. While the chunks of a log
# are stored and merged (their temporary tables are narrow and dropped when done with), DuckDB
# sits at its limit at the peak: 150 MB costs no time against 200 MB and took 40-50 MB off the
# peak (the 2M-line benchmark 452-454 to 401-407 MB; a format with many variables, such as
# nginx's upstream timings, 485-511 to 447-459 MB, on 6M lines too); a writer's
# other work (manifests, rebuilds, merges of many small inputs at once) keeps 300 MB, which a
# rebuild's batches were sized for (derived.CATCH_UP_BATCH). See README "Performance".
# TRACKLOG_WRITER_MEMORY (e.g. 400MB) overrides both (tuning, benchmarks).
WRITER_MEMORY_LIMIT = "300MB"
CHUNK_MEMORY_LIMIT = "150MB"
MEMORY_ENV = "TRACKLOG_WRITER_MEMORY"


def writer_memory_limit(default: str = WRITER_MEMORY_LIMIT) -> str:
    """The writer's DuckDB memory limit: TRACKLOG_WRITER_MEMORY when set (a number of MB or GB),
    else `default`."""
    value = os.environ.get(MEMORY_ENV) or default
    if not re.fullmatch(r"[1-9][0-9]{0,5}(MB|GB)", value):
        raise ConfigError(f"{MEMORY_ENV}={value!r}: expected a size such as 300MB or 2GB")
    return value


def set_memory_limit(con: duckdb.DuckDBPyConnection, limit: str) -> None:
    con.execute(f"SET memory_limit = '{writer_memory_limit(limit)}'")


# Rows per row group of what the writer stores (DuckDB's default: 122,880). A chunk's INSERT
# into `hits` (about 146,000 rows of the benchmark's chunks of 32 MiB, then) spread over two threads
# filled no default row group in either, so its rows were compressed and written by one thread
# at the end: with half the size each thread writes its own, 10-12% less wall time for the
# ingest at the same CPU (the file is 3% larger; finer zone maps also prune the line and time
# ranges that merges and classification read). An option of each ATTACH, not of the file: every
# writer attaches with it, so the checkpoints that merge small row groups use it too.
ROW_GROUP_SIZE = 61_440

POLL_SECONDS = 0.05  # how often a waiting reader tries the file, and a writer takes it back
# How long a hand-off waits for the waiting readers to get in; and, whatever --wait says, how
# long the writer tries to take the file back (it let the readers in itself).
HANDOFF_SECONDS = 5.0
ALIAS = "tl"  # the catalog name of the attached file in the writer's connection

OnWait = Callable[[str | None], None]  # called once when waiting starts: "pid N" of the ingest, or None


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> tuple[Any, ...] | None:
    """The first row of a query, with the result fully consumed.

    DuckDB refuses register() and some other calls while a result is only partly fetched,
    so never leave fetchone() results open on a shared connection.
    """
    rows = con.execute(sql, params).fetchall()
    return tuple(rows[0]) if rows else None


# meta key of the log format `tracklog nginx-config` generated ("name\nspec"): what ingest reads
# when neither --log-format nor the config file names one
LOG_FORMAT_KEY = "log_format"


def meta_value(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    row = fetch_one(con, "SELECT value FROM meta WHERE key = ?", [key])
    return None if row is None else str(row[0])


def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])


# What DuckDB says when the file or the disk, not tracklog, is the problem
_DAMAGED = ("corrupt database file", "could not read enough bytes", "invalid magic", "not a valid duckdb")
_UNWRITABLE = ("no space left", "disk quota", "read-only file system", "permission denied", "could not write")


def environment_problem(exc: BaseException) -> str | None:
    """One line saying what is wrong with the database file or its disk when `exc` (a DuckDB or
    OS error) is such a failure rather than a bug, with what to do; None otherwise."""
    if not isinstance(exc, (duckdb.Error, OSError)):
        return None
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lower = text.lower()
    if isinstance(exc, OSError) and exc.errno in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
    ):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or text}: cannot write next to the database (free space, or a writable folder)"
    if any(m in lower for m in _DAMAGED):
        return (
            f"the database file is damaged ({text}): restore it from a backup, or ingest the logs "
            "into a new file with --db"
        )
    if any(m in lower for m in _UNWRITABLE):
        return f"the database cannot be written ({text}): free disk space or fix the permissions, then run again (what was committed is kept)"
    if isinstance(exc, duckdb.IOException):
        return f"database input/output error ({text})"
    return None


def cleanup(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Run a clean-up statement (a ROLLBACK, a DROP of temporary tables) that must never hide
    the error that made it necessary: after a failed statement (a full disk, say) DuckDB refuses
    everything but a rollback, which undoes the temporary tables anyway."""
    try:
        con.execute(sql)
    except duckdb.Error:
        pass


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


def wait_path(db: Path) -> Path:
    return db.with_name(db.name + ".wait")


# -- the writer --------------------------------------------------------------------------------


class WriterSession:
    """The ingest's connection (`con`, the file attached as its default catalog) and the
    hand-off of the file to waiting readers between commits."""

    def __init__(self, con: duckdb.DuckDBPyConnection, db: Path, wait: float, signal: int | None) -> None:
        self.con = con
        self.db = db
        self.wait = wait
        self._signal = signal  # fd of <db>.wait; None when it cannot be opened (no hand-offs)
        self.lost: LockBusyError | None = None  # set when the file could not be taken back

    def hand_off(self, prepare: Callable[[], None] | None = None) -> None:
        """Outside a transaction: when readers wait, `prepare` (what they must find done), then
        let them in, then take the file back. Costs one non-blocking flock when nobody waits."""
        if self._signal is None or not _readers_waiting(self._signal):
            return
        if prepare is not None:
            prepare()
        self.con.execute(f"USE memory; DETACH {ALIAS}")  # checkpoints; temp tables stay
        deadline = time.monotonic() + HANDOFF_SECONDS
        while _readers_waiting(self._signal) and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            _attach(self.con, self.db, max(self.wait, HANDOFF_SECONDS), taking_back=True)
        except LockBusyError as exc:
            self.lost = exc
            raise

    def rewrite(self) -> None:
        """Outside a transaction: write the database anew into a fresh file (its tables, views
        and rows as they are now) and put it in place of the old one, so that no byte of erased
        rows stays in the file's free blocks (`tracklog forget`). Readers that have the old file
        open keep reading it; the session holds the new one afterwards."""
        fresh = self.db.with_name(self.db.name + ".rewrite")
        fresh.unlink(missing_ok=True)
        self.con.execute(f"ATTACH ? AS tl_fresh (ROW_GROUP_SIZE {ROW_GROUP_SIZE})", [str(fresh)])
        try:
            self.con.execute(f"COPY FROM DATABASE {ALIAS} TO tl_fresh")
        finally:
            self.con.execute("DETACH tl_fresh")
        self.con.execute(f"USE memory; DETACH {ALIAS}")
        os.replace(fresh, self.db)
        _attach(self.con, self.db, self.wait, taking_back=True)

    def close(self) -> None:
        self.con.close()
        if self._signal is not None:
            os.close(self._signal)


@contextmanager
def writer_session(
    db: Path, wait: float = DEFAULT_WAIT_SECONDS, threads: int | None = None, on_wait: OnWait | None = None
) -> Iterator[WriterSession]:
    """The single writer: holds `<db>.lock` until the end, and the file except during hand-offs.
    `on_wait` is called if another ingest holds the run lock."""
    if db.parent and not db.parent.exists():
        raise DataError(f"database {db}: folder {db.parent} does not exist")
    check_database_file(db)
    _peek(db)
    run_lock = _acquire_run_lock(db, wait, on_wait)
    try:
        session = WriterSession(duckdb.connect(":memory:", config=_NO_EXTENSIONS), db, wait, _open_signal(db))
        try:
            if threads:
                session.con.execute(f"SET threads = {int(threads)}")
            # DuckDB's default is 80% of RAM: a long ingest would keep growing its buffer pool
            set_memory_limit(session.con, WRITER_MEMORY_LIMIT)
            # what does not fit spills next to the database, as for a file opened directly (an
            # in-memory connection would spill into ./.tmp of whatever folder cron runs in)
            spill = str(db.with_name(db.name + ".tmp")).replace("'", "''")
            session.con.execute(f"SET temp_directory = '{spill}'")
            _attach(session.con, db, wait, taking_back=False)
            apply_schema(session.con)
            try:
                yield session
            except Exception as exc:
                # what failed after a lost hand-off failed for want of the file: say that
                if session.lost is None:
                    raise
                raise session.lost from exc
            if session.lost is not None:
                raise session.lost
        finally:
            session.close()
    finally:
        run_lock.close()


@contextmanager
def open_writer(
    db: Path, wait: float = DEFAULT_WAIT_SECONDS, threads: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A writer's connection, for work without hand-offs (tests, benchmarks)."""
    with writer_session(db, wait, threads) as session:
        yield session.con


# DuckDB would install and load an extension to open some files (a SQLite file, say): never.
_NO_EXTENSIONS: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
_DUCKDB_MAGIC = (8, b"DUCK")  # offset and bytes of the magic in a DuckDB file's header
_SQLITE_MAGIC = b"SQLite format 3\0"


def check_database_file(db: Path) -> None:
    """Refuse, from its first bytes and before anything is created or opened, a --db that is not
    a DuckDB file (a SQLite file, a log, a folder). A missing or empty file is a new database."""
    try:
        with db.open("rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise DataError(f"database {db}: not a regular file")
            head = fh.read(16)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise DataError(f"database {db}: is a folder (name the DuckDB file with --db)") from None
    except PermissionError:
        raise DataError(f"database {db}: permission denied") from None
    except OSError as exc:
        raise DataError(f"database {db}: cannot read ({exc.strerror or exc})") from None
    if not head:
        return
    offset, magic = _DUCKDB_MAGIC
    if head[offset : offset + len(magic)] == magic:
        return
    kind = "a SQLite database" if head.startswith(_SQLITE_MAGIC) else "not a DuckDB database"
    raise DataError(
        f"database {db}: {kind}: nothing was written; name a tracklog database or a new file with --db"
    )


def _peek(db: Path) -> None:
    """Before taking the lock (which creates files next to it): an existing database must be
    tracklog's, of a schema this version knows. Skipped while a writer holds it (tracklog's ingest)."""
    if not db.exists() or db.stat().st_size == 0:
        return
    con = _try_read_only(db)
    if con is None:
        return
    try:
        check_tracklog_database(con, db)
    finally:
        con.close()


def _acquire_run_lock(db: Path, wait: float, on_wait: OnWait | None) -> IO[str]:
    path = lock_path(db)
    try:
        fh = path.open("a+")
    except OSError as exc:
        raise DataError(
            f"database {db}: cannot create its lock file {path} ({exc.strerror or exc}): an ingest needs "
            "a folder it can write"
        ) from None
    deadline = time.monotonic() + max(wait, 0.0)
    waiting = False
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or None
            if time.monotonic() >= deadline:
                fh.close()
                raise LockBusyError(
                    f"database {db} is busy: another tracklog ingest holds {path} ({holder or 'unknown'}); "
                    f"waited {wait:g}s (raise it with --wait)"
                ) from None
            if not waiting and on_wait is not None:
                on_wait(holder)
            waiting = True
            time.sleep(POLL_SECONDS)
            continue
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        return fh


def _attach(con: duckdb.DuckDBPyConnection, db: Path, wait: float, *, taking_back: bool) -> None:
    """ATTACH the file as the default catalog, retrying while readers have it open."""
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            con.execute(f"ATTACH ? AS {ALIAS} (ROW_GROUP_SIZE {ROW_GROUP_SIZE})", [str(db)])
            con.execute(f"USE {ALIAS}")
            return
        except duckdb.Error as exc:
            if not _is_busy(exc):
                raise DataError(f"database {db}: {environment_problem(exc) or exc}") from exc
            if time.monotonic() >= deadline:
                who = "a reader let in between commits" if taking_back else "another process"
                raise LockBusyError(
                    f"database {db} is busy: {who} has it open; waited {wait:g}s (raise it with --wait)"
                ) from None
            time.sleep(POLL_SECONDS)


def _readers_waiting(signal: int) -> bool:
    """Whether some reader holds its shared lock on `<db>.wait` (a non-blocking test)."""
    try:
        fcntl.flock(signal, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(signal, fcntl.LOCK_UN)
    return False


# -- readers -----------------------------------------------------------------------------------


@contextmanager
def open_reader(
    db: Path, wait: float = DEFAULT_WAIT_SECONDS, on_wait: OnWait | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection, waiting up to `wait` seconds while an ingest holds the file;
    `on_wait` is called once if it has to wait. A database that does not exist reads as empty."""
    check_database_file(db)
    if not db.exists() or db.stat().st_size == 0:
        con = duckdb.connect(":memory:")
        try:
            apply_schema(con)
            yield con
        finally:
            con.close()
        return
    con = _connect_reader(db, wait, on_wait)
    try:
        check_tracklog_database(con, db)
        yield con
    finally:
        con.close()


def _connect_reader(db: Path, wait: float, on_wait: OnWait | None) -> duckdb.DuckDBPyConnection:
    con = _try_read_only(db)
    if con is not None:
        return con
    holder = _ingest_holder(db)
    if on_wait is not None and wait > 0:
        on_wait(holder)
    deadline = time.monotonic() + wait
    signal = _open_signal(db)
    try:
        while True:
            if signal is not None:
                _raise_hand(signal)
            con = _try_read_only(db)
            if con is not None:
                return con
            if time.monotonic() >= deadline:
                who = f"the ingest ({holder})" if holder else "another process"
                raise LockBusyError(
                    f"database {db} is busy: {who} is writing it; waited {wait:g}s "
                    "(raise it with --wait SECONDS or the config key wait)"
                )
            time.sleep(POLL_SECONDS)
    finally:
        if signal is not None:
            os.close(signal)  # drops the shared lock: connected, or given up


def _try_read_only(db: Path) -> duckdb.DuckDBPyConnection | None:
    """A read-only connection, or None while a writer holds the file."""
    try:
        return duckdb.connect(str(db), read_only=True, config=_NO_EXTENSIONS)
    except duckdb.Error as exc:
        if _is_busy(exc):
            return None
        raise DataError(f"database {db}: {environment_problem(exc) or exc}") from exc


def _raise_hand(signal: int) -> None:
    """Take (or keep) the shared lock on `<db>.wait` that asks the writer for a hand-off."""
    try:
        fcntl.flock(signal, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # the writer is testing the lock this very moment: next poll


def ingest_running(db: Path) -> bool:
    """Whether an ingest holds the run lock of `db` now (it may not have created the file yet)."""
    return _ingest_holder(db) is not None


def _ingest_holder(db: Path) -> str | None:
    """The holder ("pid N") of the run lock when an ingest holds it now, else None."""
    try:
        fh = lock_path(db).open()
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or None
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return None


def _open_signal(db: Path) -> int | None:
    """A descriptor of `<db>.wait` (created when missing), or None when it cannot be opened."""
    path = wait_path(db)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        pass
    try:
        return os.open(path, os.O_RDONLY)  # made by a user who may write the folder; flock needs no more
    except OSError:
        return None


def _is_busy(exc: duckdb.Error) -> bool:
    """A lock conflict: another process (or, in this one, another connection) has the file."""
    if isinstance(exc, duckdb.IOException):
        return "lock" in str(exc).lower()
    return isinstance(exc, duckdb.ResourceInUseException)
