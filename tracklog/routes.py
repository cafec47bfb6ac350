"""Tracking routes: the paths of the tracking domain and the ids they carry, built and parsed
in Python (`tracklog link`, the hot-clicks page) and matched in SQL (ingest, `hits.path`), all
from one table of route shapes:
  GET      /o/{delivery}/{recipient}.gif      open pixel
  GET      /c/{delivery}/{link}/{recipient}   click redirect
  GET      /m/{delivery}/{recipient}          mirror page
  GET|POST /u/{delivery}/{recipient}          unsubscribe (GET opt-out link, POST RFC 8058 one-click)
  GET      /w/{tag}.gif?tl=TOKEN[&amount=..]  page tag of the site (web tracking): the delivery and
                                              recipient come from the landing token, not the path
and HEAD on each: a machine's request (link scanners check links with it), stored as a hit so
that tracklog.classify counts it as one.
Ids are 1-128 characters of [A-Za-z0-9._~-], URL-unreserved, so a path never needs escaping.

The landing token (`tl=`) that a web-tracking click carries to the site is made of the same
characters, so no site, framework or nginx ever re-encodes it: `{n}.{delivery}{recipient}{sig}`,
n the delivery id's length in decimal, sig the 22-character signature of token_text(delivery,
recipient) (tracklog.signing, the same HMAC as the tracked URLs, over a text no route signs).
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
KINDS = tuple(r.kind for r in ROUTES)  # the routes of a message, with a URL per recipient
PAGE_KIND = "page"
PAGE_LETTER = "w"
PAGE_METHODS = ("GET",)
HIT_KINDS = (*KINDS, PAGE_KIND)  # everything ingest stores
TOKEN_PARAM = "tl"
OPTOUT_COOKIE = "tl_optout"  # set by GET /w/optout, removed by GET /w/optin (nginx.py)
_BY_KIND = {r.kind: r for r in ROUTES}
_BY_LETTER = {r.letter: r for r in ROUTES}


@dataclass(frozen=True)
class TrackedPath:
    """What a tracking path says: its kind and ids (link_id only for clicks)."""

    kind: str
    delivery_id: str | None  # None: a page tag without a valid-looking token
    link_id: str | None  # the link of a click, the tag of a page
    recipient_id: str | None


def id_problem(value: str) -> str | None:
    """Why `value` is not a valid delivery, link or recipient id, or None when it is."""
    if not value:
        return "is empty"
    if len(value) > ID_MAX:
        return f"is longer than {ID_MAX} characters"
    if not _ID_RE.fullmatch(value):
        return f"has characters outside [{ID_CHARS}]"
    if value in (".", ".."):  # a path segment that means this or the parent folder, not an id
        return "is . or .."
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


_PAGE_RE = re.compile(f"/{PAGE_LETTER}/({ID_PATTERN})\\.gif")
_TOKEN_RE = re.compile(f"([0-9]{{1,3}})\\.([{ID_CHARS}]+)")


def token_text(delivery: str, recipient: str) -> str:
    """What a landing token's signature signs: a path of no route, so that no tracked URL's
    signature is ever a valid token (nor the reverse)."""
    return f"/{PAGE_LETTER}/{delivery}/{recipient}"


def landing_token(delivery: str, recipient: str, sig: str) -> str:
    """The `tl` value of (delivery, recipient) with its signature (ValueError for invalid ids)."""
    _check_id("delivery", delivery)
    _check_id("recipient", recipient)
    return f"{len(delivery)}.{delivery}{recipient}{sig}"


def split_token(token: str) -> tuple[str, str, str] | None:
    """(delivery, recipient, sig) of a landing token, or None when it is not shaped like one.
    Agrees with routed_sql."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    n, rest = int(match[1]), match[2]
    delivery, recipient, sig = rest[:n], rest[n : len(rest) - 22], rest[len(rest) - 22 :]
    if not 1 <= n <= ID_MAX or not 1 <= len(recipient) <= ID_MAX or len(sig) != 22:
        return None
    return delivery, recipient, sig


def landing_affixes(url: str) -> tuple[str, str, str]:
    """(base, separator, fragment) of a web-tracking link's URL: its landing URL with a token is
    base + separator + 'tl=' + token + fragment (the token goes into the query, before any
    '#fragment'); without a token the URL stays base + fragment, unchanged."""
    base, hash_, fragment = url.partition("#")
    if "?" not in base:
        separator = "?"
    elif base.endswith(("?", "&")):
        separator = ""
    else:
        separator = "&"
    return base, separator, hash_ + fragment


def query_param(query: str | None, name: str) -> str | None:
    """The raw value of the first `name=` parameter of a query string (as routed_sql reads it)."""
    if query is None:
        return None
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        if eq and key == name:
            return value
    return None


def parse_path(path: str, method: str = "GET", query: str | None = None) -> TrackedPath | None:
    """The kind and ids of a request path (and, for a page tag, its query string's token), or
    None when a request with this method and path is not a tracking hit. Agrees with routed_sql
    line for line."""
    if path[1:2] == PAGE_LETTER:
        page = _PAGE_RE.fullmatch(path)
        if page is None or method not in PAGE_METHODS:
            return None
        token = query_param(query, TOKEN_PARAM)
        parts = split_token(token) if token else None
        if parts is None:
            return TrackedPath(PAGE_KIND, None, page[1], None)
        return TrackedPath(PAGE_KIND, parts[0], page[1], parts[1])
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
PATH_SQL = (
    "CASE kind "
    + " ".join(f"WHEN '{r.kind}' THEN {_path_sql(r)}" for r in ROUTES)
    + f" WHEN '{PAGE_KIND}' THEN '/{PAGE_LETTER}/' || link_id || '.gif' END"
)

