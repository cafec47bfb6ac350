"""Derived state: each hit resolved against the manifests as it is stored (the resolution
columns of `hits`, read by the `events` view) and the all-time figures per delivery, kept
current by merging the new hits' contribution (an ingest merges its stored hits every million
or so, in a transaction of its own; `unmerged` records what is stored and not merged yet, and
no reader sees the figures before the merge), so the cost of an ingest follows its new hits,
not the database.

Unique counts do not add up, so the sets behind them are kept too (`readers` with their flags
and the dimension values each was seen with, `click_browsers`): a new event counts once more
only if its reader (or browser, or reader and value) is not in the set yet. Reports get a
figure's relation from here: the stored rows for all time, the definition of
`tracklog.metrics` over the events for a time window; both have the same columns. Tables:
`schema.DERIVED_SCHEMA`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tracklog import metrics, store, useragent
from tracklog.config import ClassifySettings
from tracklog.duck import duckdb, load_arrow
from tracklog.errors import DataError
from tracklog.schema import DERIVED_TABLES, HIT_COLUMNS, RESOLUTION_COLUMNS, SCHEMA_VERSION, schema_version


class _OnFirstUse:
    """A module imported when one of its names is first read: tracklog.classify (with pyarrow and
    the crawler list, about 30 ms) only when hits are classified, never for a report's start-up."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attr)


if TYPE_CHECKING:
    from tracklog import classify
    from tracklog.profiling import Phases  # imports pyarrow, which a report's start-up does without
else:
    classify = _OnFirstUse("tracklog.classify")

Bounds = tuple[dt.datetime, dt.datetime] | None  # a half-open UTC window of hit times; None: all time
Relation = tuple[str, list[object]]  # SQL text and its bound parameters

# Line ranges (an ingest's chunks of about 150,000 hits each) merged per transaction when
# catching up: an ingest merges every million hits, 7 ranges on the benchmark log
MERGE_RANGES = 8
# Hits resolved per statement when catching up, each batch in a transaction of its own. It bounds
# the memory: the batch's recipients are looked up first (_batch_recipients), so a batch of 1M
# fits the writer's 300 MB with 2M recipients (it did not when the join built on every
# recipient). Each commit costs a fixed 5-8 s on a 10M-hit database (DuckDB's checkpoint of the
# UPDATEd `hits`), so fewer, larger batches are faster: 219 s for 10M hits, 254 s with 750,000,
# 543 s with 250,000 before the lookup (README, "The catch-up")
CATCH_UP_BATCH = 1_000_000
_ALL_LINES = 1 << 62
# The derived tables with rows per delivery that its hits make (a delivery is rebuilt by
# deleting its rows from these and merging its hits again)
PER_DELIVERY_TABLES = (
    "readers",
    "click_browsers",
    "delivery_totals",
    "delivery_dimensions",
    "delivery_domains",
    "delivery_minutes",
    "delivery_not_counted",
)
_FEW_STORED = 100_000  # stored hits in a batch's time span kept as they are (_classify)


def _definitions_text() -> str:
    parts = [metrics.resolve_sql("hits"), metrics.delivery_totals_sql(), metrics.domain_figures_sql()]
    parts += [metrics.minute_figures_sql(), metrics.not_counted_sql()]
    parts += [metrics.dimension_figures_sql(d) for d in metrics.DIMENSIONS]
    parts += list(metrics.views().values())
    return "\n".join(parts)


# Stored in derived_state: when a definition changes, the derived tables are built anew.
DEFINITIONS = hashlib.sha256(_definitions_text().encode()).hexdigest()[:16]

_STALE_MANIFESTS = """
SELECT delivery_id FROM (
    (SELECT delivery_id, manifest_sha256, loaded_at FROM deliveries
     EXCEPT SELECT delivery_id, manifest_sha256, loaded_at FROM derived_manifests)
    UNION ALL
    (SELECT delivery_id, manifest_sha256, loaded_at FROM derived_manifests
     EXCEPT SELECT delivery_id, manifest_sha256, loaded_at FROM deliveries)
) x
"""


# -- what reports read -----------------------------------------------------------------------


def _window(bounds: Bounds, alias: str) -> tuple[str, list[object]]:
    assert bounds is not None
    return f"{alias}.ts >= ? AND {alias}.ts < ?", [bounds[0], bounds[1]]


def totals(bounds: Bounds = None) -> Relation:
    """Per delivery id: metrics.TOTAL_COLUMNS, of all time (stored) or within `bounds`."""
    if bounds is None:
        return "SELECT * FROM delivery_totals", []
    (ew, ep), (hw, hp) = _window(bounds, "e"), _window(bounds, "h")
    return metrics.delivery_totals_sql(ew, hw), ep + hp


def dimensions(dimension: str, bounds: Bounds = None) -> Relation:
    """Per delivery and value of `dimension`: opens, clicks, readers (metrics.dimension_figures_sql)."""
    if bounds is None:
        return f"SELECT * FROM delivery_dimensions WHERE dimension = '{dimension}'", []
    where, params = _window(bounds, "e")
    return metrics.dimension_figures_sql(dimension, where), params


def minutes(bounds: Bounds = None) -> Relation:
    """Per delivery and whole minute since its send: opens, clicks (metrics.minute_figures_sql)."""
    if bounds is None:
        return "SELECT * FROM delivery_minutes", []
    where, params = _window(bounds, "e")
    return metrics.minute_figures_sql(where), params


def not_counted(bounds: Bounds = None) -> Relation:
    """Per delivery id as logged (NULL: hits naming none): metrics.NOT_COUNTED."""
    if bounds is None:
        return "SELECT * FROM delivery_not_counted", []
    where, params = _window(bounds, "h")
    return metrics.not_counted_sql(where), params


def domains(bounds: Bounds = None) -> Relation:
    """Per delivery and email domain: sent, delivered, opens_unique, clicks_unique."""
    if bounds is None:
        return "SELECT * FROM delivery_domains", []
    where, params = _window(bounds, "e")
    return metrics.domain_figures_sql(where), params


# -- opening the database --------------------------------------------------------------------


def is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the derived tables reflect every stored hit and manifest, with this version's
    schema, definitions and ua-parser (a few milliseconds: counts and the small tables)."""
    if schema_version(con) != SCHEMA_VERSION:
        return False
    state = con.execute("SELECT hits, agents_version, definitions, classifier FROM derived_state").fetchall()
    if len(state) != 1 or state[0][1:] != (useragent.PARSER_VERSION, DEFINITIONS, classifier_version(con)):
        return False
    if state[0][0] != con.execute("SELECT count(*) FROM hits").fetchall()[0][0]:
        return False
    return not con.execute(f"SELECT 1 FROM ({_STALE_MANIFESTS}) s LIMIT 1").fetchall()


def classifier_version(con: duckdb.DuckDBPyConnection) -> str:
    """classify.stored_settings(con)[1]: once an ingest has stored the settings and the proxy
    ranges (it always does), the stored version, read without importing tracklog.classify."""
    version, settings, ranges = con.execute(
        "SELECT (SELECT max(version) FROM classifier_settings), (SELECT count(*) FROM classifier_settings),"
        " EXISTS (SELECT 1 FROM proxy_ranges_source)"
    ).fetchall()[0]
    if settings == 1 and ranges:
        return str(version)
    return classify.stored_settings(con)[1]


@contextmanager
def open_reader(
    db: Path,
    wait: float,
    on_wait: Callable[[str | None], None] | None = None,
    on_upgrade: Callable[[], None] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection whose derived tables are current. A database written by an
    earlier version (or whose hits were stored without merging) is brought up to date first,
    once, as a writer (`on_upgrade` is called before)."""
    with store.open_reader(db, wait=wait, on_wait=on_wait) as con:
        if is_current(con):
            yield con
            return
        if not _is_read_only(con):  # no database file: an empty one in memory
            sync(con)
            yield con
            return
    if on_upgrade is not None:
        on_upgrade()
    try:
        with store.open_writer(db, wait=wait) as writer:
            sync(writer)
    except (OSError, duckdb.IOException, DataError) as exc:  # e.g. a reader that cannot write the folder
        raise DataError(
            f"database {db} must be brought up to date for this version of tracklog once, by a user "
            f"who can write it (run `tracklog ingest` or any report as that user): {exc}"
        ) from exc
    with store.open_reader(db, wait=wait, on_wait=on_wait) as con:
        yield con


