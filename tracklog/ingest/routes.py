"""Tracking routes: which request paths are tracking hits, and the ids they carry.

Default scheme (nginx serves these; see the generated config):
  GET  /o/{delivery}/{recipient}.gif         open pixel
  GET  /c/{delivery}/{link}/{recipient}      click redirect
  GET  /m/{delivery}/{recipient}             mirror page
  GET|POST /u/{delivery}/{recipient}         unsubscribe (GET opt-out link, POST RFC 8058 one-click)
Ids are 1-128 characters of [A-Za-z0-9._~-]. All of it is SQL over the parsed lines.
"""

from __future__ import annotations

ID_RE = r"[A-Za-z0-9._~-]{1,128}"
ROUTE_RE = rf"/(o/{ID_RE}/{ID_RE}\.gif|c/{ID_RE}/{ID_RE}/{ID_RE}|[mu]/{ID_RE}/{ID_RE})"
KINDS = ("open", "click", "mirror", "unsubscribe")

# The path of a hit from its kind and ids: the inverse of the route match (which takes each id
# whole from a path of this exact shape), so `hits` computes it rather than storing it.
PATH_SQL = (
    "CASE kind WHEN 'open' THEN '/o/' || delivery_id || '/' || recipient_id || '.gif' "
    "WHEN 'click' THEN '/c/' || delivery_id || '/' || link_id || '/' || recipient_id "
    "ELSE '/' || left(kind, 1) || '/' || delivery_id || '/' || recipient_id END"
)


def routed_sql(parsed: str) -> str:
    """A SELECT over `parsed` (the format's columns) adding path, query, kind, ids and sig.

    kind is NULL for lines that are not tracking hits (wrong path, wrong method, unparsed).
    """
    return f"""
    WITH t AS (
        SELECT *,
            CASE WHEN strpos(target, '?') > 0 THEN substr(target, 1, strpos(target, '?') - 1) ELSE target END AS path,
            CASE WHEN strpos(target, '?') > 0 THEN substr(target, strpos(target, '?') + 1) END AS query
        FROM {parsed}
    ), k AS (
        SELECT *,
            CASE WHEN reason IS NULL AND regexp_full_match(path, '{ROUTE_RE}') THEN
                CASE substr(path, 2, 1)
                    WHEN 'o' THEN CASE WHEN method = 'GET' THEN 'open' END
                    WHEN 'c' THEN CASE WHEN method = 'GET' THEN 'click' END
                    WHEN 'm' THEN CASE WHEN method = 'GET' THEN 'mirror' END
                    WHEN 'u' THEN CASE WHEN method IN ('GET', 'POST') THEN 'unsubscribe' END
                END
            END AS kind
        FROM t
    )
    SELECT *,
        CASE WHEN kind IS NOT NULL THEN split_part(path, '/', 3) END AS delivery_id,
        CASE WHEN kind = 'click' THEN split_part(path, '/', 4) END AS link_id,
        CASE kind
            WHEN 'open' THEN regexp_replace(split_part(path, '/', 4), '\\.gif$', '')
            WHEN 'click' THEN split_part(path, '/', 5)
            WHEN 'mirror' THEN split_part(path, '/', 4)
            WHEN 'unsubscribe' THEN split_part(path, '/', 4)
        END AS recipient_id,
        CASE
            WHEN kind IS NULL OR query IS NULL THEN NULL
            WHEN starts_with(query, 's=') THEN split_part(substr(query, 3), '&', 1)
            WHEN contains(query, '&s=') THEN split_part(split_part(query, '&s=', 2), '&', 1)
        END AS sig
    FROM k
    """
