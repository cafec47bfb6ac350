"""Readers while an ingest writes: real processes on a real DuckDB file. A reader started while a
writer holds the file waits (saying so on a terminal) and gets in at the writer's next hand-off;
reports and status never fail at default settings during a real multi-commit ingest; --wait 0
gives up at once with exit code 3; every command that opens the database takes --wait."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click
import duckdb
import pytest
from click.testing import CliRunner
from logmaker import SECRET, expected_counts, tracking_lines

from tracklog.cli import cli
from tracklog.errors import ExitCode

# A writer process: like an ingest it brings the derived tables up to date, then it commits a row
# into `runs` every 0.1 s until the stop file appears, handing the database to waiting readers
# after each commit ("hand-off") or never ("hold").
WRITER = """
import datetime as dt, sys, time
from pathlib import Path
from tracklog import derived
from tracklog.store import writer_session

db, stop, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with writer_session(db, wait=10) as session:
    derived.sync(session.con)
    n = 0
    while not stop.exists():
        n += 1
        session.con.execute("INSERT INTO runs (run_id, started_at) VALUES (?, ?)", [n, dt.datetime(2026, 1, 1)])
        print(n, flush=True)
        time.sleep(0.1)
        if mode == "hand-off":
            session.hand_off()
"""


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKLOG_")}
    for key in ("TTY_COMPATIBLE", "FORCE_COLOR", "FORCE_TERMINAL"):
        env.pop(key, None)
    return {**env, "TRACKLOG_CONFIG": "", "TRACKLOG_SECRET": SECRET.decode(), **extra}


def tracklog(db: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tracklog", "--db", str(db), *args]


class Lines:
    """The stdout lines of a child process, read in a thread so that waiting has a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.queue.put(line)

    def next(self, timeout: float = 60) -> str:
        return self.queue.get(timeout=timeout).strip()


class Writer:
    def __init__(self, tmp_path: Path, db: Path, mode: str) -> None:
        self.stop = tmp_path / "stop"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(self.stop), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        self.lines = Lines(self.proc)
        self.committed = int(self.lines.next())  # it holds the file from here on

    def wait_past(self, n: int) -> None:
        """Until the writer committed row n + 1: it has the file again after n."""
        while self.committed <= n:
            self.committed = int(self.lines.next())

    def finish(self) -> None:
        self.stop.touch()
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "t.duckdb"


@pytest.fixture
def writer(request: pytest.FixtureRequest, tmp_path: Path, db: Path) -> Iterator[Writer]:
    w = Writer(tmp_path, db, request.param)
    try:
        yield w
    finally:
        if w.proc.poll() is None:
            w.finish()


