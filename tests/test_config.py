"""Settings through the real CLI: flag > TRACKLOG_* environment > tracklog.toml > default, for the
database path, the config file itself, the signing secret, named log formats, max_bad_ratio and
wait. Real config files in tmp_path, a real DuckDB file; every run starts in tmp_path with the
TRACKLOG_* variables of the outer environment removed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner, Result
from logmaker import SECRET, line, sig

from tracklog.cli import cli
from tracklog.store import open_writer

FILE_SECRET = b"file-secret"
COMBINED = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)
TIMED = COMBINED + " rt=$request_time"
MANIFEST = {
    "delivery": "NL1",
    "sent_at": "2026-11-03T09:00:00Z",
    "links": [],
    "recipients": [{"recipient_id": "r1"}],
}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI with only the TRACKLOG_* variables given in `env` set."""
    base: dict[str, str | None] = {"TRACKLOG_DB": None, "TRACKLOG_CONFIG": None, "TRACKLOG_SECRET": None}
    return CliRunner().invoke(cli, list(args), env={**base, **(env or {})}, catch_exceptions=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def manifest(tmp_path: Path) -> Path:
    return write(tmp_path / "m" / "nl1.json", json.dumps(MANIFEST))


def duckdb_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.duckdb"))


def q(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def assert_config_error(res: Result, *fragments: str) -> None:
    assert res.exit_code == 5, res.stderr
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("Error: ")
    for fragment in fragments:
        assert fragment in res.stderr


# --- the database path ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "env", "config_db", "expected"),
    [
        (None, None, None, "tracklog.duckdb"),  # default: in the working directory
        (None, None, "from-config.duckdb", "conf/from-config.duckdb"),  # relative to the config file
        (None, "from-env.duckdb", "from-config.duckdb", "from-env.duckdb"),  # env beats config
        ("from-flag.duckdb", "from-env.duckdb", "from-config.duckdb", "from-flag.duckdb"),  # flag beats all
        ("from-flag.duckdb", None, None, "from-flag.duckdb"),
    ],
    ids=["default", "config", "env-over-config", "flag-over-env", "flag-over-default"],
)
def test_db_path_precedence(
    tmp_path: Path, flag: str | None, env: str | None, config_db: str | None, expected: str
) -> None:
    args: list[str] = []
    conf = write(tmp_path / "conf" / "tracklog.toml", f'db = "{config_db}"\n' if config_db else "")
    args += ["--config", str(conf.relative_to(tmp_path))]
    if flag:
        args += ["--db", flag]
    res = run(
        *args, "ingest", "--manifest", str(manifest(tmp_path)), env={"TRACKLOG_DB": env} if env else None
    )
    assert res.exit_code == 0, res.stderr
    assert (res.stdout, res.stderr) == ("", "")
    assert duckdb_files(tmp_path) == [Path(expected)]
    assert q(tmp_path / expected, "SELECT delivery_id FROM deliveries") == [("NL1",)]


def test_db_from_an_absolute_path_in_the_config(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "abs.duckdb"
    target.parent.mkdir()
    conf = write(tmp_path / "conf" / "tracklog.toml", f"db = {json.dumps(str(target))}\n")
    res = run("--config", str(conf), "ingest", "--manifest", str(manifest(tmp_path)))
    assert res.exit_code == 0, res.stderr
    assert duckdb_files(tmp_path) == [Path("elsewhere/abs.duckdb")]


# --- which config file ----------------------------------------------------------------------


def _configs(tmp_path: Path) -> None:
    write(tmp_path / "tracklog.toml", 'db = "auto.duckdb"\n')
    write(tmp_path / "env" / "env.toml", 'db = "env.duckdb"\n')
    write(tmp_path / "flag" / "flag.toml", 'db = "flag.duckdb"\n')


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, None, "auto.duckdb"),  # ./tracklog.toml found in the working directory
        (None, "", "auto.duckdb"),  # TRACKLOG_CONFIG set but empty: as if unset
        (None, "env/env.toml", "env/env.duckdb"),  # TRACKLOG_CONFIG beats ./tracklog.toml
        ("flag/flag.toml", "env/env.toml", "flag/flag.duckdb"),  # --config beats TRACKLOG_CONFIG
    ],
    ids=["auto-discovery", "empty-env", "env", "flag"],
)
def test_config_file_choice(tmp_path: Path, flag: str | None, env: str | None, expected: str) -> None:
    _configs(tmp_path)
    args = ["--config", flag] if flag else []
    res = run(
        *args,
        "ingest",
        "--manifest",
        str(manifest(tmp_path)),
        env={"TRACKLOG_CONFIG": env} if env is not None else None,
    )
    assert res.exit_code == 0, res.stderr
    assert duckdb_files(tmp_path) == [Path(expected)]


