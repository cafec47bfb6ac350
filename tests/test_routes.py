"""tracklog.routes: the Python builders, the Python parser and the SQL route match agree on every
path, valid or hostile, and the SQL path column rebuilds exactly the path a sender built."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracklog.routes import (
    ID_MAX,
    KINDS,
    PATH_SQL,
    ROUTE_RE,
    ROUTES,
    Route,
    TrackedPath,
    click_link_re,
    delivery_prefix,
    id_problem,
    parse_path,
    path_affixes,
    routed_sql,
    tracking_path,
)

ID_ALPHABET = string.ascii_letters + string.digits + "._~-"
HOSTILE = [
    "",
    ".",
    "..",
    "/",
    "a/b",
    "%2F",
    "..%2F..%2Fetc",
    "a?s=x",
    "a#b",
    "a&b",
    "a b",
    "a\tb",
    "a\nb",
    "'",
    "x' OR '1'='1",
    "\\",
    "é",
    "r\u0000",
    "\u202e",
    "😀",
    "Ｒ1",
    "x.gif",
    "x" * ID_MAX,
    "x" * (ID_MAX + 1),
]
METHODS = ["GET", "POST", "HEAD", "PUT", "get", ""]

# every example runs SQL in DuckDB: time is not what these test, and a busy machine must not fail them
patient = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=ID_MAX).filter(lambda v: v not in (".", ".."))
hostile = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12))


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    # the columns of a parsed log line that the route match reads
    c.execute("CREATE TABLE lines (n INTEGER, reason VARCHAR, method VARCHAR, target VARCHAR, extra VARCHAR)")
    c.execute("CREATE TABLE hit (kind VARCHAR, delivery_id VARCHAR, link_id VARCHAR, recipient_id VARCHAR)")
    yield c
    c.close()


def sql_routes(
    con: duckdb.DuckDBPyConnection, requests: list[tuple[str, str]]
) -> list[tuple[TrackedPath | None, str | None]]:
    """What ingest makes of each (method, target): route and ?s= signature, as engine.py feeds it."""
    con.execute("DELETE FROM lines")
    con.executemany(
        "INSERT INTO lines VALUES (?, NULL, ?, ?, NULL)", [[n, m, t] for n, (m, t) in enumerate(requests)]
    )
    rows = con.execute(
        f"SELECT kind, delivery_id, link_id, recipient_id, sig FROM ({routed_sql('lines')}) ORDER BY n"
    ).fetchall()
    return [(None if k is None else TrackedPath(k, d, link, r), sig) for k, d, link, r, sig in rows]


def sql_route(
    con: duckdb.DuckDBPyConnection, method: str, target: str
) -> tuple[TrackedPath | None, str | None]:
    return sql_routes(con, [(method, target)])[0]


def sql_path(con: duckdb.DuckDBPyConnection, hit: TrackedPath) -> str:
    """hits.path: the virtual column computed from the kind and ids."""
    con.execute("DELETE FROM hit")
    con.execute(
        "INSERT INTO hit VALUES (?, ?, ?, ?)", [hit.kind, hit.delivery_id, hit.link_id, hit.recipient_id]
    )
    row = con.execute(f"SELECT {PATH_SQL} FROM hit").fetchone()
    assert row is not None
    return str(row[0])


def python_route(method: str, target: str) -> TrackedPath | None:
    return parse_path(target.partition("?")[0], method)


@st.composite
def tracked(draw: st.DrawFn) -> tuple[str, TrackedPath]:
    """A method and a hit of any kind with valid ids."""
    route = draw(st.sampled_from(ROUTES))
    link = draw(ids) if route.has_link else None
    return draw(st.sampled_from(route.methods)), TrackedPath(route.kind, draw(ids), link, draw(ids))


@patient
@given(tracked(), st.text(alphabet=ID_ALPHABET, max_size=22))
def test_built_paths_parse_back_in_python_and_sql(
    con: duckdb.DuckDBPyConnection, case: tuple[str, TrackedPath], sig: str
) -> None:
    method, hit = case
    path = tracking_path(hit.kind, hit.delivery_id, hit.recipient_id, hit.link_id)
    prefix, suffix = path_affixes(hit.kind, hit.delivery_id, hit.link_id)
    assert path == prefix + hit.recipient_id + suffix
    assert prefix.startswith(delivery_prefix(hit.kind, hit.delivery_id))
    assert parse_path(path, method) == hit
    assert re.fullmatch(ROUTE_RE, path)
    assert sql_route(con, method, f"{path}?utm=x&s={sig}&z=1") == (hit, sig)
    assert sql_path(con, hit) == path


@pytest.mark.parametrize("route", ROUTES, ids=KINDS)
def test_the_method_decides_too(con: duckdb.DuckDBPyConnection, route: Route) -> None:
    hit = TrackedPath(route.kind, "NL-2026-11", "hero" if route.has_link else None, "r000123")
    path = tracking_path(hit.kind, hit.delivery_id, hit.recipient_id, hit.link_id)
    expected = [hit if method in route.methods else None for method in METHODS]
    assert [parse_path(path, method) for method in METHODS] == expected
    assert sql_routes(con, [(method, path) for method in METHODS]) == [(e, None) for e in expected]


@st.composite
def near_paths(draw: st.DrawFn) -> str:
    """A route's path, valid or with up to two things wrong: letter, segment count, suffix, an id."""
    route = draw(st.sampled_from(ROUTES))
    wrong = draw(st.sets(st.sampled_from(["letter", "count", "suffix", "id"]), max_size=2))
    letter = draw(st.sampled_from(["x", "O", "", "o", "c", "u/"])) if "letter" in wrong else route.letter
    count = (3 if route.has_link else 2) + (draw(st.sampled_from([-2, -1, 1])) if "count" in wrong else 0)
    parts = draw(st.lists(ids, min_size=count, max_size=count))
    if "id" in wrong and parts:
        parts[draw(st.integers(0, len(parts) - 1))] = draw(hostile)
    suffix = draw(st.sampled_from([".gif", "", "/", "?s=x", ".GIF"])) if "suffix" in wrong else route.suffix
    return "/" + "/".join([letter, *parts]) + suffix