def _is_read_only(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return bool(rows and rows[0][0])


# -- keeping it current ----------------------------------------------------------------------


def sync(con: duckdb.DuckDBPyConnection) -> None:
    """Bring the derived tables up to date on a writable connection: the views of this
    version, a full rebuild when the definitions or ua-parser changed, the hits of deliveries
    whose manifest was stored or replaced resolved again, and hits not merged yet merged. Each
    step in its own transaction; a no-op when nothing changed."""
    if is_current(con):
        return
    con.execute("SET enable_progress_bar = false")  # stderr belongs to the caller
    state = con.execute("SELECT agents_version, definitions, classifier FROM derived_state").fetchall()
    _, classifier = classify.stored_settings(con)
    if [s[:2] for s in state] != [(useragent.PARSER_VERSION, DEFINITIONS)]:
        _transaction(con, _reset)
    else:
        _merge_all_stored(con)  # an ingest's last chunks (or a crashed one's)
        if state[0][2] != classifier:
            _transaction(con, _reclassify_quietly)
    _transaction(con, _rebuild_changed_deliveries)
    _catch_up(con)


def use_clock_window(con: duckdb.DuckDBPyConnection, days: tuple[int, int]) -> None:
    """Record the clock window (days before, after a delivery's send; metrics.clock_sql) in
    `meta`. A different window than the one the hits were resolved with makes the next sync
    build everything anew (it changes resolutions anywhere), once."""
    stored = dict(con.execute("SELECT key, value FROM meta WHERE key LIKE 'clock_%'").fetchall())
    wanted = {key: str(int(v)) for key, v in zip(metrics.CLOCK_WINDOW_KEYS, days, strict=True)}
    if stored == wanted:
        return
    # until recorded, the hits were resolved with the defaults
    current = stored or {key: str(v) for key, v in metrics.CLOCK_WINDOW_KEYS.items()}
    _transaction(con, lambda c: _set_clock_window(c, wanted, rebuild=current != wanted))


def _set_clock_window(con: duckdb.DuckDBPyConnection, wanted: dict[str, str], *, rebuild: bool) -> None:
    con.execute("DELETE FROM meta WHERE key LIKE 'clock_%'")
    con.executemany("INSERT INTO meta VALUES (?, ?)", list(wanted.items()))
    if rebuild:
        con.execute("UPDATE derived_state SET definitions = 'clock window changed'")


def _reclassify_quietly(con: duckdb.DuckDBPyConnection) -> None:
    _reclassify(con)


def _merge_all_stored(con: duckdb.DuckDBPyConnection) -> None:
    """Merge every stored hit not merged yet, MERGE_RANGES line ranges per transaction: what an
    ingest leaves is one merge, and what merges that failed (or crashed) again and again left
    is merged in bounded steps, never in one that would need ever more memory."""
    merged = [MERGE_RANGES]

    def step(c: duckdb.DuckDBPyConnection) -> None:
        merged[0] = merge_stored(c, MERGE_RANGES)

    while merged[0] == MERGE_RANGES:
        _transaction(con, step)


def reclassify(con: duckdb.DuckDBPyConnection, settings: ClassifySettings) -> list[str]:
    """Make `settings` the classifier's and bring every figure up to date without reading a
    log: the stored hits are classified again and the deliveries where a class or reason
    changed are rebuilt (the others keep their rows). The ids of those deliveries."""
    con.execute("SET enable_progress_bar = false")
    affected: list[str] = []

    def store(c: duckdb.DuckDBPyConnection) -> None:
        classify.store_settings(c, settings)

    def again(c: duckdb.DuckDBPyConnection) -> None:
        affected.extend(_reclassify(c))

    _transaction(con, store)
    if not is_current(con):
        state = con.execute("SELECT agents_version, definitions, classifier FROM derived_state").fetchall()
        if [s[:2] for s in state] == [(useragent.PARSER_VERSION, DEFINITIONS)] and state[0][2] != (
            classify.stored_settings(con)[1]
        ):
            _transaction(con, again)
        sync(con)
    return affected


def _unmeasured(name: str) -> contextlib.nullcontext[None]:
    return contextlib.nullcontext(None)


def store_hits(
    con: duckdb.DuckDBPyConnection, hits: str, phases: Phases | None = None, *, looked_up: bool = False
) -> None:
    """Store the new hits of the relation `hits` (the log columns of `hits`) classified and
    resolved, inside the caller's transaction (an ingest's chunk), and record their lines in
    `unmerged`: merge_stored merges them into the derived tables later, with the next chunks'
    (one merge of several chunks costs less than one per chunk), in a transaction of its own.
    Their lines are new lines of their sources, numbered after every stored one (as an ingest
    reads a stream: no stored line of theirs lies within their range). Stored hits of the same
    recipients whose class the new ones change are merged again (_redo_flipped). `phases`
    measures the two steps (`ingest --profile`). `looked_up`: `hits` also has the columns
    metrics.LOOKED_UP (ingest/lookup.py), read in place of a join with `recipient_keys`."""
    phase = phases.phase if phases is not None else _unmeasured
    try:
        with phase("classify the hits"):
            # a view: the chunk's hits are read where they are (an Arrow table), not copied
            read = (*HIT_COLUMNS, *(metrics.LOOKED_UP if looked_up else ()))
            con.execute(f"CREATE OR REPLACE TEMP VIEW _hb AS SELECT {', '.join(read)} FROM {hits}")
            _classify(con, "_hb")
        with phase("resolve and store the hits"):
            lo_source, hi_source, start, last = con.execute(
                "SELECT min(source_id), max(source_id), min(line_no), max(line_no) FROM _hb"
            ).fetchall()[0]
            if last is None:
                return
            # the merge reads the batch back where it is stored, as the lines of its sources in
            # its range (no temporary copy of its wide rows): none of them may be stored yet
            batch = _lines_of("h", (lo_source, hi_source), start, last + 1)
            if con.execute(f"SELECT count(*) FROM hits h WHERE {batch}").fetchall()[0][0]:
                raise RuntimeError("store_hits: lines within the batch's range are stored already")
            columns = ", ".join((*HIT_COLUMNS, *RESOLUTION_COLUMNS))
            recipients = None
            if not looked_up:
                _batch_recipients(con, "_hb")
                recipients = "_rk"
            # resolved as they are stored, in one pass
            con.execute(
                f"INSERT INTO hits ({columns}) SELECT {columns} FROM ({metrics.resolve_sql('_hc', recipients)}) n"
            )
            con.execute("INSERT INTO unmerged VALUES (?, ?, ?, ?)", [lo_source, hi_source, start, last + 1])
    finally:
        _drop_classified(con)


def merge_stored(con: duckdb.DuckDBPyConnection, ranges_at_most: int | None = None) -> int:
    """Merge the hits that store_hits stored (the lines of `unmerged`; the first `ranges_at_most`
    ranges of them when given) into the derived tables, inside the caller's transaction; the
    number of line ranges merged. Consecutive ranges of a source (an ingest's chunks) are read
    as one."""
    limit = "" if ranges_at_most is None else f" LIMIT {int(ranges_at_most)}"
    ranges = con.execute(
        "SELECT lo_source, hi_source, first_line, stop_line FROM unmerged "
        f"ORDER BY lo_source, hi_source, first_line{limit}"
    ).fetchall()
    if not ranges:
        return 0
    spans: list[list[int]] = []
    for lo, hi, first, stop in ranges:
        if spans and spans[-1][:2] == [lo, hi] and spans[-1][3] == first:
            spans[-1][3] = stop
        else:
            spans.append([lo, hi, first, stop])
    batch = " OR ".join(f"({_lines_of('h', (lo, hi), first, stop)})" for lo, hi, first, stop in spans)
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW _nf AS {metrics.CLASSIFIED_HITS} WHERE {batch}")
        _merge(con)
        con.executemany(
            "DELETE FROM unmerged WHERE lo_source = ? AND hi_source = ? AND first_line = ?",
            [list(r[:3]) for r in ranges],
        )
    finally:
        _drop_batch(con)
    return len(ranges)


def _lines_of(h: str, sources: tuple[int | None, int | None], start: int | None, stop: int | None) -> str:
    """The condition on hits `h` of the sources numbered sources[0] to sources[1] with line
    numbers in [start, stop) (nothing when any bound is None: an empty batch)."""
    lo, hi = sources
    if lo is None or hi is None or start is None or stop is None:
        return "FALSE"
    return f"{h}.source_id BETWEEN {int(lo)} AND {int(hi)} AND {h}.line_no >= {int(start)} AND {h}.line_no < {int(stop)}"


def _resolve_stored(con: duckdb.DuckDBPyConnection, sources: tuple[int, int], start: int, stop: int) -> None:
    """Resolve the stored hits of the sources numbered sources[0] to sources[1] with line
    numbers in [start, stop) that are not resolved yet, and merge them, inside the caller's
    transaction."""

    def lines(h: str) -> str:
        return _lines_of(h, sources, start, stop)

    try:
        batch = f"h.resolution IS NULL AND {lines('h')}"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _hs AS SELECT {', '.join(HIT_COLUMNS)} FROM hits h WHERE {batch}"
        )
        _classify(con, "_hs", batch)
        _batch_recipients(con, "_hs")
        _resolve(con, "_hc", "_rk")
        updates = ", ".join(f"{c} = n.{c}" for c in RESOLUTION_COLUMNS)
        # the range again on `hits` itself, so the scan skips the row groups of other lines
        con.execute(
            f"UPDATE hits SET {updates} FROM _nf n WHERE {lines('hits')}"
            " AND hits.source_id = n.source_id AND hits.line_no = n.line_no"
        )
        _merge(con)
    finally:
        _drop_batch(con)
        _drop_classified(con)


