"""A report's table as Python values: its column names, the kind of each column, and its rows.

What the reports return and tracklog.render prints. DuckDB hands its rows over as they are
(`from_cursor`), so printing a report needs no pyarrow (about 30 ms of start-up for a command
that runs in 0.2 s); an Arrow table (Spark's results, the ingest summary) comes in by
`from_arrow`, with the same values as `pyarrow.Table.to_pylist()`. The reading methods that
pyarrow.Table also has (column_names, num_rows, to_pylist, slice) mean the same here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from tracklog.duck import duckdb

# The kind of a column: what render needs to know to align, fit and neutralise its cells.
KINDS = ("integer", "float", "decimal", "timestamp", "date", "boolean", "string", "other")

_DUCKDB_KINDS = {
    **dict.fromkeys(
        (
            "tinyint",
            "smallint",
            "integer",
            "bigint",
            "hugeint",
            "utinyint",
            "usmallint",
            "uinteger",
            "ubigint",
            "uhugeint",
        ),
        "integer",
    ),
    "float": "float",
    "double": "float",
    "decimal": "decimal",
    **dict.fromkeys(
        ("timestamp", "timestamp with time zone", "timestamp_s", "timestamp_ms", "timestamp_ns"), "timestamp"
    ),
    "date": "date",
    "boolean": "boolean",
    "varchar": "string",
}


@dataclass(frozen=True)
class Result:
    """Rows of values, each a tuple in the order of `names`; `kinds[i]` is the kind of column i."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.kinds) or any(k not in KINDS for k in self.kinds):
            raise ValueError(f"a kind from {KINDS} for each of the columns {self.names} (got {self.kinds})")

    @classmethod
    def from_cursor(cls, cursor: duckdb.DuckDBPyConnection) -> Result:
        """The result of the query just executed on `cursor`: its rows, fetched as Python values."""
        description = cursor.description or []
        names = tuple(str(d[0]) for d in description)
        kinds = tuple(_DUCKDB_KINDS.get(d[1].id, "other") for d in description)
        return cls(names, kinds, tuple(cursor.fetchall()))

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Result:
        """`table`'s rows as pyarrow.Table.to_pylist() gives its values."""
        import pyarrow as pa

        kinds = tuple(_arrow_kind(pa, f.type) for f in table.schema)
        columns = [c.to_pylist() for c in table.columns]
        return cls(tuple(table.column_names), kinds, tuple(zip(*columns, strict=True)) if columns else ())

    @classmethod
    def from_columns(cls, columns: Sequence[tuple[str, str, Iterable[Any]]]) -> Result:
        """A result made in Python: (name, kind, values) per column, the values of equal length."""
        values = [list(v) for _, _, v in columns]
        rows = tuple(zip(*values, strict=True)) if values else ()
        return cls(tuple(n for n, _, _ in columns), tuple(k for _, k, _ in columns), rows)

    @property
    def column_names(self) -> list[str]:
        return list(self.names)

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def kind(self, name: str) -> str:
        return self.kinds[self.names.index(name)]

    def values(self, name: str) -> list[Any]:
        """The values of one column, in row order."""
        i = self.names.index(name)
        return [r[i] for r in self.rows]

    def to_pylist(self) -> list[dict[str, Any]]:
        """One dict per row, {column name: value}."""
        return [dict(zip(self.names, r, strict=True)) for r in self.rows]

    def part(self, names: Sequence[str], key: Any) -> Result:
        """The columns `names` of the rows whose first column is `key`: one of the tables of a
        query that returns several, each tagged in its first column."""
        at = [self.names.index(n) for n in names]
        return Result(
            tuple(names),
            tuple(self.kinds[i] for i in at),
            tuple(tuple(r[i] for i in at) for r in self.rows if r[0] == key),
        )

    def slice(self, offset: int = 0, length: int | None = None) -> Result:
        """At most `length` rows from `offset` on."""
        end = None if length is None else offset + length
        return Result(self.names, self.kinds, self.rows[offset:end])


def _arrow_kind(pa: Any, type_: pa.DataType) -> str:
    types = pa.types
    for test, kind in (
        (types.is_integer, "integer"),
        (types.is_floating, "float"),
        (types.is_decimal, "decimal"),
        (types.is_timestamp, "timestamp"),
        (types.is_date, "date"),
        (types.is_boolean, "boolean"),
        (types.is_string, "string"),
        (types.is_large_string, "string"),
    ):
        if test(type_):
            return str(kind)
    return "other"
