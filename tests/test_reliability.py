"""Regression tests of issue 12 (trust under attack and accident): damaged inputs, wrong secrets
and key rotation, absurd timestamps, bad manifest values, a wrong --db, and the smaller failures.
Real files, real processes, a real DuckDB file; expected figures computed from the test data."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
from conftest import stored_and_defined
from logmaker import SECRET, expected_counts, line, sig, tracking_lines

from tracklog import derived

ENV = {**os.environ, "TRACKLOG_SECRET": SECRET.decode(), "TRACKLOG_CONFIG": ""}


def tracklog(db: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A real `tracklog` process."""
    return subprocess.run(
        check=False,
        args=[sys.executable, "-m", "tracklog", "--db", str(db), *args],
        env={**ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def q(db: Path, sql: str, params: list[object] | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


HIT_ROWS = "SELECT line_no, byte_offset, ts, kind, delivery_id, recipient_id, link_id, sig_status FROM hits ORDER BY 1"


# -- 1. a gzip damaged in the middle ---------------------------------------------------------------


def _flip(data: bytes, at: float, n: int = 64) -> bytes:
    i = int(len(data) * at)
    return data[:i] + bytes(b ^ 0xFF for b in data[i : i + n]) + data[i + n :]


@pytest.mark.parametrize("members", [1, 3])
def test_damaged_gzip_then_intact_copy_gives_the_intact_hits(tmp_path: Path, members: int) -> None:
    lines = tracking_lines(30_000, seed=12)
    text = "".join(lines).encode()
    # logrotate writes one member; concatenated files hold several: split at line ends
    cuts = [0] + [text.index(b"\n", len(text) * k // members) + 1 for k in range(1, members)] + [len(text)]
    parts = [text[a:b] for a, b in itertools.pairwise(cuts)]
    packed = [gzip.compress(p, compresslevel=6) for p in parts]
    intact = b"".join(packed)
    # the damage at 60% of the last member
    damaged = b"".join(packed[:-1]) + _flip(packed[-1], 0.6)
    assert gzip.decompress(intact) == text
    env = {"TRACKLOG_CHUNK_BYTES": str(64 << 10)}  # 64 KiB: the log spans dozens of chunks

    (tmp_path / "damaged").mkdir()
    (tmp_path / "intact").mkdir()
    bad = tmp_path / "damaged" / "access.log.2.gz"
    good = tmp_path / "intact" / "access.log.2.gz"
    bad.write_bytes(damaged)
    good.write_bytes(intact)

    db = tmp_path / "t.duckdb"
    res = tracklog(db, "ingest", str(bad), env=env)
    assert res.returncode == 1
    assert "corrupt gzip data" in res.stderr and "ingest an intact copy" in res.stderr
    assert "Traceback" not in res.stderr
    # kept: exactly the members before the damaged one
    kept = expected_counts([x + "\n" for x in b"".join(parts[:-1]).decode().splitlines()])
    stored = dict(q(db, "SELECT kind, count(*) FROM hits GROUP BY kind"))
    assert stored.get("open", 0) == kept["open"] and stored.get("click", 0) == kept["click"]
    assert q(db, "SELECT count(*) FROM quarantine")[0][0] == 0

    res = tracklog(db, "ingest", str(good), env=env)
    assert res.returncode == 0, res.stderr

    alone = tmp_path / "alone.duckdb"
    assert tracklog(alone, "ingest", str(good), env=env).returncode == 0
    exp = expected_counts(lines)
    assert dict(q(db, "SELECT kind, count(*) FROM hits GROUP BY kind")) == {
        "open": exp["open"],
        "click": exp["click"],
    }
    assert q(db, HIT_ROWS) == q(alone, HIT_ROWS)  # nothing lost, nothing doubled
    assert q(db, "SELECT count(*), max(byte_offset) FROM sources") == [(1, len(text))]


def test_damaged_gzip_on_stdin_keeps_nothing_unverified(tmp_path: Path) -> None:
    lines = tracking_lines(5_000, seed=13)
    text = "".join(lines).encode()
    db = tmp_path / "t.duckdb"
    proc = subprocess.run(
        check=False,
        args=[sys.executable, "-m", "tracklog", "--db", str(db), "ingest", "-"],
        env={**ENV, "TRACKLOG_CHUNK_BYTES": str(32 << 10)},
        input=_flip(gzip.compress(text), 0.5),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 1 and b"corrupt gzip data" in proc.stderr
    assert q(db, "SELECT count(*) FROM hits")[0][0] == 0
    proc = subprocess.run(
        check=False,
        args=[sys.executable, "-m", "tracklog", "--db", str(db), "ingest", "-"],
        env={**ENV, "TRACKLOG_CHUNK_BYTES": str(32 << 10)},
        input=gzip.compress(text),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    exp = expected_counts(lines)
    assert dict(q(db, "SELECT kind, count(*) FROM hits GROUP BY kind")) == {
        "open": exp["open"],
        "click": exp["click"],
    }


# -- 2. signatures you can operate -----------------------------------------------------------------


def _manifest(folder: Path, delivery: str = "NL-1", sent_at: str = "2026-11-03T08:00:00Z") -> Path:
    """A manifest for tracking_lines(): recipients r0000-r0049, links link0-link2."""
    recipients = [{"recipient_id": f"r{i:04d}", "email": f"u{i}@ex{i % 3}.test"} for i in range(50)]
    links = [{"id": f"link{i}", "url": f"https://shop.example.com/{i}"} for i in range(3)]
    doc = {"delivery": delivery, "sent_at": sent_at, "links": links, "recipients": recipients}
    path = folder / f"{delivery}.json"
    path.write_text(json.dumps(doc))
    return path


def _totals(db: Path) -> list[tuple]:
    return q(db, "SELECT * FROM delivery_totals ORDER BY delivery_id")


def _report(db: Path, *args: str) -> object:
    res = tracklog(db, "report", *args, "--format", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_wrong_secret_is_loud_and_reverify_makes_the_figures_right(tmp_path: Path) -> None:
    lines = tracking_lines(600, seed=21)
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    manifest = _manifest(tmp_path)
    exp = expected_counts(lines)

    db = tmp_path / "t.duckdb"
    res = tracklog(db, "ingest", "--manifest", str(manifest), str(log), env={"TRACKLOG_SECRET": "wrong"})
    assert res.returncode == 1
    errors = [x for x in res.stderr.splitlines() if x.startswith("Error:")]
    signed = exp["open"] + exp["click"]
    assert errors == [
        (
            f"Error: {log}: {signed} of {signed} signed hits failed signature verification and are stored as "
            "rejected: the signing secret is probably wrong (TRACKLOG_SECRET, secret_file or secrets in the "
            "config): fix it, then run `tracklog reverify`"
        ),
        "Error: 1 input(s) could not be ingested (see above)",
    ]
    status = json.loads(tracklog(db, "status", "--format", "json").stdout)
    assert [(a["path"], a["signed"], a["invalid"]) for a in status["signature_alerts"]] == [
        (str(log), signed, signed)
    ]
    assert status["last_runs"][0]["exit_code"] == 1
    # the next ingest with the right secret finds nothing new: only reverify repairs the verdicts
    assert tracklog(db, "ingest", str(log)).returncode == 0
    assert _report(db, "delivery", "NL-1")["rejected_hits"] == signed

    res = tracklog(db, "reverify", "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [
        {"before": "invalid", "after": "valid", "hits": signed, "deliveries": 1}
    ]
    clean = tmp_path / "clean.duckdb"
    assert tracklog(clean, "ingest", "--manifest", str(manifest), str(log)).returncode == 0
    assert _totals(db) == _totals(clean)
    for report in (
        ("delivery", "NL-1"),
        ("stats", "--by", "browser"),
        ("stats", "--by", "domain"),
        ("urls",),
    ):
        assert _report(db, *report) == _report(clean, *report)
    with derived.open_reader(db, wait=10) as con:  # every stored figure is its definition again
        for stored, defined in stored_and_defined(con):
            assert stored == defined
    # independently: opens and clicks as the text of the log says
    got = _report(db, "delivery", "NL-1")
    assert (got["opens_total"], got["clicks_total"], got["rejected_hits"]) == (exp["open"], exp["click"], 0)
    assert json.loads(tracklog(db, "status", "--format", "json").stdout)["signature_alerts"] == []
    # once more: nothing changes
    res = tracklog(db, "reverify", "--format", "json")
    assert res.returncode == 0 and json.loads(res.stdout) == []


def _rotation_config(tmp_path: Path) -> Path:
    (tmp_path / "old.key").write_text("old-secret\n")
    config = tmp_path / "tracklog.toml"
    config.write_text(
        'secrets = [\n  {id = "2026-12", secret = "new-secret"},\n  {id = "2026-06", secret_file = "old.key"},\n]\n'
    )
    return config


@pytest.mark.parametrize("pure", ["0", "1"])
def test_several_keys_valid_at_once(tmp_path: Path, pure: str) -> None:
    config = _rotation_config(tmp_path)
    rnd = random.Random(5)
    lines, want = [], {"valid": 0, "invalid": 0}
    for i in range(300):
        path = f"/o/NL-1/r{i % 50:04d}.gif"
        secret = rnd.choice([b"new-secret", b"old-secret", b"other-secret"])
        lines.append(line(path, query=f"s={sig(path, secret)}"))
        want["invalid" if secret == b"other-secret" else "valid"] += 1
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    db = tmp_path / "t.duckdb"
    env = {"TRACKLOG_SECRET": "", "TRACKLOG_CONFIG": str(config), "TRACKLOG_PURE": pure}
    res = tracklog(db, "ingest", str(log), env=env)
    assert res.returncode == 0, res.stderr
    assert dict(q(db, "SELECT sig_status, count(*) FROM hits GROUP BY 1")) == want
    # new links are signed with the newest key (the first listed)
    assert tracklog(db, "ingest", "--manifest", str(_manifest(tmp_path)), env=env).returncode == 0
    res = tracklog(
        db,
        "link",
        "--delivery",
        "NL-1",
        "--recipient",
        "r0001",
        "--type",
        "open",
        "--base-url",
        "https://t.example.com",
        "--format",
        "csv",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert f"/o/NL-1/r0001.gif?s={sig('/o/NL-1/r0001.gif', b'new-secret')}" in res.stdout


def test_rotation_then_reverify_accepts_the_old_key(tmp_path: Path) -> None:
    """Hits signed with a key missing from the config are rejected; listing the key and running
    reverify accepts them (the procedure of the README)."""
    path = "/o/NL-1/r0001.gif"
    log = tmp_path / "access.log"
    log.write_text("".join(line(path, query=f"s={sig(path, b'old-secret')}") for _ in range(5)))
    db = tmp_path / "t.duckdb"
    assert (
        tracklog(db, "ingest", str(log), env={"TRACKLOG_SECRET": "new-secret"}).returncode == 0
    )  # 5 < 20: quiet
    assert q(db, "SELECT sig_status, count(*) FROM hits GROUP BY 1") == [("invalid", 5)]
    env = {"TRACKLOG_SECRET": "", "TRACKLOG_CONFIG": str(_rotation_config(tmp_path))}
    res = tracklog(db, "reverify", "--format", "csv", env=env)
    assert res.returncode == 0, res.stderr
    assert q(db, "SELECT sig_status, count(*) FROM hits GROUP BY 1") == [("valid", 5)]


# -- 6. absurd timestamps ----------------------------------------------------------------------------

CLOCK_OPENS = {  # signed opens of NL-1 (sent 2026-11-03 08:00 UTC) with a clock far off
    "01/Jan/1970:00:00:01 +0000": "clock",
    "01/Jan/2100:00:00:00 +0000": "clock",
    "25/Oct/2026:08:00:00 +0000": "clock",  # nine days before the send
    "03/Nov/2026:07:30:00 +0000": "event",  # half an hour before: inside the window (1 day)
}
BAD_TIMES = (
    "31/Dec/1969:23:59:59 +0000",  # before 1970 UTC
    "01/Jan/1970:00:30:00 +0100",  # the same, by its offset
    "31/Dec/9999:23:59:59 -1200",  # after 9999 UTC
    "03/Nov/2026:10:00:00 +2500",  # offsets nginx never writes
    "03/Nov/2026:10:00:00 +0199",
)


@pytest.mark.parametrize("pure", ["0", "1"])
def test_absurd_timestamps_are_clock_or_quarantined_and_reports_stay_small(tmp_path: Path, pure: str) -> None:
    normal = tracking_lines(200, seed=31)  # 03/Nov/2026 10:00-10:03, two hours after the send
    odd = [line("/o/NL-1/r0007.gif", ts=ts) for ts in CLOCK_OPENS]
    bad = [line("/o/NL-1/r0008.gif", ts=ts) for ts in BAD_TIMES]
    log = tmp_path / "access.log"
    log.write_text("".join(odd + bad + normal))
    db = tmp_path / "t.duckdb"
    env = {"TRACKLOG_PURE": pure}
    res = tracklog(db, "ingest", "--manifest", str(_manifest(tmp_path)), str(log), env=env)
    assert res.returncode == 0, res.stderr
    assert q(db, "SELECT reason, count(*) FROM quarantine GROUP BY 1") == [("bad timestamp", len(BAD_TIMES))]
    assert dict(q(db, "SELECT resolution, count(*) FROM hits WHERE line_no <= 4 GROUP BY 1")) == {
        "clock": 3,
        "event": 1,
    }
    exp = expected_counts(normal)
    timeline = _report(db, "stats", "--delivery", "NL-1")
    rows = timeline["buckets"]
    assert [(r["bucket"], r["opens"], r["clicks"]) for r in rows] == [
        ("-1h", 1, 0),
        ("+0h", 0, 0),
        ("+1h", 0, 0),
        ("+2h", exp["open"], exp["click"]),
    ]
    res = tracklog(db, "report", "delivery", "NL-1", env={"COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    assert "3 clock (dated outside the delivery's window)" in " ".join(res.stdout.split())
    got = _report(db, "delivery", "NL-1")
    assert got["opens_total"] == exp["open"] + 1


def test_clock_window_is_configurable(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("".join(line("/o/NL-1/r0007.gif", ts=ts) for ts in CLOCK_OPENS))
    db = tmp_path / "t.duckdb"
    assert tracklog(db, "ingest", "--manifest", str(_manifest(tmp_path)), str(log)).returncode == 0
    assert _report(db, "delivery", "NL-1")["opens_total"] == 1
    config = tmp_path / "tracklog.toml"
    config.write_text("clock_window_days = [10, 36500]\n")
    # a new window resolves every stored hit again: nine days before and 2100 now count
    res = tracklog(db, "ingest", str(log), env={"TRACKLOG_CONFIG": str(config)})
    assert res.returncode == 0, res.stderr
    assert _report(db, "delivery", "NL-1")["opens_total"] == 3
    config.write_text("clock_window_days = [10, 36500, 1]\n")
    res = tracklog(db, "ingest", str(log), env={"TRACKLOG_CONFIG": str(config)})
    assert res.returncode == 5 and "clock_window_days" in res.stderr


# -- 7. one bad manifest value ----------------------------------------------------------------------


def _doc(**fields: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "delivery": "BAD-1",
        "sent_at": "2026-11-03T08:00:00Z",
        "links": [],
        "recipients": [{"recipient_id": "r1"}],
    }
    doc.update(fields)
    return doc


BAD_VALUES = {
    "sent_at overflow": (
        json.dumps(_doc(sent_at="9999-12-31T23:59:59-12:00")),
        '"sent_at" must be a time in the years 1970-2999 UTC (got "9999-12-31T23:59:59-12:00")',
    ),
    "deeply nested": (
        '{"delivery": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "invalid JSON (nested too deeply)",
    ),
    "NaN": (
        json.dumps(_doc()).replace('"links": []', '"links": NaN'),
        "invalid JSON (NaN is not a JSON value)",
    ),
    "Infinity": (
        json.dumps(_doc()).replace('"links": []', '"links": -Infinity'),
        "invalid JSON (-Infinity is not a JSON value)",
    ),
    "duplicate key": (
        json.dumps(_doc()).replace('"links": []', '"links": [], "delivery": "OTHER"'),
        'invalid JSON (key "delivery" appears twice in one object)',
    ),
    "javascript link": (
        json.dumps(_doc(links=[{"id": "a", "url": "https:javascript:alert(1)"}])),
        'link #1: "url" must be an absolute http or https URL with a host (got "https:javascript:alert(1)")',
    ),
    "no host": (
        json.dumps(_doc(links=[{"id": "a", "url": "https:///x"}])),
        "must be an absolute http or https URL",
    ),
    "mailto": (
        json.dumps(_doc(links=[{"id": "a", "url": "mailto:x@example.com"}])),
        "must be an absolute http",
    ),
    "dot id": (json.dumps(_doc(delivery="..")), '"delivery" is . or .. (got "..")'),
    "dot recipient": (json.dumps(_doc(recipients=[{"recipient_id": "."}])), "recipient_id is . or .."),
    "dot link": (json.dumps(_doc(links=[{"id": ".", "url": "https://x.example/"}])), '"id" is . or ..'),
    "recipients outside": (
        json.dumps(_doc(recipients="../../../../../../etc/passwd")),
        '"../../../../../../etc/passwd" is outside the manifest\'s folder',
    ),
    "recipients absolute": (
        json.dumps(_doc(recipients="/etc/passwd")),
        '"/etc/passwd" is outside the manifest',
    ),
    "content outside": (
        json.dumps(_doc(content="../secret.html")),
        '"../secret.html" is outside the manifest',
    ),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_one_bad_manifest_value_does_not_stop_the_run(tmp_path: Path, case: str) -> None:
    text, expected = BAD_VALUES[case]
    folder = tmp_path / "manifests"
    folder.mkdir()
    bad = folder / "bad.json"
    bad.write_text(text)
    (tmp_path / "secret.html").write_text("<p>not for the manifest</p>")
    good = _manifest(folder)
    lines = tracking_lines(100, seed=41)
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    db = tmp_path / "t.duckdb"
    res = tracklog(db, "ingest", "--manifest", str(bad), "--manifest", str(good), str(log))
    assert res.returncode == 1
    errors = [x for x in res.stderr.splitlines() if x.startswith("Error: ")]
    assert len(errors) == 2 and errors[0].startswith(f"Error: manifest {bad}: ")
    assert expected in errors[0]
    assert "Traceback" not in res.stderr and "root:" not in res.stderr  # nothing of /etc/passwd
    assert q(db, "SELECT delivery_id FROM deliveries") == [("NL-1",)]
    exp = expected_counts(lines)
    assert dict(q(db, "SELECT kind, count(*) FROM hits GROUP BY 1")) == {
        "open": exp["open"],
        "click": exp["click"],
    }
    assert q(db, "SELECT finished_at IS NOT NULL, exit_code FROM runs") == [(True, 1)]


# -- 8. a wrong --db ---------------------------------------------------------------------------------


def _foreign_duckdb(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE invoices (id INTEGER, amount DECIMAL(10, 2)); INSERT INTO invoices VALUES (1, 9.5)"
    )
    con.close()


def _newer_tracklog(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    con.close()


def _sqlite(path: Path) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (a)")
    con.commit()
    con.close()


WRONG_DBS = {
    "foreign duckdb": (_foreign_duckdb, "is a DuckDB database of another program"),
    "newer schema": (_newer_tracklog, "was written by a newer tracklog (schema 99"),
    "sqlite": (_sqlite, "a SQLite database"),
    "a log file": (lambda p: p.write_text("".join(tracking_lines(3))), "not a DuckDB database"),
}


@pytest.mark.parametrize("case", list(WRONG_DBS))
@pytest.mark.parametrize("command", [("ingest", "LOG"), ("status",), ("report", "deliveries"), ("reverify",)])
def test_a_wrong_db_is_never_written(tmp_path: Path, case: str, command: tuple[str, ...]) -> None:
    make, expected = WRONG_DBS[case]
    folder = tmp_path / "other"
    folder.mkdir()
    db = folder / "their.db"
    make(db)
    before = db.read_bytes()
    log = tmp_path / "access.log"
    log.write_text("".join(tracking_lines(50)))
    # no network: an attempt to download a DuckDB extension (for SQLite) would fail differently
    env = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    res = tracklog(db, *(str(log) if a == "LOG" else a for a in command), env=env)
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith(f"Error: database {db}") and expected in res.stderr
    assert "nothing was written" in res.stderr
    assert db.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["their.db"]  # no lock, wait or WAL file either


# -- smaller ones: disk full, damaged database, read-only folder, FIFO -------------------------------


@contextmanager
def _tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` (tmpfs; needs root) at `mnt`."""
    mnt.mkdir()
    if subprocess.run(
        check=False,
        args=["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
        capture_output=True,
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "disk", "3M") as mnt:  # to fill up
        yield mnt


@pytest.fixture
def roomy_disk(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "disk", "64M") as mnt:  # to remount read-only
        yield mnt


def test_disk_full_is_a_data_error_naming_the_cause(tmp_path: Path, small_disk: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("".join(tracking_lines(100_000, seed=51)))  # 22 MB of lines: more than the disk holds
    small = tmp_path / "small.log"
    small.write_text("".join(tracking_lines(10, seed=52)))
    res = tracklog(small_disk / "t.duckdb", "ingest", str(log), str(small))
    assert res.returncode == 1
    assert "No space left on device" in res.stderr and "free disk space" in res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr


def test_manifest_on_a_full_disk_reports_the_cause(tmp_path: Path, small_disk: Path) -> None:
    recipients = [{"recipient_id": f"r{i:07d}", "email": f"user{i}@example.com"} for i in range(200_000)]
    big = tmp_path / "big.json"
    big.write_text(
        json.dumps(
            {"delivery": "BIG", "sent_at": "2026-11-03T08:00:00Z", "links": [], "recipients": recipients}
        )
    )
    res = tracklog(small_disk / "t.duckdb", "ingest", "--manifest", str(big))
    assert res.returncode == 1
    assert "No space left on device" in res.stderr
    assert "rollback" not in res.stderr.lower() and "internal error" not in res.stderr


def _built_db(tmp_path: Path) -> Path:
    db = tmp_path / "t.duckdb"
    log = tmp_path / "access.log"
    log.write_text("".join(tracking_lines(20_000, seed=53)))
    assert tracklog(db, "ingest", "--manifest", str(_manifest(tmp_path)), str(log)).returncode == 0
    return db


def test_damaged_database_file_is_a_data_error(tmp_path: Path) -> None:
    db = _built_db(tmp_path)
    data = db.read_bytes()
    # every block after the headers damaged (seen at open), or 10-60% of the file (at query time)
    header = 3 * 4096
    lo, hi = (len(data) // 10) // 4096 * 4096, (len(data) * 6 // 10) // 4096 * 4096
    damaged = {
        "blocks": data[:header] + bytes(b ^ 0x5A for b in data[header:]),
        "middle": data[:lo] + bytes(b ^ 0x5A for b in data[lo:hi]) + data[hi:],
    }
    for name, content in damaged.items():
        db.write_bytes(content)
        for command in (("status",), ("report", "deliveries"), ("recipient", "r0001"), ("report", "stats")):
            res = tracklog(db, *command)
            assert res.returncode == 1, (name, command, res.stderr)
            [message] = res.stderr.splitlines()
            assert message.startswith("Error: ") and "the database file is damaged" in message
            assert "restore it from a backup" in message


def test_read_only_folder_is_a_data_error(tmp_path: Path, roomy_disk: Path) -> None:
    db = _built_db(tmp_path)
    (roomy_disk / "t.duckdb").write_bytes(db.read_bytes())
    assert (
        subprocess.run(
            check=False, args=["mount", "-o", "remount,ro", str(roomy_disk)], capture_output=True
        ).returncode
        == 0
    )
    res = tracklog(roomy_disk / "t.duckdb", "ingest", str(tmp_path / "access.log"))
    assert res.returncode == 1
    assert "cannot create its lock file" in res.stderr and "Read-only file system" in res.stderr
    res = tracklog(roomy_disk / "t.duckdb", "report", "deliveries", "--format", "json")  # reading works
    assert res.returncode == 0 and json.loads(res.stdout)[0]["delivery"] == "NL-1"


def test_a_fifo_without_writer_is_skipped_not_waited_for(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    log = tmp_path / "access.log"
    lines = tracking_lines(30, seed=54)
    log.write_text("".join(lines))
    db = tmp_path / "t.duckdb"
    res = tracklog(db, "ingest", str(fifo), str(log))  # would block forever (timeout: 120 s)
    assert res.returncode == 1
    assert f"Error: {fifo}: a named pipe (FIFO), not read" in res.stderr
    exp = expected_counts(lines)
    assert dict(q(db, "SELECT kind, count(*) FROM hits GROUP BY 1")) == {
        "open": exp["open"],
        "click": exp["click"],
    }
    # and the lock was released: another ingest runs at once
    assert tracklog(db, "ingest", "--wait", "0", str(log)).returncode == 0


# -- fuzz: the manifest loader -------------------------------------------------------------------------


def test_manifest_fuzz_seeds_hold() -> None:
    import fuzz_manifest

    for seed in fuzz_manifest.SEEDS:
        fuzz_manifest.check(seed)


@pytest.mark.fuzz
def test_manifest_fuzz_target(tmp_path: Path) -> None:
    """The atheris fuzz target of the manifest loader, for a bounded number of inputs."""
    pytest.importorskip("atheris")
    import fuzz_manifest

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(fuzz_manifest.SEEDS):
        (corpus / f"seed{i}").write_bytes(seed)
    script = Path(__file__).resolve().parent / "fuzz_manifest.py"
    args = [sys.executable, str(script), "-atheris_runs=3000", "-max_len=2000", "-seed=1", str(corpus)]
    run = subprocess.run(args, check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-5000:]
    assert "Done 3000 " in run.stderr


def test_several_keys_both_parse_paths_identical() -> None:
    """The compiled pass and the SQL verify against several keys alike, column for column."""
    from fuzz_fastlog import _pure

    from tracklog.ingest.engine import CHUNK_COLUMNS, Ingester, make_chunk
    from tracklog.ingest.formats import resolve_format

    keys = [b"k-newest", b"k-older", b"k-oldest"]
    rnd = random.Random(9)
    lines = []
    for i in range(400):
        path = rnd.choice([f"/o/D/r{i}.gif", f"/c/D/hero/r{i}", f"/m/D/r{i}", f"/u/D/r{i}"])
        secret = rnd.choice([*keys, b"unknown"])
        query = rnd.choice(
            [
                f"s={sig(path, secret)}",
                f"a=1&s={sig(path, secret)}",
                "s=short",
                None,
                f"s={sig(path, secret)}x",
            ]
        )
        lines.append(line(path, query=query))
    buf = "".join(lines).encode()
    rows = {}
    for fast in (True, False):
        with _pure(not fast):
            ingester = Ingester(
                duckdb.connect(),
                resolve_format("combined", {}),
                secret=keys,
                verify_signatures=True,
                max_bad_ratio=1,
            )
        assert (ingester._fast is not None) == fast
        ingester._parse_chunk(make_chunk(buf, 0, 0, ingester._fast))
        rows[fast] = ingester.con.execute(
            f"SELECT {', '.join(CHUNK_COLUMNS)} FROM tl_chunk ORDER BY line_no"
        ).fetchall()
    assert rows[True] == rows[False]
    verdicts = [r[-1] for r in rows[True]]
    expected = []  # independently: which key, if any, made each line's signature
    for text in lines:
        target = text.split('"')[1].split(" ")[1]
        path, _, query = target.partition("?")
        given = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("s") if query else None
        if not given:
            expected.append("missing")
        else:
            expected.append("valid" if any(sig(path, k) == given for k in keys) else "invalid")
    assert verdicts == expected
    assert {"valid", "invalid", "missing"} <= set(verdicts)