def test_no_config_file_anywhere_uses_defaults(tmp_path: Path) -> None:
    res = run("ingest", "--manifest", str(manifest(tmp_path)))
    assert res.exit_code == 0, res.stderr
    assert duckdb_files(tmp_path) == [Path("tracklog.duckdb")]


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["--config", "nope.toml"], None, ["nope.toml", "not found"]),
        ([], {"TRACKLOG_CONFIG": "nope.toml"}, ["nope.toml", "TRACKLOG_CONFIG"]),
    ],
    ids=["flag", "env"],
)
def test_missing_config_file(
    tmp_path: Path, args: list[str], env: dict[str, str] | None, fragments: list[str]
) -> None:
    res = run(*args, "ingest", "--manifest", str(manifest(tmp_path)), env=env)
    assert_config_error(res, *fragments)
    assert duckdb_files(tmp_path) == []


# --- broken config files --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('db = "x.duckdb\n', ["invalid TOML", "line 1"]),  # unterminated string
        ("db = \n", ["invalid TOML"]),
        ('[log_formats]\nmine = "$remote_addr"\n[log_formats]\n', ["invalid TOML"]),  # table twice
        ('db = "x.duckdb"\ndatabase = "y.duckdb"\n', ["unknown key 'database'"]),
        ('[ingest]\nwait = 3\n', ["unknown key 'ingest'"]),
        ('wait = "soon"\n', ["'wait'", "wrong type"]),
        ("max_bad_ratio = true\n", ["'max_bad_ratio'", "wrong type"]),
        ("verify_signatures = 1\n", ["'verify_signatures'", "wrong type"]),
        ("[log_formats]\nmine = 3\n", ["log_formats.mine"]),
    ],
    ids=["syntax", "no-value", "duplicate-table", "unknown-key", "unknown-table", "wait-type",
         "ratio-type", "verify-type", "format-type"],
)  # fmt: skip
@pytest.mark.parametrize("discovered", [False, True], ids=["--config", "./tracklog.toml"])
def test_broken_config_is_a_one_line_config_error(
    tmp_path: Path, text: str, fragments: list[str], discovered: bool
) -> None:
    conf = write(tmp_path / "tracklog.toml", text)
    args = [] if discovered else ["--config", str(conf)]
    for command in (["status"], ["ingest", "--manifest", str(manifest(tmp_path))]):
        res = run(*args, *command)
        assert_config_error(res, f"Error: config {conf.name if discovered else conf}: ", *fragments)
    assert duckdb_files(tmp_path) == []


# --- the signing secret ---------------------------------------------------------------------


def signed_log(path: Path, secret: bytes, n: int = 3) -> Path:
    lines = []
    for i in range(n):
        p = f"/o/NL1/r{i}.gif"
        lines.append(line(p, query=f"s={sig(p, secret)}"))
    return write(path, "".join(lines))


def test_secret_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    write(
        tmp_path / "conf" / "keys" / "secret.txt", FILE_SECRET.decode() + "\n"
    )  # the newline is not part of it
    conf = write(tmp_path / "conf" / "tracklog.toml", 'db = "t.duckdb"\nsecret_file = "keys/secret.txt"\n')
    log = signed_log(tmp_path / "access.log", FILE_SECRET)
    res = run("--config", str(conf), "ingest", str(log))
    assert res.exit_code == 0, res.stderr
    assert (res.stdout, res.stderr) == ("", "")
    assert q(tmp_path / "conf" / "t.duckdb", "SELECT sig_status, count(*) FROM hits GROUP BY ALL") == [
        ("valid", 3)
    ]


