"""CSV for spreadsheets: cells that a spreadsheet would run as a formula, neutralised.

A cell starting with = + - @ (or a tab or carriage return, which some spreadsheets skip before
looking for one) is prefixed with a single quote, the OWASP "CSV injection" advice. User agents,
URLs and labels are attacker-written, so `--excel-safe` applies this to every text cell of the
exports and of the reports' CSV. Only text cells: numbers and times are never formulas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a table is neutralised: a report's CSV needs neither
    import pyarrow as pa

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PREFIX = "'"
_PATTERN = "^[" + "".join("\\" + c if c in "-\\" else c for c in FORMULA_STARTS) + "]"


def neutralised_text(text: str) -> str:
    """`text` as a spreadsheet shows it without running it."""
    return PREFIX + text if text.startswith(FORMULA_STARTS) else text


def neutralised_table(table: pa.Table) -> pa.Table:
    """`table` with every text cell neutralised (vectorized: no Python per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            risky = pc.fill_null(pc.match_substring_regex(column, _PATTERN), False)
            column = pc.if_else(risky, pc.binary_join_element_wise(PREFIX, column, ""), column)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)