@patient
@given(near_paths())
def test_python_and_sql_agree_on_any_path(con: duckdb.DuckDBPyConnection, target: str) -> None:
    in_sql = sql_routes(con, [("GET", target), ("POST", target)])
    for method, (parsed, _) in zip(("GET", "POST"), in_sql, strict=True):
        assert python_route(method, target) == parsed
        if parsed is not None:  # whatever matches carries valid ids only, or . and .. (which no
            # manifest or link has: such a hit is an orphan)
            assert all(
                id_problem(v) is None or v in (".", "..")
                for v in (parsed.delivery_id, parsed.recipient_id, parsed.link_id or "x")
            )


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize("route", ROUTES, ids=KINDS)
def test_hostile_ids(con: duckdb.DuckDBPyConnection, route: Route, bad: str) -> None:
    places = ("delivery", "link", "recipient") if route.has_link else ("delivery", "recipient")
    for where in places:
        delivery = bad if where == "delivery" else "NL-2026-11"
        link = (bad if where == "link" else "hero") if route.has_link else None
        recipient = bad if where == "recipient" else "r000123"
        if id_problem(bad) is not None:
            with pytest.raises(ValueError, match=f"{where} id"):
                tracking_path(route.kind, delivery, recipient, link)
        else:
            path = tracking_path(route.kind, delivery, recipient, link)
            hit = TrackedPath(route.kind, delivery, link, recipient)
            assert parse_path(path, "GET") == hit
            assert sql_route(con, "GET", path) == (hit, None)
        # the same path written by hand, whatever the id: Python and SQL still agree
        segments = [delivery, *([] if link is None else [link]), recipient]
        target = f"/{route.letter}/" + "/".join(segments) + route.suffix
        assert python_route("GET", target) == sql_route(con, "GET", target)[0]


def test_id_rule() -> None:
    assert [v for v in HOSTILE if id_problem(v) is None] == ["x.gif", "x" * ID_MAX]
    assert id_problem(".") == id_problem("..") == "is . or .."  # a link would print /o/../r1.gif
    assert id_problem("") == "is empty"
    assert id_problem("x" * (ID_MAX + 1)) == f"is longer than {ID_MAX} characters"
    assert id_problem("%2F") == "has characters outside [A-Za-z0-9._~-]"


def test_builders() -> None:
    assert tracking_path("open", "NL-2026-11", "r000123") == "/o/NL-2026-11/r000123.gif"
    assert tracking_path("click", "NL-2026-11", "r000123", "hero") == "/c/NL-2026-11/hero/r000123"
    assert tracking_path("mirror", "NL-2026-11", "r000123") == "/m/NL-2026-11/r000123"
    assert tracking_path("unsubscribe", "NL-2026-11", "r000123") == "/u/NL-2026-11/r000123"
    assert path_affixes("open", "D") == ("/o/D/", ".gif")
    assert path_affixes("click", "D", "L") == ("/c/D/L/", "")
    with pytest.raises(ValueError, match="unknown route kind 'pixel'"):
        tracking_path("pixel", "D", "R")
    with pytest.raises(ValueError, match="a click path needs link id"):
        tracking_path("click", "D", "R")
    with pytest.raises(ValueError, match="a open path takes no link id"):
        tracking_path("open", "D", "R", "L")


def test_an_open_recipient_may_end_in_gif() -> None:
    assert parse_path("/o/D/x.gif.gif") == TrackedPath("open", "D", None, "x.gif")
    assert parse_path("/o/D/.gif") is None


@given(ids, ids, ids)
def test_click_link_re_finds_the_link_of_its_delivery_only(delivery: str, link: str, recipient: str) -> None:
    url = "https://t.example.com" + tracking_path("click", delivery, recipient, link) + "?s=x"
    match = click_link_re(delivery).search(url)
    assert match is not None and match.group(1) == link
    assert click_link_re(delivery + "0").search(url) is None
    # the same delivery's mirror URL is no click (a path built by the route, not by replacing
    # '/c/' in a URL whose ids may themselves read 'c')
    mirror = "https://t.example.com" + tracking_path("mirror", delivery, recipient) + "?s=x"
    assert click_link_re(delivery).search(mirror) is None