def run_on_terminal(cmd: list[str], env: dict[str, str], timeout: float = 90) -> tuple[int, str, str]:
    """Run cmd with its stderr on a pseudo-terminal, as from a shell: (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env, text=True)
    os.close(slave)
    chunks: list[bytes] = []

    def pump() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=timeout)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("writer", ["hand-off"], indirect=True)
def test_reader_gets_in_at_the_writers_hand_off(writer: Writer, db: Path) -> None:
    code, out, err = run_on_terminal(tracklog(db, "status", "--format", "json"), child_env())
    assert code == ExitCode.OK, err
    assert writer.proc.poll() is None  # let in by a hand-off: the writer still runs
    assert f"waiting for the ingest (pid {writer.proc.pid}) to commit..." in err
    seen = max(r["run_id"] for r in json.loads(out)["last_runs"])
    assert seen >= 1
    writer.wait_past(seen)  # and the writer took the file back and went on committing
    writer.finish()
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchall()[0][0] > seen
    finally:
        con.close()


@pytest.mark.parametrize("writer", ["hand-off"], indirect=True)
def test_quiet_or_piped_reader_waits_silently(writer: Writer, db: Path) -> None:
    code, _, err = run_on_terminal(tracklog(db, "--quiet", "report", "deliveries"), child_env())
    assert (code, err) == (ExitCode.OK, "")
    proc = subprocess.run(
        tracklog(db, "status"), capture_output=True, text=True, env=child_env(), timeout=90, check=False
    )
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert proc.stderr == ""


def test_readers_never_fail_during_a_multi_commit_ingest(tmp_path: Path, db: Path) -> None:
    """Some 13 chunks, each committed then held for 0.25 s before the hand-off, while a report
    and status run again and again at default settings (no --wait, no config)."""
    lines = tracking_lines(12000, seed=21)
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    env = child_env(TRACKLOG_CHUNK_BYTES="200000", TRACKLOG_FAULT_SLEEP_AFTER_COMMIT="0.25")
    ingest = subprocess.Popen(
        tracklog(db, "--quiet", "ingest", str(log)), env=env, stderr=subprocess.PIPE, text=True
    )
    results: list[tuple[list[str], subprocess.CompletedProcess[str]]] = []
    # Readers start once the ingest does: before that there is no database at the path, which a
    # report reports as such (exit 4) rather than as an empty database.
    started = time.monotonic()
    while not db.exists() and ingest.poll() is None and time.monotonic() - started < 60:
        time.sleep(0.02)

    def read_repeatedly(*args: str) -> None:
        while ingest.poll() is None:
            proc = subprocess.run(
                tracklog(db, *args), capture_output=True, text=True, env=child_env(), check=False
            )
            results.append((list(args), proc))

    readers = [
        threading.Thread(target=read_repeatedly, args=args)
        for args in (("report", "deliveries"), ("status", "--format", "json"))
    ]
    for t in readers:
        t.start()
    _, ingest_err = ingest.communicate(timeout=300)
    for t in readers:
        t.join(timeout=300)
    assert ingest.returncode == ExitCode.OK, ingest_err

    assert len(results) >= 2
    for args, proc in results:
        assert proc.returncode == ExitCode.OK, (args, proc.stderr)
    # status saw the log part-way: the readers got in between the ingest's commits
    progress = [
        src["lines"]
        for args, proc in results
        if args[0] == "status"
        for src in json.loads(proc.stdout)["sources"]
    ]
    assert any(0 < n < len(lines) for n in progress), progress
    exp = expected_counts(lines)
    con = duckdb.connect(str(db), read_only=True)
    try:
        stored = dict(con.execute("SELECT kind, count(*) FROM hits GROUP BY kind").fetchall())
    finally:
        con.close()
    assert stored == {"open": exp["open"], "click": exp["click"]}  # nothing lost or doubled by hand-offs


# A reader that keeps the database open until its stdin closes.
STUBBORN_READER = """
import sys
from pathlib import Path
from tracklog.store import open_reader

with open_reader(Path(sys.argv[1])) as con:
    print(con.execute("SELECT count(*) FROM hits").fetchall()[0][0], flush=True)
    sys.stdin.read()