def test_tracklog_secret_overrides_the_secret_file(tmp_path: Path) -> None:
    write(tmp_path / "secret.txt", FILE_SECRET.decode())
    conf = write(tmp_path / "tracklog.toml", 'secret_file = "secret.txt"\n')
    env_signed = signed_log(tmp_path / "env.log", SECRET, n=2)
    file_signed = signed_log(tmp_path / "file.log", FILE_SECRET, n=3)
    res = run("--config", str(conf), "--db", "t.duckdb", "ingest", str(env_signed), str(file_signed),
              env={"TRACKLOG_SECRET": SECRET.decode()})  # fmt: skip
    assert res.exit_code == 0, res.stderr
    rows = q(tmp_path / "t.duckdb", "SELECT s.path, h.sig_status, count(*) FROM hits h JOIN sources s USING (source_id) "
             "GROUP BY ALL ORDER BY ALL")  # fmt: skip
    assert [(Path(p).name, st, n) for p, st, n in rows] == [
        ("env.log", "valid", 2),
        ("file.log", "invalid", 3),
    ]


@pytest.mark.parametrize(
    ("content", "fragments"),
    [(None, ["secret file", "cannot read"]), ("", ["secret file", "is empty"]), (" \n\n", ["is empty"])],
    ids=["missing", "empty", "blank"],
)
def test_unusable_secret_file(tmp_path: Path, content: str | None, fragments: list[str]) -> None:
    if content is not None:
        write(tmp_path / "conf" / "secret.txt", content)
    conf = write(tmp_path / "conf" / "tracklog.toml", 'secret_file = "secret.txt"\n')
    log = signed_log(tmp_path / "access.log", FILE_SECRET)
    res = run("--config", str(conf), "--db", "t.duckdb", "ingest", str(log))
    assert_config_error(
        res, str(tmp_path / "conf" / "secret.txt") if content is None else "secret.txt", *fragments
    )
    assert duckdb_files(tmp_path) == []


def test_empty_inline_secret_is_an_error(tmp_path: Path) -> None:
    conf = write(tmp_path / "tracklog.toml", 'secret = ""\n')
    log = signed_log(tmp_path / "access.log", b"")
    res = run("--config", str(conf), "--db", "t.duckdb", "ingest", str(log))
    assert_config_error(res, "'secret'", "empty")
    assert duckdb_files(tmp_path) == []


def test_no_secret_refuses_tracking_hits_unless_verification_is_off(tmp_path: Path) -> None:
    log = signed_log(tmp_path / "access.log", SECRET)
    res = run("--db", "t.duckdb", "ingest", str(log))
    assert_config_error(res, "TRACKLOG_SECRET", "verify_signatures = false")
    write(tmp_path / "tracklog.toml", "verify_signatures = false\n")
    res = run("--db", "t.duckdb", "ingest", str(log))
    assert res.exit_code == 0, res.stderr
    assert q(tmp_path / "t.duckdb", "SELECT sig_status, count(*) FROM hits GROUP BY ALL") == [
        ("unchecked", 3)
    ]


# --- named log formats ----------------------------------------------------------------------


def timed_log(path: Path, n: int = 4) -> tuple[Path, list[str]]:
    """Combined lines with ` rt=$request_time` appended; one distinct request time per line."""
    times = [f"0.{i + 1:03d}" for i in range(n)]
    lines = [line(f"/o/NL1/r{i}.gif").rstrip("\n") + f" rt={t}\n" for i, t in enumerate(times)]
    return write(path, "".join(lines)), times


def extras(db: Path) -> list[tuple[str, Any]]:
    return [(kind, json.loads(x) if x else None)
            for kind, x in q(db, "SELECT kind, extra FROM hits ORDER BY line_no")]  # fmt: skip


