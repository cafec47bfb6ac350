"""The ingest engine on real files and a real DuckDB file: idempotency, growth, rotation,
copytruncate, torn lines, crashes (real SIGKILL), concurrent runs, bad input, odd lines."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from conftest import apache_logs
from logmaker import SECRET, expected_counts, line, sig, tracking_lines

from tracklog import store
from tracklog.cli import cli
from tracklog.ingest import engine, fastpath, sources
from tracklog.ingest.engine import SMALL_CHUNK_LINES
from tracklog.ingest.fastpath import fast_parser
from tracklog.ingest.formats import resolve_format
from tracklog.schema import SCHEMA_VERSION
from tracklog.store import lock_path, open_writer


def run(db: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None):
    runner = CliRunner()
    full_env = {"TRACKLOG_SECRET": SECRET.decode(), "TRACKLOG_CONFIG": "", **(env or {})}
    return runner.invoke(cli, ["--db", str(db), *args], input=input, env=full_env, catch_exceptions=False)


def ingest_json(db: Path, *args: str, **kw):
    res = run(db, "ingest", "--format", "json", *args, **kw)
    return res, (json.loads(res.stdout) if res.stdout.strip() else [])


def q(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def hit_counts(db: Path) -> dict[str, int]:
    return dict(q(db, "SELECT kind, count(*) FROM hits GROUP BY kind"))


def write(path: Path, lines: list[str], mode: str = "w") -> None:
    with path.open(mode) as fh:
        fh.writelines(lines)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "t.duckdb"


def test_ingest_counts_and_idempotency(tmp_path: Path, db: Path) -> None:
    lines = tracking_lines(500)
    log = tmp_path / "access.log"
    write(log, lines)
    exp = expected_counts(lines)
    res, summary = ingest_json(db, str(log))
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""
    total = summary[-1]
    assert (total["lines"], total["open"], total["click"], total["ignored"]) == (
        500,
        exp["open"],
        exp["click"],
        exp["ignored"],
    )
    assert hit_counts(db) == {"open": exp["open"], "click": exp["click"]}
    res, summary = ingest_json(db, str(log))
    assert res.exit_code == 0
    assert summary[0]["status"] == "unchanged" and summary[-1]["lines"] == 0
    assert hit_counts(db) == {"open": exp["open"], "click": exp["click"]}
    # byte offsets and line numbers point at the real lines
    data = log.read_bytes()
    for line_no, off, path in q(db, "SELECT line_no, byte_offset, path FROM hits USING SAMPLE 20 ROWS"):
        assert data[off:].split(b"\n", 1)[0].decode() == lines[line_no - 1].rstrip("\n")
        assert path.encode() in data[off:].split(b"\n", 1)[0]


def test_growth_and_torn_last_line(tmp_path: Path, db: Path) -> None:
    lines = tracking_lines(300, seed=2)
    log = tmp_path / "access.log"
    write(log, lines[:100])
    assert run(db, "ingest", str(log)).exit_code == 0
    last = lines[200]
    write(log, lines[100:200] + [last[:30]], mode="a")  # a line nginx is still writing
    _, summary = ingest_json(db, str(log))
    assert summary[0]["lines"] == 100
    assert q(db, "SELECT lines, byte_offset FROM sources") == [(200, len("".join(lines[:200]).encode()))]
    write(log, [last[30:]] + lines[201:], mode="a")
    _res, summary = ingest_json(db, str(log))
    assert summary[0]["lines"] == 100
    exp = expected_counts(lines)
    assert hit_counts(db) == {"open": exp["open"], "click": exp["click"]}
    assert (
        q(db, "SELECT count(*), count(DISTINCT (source_id, line_no)) FROM hits")[0]
        == (exp["open"] + exp["click"],) * 2
    )


def test_rotation_rename_then_gzip(tmp_path: Path, db: Path) -> None:
    lines = tracking_lines(600, seed=3)
    logdir = tmp_path / "logs"
    logdir.mkdir()
    log = logdir / "access.log"
    write(log, lines[:200])
    assert run(db, "ingest", str(logdir)).exit_code == 0
    # logrotate renames; nginx keeps writing the renamed file until it reopens
    log.rename(logdir / "access.log.1")
    write(logdir / "access.log.1", lines[200:300], mode="a")
    write(log, lines[300:400])
    res, summary = ingest_json(db, str(logdir))
    assert res.exit_code == 0, res.stderr
    assert sorted((r["input"].rsplit("/", 1)[-1], r["lines"]) for r in summary[:-1]) == [
        ("access.log", 100),
        ("access.log.1", 100),
    ]
    # next rotation: .1 is compressed to .2.gz (with lines we have not read yet), access.log -> .1
    write(logdir / "access.log.1", lines[400:450], mode="a")
    with (logdir / "access.log.1").open("rb") as src, gzip.open(logdir / "access.log.2.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (logdir / "access.log.1").unlink()
    log.rename(logdir / "access.log.1")
    write(log, lines[450:])
    res, summary = ingest_json(db, str(logdir / "*"))
    assert res.exit_code == 0, res.stderr
    assert sorted((r["input"].rsplit("/", 1)[-1], r["lines"]) for r in summary[:-1]) == [
        ("access.log", 150),
        ("access.log.1", 0),
        ("access.log.2.gz", 50),
    ]
    exp = expected_counts(lines)
    assert hit_counts(db) == {"open": exp["open"], "click": exp["click"]}
    assert q(db, "SELECT count(*) FROM sources")[0][0] == 3


def test_copytruncate_is_read_as_new(tmp_path: Path, db: Path) -> None:
    lines = tracking_lines(300, seed=4)
    log = tmp_path / "access.log"
    write(log, lines[:100])
    assert run(db, "ingest", str(log)).exit_code == 0
    shutil.copy(log, tmp_path / "access.log.1")
    with log.open("r+") as fh:
        fh.truncate(0)
    write(log, lines[100:150])
    res, summary = ingest_json(db, str(tmp_path / "access.log.1"), str(log))
    assert res.exit_code == 0, res.stderr
    by_name = {r["input"].rsplit("/", 1)[-1]: r for r in summary[:-1]}
    assert by_name["access.log.1"]["status"] == "unchanged"
    assert by_name["access.log"]["lines"] == 50
    exp = expected_counts(lines[:150])
    assert hit_counts(db) == {"open": exp["open"], "click": exp["click"]}


def test_stdin_plain_and_gzip(tmp_path: Path, db: Path) -> None:
    lines = tracking_lines(200, seed=5)
    data = "".join(lines).encode()
    res, summary = ingest_json(db, "-", input=data[:-1])  # stdin is complete: last line counts
    assert res.exit_code == 0, res.stderr
    assert summary[-1]["lines"] == 200
    res, summary = ingest_json(db, "-", input=gzip.compress(data))
    assert summary[-1]["lines"] == 0  # same content, recognised by its fingerprint
    exp = expected_counts(lines)
    assert hit_counts(db) == {"open": exp["open"], "click": exp["click"]}


def ingest_killed(db: Path, log: Path, *, chunk_bytes: int, after_lines: int) -> None:
    """`tracklog ingest log` in a child process that SIGKILLs itself inside the open transaction
    of the chunk in which it has read `after_lines` lines."""
    env = {
        **os.environ,
        "TRACKLOG_SECRET": SECRET.decode(),
        "TRACKLOG_CHUNK_BYTES": str(chunk_bytes),
        "TRACKLOG_FAULT_KILL_AFTER_LINES": str(after_lines),
    }
    proc = subprocess.run(  # noqa: PLW1510 - the exit status is the point of the test
        [sys.executable, "-m", "tracklog", "--db", str(db), "ingest", str(log)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr


def test_sigkill_mid_file_then_resume(tmp_path: Path, db: Path) -> None:
    lines = tracking_lines(20000, seed=6)
    log = tmp_path / "access.log"
    write(log, lines)
    other = tmp_path / "other.log"
    other_lines = tracking_lines(100, seed=7, delivery="NL-2")
    write(other, other_lines)
    assert run(db, "ingest", str(other)).exit_code == 0
    ingest_killed(db, log, chunk_bytes=100_000, after_lines=5000)
    # The killed run committed whole chunks only: the stored read position of the file and
    # the rows stored for it agree exactly (nothing of the chunk in flight is left behind).
    [(lines_done, offset)] = q(db, f"SELECT lines, byte_offset FROM sources WHERE path = '{log}'")
    assert 0 < lines_done < 20000
    assert offset == len("".join(lines[:lines_done]).encode())
    done = expected_counts(lines[:lines_done])
    exp_other = expected_counts(other_lines)
    assert hit_counts(db) == {
        "open": exp_other["open"] + done["open"],
        "click": exp_other["click"] + done["click"],
    }
    sql = f"SELECT max(h.line_no) FROM hits h JOIN sources s USING (source_id) WHERE s.path = '{log}'"
    assert q(db, sql)[0][0] <= lines_done
    res, summary = ingest_json(db, str(log))
    assert res.exit_code == 0, res.stderr
    assert summary[-1]["lines"] == 20000 - lines_done
    exp = expected_counts(lines)
    assert hit_counts(db) == {
        "open": exp["open"] + exp_other["open"],
        "click": exp["click"] + exp_other["click"],
    }


def test_lock_busy_exit_code_and_waiting(tmp_path: Path, db: Path) -> None:
    log = tmp_path / "access.log"
    write(log, tracking_lines(50, seed=8))
    with open_writer(db, wait=0):
        res = run(db, "ingest", "--wait", "0.3", str(log))
    assert res.exit_code == 3
    assert str(lock_path(db)) in res.stderr and "--wait" in res.stderr
    assert res.stdout == ""

    def hold() -> None:
        with open_writer(db, wait=0):
            time.sleep(1.0)

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.2)
    res = run(db, "ingest", "--wait", "30", str(log))
    t.join()
    assert res.exit_code == 0, res.stderr


def test_two_concurrent_processes_count_once(tmp_path: Path, db: Path) -> None:
    lines = tracking_lines(30000, seed=9)
    log = tmp_path / "access.log"
    write(log, lines)
    env = {**os.environ, "TRACKLOG_SECRET": SECRET.decode(), "TRACKLOG_CHUNK_BYTES": "200000"}
    cmd = [sys.executable, "-m", "tracklog", "--db", str(db), "ingest", "--wait", "60", str(log)]
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    exp = expected_counts(lines)
    assert hit_counts(db) == {"open": exp["open"], "click": exp["click"]}


def test_bad_inputs_do_not_stop_others(tmp_path: Path, db: Path) -> None:
    good = tmp_path / "good.log"
    lines = tracking_lines(100, seed=10)
    write(good, lines)
    bad_gz = tmp_path / "bad.log.gz"
    bad_gz.write_bytes(gzip.compress("".join(tracking_lines(1000, seed=11)).encode())[:-200])
    missing = tmp_path / "missing.log"
    res = run(db, "ingest", str(missing), str(bad_gz), str(good))
    assert res.exit_code == 1
    err_lines = res.stderr.strip().splitlines()
    assert any(str(missing) in x and "no such file" in x for x in err_lines)
    assert any(str(bad_gz) in x and "gzip" in x for x in err_lines)
    assert all(x.startswith("Error: ") for x in err_lines)
    assert "Traceback" not in res.stderr
    exp = expected_counts(lines)
    assert hit_counts(db) == {"open": exp["open"], "click": exp["click"]}  # nothing of the bad gzip
    assert q(db, "SELECT count(*) FROM sources")[0][0] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path: Path, db: Path) -> None:
    f = tmp_path / "secret.log"
    write(f, tracking_lines(5))
    f.chmod(0)
    res = run(db, "ingest", str(f))
    assert res.exit_code == 1 and str(f) in res.stderr and "permission denied" in res.stderr


def test_wrong_format_is_rolled_back(tmp_path: Path, db: Path) -> None:
    log = tmp_path / "json.log"
    write(log, [json.dumps({"remote_addr": "1.2.3.4", "request": "GET /o/a/b.gif HTTP/1.1"}) + "\n"] * 200)
    res = run(db, "ingest", str(log))
    assert res.exit_code == 1
    assert "combined" in res.stderr and "--log-format" in res.stderr and str(log) in res.stderr
    assert q(db, "SELECT count(*) FROM quarantine")[0][0] == 0
    assert q(db, "SELECT count(*) FROM sources")[0][0] == 0


def test_odd_lines_never_crash(tmp_path: Path, db: Path) -> None:
    good = line("/o/NL-1/r1.gif")
    tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xab\xcd\n"
    odd = [
        good.encode(),
        tls,
        b"\x00\x00\x00 nul bytes\n",
        b"caf\xe9 latin-1 \xff\xfe\n",
        b"A" * (1 << 20) + b"\n",
        b"\n",
        good.replace("r1", "r2").encode().replace(b"\n", b"\r\n"),
        good.replace("r1", "r3").encode(),
    ]
    log = tmp_path / "odd.log"
    log.write_bytes(b"".join(odd))
    res, summary = ingest_json(db, "--max-bad-ratio", "1", str(log))
    assert res.exit_code == 0, res.stderr
    assert summary[-1]["lines"] == len(odd)
    assert sorted(r[0] for r in q(db, "SELECT recipient_id FROM hits")) == ["r1", "r2", "r3"]
    raws = {r[0]: bytes(r[1]) for r in q(db, "SELECT line_no, raw FROM quarantine")}
    assert set(raws) == {2, 3, 4, 5, 6}
    assert raws[2] == tls.rstrip(b"\n")  # the original bytes, not a repaired copy
    assert len(raws[5]) == 2048


def test_signatures_valid_invalid_missing(tmp_path: Path, db: Path) -> None:
    p = "/c/NL-1/hero/r1"
    lines = [
        line(p),
        line(p, query=f"s={sig(p)}&utm_source=x"),
        line(p, query=f"utm_source=x&s={sig(p)}"),
        line(p, query=None),
        line(p, query="s=AAAAAAAAAAAAAAAAAAAAAA"),
        line("/c/NL-1/hero/r2", query=f"s={sig(p)}"),  # signature of another path
        line(p, query=f"s={sig(p, b'other-secret')}"),
    ]
    log = tmp_path / "a.log"
    write(log, lines)
    _res, summary = ingest_json(db, str(log))
    assert summary[-1]["rejected"] == 4
    assert q(db, "SELECT line_no, sig_status FROM hits ORDER BY line_no") == [
        (1, "valid"),
        (2, "valid"),
        (3, "valid"),
        (4, "missing"),
        (5, "invalid"),
        (6, "invalid"),
        (7, "invalid"),
    ]


def test_writer_memory_setting(tmp_path: Path, db: Path) -> None:
    """TRACKLOG_WRITER_MEMORY sets DuckDB's limits of an ingest; a malformed value is a config
    error naming it, before anything is stored."""
    log = tmp_path / "a.log"
    lines = tracking_lines(30, seed=3)
    write(log, lines)
    for bad in ("lots", "0MB", "300", "1TB", "200MB; DROP TABLE hits"):
        res = run(db, "ingest", str(log), env={"TRACKLOG_WRITER_MEMORY": bad})
        assert res.exit_code == 5, (bad, res.stderr)
        assert "TRACKLOG_WRITER_MEMORY" in res.stderr and res.stdout == ""
    assert not db.exists()
    assert run(db, "ingest", str(log), env={"TRACKLOG_WRITER_MEMORY": "150MB"}).exit_code == 0
    exp = expected_counts(lines)
    assert dict(q(db, "SELECT kind, count(*) FROM hits GROUP BY kind")) == {
        "open": exp["open"],
        "click": exp["click"],
    }


def test_no_secret_is_a_clear_config_error(tmp_path: Path, db: Path) -> None:
    log = tmp_path / "a.log"
    write(log, tracking_lines(3))
    res = CliRunner().invoke(
        cli, ["--db", str(db), "ingest", str(log)], env={"TRACKLOG_SECRET": "", "TRACKLOG_CONFIG": ""}
    )
    assert res.exit_code == 5
    assert "TRACKLOG_SECRET" in res.stderr and res.stdout == ""
    cfg = tmp_path / "tracklog.toml"
    cfg.write_text("verify_signatures = false\n")
    res = CliRunner().invoke(
        cli,
        ["--db", str(db), "--config", str(cfg), "ingest", "--format", "json", str(log)],
        env={"TRACKLOG_SECRET": ""},
    )
    assert res.exit_code == 0, res.stderr
    assert {r[0] for r in q(db, "SELECT DISTINCT sig_status FROM hits")} == {"unchecked"}


def test_real_world_corpus(db: Path) -> None:
    """apache_logs: 10,000 real combined lines, none a tracking hit. Every well-formed line is
    ignored; the one whose user agent lacks its closing quote is quarantined (not guessed at)."""
    res, summary = ingest_json(db, str(apache_logs()))
    assert res.exit_code == 0, res.stderr
    total = summary[-1]
    assert (total["lines"], total["ignored"], total["quarantined"]) == (10000, 9999, 1)
    [(raw,)] = q(db, "SELECT raw FROM quarantine")
    assert bytes(raw).endswith(b"Googlebot/2.1; +http://www.google.com/bot.html")


def test_status_reports_sources_and_quarantine(tmp_path: Path, db: Path) -> None:
    log = tmp_path / "a.log"
    write(log, tracking_lines(100, seed=12) + ["garbage line\n"])
    run(db, "ingest", str(log))
    res = run(db, "status", "--format", "json")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["sources"][0]["lines"] == 101
    assert data["sources"][0]["quarantined"] == 1
    assert data["quarantine"][0]["lines"] == 1
    assert data["last_runs"][0]["files"] == 1


def test_usage_errors(db: Path) -> None:
    res = run(db, "ingest")
    assert res.exit_code == 2 and "nothing to ingest" in res.stderr
    res = run(db, "ingest", "--log-format", "nosuchformat", "x.log")
    assert res.exit_code == 2 and "nosuchformat" in res.stderr


def break_click_browsers(db: Path, *, broken: bool) -> None:
    """Make every merge into the derived tables fail (a derived table replaced by a view), or
    undo it."""
    con = duckdb.connect(str(db))
    if broken:
        con.execute("ALTER TABLE click_browsers RENAME TO click_browsers_saved")
        con.execute("CREATE VIEW click_browsers AS SELECT 1 AS x")
    else:
        con.execute("DROP VIEW click_browsers")
        con.execute("ALTER TABLE click_browsers_saved RENAME TO click_browsers")
    con.close()


def repaired_run_catches_up(db: Path, tmp_path: Path, first: Path, second: Path) -> None:
    """After a failed merge of `second`: with the derived table back, the next run reads nothing
    again and merges what is stored, once; the derived tables are those of one clean run."""
    break_click_browsers(db, broken=False)
    res, summary = ingest_json(db, str(second))
    assert res.exit_code == 0 and summary[0]["status"] == "unchanged"
    assert q(db, "SELECT count(*) FROM unmerged") == [(0,)]
    assert q(db, "SELECT count(*) FROM hits WHERE resolution IS NULL") == [(0,)]
    assert q(db, "SELECT hits FROM derived_state") == q(db, "SELECT count(*) FROM hits")
    fresh = tmp_path / "fresh.duckdb"
    assert run(fresh, "ingest", str(first), str(second)).exit_code == 0
    for table in ("delivery_totals", "delivery_not_counted", "click_browsers", "delivery_minutes"):
        assert q(db, f"SELECT * FROM {table} ORDER BY ALL") == q(fresh, f"SELECT * FROM {table} ORDER BY ALL")


def test_a_failed_merge_keeps_the_stored_chunk_for_the_next_run(tmp_path: Path, db: Path) -> None:
    """A chunk's hits and its read position commit together; their merge into the derived
    tables follows in a transaction of its own (with the next chunks'). When the merge fails
    (here a derived table was replaced by hand), the run says so (exit 1), the hits stay stored
    and recorded as not merged, and the next run merges them without reading a line again:
    figures as if nothing had happened. (A chunk of 10,000 lines or more: smaller ones are
    stored unresolved, see the next test.)"""
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    write(first, tracking_lines(50, seed=13))
    lines = tracking_lines(SMALL_CHUNK_LINES, seed=14, delivery="NL-2")
    write(second, lines)
    assert run(db, "ingest", str(first)).exit_code == 0
    break_click_browsers(db, broken=True)
    res = run(db, "ingest", str(second))
    assert res.exit_code == 1 and "merging the new hits into the derived tables failed" in res.stderr
    exp = expected_counts(lines)
    new = exp["open"] + exp["click"]
    assert q(db, "SELECT count(*) FROM hits WHERE delivery_id = 'NL-2' AND resolution IS NOT NULL") == [
        (new,)
    ]
    assert q(db, "SELECT count(*) FROM unmerged") == [(1,)]
    assert q(db, "SELECT lines FROM sources WHERE path LIKE '%b.log'") == [(SMALL_CHUNK_LINES,)]
    repaired_run_catches_up(db, tmp_path, first, second)


@pytest.mark.parametrize("small_logs", [1, 3])
def test_a_small_tail_is_merged_within_the_chunks_memory_limit(
    tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch, small_logs: int
) -> None:
    """A large log that ends in a small chunk (stored unresolved) is merged within DuckDB's
    memory limit for chunks: with the writer's, the merge after a 2M-line log took the ingest's
    peak from 450 to 490-500 MB. Small chunks of SMALL_CHUNK_LINES lines or more in all (many
    small logs, a cron run) are resolved within the writer's, as before. The last checkpoint, when
    the connection closes (which merges the row groups the chunks left), keeps the chunks' limit
    in both cases."""
    monkeypatch.setattr(sources, "CHUNK", 2_800_000)  # about 12,600 lines
    monkeypatch.setattr(sources, "READ", 700_000)
    seen: list[str] = []
    at_close: list[str] = []
    real_sync, real_close = engine.derived.sync, store.WriterSession.close

    def sync(con: duckdb.DuckDBPyConnection) -> None:
        seen.append(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
        real_sync(con)

    def close(session: store.WriterSession) -> None:
        at_close.append(session.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
        real_close(session)

    monkeypatch.setattr(engine.derived, "sync", sync)
    monkeypatch.setattr(store.WriterSession, "close", close)
    logs = []
    if small_logs == 1:  # one large chunk, then a small one
        write(tmp_path / "big.log", tracking_lines(13_000, seed=17))
        logs.append(str(tmp_path / "big.log"))
    else:  # small chunks only, 12,000 lines in all
        for i in range(small_logs):
            write(tmp_path / f"s{i}.log", tracking_lines(4_000, seed=18 + i))
            logs.append(str(tmp_path / f"s{i}.log"))
    assert run(db, "ingest", *logs).exit_code == 0
    assert q(db, "SELECT count(*) FROM hits WHERE resolution IS NULL") == [(0,)]
    assert q(db, "SELECT count(*) FROM unmerged") == [(0,)]
    want = duckdb.connect()  # what DuckDB reports for each limit, computed apart
    want.execute("SET memory_limit = '150MB'")
    chunks = want.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    want.execute("SET memory_limit = '300MB'")
    writer = want.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert seen[-1] == (chunks if small_logs == 1 else writer)
    assert at_close == [chunks]


def crashed_before_a_merge(tmp_path: Path, db: Path) -> tuple[Path, Path, list[str], int]:
    """`db` as an ingest killed after two large chunks committed and before their merge left it:
    (the manifest, the log, its lines, the lines stored)."""
    manifest = tmp_path / "NL-1.json"
    manifest.write_text(
        json.dumps(
            {
                "delivery": "NL-1",
                "label": "November newsletter",
                "sent_at": "2026-11-03T09:00:00Z",
                "links": [{"id": f"link{i}", "url": f"https://shop.example.com/{i}"} for i in range(3)],
                "recipients": [
                    {"recipient_id": f"r{i:04d}", "email": f"r{i}@example.com"} for i in range(50)
                ],
            }
        )
    )
    lines = tracking_lines(36_000, seed=21)
    log = tmp_path / "access.log"
    write(log, lines)
    assert run(db, "ingest", "--manifest", str(manifest)).exit_code == 0
    # chunks of about 12,600 lines (large ones), killed inside the third
    ingest_killed(db, log, chunk_bytes=2_800_000, after_lines=26_000)
    [(done,)] = q(db, "SELECT lines FROM sources")
    assert SMALL_CHUNK_LINES * 2 <= done < 26000
    # the second chunk stored, not merged (the first too, unless the second's classification
    # changed a class of the first's hits: a stored hit is merged before its class changes)
    assert q(db, "SELECT count(*) FROM unmerged")[0][0] >= 1
    assert q(db, "SELECT hits FROM derived_state")[0][0] < q(db, "SELECT count(*) FROM hits")[0][0]
    return manifest, log, lines, done


DERIVED_FIGURES = (
    "delivery_totals",
    "delivery_dimensions",
    "delivery_minutes",
    "click_browsers",
    "delivery_not_counted",
)


def test_sigkill_between_a_chunks_commit_and_its_merge(tmp_path: Path, db: Path) -> None:
    """Killed after two large chunks committed and before their merge: a report (the first
    command to open the database) merges them once and shows what a clean ingest of the same
    lines shows; the next ingest resumes where the kill left it, and the figures are those of
    one clean run over the whole file."""
    manifest, log, lines, done = crashed_before_a_merge(tmp_path, db)
    part = tmp_path / "part.log"
    write(part, lines[:done])
    clean = tmp_path / "clean.duckdb"
    assert run(clean, "ingest", "--manifest", str(manifest), str(part)).exit_code == 0
    report = ["report", "deliveries", "--format", "json"]
    res = run(db, *report)
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == json.loads(run(clean, *report).stdout)
    assert q(db, "SELECT count(*) FROM unmerged") == [(0,)]

    res, summary = ingest_json(db, str(log), env={"TRACKLOG_CHUNK_BYTES": str(2_800_000)})
    assert res.exit_code == 0, res.stderr
    assert summary[-1]["lines"] == len(lines) - done
    whole = tmp_path / "whole.duckdb"
    assert run(whole, "ingest", "--manifest", str(manifest), str(log)).exit_code == 0
    assert json.loads(run(db, *report).stdout) == json.loads(run(whole, *report).stdout)
    for table in DERIVED_FIGURES:
        assert q(db, f"SELECT * FROM {table} ORDER BY ALL") == q(whole, f"SELECT * FROM {table} ORDER BY ALL")


@pytest.mark.parametrize("command", ["forget", "reclassify"])
def test_forget_and_reclassify_merge_what_a_crash_left_first(tmp_path: Path, db: Path, command: str) -> None:
    """`tracklog forget` and `tracklog reclassify` on a database whose last chunks a crash left
    stored and not merged: they merge them first (the count of merged hits they keep would be
    wrong otherwise), and every figure is what the same command makes of a clean ingest."""
    manifest, _, lines, done = crashed_before_a_merge(tmp_path, db)
    part = tmp_path / "part.log"
    write(part, lines[:done])
    clean = tmp_path / "clean.duckdb"
    assert run(clean, "ingest", "--manifest", str(manifest), str(part)).exit_code == 0
    config = tmp_path / "tracklog.toml"
    config.write_text("[classify]\nburst_links = 2\nburst_window = 5.0\n")  # flags more bursts
    args = ["forget", "r0007"] if command == "forget" else ["reclassify"]
    for target in (db, clean):
        res = run(target, *args, env={"TRACKLOG_CONFIG": str(config)})
        assert res.exit_code == 0, res.stderr
    assert q(db, "SELECT count(*) FROM unmerged") == [(0,)]
    assert q(db, "SELECT hits FROM derived_state") == q(db, "SELECT count(*) FROM hits")
    for table in DERIVED_FIGURES:
        assert q(db, f"SELECT * FROM {table} ORDER BY ALL") == q(clean, f"SELECT * FROM {table} ORDER BY ALL")


def test_a_failed_merge_of_small_inputs_keeps_them_for_the_next_run(tmp_path: Path, db: Path) -> None:
    """Small inputs are stored unresolved with their read positions and merged together; when
    that merge fails, the run says so (exit 1), the hits stay stored, and the next run merges
    them: figures as if nothing had happened, no line read twice."""
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    write(first, tracking_lines(50, seed=13))
    lines = tracking_lines(50, seed=14, delivery="NL-2")
    write(second, lines)
    assert run(db, "ingest", str(first)).exit_code == 0
    break_click_browsers(db, broken=True)
    res = run(db, "ingest", str(second))
    assert res.exit_code == 1 and "merging the new hits into the derived tables failed" in res.stderr
    exp = expected_counts(lines)
    assert q(db, "SELECT count(*) FROM hits WHERE delivery_id = 'NL-2' AND resolution IS NULL") == [
        (exp["open"] + exp["click"],)
    ]
    repaired_run_catches_up(db, tmp_path, first, second)


def test_schema_1_database_is_migrated_with_path_computed(tmp_path: Path, db: Path) -> None:
    """A database of schema 1 stored `path`; opening it for writing rebuilds `hits` with the
    path computed from kind and ids, keeping every row, and ingest goes on from there."""
    log = tmp_path / "access.log"
    lines = [
        line("/o/NL-1/r1.gif"),
        line("/c/NL-1/hero/r2"),
        line("/u/NL-1/r3", method="POST"),
        line("/m/NL-1/r4"),
    ]
    write(log, lines[:2])
    assert run(db, "ingest", str(log)).exit_code == 0
    # Turn it into what schema 1 wrote: the same rows with a stored path column.
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE hits_v1 AS SELECT * FROM hits")
    con.execute("DROP TABLE hits")
    con.execute("ALTER TABLE hits_v1 RENAME TO hits")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    [(ddl,)] = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'hits'").fetchall()
    assert "GENERATED" not in ddl
    con.close()

    write(log, lines[2:], mode="a")
    assert run(db, "ingest", str(log)).exit_code == 0
    assert q(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert q(db, "SELECT line_no, path, kind FROM hits ORDER BY line_no") == [
        (1, "/o/NL-1/r1.gif", "open"),
        (2, "/c/NL-1/hero/r2", "click"),
        (3, "/u/NL-1/r3", "unsubscribe"),
        (4, "/m/NL-1/r4", "mirror"),
    ]
    [(ddl,)] = q(db, "SELECT sql FROM duckdb_tables() WHERE table_name = 'hits'")
    assert "path VARCHAR GENERATED ALWAYS AS" in ddl


def test_profile_prints_phases_to_stderr_only(tmp_path: Path, db: Path) -> None:
    log = tmp_path / "access.log"
    write(log, [line("/o/NL-1/r1.gif"), line("/c/NL-1/hero/r2")])
    res, rows = ingest_json(db, "--profile", str(log))
    assert res.exit_code == 0
    assert rows[-1]["input"] == "total" and rows[-1]["lines"] == 2  # stdout: the summary, still JSON
    phases = [
        "open database",
        "derived tables (manifests, upgrades)",
        "read, gunzip, split (waiting for)",
        "parse, route, verify",
        "store the hits (resolved later)",
        "quarantine, counts",
        "commit",
        "merge the derived tables",
        "close database (checkpoint)",
        "total",
        "read-ahead thread (in the above)",  # its CPU, spent while the phases ran: not added up
    ]
    err = res.stderr
    assert "Where the time went" in err and "peak_rss_mb" in err
    positions = [err.index(p) for p in phases]
    assert positions == sorted(positions)
    assert "Where the time went" not in run(db, "ingest", str(log)).stderr


def test_profile_says_which_path_parsed_the_lines(tmp_path: Path) -> None:
    """A format the compiled pass does not read (text around a variable inside its quotes)
    is parsed by the SQL, at about 2.5 times the time per line: --profile says so, and why."""
    log = tmp_path / "access.log"
    write(log, [line("/o/NL-1/r1.gif")])
    combined = "lines parsed by the compiled pass"
    sql = "lines parsed by the SQL path: the compiled pass does not read this log format"
    if fastpath.extension_available():
        err = run(tmp_path / "a.duckdb", "ingest", "--profile", str(log)).stderr
        assert combined in err and "SQL path" not in err
    # text around a variable inside the quotes: not read by the compiled pass
    rt = resolve_format("combined", {}).spec + ' "rt=$request_time"'
    write(log, [line("/o/NL-1/r1.gif") + ' "rt=0.005"'], mode="a")
    if fastpath.extension_available():
        err = run(tmp_path / "b.duckdb", "ingest", "--profile", "--log-format", rt, str(log)).stderr
        assert sql in err and combined not in err
    err = run(tmp_path / "c.duckdb", "ingest", "--profile", str(log), env={fastpath.PURE_ENV: "1"}).stderr
    assert f"lines parsed by the SQL path: {fastpath.PURE_ENV}=1" in err
    assert "lines parsed" not in run(tmp_path / "d.duckdb", "ingest", str(log)).stderr


def test_logrotate_without_delaycompress_reads_each_line_once(tmp_path: Path, db: Path) -> None:
    """logrotate `compress` without `delaycompress`: access.log is renamed and gzipped at once,
    with lines nginx wrote after the last ingest inside the .gz; they are read from it, once."""
    lines = tracking_lines(500, seed=21)
    logdir = tmp_path / "logs"
    logdir.mkdir()
    log = logdir / "access.log"
    write(log, lines[:200])
    assert run(db, "ingest", str(logdir)).exit_code == 0
    write(log, lines[200:260], mode="a")  # written after the ingest, before the rotation
    with log.open("rb") as src, gzip.open(logdir / "access.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    log.unlink()
    write(log, lines[260:])
    res, summary = ingest_json(db, str(logdir))
    assert res.exit_code == 0, res.stderr
    assert sorted((r["input"].rsplit("/", 1)[-1], r["lines"]) for r in summary[:-1]) == [
        ("access.log", 240),
        ("access.log.1.gz", 60),
    ]
    res, summary = ingest_json(db, str(logdir))
    assert [r["lines"] for r in summary] == [0, 0, 0]
    exp = expected_counts(lines)
    assert hit_counts(db) == {"open": exp["open"], "click": exp["click"]}


def test_a_directory_skips_error_logs_and_excluded_names(tmp_path: Path, db: Path) -> None:
    logdir = tmp_path / "nginx"
    logdir.mkdir()
    write(logdir / "access.log", tracking_lines(100, seed=22))
    garbage = ['2026/11/03 09:00:00 [error] 12#12: *1 open() "/srv/x" failed (2: No such file)\n'] * 40
    write(logdir / "error.log", garbage)
    with gzip.open(logdir / "error.log.1.gz", "wt") as fh:
        fh.writelines(garbage)
    write(logdir / "app.debug.log", garbage)
    res, summary = ingest_json(db, str(logdir), "--exclude", "*.debug.log")
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""
    rows = {r["input"].rsplit("/", 1)[-1]: r for r in summary[:-1]}
    assert rows["access.log"]["status"] == "ok" and rows["access.log"]["lines"] == 100
    for name in ("error.log", "error.log.1.gz", "app.debug.log"):
        assert rows[name]["status"] == "skipped (excluded)" and rows[name]["lines"] == 0
    assert "1 skipped" not in summary[-1]["status"] and "3 skipped" in summary[-1]["status"]
    assert [p for (p,) in q(db, "SELECT path FROM sources")] == [str(logdir / "access.log")]
    # a glob skips them too; the config key adds patterns; a file named explicitly is read
    (tmp_path / "tracklog.toml").write_text('exclude = ["access.*", "*.debug.log"]\n')
    res, summary = ingest_json(
        db, str(logdir / "*"), env={"TRACKLOG_CONFIG": str(tmp_path / "tracklog.toml")}
    )
    assert res.exit_code == 0 and [r["status"] for r in summary[:-1]] == ["skipped (excluded)"] * 4
    res = run(db, "ingest", str(logdir / "error.log"))
    assert res.exit_code == 1 and "error.log" in res.stderr  # named: read, and it is no access log


def test_quiet_and_wait_work_after_the_command_and_before_it(tmp_path: Path, db: Path) -> None:
    log = tmp_path / "access.log"
    write(log, tracking_lines(50, seed=23))
    res = run(db, "ingest", "-q", "--format", "json", str(log))
    assert (res.exit_code, res.stdout, res.stderr) == (0, "", "")
    res = run(db, "ingest", "--quiet", "--format", "json", str(log))
    assert (res.exit_code, res.stdout, res.stderr) == (0, "", "")
    res, summary = ingest_json(db, str(log))
    assert res.exit_code == 0 and summary  # without -q the summary is printed
    with open_writer(db, wait=0):
        res = run(db, "--wait", "0.2", "ingest", str(log))
        assert res.exit_code == 3 and "--wait" in res.stderr
        res = run(db, "--wait", "0.2", "report", "deliveries", "-q")
        assert res.exit_code == 3


def ingest_in_chunks(db: Path, log: Path, chunk_bytes: int) -> None:
    """`tracklog ingest log` in a child process reading chunks of `chunk_bytes` (read in pieces
    of a quarter of that)."""
    env = {**os.environ, "TRACKLOG_SECRET": SECRET.decode(), "TRACKLOG_CHUNK_BYTES": str(chunk_bytes)}
    cmd = [sys.executable, "-m", "tracklog", "--db", str(db), "ingest", "--max-bad-ratio", "1", str(log)]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr


def _chunks_of(log: Path, spec: str) -> list[engine.Chunk]:
    stream = sources.LogStream(sources.InputSpec(str(log)))
    try:
        return list(engine._split_chunks(stream, 0, 0, fast_parser(resolve_format(spec, {}), None)))
    finally:
        stream.close()


def _assert_consecutive(chunks: list[engine.Chunk], log: Path, lines: int) -> None:
    """The chunks cover the log's bytes and its `lines` lines, each once, in order."""
    at, seen = 0, 0
    for chunk in chunks:
        assert chunk.offset == at
        assert chunk.lines.column("line_no").to_pylist() == list(
            range(seen + 1, seen + 1 + chunk.lines.num_rows)
        )
        at, seen = at + chunk.size, seen + chunk.lines.num_rows
    assert (at, seen) == (log.stat().st_size, lines)


@pytest.mark.skipif(not fastpath.extension_available(), reason="the C extension is not built")
def test_wide_parsed_rows_make_smaller_chunks(tmp_path: Path, monkeypatch) -> None:
    """A chunk holds at most sources.PARSED_CHUNK bytes of parsed columns: a format whose
    variables kept in `extra` make the parsed rows wider than the lines (ingress-nginx's default
    format: each value written with its name) gathers fewer pieces into a chunk; combined's
    narrower rows still fill a chunk with four pieces. Every line is in one chunk, in order."""
    spec = (
        '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
        '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
        "[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length "
        "$upstream_response_time $upstream_status $req_id"
    )
    texts = tracking_lines(3000, seed=5)
    tail = " 512 0.004 [ns-t-80] [] 10.0.0.7:8080 43 0.002 302 {:016x}"
    wide, narrow = tmp_path / "ingress.log", tmp_path / "combined.log"
    wide.write_text("".join(t.rstrip("\n") + tail.format(i) + "\n" for i, t in enumerate(texts)))
    narrow.write_text("".join(texts))
    monkeypatch.setattr(sources, "CHUNK", 40_000)
    monkeypatch.setattr(sources, "READ", 10_000)
    monkeypatch.setattr(sources, "PARSED_CHUNK", 30_000)

    def parsed(chunk: engine.Chunk) -> int:
        assert chunk.parsed is not None
        return int(chunk.parsed[0].nbytes)

    for log, spec_of, per_chunk in ((wide, spec, 2), (narrow, "combined", 4)):
        chunks = _chunks_of(log, spec_of)
        _assert_consecutive(chunks, log, len(texts))
        # all but the last: as many pieces as fit, of about READ bytes each
        assert all(per_chunk * 9_000 < c.size < per_chunk * 11_000 for c in chunks[:-1]), [
            c.size for c in chunks
        ]
        assert all(parsed(c) <= 30_000 for c in chunks)
    # the wide format's pieces parse into more bytes than their lines; combined's into fewer
    assert parsed(_chunks_of(wide, spec)[0]) > 20_000 > parsed(_chunks_of(narrow, "combined")[0]) / 2


def test_chunks_gathered_from_pieces_store_what_one_chunk_does(tmp_path: Path, monkeypatch) -> None:
    """A chunk is read, split and parsed in pieces (sources.READ bytes) gathered into chunks of
    sources.CHUNK bytes; a piece with repaired lines (raw bytes kept for the quarantine) is a
    chunk of its own. A log of real-world lines, tracking hits, page tags (which the compiled
    pass defers to the SQL) and lines that need repair, ingested in chunks of 40,000 bytes, stores
    what one chunk of the whole log does; and the chunks cover every line once, in order."""
    real = apache_logs().read_bytes().splitlines(keepends=True)[:2000]
    hits = [text.encode() for text in tracking_lines(2000, seed=31)]
    pages = [line(f"/w/p{i}.gif", query=f"tl=1.x{i}").encode() for i in range(40)]
    body = real + hits + pages
    random.Random(3).shuffle(body)
    odd = [
        b"caf\xe9 latin-1 \xff\xfe\n",
        b"\x00 nul\n",
        line("/o/NL-1/r9.gif").encode().replace(b"\n", b"\r\n"),
    ]
    for i, text in enumerate(odd):
        body.insert(len(body) * (i + 1) // 4, text)
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(body))

    def stored(db: Path) -> dict[str, list[tuple]]:
        return {
            "hits": sorted(q(db, "SELECT * EXCLUDE (source_id) FROM hits"), key=repr),
            "quarantine": sorted(q(db, "SELECT * EXCLUDE (source_id) FROM quarantine"), key=repr),
            "sources": q(db, "SELECT byte_offset, lines, hits, ignored, quarantined, last_hit FROM sources"),
        }

    whole, pieces = tmp_path / "whole.duckdb", tmp_path / "pieces.duckdb"
    ingest_in_chunks(whole, log, 1 << 26)
    ingest_in_chunks(pieces, log, 40_000)
    got, want = stored(pieces), stored(whole)
    assert got == want
    assert want["sources"][0][:2] == (log.stat().st_size, len(body))
    # the two odd lines that do not parse (the CRLF line is a hit once its CR is stripped)
    assert sorted(bytes(r[-1]) for r in want["quarantine"]) == [b"\x00 nul", b"caf\xe9 latin-1 \xff\xfe"]
    exp = expected_counts([text.decode() for text in hits])
    kinds = q(whole, "SELECT kind, count(*) FROM hits GROUP BY kind ORDER BY kind")
    assert kinds == [("click", exp["click"]), ("open", exp["open"] + 1), ("page", 40)]  # + the CRLF open

    # the chunks themselves: consecutive, of several pieces each (but the repaired ones and
    # the last), every line once
    monkeypatch.setattr(sources, "CHUNK", 40_000)
    monkeypatch.setattr(sources, "READ", 10_000)
    chunks = _chunks_of(log, "combined")
    _assert_consecutive(chunks, log, len(body))
    repaired = [c for c in chunks if c.original is not None]
    assert 1 <= len(repaired) <= 3 and all(c.size <= 10_000 + 4096 for c in repaired)
    # a chunk is four pieces of about 10,000 bytes, or fewer before a repaired piece
    full = [c for c, after in itertools.pairwise(chunks) if c.original is None and after.original is None]
    assert len(full) >= 10 and all(36_000 < c.size < 44_000 for c in full)