def _batch_recipients(con: duckdb.DuckDBPyConnection, batch: str) -> None:
    """_rk: the recipients of the hits `batch` among the manifests' (narrow rows, fewer than
    the batch's). The join that resolves the batch builds on them, where it built on the batch's
    wide rows (a copy of the chunk) or would on every recipient of a large manifest."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _rk AS SELECT r.* FROM recipient_keys r SEMI JOIN {batch} b "
        "ON r.delivery_id = b.delivery_id AND r.recipient_id = b.recipient_id"
    )


def _resolve(con: duckdb.DuckDBPyConnection, hits: str, recipient_keys: str = "recipient_keys") -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE _nf AS {metrics.resolve_sql(hits, recipient_keys)}")


def _merge(con: duckdb.DuckDBPyConnection) -> None:
    """Merge the resolved hits in _nf into the derived tables."""
    _events(con)
    _parse_new_agents(con)
    _reader_values(con)
    readers = _merge_readers(con)
    browsers = _merge_browsers(con)
    _merge_totals(con, readers, browsers)
    _merge_minutes(con)
    _drop_tables(con, "_ev", "_nb")
    _merge_dimensions(con)
    _merge_domains(con)
    _merge_not_counted(con)
    con.execute("UPDATE derived_state SET hits = hits + (SELECT count(*) FROM _nf)")


# The columns of the batch's counted events that a merge reads (the `events` view has more:
# labels and URLs, which would double the copy)
_MERGED_EVENT_COLUMNS = (
    "ts", "type", "delivery_id", "sent_at", "link_id", "ip", "user_agent", "uid", "recipient_key", "email_domain",
)  # fmt: skip


def _events(con: duckdb.DuckDBPyConnection) -> None:
    """_ev: the counted events among the batch's hits _nf, by the definition of the `events`
    view, computed once per merge."""
    columns = ", ".join(f"e.{c}" for c in _MERGED_EVENT_COLUMNS)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _ev AS SELECT {columns} FROM ({metrics.views('_nf')['events']}) e"
    )


def _drop_tables(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    for table in tables:
        store.cleanup(con, f"DROP TABLE IF EXISTS {table}")


def _drop_batch(con: duckdb.DuckDBPyConnection) -> None:
    _drop_tables(con, *_MERGE_TABLES)
    # _nf: a table (a rebuild's batch) or a view (an ingest's, over its stored rows); dropped as
    # what it is, since a failed DROP would abort the transaction
    try:
        views = con.execute("SELECT count(*) FROM duckdb_views() WHERE temporary AND view_name = '_nf'")
        kind = "VIEW" if views.fetchall()[0][0] else "TABLE"
    except duckdb.Error:  # the transaction failed: its rollback drops it
        return
    store.cleanup(con, f"DROP {kind} IF EXISTS _nf")


# the temporary tables of a merge, dropped as soon as done with (less for it to hold in memory)
_MERGE_TABLES = ("_ev", "_rd", "_nb", "_ra", "_agents", "_links", "_pos", "_dv", "_rv")


def _drop_classified(con: duckdb.DuckDBPyConnection) -> None:
    # through store.cleanup: after a failed statement (out of memory, say) a DROP would fail with
    # "transaction is aborted" and hide the error that matters
    store.cleanup(con, "DROP VIEW IF EXISTS _hc")
    store.cleanup(con, "DROP VIEW IF EXISTS _hb")
    for table in ("_hs", "_cs", "_cx", "_cu", "_cl", "_rg", "_cls", "_flip", "_rp", "_rk"):
        store.cleanup(con, f"DROP TABLE IF EXISTS {table}")


# -- classification --------------------------------------------------------------------------


def _classify(con: duckdb.DuckDBPyConnection, batch: str, stored_batch: str | None = None) -> None:
    """_hc: the hits of the relation `batch` with their class and reasons (tracklog.classify),
    judged with every hit of their recipients stored within the window of the rules (either way:
    a late line may come first); stored hits whose class the batch changes are merged again
    (_redo_flipped). `stored_batch`: when the batch's hits are stored already, the condition on
    `hits` h that selects them.

    Only the recipients that a window signal may flag (classify.candidates_sql: a trap click, as
    many clicks as a burst needs, a hit close to the send, among their batch and stored hits) are
    judged by classify.classify_sql; every other hit has its local signals only
    (classify.local_sql). _cls keeps the reasons of the batch hits that may have some; the view
    _hc gives every hit its class and reasons as the resolving query reads the batch."""
    settings, _ = classify.stored_settings(con)
    reach = dt.timedelta(seconds=classify.window_seconds(settings))
    unit = ", ".join(classify.UNIT_COLUMNS)
    # the batch is read where it is (a view over the parsed chunk): copying it would cost more
    # than reading it again; every table made here is small
    lo, hi = con.execute(f"SELECT min(ts), max(ts) FROM {batch}").fetchall()[0]
    if lo is None:
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _hc AS SELECT *, CAST(NULL AS VARCHAR) AS class, "
            f"CAST(NULL AS VARCHAR) AS reasons FROM {batch}"
        )
        return
    # the stored hits that can change or decide a class of the batch: up to two windows away
    # from a batch hit of the same recipient (a hit one window away is judged with the hits one
    # window beyond it), here within two windows of the span of its recipient's batch hits that
    # lie within two windows of a stored hit (_cs: the batch recipients' stored hits within the
    # batch's time span). Bounded per recipient, not by the batch's whole time span: a batch that
    # spans the whole log (a rebuild) would otherwise pull in every stored hit, batch after
    # batch. In an ingest, few stored hits lie in the batch's span (the chunk before's last
    # ones), and few batch hits near those
    stored = (
        f"FROM hits h WHERE h.ts >= ? AND h.ts <= ?{f' AND NOT ({stored_batch})' if stored_batch else ''}"
    )
    span = [lo - 2 * reach, hi + 2 * reach]
    many = con.execute(f"SELECT count(*) > {_FEW_STORED} {stored}", span).fetchall()[0][0]
    # only the batch recipients' (checking each costs a pass over the batch: when they are few,
    # the join below drops the others)
    theirs = (
        f" AND EXISTS (SELECT 1 FROM {batch} b WHERE b.delivery_id = h.delivery_id AND b.recipient_id = h.recipient_id)"
        if many
        else ""
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _cs AS SELECT {', '.join(f'h.{c}' for c in classify.UNIT_COLUMNS)}, "
        f"h.class AS old_class, h.reasons AS old_reasons, h.resolution IS NOT NULL AS merged {stored}{theirs}",
        span,
    )
    first, last = con.execute("SELECT min(ts), max(ts) FROM _cs").fetchall()[0]
    near = [first - 2 * reach, last + 2 * reach] if first is not None else [lo, lo - reach]  # none
    con.execute(
        f"""
