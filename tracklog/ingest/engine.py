"""The ingest run: each log stream is read from where the last run stopped, in chunks; each
chunk is parsed, routed and verified, its hits classified, resolved and stored, and committed
together with its new read position in one transaction; the derived tables are merged every
few chunks (derived.merge_stored), in a transaction of their own.

Python only moves bytes (read, decompress, cut at the last newline); splitting and parsing is
the compiled pass (fastpath.py) where the format allows, else pyarrow's CSV reader and one
vectorized SQL statement per chunk, both one chunk ahead in a thread (prefetch.ReadAhead).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from tracklog import derived
from tracklog.duck import duckdb, load_arrow
from tracklog.errors import DataError, TracklogError
from tracklog.ingest import sources
from tracklog.ingest.fastpath import COLUMNS as FAST_COLUMNS
from tracklog.ingest.fastpath import PARSED_FIELDS, FastParser, fast_parser, parse_path, split_buffer
from tracklog.ingest.formats import LogFormat
from tracklog.ingest.lookup import RecipientLookup
from tracklog.ingest.prefetch import ReadAhead
from tracklog.ingest.sources import FP_MAX, STDIN, InputSpec, LogStream, display_name, fingerprint
from tracklog.metrics import LOOKED_UP
from tracklog.profiling import NoPhases, Phases
from tracklog.routes import HIT_KINDS as KINDS
from tracklog.routes import PAGE_KIND, routed_sql
from tracklog.schema import HIT_COLUMNS
from tracklog.signing import (
    WRONG_SECRET_HINT,
    hmac_pads,
    hmac_pads_of,
    looks_like_wrong_secret,
    sql_pad_params,
    sql_recipient_hash,
    sql_sig_status,
)
from tracklog.store import (
    CHUNK_MEMORY_LIMIT,
    WRITER_MEMORY_LIMIT,
    cleanup,
    environment_problem,
    fetch_one,
    set_memory_limit,
)

load_arrow()  # this module hands Arrow tables to DuckDB

# the columns of a chunk parsed by the compiled pass (make_chunk), in order
CHUNK_COLUMNS = tuple(c for c in FAST_COLUMNS if c != "path")
RAW_MAX = 2048  # bytes of a quarantined line that are kept
BAD_RATIO_LINES = 1000  # the wrong-format check looks at this many first lines of a new stream
BAD_RATIO_MIN = 20  # ... and only when it has at least this many

Progress = Callable[[str, int, int], None]  # (input name, bytes done on disk, lines done)


@dataclass
class FileResult:
    """What one input contributed to the database (or why it could not)."""

    name: str
    status: str = "ok"  # ok | unchanged | empty | error
    source_id: int | None = None
    new_source: bool = False
    resumed_at: int = 0
    bytes: int = 0
    lines: int = 0
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    ignored: int = 0
    quarantined: int = 0
    rejected: int = 0
    signed: int = 0  # hits carrying a signature (valid or invalid)
    invalid: int = 0
    error: str | None = None

    @property
    def hit_count(self) -> int:
        return sum(self.hits.values())

    def add(self, counts: Counts) -> None:
        self.lines += counts.lines
        self.quarantined += counts.quarantined
        self.rejected += counts.rejected
        self.signed += counts.signed
        self.invalid += counts.invalid
        for kind, n in counts.hits.items():
            self.hits[kind] += n
        self.ignored += counts.lines - sum(counts.hits.values()) - counts.quarantined


class FormatMismatch(DataError):
    pass


@dataclass
class Counts:
    lines: int = 0
    quarantined: int = 0
    rejected: int = 0
    signed: int = 0
    invalid: int = 0
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    last_hit: dt.datetime | None = None  # of the chunk's newest hit


# The hits of a chunk are merged into the derived tables with those of the next chunks, in a
# transaction of their own (Ingester.merge_pending): every MERGE_CHUNKS chunks or MERGE_HITS
# hits, before a hand-off to readers, and at the end. One merge of several chunks costs less
# than one per chunk (a merge's statements cost about 0.1-0.2 s whatever its size, and its joins
# with the stored readers and browsers scan them once), and it reads hits already committed;
# MERGE_HITS bounds its memory. A chunk of fewer than SMALL_CHUNK_LINES lines is stored
# unresolved too (classifying and resolving it would cost more than its hits): the merge
# resolves it with the others.
SMALL_CHUNK_LINES = 10_000
MERGE_CHUNKS = 2_000
MERGE_HITS = 1_000_000
# `ingest --profile`: the read-ahead thread's own CPU (reading, gunzip, split, the compiled
# parse), spent while the phases ran
READ_AHEAD_PHASE = "read-ahead thread"


def wrong_secret_problem(name: str, signed: int, invalid: int) -> str | None:
    """The one-line error when nearly all of an input's signed hits failed verification."""
    if not looks_like_wrong_secret(signed, invalid):
        return None
    return (
        f"{name}: {invalid} of {signed} signed hits failed signature verification and are stored "
        f"as rejected: {WRONG_SECRET_HINT}"
    )


