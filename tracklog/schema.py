"""The database schema, all of it in one place: base tables, the derived tables that
`tracklog.derived` maintains, and the one migration ladder that brings any older file up to
SCHEMA_VERSION. Pure DDL: no definitions of metrics live here.
"""

from __future__ import annotations

from collections.abc import Callable

from tracklog.duck import duckdb
from tracklog.errors import DataError
from tracklog.routes import PATH_SQL

# 2: hits.path became a virtual column (computed from the route and ids)
# 3: hits carry their resolution; the derived tables of tracklog.derived, merged per commit,
#    replace the caches of schema 2
# 4: sources carry the tracking server they came from and the time of their newest hit
# 5: web tracking: page-tag hits (anonymous ones have no delivery nor recipient), links marked
#    for web tracking, the tombstones of `tracklog forget`
# 6: hits carry their class (human | machine_open | bot_click) and reasons (tracklog.classify);
#    the classifier's settings and the proxy ranges live in the database
# 7: an ingest merges its hits into the derived tables every few chunks, in a transaction of its
#    own: `unmerged` holds the line ranges stored but not merged yet (an older tracklog, which
#    would not merge them, refuses the file)
SCHEMA_VERSION = 7

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
    kind         VARCHAR NOT NULL,      -- open | click | mirror | unsubscribe | page
    delivery_id  VARCHAR,               -- NULL only for a page tag without a valid-looking token
    link_id      VARCHAR,               -- clicks: the link; pages: the tag
    recipient_id VARCHAR,               -- NULL only for a page tag without a valid-looking token
    sig_status   VARCHAR NOT NULL,      -- the ?s= signature (a page's tl= token): valid | invalid |
                                        -- missing | unchecked
    -- Resolved against the manifests by tracklog.derived as the hit is stored (NULL until then),
    -- and again when its delivery's manifest is stored or replaced (metrics.resolve_sql):
    resolution   VARCHAR,               -- event | trap | delivery, recipient, link (orphans) |
                                        -- rejected | failed | automated
    delivery_key INTEGER,               -- delivery_keys; NULL for a delivery without manifest
    recipient_key BIGINT,               -- recipient_keys; NULL when not a manifest recipient
    email_domain VARCHAR,               -- of that recipient's email
    -- Classified by tracklog.classify with the resolution (NULL until then, and for rejected
    -- and failed hits): human | machine_open | bot_click, and the reasons of a flagged hit
    -- (comma-separated: mpp, proxy_range, head, agent, trap, burst, fast)
    class        VARCHAR,
    reasons      VARCHAR
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
    last_ingest  TIMESTAMP NOT NULL,
    server       VARCHAR,               -- the tracking server (ingest --source, or its directory)
    last_hit     TIMESTAMP              -- UTC time of its newest tracking hit (ingest keeps it)
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
    category     VARCHAR,
    web_tracking BOOLEAN                -- the click carries the landing token to the site
);