CREATE OR REPLACE TEMP TABLE _cx AS
SELECT s.*, p.lo, p.hi FROM _cs s JOIN (
    SELECT b.delivery_id, b.recipient_id, min(b.ts) AS lo, max(b.ts) AS hi FROM {batch} b
    WHERE b.ts >= ? AND b.ts <= ?
        AND EXISTS (SELECT 1 FROM _cs s WHERE s.delivery_id = b.delivery_id AND s.recipient_id = b.recipient_id)
    GROUP BY b.delivery_id, b.recipient_id
) p ON p.delivery_id = s.delivery_id AND p.recipient_id = s.recipient_id
WHERE s.ts >= p.lo - ? AND s.ts <= p.hi + ?""",
        [*near, 2 * reach, 2 * reach],
    )
    # the agents not looked up yet (a stored hit not resolved yet was never classified)
    classify.add_agent_kinds(
        con, f"(SELECT user_agent FROM {batch} UNION ALL SELECT user_agent FROM _cx)", settings
    )
    # the recipients a window signal may flag, with all their hits: judged by the rules in full
    cands = classify.candidates_sql(
        f"(SELECT {unit} FROM {batch} UNION ALL SELECT {unit} FROM _cx)", settings
    )
    theirs = (
        "EXISTS (SELECT 1 FROM c WHERE c.delivery_id IS NOT DISTINCT FROM x.delivery_id "
        "AND c.recipient_id IS NOT DISTINCT FROM x.recipient_id)"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _cu AS WITH c AS MATERIALIZED ({cands}) SELECT {unit} FROM {batch} x WHERE {theirs} "
        f"UNION ALL SELECT {unit} FROM _cx x WHERE {theirs}"
    )
    # the addresses in the proxy ranges among the opens' (the stored ones' too, for _cu)
    opens = f"(SELECT ip, kind FROM {batch} UNION ALL SELECT ip, kind FROM _cx)"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _rg AS {classify.proxy_ips_sql(opens, settings)}")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _cl AS {classify.classify_sql('_cu', settings, ranges='SELECT ip FROM _rg', picked=True)}"
    )
    # the batch's hits that may be flagged, with their reasons (the class follows from them:
    # classify.class_sql): a candidate's, or a hit showing a local signal
    local = classify.local_sql("b", "k", "p", settings)
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE _cls AS
SELECT b.source_id, b.line_no, CASE WHEN c.line_no IS NULL THEN {local.reasons} ELSE c.reasons END AS reasons
FROM {batch} b
LEFT JOIN (SELECT user_agent, kind FROM agent_kinds WHERE kind IS NOT NULL) k ON k.user_agent = b.user_agent
LEFT JOIN _rg p ON p.ip = b.ip AND b.kind = 'open'
LEFT JOIN _cl c ON c.source_id = b.source_id AND c.line_no = b.line_no
WHERE c.line_no IS NOT NULL OR {local.any}""")
    con.execute(
        # a view: the resolving query reads it once, so the batch's wide rows are not copied again
        f"""
CREATE OR REPLACE TEMP VIEW _hc AS
SELECT b.*, {classify.class_sql("b", "c.reasons")} AS class, c.reasons
FROM {batch} b LEFT JOIN _cls c ON c.source_id = b.source_id AND c.line_no = b.line_no"""
    )
    # a stored hit within a window of the span of its recipient's batch hits (every hit within
    # a window of one of them is) was judged with every hit within a window of it; one farther
    # keeps its class. Only a candidate's can change: any other recipient has no window signal
    # among those hits, and had none among the fewer stored before
    con.execute(
        """
CREATE OR REPLACE TEMP TABLE _flip AS
SELECT x.source_id, x.line_no, x.delivery_id, x.recipient_id, c.class, c.reasons,
    c.class IS DISTINCT FROM x.old_class AS class_changed
FROM _cx x JOIN _cl c ON c.source_id = x.source_id AND c.line_no = x.line_no
WHERE x.merged AND x.ts >= x.lo - ? AND x.ts <= x.hi + ?
    AND (c.class IS DISTINCT FROM x.old_class OR c.reasons IS DISTINCT FROM x.old_reasons)""",
        [reach, reach],
    )
    if con.execute("SELECT count(*) FROM _flip").fetchall()[0][0]:
        _redo_flipped(con)


def _redo_flipped(con: duckdb.DuckDBPyConnection) -> None:
    """Stored hits whose class changed (_flip): their recipients' contribution to the derived
    tables is taken out, the new classes stored, and their hits resolved and merged again. A
    change of reasons alone changes no figure: it is only stored. A stored hit counts as merged
    when resolved (x.merged): the hits stored but not merged yet are merged first."""
    merge_stored(con)
    con.execute(
        "UPDATE hits SET reasons = f.reasons FROM _flip f WHERE NOT f.class_changed "
        "AND hits.source_id = f.source_id AND hits.line_no = f.line_no"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _rp AS SELECT DISTINCT delivery_id, recipient_id FROM _flip WHERE class_changed"
    )
    if not con.execute("SELECT count(*) FROM _rp").fetchall()[0][0]:
        return
    theirs = (
        "FROM hits h JOIN _rp p ON p.delivery_id = h.delivery_id AND p.recipient_id = h.recipient_id "
        "WHERE h.resolution IS NOT NULL"
    )
    keys = "hits.source_id = n.source_id AND hits.line_no = n.line_no"
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _nf AS SELECT h.*, {metrics.type_sql()} AS type, "
            f"{metrics.verdict_sql()} AS verdict {theirs}"
        )
        _unmerge(con)
        _drop_batch(con)
        con.execute(
            "UPDATE hits SET class = f.class, reasons = f.reasons FROM _flip f WHERE f.class_changed "
            "AND hits.source_id = f.source_id AND hits.line_no = f.line_no"
        )
        _resolve(con, f"(SELECT h.* {theirs})")
        updates = ", ".join(f"{c} = n.{c}" for c in RESOLUTION_COLUMNS)
        con.execute(f"UPDATE hits SET {updates} FROM _nf n WHERE {keys}")
        _merge(con)
        con.execute("DELETE FROM delivery_dimensions WHERE opens = 0 AND clicks = 0 AND readers = 0")
        con.execute("DELETE FROM delivery_minutes WHERE opens = 0 AND clicks = 0")
    finally:
        _drop_batch(con)


