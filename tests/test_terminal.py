"""What reaches a person's terminal: every report fits 80 and 160 columns without splitting a
number, id or time; log and manifest text is never markup and never a control character
(issue 12, repros 3 and 4); and the slips of issue 13 (progress bar, words, help texts).

Hostile text is stored the way the shared fixture stores its data (manifest rows and hits in
the documented tables); a file name with ESC goes through a real ingest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import CHROME_WIN, DataSet, Hit, build_db, make_dataset
from rich.console import Console

from tracklog.cli import App, cli
from tracklog.render import HEADERS, inert, shorten_url

REPORTS = {
    "delivery": ["report", "delivery", "NL1"],
    "deliveries": ["report", "deliveries"],
    "hot_clicks": ["report", "hot-clicks", "--delivery", "NL1"],
    "urls": ["report", "urls"],
    "urls_by_label": ["report", "urls", "--by", "label"],
    "urls_by_category": ["report", "urls", "--by", "category"],
    "streams": ["report", "streams", "--delivery", "NL1"],
    "stats": ["report", "stats", "--delivery", "NL1"],
    "stats_all": ["report", "stats"],
    "stats_by_browser": ["report", "stats", "--by", "browser"],
    "stats_by_os": ["report", "stats", "--by", "os"],
    "stats_by_device": ["report", "stats", "--by", "device"],
    "stats_by_domain": ["report", "stats", "--by", "domain"],
    "recipient": ["recipient", "r1"],
    "status": ["status"],
}
# Fields whose values are identifiers or codes (never wrapped); numbers and times are found by
# their JSON type and shape.
ID_FIELDS = {
    "delivery",
    "delivery_id",
    "link_id",
    "from_link",
    "to_link",
    "bucket",
    "metric",
    "type",
    "sig_status",
}
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

EVIL_UA = "Evil[/]/1.0 CFNetwork/808.3 Darwin/16.3.0"
PWNED_UA = "\x1b[2J\x1b[41mPWNED/1.0 CFNetwork/808.3 Darwin/16.3.0"
OSC8 = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
EVIL_LABEL = "[/]"
BLINK_LABEL = "[blink]Sale[/blink] \x07"
EVIL_DELIVERY_LABEL = f"[bold red]November[/] {OSC8}"
EVIL_URL = "https://shop.example.com/sale?x=\x1b[2J[/]"


def run(db: Path, *args: str, width: int = 200) -> Result:
    env = {
        "TRACKLOG_CONFIG": "",
        "TRACKLOG_DB": "",
        "NO_COLOR": "1",
        "COLUMNS": str(width),
        "TRACKLOG_TZ": "",
    }
    return CliRunner().invoke(cli, ["--db", str(db), *args], env=env)


# -- tables that fit --------------------------------------------------------------------------


def _dropped(text: str) -> set[str]:
    """Field names listed in the "(not shown at this width: ...)" notes of a table output."""
    names: set[str] = set()
    by_header = {v: k for k, v in HEADERS.items()}
    for match in re.finditer(r"\(not shown at this width: (.*?); see", " ".join(text.split())):
        for header in match.group(1).split(", "):
            names.add(by_header.get(header.strip(), header.strip()))
    return names


def _atoms(data: object) -> list[tuple[str, str]]:
    """(field, text as a table shows it) of every number, id and time in a JSON report."""
    rows: list[dict[str, object]] = []
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        for v in data.values():
            rows.extend(v)  # type: ignore[arg-type]
    elif isinstance(data, dict):
        rows = [data]
    else:
        rows = list(data)  # type: ignore[call-overload]
    out = []
    for row in rows:
        for field, value in row.items():
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int):
                out.append((field, str(value)))
            elif isinstance(value, float):
                out.append((field, f"{value:.1f}"))
            elif isinstance(value, str) and (field in ID_FIELDS or ISO_TIME.match(value)):
                out.append((field, value))
    return out


@pytest.mark.parametrize("width", [80, 160])
@pytest.mark.parametrize("case", list(REPORTS))
def test_every_report_fits_and_splits_no_number_id_or_time(tracking_db: Path, case: str, width: int) -> None:
    table = run(tracking_db, *REPORTS[case], width=width)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= width
    fmt = "json"
    data = json.loads(run(tracking_db, *REPORTS[case], "--format", fmt).stdout)
    dropped = _dropped(table.stdout)
    if case in ("stats", "stats_all"):
        dropped.add("hours")  # the table leaves it out: the bucket label says it
    atoms = [(f, t) for f, t in _atoms(data) if f not in dropped]
    assert atoms
    cells = {c.strip() for line in lines for c in re.split("[│┃]", line)}
    for field, text in atoms:
        assert text in cells, f"{field}={text!r} is not one whole cell at {width} columns:\n{table.stdout}"


def test_narrow_tables_drop_low_priority_columns_first_and_say_so(tracking_db: Path) -> None:
    out = run(tracking_db, "report", "deliveries", width=80).stdout
    assert "(not shown at this width: Label" in out  # the label goes before the id
    assert "NL1" in out and "NL2" in out


def test_one_delivery_is_vertical_when_narrow_and_two_pairs_when_wide(tracking_db: Path) -> None:
    narrow = run(tracking_db, "report", "delivery", "NL1", width=80).stdout
    wide = run(tracking_db, "report", "delivery", "NL1", width=160).stdout
    assert re.search(r"┃ Field +┃ +Value ┃\n", narrow)
    assert re.search(r"┃ Field +┃ +Value ┃ Field +┃ +Value ┃", wide)
    for out in (narrow, wide):
        assert re.search(
            r"│ Opens \(unique\) +│ +6 │", out
        )  # r1, r2, r3, r4, r6 + the click-only r3: see conftest
    assert "Funnel" in narrow and re.search(r"│ clicked +│ +3 │ +42\.9 │", narrow)


def test_long_urls_keep_their_host_and_the_end_of_the_path() -> None:
    url = "https://blog.example.com/2026/11/winter-layering-guide-for-everyone"
    short = shorten_url(url, 40)
    assert short.startswith("blog.example.com/…") and short.endswith("for-everyone") and len(short) == 40
    assert shorten_url("https://x.test/a", 40) == "https://x.test/a"


def test_json_and_csv_keep_the_field_names(tracking_db: Path) -> None:
    csv_out = run(tracking_db, "report", "deliveries", "--format", "csv").stdout
    assert csv_out.splitlines()[0].startswith("delivery,label,sent_at,sent,delivered,opens_unique")
    table = run(tracking_db, "report", "deliveries").stdout
    assert "Opens" in table and "opens_unique" not in table


# -- untrusted text is inert ------------------------------------------------------------------


def hostile_dataset() -> DataSet:
    data = make_dataset()
    nl1 = data.deliveries[0]
    nl1.label = EVIL_DELIVERY_LABEL
    nl1.subject = "\x1b[31mred\x1b[0m \u202eevil"
    nl1.links = [
        ("hero", EVIL_URL, EVIL_LABEL, "[promo]"),
        ("shoes", "https://shop.example.com/p/shoes", BLINK_LABEL, "promo"),
        *nl1.links[2:],
    ]
    nl1.recipients = [("r1", "jane@[red]example.com", "sent"), *nl1.recipients[1:]]
    for i, h in enumerate(data.hits):
        if h.delivery == "NL1" and h.recipient == "r1" and h.ua is not None and h.kind in ("open", "click"):
            data.hits[i] = dataclasses.replace(h, ua=EVIL_UA if i % 2 else PWNED_UA)
    data.hits.append(Hit("NL1", "r2", "open", data.hits[0].ts, ua=PWNED_UA, ip="198.51.100.2"))
    data.hits.append(Hit("NL1", "r2", "open", data.hits[0].ts, ua=CHROME_WIN, ip="198.51.100.2"))
    return data


@pytest.fixture(scope="module")
def _hostile_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_db(tmp_path_factory.mktemp("hostile") / "hostile.duckdb", hostile_dataset())


@pytest.fixture
def hostile_db(tmp_path: Path, _hostile_template: Path) -> Path:
    import shutil

    return Path(shutil.copy(_hostile_template, tmp_path / "hostile.duckdb"))


HOSTILE_CASES = {
    **REPORTS,
    "recipient_nl1": ["recipient", "r1", "--delivery", "NL1"],
    "hot_clicks_csv_on_pipe": ["report", "hot-clicks", "--delivery", "NL1", "--format", "json"],
}


@pytest.mark.parametrize("width", [80, 160])
@pytest.mark.parametrize("case", list(HOSTILE_CASES))
def test_hostile_text_is_shown_escaped_never_interpreted(hostile_db: Path, case: str, width: int) -> None:
    """Repros 3 and 4: a `[/]` browser name or label made rich raise MarkupError (exit 70),
    `[blink]` was interpreted, and ESC / OSC 8 sequences reached the terminal raw."""
    result = run(hostile_db, *HOSTILE_CASES[case], width=width)
    assert result.exit_code == 0, result.stderr
    out = result.stdout + result.stderr
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert max(len(line) for line in result.stdout.splitlines()) <= width


def test_the_hostile_text_is_visible(hostile_db: Path) -> None:
    browsers = run(hostile_db, "report", "stats", "--by", "browser").stdout
    assert "Evil[/]" in browsers and "\\x1b[2J\\x1b[41mPWNED" in browsers
    labels = run(hostile_db, "report", "urls", "--by", "label").stdout
    assert "│ [/] " in labels and "[blink]Sale[/blink] \\x07" in labels
    delivery = run(hostile_db, "report", "delivery", "NL1").stdout
    assert "[bold red]November[/]" in delivery and "\\x1b]8;;https://evil.example/\\x1b\\click me" in delivery
    assert "\\u202eevil" in delivery
    json_out = run(hostile_db, "report", "urls", "--by", "label", "--format", "json").stdout
    assert {"[/]", BLINK_LABEL} <= {r["label"] for r in json.loads(json_out)}  # data stays exact


def test_error_lines_and_progress_show_file_names_escaped(tmp_path: Path) -> None:
    """Repro 4: a log file name with ESC in an error line and in the progress bar."""
    db = tmp_path / "x.duckdb"
    name = tmp_path / "evil\x1b[2J\x1b]8;;https:evil.example\x07name.log"  # no "/" in a file name
    result = CliRunner().invoke(
        cli,
        ["--db", str(db), "ingest", str(name)],
        env={"TRACKLOG_CONFIG": "", "TRACKLOG_DB": "", "TRACKLOG_SECRET": "s"},
    )
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "evil\\x1b[2J\\x1b]8;;https:evil.example\\x07name.log" in result.stderr

    from tracklog.cli.ingest import _progress_bar
    from tracklog.ingest.engine import FileResult
    from tracklog.ingest.run import IngestReport

    name.write_bytes(b"x" * 2000)
    buf = io.StringIO()
    app = App(None, None, False, False)
    app._err = Console(file=buf, force_terminal=True, color_system=None, width=160)
    with _progress_bar(app, True) as bar:
        assert bar is not None
        bar(str(name), 0, 0)
        bar(str(name), 2000, 10)
        bar.finish(IngestReport(files=[FileResult(str(name), lines=10)]))
    shown = buf.getvalue()
    assert "evil\\x1b[2J" in shown and "\x1b[2J" not in shown and "\x07" not in shown


def test_inert_escapes_controls_and_keeps_text() -> None:
    assert inert("a\x1b[2Jb\x00\x7f\x9b\u202e\u2066é€[/]") == "a\\x1b[2Jb\\x00\\x7f\\x9b\\u202e\\u2066é€[/]"
    assert inert("tab\tnew\nline") == "tab\\x09new\\x0aline"


# -- the slips --------------------------------------------------------------------------------


def _last_bar_line(tmp_path: Path, steps: list[tuple[int, int]], result: Any) -> str:
    """The progress bar's last frame for access.log (4,000 bytes) after `steps` (bytes, lines)
    and finish() with the FileResult `result`."""
    from tracklog.cli.ingest import _progress_bar
    from tracklog.ingest.run import IngestReport

    log = tmp_path / "access.log"
    log.write_bytes(b"y" * 4000)
    buf = io.StringIO()
    app = App(None, None, False, False)
    app._err = Console(file=buf, force_terminal=True, color_system=None, width=160)
    with _progress_bar(app, True) as bar:
        assert bar is not None
        for done, lines in steps:
            bar(str(log), done, lines)
        bar.finish(IngestReport(files=[result(str(log))]))
    return [line for line in buf.getvalue().replace("\r", "\n").splitlines() if "access.log" in line][-1]


def test_a_finished_progress_bar_shows_its_rates_and_no_question_mark(tmp_path: Path) -> None:
    from tracklog.ingest.engine import FileResult

    last = _last_bar_line(tmp_path, [(0, 0), (4000, 1234)], lambda name: FileResult(name, lines=1234))
    assert "?" not in last and "4.0/4.0 kB" in last and "1,234 lines" in last
    assert re.search(r"\d[\d,]* lines/s", last) and "MB/s" in last


def test_a_reingest_shows_the_file_complete_not_zero(tmp_path: Path) -> None:
    """Slip: an unchanged file showed 0.0/582.6 kB."""
    from tracklog.ingest.engine import FileResult

    last = _last_bar_line(tmp_path, [(0, 0)], lambda name: FileResult(name, status="unchanged"))
    assert "4.0/4.0 kB" in last and "nothing new" in last and "0.0/" not in last


def test_deliveries_since_help_says_it_selects_deliveries_by_send_date() -> None:
    out = CliRunner().invoke(cli, ["report", "deliveries", "--help"]).stdout
    assert "Only deliveries sent from this date" in " ".join(out.split())
    assert "Only hits" not in out


def test_report_delivery_has_no_limit_option() -> None:
    """Slip: --limit was accepted and ignored; a one-delivery report has no rows to limit."""
    result = CliRunner().invoke(cli, ["report", "delivery", "NL1", "--limit", "3"])
    assert result.exit_code == 2 and "No such option '--limit'" in result.stderr


def test_unsubscribe_words_mean_one_thing(tracking_db: Path, tmp_path: Path) -> None:
    """Slip: "unsubscribes" was every /u/ hit in the ingest summary and the one-click POSTs in
    the reports. Now the summary says `unsubscribe` (hits of the route, like open/click/mirror)."""
    from tracklog.ingest.engine import FileResult
    from tracklog.ingest.run import IngestReport

    result = FileResult("a.log")
    result.hits["unsubscribe"] = 5
    summary = IngestReport(files=[result]).summary_table()
    assert "unsubscribes" not in summary.column_names and summary.column("unsubscribe")[0].as_py() == 5
    assert HEADERS["unsubscribe"] == "Unsubscribe hits"
    assert HEADERS["unsubscribes"] == "Unsubscribes (one-click)"


def test_stats_by_device_explains_its_share(tracking_db: Path) -> None:
    out = run(tracking_db, "report", "stats", "--by", "device").stdout
    assert "Share of opens %" in " ".join(out.split()) or "Share" in out
    assert "Share of opens: the device's opens as a percentage of all opens" in " ".join(out.split())


def test_quick_start_lock_file_is_ignored_by_git() -> None:
    """Slip: the quick start left sample_logs/tracklog.duckdb.lock untracked and not ignored. The
    run lock stays (deleting a file others may be waiting to flock would let two ingests in)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for name in ("tracklog.duckdb.lock", "tracklog.duckdb.wait", "tracklog.duckdb"):
        proc = subprocess.run(["git", "check-ignore", "-q", f"sample_logs/{name}"], cwd=root, check=False)
        assert proc.returncode == 0, name


