"""DuckDB's engine, without the `duckdb` package's Python layer.

The `duckdb` package (2.x) is a thin re-export of the compiled engine `_duckdb` plus Python
helpers tracklog never calls: its version string read through importlib.metadata, the
relational API's expression and typing modules. Importing the package costs about 65 ms, more
than half of a report's whole run on a million hits; importing the engine it re-exports costs
about 10 ms. Everything tracklog uses (connect, the connection, the exception classes) is the
engine's own, the very objects `duckdb.*` names, so `except duckdb.Error` catches the same
errors either way. Every module of tracklog imports DuckDB from here.
"""

from __future__ import annotations

import _duckdb as duckdb

__all__ = ["duckdb"]


def load_arrow() -> None:
    """Set up the engine's exchange of Arrow tables with Python: scanning a registered
    pyarrow table and the connection's Arrow methods (.to_arrow_table(), .to_arrow_reader())
    are the duckdb package's, which sets them up when it is imported. Called by the modules
    that hand Arrow tables to DuckDB or read them from it (ingest, manifests, the classifier,
    exports); a report never needs it."""
    import duckdb as package  # noqa: F401  (imported for its side effect)
