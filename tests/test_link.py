"""Signed tracked URLs: the signature vector, the Python API, the bulk SQL path and `tracklog link`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from tracklog.cli import cli
from tracklog.errors import NotFoundError, UsageError
from tracklog.manifest import load_manifest, store_manifest
from tracklog.signing import sign_path, verify_path
from tracklog.store import open_reader, open_writer
from tracklog.tracked_urls import (
    KINDS,
    delivery_targets,
    delivery_urls,
    list_unsubscribe_headers,
    tracked_url,
)

SECRET = b"demo-secret"
BASE = "https://t.example.com"
VECTOR_PATH = "/c/NL-2026-11/hero/r000123"
VECTOR_SIG = "WhPvSB_eoIpWVhhAypsTpg"  # fixed: changing it breaks every URL already sent


def independent_sig(secret: bytes, path: str) -> str:
    digest = hmac.new(secret, path.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def test_signature_vector() -> None:
    assert independent_sig(SECRET, VECTOR_PATH) == VECTOR_SIG
    assert len(VECTOR_SIG) == 22
    assert sign_path(SECRET, VECTOR_PATH) == VECTOR_SIG
    assert verify_path(SECRET, VECTOR_PATH, VECTOR_SIG)
    assert not verify_path(SECRET, "/c/NL-2026-11/hero/r000124", VECTOR_SIG)
    assert not verify_path(SECRET, VECTOR_PATH, VECTOR_SIG[:-1] + "A")
    assert not verify_path(b"other-secret", VECTOR_PATH, VECTOR_SIG)
    assert not verify_path(SECRET, VECTOR_PATH, None)


def test_tracked_url_every_kind() -> None:
    assert (
        tracked_url(BASE, SECRET, "click", "NL-2026-11", "r000123", "hero")
        == f"{BASE}{VECTOR_PATH}?s={VECTOR_SIG}"
    )
    for kind, path in [
        ("open", "/o/NL-2026-11/r000123.gif"),
        ("mirror", "/m/NL-2026-11/r000123"),
        ("unsubscribe", "/u/NL-2026-11/r000123"),
    ]:
        url = tracked_url(BASE + "/", SECRET, kind, "NL-2026-11", "r000123")
        assert url == f"{BASE}{path}?s={independent_sig(SECRET, path)}"


def test_list_unsubscribe_headers() -> None:
    path = "/u/NL-2026-11/r000123"
    assert list_unsubscribe_headers(BASE, SECRET, "NL-2026-11", "r000123") == {
        "List-Unsubscribe": f"<{BASE}{path}?s={independent_sig(SECRET, path)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((BASE, "click", "NL", "r1", None), "a click URL needs a link id"),
        ((BASE, "open", "NL", "r1", "hero"), "a open URL takes no link id"),
        ((BASE, "bounce", "NL", "r1", None), "unknown URL type 'bounce'"),
        ((BASE, "open", "NL 1", "r1", None), "delivery id 'NL 1' has characters outside"),
        ((BASE, "open", "NL", "r/1", None), "recipient id 'r/1' has characters outside"),
        ((BASE, "click", "NL", "r1", "x" * 129), "link id"),
        (
            "https://t.example.com/track",
            "base URL 'https://t.example.com/track' must be the tracking domain's origin",
        ),
        ("t.example.com", "base URL 't.example.com' must be"),
    ],
)
def test_tracked_url_rejects(args: tuple[str, ...] | str, message: str) -> None:
    base, kind, delivery, recipient, link = (
        (args, "open", "NL", "r1", None) if isinstance(args, str) else args
    )
    with pytest.raises(UsageError) as err:
        tracked_url(base, SECRET, kind, delivery, recipient, link)
    assert message in str(err.value)


# -- a stored delivery ---------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    doc = {
        "delivery": "NL-2026-11",
        "sent_at": "2026-11-03T09:00:00Z",
        "links": [
            {"id": "hero", "url": "https://shop.example.com/sale"},
            {"id": "trap", "url": "https://t.example.com/x", "category": "trap"},
        ],
        "recipients": [{"recipient_id": "r000123"}, {"recipient_id": "a1", "status": "failed"}],
    }
    (tmp_path / "nl.json").write_text(json.dumps(doc))
    path = tmp_path / "t.duckdb"
    with open_writer(path) as con:
        store_manifest(con, load_manifest(tmp_path / "nl.json"))
    return path


def test_bulk_sql_urls_match_python(db: Path) -> None:
    with open_reader(db) as con:
        targets = delivery_targets(con, "NL-2026-11", KINDS)
        rows = pa.Table.from_batches(list(delivery_urls(con, BASE, SECRET, targets, delivery="NL-2026-11")))
    expected = [
        {
            "recipient_id": r,
            "type": kind,
            "link_id": link,
            "url": tracked_url(BASE, SECRET, kind, "NL-2026-11", r, link),
            "landing_url": None,  # no web-tracking link in this manifest
        }
        for r in ("a1", "r000123")
        for kind, link in [
            ("click", "hero"),
            ("click", "trap"),
            ("open", None),
            ("mirror", None),
            ("unsubscribe", None),
        ]
    ]
    assert rows.to_pylist() == expected


def test_delivery_targets_unknown_delivery(db: Path) -> None:
    with open_reader(db) as con, pytest.raises(NotFoundError, match="delivery 'NOPE' is not in the database"):
        delivery_targets(con, "NOPE", KINDS)


def run(db: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base_env = {"TRACKLOG_SECRET": SECRET.decode(), "TRACKLOG_BASE_URL": "", "TRACKLOG_CONFIG": ""}
    result = CliRunner().invoke(cli, ["--db", str(db), "link", *args], env={**base_env, **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def url(kind: str, recipient: str, link: str | None = None) -> str:
    return tracked_url(BASE, SECRET, kind, "NL-2026-11", recipient, link)


def test_cli_all_types_text(db: Path) -> None:
    code, out, err = run(db, "--delivery", "NL-2026-11", "--base-url", BASE)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        url("click", r, "hero") if k == "hero" else url("click", r, "trap") if k == "trap" else url(k, r)
        for r in ("a1", "r000123")
        for k in ("hero", "trap", "open", "mirror", "unsubscribe")
    ]
    assert f"{BASE}{VECTOR_PATH}?s={VECTOR_SIG}" in out.splitlines()


def test_cli_csv_one_recipient_clicks(db: Path) -> None:
    code, out, err = run(
        db,
        "--delivery",
        "NL-2026-11",
        "--recipient",
        "r000123",
        "--type",
        "click",
        "--format",
        "csv",
        "--base-url",
        BASE,
    )
    assert (code, err) == (0, "")
    assert out == (
        "recipient_id,type,link_id,url,landing_url\n"
        f"r000123,click,hero,{BASE}{VECTOR_PATH}?s={VECTOR_SIG},\n"
        f"r000123,click,trap,{url('click', 'r000123', 'trap')},\n"
    )


def test_cli_base_url_from_env(db: Path) -> None:
    code, out, err = run(
        db, "--delivery", "NL-2026-11", "--recipient", "a1", "--type", "open", env={"TRACKLOG_BASE_URL": BASE}
    )
    assert (code, out, err) == (0, url("open", "a1") + "\n", "")


def test_cli_headers(db: Path) -> None:
    code, out, err = run(db, "--delivery", "NL-2026-11", "--base-url", BASE, "--headers")
    assert (code, err) == (0, "")
    assert out == (
        f"List-Unsubscribe: <{url('unsubscribe', 'a1')}>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\n\n"
        f"List-Unsubscribe: <{url('unsubscribe', 'r000123')}>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\n"
    )
    code, out, err = run(db, "--delivery", "NL-2026-11", "--base-url", BASE, "--headers", "--format", "csv")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "recipient_id,list_unsubscribe,list_unsubscribe_post"
    assert out.splitlines()[1] == f"a1,<{url('unsubscribe', 'a1')}>,List-Unsubscribe=One-Click"


def test_cli_recipients_file_keeps_its_order(db: Path, tmp_path: Path) -> None:
    (tmp_path / "batch.csv").write_text("recipient_id,email\nr000123,x@example.com\na1,\n")
    code, out, err = run(
        db, "--delivery", "NL-2026-11", "--recipients-file", str(tmp_path / "batch.csv"), "--type", "mirror",
        "--base-url", BASE,
    )  # fmt: skip
    assert (code, out, err) == (0, f"{url('mirror', 'r000123')}\n{url('mirror', 'a1')}\n", "")


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (
            ["--delivery", "NOPE"],
            {},
            4,
            "Error: delivery 'NOPE' is not in the database (ingest its manifest first)\n",
        ),
        (
            ["--delivery", "NL-2026-11", "--recipient", "zz"],
            {},
            4,
            "Error: recipient 'zz' is not in delivery 'NL-2026-11'\n",
        ),
        (
            ["--delivery", "NL-2026-11", "--recipient", "a b"],
            {},
            2,
            "Error: recipient id 'a b' has characters outside [A-Za-z0-9._~-]\n",
        ),
        (
            ["--delivery", "NL-2026-11", "--recipient", "a1", "--recipients-file", "x.csv"],
            {},
            2,
            "Error: give --recipient or --recipients-file, not both\n",
        ),
        (
            ["--delivery", "NL-2026-11", "--headers", "--type", "open"],
            {},
            2,
            "Error: --headers prints the unsubscribe headers only; leave out --type\n",
        ),
        (
            ["--delivery", "NL-2026-11"],
            {"TRACKLOG_SECRET": ""},
            5,
            "Error: no signing secret: set TRACKLOG_SECRET",
        ),
        (
            ["--delivery", "NL-2026-11", "--recipients-file", "nope.csv"],
            {},
            1,
            "Error: recipients file nope.csv not found\n",
        ),
    ],
)
def test_cli_errors(db: Path, args: list[str], env: dict[str, str], code: int, message: str) -> None:
    got_code, out, err = run(db, *args, "--base-url", BASE, env=env)
    assert (got_code, out) == (code, "")
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_cli_base_url_required(db: Path) -> None:
    code, out, err = run(db, "--delivery", "NL-2026-11")
    assert (code, out) == (2, "")
    assert "Missing option '--base-url'" in err


def test_cli_bad_base_url(db: Path) -> None:
    code, out, err = run(db, "--delivery", "NL-2026-11", "--base-url", "https://t.example.com/track")
    assert (code, out) == (2, "")
    assert err.startswith(
        "Error: base URL 'https://t.example.com/track' must be the tracking domain's origin"
    )


def test_cli_help() -> None:
    result = CliRunner().invoke(cli, ["link", "--help"])
    assert result.exit_code == 0
    assert "TRACKLOG_BASE_URL" in result.stdout
