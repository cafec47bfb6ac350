"""tracklog: email message tracking analytics from nginx access logs, stored in DuckDB."""

__version__ = "0.1.0"
