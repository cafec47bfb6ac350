"""Each hit of a parsed chunk looked up among the manifests' recipients in a hash table of the
compiled extension (_fastlog.key_index), built once per run from `recipient_keys`, delivery by
delivery as the logs name them: the chunk gains its recipients' keys and email domains as two
columns (metrics.LOOKED_UP), which metrics.resolve_sql(hits, None) reads instead of joining
`recipient_keys`.

What it replaces, per chunk: a semi-join of `recipient_keys` with the chunk (every recipient of
the manifests scanned again, chunk after chunk) and the resolving join built on its result, about
2.5 of the 17-19 CPU-s of the benchmark's ingest. The join stays the reference and the path for
what is not an Arrow chunk of the compiled pass (other formats' chunks, small chunks resolved
later, the catch-up); tests compare the two on every stored table.

Loading costs about a fifth of a microsecond per recipient, the join about a microsecond per hit
and chunk: a run loads a delivery's recipients once the lines it has read reach half as many as
it would load (LOAD_RATIO; the chunks before are joined), so a cron run of 100,000 lines into
manifests of millions of recipients keeps the join, and a large log loads them at its first
chunk. It holds LOAD_MAX recipients at most (memory); chunks of the deliveries beyond are joined.

The table is a snapshot: `recipient_keys` changes only when a manifest is stored or replaced
(derived.sync, before the ingest's chunks), and each chunk checks the manifests' state it was
built from (a few rows of `derived_manifests`), dropping the table when it moved.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tracklog.ingest import fastpath
from tracklog.metrics import LOOKED_UP, email_domain_sql

# what the table was built from: the manifests in force (replaced manifests change the hash or
# the time) and the number of recipients (an erasure removes some)
_STATE_SQL = (
    "SELECT (SELECT count(*) FROM recipient_keys), "
    "(SELECT string_agg(delivery_id || ':' || manifest_sha256 || ':' || CAST(loaded_at AS VARCHAR), ',' "
    "ORDER BY delivery_id) FROM derived_manifests)"
)
LOAD_RATIO = 2  # recipients loaded per line read in the run, at most
# recipients held at most: about 52 bytes each outside DuckDB's memory limit (the copied key,
# its slots, its recipient key and domain), 26 MB at most, which the 500 MB peak of the ingest
# has room for; the chunks of deliveries beyond it are joined, as they were before the table
LOAD_MAX = 500_000
_LOAD_BATCH = 65_536  # recipients read at a time

_ROWS = pa.schema([pa.field("recipient_key", pa.int64()), pa.field("email_domain", pa.string())])
_EMPTY = pa.schema([_ROWS.field(0), pa.field("email_domain", pa.dictionary(pa.int32(), pa.string()))])


class RecipientLookup:
    """The manifests' recipients of the deliveries seen so far, by (delivery, recipient id)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._state: tuple[object, ...] | None = None
        self._counts: dict[str, int] = {}  # recipients per delivery with a manifest
        self._names: list[str] = []  # the deliveries loaded, in their numbers' order
        self._rows = _EMPTY.empty_table()  # per entry of the table: recipient_key, email_domain
        self._index: object | None = None
        self._lines = 0  # rows of the chunks offered so far
        self._failed = False  # the manifests hold a key twice (never): the join, for the whole run

    @staticmethod
    def available() -> bool:
        return fastpath.key_index_available()

    def ready(self, tables: list[pa.Table], *, lines: int | None = None) -> bool:
        """Whether the chunk made of `tables` is to be looked up (attach), its deliveries'
        recipients loaded when needed (LOAD_RATIO); else the join resolves it. `lines`: the
        chunk's lines, when the tables' rows are not (the compiled pass's table holds a
        placeholder for each row the SQL computed again in another)."""
        self._check_state()
        self._lines += sum(t.num_rows for t in tables) if lines is None else lines
        if self._failed:
            return False
        deliveries = set().union(*(self._deliveries_of(t.column("delivery_id")) for t in tables))
        new = (deliveries & set(self._counts)) - set(self._names)
        wanted = sum(self._counts[d] for d in new)
        if wanted > LOAD_RATIO * self._lines or len(self._rows) + wanted > LOAD_MAX:
            return False
        try:
            self._load(new)
        except ValueError:  # a key twice: the join gives what the definitions say
            self._failed = True
            return False
        return True

    def attach(self, table: pa.Table) -> pa.Table:
        """`table` (a chunk's columns, delivery_id and recipient_id among them; a part of what
        ready() was given and said yes to, so its deliveries are loaded) with the LOOKED_UP
        columns: its recipients' keys and email domains, NULL where the manifests have no such
        recipient of that delivery."""
        names = pa.array(self._names, pa.string())
        batches = []
        for batch in table.to_batches():
            rows = self._lookup(names, batch.column("delivery_id"), batch.column("recipient_id"))
            picked = pc.if_else(pc.less(rows, 0), pa.scalar(None, pa.int32()), rows)
            key = self._rows.column("recipient_key").take(picked)
            domain = self._rows.column("email_domain").take(picked)
            batches.append(
                pa.RecordBatch.from_arrays(
                    [*batch.columns, _one(key), _one(domain)], names=[*batch.schema.names, *LOOKED_UP]
                )
            )
        if not batches:
            empty = [pa.field(LOOKED_UP[0], pa.int64()), pa.field(LOOKED_UP[1], _EMPTY.field(1).type)]
            return pa.Table.from_batches([], pa.schema([*table.schema, *empty]))
        return pa.Table.from_batches(batches)

    def _check_state(self) -> None:
        row = self._con.execute(_STATE_SQL).fetchall()[0]
        if row != self._state:
            self._state = row
            counts = self._con.execute(
                "SELECT delivery_id, count(*) FROM recipient_keys GROUP BY delivery_id"
            )
            self._counts = {d: int(n) for d, n in counts.fetchall()}
            self._names, self._rows, self._index, self._failed = [], _EMPTY.empty_table(), None, False

    @staticmethod
    def _deliveries_of(column: pa.ChunkedArray) -> set[str]:
        values: set[str] = set()
        for chunk in column.chunks:
            distinct = chunk.dictionary if pa.types.is_dictionary(chunk.type) else chunk.unique()
            values.update(v for v in distinct.to_pylist() if v is not None)
        return values

    def _load(self, deliveries: set[str]) -> None:
        """The recipients of the `deliveries` (with a manifest) not loaded yet, added to the table
        (its keys copied: only their keys and domains stay here, in the table's order)."""
        new = sorted(deliveries - set(self._names))
        if self._index is None:
            self._index = fastpath.key_index()
        if not new:
            return
        # read in batches (the whole result at once held 15-20 MB more at the run's peak)
        reader = self._con.sql(
            "SELECT delivery_id, recipient_id, recipient_key, "
            f"{email_domain_sql('email')} AS email_domain FROM recipient_keys "
            "WHERE delivery_id IN (SELECT unnest($new))",
            params={"new": new},
        ).to_arrow_reader(_LOAD_BATCH)
        self._names += new
        names = pa.array(self._names, pa.string())
        parts = [self._rows]
        for batch in reader:
            numbers = pc.index_in(batch.column("delivery_id"), value_set=names).cast(pa.int32())
            fastpath.key_add(self._index, numbers, batch.column("recipient_id"))
            rows = pa.table([batch.column("recipient_key"), batch.column("email_domain")], schema=_ROWS)
            parts.append(
                rows.set_column(1, "email_domain", pc.dictionary_encode(rows.column("email_domain")))
            )
        self._rows = pa.concat_tables(parts).unify_dictionaries().combine_chunks()

    def _lookup(self, names: pa.Array, delivery: pa.Array, recipient: pa.Array) -> pa.Array:
        """The entry of each hit in the table (a row of self._rows), -1 for none (int32)."""
        if pa.types.is_dictionary(delivery.type):
            numbers = pc.index_in(delivery.dictionary, value_set=names).take(delivery.indices)
        else:
            numbers = pc.index_in(delivery, value_set=names)
        numbers = pc.if_else(pc.is_valid(recipient), numbers.fill_null(-1), -1).cast(pa.int32())
        return fastpath.key_lookup(self._index, numbers, recipient)


def _one(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