def _unmerge(con: duckdb.DuckDBPyConnection) -> None:
    """Take the contribution of the stored, merged hits in _nf (every merged hit of their
    recipients) out of the derived tables: the inverse of _merge."""
    _events(con)
    _parse_new_agents(con)
    _reader_values(con)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _rd AS SELECT r.* FROM readers r "
        "WHERE r.recipient_key IN (SELECT recipient_key FROM _nf WHERE recipient_key IS NOT NULL)"
    )
    # the browsers that clicked and that no other recipient's click event holds
    cols = metrics.BROWSER_COLUMNS
    same = " AND ".join(f"({sql.replace('e.', 'h.')}) IS NOT DISTINCT FROM b.{c}" for c, sql in cols.items())
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE _nb AS
SELECT * FROM (SELECT DISTINCT e.delivery_id, {", ".join(f"{sql} AS {c}" for c, sql in cols.items())}
               FROM _ev e WHERE e.type = 'click') b
WHERE NOT EXISTS (
    SELECT 1 FROM hits h
    WHERE h.delivery_id = b.delivery_id AND h.kind = 'click' AND h.resolution = 'event' AND {same}
        AND NOT EXISTS (SELECT 1 FROM _rp p WHERE p.delivery_id = h.delivery_id AND p.recipient_id = h.recipient_id)
)""")
    browser_same = " AND ".join(
        ["c.delivery_id = b.delivery_id"] + [f"c.{c} IS NOT DISTINCT FROM b.{c}" for c in cols]
    )
    con.execute(f"DELETE FROM click_browsers c WHERE EXISTS (SELECT 1 FROM _nb b WHERE {browser_same})")
    negated = ", ".join(f"-({sql}) AS {name}" for name, sql in metrics.EVENT_COUNTS.items())
    excluded = ", ".join(f"-({sql}) AS {name}" for name, sql in metrics.EXCLUDED_AGGREGATES.items())
    uniques = ", ".join(
        f"-count(*) FILTER (WHERE d.{flag}) AS {name}" for name, flag in metrics.UNIQUE_OF_FLAG.items()
    )
    parts: list[Part] = [
        (f"SELECT e.delivery_id, {negated} FROM _ev e GROUP BY e.delivery_id", tuple(metrics.EVENT_COUNTS)),
        (
            f"SELECT h.delivery_id, {excluded} FROM _nf h GROUP BY h.delivery_id",
            tuple(metrics.EXCLUDED_AGGREGATES),
        ),
        (f"SELECT d.delivery_id, {uniques} FROM _rd d GROUP BY d.delivery_id", tuple(metrics.UNIQUE_OF_FLAG)),
        (
            "SELECT b.delivery_id, -count(*) AS persons_clicked FROM _nb b GROUP BY b.delivery_id",
            ("persons_clicked",),
        ),
    ]
    _add_rows(con, "delivery_totals", ("delivery_id",), metrics.TOTAL_COLUMNS, parts)
    named = "JOIN dimension_values v ON v.value_key = p.value_key"
    dims: list[Part] = [
        (
            (
                f"SELECT p.delivery_id, v.dimension, v.value, -p.opens AS opens, -p.clicks AS clicks FROM _dv p {named}"
            ),
            ("opens", "clicks"),
        ),
        _reader_value_rows("value_keys", "-"),
    ]
    _add_rows(
        con,
        "delivery_dimensions",
        ("delivery_id", "dimension", "value"),
        ("opens", "clicks", "readers"),
        dims,
    )
    flags = ", ".join(
        f"-count(*) FILTER (WHERE d.{metrics.UNIQUE_OF_FLAG[n]}) AS {n}"
        for n in ("opens_unique", "clicks_unique")
    )
    _add_rows(
        con,
        "delivery_domains",
        ("delivery_id", "domain"),
        ("sent", "delivered", "opens_unique", "clicks_unique"),
        [
            (
                f"SELECT d.delivery_id, d.email_domain AS domain, {flags} FROM _rd d GROUP BY ALL",
                ("opens_unique", "clicks_unique"),
            )
        ],
    )
    _merge_minutes(con, "-")
    _merge_not_counted(con, "-")
    con.execute("DELETE FROM readers WHERE recipient_key IN (SELECT recipient_key FROM _rd)")
    con.execute("UPDATE derived_state SET hits = hits - (SELECT count(*) FROM _nf)")


def _reclassify(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The classifier's settings changed: every stored hit classified again; the deliveries
    where a class or reason changed lose their derived rows and their hits' resolution, so that
    _catch_up resolves and merges them again. Returns those deliveries."""
    settings, version = classify.stored_settings(con)
    merge_stored(con)  # what is stored is merged first: derived_state counts the merged hits
    con.execute("DELETE FROM agent_kinds")
    classify.add_agent_kinds(con, "hits", settings)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _cl AS {classify.classify_sql('hits', settings)}")
        con.execute("""
CREATE OR REPLACE TEMP TABLE _changed AS
SELECT DISTINCT h.delivery_id FROM hits h JOIN _cl c ON c.source_id = h.source_id AND c.line_no = h.line_no
WHERE h.resolution IS NOT NULL AND (c.class IS DISTINCT FROM h.class OR c.reasons IS DISTINCT FROM h.reasons)""")
        affected = sorted(r[0] for r in con.execute("SELECT delivery_id FROM _changed").fetchall())
        if affected:
            changed = "delivery_id IN (SELECT delivery_id FROM _changed)"
            for table in PER_DELIVERY_TABLES:
                if table != "delivery_domains":  # its recipients stay: only its unique counts go
                    con.execute(f"DELETE FROM {table} WHERE {changed}")
            con.execute(f"UPDATE delivery_domains SET opens_unique = 0, clicks_unique = 0 WHERE {changed}")
            unresolved = ", ".join(f"{c} = NULL" for c in RESOLUTION_COLUMNS)
            con.execute(f"UPDATE hits SET {unresolved} WHERE {changed} AND resolution IS NOT NULL")
            con.execute(
                "UPDATE derived_state SET hits = (SELECT count(*) FROM hits WHERE resolution IS NOT NULL)"
            )
        con.execute("UPDATE derived_state SET classifier = ?", [version])
        return affected
    finally:
        con.execute("DROP TABLE IF EXISTS _cl; DROP TABLE IF EXISTS _changed")


