"""The report commands through click: exit codes, stdout and stderr, and golden files.

Golden files live in tests/golden/<case>.<txt|csv|json>; regenerate them with
TRACKLOG_REGEN_GOLDEN=1 pytest tests/test_reports_cli.py and review the diff.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from logmaker import ISSUE4_FIELDS

from tracklog import derived
from tracklog.cli import cli
from tracklog.render import HEADERS
from tracklog.store import open_writer

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("TRACKLOG_REGEN_GOLDEN") == "1"
EXTENSIONS = {"table": "txt", "csv": "csv", "json": "json"}

CASES = {
    "delivery": ["report", "delivery", "NL1"],
    "deliveries": ["report", "deliveries"],
    "hot_clicks": ["report", "hot-clicks", "--delivery", "NL1"],
    "urls": ["report", "urls"],
    "urls_by_category": ["report", "urls", "--by", "category"],
    "streams": ["report", "streams", "--delivery", "NL1"],
    "streams_transitions": ["report", "streams", "--delivery", "NL1", "--table", "transitions"],
    "stats": ["report", "stats", "--delivery", "NL1", "--bucket", "3h"],
    "stats_reach": ["report", "stats", "--delivery", "NL1", "--bucket", "3h", "--table", "reach"],
    "stats_by_browser": ["report", "stats", "--by", "browser"],
    "stats_by_os": ["report", "stats", "--by", "os"],
    "stats_by_device": ["report", "stats", "--by", "device"],
    "stats_by_domain": ["report", "stats", "--by", "domain"],
    "recipient": ["recipient", "r1"],
    "recipient_humans_only": ["recipient", "r2", "--humans-only"],
    "bots": ["report", "bots"],
}


def run(db: Path, *args: str) -> Result:
    env = {"TRACKLOG_CONFIG": "", "TRACKLOG_DB": "", "NO_COLOR": "1", "COLUMNS": "200"}
    return CliRunner().invoke(cli, ["--db", str(db), *args], env=env, catch_exceptions=False)


@pytest.mark.parametrize("fmt", list(EXTENSIONS))
@pytest.mark.parametrize("case", list(CASES))
def test_golden(tracking_db: Path, case: str, fmt: str) -> None:
    result = run(tracking_db, *CASES[case], "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    path = GOLDEN / f"{case}.{EXTENSIONS[fmt]}"
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(result.stdout, encoding="utf-8")
    assert result.stdout == path.read_text(encoding="utf-8")


SHARE_OF_CLICKS = {"share": "Share of clicks %"}


@pytest.mark.parametrize(
    ("case", "own_headers"),
    [
        ("deliveries", {}),
        ("hot_clicks", SHARE_OF_CLICKS),
        ("urls", SHARE_OF_CLICKS),
        ("stats_by_domain", {}),
        ("recipient", {}),
    ],
)
def test_table_and_csv_agree_cell_for_cell(tracking_db: Path, case: str, own_headers: dict[str, str]) -> None:
    """Same cells; the table's headers are the people's names of the CSV's fields."""
    rows = list(csv.reader(io.StringIO(run(tracking_db, *CASES[case], "--format", "csv").stdout)))
    table = run(tracking_db, *CASES[case], "--format", "table").stdout
    body = [line for line in table.splitlines() if line.startswith("│")]
    header_lines = [
        [c.strip() for c in line.strip("┃").split("┃")] for line in table.splitlines() if line.startswith("┃")
    ]
    # a header wrapped over lines, read back: words joined by a space, a word broken after its
    # hyphen ("one-" / "click") joined without one
    headers = [" ".join(filter(None, parts)).replace("- ", "-") for parts in zip(*header_lines, strict=True)]
    cells = [[c.strip() for c in line.strip("│").split("│")] for line in body]
    assert headers[: len(rows[0])] == [own_headers.get(n) or HEADERS[n] for n in rows[0]]
    assert [r[: len(rows[0])] for r in cells] == rows[1:]


def test_json_one_delivery_is_an_object_with_the_issue_fields(tracking_db: Path) -> None:
    data = json.loads(run(tracking_db, "report", "delivery", "NL1", "--format", "json").stdout)
    assert isinstance(data, dict)
    for name in ISSUE4_FIELDS:
        assert name in data
    assert data["sent_at"] == "2026-11-03T09:00:00Z"


def test_recipient_json_fields(tracking_db: Path) -> None:
    data = json.loads(run(tracking_db, "recipient", "r4", "--format", "json").stdout)
    assert [list(d) for d in data] == [
        [
            "ts",
            "type",
            "class",
            "reasons",
            "delivery",
            "delivery_label",
            "link_id",
            "label",
            "url",
            "amount",
            "currency",
        ]
    ] * 5
    assert data[0]["type"] == "unsubscribe" and data[0]["url"] is None
    # r4's Apple Mail prefetches, seconds after the send: shown, classified
    assert [(d["type"], d["class"], d["reasons"]) for d in data[3:]] == [
        ("open", "machine_open", "proxy_range"),
        ("open", "machine_open", "mpp,proxy_range"),
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["report", "delivery", "NOPE"],
        ["report", "hot-clicks", "--delivery", "NOPE"],
        ["report", "streams", "--delivery", "NOPE"],
        ["report", "stats", "--delivery", "NOPE"],
        ["report", "urls", "--delivery", "NOPE"],
        ["recipient", "nobody"],
    ],
)
def test_unknown_ids_exit_4_with_one_line(tracking_db: Path, args: list[str]) -> None:
    result = run(tracking_db, *args)
    assert result.exit_code == 4
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "not in" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["report", "deliveries", "--format", "json"], "[]\n"),
        (["report", "urls", "--format", "csv"], "url,clicks,clickers,deliveries,share\n"),
        (["report", "stats", "--by", "os", "--format", "json"], "[]\n"),
        (["report", "stats", "--format", "json"], '{\n  "buckets": [],\n  "reach": []\n}\n'),
    ],
)
def test_empty_database_gives_an_empty_report(empty_db: Path, args: list[str], expected: str) -> None:
    with open_writer(empty_db):
        pass  # a database with nothing ingested yet
    result = run(empty_db, *args)
    assert (result.exit_code, result.stdout, result.stderr) == (0, expected, "")


