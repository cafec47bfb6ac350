"""`tracklog reverify`: check every stored hit's signature again with the current keys, and
bring the figures of the deliveries whose verdicts changed up to date, from the stored hits
alone (the original logs are not needed). After a wrong secret, or a key added to `secrets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from tracklog import derived
from tracklog.duck import duckdb, load_arrow
from tracklog.routes import PAGE_KIND, TOKEN_PARAM, param_sql, sig_sql, token_text
from tracklog.signing import sql_pad_params, sql_sig_status
from tracklog.store import OnWait, cleanup, writer_session

load_arrow()  # this module hands Arrow tables to DuckDB


def reverify(db: Path, secrets: Sequence[bytes], wait: float, on_wait: OnWait | None = None) -> pa.Table:
    """Columns before, after, hits, deliveries: the signature verdicts that changed (none: every
    stored hit already has the verdict of the current keys)."""
    with writer_session(db, wait, on_wait=on_wait) as session:
        con = session.con
        derived.sync(con)  # whatever was pending first, so only the verdicts' effect remains
        con.execute("BEGIN TRANSACTION")
        try:
            changes = _reverify_in_transaction(con, secrets)
            con.execute("COMMIT")
        except BaseException:
            cleanup(con, "ROLLBACK")
            raise
        finally:
            cleanup(con, "DROP TABLE IF EXISTS _rv; DROP TABLE IF EXISTS _rv_deliveries")
        derived.sync(con)  # the affected deliveries' hits resolved and merged again
    return changes


def _reverify_in_transaction(con: duckdb.DuckDBPyConnection, secrets: Sequence[bytes]) -> pa.Table:
    # a page tag is signed by its landing token (tl=): over routes.token_text, its last 22
    # characters the signature; one without a well-formed token has no recipient, nothing to check
    page = f"h.kind = '{PAGE_KIND}'"
    token_text_sql = "'" + token_text("' || h.delivery_id || '", "' || h.recipient_id || '") + "'"
    signed = f"CASE WHEN {page} THEN {token_text_sql} ELSE h.path END"
    sig = (
        f"CASE WHEN {page} THEN right({param_sql('h.query', TOKEN_PARAM)}, 22) ELSE {sig_sql('h.query')} END"
    )
    status = sql_sig_status(signed, sig, len(secrets))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _rv AS
        SELECT * FROM (
            SELECT h.source_id, h.line_no, h.delivery_id, h.sig_status AS before, {status} AS after FROM hits h
            WHERE NOT ({page} AND h.recipient_id IS NULL)
        ) x WHERE x.after IS DISTINCT FROM x.before""",
        sql_pad_params(secrets),
    )
    changes = con.sql(
        "SELECT before, after, count(*) AS hits, count(DISTINCT delivery_id) AS deliveries FROM _rv "
        "GROUP BY before, after ORDER BY hits DESC, before, after"
    ).to_arrow_table()
    if changes.num_rows:
        con.execute(
            "UPDATE hits SET sig_status = r.after FROM _rv r "
            "WHERE hits.source_id = r.source_id AND hits.line_no = r.line_no"
        )
        con.execute("CREATE OR REPLACE TEMP TABLE _rv_deliveries AS SELECT DISTINCT delivery_id FROM _rv")
        derived.forget_deliveries(con, "_rv_deliveries")
    return changes