def _transaction(con: duckdb.DuckDBPyConnection, step: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        step(con)
        con.execute("COMMIT")
    except BaseException:
        store.cleanup(con, "ROLLBACK")
        raise


def _reset(con: duckdb.DuckDBPyConnection) -> None:
    """Empty every derived table, forget every hit's resolution and install this version's
    views: everything is built anew."""
    for table in DERIVED_TABLES:
        con.execute(f"DELETE FROM {table}")
    con.execute(f"UPDATE hits SET {', '.join(f'{c} = NULL' for c in RESOLUTION_COLUMNS)}")
    _, classifier = classify.stored_settings(con)
    con.execute(
        "INSERT INTO derived_state VALUES (0, ?, ?, ?)", [useragent.PARSER_VERSION, DEFINITIONS, classifier]
    )
    for name, sql in metrics.views().items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")


def _rebuild_changed_deliveries(con: duckdb.DuckDBPyConnection) -> None:
    """Deliveries whose manifest was stored or replaced: their derived rows are dropped, their
    recipients numbered again and their stored hits resolved and merged again."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _changed AS {_STALE_MANIFESTS}")
    try:
        if not con.execute("SELECT count(*) FROM _changed").fetchall()[0][0]:
            return
        changed = "delivery_id IN (SELECT delivery_id FROM _changed)"
        for table in ("recipient_keys", "derived_manifests"):
            con.execute(f"DELETE FROM {table} WHERE {changed}")
        con.execute("""
INSERT INTO delivery_keys
SELECT d.delivery_id, (SELECT coalesce(max(delivery_key), 0) FROM delivery_keys)
    + row_number() OVER (ORDER BY d.delivery_id)
FROM deliveries d WHERE d.delivery_id NOT IN (SELECT delivery_id FROM delivery_keys)""")
        con.execute(
            "INSERT INTO recipient_keys BY NAME "
            + metrics.recipient_keys_sql("delivery_keys", f"r.{changed}")
        )
        con.execute(
            "INSERT INTO derived_manifests SELECT delivery_id, manifest_sha256, loaded_at FROM deliveries "
            f"WHERE {changed}"
        )
        forget_deliveries(con, "_changed")
    finally:
        store.cleanup(con, "DROP TABLE IF EXISTS _changed")


def forget_deliveries(con: duckdb.DuckDBPyConnection, delivery_ids: str) -> None:
    """Inside the caller's transaction: drop the derived rows of the deliveries whose ids are in
    the table `delivery_ids` (column delivery_id) and mark their hits unresolved, so that the
    next sync (its catch-up) resolves and merges them again; the other deliveries are untouched.
    What a manifest change, and a change of verdicts (`tracklog reverify`), needs."""
    merge_stored(con)  # what is stored is merged first: derived_state counts the merged hits
    changed = f"delivery_id IN (SELECT delivery_id FROM {delivery_ids})"
    for table in PER_DELIVERY_TABLES:
        con.execute(f"DELETE FROM {table} WHERE {changed}")
    con.execute(
        "INSERT INTO delivery_domains BY NAME SELECT *, 0 AS opens_unique, 0 AS clicks_unique "
        f"FROM ({metrics.domain_recipients_sql(f'r.{changed}')}) t"
    )
    # the deliveries' hits are resolved again, as any hit not resolved yet (_catch_up)
    unresolved = ", ".join(f"{c} = NULL" for c in RESOLUTION_COLUMNS)
    con.execute(f"UPDATE hits SET {unresolved} WHERE {changed} AND resolution IS NOT NULL")
    con.execute("UPDATE derived_state SET hits = (SELECT count(*) FROM hits WHERE resolution IS NOT NULL)")


def recompute_deliveries(con: duckdb.DuckDBPyConnection, deliveries: list[str]) -> None:
    """Inside the caller's transaction: drop the derived rows of `deliveries` and mark their
    hits unresolved, so that the next sync() builds them again from the rows stored now (after
    rows were erased: `tracklog forget`)."""
    merge_stored(con)  # what is stored is merged first: derived_state counts the merged hits
    con.execute("CREATE OR REPLACE TEMP TABLE _recompute (delivery_id VARCHAR)")
    try:
        con.executemany("INSERT INTO _recompute VALUES (?)", [[d] for d in deliveries])
        which = "delivery_id IN (SELECT delivery_id FROM _recompute)"
        for table in (*PER_DELIVERY_TABLES, "recipient_keys", "derived_manifests"):
            con.execute(f"DELETE FROM {table} WHERE {which}")
        unresolved = ", ".join(f"{c} = NULL" for c in RESOLUTION_COLUMNS)
        con.execute(f"UPDATE hits SET {unresolved} WHERE {which} AND resolution IS NOT NULL")
        con.execute(
            "UPDATE derived_state SET hits = (SELECT count(*) FROM hits WHERE resolution IS NOT NULL)"
        )
    finally:
        con.execute("DROP TABLE IF EXISTS _recompute")


def _catch_up(con: duckdb.DuckDBPyConnection) -> None:
    """Resolve and merge the stored hits not resolved yet (hits of a delivery whose manifest
    changed, of a database of an earlier version, of small inputs stored unresolved by an
    ingest, see store_unresolved), in batches of about CATCH_UP_BATCH hits so that memory stays
    bounded and small sources share one merge; each batch commits on its own."""
    pending = con.execute("""
SELECT h.source_id, min(h.line_no), max(h.line_no), count(*) FROM hits h WHERE h.resolution IS NULL
GROUP BY h.source_id ORDER BY h.source_id""").fetchall()
    batches: list[tuple[tuple[int, int], int, int]] = []
    group: list[int] = []
    size = 0
    for source_id, first, last, n in pending:
        if n > CATCH_UP_BATCH:  # a large source alone, in ranges of line numbers
            batches += [
                ((source_id, source_id), start, start + CATCH_UP_BATCH)
                for start in range(int(first), int(last) + 1, CATCH_UP_BATCH)
            ]
            continue
        if group and size + n > CATCH_UP_BATCH:
            batches.append(((group[0], group[-1]), 0, _ALL_LINES))
            group, size = [], 0
        group.append(int(source_id))
        size += int(n)
    if group:
        batches.append(((group[0], group[-1]), 0, _ALL_LINES))
    for sources, start, stop in batches:
        _transaction(con, functools.partial(_resolve_stored, sources=sources, start=start, stop=stop))


def store_unresolved(con: duckdb.DuckDBPyConnection, hits: str) -> None:
    """Store the hits of the relation `hits` without resolving or merging them (inside the
    caller's transaction): the next sync does, many inputs at once. For small inputs, whose
    merge would cost more than their hits (a fixed 0.1-0.2 s per merge)."""
    columns = ", ".join(HIT_COLUMNS)
    con.execute(f"INSERT INTO hits ({columns}) SELECT {columns} FROM {hits}")


def _parse_new_agents(con: duckdb.DuckDBPyConnection) -> None:
    """User agents of counted events never seen are parsed (in Python, once per distinct string)."""
    unseen = con.execute(f"""
SELECT DISTINCT e.user_agent FROM _ev e
WHERE {metrics.AGENT_EVENTS_SQL} AND e.user_agent IS NOT NULL
    AND e.user_agent NOT IN (SELECT user_agent FROM user_agent_families)""").fetchall()
    if not unseen:
        return
    load_arrow()  # here only: a report that merges nothing never pays for it
    con.register("_new_agents", useragent.agents_table([r[0] for r in unseen]))
    try:
        con.execute("INSERT INTO user_agent_families SELECT * FROM _new_agents")
    finally:
        con.unregister("_new_agents")


Part = tuple[str, tuple[str, ...]]  # a per-key SELECT and the value columns it gives


# A merge gathers each reader's dimension values as a bit mask over the batch's distinct value
# keys when they are at most this many (an UHUGEINT; far more than a batch's agents and links
# usually give), else as a list of the keys of each event unpivoted (the same sets, slower)
MASK_BITS = 128


def _reader_values(con: duckdb.DuckDBPyConnection) -> None:
    """The dimension values of the new events (numbered in dimension_values, new ones added):
    _dv, per delivery and value, the opens and clicks with it; _rv, per reader, the list of the
    values it was seen with. Each distinct agent and link is mapped to its values once. _dv
    counts the events per delivery, agent, link and type first (few groups), then unpivots
    those into (delivery, value key) rows. _rv gives each agent and link the bit mask of its
    values among the batch's (_pos), ORs them per reader in one grouping of the events, and
    turns each distinct mask into its list of keys once; with more than MASK_BITS distinct
    values in the batch, it gathers each reader's keys with list(DISTINCT ...) over the events
    unpivoted (grouping (reader, value) rows instead cost 3 times more)."""
    agent_values = ", ".join(f"{metrics.DIMENSIONS[d]} AS {d}" for d in metrics.AGENT_DIMENSIONS)
    link_values = ", ".join(f"x.{column} AS {d}" for d, column in metrics.LINK_COLUMNS.items())
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE _agents AS
SELECT a.user_agent, {agent_values}
FROM (SELECT DISTINCT e.user_agent FROM _ev e WHERE {metrics.AGENT_EVENTS_SQL}) a
LEFT JOIN user_agent_families u ON u.user_agent = a.user_agent""")
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE _links AS
SELECT x.delivery_id, x.link_id AS clicked_link, {link_values}
FROM (SELECT DISTINCT e.delivery_id, e.link_id, l.url AS link_url, l.label AS link_label,
        l.category AS link_category
      FROM _ev e LEFT JOIN links l ON l.delivery_id = e.delivery_id AND l.link_id = e.link_id
      WHERE {metrics.LINK_EVENTS_SQL}) x""")
    pairs = " UNION ".join(
        f"SELECT '{d}' AS dimension, {d} AS value FROM {'_agents' if d in metrics.AGENT_DIMENSIONS else '_links'}"
        for d in metrics.DIMENSIONS
    )
    con.execute(f"""
INSERT INTO dimension_values
SELECT (SELECT coalesce(max(value_key), 0) FROM dimension_values) + row_number() OVER (ORDER BY dimension, value),
    dimension, value
FROM (({pairs}) EXCEPT SELECT dimension, value FROM dimension_values) n""")
    tables = (("_agents", metrics.AGENT_DIMENSIONS), ("_links", tuple(metrics.LINK_COLUMNS)))
    for table, dims in tables:
        keys = ", ".join(f"v_{d}.value_key AS key_{d}" for d in dims)
        joins = " ".join(
            f"JOIN dimension_values v_{d} ON v_{d}.dimension = '{d}' AND v_{d}.value IS NOT DISTINCT FROM t.{d}"
            for d in dims
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT t.*, {keys} FROM {table} t {joins}")
    agent_keys = ", ".join(f"a.key_{d}" for d in metrics.AGENT_DIMENSIONS)
    link_keys = ", ".join(f"l.key_{d}" for d in metrics.LINK_COLUMNS)
    # each event joined to its agent's and link's keys (those of a click's link only)
    with_keys = f"""
JOIN _agents a ON a.user_agent IS NOT DISTINCT FROM e.user_agent
LEFT JOIN _links l ON l.delivery_id = e.delivery_id AND l.clicked_link = e.link_id AND {metrics.LINK_EVENTS_SQL}
WHERE {metrics.AGENT_EVENTS_SQL}"""

    def keyed(columns: str) -> str:
        """_ra unpivoted: the `columns` of each of its rows with each of its value keys."""
        return " UNION ALL ".join(
            f"SELECT {columns}, r.key_{d} AS value_key FROM _ra r"
            + ("" if d in metrics.AGENT_DIMENSIONS else f" WHERE r.key_{d} IS NOT NULL")
            for d in metrics.DIMENSIONS
        )

    # the events counted per delivery, agent, link and type (n), with their keys
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE _ra AS
SELECT e.delivery_id, e.type, e.n, {agent_keys}, {link_keys}
FROM (SELECT e.delivery_id, e.user_agent, e.link_id, e.type, count(*) AS n FROM _ev e
      WHERE {metrics.AGENT_EVENTS_SQL} GROUP BY ALL) e {with_keys}""")
    counts = {
        name: metrics.weighted_count(metrics.EVENT_COUNTS[name], "e.n")
        for name in ("opens_total", "clicks_total")
    }
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE _dv AS
SELECT e.delivery_id, e.value_key, {counts["opens_total"]} AS opens, {counts["clicks_total"]} AS clicks
FROM ({keyed("r.delivery_id, r.type, r.n")}) e
GROUP BY e.delivery_id, e.value_key""")
    every_key = " UNION ".join(
        f"SELECT key_{d} AS value_key FROM {table}" for table, dims in tables for d in dims
    )
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE _pos AS
SELECT value_key, CAST(row_number() OVER (ORDER BY value_key) - 1 AS UHUGEINT) AS bit
FROM ({every_key}) k WHERE value_key IS NOT NULL""")
    if con.execute("SELECT count(*) FROM _pos").fetchall()[0][0] > MASK_BITS:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _ra AS SELECT e.recipient_key, {agent_keys}, {link_keys} FROM _ev e {with_keys}"
        )
        con.execute(f"""
CREATE OR REPLACE TEMP TABLE _rv AS
SELECT e.recipient_key, list(DISTINCT e.value_key) AS value_keys
FROM ({keyed("r.recipient_key")}) e GROUP BY e.recipient_key""")
    else:
        for table, dims in tables:
            bits = " | ".join(f"coalesce(CAST(1 AS UHUGEINT) << p_{d}.bit, 0)" for d in dims)
            joins = " ".join(f"LEFT JOIN _pos p_{d} ON p_{d}.value_key = t.key_{d}" for d in dims)
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT t.*, {bits} AS mask FROM {table} t {joins}"
            )
        con.execute(f"""
CREATE OR REPLACE TEMP TABLE _ra AS
SELECT e.recipient_key, bit_or(a.mask | coalesce(l.mask, 0)) AS mask FROM _ev e {with_keys}
GROUP BY e.recipient_key""")
        # each distinct mask (readers seen with the same values share one) as its list of keys
        con.execute("""
CREATE OR REPLACE TEMP TABLE _rv AS
SELECT r.recipient_key, m.value_keys FROM _ra r JOIN (
    SELECT d.mask, list_filter(k.keys, lambda v, i: ((d.mask >> CAST(i - 1 AS UHUGEINT)) & 1) = 1) AS value_keys
    FROM (SELECT DISTINCT mask FROM _ra) d, (SELECT list(value_key ORDER BY bit) AS keys FROM _pos) k
) m ON m.mask = r.mask""")
    _drop_tables(con, "_ra", "_agents", "_links", "_pos")