# -- charts -----------------------------------------------------------------------------------


def test_auto_buckets_are_hourly_over_the_first_day_then_daily(reader: Any, model: Any) -> None:
    """Expected rows worked out from the model's events: hours since the send of every counted
    open and click of NL1, hourly below 24 h, then whole days; from the first to the last busy
    bucket."""
    from tracklog.reports import stats

    sent = model.by_id["NL1"].sent_at
    counts: dict[str, list[int]] = {}
    order: dict[str, int] = {}
    for h in model.events("NL1"):
        kind = model.event_type(h)
        if kind not in ("open", "click"):
            continue
        hours = int((h.ts - sent).total_seconds() // 3600)
        label, start = (f"+{hours}h", hours) if hours < 24 else (f"+{hours // 24}d", hours // 24 * 24)
        counts.setdefault(label, [0, 0])[0 if kind == "open" else 1] += 1
        order[label] = start
    first, last = min(order.values()), max(order.values())
    starts = [*range(first, min(last, 23) + 1), *range(24, last + 1, 24)]
    labels = [f"+{s}h" if s < 24 else f"+{s // 24}d" for s in starts]
    expected = [(lb, s, *counts.get(lb, [0, 0])) for lb, s in zip(labels, starts, strict=True)]
    rows = stats.timeline(reader, "auto", "NL1").to_pylist()
    assert [(r["bucket"], r["hours"], r["opens"], r["clicks"]) for r in rows] == expected
    assert len(rows) <= stats.MAX_ROWS


def test_auto_buckets_stay_within_a_screen_over_a_long_spread(reader: Any) -> None:
    from tracklog.reports import stats

    # hourly then daily over 60 days would be 24 + 59 rows: auto goes daily, then weekly
    hourly = [(0, 1, 0), (5, 1, 1), (60 * 24 - 1, 1, 0)]
    assert len(stats._bucketed(hourly, 60, 1440)) > stats.MAX_ROWS
    assert len(stats._bucketed(hourly, 1440, 1440)) == 60
    assert [r[0] for r in stats._bucketed(hourly, 10080, 10080)] == [f"+{7 * w}d" for w in range(9)]


def test_stats_table_marks_50_and_90_percent_of_opens(tracking_db: Path) -> None:
    """NL1's opens (conftest): +5 min, +65, +30, +90, +300 and +1500 min: half of the 6 (3) are
    in by +65 min, the +1h bucket; 90% (5.4, so 6) by +1500 min, the +1d bucket."""
    out = run(tracking_db, "report", "stats", "--delivery", "NL1").stdout
    assert re.search(r"│ \+1h .*◀ 50% of opens", out) and re.search(r"│ \+1d .*◀ 90% of opens", out)


def test_a_long_ranking_table_shows_its_head_and_says_how_many_more() -> None:
    """In a table for a person (no --limit), a ranking shows its first SCREEN_ROWS rows (the
    tables of a report share them) and a note gives the count of all of them; CSV and JSON, and a
    table with --limit, keep every row."""
    from tracklog.cli.reports import SCREEN_ROWS, Common
    from tracklog.render import Section, render, render_sections
    from tracklog.reports.common import ALL_TIME
    from tracklog.result import Result

    n = SCREEN_ROWS + 7
    rows = tuple((f"https://shop.example.com/p/{i:03d}", n - i) for i in range(n))
    table = Result(("url", "clicks"), ("string", "integer"), rows)
    screen = Common(ALL_TIME, None, None, "table", False).screen_rows
    assert screen == SCREEN_ROWS
    assert Common(ALL_TIME, None, 100, "table", False).screen_rows is None  # --limit given: it rules

    out = io.StringIO()
    render(table, "table", out=out, console=Console(file=out, width=120), max_rows=screen)
    text = out.getvalue()
    shown = re.findall(r"/p/(\d{3})", text)
    assert shown == [f"{i:03d}" for i in range(SCREEN_ROWS)]  # the head, in order
    assert f"the first {SCREEN_ROWS} of {n} rows" in text

    out = io.StringIO()
    render(table, "csv", out=out, max_rows=screen)
    assert len(out.getvalue().splitlines()) == n + 1  # the header and every row
    out = io.StringIO()
    render(table, "json", out=out, max_rows=screen)
    assert len(json.loads(out.getvalue())) == n

    out = io.StringIO()
    render(table, "table", out=out, console=Console(file=out, width=120), max_rows=None)
    assert len(re.findall(r"/p/(\d{3})", out.getvalue())) == n and "rows:" not in out.getvalue()

    # two tables share the screen: half of it each
    out = io.StringIO()
    twice = [Section(table, name="a"), Section(table, name="b")]
    render_sections(twice, "table", out=out, console=Console(file=out, width=120), max_rows=screen)
    half = SCREEN_ROWS // 2
    assert re.findall(r"/p/(\d{3})", out.getvalue()) == [f"{i:03d}" for i in range(half)] * 2
    assert out.getvalue().count(f"the first {half} of {n} rows") == 2


def test_rankings_show_a_screen_of_rows_and_the_message_every_link(tmp_path: Path) -> None:
    """A delivery with SCREEN_ROWS + 5 links, each clicked once: `report urls` (a ranking) shows
    the first SCREEN_ROWS of them and says how many there are; `report hot-clicks` (the message)
    shows every link; --limit and CSV give every row."""
    from conftest import Delivery

    from tracklog.cli.reports import SCREEN_ROWS

    n = SCREEN_ROWS + 5
    sent = dt.datetime(2026, 11, 3, 9, 0)
    links = [(f"l{i:02d}", f"https://shop.example.com/p/{i:02d}", f"Link {i:02d}", "promo") for i in range(n)]
    recipients = [(f"r{i:02d}", f"r{i:02d}@example.com", "sent") for i in range(n)]
    hits = [
        Hit(
            "BIG",
            f"r{i:02d}",
            "click",
            sent + dt.timedelta(hours=2, minutes=i),
            f"l{i:02d}",
            ip=f"198.51.100.{i + 1}",
        )
        for i in range(n)
    ]
    big = Delivery("BIG", "Many links", sent, "Many links", None, links, recipients)
    db = build_db(tmp_path / "big.duckdb", DataSet([big], hits))

    urls = run(db, "report", "urls", "--delivery", "BIG")
    assert urls.exit_code == 0, urls.stderr
    assert len(re.findall(r"shop\.example\.com/p/\d\d", urls.stdout)) == SCREEN_ROWS
    assert f"the first {SCREEN_ROWS} of {n} rows" in urls.stdout
    every = run(db, "report", "urls", "--delivery", "BIG", "--limit", str(n))
    assert len(re.findall(r"shop\.example\.com/p/\d\d", every.stdout)) == n and "rows:" not in every.stdout
    csv_rows = run(db, "report", "urls", "--delivery", "BIG", "--format", "csv").stdout.splitlines()
    assert len(csv_rows) == n + 1

    hot = run(db, "report", "hot-clicks", "--delivery", "BIG")
    assert hot.exit_code == 0, hot.stderr
    assert sorted(set(re.findall(r"\bl\d\d\b", hot.stdout))) == [f"l{i:02d}" for i in range(n)]
    assert "rows:" not in hot.stdout
