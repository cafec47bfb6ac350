"""Delivery manifests: parsing (CSV, Parquet, inline recipients), every rejection, storing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracklog.errors import DataError
from tracklog.manifest import (
    expand_manifest_args,
    ingest_manifests,
    load_manifest,
    load_recipients,
    store_manifest,
)
from tracklog.routes import id_problem
from tracklog.schema import SCHEMA

CSV = "recipient_id,email,status,city\nr000001,a@example.com,sent,Paris\nr000002,,failed,\nr000003,c@example.com,,Lyon\n"


def manifest_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "delivery": "NL-2026-11",
        "label": "November newsletter",
        "sent_at": "2026-11-03T09:00:00+01:00",
        "subject": "Our November picks",
        "content": "nl.html",
        "links": [
            {
                "id": "hero",
                "url": "https://shop.example.com/sale",
                "label": "Hero banner",
                "category": "promo",
            },
            {"id": "trap", "url": "https://t.example.com/x", "label": "hidden", "category": "trap"},
            {"id": "footer", "url": "https://shop.example.com/"},
        ],
        "recipients": "nl.recipients.csv",
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not DROP}


DROP = object()


def write(tmp_path: Path, doc: dict[str, Any] | str, csv_text: str = CSV, name: str = "nl.json") -> Path:
    (tmp_path / "nl.html").write_text("<html><body><a href='x'>Sale</a></body></html>\n", encoding="utf-8")
    (tmp_path / "nl.recipients.csv").write_text(csv_text, encoding="utf-8")
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(":memory:")
    c.execute(SCHEMA)
    yield c
    c.close()


def stored(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "deliveries": con.execute(
            "SELECT delivery_id, label, sent_at, subject, content_file, content_html, manifest_sha256"
            " FROM deliveries ORDER BY ALL"
        ).fetchall(),
        "links": con.execute("SELECT * FROM links ORDER BY ALL").fetchall(),
        "recipients": con.execute("SELECT * FROM recipients ORDER BY ALL").fetchall(),
    }


# -- good manifests ---------------------------------------------------------------------------


def test_csv_manifest_loads_and_stores(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    m = load_manifest(write(tmp_path, manifest_doc()))
    assert m.delivery_id == "NL-2026-11"
    assert m.sent_at == dt.datetime(2026, 11, 3, 8, 0)  # +01:00 -> UTC, naive
    assert [(k.link_id, k.position, k.label, k.is_trap) for k in m.links] == [
        ("hero", 1, "Hero banner", False),
        ("trap", 2, "hidden", True),
        ("footer", 3, "footer", False),
    ]
    result = store_manifest(con, m)
    assert (result.links, result.traps, result.recipients, result.sent, result.failed, result.replaced) == (
        3,
        1,
        3,
        2,
        1,
        False,
    )
    rows = stored(con)
    assert rows["deliveries"][0][:6] == (
        "NL-2026-11",
        "November newsletter",
        dt.datetime(2026, 11, 3, 8, 0),
        "Our November picks",
        "nl.html",
        "<html><body><a href='x'>Sale</a></body></html>\n",
    )
    assert rows["links"] == [
        ("NL-2026-11", "footer", 3, "https://shop.example.com/", "footer", None, False),
        ("NL-2026-11", "hero", 1, "https://shop.example.com/sale", "Hero banner", "promo", False),
        ("NL-2026-11", "trap", 2, "https://t.example.com/x", "hidden", "trap", False),
    ]
    recipients = {r[1]: r for r in rows["recipients"]}
    assert recipients["r000001"] == ("NL-2026-11", "r000001", "a@example.com", "sent", '{"city":"Paris"}')
    assert recipients["r000002"] == ("NL-2026-11", "r000002", None, "failed", '{"city":null}')
    assert recipients["r000003"][3] == "sent"  # empty status defaults to sent


def test_optional_fields_default(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    doc = manifest_doc(label=DROP, subject=DROP, content=DROP, links=[], sent_at="2026-11-03T09:00:00Z")
    m = load_manifest(write(tmp_path, doc, "recipient_id\nr1\nr2\n"))
    assert (m.label, m.subject, m.content_html, m.links) == ("NL-2026-11", None, None, ())
    store_manifest(con, m)
    assert con.execute("SELECT label, subject, content_file FROM deliveries").fetchall() == [
        ("NL-2026-11", None, None)
    ]
    assert con.execute(
        "SELECT recipient_id, email, status, attributes FROM recipients ORDER BY 1"
    ).fetchall() == [
        ("r1", None, "sent", None),
        ("r2", None, "sent", None),
    ]


def test_parquet_recipients_by_extension_and_by_magic(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    table = pa.table(
        {
            "recipient_id": ["p1", "p2"],
            "email": ["p1@example.com", None],
            "status": ["sent", "failed"],
            "score": pa.array([7, 9], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "r.parquet")
    pq.write_table(table, tmp_path / "r.bin")
    for name in ("r.parquet", "r.bin"):
        m = load_manifest(write(tmp_path, manifest_doc(recipients=name)))
        store_manifest(con, m)
        assert con.execute(
            "SELECT recipient_id, email, status, attributes FROM recipients ORDER BY 1"
        ).fetchall() == [
            ("p1", "p1@example.com", "sent", '{"score":7}'),
            ("p2", None, "failed", '{"score":9}'),
        ]


def test_inline_recipients(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    inline = [
        {"recipient_id": "i1", "email": "i1@example.com", "plan": "gold", "age": 40},
        {"recipient_id": "i2", "status": "failed"},
    ]
    m = load_manifest(write(tmp_path, manifest_doc(recipients=inline)))
    assert m.recipients_source == "inline"
    result = store_manifest(con, m)
    assert (result.sent, result.failed) == (1, 1)
    assert con.execute(
        "SELECT recipient_id, email, status, attributes FROM recipients ORDER BY 1"
    ).fetchall() == [
        ("i1", "i1@example.com", "sent", '{"plan": "gold", "age": 40}'),
        ("i2", None, "failed", None),
    ]


def test_csv_quoting_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    text = '\ufeffrecipient_id,note\r\n"r1","a, ""quoted""\r\nvalue"\r\n\r\nr2,plain\r\n'
    m = load_manifest(write(tmp_path, manifest_doc(), text))
    assert m.recipients.to_pylist() == [
        {
            "recipient_id": "r1",
            "email": None,
            "status": "sent",
            "attributes": '{"note":"a, \\"quoted\\"\\r\\nvalue"}',
        },
        {"recipient_id": "r2", "email": None, "status": "sent", "attributes": '{"note":"plain"}'},
    ]


def test_million_recipients_csv(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    n = 1_000_000
    with (tmp_path / "big.csv").open("w", encoding="utf-8") as fh:
        fh.write("recipient_id,email,segment\n")
        fh.writelines(f"r{i:07d},u{i}@example.com,s{i % 5}\n" for i in range(n))
    result = store_manifest(con, load_manifest(write(tmp_path, manifest_doc(recipients="big.csv"))))
    assert (result.recipients, result.sent) == (n, n)
    assert con.execute(
        "SELECT count(DISTINCT recipient_id), min(recipient_id), max(recipient_id) FROM recipients"
    ).fetchone() == (n, "r0000000", f"r{n - 1:07d}")


def test_million_recipients_duplicate_names_its_line(tmp_path: Path) -> None:
    n = 1_000_000
    with (tmp_path / "big.csv").open("w", encoding="utf-8") as fh:
        fh.write("recipient_id\n")
        fh.writelines(f"r{i:07d}\n" for i in range(n))
        fh.write("r0000005\n")
    with pytest.raises(DataError) as err:
        load_manifest(write(tmp_path, manifest_doc(recipients="big.csv")))
    assert str(err.value).endswith(
        f'recipients big.csv line {n + 2}: duplicate recipient_id "r0000005" (first on line 7)'
    )


# -- bad manifests: one clear line naming the file and the field or line, nothing stored -----------

BAD_MANIFESTS: list[tuple[str, Any, str]] = [
    ("invalid JSON", '{"delivery": "x",', "invalid JSON (line 1 column 18: "),
    ("not an object", "[1, 2]", "must be a JSON object (got list)"),
    ("missing sent_at", manifest_doc(sent_at=DROP), 'missing required field "sent_at"'),
    ("missing links", manifest_doc(links=DROP), 'missing required field "links"'),
    ("missing recipients", manifest_doc(recipients=DROP), 'missing required field "recipients"'),
    ("unknown field", manifest_doc(recipient="x.csv"), 'unknown field "recipient"'),
    (
        "date not ISO",
        manifest_doc(sent_at="03/11/2026"),
        '"sent_at" is not an ISO 8601 date with offset (got "03/11/2026")',
    ),
    (
        "date without offset",
        manifest_doc(sent_at="2026-11-03T09:00:00"),
        '"sent_at" is not an ISO 8601 date with offset (got "2026-11-03T09:00:00"; add Z',
    ),
    (
        "impossible date",
        manifest_doc(sent_at="2026-02-30T09:00:00Z"),
        '"sent_at" is not a valid date (got "2026-02-30T09:00:00Z": day is out of range for month)',
    ),
    ("sent_at not a string", manifest_doc(sent_at=20261103), '"sent_at" must be a string (got 20261103)'),
    (
        "bad delivery id",
        manifest_doc(delivery="NL 2026"),
        '"delivery" has characters outside [A-Za-z0-9._~-]',
    ),
    ("long delivery id", manifest_doc(delivery="x" * 129), '"delivery" is longer than 128 characters'),
    (
        "duplicate link id",
        manifest_doc(
            links=[{"id": "a", "url": "https://x.example/"}, {"id": "a", "url": "https://y.example/"}]
        ),
        'link #2: duplicate link id "a" (also link #1)',
    ),
    (
        "bad link id",
        manifest_doc(links=[{"id": "a/b", "url": "https://x.example/"}]),
        'link #1: "id" has characters outside',
    ),
    ("link without url", manifest_doc(links=[{"id": "a"}]), 'link #1: "url" must be a string (got null)'),
    (
        "link url not absolute",
        manifest_doc(links=[{"id": "a", "url": "javascript:alert(1)"}]),
        'link #1: "url" must be an absolute http or https URL with a host',
    ),
    ("links not a list", manifest_doc(links={"id": "a"}), '"links" must be a list'),
    ("missing recipients file", manifest_doc(recipients="nope.csv"), "recipients file nope.csv not found"),
    ("missing content file", manifest_doc(content="nope.html"), "content file nope.html not found"),
    ("recipients wrong type", manifest_doc(recipients=3), '"recipients" must be a file name or a list'),
    (
        "inline not a string id",
        manifest_doc(recipients=[{"recipient_id": 5}]),
        'recipient #1: "recipient_id" must',
    ),
    (
        "inline duplicate",
        manifest_doc(recipients=[{"recipient_id": "a"}, {"recipient_id": "b"}, {"recipient_id": "a"}]),
        'recipient #3: duplicate recipient_id "a" (first on recipient #1)',
    ),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [(d, e) for _, d, e in BAD_MANIFESTS], ids=[n for n, _, _ in BAD_MANIFESTS]
)
def test_bad_manifest(tmp_path: Path, con: duckdb.DuckDBPyConnection, doc: Any, expected: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(DataError) as err:
        load_manifest(path)
    message = str(err.value)
    assert message.startswith(f"manifest {path}: ")
    assert expected in message
    assert "\n" not in message
    [outcome] = ingest_manifests(con, [path])
    assert (outcome.ok, outcome.error) == (False, message)
    assert stored(con) == {"deliveries": [], "links": [], "recipients": []}


BAD_CSVS: list[tuple[str, str, str]] = [
    ("no header", "", "recipients nl.recipients.csv: the file is empty"),
    (
        "no recipient_id column",
        "id,email\nr1,a\n",
        "recipients nl.recipients.csv line 1: the header has no recipient_id column (found 2 comma-separated fields, not shown",
    ),
    (
        "semicolons",
        "recipient_id;email\nr1;a\n",
        "the header has no recipient_id column (found 1 comma-separated field, not shown; expected a header",
    ),
    ("duplicate column", "recipient_id,city,city\n", 'line 1: column "city" appears twice in the header'),
    ("unnamed column", "recipient_id,,city\n", "line 1: column 2 of the header has no name"),
    (
        "duplicate recipient",
        "recipient_id\nr000001\nr000002\nr000003\nr000004\nr000005\nr000005\n",
        'recipients nl.recipients.csv line 7: duplicate recipient_id "r000005" (first on line 6)',
    ),
    (
        "duplicate after blank line and multi-line field",
        'recipient_id,note\nr1,"two\nlines"\n\nr2,x\nr1,y\n',
        'line 6: duplicate recipient_id "r1" (first on line 2)',
    ),
    (
        "bad id chars",
        "recipient_id\nok\nr 2\n",
        'line 3: recipient_id has characters outside [A-Za-z0-9._~-] (got "r 2")',
    ),
    (
        "id too long",
        "recipient_id\n" + "r" * 129 + "\n",
        "line 2: recipient_id is longer than 128 characters",
    ),
    ("empty id", "recipient_id,email\nr1,a\n,b\n", "line 3: recipient_id is empty"),
    (
        "bad status",
        "recipient_id,status\nr1,sent\nr2,bounced\n",
        'line 3: status must be sent or failed (got "bounced")',
    ),
    (
        "too many fields",
        "recipient_id,email\nr1,a\nr2,b,c\n",
        "line 3: expected 2 fields like the header, found 3",
    ),
    ("unterminated quote", 'recipient_id,email\nr1,"a\nr2,b\n', "line 2: a quoted field is never closed"),
]


@pytest.mark.parametrize(
    ("csv_text", "expected"), [(c, e) for _, c, e in BAD_CSVS], ids=[n for n, _, _ in BAD_CSVS]
)
def test_bad_recipients_csv(
    tmp_path: Path, con: duckdb.DuckDBPyConnection, csv_text: str, expected: str
) -> None:
    path = write(tmp_path, manifest_doc(), csv_text)
    with pytest.raises(DataError) as err:
        load_manifest(path)
    message = str(err.value)
    assert message.startswith(f"manifest {path}: recipients nl.recipients.csv")
    assert expected in message
    assert "\n" not in message
    assert not ingest_manifests(con, [path])[0].ok
    assert stored(con)["recipients"] == []


def test_recipients_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, manifest_doc())
    (tmp_path / "nl.recipients.csv").write_bytes(b"recipient_id,name\nr1,Ren\xe9\n")
    with pytest.raises(DataError, match=r"recipients nl.recipients.csv line 2: not UTF-8 text$"):
        load_manifest(path)


def test_parquet_without_recipient_id(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "r.parquet")
    with pytest.raises(DataError, match=r"recipients r.parquet: no recipient_id column \(found: id\)"):
        load_manifest(write(tmp_path, manifest_doc(recipients="r.parquet")))


def test_parquet_duplicate_names_row(tmp_path: Path) -> None:
    pq.write_table(pa.table({"recipient_id": ["a", "b", "a"]}), tmp_path / "r.parquet")
    with pytest.raises(
        DataError, match=r'recipients r.parquet row 3: duplicate recipient_id "a" \(first on row 1\)'
    ):
        load_manifest(write(tmp_path, manifest_doc(recipients="r.parquet")))


def test_corrupt_parquet(tmp_path: Path) -> None:
    (tmp_path / "r.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"recipients r.parquet: not a readable Parquet file"):
        load_manifest(write(tmp_path, manifest_doc(recipients="r.parquet")))


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest .*nope.json: file not found$"):
        load_manifest(tmp_path / "nope.json")


# -- storing ----------------------------------------------------------------------------------


def test_reingest_is_idempotent_and_leaves_hits_alone(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "INSERT INTO hits (source_id, line_no, byte_offset, ts, kind, delivery_id, recipient_id, sig_status)"
        " VALUES (1, 1, 0, TIMESTAMP '2026-11-03 10:00:00', 'open', 'NL-2026-11',"
        " 'r000001', 'valid')"
    )
    path = write(tmp_path, manifest_doc())
    first = store_manifest(con, load_manifest(path))
    before = stored(con)
    second = store_manifest(con, load_manifest(path))
    assert stored(con) == before  # the same manifest again writes nothing
    assert (first.replaced, first.unchanged, second.replaced, second.unchanged) == (False, False, False, True)
    assert dataclasses.replace(second, unchanged=False) == first
    assert con.execute("SELECT count(*) FROM hits").fetchall() == [(1,)]
    # a changed recipients file (same manifest JSON) is a new version: stored again
    csv_file = tmp_path / "nl.recipients.csv"
    csv_file.write_text(csv_file.read_text() + "r999999,new@example.com,sent,Nice\n")
    third = store_manifest(con, load_manifest(path))
    assert (third.replaced, third.unchanged, third.recipients) == (True, False, first.recipients + 1)


def test_reingest_replaces_only_that_delivery(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    other = tmp_path / "other"
    other.mkdir()
    store_manifest(con, load_manifest(write(other, manifest_doc(delivery="NL-2026-10"))))
    store_manifest(con, load_manifest(write(tmp_path, manifest_doc())))
    smaller = manifest_doc(links=[{"id": "only", "url": "https://x.example/"}])
    store_manifest(con, load_manifest(write(tmp_path, smaller, "recipient_id\nz1\n")))
    assert con.execute("SELECT delivery_id, count(*) FROM links GROUP BY ALL ORDER BY 1").fetchall() == [
        ("NL-2026-10", 3),
        ("NL-2026-11", 1),
    ]
    assert con.execute("SELECT delivery_id, count(*) FROM recipients GROUP BY ALL ORDER BY 1").fetchall() == [
        ("NL-2026-10", 3),
        ("NL-2026-11", 1),
    ]


def test_bad_reingest_keeps_previous_version(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    path = write(tmp_path, manifest_doc())
    good = load_manifest(path)
    store_manifest(con, good)
    before = stored(con)

    write(tmp_path, manifest_doc(), CSV + "r000001,dup@example.com,sent,Nice\n")
    [outcome] = ingest_manifests(con, [path])
    assert not outcome.ok and "line 5: duplicate recipient_id" in outcome.message
    assert stored(con) == before

    # A failure halfway through the transaction (after the deletes) rolls back to the old rows.
    broken = dataclasses.replace(good, recipients=pa.table({"unexpected": [1]}), sha256="0" * 64)
    with pytest.raises(duckdb.Error):
        store_manifest(con, broken)
    assert stored(con) == before


def test_ingest_manifests_one_bad_does_not_stop_the_others(
    tmp_path: Path, con: duckdb.DuckDBPyConnection
) -> None:
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_dir.mkdir()
    bad_dir.mkdir()
    bad = write(bad_dir, manifest_doc(delivery="BAD", sent_at="yesterday"))
    good = write(good_dir, manifest_doc())
    outcomes = ingest_manifests(con, [bad, good])
    assert [o.ok for o in outcomes] == [False, True]
    assert (
        outcomes[0].message
        == f'manifest {bad}: "sent_at" is not an ISO 8601 date with offset (got "yesterday")'
    )
    assert outcomes[1].message == (
        f"{good}: delivery NL-2026-11 stored: 3 links (traps: 1), 3 recipients (sent: 2, failed: 1)"
    )
    assert con.execute("SELECT delivery_id FROM deliveries").fetchall() == [("NL-2026-11",)]


def test_expand_manifest_args(tmp_path: Path) -> None:
    for name in ("b.json", "a.json"):
        (tmp_path / name).write_text("{}")
    paths, missing = expand_manifest_args(
        [
            str(tmp_path / "*.json"),
            str(tmp_path / "a.json"),
            str(tmp_path / "nope.json"),
            str(tmp_path / "x*.json"),
        ]
    )
    assert paths == [tmp_path / "a.json", tmp_path / "b.json"]
    assert missing == [
        f"manifest {tmp_path / 'nope.json'}: file not found",
        f"manifest {tmp_path / 'x*.json'}: no file matches this pattern",
    ]


def test_load_recipients_file_on_its_own(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("recipient_id\nr1\nr1\n")
    with pytest.raises(DataError) as err:
        load_recipients(tmp_path / "r.csv")
    assert (
        str(err.value)
        == f'recipients {tmp_path / "r.csv"} line 3: duplicate recipient_id "r1" (first on line 2)'
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("r000123", None),
        ("A-z_0.9~", None),
        ("x" * 128, None),
        ("", "is empty"),
        ("x" * 129, "is longer than 128 characters"),
        ("r/1", "has characters outside [A-Za-z0-9._~-]"),
        ("é", "has characters outside [A-Za-z0-9._~-]"),
    ],
)
def test_id_problem(value: str, problem: str | None) -> None:
    assert id_problem(value) == problem