def _merge_readers(con: duckdb.DuckDBPyConnection) -> Part:
    """Merge the new events' readers into `readers`: their flags and the dimension values they
    were seen with. Returns the per-delivery SELECT of the unique counts they add (readers whose
    flag was not set yet). _rd keeps, per reader of the batch, the flags and values that are new."""
    flags = metrics.READER_FLAGS
    new_flags = ", ".join(f"bool_or({sql}) AS {flag}" for flag, sql in flags.items())
    # the existing readers from one outer join, which builds on the small side (the new events'
    # readers) and probes `readers`
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE _rd AS
WITH n AS (
    SELECT f.*, coalesce(v.value_keys, []) AS value_keys
    FROM (
        SELECT e.recipient_key, e.delivery_id, e.email_domain, {new_flags}
        FROM _ev e GROUP BY e.recipient_key, e.delivery_id, e.email_domain
    ) f
    LEFT JOIN _rv v ON v.recipient_key = f.recipient_key
)
SELECT n.recipient_key, n.delivery_id, n.email_domain, old.recipient_key IS NOT NULL AS known,
    {", ".join(f"n.{f} AND NOT coalesce(old.{f}, FALSE) AS new_{f}" for f in flags)},
    {", ".join(f"n.{f} OR coalesce(old.{f}, FALSE) AS {f}" for f in flags)},
    CASE WHEN old.recipient_key IS NULL THEN n.value_keys
         ELSE list_filter(n.value_keys, lambda k: NOT list_contains(old.value_keys, k)) END AS new_value_keys,
    coalesce(old.value_keys, []) AS old_value_keys
FROM n LEFT JOIN readers old ON old.recipient_key = n.recipient_key""")
    _drop_tables(con, "_rv")
    changed = " OR ".join([f"d.new_{f}" for f in flags] + ["len(d.new_value_keys) > 0"])
    con.execute(f"""
UPDATE readers SET {", ".join(f"{f} = d.{f}" for f in flags)},
    value_keys = list_concat(d.old_value_keys, d.new_value_keys)