"""


def test_a_reader_that_keeps_the_file_stops_the_ingest_cleanly(tmp_path: Path, db: Path) -> None:
    """A reader let in at a hand-off that never closes: the ingest gives up taking the file back
    (after --wait, at least 5 s) with exit code 3 and one line; the next run completes the log."""
    lines = tracking_lines(6000, seed=22)
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    env = child_env(TRACKLOG_CHUNK_BYTES="200000", TRACKLOG_FAULT_SLEEP_AFTER_COMMIT="1")
    ingest = subprocess.Popen(
        tracklog(db, "--quiet", "ingest", "--wait", "0", str(log)), env=env, stderr=subprocess.PIPE, text=True
    )
    while not db.exists():
        assert ingest.poll() is None, ingest.communicate()
        time.sleep(0.05)
    reader = subprocess.Popen(
        [sys.executable, "-c", STUBBORN_READER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    seen = int(Lines(reader).next())  # it got in at a hand-off
    _, err = ingest.communicate(timeout=120)
    reader.communicate(input="", timeout=60)
    assert reader.returncode == 0
    assert ingest.returncode == ExitCode.LOCK_BUSY, err
    assert err.startswith("Error: ") and err.count("\n") == 1
    assert "a reader let in between commits has it open" in err and "--wait" in err
    exp = expected_counts(lines)
    assert 0 < seen < exp["open"] + exp["click"]
    proc = subprocess.run(
        tracklog(db, "--quiet", "ingest", str(log)),
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == ExitCode.OK, proc.stderr
    con = duckdb.connect(str(db), read_only=True)
    try:
        stored = dict(con.execute("SELECT kind, count(*) FROM hits GROUP BY kind").fetchall())
    finally:
        con.close()
    assert stored == {"open": exp["open"], "click": exp["click"]}


MANIFEST = {"delivery": "NL1", "sent_at": "2026-11-03T09:00:00Z", "links": [], "recipients": [{"recipient_id": "r1"}]}  # fmt: skip


@pytest.mark.parametrize("writer", ["hold"], indirect=True)
@pytest.mark.parametrize(
    "args",
    [
        ["report", "deliveries"],
        ["report", "delivery", "NL1"],
        ["report", "stats"],
        ["recipient", "r1"],
        ["status"],
        ["link", "--delivery", "NL1", "--base-url", "https://t.example.com"],
        ["ingest", "--manifest", "{manifest}"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_wait_zero_gives_up_at_once(writer: Writer, tmp_path: Path, db: Path, args: list[str]) -> None:
    manifest = tmp_path / "nl1.json"
    manifest.write_text(json.dumps(MANIFEST))
    args = [a.replace("{manifest}", str(manifest)) for a in args]
    env = {"TRACKLOG_CONFIG": "", "TRACKLOG_SECRET": SECRET.decode(), "TRACKLOG_WAIT": None}
    res = CliRunner().invoke(cli, ["--db", str(db), *args, "--wait", "0"], env=env)
    assert res.exit_code == ExitCode.LOCK_BUSY, res.output
    assert res.stdout == ""
    assert res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1
    assert f"pid {writer.proc.pid}" in res.stderr and "waited 0s" in res.stderr
    assert "--wait" in res.stderr


@pytest.mark.parametrize("writer", ["hold"], indirect=True)
def test_wait_from_env_and_flag(writer: Writer, db: Path) -> None:
    env = {"TRACKLOG_CONFIG": "", "TRACKLOG_WAIT": "0"}
    res = CliRunner().invoke(cli, ["--db", str(db), "report", "deliveries"], env=env)
    assert res.exit_code == ExitCode.LOCK_BUSY and "waited 0s" in res.stderr
    res = CliRunner().invoke(cli, ["--db", str(db), "status", "--wait", "0.3"], env=env)
    assert res.exit_code == ExitCode.LOCK_BUSY and "waited 0.3s" in res.stderr  # the flag wins
    res = CliRunner().invoke(cli, ["--db", str(db), "status"], env={**env, "TRACKLOG_WAIT": "soon"})
    assert res.exit_code == ExitCode.CONFIG_ERROR and "TRACKLOG_WAIT" in res.stderr


def test_hand_off_keeps_temp_tables_and_is_free_without_readers(db: Path) -> None:
    from tracklog.store import writer_session

    with writer_session(db, wait=1) as session:
        session.con.execute("CREATE TEMP TABLE scratch AS SELECT 42 AS x")
        session.hand_off()  # nobody waits: nothing happens
        session.con.execute("INSERT INTO runs (run_id, started_at) VALUES (1, ?)", [dt.datetime(2026, 1, 1)])
        assert session.con.execute("SELECT x FROM scratch").fetchall() == [(42,)]
        assert session.con.execute("SELECT current_database()").fetchall() == [("tl",)]


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)  # imports the command's module (see LAZY_COMMANDS)
        if isinstance(cmd, click.Group):
            yield from leaf_commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("path", list(leaf_commands(cli)), ids=" ".join)
def test_every_command_takes_wait(path: tuple[str, ...]) -> None:
    res = CliRunner().invoke(cli, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "--wait SECONDS" in res.stdout
    res = CliRunner().invoke(cli, [*path, "--wait", "-1"])
    assert res.exit_code == ExitCode.USAGE_ERROR and "--wait" in res.stderr
