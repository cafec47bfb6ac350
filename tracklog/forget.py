"""`tracklog forget`: erase a recipient (GDPR erasure) from every table: its hits, its manifest
rows, the hits and quarantined lines carrying its landing token, email or id, and every derived
row built from them (the deliveries concerned are recomputed from what remains), with a
tombstone so that re-ingesting an old manifest or log does not bring it back. The tombstone
holds a keyed hash of the id (signing.recipient_hash), never the id.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tracklog import derived, routes
from tracklog.duck import duckdb
from tracklog.errors import NotFoundError
from tracklog.signing import recipient_hash
from tracklog.tracked_urls import check_id


@dataclass(frozen=True)
class Forgotten:
    """What `forget` erased."""

    recipient_id: str
    deliveries: int
    hits: int
    manifest_rows: int
    quarantined: int
    tombstone: bool


def forget(
    con: duckdb.DuckDBPyConnection, recipient_id: str, delivery_id: str | None, secret: bytes | None
) -> Forgotten:
    """Erase `recipient_id` (of `delivery_id` only, when given) on a writer connection, then
    bring the derived tables up to date and checkpoint. Without `secret` no tombstone is kept.
    NotFoundError when no manifest row and no hit names the recipient."""
    check_id("recipient", recipient_id)
    if delivery_id is not None:
        check_id("delivery", delivery_id)
    scope = "recipient_id = ?" + (" AND delivery_id = ?" if delivery_id is not None else "")
    params: list[object] = [recipient_id, *([delivery_id] if delivery_id is not None else [])]
    con.execute("BEGIN TRANSACTION")
    try:
        deliveries = _column(
            con,
            f"SELECT DISTINCT delivery_id FROM recipients WHERE {scope}"
            f" UNION SELECT DISTINCT delivery_id FROM hits WHERE {scope}",
            params + params,
        )
        if not deliveries:
            where = f"delivery {delivery_id!r}" if delivery_id is not None else "the database"
            raise NotFoundError(f"recipient {recipient_id!r} is not in {where} (no manifest row, no hit)")
        # what else names the person: its emails and its landing tokens (in a query or referer)
        emails = _column(
            con, f"SELECT DISTINCT email FROM recipients WHERE {scope} AND email IS NOT NULL", params
        )
        tokens = [f"{len(d)}.{d}{recipient_id}" for d in deliveries]
        hits = _count(con, f"SELECT count(*) FROM hits WHERE {scope}", params)
        # the user agents it used, parsed and kept in user_agent_families: a user agent can name
        # a person too, and goes when no other hit has it
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _forget_agents AS SELECT DISTINCT user_agent FROM hits"
            f" WHERE {scope} AND user_agent IS NOT NULL",
            params,
        )
        con.execute(f"DELETE FROM hits WHERE {scope}", params)
        for token in tokens:
            # the token whole: its prefix, a 22-character signature, then no more id characters
            # (so r1's token never matches r10's)
            carries = (
                "regexp_matches(coalesce(query, '') || ' ' || coalesce(referer, ''), ?)",
                [f"{re.escape(token)}[A-Za-z0-9_-]{{22}}([^{routes.ID_CHARS}]|$)"],
            )
            hits += _count(con, f"SELECT count(*) FROM hits WHERE {carries[0]}", carries[1])
            con.execute(f"DELETE FROM hits WHERE {carries[0]}", carries[1])
        rows = _count(con, f"SELECT count(*) FROM recipients WHERE {scope}", params)
        con.execute(f"DELETE FROM recipients WHERE {scope}", params)
        quarantined = _forget_quarantined(con, recipient_id, emails)
        for table in ("user_agent_families", "agent_kinds"):  # parsed, and classified (tracklog.classify)
            con.execute(
                f"DELETE FROM {table} WHERE user_agent IN (SELECT user_agent FROM _forget_agents)"
                " AND user_agent NOT IN (SELECT user_agent FROM hits WHERE user_agent IS NOT NULL)"
            )
        con.execute("DROP TABLE _forget_agents")
        derived.recompute_deliveries(con, deliveries)
        tombstone = secret is not None
        if tombstone:
            assert secret is not None
            con.execute(
                "INSERT INTO forgotten VALUES (?, ?, ?)",
                [
                    delivery_id,
                    recipient_hash(secret, recipient_id),
                    dt.datetime.now(dt.UTC).replace(tzinfo=None),
                ],
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    derived.sync(con)
    # dimension values (browser, os, ... parsed from those user agents) that no reader holds now
    con.execute(
        "DELETE FROM dimension_values WHERE value_key NOT IN (SELECT unnest(value_keys) FROM readers)"
        " AND value NOT IN (SELECT value FROM delivery_dimensions WHERE value IS NOT NULL)"
    )
    con.execute("CHECKPOINT")
    return Forgotten(recipient_id, len(deliveries), hits, rows, quarantined, tombstone)


def _forget_quarantined(con: duckdb.DuckDBPyConnection, recipient_id: str, emails: list[str]) -> int:
    """Quarantined lines holding the id as a whole word (not inside a longer id; an open pixel's
    '.gif' may follow) or an email:
    lines that did not parse can still name the person."""
    word = f"(^|[^{routes.ID_CHARS}]){re.escape(recipient_id)}(\\.gif)?([^{routes.ID_CHARS}]|$)"
    where = "regexp_matches(CAST(raw AS VARCHAR), ?)" + " OR contains(lower(CAST(raw AS VARCHAR)), ?)" * len(
        emails
    )
    params: list[object] = [word, *(e.lower() for e in emails)]
    n = _count(con, f"SELECT count(*) FROM quarantine WHERE {where}", params)
    con.execute(f"DELETE FROM quarantine WHERE {where}", params)
    return n


def _column(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object]) -> list[str]:
    return [str(r[0]) for r in con.execute(sql, params).fetchall()]


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object]) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row else 0
