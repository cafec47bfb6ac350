"""Each report against figures computed independently from the hand-made data set."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from conftest import NL1_SENT, Model, pct

from tracklog.derived import open_reader
from tracklog.errors import NotFoundError, UsageError
from tracklog.reports import delivery, hot_clicks, recipient, stats, streams, urls
from tracklog.reports.common import Window, make_window, parse_tz
from tracklog.useragent import parse_agent


def test_deliveries_newest_first_with_the_same_figures(
    reader: duckdb.DuckDBPyConnection, model: Model
) -> None:
    rows = delivery.deliveries(reader).to_pylist()
    assert [r["delivery"] for r in rows] == ["NL2", "NL1"]
    for row in rows:
        full = model.indicators(row["delivery"])
        assert row == {k: full[k] for k in delivery.LIST_COLUMNS}


def test_deliveries_window_selects_by_send_date(reader: duckdb.DuckDBPyConnection) -> None:
    rows = delivery.deliveries(reader, make_window("2026-11-01", "2026-11-30")).to_pylist()
    assert [r["delivery"] for r in rows] == ["NL1"]
    assert delivery.deliveries(reader, limit=1).num_rows == 1


@pytest.mark.parametrize("delivery_id", ["NL1", "NL2"])
def test_hot_clicks(reader: duckdb.DuckDBPyConnection, model: Model, delivery_id: str) -> None:
    table = hot_clicks.hot_clicks(reader, delivery_id)
    expected, total = model.hot_clicks(delivery_id)
    rows = table.to_pylist()
    assert [{k: v for k, v in r.items() if k != "share"} for r in rows] == expected
    assert sum(round(r["share"] * 10) for r in rows) == 1000
    for r in rows:
        assert abs(r["share"] - 100 * r["clicks"] / total) < 0.1 + 1e-9
    assert "trap" not in table.values("link_id")
    assert sum(r["clicks"] for r in rows) == model.indicators(delivery_id)["clicks_total"]


def test_hot_clicks_field_names(reader: duckdb.DuckDBPyConnection) -> None:
    names = hot_clicks.hot_clicks(reader, "NL1").column_names
    assert names == ["position", "link_id", "label", "url", "clicks", "clickers", "share"]


@pytest.mark.parametrize("by", ["url", "label", "category"])
def test_urls(reader: duckdb.DuckDBPyConnection, model: Model, by: str) -> None:
    clicks = [h for h in model.events() if h.kind == "click"]
    field = {"url": 1, "label": 2, "category": 3}[by]

    def key(h: object) -> str | None:
        link = next(lk for lk in model.by_id[h.delivery].links if lk[0] == h.link)  # type: ignore[attr-defined]
        return link[field]

    counts = Counter(key(h) for h in clicks)
    clickers = Counter(k for k, _, _ in {(key(h), h.delivery, h.recipient) for h in clicks})
    rows = urls.urls(reader, by).to_pylist()
    assert {r[by]: (r["clicks"], r["clickers"]) for r in rows} == {
        k: (counts[k], clickers[k]) for k in counts
    }
    assert [r["clicks"] for r in rows] == sorted((r["clicks"] for r in rows), reverse=True)
    assert sum(round(r["share"] * 10) for r in rows) == 1000


def test_urls_sum_the_same_url_across_deliveries(reader: duckdb.DuckDBPyConnection) -> None:
    sale = next(
        r for r in urls.urls(reader, "url").to_pylist() if r["url"] == "https://shop.example.com/sale"
    )
    # NL1 hero (r1 twice, r3; not r5's scanner nor r2's HEAD) + NL2 sale (r1, r8 twice, r2)
    assert (sale["clicks"], sale["deliveries"]) == (3 + 4, 2)


def _model_paths(model: Model, delivery_id: str) -> dict[str, list[str]]:
    paths: dict[str, list[str]] = {}
    for h in sorted(
        (h for h in model.events(delivery_id) if h.kind == "click"), key=lambda h: (h.ts, h.link)
    ):
        paths.setdefault(h.recipient, []).append(str(h.link))
    return {r: p for r, p in paths.items() if len(p) > 1}


@pytest.mark.parametrize("delivery_id", ["NL1", "NL2"])
def test_streams(reader: duckdb.DuckDBPyConnection, model: Model, delivery_id: str) -> None:
    paths = _model_paths(model, delivery_id)
    seqs = Counter(
        " > ".join(p[: streams.MAX_STEPS]) + (" > …" if len(p) > streams.MAX_STEPS else "")
        for p in paths.values()
    )
    got = streams.sequences(reader, delivery_id).to_pylist()
    assert {r["sequence"]: r["recipients"] for r in got} == dict(seqs)
    pairs = Counter((a, b) for p in paths.values() for a, b in itertools.pairwise(p))
    got_t = streams.transitions(reader, delivery_id).to_pylist()
    assert {(r["from_link"], r["to_link"]): r["count"] for r in got_t} == dict(pairs)
    # the one read of both that `report streams` makes gives the same rows, in the same order,
    # with and without a limit and a window
    nov = make_window("2026-11-01", "2026-11-30", dt.UTC)
    for window, limit in ((Window(), None), (Window(), 1), (nov, None), (nov, 2), (Window(), 0)):
        both = streams.sequences_and_transitions(reader, delivery_id, window, limit)
        alone = (
            streams.sequences(reader, delivery_id, window, limit),
            streams.transitions(reader, delivery_id, window, limit),
        )
        for one, other in zip(both, alone, strict=True):
            assert (one.names, one.kinds, one.rows) == (other.names, other.kinds, other.rows)


def test_stats_timeline_and_reach(reader: duckdb.DuckDBPyConnection, model: Model) -> None:
    ev = [h for h in model.events("NL1") if h.kind in ("open", "click")]
    per_bucket: Counter[tuple[int, str]] = Counter()
    for h in ev:
        per_bucket[((h.ts - NL1_SENT) // dt.timedelta(hours=3), h.kind)] += 1
    rows = stats.timeline(reader, "3h", "NL1").to_pylist()
    last = max(n for n, _ in per_bucket)
    assert [r["hours"] for r in rows] == [3 * n for n in range(last + 1)]
    assert [(r["opens"], r["clicks"]) for r in rows] == [
        (per_bucket[(n, "open")], per_bucket[(n, "click")]) for n in range(last + 1)
    ]
    reach = {r["metric"]: r for r in stats.reach(reader, "NL1").to_pylist()}
    for kind, metric in (("open", "opens"), ("click", "clicks")):
        minutes = sorted((h.ts - NL1_SENT) // dt.timedelta(minutes=1) for h in ev if h.kind == kind)
        assert reach[metric]["total"] == len(minutes)
        for p in stats.REACH_PERCENTS:
            k = next(i for i in range(1, len(minutes) + 1) if 100 * i >= p * len(minutes))
            assert reach[metric][f"hours_to_{p}"] == pct(minutes[k - 1], 6000)


def test_stats_by_domain(reader: duckdb.DuckDBPyConnection, model: Model) -> None:
    expected: dict[str | None, dict[str, int]] = {}
    for d in model.data.deliveries:
        ev = model.events(d.delivery_id)
        for rid, email, status in d.recipients:
            domain = email.split("@")[1].lower() if email else None
            e = expected.setdefault(domain, Counter())
            e["sent"] += 1
            e["delivered"] += status == "sent"
            e["opens_unique"] += any(h.recipient == rid and model.event_type(h) != "unsubscribe" for h in ev)
            e["clicks_unique"] += any(h.recipient == rid and h.kind == "click" for h in ev)
    rows = stats.breakdown(reader, "domain").to_pylist()
    assert {
        r["domain"]: {k: r[k] for k in ("sent", "delivered", "opens_unique", "clicks_unique")} for r in rows
    } == {k: dict(v) for k, v in expected.items()}
    for r in rows:
        assert r["open_rate"] == pct(r["opens_unique"], r["delivered"])
        assert r["click_rate"] == pct(r["clicks_unique"], r["delivered"])


@pytest.mark.parametrize("by", ["browser", "os", "device"])
def test_stats_by_user_agent(reader: duckdb.DuckDBPyConnection, model: Model, by: str) -> None:
    ev = [h for h in model.events() if h.kind in ("open", "click")]
    field = {"browser": 0, "os": 1, "device": 2}[by]
    opens = Counter(parse_agent(h.ua)[field] for h in ev if h.kind == "open")
    clicks = Counter(parse_agent(h.ua)[field] for h in ev if h.kind == "click")
    rows = stats.breakdown(reader, by).to_pylist()
    assert {r[by]: (r["opens"], r["clicks"]) for r in rows} == {
        k: (opens[k], clicks[k]) for k in set(opens) | set(clicks)
    }
    assert sum(round(r["share"] * 10) for r in rows) == 1000


def test_user_agents_parse_to_expected_families() -> None:
    from conftest import ANDROID, CHROME_WIN, IPHONE, THUNDERBIRD

    assert parse_agent(IPHONE).os == "iOS" and parse_agent(IPHONE).device == "mobile"
    assert parse_agent(CHROME_WIN) == ("Chrome", "Windows", "desktop")
    assert parse_agent(ANDROID).device == "mobile"
    assert parse_agent(THUNDERBIRD).browser == "Thunderbird"
    assert parse_agent(None) == ("Other", "Other", "other")


def test_recipient_events_newest_first(reader: duckdb.DuckDBPyConnection, model: Model) -> None:
    rows = recipient.recipient_events(reader, "r1", humans_only=True).to_pylist()
    expected = sorted((h for h in model.events() if h.recipient == "r1"), key=lambda h: h.ts, reverse=True)
    assert [(r["ts"], r["type"], r["delivery"], r["link_id"]) for r in rows] == [
        (h.ts, model.event_type(h), h.delivery, h.link) for h in expected
    ]
    assert rows[0]["label"] == "Sale banner" and rows[0]["url"] == "https://shop.example.com/sale"
    # every event: the people's and the machines' (r1's trap click, the HTTP library's open)
    every = recipient.recipient_events(reader, "r1").to_pylist()
    machines = sorted(
        (
            h
            for h in model.data.hits
            if h.recipient == "r1"
            and model.hit_class(h) in ("machine_open", "bot_click")
            and model.resolves_recipient(h)
        ),
        key=lambda h: h.ts,
        reverse=True,
    )
    assert [(r["ts"], r["class"], r["reasons"]) for r in every if r["class"] != "human"] == [
        (h.ts, model.hit_class(h), ",".join(model.reasons(h))) for h in machines
    ]
    assert recipient.recipient_events(reader, "r1", "NL1", limit=2).num_rows == 2


def test_recipient_unsubscribe_types(reader: duckdb.DuckDBPyConnection) -> None:
    types = recipient.recipient_events(reader, "r4", humans_only=True).values("type")
    assert types == ["unsubscribe", "optout", "mirror"]
    # and the two Apple Mail prefetches, seconds after the send
    types = recipient.recipient_events(reader, "r4").values("type")
    assert types == ["unsubscribe", "optout", "mirror", "open", "open"]


def test_unknown_ids_raise_not_found(reader: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(NotFoundError, match="NL404"):
        delivery.delivery_indicators(reader, "NL404")
    with pytest.raises(NotFoundError, match="r99"):
        recipient.recipient_events(reader, "r99")  # only orphan hits carry it
    with pytest.raises(NotFoundError):
        recipient.recipient_events(reader, "r3", "NL2")
    for report in (hot_clicks.hot_clicks, streams.sequences, streams.transitions):
        with pytest.raises(NotFoundError):
            report(reader, "NL404")


def test_empty_database_gives_empty_reports(empty_db: Path) -> None:
    with open_reader(empty_db, wait=10) as con:
        assert delivery.deliveries(con).num_rows == 0
        assert urls.urls(con).num_rows == 0
        assert stats.timeline(con).num_rows == 0
        assert stats.reach(con).num_rows == 0
        assert stats.breakdown(con, "browser").num_rows == 0
        assert stats.breakdown(con, "domain").num_rows == 0


def test_window_parsing() -> None:
    paris = parse_tz("Europe/Paris")
    w = make_window("2026-11-03", "2026-11-03", paris)
    assert w == Window(dt.datetime(2026, 11, 2, 23, 0), dt.datetime(2026, 11, 3, 23, 0))
    assert make_window("2026-11-03T09:00:00Z", None).since == dt.datetime(2026, 11, 3, 9, 0)
    assert make_window("2026-11-03T10:00:00+01:00", None, paris).since == dt.datetime(2026, 11, 3, 9, 0)
    with pytest.raises(UsageError, match="not a date"):
        make_window("03/11/2026", None)
    with pytest.raises(UsageError, match="not before"):
        make_window("2026-11-04", "2026-11-03")
    with pytest.raises(UsageError, match="time zone"):
        parse_tz("Mars/Olympus")