def test_named_log_format_from_config(tmp_path: Path) -> None:
    write(tmp_path / "tracklog.toml", f'log_format = "timed"\n\n[log_formats]\ntimed = {json.dumps(TIMED)}\n')
    log, times = timed_log(tmp_path / "access.log")
    res = run("--db", "t.duckdb", "ingest", str(log), env={"TRACKLOG_SECRET": SECRET.decode()})
    assert res.exit_code == 0, res.stderr
    assert extras(tmp_path / "t.duckdb") == [("open", {"request_time": t}) for t in times]
    assert q(tmp_path / "t.duckdb", "SELECT count(*) FROM quarantine") == [(0,)]
    assert q(tmp_path / "t.duckdb", "SELECT log_format FROM sources") == [("timed",)]


def test_named_log_format_by_flag(tmp_path: Path) -> None:
    # the config only names the format; the default stays combined until --log-format picks it
    write(tmp_path / "tracklog.toml", f"[log_formats]\ntimed = {json.dumps(TIMED)}\n")
    log, times = timed_log(tmp_path / "access.log")
    res = run(
        "--db",
        "t.duckdb",
        "ingest",
        "--log-format",
        "timed",
        str(log),
        env={"TRACKLOG_SECRET": SECRET.decode()},
    )
    assert res.exit_code == 0, res.stderr
    assert extras(tmp_path / "t.duckdb") == [("open", {"request_time": t}) for t in times]


def test_log_format_flag_overrides_the_config(tmp_path: Path) -> None:
    write(tmp_path / "tracklog.toml", f'log_format = "timed"\n[log_formats]\ntimed = {json.dumps(TIMED)}\n')
    log = signed_log(tmp_path / "access.log", SECRET)  # plain combined lines
    res = run("--db", "t.duckdb", "ingest", "--log-format", "combined", str(log),
              env={"TRACKLOG_SECRET": SECRET.decode()})  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert extras(tmp_path / "t.duckdb") == [("open", None)] * 3


def test_unknown_log_format_name(tmp_path: Path) -> None:
    write(tmp_path / "tracklog.toml", f"[log_formats]\ntimed = {json.dumps(TIMED)}\n")
    log, _ = timed_log(tmp_path / "access.log")
    res = run(
        "--db",
        "t.duckdb",
        "ingest",
        "--log-format",
        "timd",
        str(log),
        env={"TRACKLOG_SECRET": SECRET.decode()},
    )
    assert res.exit_code == 2
    assert res.stdout == ""
    assert "timd" in res.stderr and "timed" in res.stderr and res.stderr.count("\n") == 1


# --- max_bad_ratio and wait -----------------------------------------------------------------


def half_bad_log(path: Path) -> Path:
    """20 lines, 8 of them garbage: a bad ratio of 8 / 20 = 0.4."""
    good = [line(f"/o/NL1/r{i}.gif") for i in range(12)]
    bad = [f"garbage line {i}\n" for i in range(8)]
    return write(path, "".join(good[:6] + bad + good[6:]))


def test_max_bad_ratio_from_config_and_flag(tmp_path: Path) -> None:
    write(tmp_path / "tracklog.toml", "max_bad_ratio = 0.3\n")
    log = half_bad_log(tmp_path / "access.log")
    env = {"TRACKLOG_SECRET": SECRET.decode()}
    # 0.4 > 0.3 from the config (the default 0.5 would have let it through): rolled back
    res = run("--db", "t.duckdb", "ingest", str(log), env=env)
    assert res.exit_code == 1
    assert res.stdout == ""
    assert "8 of the first 20 lines" in res.stderr and "--log-format" in res.stderr
    db = tmp_path / "t.duckdb"
    assert q(db, "SELECT (SELECT count(*) FROM hits), (SELECT count(*) FROM quarantine), "
                 "(SELECT count(*) FROM sources)") == [(0, 0, 0)]  # fmt: skip
    # the flag overrides the config: 0.4 <= 0.5, 12 hits and 8 lines quarantined
    res = run("--db", "t.duckdb", "ingest", "--max-bad-ratio", "0.5", str(log), env=env)
    assert res.exit_code == 0, res.stderr
    assert q(db, "SELECT (SELECT count(*) FROM hits), (SELECT count(*) FROM quarantine)") == [(12, 8)]


