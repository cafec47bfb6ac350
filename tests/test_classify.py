"""Machine opens and bot clicks: each signal with a case it flags and a close case it leaves to
people, on a real database; the settings as config keys; reclassification without the logs
(only the deliveries it changes are rebuilt); the proxy-range list and its refresh."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from conftest import (
    ANDROID,
    CHROME_WIN,
    GMAIL_PROXY,
    IPHONE,
    MPP,
    NL1_SENT,
    PYTHON_REQUESTS,
    DataSet,
    Hit,
    build_db,
    make_dataset,
)

from tracklog import classify, derived
from tracklog.cli import cli
from tracklog.config import ClassifySettings, load_config
from tracklog.errors import ConfigError, DataError
from tracklog.reports.delivery import delivery_indicators
from tracklog.store import open_writer

YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/119.0 Safari/537.36"
LATER = NL1_SENT + dt.timedelta(hours=2)  # far from the send: `fast` cannot apply


def at(base: dt.datetime, seconds: float) -> dt.datetime:
    return base + dt.timedelta(seconds=seconds)


def classified(tmp_path: Path, hits: list[Hit]) -> tuple[list[tuple[str | None, str | None]], dict]:
    """(class, reasons) of each hit, in order, and NL1's indicators: the hits stored with the
    hand-made manifests (NL1: hero, shoes, blog, trap; recipients r1..r7)."""
    db = build_db(tmp_path / "c.duckdb", DataSet(make_dataset().deliveries, hits))
    with derived.open_reader(db, wait=10) as con:
        rows = con.execute("SELECT class, reasons FROM hits ORDER BY line_no").fetchall()
        return rows, delivery_indicators(con, "NL1").to_pylist()[0]


def test_agent_kinds_proxies_first() -> None:
    s = ClassifySettings()
    assert classify.agent_kind(GMAIL_PROXY, s) == "proxy"  # crawler lists name it: exempt first
    assert classify.agent_kind(YAHOO_PROXY, s) == "proxy"
    assert classify.agent_kind(MPP, s) == "mpp"
    assert classify.agent_kind(PYTHON_REQUESTS, s) == "bot"
    assert classify.agent_kind(HEADLESS, s) == "bot"
    assert classify.agent_kind("Mozilla/5.0 (compatible; LinkScanner/1.0)", s) == "bot"  # extra_bot_agents
    assert classify.agent_kind(CHROME_WIN, s) is None
    assert classify.agent_kind(IPHONE, s) is None
    assert classify.agent_kind(None, s) is None
    assert classify.agent_kind(PYTHON_REQUESTS, ClassifySettings(bot_agents=False)) is None


def test_a_person_clicking_two_links_5s_apart_is_human(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r1", "click", LATER, "hero", ua=CHROME_WIN),
        Hit("NL1", "r1", "click", at(LATER, 5), "shoes", ua=CHROME_WIN),
    ]
    rows, ind = classified(tmp_path, hits)
    assert rows == [("human", None), ("human", None)]
    assert (ind["clicks_total"], ind["clicks_unique"], ind["bot_clicks"]) == (2, 1, 0)


def test_a_scanner_clicking_every_link_within_a_second_is_a_bot(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r2", "click", at(LATER, 0.0), "hero", ua=CHROME_WIN, ip="192.0.2.7"),
        Hit("NL1", "r2", "click", at(LATER, 0.3), "shoes", ua=CHROME_WIN, ip="192.0.2.7"),
        Hit("NL1", "r2", "click", at(LATER, 0.6), "blog", ua=CHROME_WIN, ip="192.0.2.7"),
    ]
    rows, ind = classified(tmp_path, hits)
    assert rows == [("bot_click", "burst")] * 3
    assert (ind["clicks_total"], ind["clicks_unique"], ind["bot_clicks"], ind["opens_unique"]) == (0, 0, 3, 0)


def test_two_links_within_a_second_or_one_link_three_times_is_no_burst(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r1", "click", at(LATER, 0.0), "hero"),
        Hit("NL1", "r1", "click", at(LATER, 0.5), "shoes"),
        Hit("NL1", "r2", "click", at(LATER, 0.0), "hero"),
        Hit("NL1", "r2", "click", at(LATER, 0.5), "hero"),
        Hit("NL1", "r2", "click", at(LATER, 1.0), "hero"),
        # three links, but over 3 s: not within the 2 s window
        Hit("NL1", "r3", "click", at(LATER, 0.0), "hero"),
        Hit("NL1", "r3", "click", at(LATER, 1.5), "shoes"),
        Hit("NL1", "r3", "click", at(LATER, 3.0), "blog"),
    ]
    rows, _ = classified(tmp_path, hits)
    assert rows == [("human", None)] * 8


def test_gmail_proxy_open_is_human_and_makes_no_extra_person(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r3", "open", LATER, ua=GMAIL_PROXY, ip="66.249.84.1"),
        Hit("NL1", "r3", "click", at(LATER, 30), "hero", ua=ANDROID, ip="198.51.100.3"),
    ]
    rows, ind = classified(tmp_path, hits)
    assert rows == [("human", None), ("human", None)]
    assert (ind["opens_total"], ind["opens_unique"], ind["persons_clicked"], ind["forwards_estimate"]) == (
        1,
        1,
        1,
        0,
    )


def test_mpp_by_exact_agent_or_apple_network_opens_only(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r1", "open", LATER, ua=MPP, ip="198.51.100.9"),  # no proxy network: the agent
        Hit("NL1", "r2", "open", LATER, ua=IPHONE, ip="17.58.63.10"),
        Hit("NL1", "r3", "open", LATER, ua="Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4)", ip="198.51.100.3"),
        Hit("NL1", "r4", "click", LATER, "hero", ua=IPHONE, ip="17.58.63.10"),  # a click: a person
        Hit("NL1", "r5", "open", LATER, ua=GMAIL_PROXY, ip="17.58.63.12"),  # an image proxy: exempt
    ]
    rows, ind = classified(tmp_path, hits)
    assert rows == [
        ("machine_open", "mpp"),
        ("machine_open", "proxy_range"),
        ("human", None),
        ("human", None),
        ("human", None),
    ]
    assert (ind["opens_total"], ind["machine_opens"], ind["opens_unique"]) == (2, 2, 3)


def test_head_requests_are_hits_and_machines(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r1", "click", LATER, "hero", method="HEAD"),
        Hit("NL1", "r1", "open", LATER, method="HEAD"),
        Hit("NL1", "r1", "mirror", LATER, method="HEAD"),
        Hit("NL1", "r2", "click", LATER, "hero", method="GET"),
    ]
    rows, ind = classified(tmp_path, hits)
    assert rows == [("bot_click", "head"), ("machine_open", "head"), ("bot_click", "head"), ("human", None)]
    assert (ind["bot_clicks"], ind["machine_opens"], ind["mirror_views"], ind["clicks_total"]) == (1, 1, 0, 1)


def test_crawler_agents_are_machines(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r1", "open", LATER, ua=PYTHON_REQUESTS),
        Hit("NL1", "r2", "click", LATER, "hero", ua=HEADLESS),
        Hit("NL1", "r3", "open", LATER, ua=THUNDERBIRD_UA),
    ]
    rows, _ = classified(tmp_path, hits)
    assert rows == [("machine_open", "agent"), ("bot_click", "agent"), ("human", None)]


THUNDERBIRD_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.0"


def test_a_trap_click_flags_the_recipient_s_hits_within_10s(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r1", "open", at(LATER, -9)),  # within 10 s before
        Hit("NL1", "r1", "click", at(LATER, 0), "trap"),
        Hit("NL1", "r1", "click", at(LATER, 10), "hero"),  # exactly 10 s after: within
        Hit("NL1", "r1", "click", at(LATER, 12), "shoes"),  # 12 s after: a person's
        Hit("NL1", "r2", "click", at(LATER, 1), "hero"),  # another recipient: a person's
    ]
    rows, ind = classified(tmp_path, hits)
    assert rows == [
        ("machine_open", "trap"),
        ("bot_click", "trap"),
        ("bot_click", "trap"),
        ("human", None),
        ("human", None),
    ]
    assert (ind["bot_clicks"], ind["machine_opens"], ind["clicks_total"]) == (2, 1, 2)


def test_fast_needs_a_second_signal(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r1", "click", at(NL1_SENT, 2), "hero"),  # 2 s after the send, no open: fast
        Hit("NL1", "r2", "open", at(NL1_SENT, 1)),
        Hit("NL1", "r2", "click", at(NL1_SENT, 2), "hero"),  # opened first: a person
        Hit("NL1", "r3", "click", at(NL1_SENT, 60), "hero"),  # a minute later, no open: a person
        Hit("NL1", "r4", "open", at(NL1_SENT, 1)),  # an open alone is never `fast`
    ]
    rows, _ = classified(tmp_path, hits)
    assert rows == [("bot_click", "fast"), ("human", None), ("human", None), ("human", None), ("human", None)]


def test_a_scanner_s_opt_out_get_is_no_opt_out_but_the_one_click_post_counts(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r1", "unsubscribe", LATER, ua=HEADLESS),  # a scanner's GET of the opt-out link
        Hit("NL1", "r2", "unsubscribe", LATER, ua=CHROME_WIN),  # a person's
        Hit("NL1", "r3", "unsubscribe", LATER, method="POST", ua=PYTHON_REQUESTS),  # RFC 8058 POST
    ]
    rows, ind = classified(tmp_path, hits)
    assert rows == [("bot_click", "agent"), ("human", None), ("human", None)]
    assert (ind["optout_clicks"], ind["unsubscribes"], ind["bot_clicks"]) == (1, 1, 0)


def test_settings_are_config_keys(tmp_path: Path) -> None:
    toml = tmp_path / "tracklog.toml"
    toml.write_text('[classify]\ntrap_window = 5\nburst_links = 4\nmpp_agents = ["Mozilla/5.0", "X"]\n')
    s = load_config(str(toml), env={}).classify
    assert (s.trap_window, s.burst_links, s.mpp_agents, s.fast_seconds) == (5.0, 4, ("Mozilla/5.0", "X"), 5.0)
    for bad in ("nope = 1", "trap_window = 'x'", "burst_links = 1", "extra_bot_agents = ['(']", "head = 1"):
        toml.write_text(f"[classify]\n{bad}\n")
        with pytest.raises(ConfigError):
            load_config(str(toml), env={})


def run(db: Path, config: Path | None, *args: str) -> str:
    env = {
        "TRACKLOG_CONFIG": str(config) if config else "",
        "TRACKLOG_DB": "",
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(cli, ["--db", str(db), *args], env=env)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_reclassify_rebuilds_only_the_deliveries_it_changes(tmp_path: Path) -> None:
    """A pattern that only matches an agent seen in NL2: NL2 is rebuilt, NL1's rows are kept,
    and every figure equals a database built from scratch with the same settings."""
    data = make_dataset()
    chromebook = "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
    data.hits.append(
        Hit("NL2", "r8", "open", dt.datetime(2026, 12, 2, 8, 0), ua=chromebook, ip="198.51.100.8")
    )
    db = build_db(tmp_path / "r.duckdb", data)
    run(db, None, "report", "deliveries")  # the derived tables built with the defaults
    config = tmp_path / "tracklog.toml"
    config.write_text('[classify]\nextra_bot_agents = ["(?i)scanner", "CrOS"]\n')
    with open_writer(db) as con:
        nl1_before = con.execute("SELECT * FROM delivery_totals WHERE delivery_id = 'NL1'").fetchall()
    rows = json.loads(run(db, config, "reclassify", "--format", "json"))
    assert {r["delivery"]: r["rebuilt"] for r in rows} == {"NL1": False, "NL2": True, "NL9": False}
    # r8's Chromebook open is a machine's now (beside r8's HEAD and the HTTP library's open)
    assert {r["delivery"]: (r["machine_opens"], r["bot_clicks"]) for r in rows}["NL2"] == (3, 0)
    fresh = build_db(tmp_path / "fresh.duckdb", data)
    with open_writer(fresh) as con:
        derived.reclassify(con, ClassifySettings(extra_bot_agents=("(?i)scanner", "CrOS")))
    assert run(db, None, "report", "deliveries", "--format", "json") == run(
        fresh, None, "report", "deliveries", "--format", "json"
    )
    with open_writer(db) as con:
        assert con.execute("SELECT * FROM delivery_totals WHERE delivery_id = 'NL1'").fetchall() == nl1_before
    # the next ingest with the default settings classifies back
    rows = json.loads(run(db, None, "reclassify", "--format", "json"))
    assert {r["delivery"]: (r["machine_opens"], r["bot_clicks"]) for r in rows}["NL2"] == (2, 0)


def test_proxy_ranges_update_from_a_file(tmp_path: Path) -> None:
    hits = [Hit("NL1", "r1", "open", LATER, ua=IPHONE, ip="2001:db8:b3c0:4000::9")]  # not in the bundled list
    db = build_db(tmp_path / "p.duckdb", DataSet(make_dataset().deliveries, hits))
    assert json.loads(run(db, None, "report", "delivery", "NL1", "--format", "json"))["machine_opens"] == 0
    ranges = tmp_path / "egress.csv"
    ranges.write_text("172.224.224.0/27,GB,GB-EN,London,\n2001:db8:b3c0:4000::/64,FR,FR-75,Paris,\n")
    rows = json.loads(run(db, None, "proxy-ranges", "update", "--from", str(ranges), "--format", "json"))
    assert {r["delivery"]: r["machine_opens"] for r in rows}["NL1"] == 1
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT class, reasons FROM hits").fetchall() == [("machine_open", "proxy_range")]
        assert con.execute("SELECT source, ranges FROM proxy_ranges_source").fetchall() == [(str(ranges), 2)]


def test_a_bad_proxy_range_list_is_refused_with_its_line() -> None:
    with pytest.raises(DataError, match="line 2"):
        classify.parse_ranges("17.0.0.0/8\nnot-a-network,US\n", "x.csv")
    with pytest.raises(DataError, match="no IP network"):
        classify.parse_ranges("# nothing\n", "x.csv")


def test_the_recipient_tab_shows_machines_unless_humans_only(tmp_path: Path) -> None:
    hits = [
        Hit("NL1", "r1", "open", LATER, ua=MPP),
        Hit("NL1", "r1", "click", at(LATER, 60), "hero"),
    ]
    db = build_db(tmp_path / "t.duckdb", DataSet(make_dataset().deliveries, hits))
    every = json.loads(run(db, None, "recipient", "r1", "--format", "json"))
    assert [(r["type"], r["class"], r["reasons"]) for r in every] == [
        ("click", "human", None),
        ("open", "machine_open", "mpp"),
    ]
    people = json.loads(run(db, None, "recipient", "r1", "--humans-only", "--format", "json"))
    assert [(r["type"], r["class"]) for r in people] == [("click", "human")]


def test_stats_by_device_and_the_footer_agree_on_bots(tmp_path: Path) -> None:
    """A crawler's agent (ua-parser's `bot` device) is a machine's hit: no `bot` row among the
    people's devices, and the footer counts it."""
    hits = [
        Hit(
            "NL1",
            "r1",
            "open",
            LATER,
            ua="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ),
        Hit("NL1", "r2", "open", LATER, ua=CHROME_WIN),
    ]
    db = build_db(tmp_path / "d.duckdb", DataSet(make_dataset().deliveries, hits))
    table = run(db, None, "report", "stats", "--by", "device", "--format", "json")
    assert [r["device"] for r in json.loads(table)] == ["desktop"]
    assert "1 machine opens" in run(db, None, "report", "stats", "--by", "device")


def test_head_lines_are_ingested_as_hits_by_both_parsers(tmp_path: Path) -> None:
    """A HEAD on a tracking route is a hit (it used to be ignored), classified `head`: through
    the compiled parser and through the SQL path (a log_format the compiled parser does not take)."""
    from conftest import LOG_FORMAT, SECRET, write_tracking_log

    hits = [
        Hit("NL1", "r1", "click", LATER, "hero", method="HEAD", ip="192.0.2.5"),
        Hit("NL1", "r1", "open", at(LATER, 1), method="HEAD", ip="192.0.2.5"),
        Hit("NL1", "r2", "unsubscribe", at(LATER, 2), method="HEAD", ip="192.0.2.5"),
        Hit("NL1", "r3", "click", at(LATER, 3), "hero"),
    ]
    log = write_tracking_log(tmp_path / "access.log", hits)
    for name, fmt in (("fast", LOG_FORMAT), ("sql", LOG_FORMAT + " extra=$request_time")):
        if name == "sql":
            log.write_text(log.read_text().replace("\n", " extra=0.001\n"))
        db = build_db(tmp_path / f"{name}.duckdb", DataSet(make_dataset().deliveries), hits=False)
        env = {"TRACKLOG_CONFIG": "", "TRACKLOG_DB": "", "TRACKLOG_SECRET": SECRET.decode()}
        result = CliRunner().invoke(cli, ["--db", str(db), "ingest", "--log-format", fmt, str(log)], env=env)
        assert result.exit_code == 0, result.stderr
        with duckdb.connect(str(db), read_only=True) as con:
            rows = con.execute("SELECT method, kind, class, reasons FROM hits ORDER BY line_no").fetchall()
        assert rows == [
            ("HEAD", "click", "bot_click", "head"),
            ("HEAD", "open", "machine_open", "head"),
            ("HEAD", "unsubscribe", "bot_click", "head"),
            ("GET", "click", "human", None),
        ], name


def test_the_next_ingest_applies_changed_settings(tmp_path: Path) -> None:
    """No `reclassify` needed: an ingest stores the config's [classify] settings first, and the
    stored hits are classified again when their version changed."""
    hits = [Hit("NL1", "r1", "open", LATER, ua=MPP, ip="198.51.100.1")]
    db = build_db(tmp_path / "n.duckdb", DataSet(make_dataset().deliveries, hits))
    assert json.loads(run(db, None, "report", "delivery", "NL1", "--format", "json"))["machine_opens"] == 1
    config = tmp_path / "tracklog.toml"
    config.write_text("verify_signatures = false\n[classify]\nmpp_agents = []\n")
    empty = tmp_path / "empty.log"
    empty.write_text("")
    run(db, config, "--quiet", "ingest", str(empty))
    row = json.loads(run(db, None, "report", "delivery", "NL1", "--format", "json"))
    assert (row["machine_opens"], row["opens_total"]) == (0, 1)


def test_report_bots_shows_hostile_agents_as_text(tmp_path: Path) -> None:
    """Agents are attacker-written: in the table, markup stays text and control characters are
    escaped, never sent to the terminal."""
    evil = "python-requests/2.0 [bold red]x[/] \x1b[2J\x07"
    hits = [Hit("NL1", "r1", "open", LATER, ua=evil)]
    db = build_db(tmp_path / "h.duckdb", DataSet(make_dataset().deliveries, hits))
    out = run(db, None, "report", "bots")
    assert "\x1b" not in out and "\x07" not in out
    assert "[bold red]x[/] \\x1b[2J\\x07" in out
    data = json.loads(run(db, None, "report", "bots", "--format", "json"))
    assert data["agents"] == [
        {"delivery": "NL1", "user_agent": evil, "hits": 1, "machine_opens": 1, "bot_clicks": 0}
    ]
    assert [(r["class"], r["agent"]) for r in data["classes"]] == [("machine_open", 1)]
