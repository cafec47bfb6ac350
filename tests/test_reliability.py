"""Regression tests of issue 12 (trust under attack and accident): damaged inputs, wrong secrets
and key rotation, absurd timestamps, bad manifest values, a wrong --db, and the smaller failures.
Real files, real processes, a real DuckDB file; expected figures computed from the test data."""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from logmaker import SECRET, expected_counts, line, sig, tracking_lines

ENV = {**os.environ, "TRACKLOG_SECRET": SECRET.decode(), "TRACKLOG_CONFIG": ""}


def tracklog(db: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A real `tracklog` process."""
    return subprocess.run(
        [sys.executable, "-m", "tracklog", "--db", str(db), *args],
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
    parts = [text[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
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
    assert dict(q(db, "SELECT kind, count(*) FROM hits GROUP BY kind")) == {"open": exp["open"], "click": exp["click"]}
    assert q(db, HIT_ROWS) == q(alone, HIT_ROWS)  # nothing lost, nothing doubled
    assert q(db, "SELECT count(*), max(byte_offset) FROM sources") == [(1, len(text))]


def test_damaged_gzip_on_stdin_keeps_nothing_unverified(tmp_path: Path) -> None:
    lines = tracking_lines(5_000, seed=13)
    text = "".join(lines).encode()
    db = tmp_path / "t.duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "tracklog", "--db", str(db), "ingest", "-"],
        env={**ENV, "TRACKLOG_CHUNK_BYTES": str(32 << 10)},
        input=_flip(gzip.compress(text), 0.5),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 1 and b"corrupt gzip data" in proc.stderr
    assert q(db, "SELECT count(*) FROM hits")[0][0] == 0
    proc = subprocess.run(
        [sys.executable, "-m", "tracklog", "--db", str(db), "ingest", "-"],
        env={**ENV, "TRACKLOG_CHUNK_BYTES": str(32 << 10)},
        input=gzip.compress(text),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    exp = expected_counts(lines)
    assert dict(q(db, "SELECT kind, count(*) FROM hits GROUP BY kind")) == {"open": exp["open"], "click": exp["click"]}
