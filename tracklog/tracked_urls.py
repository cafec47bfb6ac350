"""Building signed tracked URLs for a sending system: open pixel, click, mirror, unsubscribe.

`tracked_url` and `list_unsubscribe_headers` build one URL in Python; `delivery_urls` builds
them for a whole delivery in DuckDB, with the same paths and the same signature
(tracklog.signing), so millions of recipients never go through a Python loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow as pa

from tracklog import routes
from tracklog.duck import duckdb, load_arrow
from tracklog.errors import NotFoundError, UsageError
from tracklog.signing import hmac_pads, sign_path, sql_expected_sig

load_arrow()  # this module hands Arrow tables to DuckDB

# The URL types in the order a recipient's URLs are listed: the clicks (in message order) first.
KINDS = ("click", *(k for k in routes.KINDS if k != "click"))
ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058


@dataclass(frozen=True)
class Target:
    """One URL per recipient: its path is prefix + recipient_id + suffix. A web-tracking link
    also has its landing URL's head and tail (routes.landing_affixes): head + token + tail."""

    kind: str
    link_id: str | None
    prefix: str
    suffix: str
    delivery: str = ""
    landing: tuple[str, str] | None = None


def landing_token(secret: bytes, delivery: str, recipient: str) -> str:
    """The signed `tl` token of a recipient of a delivery (routes: carried from a web-tracking
    click to the site, and back in its page tags)."""
    check_id("delivery", delivery)
    check_id("recipient", recipient)
    return routes.landing_token(
        delivery, recipient, sign_path(secret, routes.token_text(delivery, recipient))
    )


def landing_url(url: str, token: str) -> str:
    """A web-tracking link's URL with the landing token in its query (before any fragment)."""
    base, separator, fragment = routes.landing_affixes(url)
    return f"{base}{separator}{routes.TOKEN_PARAM}={token}{fragment}"


def target(kind: str, delivery: str, link: str | None = None, landing_of: str | None = None) -> Target:
    if kind not in KINDS:
        raise UsageError(f"unknown URL type {kind!r} (known: {', '.join(KINDS)})")
    if (kind == "click") != (link is not None):
        raise UsageError(
            "a click URL needs a link id" if kind == "click" else f"a {kind} URL takes no link id"
        )
    check_id("delivery", delivery)
    if link is not None:
        check_id("link", link)
    landing = None
    if landing_of is not None:
        base, separator, fragment = routes.landing_affixes(landing_of)
        landing = (f"{base}{separator}{routes.TOKEN_PARAM}=", fragment)
    return Target(kind, link, *routes.path_affixes(kind, delivery, link), delivery, landing)


def check_id(what: str, value: str) -> None:
    if (problem := routes.id_problem(value)) is not None:
        raise UsageError(f"{what} id {value!r} {problem}")


def base_url_of(base_url: str) -> str:
    """The tracking domain's origin without a trailing slash, e.g. 'https://t.example.com'."""
    parts = urlsplit(base_url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.path not in ("", "/")
        or (parts.query or parts.fragment)
    ):
        raise UsageError(
            f"base URL {base_url!r} must be the tracking domain's origin, like https://t.example.com "
            "(no path, query or fragment)"
        )
    return f"{parts.scheme}://{parts.netloc}"


def tracked_url(
    base_url: str, secret: bytes, kind: str, delivery: str, recipient: str, link: str | None = None
) -> str:
    """A signed URL such as https://t.example.com/c/NL-2026-11/hero/r000123?s=SIG."""
    t = target(kind, delivery, link)
    check_id("recipient", recipient)
    path = t.prefix + recipient + t.suffix
    return f"{base_url_of(base_url)}{path}?s={sign_path(secret, path)}"


def list_unsubscribe_headers(base_url: str, secret: bytes, delivery: str, recipient: str) -> dict[str, str]:
    """The List-Unsubscribe headers of a message, with RFC 8058 one-click unsubscribe."""
    return unsubscribe_headers(tracked_url(base_url, secret, "unsubscribe", delivery, recipient))


def unsubscribe_headers(unsubscribe_url: str) -> dict[str, str]:
    return {"List-Unsubscribe": f"<{unsubscribe_url}>", "List-Unsubscribe-Post": ONE_CLICK}


def delivery_targets(con: duckdb.DuckDBPyConnection, delivery: str, kinds: Sequence[str]) -> list[Target]:
    """The URLs each recipient gets, in message order: clicks by link position, then open, mirror, unsubscribe."""
    found = con.execute("SELECT count(*) FROM deliveries WHERE delivery_id = ?", [delivery]).fetchone()
    if not found or not found[0]:
        raise NotFoundError(f"delivery {delivery!r} is not in the database (ingest its manifest first)")
    targets: list[Target] = []
    for kind in KINDS:
        if kind not in kinds:
            continue
        if kind == "click":
            links = con.execute(
                "SELECT link_id, CASE WHEN web_tracking THEN url END FROM links WHERE delivery_id = ?"
                " ORDER BY position",
                [delivery],
            ).fetchall()
            targets.extend(target("click", delivery, link_id, url) for (link_id, url) in links)
        else:
            targets.append(target(kind, delivery))
    return targets