def test_max_bad_ratio_out_of_range_in_config(tmp_path: Path) -> None:
    write(tmp_path / "tracklog.toml", "max_bad_ratio = 1.5\n")
    res = run("--db", "t.duckdb", "ingest", "--manifest", str(manifest(tmp_path)))
    assert_config_error(res, "Error: config tracklog.toml: ", "max_bad_ratio", "1.5")


def test_negative_wait_in_config(tmp_path: Path) -> None:
    write(tmp_path / "tracklog.toml", "wait = -1\n")
    res = run("--db", "t.duckdb", "ingest", "--manifest", str(manifest(tmp_path)))
    assert_config_error(res, "'wait'")


def test_wait_from_config_and_flag(tmp_path: Path) -> None:
    write(tmp_path / "tracklog.toml", "wait = 0.2\n")
    db = tmp_path / "t.duckdb"
    m = str(manifest(tmp_path))
    with open_writer(db, wait=0):  # another ingest holds the writer lock
        res = run("--db", str(db), "ingest", "--manifest", m)
        assert res.exit_code == 3
        assert res.stdout == ""
        assert "waited 0.2s" in res.stderr
        res = run("--db", str(db), "ingest", "--wait", "0.3", "--manifest", m)
        assert res.exit_code == 3
        assert "waited 0.3s" in res.stderr
    res = run("--db", str(db), "ingest", "--manifest", m)
    assert res.exit_code == 0, res.stderr


def test_empty_db_in_config_or_flag(tmp_path: Path) -> None:
    write(tmp_path / "tracklog.toml", 'db = ""\n')
    res = run("ingest", "--manifest", str(manifest(tmp_path)))
    assert_config_error(res, "'db' is empty")
    (tmp_path / "tracklog.toml").unlink()
    res = run("--db", "", "ingest", "--manifest", str(manifest(tmp_path)))
    assert (res.exit_code, res.stdout) == (2, "")
    assert res.stderr.startswith("Error: ") and "--db" in res.stderr and res.stderr.count("\n") == 1
    assert duckdb_files(tmp_path) == []


def test_tz_from_config_and_env(tmp_path: Path) -> None:
    from tracklog.config import load_config

    assert load_config(env={}).tz == "UTC"
    write(tmp_path / "tracklog.toml", 'tz = "Europe/Paris"\n')
    assert load_config(env={}).tz == "Europe/Paris"
    assert load_config(env={"TRACKLOG_TZ": "Asia/Tokyo"}).tz == "Asia/Tokyo"  # env beats config
    write(tmp_path / "tracklog.toml", 'tz = "Europe/Pariss"\n')
    res = run("--db", "t.duckdb", "export", "--out", "out")
    assert_config_error(res, "config tracklog.toml: 'tz'", "Europe/Pariss")
    (tmp_path / "tracklog.toml").unlink()
    res = run("--db", "t.duckdb", "export", "--out", "out", env={"TRACKLOG_TZ": "../../etc/passwd"})
    assert_config_error(res, "TRACKLOG_TZ")


@pytest.mark.parametrize("value", ['"error.log*"', "[1]", '[""]'])
def test_exclude_must_be_a_list_of_globs(tmp_path: Path, value: str) -> None:
    write(tmp_path / "tracklog.toml", f"exclude = {value}\n")
    res = run("--db", "t.duckdb", "ingest", "--manifest", str(manifest(tmp_path)))
    assert_config_error(res, "'exclude'")


def test_wait_before_the_command_and_after_it(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    m = str(manifest(tmp_path))
    with open_writer(db, wait=0):
        res = run("--db", str(db), "--wait", "0.2", "ingest", "--manifest", m)
        assert res.exit_code == 3 and "waited 0.2s" in res.stderr
        res = run("--db", str(db), "--wait", "0.2", "ingest", "--wait", "0.3", "--manifest", m)
        assert res.exit_code == 3 and "waited 0.3s" in res.stderr  # the command's own wins