def test_empty_database_table_and_unknown_delivery(empty_db: Path) -> None:
    with open_writer(empty_db):
        pass
    result = run(empty_db, "report", "deliveries")
    assert (
        result.exit_code == 0 and "Delivery" in result.stdout and "Not counted: 0 rejected" in result.stdout
    )
    assert run(empty_db, "report", "delivery", "NL1").exit_code == 4


@pytest.mark.parametrize(
    "args", [["report", "deliveries"], ["report", "stats"], ["recipient", "r1"], ["status"]]
)
def test_a_missing_database_is_not_an_empty_one(empty_db: Path, args: list[str]) -> None:
    """Slip: a report against a path with no database printed an empty table and exit 0."""
    result = run(empty_db, *args)
    assert result.exit_code == 4 and result.stdout == ""
    assert result.stderr == (
        f"Error: no database at {empty_db} (run `tracklog ingest` first, or point --db, TRACKLOG_DB or db "
        "in the config file at the database)\n"
    )
    assert not empty_db.exists()  # a reader never creates the file


def test_bad_options_are_usage_errors(tracking_db: Path) -> None:
    result = run(tracking_db, "report", "deliveries", "--since", "yesterday")
    assert result.exit_code == 2 and "not a date" in result.stderr and result.stdout == ""
    result = run(tracking_db, "report", "stats", "--bucket", "2h")
    assert result.exit_code == 2 and result.stdout == ""


def test_tz_changes_table_times_not_json(tracking_db: Path) -> None:
    table = run(tracking_db, "recipient", "r1", "--tz", "Europe/Paris", "--format", "csv").stdout
    assert "2026-12-01T11:03:00+01:00" in table
    data = json.loads(
        run(
            tracking_db, "recipient", "r1", "--humans-only", "--tz", "Europe/Paris", "--format", "json"
        ).stdout
    )
    assert data[0]["ts"] == "2026-12-01T10:03:00Z"


def test_since_until_restrict_the_events(tracking_db: Path) -> None:
    data = json.loads(
        run(
            tracking_db,
            "recipient",
            "r1",
            "--humans-only",
            "--since",
            "2026-11-03T09:06:00Z",
            "--until",
            "2026-11-03",
            "--format",
            "json",
        ).stdout
    )
    assert [d["ts"] for d in data] == [
        "2026-11-03T10:05:00Z",
        "2026-11-03T09:08:00Z",
        "2026-11-03T09:07:00Z",
        "2026-11-03T09:06:00Z",
    ]


def test_hot_clicks_html_writes_the_page_and_says_so_on_stderr(tracking_db: Path, tmp_path: Path) -> None:
    page = tmp_path / "hot.html"
    result = run(
        tracking_db, "report", "hot-clicks", "--delivery", "NL1", "--html", str(page), "--format", "csv"
    )
    assert result.exit_code == 0
    assert result.stdout.startswith("position,link_id,label,url,clicks,clickers,share\n")
    assert "Wrote" in result.stderr and 'data-link-id="hero"' in page.read_text()
    result = run(tracking_db, "report", "hot-clicks", "--delivery", "NL2", "--html", str(tmp_path / "x.html"))
    assert result.exit_code == 1 and "no HTML content" in result.stderr


def test_every_report_has_help() -> None:
    for args in (["report"], *[c[:2] for c in CASES.values() if c[0] == "report"], ["recipient"]):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.stdout


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_window_over_all_time_gives_the_stored_figures(tracking_db: Path, case: str, fmt: str) -> None:
    """Without --since/--until a report reads the figures merged at ingest; with a window it
    reads the definitions over the events. A window holding every hit must give the same
    output: the merge of new hits (distinct counts included) agrees with the definitions."""
    result = run(tracking_db, *CASES[case], "--since", "1970-01-02", "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (GOLDEN / f"{case}.{EXTENSIONS[fmt]}").read_text(encoding="utf-8")


def test_stats_breakdowns_are_the_same_after_a_ua_parser_upgrade(tracking_db: Path) -> None:
    """Another ua-parser version parses every user agent again: the derived tables are built
    anew, with the same figures for the same parser."""
    dimensions = ["browser", "os", "device", "domain"]

    def outputs() -> list[str]:
        return [
            run(tracking_db, "report", "stats", "--by", by, "--format", "json").stdout for by in dimensions
        ]

    before = outputs()
    with open_writer(tracking_db) as con:
        assert con.execute("SELECT count(*) FROM delivery_dimensions").fetchall()[0][0] > 0
        con.execute("UPDATE derived_state SET agents_version = 'ua-parser 0.0'")
        assert not derived.is_current(con)
        derived.sync(con)
        assert derived.is_current(con)
    assert outputs() == before
