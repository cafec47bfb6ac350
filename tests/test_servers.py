"""Several tracking servers: each stream keeps the server its logs came from (a directory per
server, or `ingest --source NAME`); `status` shows per server the lines read and the newest hit,
and `check --max-lag` exits 6 when a server's logs stopped arriving. Log lines are written here
in the generated nginx format with times relative to now; expected values by hand."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tracklog.cli import cli
from tracklog.errors import ExitCode
from tracklog.nginx import LOG_FORMAT
from tracklog.signing import sign_path

SECRET = "servers-secret"


def now() -> dt.datetime:
    """Whole seconds, UTC: taken when each test runs (the lags are relative to the check's clock)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def run(tmp_path: Path, *args: str) -> Result:
    env = {"TRACKLOG_SECRET": SECRET, "TRACKLOG_CONFIG": "", "TRACKLOG_DB": None}
    return CliRunner().invoke(
        cli, ["--db", str(tmp_path / "s.duckdb"), *args], env=env, catch_exceptions=False
    )


def hit(at: dt.datetime, path: str, status: int = 200) -> str:
    msec = (at - dt.datetime(1970, 1, 1)).total_seconds()
    sig = sign_path(SECRET.encode(), path)
    return (
        f'{msec:.3f} 203.0.113.7 "GET {path}?s={sig} HTTP/1.1" {status} 43 "-" "Mozilla/5.0" "-" "uid=0A0B"\n'
    )


def noise(at: dt.datetime) -> str:
    msec = (at - dt.datetime(1970, 1, 1)).total_seconds()
    return f'{msec:.3f} 198.51.100.1 "GET /favicon.ico HTTP/1.1" 404 0 "-" "scanner" "-" "-"\n'


def write(path: Path, text: str, mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode) as fh:
        fh.write(text)
    return path


def servers(tmp_path: Path) -> list[dict[str, Any]]:
    res = run(tmp_path, "status", "--format", "json")
    assert res.exit_code == 0, res.stderr
    return [
        {k: r[k] for k in ("server", "streams", "lines", "hits", "last_hit")}
        for r in json.loads(res.stdout)["servers"]
    ]


def z(at: dt.datetime) -> str:
    return at.isoformat(timespec="seconds") + "Z"


@pytest.fixture
def two_servers(tmp_path: Path) -> dict[str, dt.datetime]:
    """edge-a logs until 10 minutes ago, edge-b stopped 5 hours ago, edge-c (named by --source)
    20 minutes ago."""
    start = now()
    a_last = start - dt.timedelta(minutes=10)
    b_last = start - dt.timedelta(hours=5)
    c_last = start - dt.timedelta(minutes=20)
    write(tmp_path / "logs/edge-a/access.log", hit(a_last - dt.timedelta(minutes=1), "/o/D/r1.gif") + noise(a_last) + hit(a_last, "/c/D/hero/r1"))  # fmt: skip
    write(tmp_path / "logs/edge-b/access.log", hit(b_last, "/o/D/r2.gif") + noise(b_last + dt.timedelta(minutes=5)))  # fmt: skip
    write(tmp_path / "c.log", hit(c_last, "/m/D/r3"))
    res = run(tmp_path, "ingest", "--log-format", LOG_FORMAT, str(tmp_path / "logs/edge-a"), str(tmp_path / "logs/edge-b"))  # fmt: skip
    assert res.exit_code == 0, res.stderr
    res = run(tmp_path, "ingest", "--log-format", LOG_FORMAT, "--source", "edge-c", str(tmp_path / "c.log"))
    assert res.exit_code == 0, res.stderr
    return {"a": a_last, "b": b_last, "c": c_last}


def test_each_stream_keeps_its_server(tmp_path: Path, two_servers: dict[str, dt.datetime]) -> None:
    assert servers(tmp_path) == [
        {"server": "edge-a", "streams": 1, "lines": 3, "hits": 2, "last_hit": z(two_servers["a"])},
        # the newest line is noise, 5 minutes later: last_hit is the newest *hit*
        {"server": "edge-b", "streams": 1, "lines": 2, "hits": 1, "last_hit": z(two_servers["b"])},
        {"server": "edge-c", "streams": 1, "lines": 1, "hits": 1, "last_hit": z(two_servers["c"])},
    ]
    # new lines on edge-b: read from where it stopped, its newest hit moves
    later = now() - dt.timedelta(minutes=1)
    write(tmp_path / "logs/edge-b/access.log", hit(later, "/o/D/r2.gif"), mode="a")
    assert run(tmp_path, "ingest", "--log-format", LOG_FORMAT, str(tmp_path / "logs/edge-b")).exit_code == 0
    assert servers(tmp_path)[1] == {
        "server": "edge-b",
        "streams": 1,
        "lines": 3,
        "hits": 2,
        "last_hit": z(later),
    }
    # a file named on its own has no server, unless --source says
    write(tmp_path / "lone.log", hit(later, "/o/D/r4.gif"))
    assert run(tmp_path, "ingest", "--log-format", LOG_FORMAT, str(tmp_path / "lone.log")).exit_code == 0
    assert servers(tmp_path)[0]["server"] == "-"


def test_check_exits_6_when_a_server_stopped(tmp_path: Path, two_servers: dict[str, dt.datetime]) -> None:
    res = run(tmp_path, "check", "--max-lag", "2h", "--format", "json")
    assert res.exit_code == ExitCode.LATE_LOGS == 6
    rows = json.loads(res.stdout)
    assert [(r["server"], r["status"]) for r in rows] == [
        ("edge-a", "ok"),
        ("edge-b", "late"),
        ("edge-c", "ok"),
    ]
    assert res.stderr == "Error: server edge-b: last tracking hit 5h ago (more than --max-lag 2h)\n"
    # 5 hours is within 6h; edge-a alone is on time; 15 minutes is too short for edge-c
    assert run(tmp_path, "check", "--max-lag", "6h").exit_code == 0
    assert run(tmp_path, "check", "--max-lag", "1h30m", "--server", "edge-a").exit_code == 0
    res = run(tmp_path, "check", "--max-lag", "15m", "--server", "edge-a", "--server", "edge-c")
    assert res.exit_code == 6
    assert res.stderr == "Error: server edge-c: last tracking hit 20m ago (more than --max-lag 15m)\n"
    res = run(tmp_path, "check", "--max-lag", "2h", "--server", "edge-z")
    assert (res.exit_code, res.stderr) == (6, "Error: server edge-z: no logs ingested from it\n")


def test_check_on_an_empty_database_and_bad_durations(tmp_path: Path) -> None:
    res = run(tmp_path, "check", "--max-lag", "2h")
    assert (res.exit_code, res.stderr) == (6, "Error: no tracking logs ingested yet\n")
    for bad in ("2x", "h", "-1h", "2h 3m", ""):
        res = run(tmp_path, "check", "--max-lag", bad)
        assert res.exit_code == ExitCode.USAGE_ERROR, bad
        assert "duration" in res.stderr


def test_source_must_be_a_printable_name(tmp_path: Path) -> None:
    write(tmp_path / "a.log", hit(now(), "/o/D/r1.gif"))
    for bad in ("", "a\x1b[31m", "x" * 129):
        res = run(tmp_path, "ingest", "--source", bad, str(tmp_path / "a.log"))
        assert res.exit_code == ExitCode.USAGE_ERROR and "--source" in res.stderr


def test_a_hostile_folder_name_never_drives_the_terminal(tmp_path: Path) -> None:
    folder = tmp_path / "logs" / "edge\x1b[31m[bold]x"
    write(folder / "access.log", hit(now() - dt.timedelta(hours=3), "/o/D/r1.gif"))
    assert run(tmp_path, "ingest", "--log-format", LOG_FORMAT, str(folder)).exit_code == 0
    assert servers(tmp_path)[0]["server"] == "edge\x1b[31m[bold]x"  # JSON keeps the name as is
    table = run(tmp_path, "status").stdout
    assert "\x1b" not in table and "edge\\x1b[31m[bold]x" in table
    res = run(tmp_path, "check", "--max-lag", "1h")
    assert res.exit_code == 6 and "\x1b" not in res.stdout + res.stderr
    assert res.stderr.startswith("Error: server edge\\x1b[31m[bold]x: last tracking hit 3h")