-- the classifier's settings in force (tracklog.classify; one row, written by ingest and
-- `tracklog reclassify` from the [classify] table of tracklog.toml) and its version
CREATE TABLE IF NOT EXISTS classifier_settings (settings VARCHAR NOT NULL, version VARCHAR NOT NULL);
-- the mail proxies' networks (Apple's egress ranges; `tracklog proxy-ranges update`): network
-- numbers (IPv4: the address; IPv6: its first 64 bits) of each CIDR, and where the list came from
CREATE TABLE IF NOT EXISTS proxy_ranges (family TINYINT NOT NULL, lo UBIGINT NOT NULL, hi UBIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS proxy_ranges_source (source VARCHAR NOT NULL, digest VARCHAR NOT NULL, ranges BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS recipients (
    delivery_id  VARCHAR NOT NULL,
    recipient_id VARCHAR NOT NULL,
    email        VARCHAR,
    status       VARCHAR NOT NULL,      -- sent | failed
    attributes   VARCHAR                -- JSON object of the other columns, NULL if none
);

-- `tracklog forget`: a keyed hash (HMAC with the secret) of each erased recipient id, never the
-- id, so that re-ingesting an old manifest or log does not bring the recipient back
CREATE TABLE IF NOT EXISTS forgotten (
    delivery_id    VARCHAR,             -- NULL: every delivery
    recipient_hash VARCHAR NOT NULL,    -- signing.sign_path(secret, routes.forget_text(id))
    forgotten_at   TIMESTAMP NOT NULL
);
"""
)


# The derived tables: what tracklog.derived keeps of the hits, the manifests and the metric
# definitions, merged every few chunks of new hits (so the cost follows the new hits). All of
# it can be rebuilt from the tables above; never exported.
DERIVED_SCHEMA = """
-- deliveries numbered once and for all (a key is never reused, so stored keys stay valid)
CREATE TABLE IF NOT EXISTS delivery_keys (delivery_id VARCHAR NOT NULL, delivery_key INTEGER NOT NULL);
-- each delivery's recipients numbered (metrics.recipient_keys_sql), renumbered with its manifest
CREATE TABLE IF NOT EXISTS recipient_keys (
    delivery_id VARCHAR NOT NULL, recipient_id VARCHAR NOT NULL, email VARCHAR, status VARCHAR NOT NULL,
    recipient_key BIGINT NOT NULL
);
-- all-time figures per delivery id (metrics.delivery_totals_sql)
CREATE TABLE IF NOT EXISTS delivery_totals (
    delivery_id VARCHAR NOT NULL,
    opens_total BIGINT NOT NULL, clicks_total BIGINT NOT NULL, mirror_views BIGINT NOT NULL,
    optout_clicks BIGINT NOT NULL, opens_unique BIGINT NOT NULL, clicks_unique BIGINT NOT NULL,
    unsubscribes BIGINT NOT NULL, persons_clicked BIGINT NOT NULL,
    rejected_hits BIGINT NOT NULL, failed_hits BIGINT NOT NULL, machine_opens BIGINT NOT NULL,
    bot_clicks BIGINT NOT NULL
);
-- all-time figures per delivery and dimension value (metrics.dimension_figures_sql)
CREATE TABLE IF NOT EXISTS delivery_dimensions (
    delivery_id VARCHAR NOT NULL, dimension VARCHAR NOT NULL, value VARCHAR,
    opens BIGINT NOT NULL, clicks BIGINT NOT NULL, readers BIGINT NOT NULL
);
-- all-time figures per delivery and recipient email domain (metrics.domain_figures_sql)
CREATE TABLE IF NOT EXISTS delivery_domains (
    delivery_id VARCHAR NOT NULL, domain VARCHAR, sent BIGINT NOT NULL, delivered BIGINT NOT NULL,
    opens_unique BIGINT NOT NULL, clicks_unique BIGINT NOT NULL
);
-- all-time hits not counted per delivery id as logged, NULL for none (metrics.not_counted_sql)
CREATE TABLE IF NOT EXISTS delivery_not_counted (
    delivery_id VARCHAR, rejected_hits BIGINT NOT NULL, failed_hits BIGINT NOT NULL,
    machine_opens BIGINT NOT NULL, bot_clicks BIGINT NOT NULL, orphan_hits BIGINT NOT NULL,
    clock_hits BIGINT NOT NULL
);
-- all-time opens and clicks per delivery and whole minute since its send (metrics.minute_figures_sql)
CREATE TABLE IF NOT EXISTS delivery_minutes (
    delivery_id VARCHAR NOT NULL, minutes BIGINT, opens BIGINT NOT NULL, clicks BIGINT NOT NULL
);
-- the sets behind the unique counts, so that new events merge instead of recounting:
-- each reader with an event: its flags (metrics.READER_FLAGS) and the dimension values it was
-- seen with (numbered in dimension_values) ...
CREATE TABLE IF NOT EXISTS readers (
    recipient_key BIGINT NOT NULL, delivery_id VARCHAR NOT NULL, email_domain VARCHAR,
    opened BOOLEAN NOT NULL, clicked BOOLEAN NOT NULL, unsubscribed BOOLEAN NOT NULL,
    value_keys INTEGER[] NOT NULL
);
CREATE TABLE IF NOT EXISTS dimension_values (value_key INTEGER NOT NULL, dimension VARCHAR NOT NULL, value VARCHAR);
-- ... and each browser (metrics.BROWSER_COLUMNS) that clicked, per delivery
CREATE TABLE IF NOT EXISTS click_browsers (delivery_id VARCHAR NOT NULL, uid VARCHAR, ip VARCHAR, user_agent VARCHAR);
-- each distinct user agent of an event, parsed once (useragent.parse_agent)
CREATE TABLE IF NOT EXISTS user_agent_families (user_agent VARCHAR NOT NULL, browser VARCHAR, os VARCHAR, device VARCHAR);
-- each distinct user agent of a hit as the classifier sees it (classify.agent_kind): bot, mpp,
-- proxy (a mail client's image proxy) or NULL
CREATE TABLE IF NOT EXISTS agent_kinds (user_agent VARCHAR NOT NULL, kind VARCHAR);
-- what the derived tables were made from: hits merged, the ua-parser and definitions versions,
-- and each delivery's manifest version
CREATE TABLE IF NOT EXISTS derived_state (
    hits BIGINT NOT NULL, agents_version VARCHAR NOT NULL, definitions VARCHAR NOT NULL,
    classifier VARCHAR NOT NULL DEFAULT ''  -- classifier_settings.version the classes were made with
);
CREATE TABLE IF NOT EXISTS derived_manifests (
    delivery_id VARCHAR NOT NULL, manifest_sha256 VARCHAR NOT NULL, loaded_at TIMESTAMP NOT NULL
);
-- hits an ingest stored classified and resolved but has not merged into the tables above yet
-- (it merges every few chunks, derived.merge_stored): the lines [first_line, stop_line) of the
-- sources numbered lo_source to hi_source; empty whenever the derived tables are current
CREATE TABLE IF NOT EXISTS unmerged (
    lo_source INTEGER NOT NULL, hi_source INTEGER NOT NULL, first_line BIGINT NOT NULL, stop_line BIGINT NOT NULL
);
"""

# The classification of a hit (tracklog.classify): judged with its neighbours and the settings of
# its day, so kept with the hit wherever it goes (the lake too), unlike the resolution, which any
# engine recomputes from the manifests.
CLASS_COLUMNS = ("class", "reasons")
RESOLUTION_COLUMNS = ("resolution", "delivery_key", "recipient_key", "email_domain", *CLASS_COLUMNS)
DERIVED_TABLES = (
    "delivery_keys",
    "recipient_keys",
    "delivery_totals",
    "delivery_dimensions",
    "delivery_domains",
    "delivery_minutes",
    "delivery_not_counted",
    "readers",
    "dimension_values",
    "click_browsers",
    "user_agent_families",
    "agent_kinds",
    "derived_state",
    "derived_manifests",
    "unmerged",
)
# The caches of schema 2, which schema 3 replaces (the derived tables are then built anew).
_SCHEMA_2_CACHES = (
    "hit_facts",
    "delivery_totals_stored",
    "derived_state",
    "derived_manifests",
    "delivery_keys",
    "user_agent_families",
    "delivery_breakdowns",
    "delivery_domains",
)


def schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The schema version of the database, None when it has none yet (new or not tracklog's)."""
    tables = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = 'meta'"
    ).fetchall()
    if not tables[0][0]:
        return None
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else None


def check_tracklog_database(con: duckdb.DuckDBPyConnection, name: object = "") -> int | None:
    """The schema version of the attached database (None: a new, empty one), or DataError when
    it is another program's DuckDB database or a newer tracklog's: tracklog never writes into those."""
    version = schema_version(con)
    where = f"database {name}" if name else "database"
    if version is None:
        tables = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()[0][0]
        views = con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE database_name = current_database() AND NOT internal"
        ).fetchall()[0][0]
        if tables or views:
            raise DataError(
                f"{where} is a DuckDB database of another program (it has tables but no tracklog "
                "schema version): nothing was written; name a tracklog database or a new file with --db"
            )
    elif version > SCHEMA_VERSION:
        raise DataError(
            f"{where} was written by a newer tracklog (schema {version}, this one knows "
            f"{SCHEMA_VERSION}): nothing was written; upgrade tracklog"
        )
    return version


def apply_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables of a new database, or bring an older one up to SCHEMA_VERSION: each
    step of the ladder runs in its own transaction, in order."""
    version = check_tracklog_database(con)
    con.execute(SCHEMA)
    if version is None:
        con.execute(DERIVED_SCHEMA)
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        return
    for step, migrate in _LADDER.items():
        if version < step:
            _in_transaction(con, migrate, step)
    con.execute(DERIVED_SCHEMA)


def _in_transaction(
    con: duckdb.DuckDBPyConnection, migrate: Callable[[duckdb.DuckDBPyConnection], None], step: int
) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        migrate(con)
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(step)])
        con.execute("COMMIT")
    except BaseException:
        try:  # never hide the cause behind a rollback that fails too
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise


def _migrate_path_column(con: duckdb.DuckDBPyConnection) -> None:
    """Schema 1 -> 2: rebuild `hits` with `path` computed instead of stored (a rewrite of the
    table, once)."""
    columns = ", ".join(HIT_COLUMNS)
    con.execute(hits_ddl("hits_v2"))
    con.execute(f"INSERT INTO hits_v2 ({columns}) SELECT {columns} FROM hits")
    con.execute("DROP TABLE hits")
    con.execute("ALTER TABLE hits_v2 RENAME TO hits")


def _replace_caches(con: duckdb.DuckDBPyConnection) -> None:
    """Schema 2 -> 3: the resolution columns of `hits` (NULL: not resolved yet), and the caches
    of schema 2 dropped (with the views that read them); the derived tables are created empty
    and tracklog.derived builds them from the hits."""
    for column, sql_type in zip(
        RESOLUTION_COLUMNS[:4], ("VARCHAR", "INTEGER", "BIGINT", "VARCHAR"), strict=True
    ):
        con.execute(f"ALTER TABLE hits ADD COLUMN IF NOT EXISTS {column} {sql_type}")
    views = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE database_name = current_database() AND NOT internal"
    ).fetchall()
    for (view,) in views:
        con.execute(f'DROP VIEW IF EXISTS "{view}"')
    for table in _SCHEMA_2_CACHES:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _add_servers(con: duckdb.DuckDBPyConnection) -> None:
    """Schema 3 -> 4: each stream's tracking server (unknown for what was read before) and the
    time of its newest hit, taken once from the stored hits."""
    con.execute("ALTER TABLE sources ADD COLUMN IF NOT EXISTS server VARCHAR")
    con.execute("ALTER TABLE sources ADD COLUMN IF NOT EXISTS last_hit TIMESTAMP")
    con.execute(
        "UPDATE sources SET last_hit = h.last_hit FROM (SELECT source_id, max(ts) AS last_hit FROM hits "
        "GROUP BY source_id) h WHERE sources.source_id = h.source_id"
    )


def _add_web_tracking(con: duckdb.DuckDBPyConnection) -> None:
    """Schema 4 -> 5: page-tag hits may have no ids (anonymous visits), links say whether they
    carry the landing token (the `forgotten` table is created with the base tables)."""
    con.execute("ALTER TABLE hits ALTER COLUMN delivery_id DROP NOT NULL")
    con.execute("ALTER TABLE hits ALTER COLUMN recipient_id DROP NOT NULL")
    con.execute("ALTER TABLE links ADD COLUMN IF NOT EXISTS web_tracking BOOLEAN")


def _add_classes(con: duckdb.DuckDBPyConnection) -> None:
    """Schema 5 -> 6: the class columns of `hits` (NULL: not classified yet)
    and the classifier's version in derived_state; the derived tables are built anew (their
    definitions changed), classifying every stored hit. The settings and proxy-range tables are
    created by SCHEMA."""
    con.execute("ALTER TABLE hits ADD COLUMN IF NOT EXISTS class VARCHAR")
    con.execute("ALTER TABLE hits ADD COLUMN IF NOT EXISTS reasons VARCHAR")
    con.execute("ALTER TABLE IF EXISTS derived_state ADD COLUMN IF NOT EXISTS classifier VARCHAR DEFAULT ''")


def _add_unmerged(con: duckdb.DuckDBPyConnection) -> None:
    """Schema 6 -> 7: nothing to change; DERIVED_SCHEMA, applied after the ladder, creates the
    table of hits stored but not merged yet, empty (every hit of schema 6 was merged at its
    commit)."""


_LADDER: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {
    2: _migrate_path_column,
    3: _replace_caches,
    4: _add_servers,
    5: _add_web_tracking,
    6: _add_classes,
    7: _add_unmerged,
}