class Ingester:
    """Ingests log inputs into an open writer connection, one transaction per input."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        log_format: LogFormat,
        *,
        secret: bytes | Sequence[bytes] | None,
        verify_signatures: bool,
        max_bad_ratio: float,
        progress: Progress | None = None,
        phases: Phases | None = None,
        between_commits: Callable[[Callable[[], None]], None] | None = None,
        truncate_ips: bool = False,
    ) -> None:
        self.con = con
        self.truncate_ips = truncate_ips
        # after each chunk's commit: hand the file to waiting readers, calling its argument
        # first (merge_pending: readers must find the figures current)
        self.between_commits = between_commits
        self._unmerged = (0, 0)  # chunks committed since the last merge, and their hits
        self._unresolved = 0  # lines of those that are small chunks, stored unresolved
        self.problems: list[str] = []  # errors that are no input's (a failed merge)
        self._tombstones: bool | None = None
        self._chunk_view = False  # tl_chunk is a view over the fast rows and the deferred ones
        self._vacuum = True  # DuckDB's default: checkpoints merge small row groups
        self._limit = WRITER_MEMORY_LIMIT  # DuckDB's memory limit (store.set_memory_limit)
        self.phases = phases if phases is not None else NoPhases()
        self.fmt = log_format
        self.verify = verify_signatures
        self.max_bad_ratio = max_bad_ratio
        self.progress = progress
        self._params: dict[str, object] = {}
        secrets = [secret] if isinstance(secret, bytes) else list(secret or ())
        self._keys = len(secrets)
        # tombstones of `tracklog forget` hold keyed hashes (made with the signing key of the
        # day): checking them needs the secrets, every one of them after a rotation
        self._pads = [hmac_pads(s) for s in secrets]
        if verify_signatures:
            if not secrets:
                raise DataError("cannot verify tracking hits without a secret")
            self._params = dict(sql_pad_params(secrets))
        self._chunk_sql = self._compile_chunk_sql()
        self._fast = fast_parser(log_format, hmac_pads_of(secrets) if verify_signatures else None)
        self.phases.note(f"lines parsed by {parse_path(self._fast)}")
        # the recipients of the compiled pass's chunks, looked up before they are stored (with
        # the fast parse, which the lookup's extension comes with)
        self._lookup = (
            RecipientLookup(con) if self._fast is not None and RecipientLookup.available() else None
        )
        self._looked_up = False  # tl_chunk has the columns metrics.LOOKED_UP

    def _compile_chunk_sql(self) -> str:
        """The SELECT turning tl_lines into tl_chunk's rows: the reference that the compiled fast
        path (fastpath.py) reproduces exactly, and the path of every format it does not cover."""
        # a page tag's token is checked for its shape even unverified: without one (or with a
        # malformed one) a page tag has no recipient
        page = f"""WHEN kind = '{PAGE_KIND}' AND (sig IS NULL OR sig = '') THEN 'missing'
                WHEN kind = '{PAGE_KIND}' AND signed IS NULL THEN 'invalid'"""
        if self.verify:
            sig_status = f"CASE WHEN kind IS NULL THEN NULL {page} ELSE {sql_sig_status('signed', 'sig', self._keys)} END"
        else:
            sig_status = f"CASE WHEN kind IS NULL THEN NULL {page} ELSE 'unchecked' END"
        parsed = f"({self.fmt.select_sql('tl_lines')})"
        # a quarantined row keeps its raw line and nothing parsed (whatever a split of garbage
        # gave); copying every line would double the work
        fields = ", ".join(f"CASE WHEN reason IS NULL THEN {c} END AS {c}" for c in PARSED_FIELDS)
        return f"""SELECT line_no, byte_offset, reason, CASE WHEN reason IS NOT NULL THEN line END AS line,
                {fields}, kind, delivery_id, link_id, recipient_id, {sig_status} AS sig_status
            FROM ({routed_sql(parsed)})"""

    # -- one input ---------------------------------------------------------------------
    def ingest(self, spec: InputSpec) -> FileResult:
        result = FileResult(name=display_name(spec.name))
        try:
            stream = LogStream(spec)
        except TracklogError as exc:
            result.status, result.error = "error", str(exc)
            return result
        try:
            with self._memory(CHUNK_MEMORY_LIMIT):
                self._ingest_stream(stream, result)
            if stream.damage is not None:
                raise DataError(
                    f"{result.name}: {stream.damage}: only its first {stream.verified or 0} bytes "
                    "(decompressed, the members whose checksum matched) were read; ingest an intact "
                    "copy to complete it (it resumes there)"
                )
            if (problem := wrong_secret_problem(result.name, result.signed, result.invalid)) is not None:
                raise DataError(problem)
        except TracklogError as exc:
            self._rollback()
            result.status, result.error = "error", str(exc)
        except duckdb.Error as exc:
            self._rollback()
            problem = environment_problem(exc) or f"database error: {exc}"
            result.status, result.error = "error", f"{result.name}: {problem}"
        finally:
            stream.close()
        return result

    def _rollback(self) -> None:
        cleanup(self.con, "ROLLBACK")

    def _find_source(self, head: bytes) -> tuple[int, int, int, int] | None:
        """(source_id, byte_offset, lines, fp_len) of the known stream this head belongs to."""
        best = None
        lens = self.con.execute(
            "SELECT DISTINCT fp_len FROM sources WHERE fp_len <= ? ORDER BY fp_len DESC", [len(head)]
        ).fetchall()
        for (length,) in lens:
            row = fetch_one(
                self.con,
                "SELECT source_id, byte_offset, lines, fp_len FROM sources "
                "WHERE fp_len = ? AND fingerprint = ? ORDER BY last_ingest DESC, source_id DESC LIMIT 1",
                [length, fingerprint(head, length)],
            )
            if row is not None:
                best = (int(row[0]), int(row[1]), int(row[2]), int(row[3]))
                break
        return best

    def _ingest_stream(self, stream: LogStream, result: FileResult) -> None:
        if not stream.head:
            result.status = "empty"
            return
        known = self._find_source(stream.head)
        if known is not None and stream.size_limit is not None and stream.size_limit < known[1]:
            known = None  # the file is shorter than what we read of it: truncated and rewritten
        if known is None:
            row = fetch_one(self.con, "SELECT coalesce(max(source_id), 0) + 1 FROM sources")
            source_id, offset, line_base = int(row[0]) if row else 1, 0, 0
            result.new_source = True
        else:
            source_id, offset, line_base, _ = known
        result.source_id, result.resumed_at = source_id, offset
        stored = not result.new_source  # does the sources row exist yet?
        if self.progress is not None:
            self.progress(result.name, 0, 0)
        read_ahead = ReadAhead(_split_chunks(stream, offset, line_base, self._fast))
        with read_ahead as chunks:
            while True:
                with self.phases.phase("read, gunzip, split (waiting for)"):
                    chunk = next(chunks, None)
                if chunk is None:
                    break
                self._ingest_one(stream, result, chunk, offset, line_base, stored)
                stored = True
        self.phases.overlapped(READ_AHEAD_PHASE, read_ahead.cpu_seconds)
        if result.lines == 0:
            # nothing new, or no complete line yet (a new file is fingerprinted once it has one)
            result.status = "empty" if result.new_source else "unchanged"

    def _ingest_one(
        self, stream: LogStream, result: FileResult, chunk: Chunk, offset: int, line_base: int, stored: bool
    ) -> None:
        source_id = result.source_id
        assert source_id is not None
        # One transaction per chunk: its rows and the new read position commit together,
        # so a crash loses at most the chunk in flight and memory stays bounded.
        self.con.execute("BEGIN TRANSACTION")
        counts = self._ingest_chunk(source_id, chunk)
        if not stored:
            self._check_format(line_base + 1, result.name)
        end = chunk.offset + chunk.size
        self._save_position(source_id, stream, result.name, end, counts, insert=not stored)
        _fault_point(result.lines + counts.lines)
        self._vacuum_at_checkpoints(chunk.lines.num_rows < SMALL_CHUNK_LINES)
        with self.phases.phase("commit"):
            self.con.execute("COMMIT")
        self._unmerged = (self._unmerged[0] + 1, self._unmerged[1] + sum(counts.hits.values()))
        if self._unmerged[0] >= MERGE_CHUNKS or self._unmerged[1] >= MERGE_HITS:
            self.merge_pending()
        if self.between_commits is not None:
            self.between_commits(self.merge_pending)
        result.add(counts)
        result.bytes = end - offset
        if self.progress is not None:
            self.progress(result.name, stream.disk_position(), result.lines)

    @contextmanager
    def _memory(self, limit: str) -> Iterator[None]:
        """DuckDB's memory limit set to `limit` (store.set_memory_limit) for the block, then back."""
        before = self._limit
        if limit != before:
            set_memory_limit(self.con, limit)
            self._limit = limit
        try:
            yield
        finally:
            if self._limit != before:
                try:
                    set_memory_limit(self.con, before)
                    self._limit = before
                except duckdb.Error:
                    # a failed transaction refuses it until its rollback (and the error that
                    # left the block is the one to report): the next block sets its own limit
                    pass

    def _vacuum_at_checkpoints(self, on: bool) -> None:
        """Whether the checkpoints that follow merge small row groups (DuckDB's vacuum).

        A large chunk's hits are written as one or more full row groups of `hits` plus a partial
        one; a checkpoint that vacuums rewrites the partial ones with their neighbours into full
        ones, which cost 40% of a large chunk's commit (about 4 of 26 CPU-s on the 2M-line
        benchmark log) and saved a few row groups: it is off while large chunks commit. Small
        chunks (and merges) turn it back on, so small runs (cron every few minutes) do not leave
        a tiny row group each; their vacuum also merges what large chunks left, once."""
        if on != self._vacuum:
            self.con.execute("RESET max_vacuum_tasks" if on else "SET max_vacuum_tasks = 0")
            self._vacuum = on

    def merge_pending(self) -> None:
        """Merge the hits of the chunks committed since the last merge (derived.merge_stored), and
        resolve and merge those of small chunks stored unresolved (derived.store_unresolved), in
        transactions of their own. Called after enough of them, before a hand-off to readers, and
        at the end of the run; after a crash, the next sync does it."""
        if not self._unmerged[0]:
            return
        self._unmerged = (0, 0)
        # merging stored hits needs no more memory than a chunk (DuckDB spills what does not
        # fit), and raising the limit for it cost 10% more time and 60 MB more peak RSS on the
        # benchmark; resolving many small chunks' hits classifies them too (CATCH_UP_BATCH), with
        # the writer's limit. One small chunk (the tail of a large log) is less than a chunk:
        # with the writer's limit, the merge after a 2M-line log that ended in one took the
        # ingest's peak from 445-452 to 479-490 MB
        limit = CHUNK_MEMORY_LIMIT
        if self._unresolved:  # small chunks: see _vacuum_at_checkpoints
            self._vacuum_at_checkpoints(True)
            if self._unresolved >= SMALL_CHUNK_LINES:
                limit = WRITER_MEMORY_LIMIT
            self._unresolved = 0
        try:
            with self.phases.phase("merge the derived tables"), self._memory(limit):
                derived.sync(self.con)
        except duckdb.Error as exc:
            # the hits and read positions are committed: the next run (or report) merges them
            problem = environment_problem(exc) or f"database error: {exc}"
            self.problems.append(
                f"merging the new hits into the derived tables failed ({problem}); they are stored "
                "and the next run (or report) merges them"
            )

    def _save_position(
        self, source_id: int, stream: LogStream, name: str, end: int, counts: Counts, *, insert: bool
    ) -> None:
        fp_len = min(FP_MAX, len(stream.head), end)
        fp = fingerprint(stream.head, fp_len)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        name = name if stream.name == STDIN else os.path.abspath(stream.name)  # cron runs anywhere
        hits = sum(counts.hits.values())
        ignored = counts.lines - hits - counts.quarantined
        if insert:  # a new stream starts at zero; the UPDATE below adds this chunk
            self.con.execute(
                "INSERT INTO sources (source_id, fingerprint, fp_len, path, compressed, byte_offset, lines, "
                "hits, ignored, quarantined, log_format, first_ingest, last_ingest) "
                "VALUES (?, '', 0, ?, ?, 0, 0, 0, 0, 0, ?, ?, ?)",
                [source_id, name, stream.compressed, self.fmt.name, now, now],
            )
        # the server: as named now, else as first named (a rotated copy read from elsewhere keeps it)
        self.con.execute(
            "UPDATE sources SET fingerprint = ?, fp_len = ?, path = ?, compressed = ?, byte_offset = ?, "
            "lines = lines + ?, hits = hits + ?, ignored = ignored + ?, quarantined = quarantined + ?, "
            "last_ingest = ?, server = coalesce(?, server), last_hit = greatest(last_hit, ?) "
            "WHERE source_id = ?",
            [
                fp,
                fp_len,
                name,
                stream.compressed,
                end,
                counts.lines,
                hits,
                ignored,
                counts.quarantined,
                now,
                stream.server,
                counts.last_hit,
                source_id,
            ],
        )

    def _check_format(self, first_line: int, name: str) -> None:
        row = fetch_one(
            self.con,
            "SELECT count(*), count(*) FILTER (WHERE reason IS NOT NULL) FROM tl_chunk WHERE line_no < ?",
            [first_line + BAD_RATIO_LINES],
        )
        seen, bad = (int(row[0]), int(row[1])) if row else (0, 0)
        if seen >= BAD_RATIO_MIN and bad / seen > self.max_bad_ratio:
            raise FormatMismatch(
                f"{name}: {bad} of the first {seen} lines do not parse as log format {self.fmt.name!r}; "
                "nothing of this file was stored. Pass the nginx log_format with --log-format "
                "(or name one in the config file), or raise --max-bad-ratio"
            )

    # -- one chunk ---------------------------------------------------------------------
    def _ingest_chunk(self, source_id: int, chunk: Chunk) -> Counts:
        with self.phases.phase("parse, route, verify"):
            self._parse_chunk(chunk)
        self._store_hits(source_id, chunk)
        with self.phases.phase("quarantine, counts"):
            return self._quarantine_and_count(source_id, chunk)

    def _parse_chunk(self, chunk: Chunk) -> None:
        """tl_chunk from the chunk's lines: the compiled pass when the format allows it (an Arrow
        table registered as tl_chunk, made by the read-ahead thread), else, and for the rows it
        defers, the SQL."""
        lines = chunk.lines
        if chunk.parsed is None:
            self._drop_chunk()
            self.con.register("tl_lines", lines)
            try:
                self.con.execute(
                    f"CREATE TEMP TABLE tl_chunk AS {self._chunk_sql}", self._params if self.verify else None
                )
            finally:
                self.con.unregister("tl_lines")
            return
        self._drop_chunk()
        table, deferred = chunk.parsed
        # a chunk stored resolved (not a small one) gets its recipients looked up (lookup.py)
        lookup = self._lookup if lines.num_rows >= SMALL_CHUNK_LINES else None
        if not len(deferred):
            if lookup is not None and lookup.ready([table]):
                table, self._looked_up = lookup.attach(table), True
            self.con.register("tl_chunk", table)
            return
        # the few rows the C pass deferred, from the SQL, in place of its placeholders: a view
        # over both tables (no copy of the chunk; rows in no particular order, as after a join)
        assert chunk.deferred is not None
        self.con.register("tl_lines", chunk.deferred)
        try:
            slow = self.con.sql(
                f"SELECT {', '.join(CHUNK_COLUMNS)} FROM ({self._chunk_sql})", params=self._params or None
            ).to_arrow_table()
        finally:
            self.con.unregister("tl_lines")
        if lookup is not None and lookup.ready([table, slow], lines=table.num_rows):
            table, slow, self._looked_up = lookup.attach(table), lookup.attach(slow), True
        self.con.register("tl_slow", slow)
        self.con.register("tl_fast", table)
        self.con.register("tl_deferred", pa.table({"line_no": table.column("line_no").take(deferred)}))
        self._chunk_view = True
        self.con.execute(
            "CREATE TEMP VIEW tl_chunk AS SELECT * FROM tl_fast "
            "WHERE line_no NOT IN (SELECT line_no FROM tl_deferred) UNION ALL SELECT * FROM tl_slow"
        )

    def _drop_chunk(self) -> None:
        # the previous chunk's: a temp table (SQL path), a registered Arrow table (fast path),
        # or a view over the fast path's table and the SQL's rows for the lines it deferred
        self.con.unregister("tl_chunk")
        if self._chunk_view:
            self.con.execute("DROP VIEW IF EXISTS temp.tl_chunk")
            self.con.unregister("tl_slow")
            self.con.unregister("tl_fast")
            self.con.unregister("tl_deferred")
            self._chunk_view = False
        self.con.execute("DROP TABLE IF EXISTS temp.tl_chunk")
        self._looked_up = False

    def _store_hits(self, source_id: int, chunk: Chunk) -> None:
        # the chunk's hits as rows of `hits` (source_id is an int from code), classified and
        # resolved (merged later, with the next chunks'); the IP truncated when asked, the
        # recipients of a tombstone left out; a small chunk's are resolved later too
        columns = ", ".join(
            f"{truncated_ip_sql('ip')} AS ip" if c == "ip" and self.truncate_ips else c
            for c in (*HIT_COLUMNS[1:], *(LOOKED_UP if self._looked_up else ()))
        )
        where = "kind IS NOT NULL"
        if self.has_tombstones() and self._pads:
            self._forgotten_in_chunk()
            where += (
                " AND NOT EXISTS (SELECT 1 FROM tl_gone g"
                " WHERE g.delivery_id = c.delivery_id AND g.recipient_id = c.recipient_id)"
            )
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW tl_hits AS SELECT {int(source_id)} AS source_id, {columns} "
            f"FROM tl_chunk c WHERE {where}"
        )
        if chunk.lines.num_rows >= SMALL_CHUNK_LINES:
            derived.store_hits(self.con, "tl_hits", self.phases, looked_up=self._looked_up)
            return
        with self.phases.phase("store the hits (resolved later)"):
            derived.store_unresolved(self.con, "tl_hits")
        self._unresolved += chunk.lines.num_rows

    def has_tombstones(self) -> bool:
        """Whether `tracklog forget` left tombstones (read once: forget takes the writer lock)."""
        if self._tombstones is None:
            row = fetch_one(self.con, "SELECT count(*) FROM forgotten")
            self._tombstones = bool(row and row[0])
        return self._tombstones

    def _forgotten_in_chunk(self) -> None:
        """tl_gone: the (delivery, recipient) pairs of the chunk that a tombstone names, by the
        hash of any current key; each distinct recipient id is hashed once per key."""
        hashes = " OR ".join(
            f"f.recipient_hash = {sql_recipient_hash('c.recipient_id', f'$ipad{n}', f'$opad{n}')}"
            for n in range(len(self._pads))
        )
        params = {
            f"{pad}{n}": pads[i]
            for n, pads in enumerate(self._pads)
            for i, pad in enumerate(("ipad", "opad"))
        }
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE tl_gone AS
            SELECT c.delivery_id, c.recipient_id
            FROM (SELECT DISTINCT delivery_id, recipient_id FROM tl_chunk
                  WHERE kind IS NOT NULL AND recipient_id IS NOT NULL) c
            WHERE EXISTS (SELECT 1 FROM forgotten f WHERE ({hashes})
                          AND (f.delivery_id IS NULL OR f.delivery_id = c.delivery_id))""",
            params,
        )

    def _quarantine_and_count(self, source_id: int, chunk: Chunk) -> Counts:
        self._quarantine(source_id, chunk)
        row = fetch_one(
            self.con,
            "SELECT count(*), count(*) FILTER (WHERE reason IS NOT NULL), "
            "count(*) FILTER (WHERE sig_status IN ('invalid', 'missing')), "
            "max(ts) FILTER (WHERE kind IS NOT NULL), "
            "count(*) FILTER (WHERE sig_status IN ('valid', 'invalid')), "
            "count(*) FILTER (WHERE sig_status = 'invalid'), "
            + ", ".join(f"count(*) FILTER (WHERE kind = '{k}')" for k in KINDS)
            + " FROM tl_chunk",
        )
        assert row is not None
        return Counts(
            lines=int(row[0]),
            quarantined=int(row[1]),
            rejected=int(row[2]),
            last_hit=row[3],
            signed=int(row[4]),
            invalid=int(row[5]),
            hits={k: int(v) for k, v in zip(KINDS, row[6:], strict=True)},
        )

    def _quarantine(self, source_id: int, chunk: Chunk) -> None:
        buf = chunk.original
        if buf is None:
            self.con.execute(
                f"""INSERT INTO quarantine SELECT ?, line_no, byte_offset, reason,
                       encode(left(line, {RAW_MAX})) FROM tl_chunk WHERE reason IS NOT NULL""",
                [source_id],
            )
            return
        # lines were repaired (invalid UTF-8, NUL, CR): keep the original bytes
        bad = self.con.execute(
            "SELECT line_no, byte_offset, reason FROM tl_chunk WHERE reason IS NOT NULL"
        ).fetchall()
        rows = []
        for line_no, byte_offset, reason in bad:
            start = byte_offset - chunk.offset
            stop = buf.find(b"\n", start)
            rows.append(
                (source_id, line_no, byte_offset, reason, bytes(buf[start : min(stop, start + RAW_MAX)]))
            )
        if rows:
            self.con.executemany("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?)", rows)


@dataclass(frozen=True)
class Chunk:
    """Complete lines of a stream, split and numbered."""

    offset: int  # of the first byte, in the decompressed stream
    size: int  # bytes
    lines: pa.Table  # split_lines(); only its line_no when the compiled pass parsed them
    original: bytes | bytearray | None  # the bytes when some lines were repaired (quarantine keeps them raw)
    parsed: tuple[pa.Table, pa.Array] | None  # FastParser.parse(lines), when the format allows
    deferred: pa.Table | None = None  # the lines (all of split_lines' columns) the compiled pass deferred


def _split_chunks(stream: LogStream, offset: int, line_base: int, fast: FastParser | None) -> Iterator[Chunk]:
    """The stream's chunks from `offset`, split into numbered lines and, when the compiled pass
    covers the format, parsed (run ahead, in a thread: the C pass releases the GIL). The stream
    is read in pieces of sources.READ bytes, each split and parsed as it comes and its bytes
    dropped, gathered into chunks of about sources.CHUNK bytes: memory holds one piece's bytes,
    not a chunk's. A piece with repaired lines (whose raw bytes the quarantine keeps) is a chunk
    of its own, and so is one whose parsed columns are typed otherwise (a piece past 256 MiB). A
    chunk holds at most sources.PARSED_CHUNK bytes of parsed columns (or one piece's)."""
    pieces: list[Chunk] = []
    parsed = 0  # bytes of the pieces' parsed columns
    for piece_offset, buf in stream.chunks(offset):
        piece = make_chunk(buf, piece_offset, line_base, fast)
        line_base += piece.lines.num_rows
        del buf  # held only by the piece when it keeps its raw bytes (repaired lines)
        size = piece.parsed[0].nbytes if piece.parsed is not None else 0
        if pieces and (
            piece.original is not None
            or not _same_columns(pieces[0], piece)
            or parsed + size > sources.PARSED_CHUNK
        ):
            yield _gathered(pieces)
            pieces, parsed = [], 0
        pieces.append(piece)
        parsed += size
        # full at CHUNK // READ pieces: about CHUNK bytes (a piece is the line carried over from
        # the one before, then READ bytes up to their last newline)
        if piece.original is not None or len(pieces) * sources.READ >= sources.CHUNK:
            yield _gathered(pieces)
            pieces, parsed = [], 0
    if pieces:
        yield _gathered(pieces)


def _same_columns(a: Chunk, b: Chunk) -> bool:
    """Whether the pieces `a` and `b` have the same columns, of the same types (one table)."""
    if a.lines.schema != b.lines.schema:
        return False
    if a.parsed is None or b.parsed is None:
        return a.parsed is b.parsed
    return bool(a.parsed[0].schema == b.parsed[0].schema)


def _gathered(pieces: list[Chunk]) -> Chunk:
    """One chunk of consecutive pieces of a stream (none with its raw bytes kept)."""
    if len(pieces) == 1:
        return pieces[0]
    parsed = None
    if pieces[0].parsed is not None:
        tables, rows, at = [], [], 0
        for piece in pieces:
            assert piece.parsed is not None
            table, deferred = piece.parsed
            tables.append(table)
            rows.append(pc.add(deferred, at))  # row numbers within the gathered table
            at += table.num_rows
        parsed = (pa.concat_tables(tables), pa.concat_arrays(rows))
    deferred_lines = [p.deferred for p in pieces if p.deferred is not None]
    return Chunk(
        pieces[0].offset,
        sum(p.size for p in pieces),
        pa.concat_tables([p.lines for p in pieces]),
        None,
        parsed,
        pa.concat_tables(deferred_lines) if deferred_lines else None,
    )


def make_chunk(buf: bytes | bytearray, chunk_offset: int, line_base: int, fast: FastParser | None) -> Chunk:
    """`buf` (complete lines at `chunk_offset` of the stream, after `line_base` lines) split
    into numbered lines, and parsed when `fast` covers the format."""
    if fast is None:
        lines, repaired = split_lines(buf, chunk_offset, line_base)
        return Chunk(chunk_offset, len(buf), lines, buf if repaired else None, None)
    if _is_clean(buf):
        # the lines cut where they are, without a copy (the compiled pass reads them in place)
        line, starts = split_buffer(buf)
        lines, terminated, repaired = _table(line, starts, chunk_offset, line_base), True, False
    else:
        (lines, repaired), terminated = split_lines(buf, chunk_offset, line_base), False
    table, deferred_rows = fast.parse(lines, terminated=terminated)
    parsed = _held(table), deferred_rows
    # the parse kept what it needs (a quarantined row carries its line): only the few lines
    # it deferred to the SQL are read again, so only they stay in memory while the chunk
    # waits its turn (the text of all of them was 35 MB of each 32 MiB chunk)
    deferred = lines.take(parsed[1]) if len(parsed[1]) else None
    if deferred is not None and terminated:
        deferred = deferred.set_column(2, "line", pc.utf8_rtrim(deferred.column("line"), characters="\n"))
    return Chunk(
        chunk_offset, len(buf), lines.select(["line_no"]), buf if repaired else None, parsed, deferred
    )


def _held(table: pa.Table) -> pa.Table:
    """The compiled pass's columns as a chunk holds them while it waits its turn (CHUNK_COLUMNS):
    without the request path, which is not stored (hits.path is computed from the route's kind
    and ids; 5 MB of each 32 MiB), and with the strings of a few values dictionary-encoded (2.5
    MB less; DuckDB reads them as VARCHAR)."""
    table = table.drop_columns(["path"])
    for name in _FEW_VALUES:
        table = table.set_column(table.schema.get_field_index(name), name, pc.dictionary_encode(table[name]))
    return table


_FEW_VALUES = ("method", "kind", "sig_status", "delivery_id")


def truncated_ip_sql(ip: str) -> str:
    """The address `ip` truncated, as `truncate_ips` stores it: an IPv4 address to its /24
    (203.0.113.0), an IPv6 address to its /48 (2001:db8:85a3::, any '::' expanded first, a
    zone dropped); anything else, which no real $remote_addr is, to NULL. SQL (vectorized)."""
    v6 = f"lower(split_part({ip}, '%', 1))"
    left = f"list_filter(string_split(split_part({v6}, '::', 1), ':'), lambda x: x <> '')"
    right = f"list_filter(string_split(split_part({v6}, '::', 2), ':'), lambda x: x <> '')"
    groups = (
        f"CASE WHEN contains({v6}, '::') THEN list_concat({left}, "
        f"list_transform(range(greatest(8 - len({left}) - len({right}), 0)), lambda x: '0'), {right}) "
        f"ELSE string_split({v6}, ':') END"
    )
    first3 = f"list_transform(({groups})[1:3], lambda x: coalesce(nullif(ltrim(x, '0'), ''), '0'))"
    return f"""CASE WHEN {ip} IS NULL THEN NULL
        WHEN regexp_full_match({ip}, '[0-9]{{1,3}}(\\.[0-9]{{1,3}}){{3}}') THEN regexp_replace({ip}, '\\.[0-9]+$', '.0')
        WHEN contains({ip}, ':') AND regexp_full_match({v6}, '[0-9a-f:.]+') THEN array_to_string({first3}, ':') || '::'
        END"""


def _fault_point(lines_done: int) -> None:
    """Crash tests: TRACKLOG_FAULT_KILL_AFTER_LINES=N makes the process SIGKILL itself mid-file,
    inside the open transaction, once N lines of the current input have been processed."""
    limit = os.environ.get("TRACKLOG_FAULT_KILL_AFTER_LINES")
    if limit and lines_done >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


_LINE_READ = pcsv.ReadOptions(column_names=["line"], block_size=4 << 20)
_LINE_PARSE = pcsv.ParseOptions(
    delimiter="\x01", quote_char=False, escape_char=False, newlines_in_values=False, ignore_empty_lines=False
)
_LINE_CONVERT = pcsv.ConvertOptions(
    column_types={"line": pa.large_string()}, strings_can_be_null=False, quoted_strings_can_be_null=False
)


def _is_clean(buf: bytes | bytearray) -> bool:
    """True when pyarrow's reader splits exactly at '\\n' and the text is valid UTF-8."""
    if b"\x01" in buf or b"\r" in buf or b"\x00" in buf:
        return False
    if buf.isascii():
        return True
    try:
        buf.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def split_lines(buf: bytes | bytearray, chunk_offset: int, line_base: int) -> tuple[pa.Table, bool]:
    """A table (line_no, byte_offset, line) of the '\\n'-terminated lines in `buf`.

    Returns (table, sanitized): lines with invalid UTF-8, NUL or CR are repaired (U+FFFD,
    CR stripped at the end) on a slower per-line path, flagged so quarantine keeps raw bytes.
    """
    if _is_clean(buf):
        line = pcsv.read_csv(
            pa.BufferReader(pa.py_buffer(buf)), _LINE_READ, _LINE_PARSE, _LINE_CONVERT
        ).column(0)
        sanitized = False  # keep the reader's blocks: DuckDB scans Arrow chunks in parallel
    else:
        parts = buf.split(b"\n")[:-1]
        texts = [p.decode("utf-8", "replace").replace("\x00", "\ufffd").removesuffix("\r") for p in parts]
        lens = pa.array([len(p) + 1 for p in parts], pa.int64())
        line = pa.array(texts, pa.large_string())
        offsets = pc.subtract(pc.cumulative_sum(lens), lens)
        return _table(line, offsets, chunk_offset, line_base), True
    lens = pc.add(pc.cast(pc.binary_length(line), pa.int64()), 1)
    offsets = pc.subtract(pc.cumulative_sum(lens), lens)
    return _table(line, offsets, chunk_offset, line_base), sanitized


def _table(line: pa.Array, offsets: pa.Array, chunk_offset: int, line_base: int) -> pa.Table:
    ones = pc.if_else(pc.is_valid(offsets), pa.scalar(1, pa.int64()), pa.scalar(0, pa.int64()))
    line_no = pc.add(pc.cumulative_sum(ones), line_base)
    return pa.table({"line_no": line_no, "byte_offset": pc.add(offsets, chunk_offset), "line": line})
