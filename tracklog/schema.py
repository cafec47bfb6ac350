"""The database schema, all of it in one place: base tables, the derived tables that
`tracklog.derived` maintains, and the one migration ladder that brings any older file up to
SCHEMA_VERSION. Pure DDL: no definitions of metrics live here.
"""

from __future__ import annotations

import duckdb

from tracklog.errors import DataError
from tracklog.ingest.routes import PATH_SQL

SCHEMA_VERSION = 2  # 2: hits.path became a virtual column (computed from the route and ids)

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


def apply_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    row = rows[0] if rows else None
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