_KIND_SQL = "\n".join(
    f"                    WHEN '{r.letter}' THEN CASE WHEN {_in_sql('method', r.methods)} THEN '{r.kind}' END"
    for r in ROUTES
)
_LINK_SQL = _in_sql("kind", tuple(r.kind for r in ROUTES if r.has_link))
_RECIPIENT_SQL = "\n".join(f"            WHEN '{r.kind}' THEN {_recipient_sql(r)}" for r in ROUTES)


def sig_sql(query: str) -> str:
    """The signature of a tracked URL from its query string `query` (without the '?'): the value
    of its `s` parameter, NULL when there is none."""
    return param_sql(query, "s")


def param_sql(query: str, name: str) -> str:
    """The raw value of the first `name=` parameter of the query string `query` (a constant name
    from code), NULL when absent: query_param in SQL."""
    return (
        f"CASE WHEN {query} IS NULL THEN NULL "
        f"WHEN starts_with({query}, '{name}=') THEN split_part(substr({query}, {len(name) + 2}), '&', 1) "
        f"WHEN contains({query}, '&{name}=') THEN split_part(split_part({query}, '&{name}=', 2), '&', 1) END"
    )


PAGE_RE = f"/{PAGE_LETTER}/{ID_PATTERN}\\.gif"
_TOKEN_SHAPE = f"[0-9]{{1,3}}\\.[{ID_CHARS}]+"
# The opt-out cookie in a log line: its own variable ("$cookie_tl_optout") or the Cookie header
# ("$http_cookie"), both kept in `extra` by the log format.
OPTED_OUT_SQL = (
    f"coalesce(json_extract_string(extra, '$.cookie_{OPTOUT_COOKIE}') = '1'"
    f" OR regexp_matches(json_extract_string(extra, '$.http_cookie'), '(^|;)\\s*{OPTOUT_COOKIE}=1\\s*(;|$)'),"
    " FALSE)"
)


def routed_sql(parsed: str) -> str:
    """A SELECT over `parsed` (the format's columns, with `extra`) adding path, query, kind, ids,
    sig and `signed` (the text the signature signs: the path, or a page tag's token_text).

    kind is NULL for lines that are not tracking hits (wrong path, wrong method, unparsed) and
    for page tags carrying the opt-out cookie (never stored). A page tag's delivery and
    recipient come from its token (NULL without one); its tag is link_id; a token present but
    not shaped like one leaves them NULL with sig '-' (invalid, never valid).
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
                WHEN reason IS NULL AND {_in_sql("method", PAGE_METHODS)} AND regexp_full_match(path, '{PAGE_RE}')
                    AND NOT {OPTED_OUT_SQL} THEN '{PAGE_KIND}'
            END AS kind
        FROM t
    ), p AS (
        SELECT *, CASE WHEN kind = '{PAGE_KIND}' THEN nullif({param_sql("query", TOKEN_PARAM)}, '') END AS tl
        FROM k
    ), n AS (
        SELECT *,
            CASE WHEN regexp_full_match(tl, '{_TOKEN_SHAPE}') THEN CAST(split_part(tl, '.', 1) AS INTEGER) END AS tl_n,
            CASE WHEN regexp_full_match(tl, '{_TOKEN_SHAPE}') THEN substr(tl, strpos(tl, '.') + 1) END AS tl_rest
        FROM p
    ), v AS (
        SELECT *,
            CASE WHEN tl_n BETWEEN 1 AND {ID_MAX} AND length(tl_rest) - tl_n - 22 BETWEEN 1 AND {ID_MAX}
                THEN TRUE ELSE FALSE END AS tl_ok
        FROM n
    )
    SELECT * EXCLUDE (tl, tl_n, tl_rest, tl_ok),
        CASE WHEN kind = '{PAGE_KIND}' THEN CASE WHEN tl_ok THEN substr(tl_rest, 1, tl_n) END
             WHEN kind IS NOT NULL THEN split_part(path, '/', 3) END AS delivery_id,
        CASE WHEN {_LINK_SQL} THEN split_part(path, '/', 4)
             WHEN kind = '{PAGE_KIND}' THEN regexp_replace(split_part(path, '/', 3), '\\.gif$', '') END AS link_id,
        CASE kind
{_RECIPIENT_SQL}
            WHEN '{PAGE_KIND}' THEN CASE WHEN tl_ok THEN substr(tl_rest, tl_n + 1, length(tl_rest) - tl_n - 22) END
        END AS recipient_id,
        CASE
            WHEN kind = '{PAGE_KIND}' THEN CASE WHEN tl IS NULL THEN NULL WHEN tl_ok THEN right(tl_rest, 22) ELSE '-' END
            WHEN kind IS NOT NULL THEN {sig_sql("query")}
        END AS sig,
        CASE WHEN kind = '{PAGE_KIND}' THEN CASE WHEN tl_ok
                THEN '/{PAGE_LETTER}/' || substr(tl_rest, 1, tl_n) || '/' || substr(tl_rest, tl_n + 1, length(tl_rest) - tl_n - 22) END
             ELSE path END AS signed
    FROM v
    """