FROM _rd d WHERE readers.recipient_key = d.recipient_key AND d.known AND ({changed})""")
    con.execute(
        f"INSERT INTO readers SELECT recipient_key, delivery_id, email_domain, {', '.join(flags)}, "
        "new_value_keys FROM _rd WHERE NOT known"
    )
    counts = ", ".join(
        f"count(*) FILTER (WHERE d.new_{flag}) AS {name}" for name, flag in metrics.UNIQUE_OF_FLAG.items()
    )
    return f"SELECT d.delivery_id, {counts} FROM _rd d GROUP BY d.delivery_id", tuple(metrics.UNIQUE_OF_FLAG)


def _merge_browsers(con: duckdb.DuckDBPyConnection) -> Part:
    """Merge the browsers of the new clicks into `click_browsers`; returns the per-delivery
    SELECT of the persons_clicked they add."""
    cols = metrics.BROWSER_COLUMNS
    same = " AND ".join(
        ["b.delivery_id = n.delivery_id"] + [f"b.{c} IS NOT DISTINCT FROM n.{c}" for c in cols]
    )
    # the new browsers: those of the batch's clicks that no stored row has (an outer join that
    # builds on the batch's few and keeps those without a match; click_browsers holds each
    # browser once, so a batch browser matches one row at most)
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE _nb AS
WITH n AS (
    SELECT DISTINCT e.delivery_id, {", ".join(f"{sql} AS {c}" for c, sql in cols.items())}
    FROM _ev e WHERE e.type = 'click'
)
SELECT n.* FROM n LEFT JOIN click_browsers b ON {same} WHERE b.delivery_id IS NULL""")
    con.execute("INSERT INTO click_browsers BY NAME SELECT * FROM _nb")
    return "SELECT n.delivery_id, count(*) AS persons_clicked FROM _nb n GROUP BY n.delivery_id", (
        "persons_clicked",
    )


def _merge_totals(con: duckdb.DuckDBPyConnection, readers: Part, browsers: Part) -> None:
    counts = ", ".join(f"{sql} AS {name}" for name, sql in metrics.EVENT_COUNTS.items())
    excluded = ", ".join(f"{sql} AS {name}" for name, sql in metrics.EXCLUDED_AGGREGATES.items())
    # the counts add up; the unique counts add what the sets did not hold yet
    parts = [
        (f"SELECT e.delivery_id, {counts} FROM _ev e GROUP BY e.delivery_id", tuple(metrics.EVENT_COUNTS)),
        (
            f"SELECT h.delivery_id, {excluded} FROM _nf h WHERE h.delivery_id IS NOT NULL GROUP BY h.delivery_id",
            tuple(metrics.EXCLUDED_AGGREGATES),
        ),
        readers,
        browsers,
    ]
    _add_rows(con, "delivery_totals", ("delivery_id",), metrics.TOTAL_COLUMNS, parts)


def _reader_value_rows(keys: str, sign: str = "") -> Part:
    """Per (delivery, dimension, value): the readers of _rd whose list `keys` holds the value,
    counted with `sign` (merge: the values new to each reader; unmerge, '-': all of theirs)."""
    return (
        f"SELECT p.delivery_id, v.dimension, v.value, {sign}p.readers AS readers FROM ("
        "SELECT n.delivery_id, n.value_key, count(*) AS readers FROM ("
        f"SELECT d.delivery_id, unnest(d.{keys}) AS value_key FROM _rd d) n "
        "GROUP BY n.delivery_id, n.value_key) p JOIN dimension_values v ON v.value_key = p.value_key"
    ), ("readers",)


def _merge_dimensions(con: duckdb.DuckDBPyConnection) -> None:
    """Opens and clicks add up per (delivery, dimension, value); readers add the readers for
    whom the value is new (_rd.new_value_keys)."""
    named = "JOIN dimension_values v ON v.value_key = p.value_key"
    parts: list[Part] = [
        (
            f"SELECT p.delivery_id, v.dimension, v.value, p.opens, p.clicks FROM _dv p {named}",
            ("opens", "clicks"),
        ),
        _reader_value_rows("new_value_keys"),
    ]
    _add_rows(
        con,
        "delivery_dimensions",
        ("delivery_id", "dimension", "value"),
        ("opens", "clicks", "readers"),
        parts,
    )


def _merge_domains(con: duckdb.DuckDBPyConnection) -> None:
    uniques: tuple[str, ...] = ("opens_unique", "clicks_unique")
    counts = ", ".join(f"count(*) FILTER (WHERE d.new_{metrics.UNIQUE_OF_FLAG[n]}) AS {n}" for n in uniques)
    parts = [(f"SELECT d.delivery_id, d.email_domain AS domain, {counts} FROM _rd d GROUP BY ALL", uniques)]
    _add_rows(
        con,
        "delivery_domains",
        ("delivery_id", "domain"),
        ("sent", "delivered", "opens_unique", "clicks_unique"),
        parts,
    )


def _merge_minutes(con: duckdb.DuckDBPyConnection, sign: str = "") -> None:
    """Opens and clicks add up per (delivery, minute since its send): those of the batch's
    events _ev (`sign` '-': taken out again, _unmerge)."""
    part = (
        f"SELECT m.delivery_id, m.minutes, {sign}m.opens AS opens, {sign}m.clicks AS clicks "
        f"FROM ({metrics.minute_figures_sql(events='_ev')}) m"
    )
    _add_rows(
        con,
        "delivery_minutes",
        ("delivery_id", "minutes"),
        ("opens", "clicks"),
        [(part, ("opens", "clicks"))],
    )


def _merge_not_counted(con: duckdb.DuckDBPyConnection, sign: str = "") -> None:
    """The hits not counted add up per delivery id: those of the batch's hits _nf (`sign` '-':
    taken out again, _unmerge)."""
    names = tuple(metrics.NOT_COUNTED)
    counts = ", ".join(f"{sign}n.{c} AS {c}" for c in names)
    part = f"SELECT n.delivery_id, {counts} FROM ({metrics.not_counted_sql(hits='_nf')}) n"
    _add_rows(con, "delivery_not_counted", ("delivery_id",), names, [(part, names)])


def _add_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    keys: tuple[str, ...],
    values: tuple[str, ...],
    parts: list[Part],
) -> None:
    """Add the `values` of the SELECTs `parts` (each with the `keys` and some of the values) to
    the rows of `table` with the same keys (NULL keys match NULL), creating rows as needed. The
    tables merged this way are small (a row per delivery and value), so the touched rows are
    replaced by their sums."""
    union = " UNION ALL ".join(
        f"SELECT {', '.join(keys)}, "
        + ", ".join(f"CAST({v if v in given else 0} AS BIGINT) AS {v}" for v in values)
        + f" FROM ({sql}) p"
        for sql, given in parts
    )
    same = " AND ".join(f"t.{k} IS NOT DISTINCT FROM d.{k}" for k in keys)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _delta AS {union}")
    try:
        con.execute(f"""
CREATE OR REPLACE TEMP TABLE _sums AS
SELECT {", ".join(keys)}, {", ".join(f"CAST(sum({v}) AS BIGINT) AS {v}" for v in values)}
FROM (
    SELECT {", ".join(keys)}, {", ".join(values)} FROM _delta
    UNION ALL
    SELECT {", ".join(f"t.{c}" for c in (*keys, *values))} FROM {table} t
    WHERE EXISTS (SELECT 1 FROM _delta d WHERE {same})
) s
GROUP BY {", ".join(keys)}""")
        con.execute(f"DELETE FROM {table} t WHERE EXISTS (SELECT 1 FROM _delta d WHERE {same})")
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _sums")
    finally:
        store.cleanup(con, "DROP TABLE IF EXISTS _delta; DROP TABLE IF EXISTS _sums")
