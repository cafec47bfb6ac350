"""Tracking routes: the paths of the tracking domain and the ids they carry, built and parsed
in Python (`tracklog link`, the hot-clicks page) and matched in SQL (ingest, `hits.path`), all
from one table of route shapes:
  GET      /o/{delivery}/{recipient}.gif      open pixel
  GET      /c/{delivery}/{link}/{recipient}   click redirect
  GET      /m/{delivery}/{recipient}          mirror page
  GET|POST /u/{delivery}/{recipient}          unsubscribe (GET opt-out link, POST RFC 8058 one-click)
and HEAD on each: a machine's request (link scanners check links with it), stored as a hit so
that tracklog.classify counts it as one.
Ids are 1-128 characters of [A-Za-z0-9._~-], URL-unreserved, so a path never needs escaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ID_CHARS = "A-Za-z0-9._~-"
ID_MAX = 128
ID_PATTERN = f"[{ID_CHARS}]{{1,{ID_MAX}}}"  # one id; the same text in Python's re and DuckDB's RE2
_ID_RE = re.compile(ID_PATTERN)


@dataclass(frozen=True)
class Route:
    """One shape: /{letter}/{delivery}/[{link}/]{recipient}{suffix}, a hit for `methods` only."""

    kind: str
    letter: str
    has_link: bool
    suffix: str
    methods: tuple[str, ...]


ROUTES = (
    Route("open", "o", has_link=False, suffix=".gif", methods=("GET", "HEAD")),
    Route("click", "c", has_link=True, suffix="", methods=("GET", "HEAD")),
    Route("mirror", "m", has_link=False, suffix="", methods=("GET", "HEAD")),
    Route("unsubscribe", "u", has_link=False, suffix="", methods=("GET", "HEAD", "POST")),
)
KINDS = tuple(r.kind for r in ROUTES)
_BY_KIND = {r.kind: r for r in ROUTES}
_BY_LETTER = {r.letter: r for r in ROUTES}


@dataclass(frozen=True)
class TrackedPath:
    """What a tracking path says: its kind and ids (link_id only for clicks)."""

    kind: str
    delivery_id: str
    link_id: str | None
    recipient_id: str


def id_problem(value: str) -> str | None:
    """Why `value` is not a valid delivery, link or recipient id, or None when it is."""
    if not value:
        return "is empty"
    if len(value) > ID_MAX:
        return f"is longer than {ID_MAX} characters"
    if not _ID_RE.fullmatch(value):
        return f"has characters outside [{ID_CHARS}]"
    return None


# -- Python: build ---------------------------------------------------------------------------


def delivery_prefix(kind: str, delivery: str) -> str:
    """How every path of this kind and delivery starts, e.g. '/c/NL-2026-11/' (ids unchecked:
    for finding a delivery's tracking URLs in a text)."""
    return f"/{_route(kind).letter}/{delivery}/"


def path_affixes(kind: str, delivery: str, link: str | None = None) -> tuple[str, str]:
    """(prefix, suffix) such that prefix + recipient + suffix is a recipient's path.

    ValueError for an unknown kind, a link given to a kind that takes none (or missing from a
    click), or an invalid id: nothing built here fails to parse back.
    """
    route = _route(kind)
    if route.has_link != (link is not None):
        raise ValueError(f"a {kind} path {'needs' if route.has_link else 'takes no'} link id")
    _check_id("delivery", delivery)
    prefix = delivery_prefix(kind, delivery)
    if link is not None:
        _check_id("link", link)
        prefix += f"{link}/"
    return prefix, route.suffix


def tracking_path(kind: str, delivery: str, recipient: str, link: str | None = None) -> str:
    """The path of one tracked URL, e.g. '/c/NL-2026-11/hero/r000123' (ValueError as path_affixes)."""
    prefix, suffix = path_affixes(kind, delivery, link)
    _check_id("recipient", recipient)
    return prefix + recipient + suffix


def _route(kind: str) -> Route:
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise ValueError(f"unknown route kind {kind!r} (known: {', '.join(KINDS)})") from None


def _check_id(what: str, value: str) -> None:
    if (problem := id_problem(value)) is not None:
        raise ValueError(f"{what} id {value!r} {problem}")


# -- Python: parse ---------------------------------------------------------------------------


def _shape(route: Route, id_re: str) -> str:
    """The regexp of a route's path after its letter, with `id_re` for each id."""
    return "/" + "/".join([id_re] * (3 if route.has_link else 2)) + re.escape(route.suffix)


_PATH_RES = {r.letter: re.compile(f"/{r.letter}{_shape(r, f'({ID_PATTERN})')}") for r in ROUTES}


def parse_path(path: str, method: str = "GET") -> TrackedPath | None:
    """The kind and ids of a request path (without its query string), or None when a request
    with this method and path is not a tracking hit. Agrees with routed_sql line for line."""
    route = _BY_LETTER.get(path[1:2])
    if route is None or method not in route.methods:
        return None
    match = _PATH_RES[route.letter].fullmatch(path)
    if match is None:
        return None
    ids = match.groups()
    return TrackedPath(route.kind, ids[0], ids[1] if route.has_link else None, ids[-1])


def click_link_re(delivery: str) -> re.Pattern[str]:
    """Finds a click path of `delivery` anywhere in a URL; group 1 is the link id. Its length is
    not checked: the caller looks it up among the manifest's links, which are all valid."""
    return re.compile(re.escape(delivery_prefix("click", delivery)) + f"([{ID_CHARS}]+)(?:[/?#]|$)")


# -- SQL -------------------------------------------------------------------------------------


def _route_re() -> str:
    """One regexp matching every route; letters of the same shape share an alternative."""
    letters: dict[str, str] = {}
    for r in ROUTES:
        shape = _shape(r, ID_PATTERN)
        letters[shape] = letters.get(shape, "") + r.letter
    return "/(" + "|".join((ls if len(ls) == 1 else f"[{ls}]") + s for s, ls in letters.items()) + ")"


ROUTE_RE = _route_re()


def _in_sql(column: str, values: tuple[str, ...]) -> str:
    """`column` is one of `values` (constants from this module, never input)."""
    if len(values) == 1:
        return f"{column} = '{values[0]}'"
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _recipient_sql(route: Route) -> str:
    part = f"split_part(path, '/', {5 if route.has_link else 4})"
    return f"regexp_replace({part}, '{re.escape(route.suffix)}$', '')" if route.suffix else part


def _path_sql(route: Route) -> str:
    link = "link_id || '/' || " if route.has_link else ""
    suffix = f" || '{route.suffix}'" if route.suffix else ""
    return f"'/{route.letter}/' || delivery_id || '/' || {link}recipient_id{suffix}"


# The path of a hit from its kind and ids: the inverse of the route match (which takes each id
# whole from a path of this exact shape), so `hits` computes it rather than storing it.
PATH_SQL = "CASE kind " + " ".join(f"WHEN '{r.kind}' THEN {_path_sql(r)}" for r in ROUTES) + " END"

_KIND_SQL = "\n".join(
    f"                    WHEN '{r.letter}' THEN CASE WHEN {_in_sql('method', r.methods)} THEN '{r.kind}' END"
    for r in ROUTES
)
_LINK_SQL = _in_sql("kind", tuple(r.kind for r in ROUTES if r.has_link))
_RECIPIENT_SQL = "\n".join(f"            WHEN '{r.kind}' THEN {_recipient_sql(r)}" for r in ROUTES)


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
{_KIND_SQL}
                END
            END AS kind
        FROM t
    )
    SELECT *,
        CASE WHEN kind IS NOT NULL THEN split_part(path, '/', 3) END AS delivery_id,
        CASE WHEN {_LINK_SQL} THEN split_part(path, '/', 4) END AS link_id,
        CASE kind
{_RECIPIENT_SQL}
        END AS recipient_id,
        CASE
            WHEN kind IS NULL OR query IS NULL THEN NULL
            WHEN starts_with(query, 's=') THEN split_part(substr(query, 3), '&', 1)
            WHEN contains(query, '&s=') THEN split_part(split_part(query, '&s=', 2), '&', 1)
        END AS sig
    FROM k
    """