def check_recipients_known(con: duckdb.DuckDBPyConnection, delivery: str, recipients: pa.Table) -> None:
    """NotFoundError naming the first of `recipients` (in its order) that the delivery's manifest lacks."""
    cur = con.cursor()
    try:
        cur.register("asked_recipients", _numbered_ids(recipients))
        row = cur.execute(
            "SELECT a.recipient_id FROM asked_recipients a ANTI JOIN"
            " (SELECT recipient_id FROM recipients WHERE delivery_id = ?) r USING (recipient_id)"
            " ORDER BY a.rn LIMIT 1",
            [delivery],
        ).fetchone()
    finally:
        cur.close()
    if row is not None:
        raise NotFoundError(f"recipient {row[0]!r} is not in delivery {delivery!r}")


def delivery_urls(
    con: duckdb.DuckDBPyConnection,
    base_url: str,
    secret: bytes,
    targets: Sequence[Target],
    recipients: pa.Table | None = None,
    delivery: str | None = None,
    batch_rows: int = 100_000,
) -> Iterator[pa.RecordBatch]:
    """recipient_id, type, link_id, url, landing_url for every recipient x target, in batches.
    A web-tracking link's click URL carries the landing token (`&tl=`), which the generated
    nginx config appends to the link's URL on redirect; landing_url is that URL with the token
    (NULL for other targets), for a sending system that redirects by itself.

    Recipients are `recipients` (a table with a recipient_id column, kept in its order) or,
    when None, the stored recipients of `delivery` (by recipient_id).
    """
    origin = base_url_of(base_url)
    ipad, opad = hmac_pads(secret)
    # A cursor of its own: the views registered here and the streaming result live and die with it.
    cur = con.cursor()
    try:
        cur.register(
            "link_targets",
            pa.table(
                {
                    "ord": pa.array(range(len(targets)), pa.int32()),
                    "kind": pa.array([t.kind for t in targets], pa.string()),
                    "link_id": pa.array([t.link_id for t in targets], pa.string()),
                    "prefix": pa.array([t.prefix for t in targets], pa.string()),
                    "suffix": pa.array([t.suffix for t in targets], pa.string()),
                    "delivery": pa.array([t.delivery for t in targets], pa.string()),
                    "landing_head": pa.array(
                        [t.landing[0] if t.landing else None for t in targets], pa.string()
                    ),
                    "landing_tail": pa.array(
                        [t.landing[1] if t.landing else None for t in targets], pa.string()
                    ),
                }
            ),
        )
        params: dict[str, object] = {"origin": origin, "ipad": ipad, "opad": opad}
        if recipients is None:
            source = (
                "SELECT recipient_id, row_number() OVER (ORDER BY recipient_id) AS rn"
                " FROM recipients WHERE delivery_id = $delivery"
            )
            params["delivery"] = delivery
        else:
            cur.register("link_recipients", _numbered_ids(recipients))
            source = "SELECT recipient_id, rn FROM link_recipients"
        sig = sql_expected_sig("path", "$ipad", "$opad")
        token_sig = sql_expected_sig("token_text", "$ipad", "$opad")
        token = f"CAST(length(delivery) AS VARCHAR) || '.' || delivery || recipient_id || {token_sig}"
        sql = f"""
            SELECT recipient_id, type, link_id,
                url || coalesce('&{routes.TOKEN_PARAM}=' || token, '') AS url,
                landing_head || token || landing_tail AS landing_url
            FROM (
                SELECT rn, ord, recipient_id, kind AS type, link_id, landing_head, landing_tail,
                    $origin || path || '?s=' || {sig} AS url,
                    CASE WHEN landing_head IS NOT NULL THEN {token} END AS token
                FROM (SELECT r.rn, t.ord, r.recipient_id, t.kind, t.link_id, t.delivery, t.landing_head,
                             t.landing_tail, t.prefix || r.recipient_id || t.suffix AS path,
                             '/{routes.PAGE_LETTER}/' || t.delivery || '/' || r.recipient_id AS token_text
                      FROM ({source}) r CROSS JOIN link_targets t)
            )
            ORDER BY rn, ord
        """
        yield from cur.sql(sql, params=params).to_arrow_reader(batch_rows)
    finally:
        cur.close()


def _numbered_ids(recipients: pa.Table) -> pa.Table:
    """recipient_id with rn, its position, so SQL can keep the caller's order."""
    ids = recipients.column("recipient_id")
    return pa.table({"recipient_id": ids, "rn": pa.array(range(len(ids)), pa.int64())})
