"""Delivery manifests: one JSON file per delivery naming its links and its recipients.

`load_manifest` reads and validates a manifest and its recipients (CSV, Parquet or inline),
`store_manifest` replaces the delivery's rows in deliveries/links/recipients in one
transaction. Recipients are loaded and checked in bulk by DuckDB, never row by row.
"""

from __future__ import annotations

import csv
import datetime as dt
import glob
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from tracklog.duck import duckdb, load_arrow
from tracklog.errors import DataError, TracklogError
from tracklog.routes import ID_CHARS, ID_MAX, id_problem
from tracklog.signing import hmac_pads, sql_recipient_hash
from tracklog.store import cleanup

load_arrow()  # this module hands Arrow tables to DuckDB

TRAP_CATEGORY = "trap"
# sent_at, in UTC: a delivery's clock window (up to 100 years after) stays inside DuckDB's times
SENT_AT_RANGE = (dt.datetime(1970, 1, 1), dt.datetime(3000, 1, 1))
STATUSES = ("sent", "failed")

_FIELDS = ("delivery", "label", "sent_at", "subject", "content", "links", "recipients")
_REQUIRED = ("delivery", "sent_at", "links", "recipients")
_LINK_FIELDS = ("id", "url", "label", "category", "web_tracking")
_LINK_SCHEMES = ("http", "https")
_RESERVED_COLUMNS = ("recipient_id", "email", "status")
_PARQUET_MAGIC = b"PAR1"
_PARQUET_SUFFIXES = (".parquet", ".parq")
_CSV_ERROR_LINE = re.compile(r"CSV Error on Line: (\d+)")
_CSV_COLUMNS_FOUND = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")
_GLOB_CHARS = re.compile(r"[*?\[]")

# Checks every recipient at once; the first offending row (in file order) wins.
_FIRST_BAD_RECIPIENT_SQL = f"""
SELECT _idx, recipient_id, status, first_idx,
       CASE WHEN recipient_id IS NULL OR recipient_id = '' THEN 'empty'
            WHEN length(recipient_id) > {ID_MAX} THEN 'long'
            WHEN NOT regexp_full_match(recipient_id, '[{ID_CHARS}]+') THEN 'chars'
            WHEN recipient_id IN ('.', '..') THEN 'dots'
            WHEN _idx > first_idx THEN 'duplicate'
            WHEN status NOT IN ('sent', 'failed') THEN 'status'
       END AS problem
FROM (SELECT *, min(_idx) OVER (PARTITION BY recipient_id) AS first_idx FROM norm)
WHERE problem IS NOT NULL
ORDER BY _idx
LIMIT 1
"""


@dataclass(frozen=True)
class Link:
    link_id: str
    position: int  # 1-based order of appearance in the message
    url: str
    label: str
    category: str | None
    web_tracking: bool = False  # its click carries the landing token (tl=) to the site

    @property
    def is_trap(self) -> bool:
        return self.category == TRAP_CATEGORY


@dataclass(frozen=True, eq=False)
class Manifest:
    path: Path
    sha256: str  # of what is stored: the manifest file's bytes, its HTML content and its recipients
    delivery_id: str
    label: str
    sent_at: dt.datetime  # UTC, naive
    subject: str | None
    content_file: str | None
    content_html: str | None
    links: tuple[Link, ...]
    recipients_source: str  # the file name as written in the manifest, or "inline"
    recipients: pa.Table  # recipient_id, email, status, attributes (JSON text); file order


@dataclass(frozen=True)
class ManifestResult:
    delivery_id: str
    links: int
    traps: int
    recipients: int
    sent: int
    failed: int
    replaced: bool  # the delivery was already stored and has been replaced
    unchanged: bool = False  # the same manifest was already stored: nothing was written


@dataclass(frozen=True)
class ManifestOutcome:
    path: Path
    result: ManifestResult | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def message(self) -> str:
        """One line: what was stored, or the error."""
        if self.error is not None:
            return self.error
        assert self.result is not None
        r = self.result
        what = "unchanged" if r.unchanged else "replaced" if r.replaced else "stored"
        return (
            f"{self.path}: delivery {r.delivery_id} {what}: "
            f"{r.links} links (traps: {r.traps}), {r.recipients} recipients (sent: {r.sent}, failed: {r.failed})"
        )


def _shown(value: Any) -> str:
    """A value as JSON for an error message, cut short when long."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


class _Fail:
    """Builds DataErrors that all start with `manifest <path>:`."""

    def __init__(self, path: Path | None) -> None:
        self.prefix = f"manifest {path}: " if path is not None else ""

    def __call__(self, message: str) -> DataError:
        return DataError(f"{self.prefix}{message}")


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest and its recipients; DataError names the file and the field or line."""
    fail = _Fail(path)
    raw = _read_manifest_bytes(path, fail)
    try:
        doc = json.loads(
            raw.decode("utf-8-sig"), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant
        )
    except UnicodeDecodeError:
        raise fail("is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise fail(f"invalid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except _JsonProblem as exc:
        raise fail(f"invalid JSON ({exc})") from None
    except RecursionError:
        raise fail("invalid JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise fail(f"must be a JSON object (got {type(doc).__name__})")
    unknown = [k for k in doc if k not in _FIELDS]
    if unknown:
        raise fail(f'unknown field "{unknown[0]}" (known: {", ".join(_FIELDS)})')
    for name in _REQUIRED:
        if name not in doc:
            raise fail(f'missing required field "{name}"')

    delivery = _string(doc, "delivery", fail, required=True)
    if (problem := id_problem(delivery)) is not None:
        raise fail(f'"delivery" {problem} (got {_shown(delivery)})')
    sent_at = _utc_timestamp(_string(doc, "sent_at", fail, required=True), fail)
    label = _string(doc, "label", fail) or delivery
    subject = _string(doc, "subject", fail) or None
    content_file = _string(doc, "content", fail) or None
    content_html = (
        _read_content(_inside(path.parent, content_file, fail), content_file, fail) if content_file else None
    )
    links = _links(doc["links"], fail)
    source, recipients = _recipients(doc["recipients"], path.parent, fail, confined=True)
    return Manifest(
        path=path,
        sha256=_digest(raw, content_html, recipients),
        delivery_id=delivery,
        label=label,
        sent_at=sent_at,
        subject=subject,
        content_file=content_file,
        content_html=content_html,
        links=links,
        recipients_source=source,
        recipients=recipients,
    )


class _JsonProblem(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (json keeps the last one silently)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _JsonProblem(f"key {_shown(key)} appears twice in one object")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity: not JSON (Python's json reads them)."""
    raise _JsonProblem(f"{name} is not a JSON value")


def _digest(raw: bytes, content_html: str | None, recipients: pa.Table) -> str:
    """sha256 of everything a manifest stores, so that storing the same manifest again (a cron
    job that passes every manifest at every run) is recognised and writes nothing."""
    digest = hashlib.sha256(raw)
    digest.update(b"\0content\0" + (content_html or "").encode("utf-8", "surrogatepass"))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, recipients.schema) as writer:
        writer.write_table(recipients)
    digest.update(b"\0recipients\0" + sink.getvalue().to_pybytes())
    return digest.hexdigest()


def load_recipients(path: Path) -> pa.Table:
    """A recipients file (CSV or Parquet, as in a manifest) on its own, validated the same way."""
    return _recipients(str(path), Path(), _Fail(None), confined=False)[1]


def _read_manifest_bytes(path: Path, fail: _Fail) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise fail("file not found") from None
    except IsADirectoryError:
        raise fail("is a folder, not a manifest file") from None
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None


def _string(obj: dict[str, Any], key: str, fail: _Fail, where: str = "", required: bool = False) -> str:
    """obj[key] as a string; "" when an optional key is absent or null."""
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise fail(f'{where}"{key}" must be a string (got {_shown(value)})')
    if required and not value:
        raise fail(f'{where}"{key}" is empty')
    return value


def _utc_timestamp(text: str, fail: _Fail) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        if re.fullmatch(r"\d{4}-\d\d-\d\d([T ].*)?", text):
            raise fail(f'"sent_at" is not a valid date (got {_shown(text)}: {exc})') from None
        raise fail(f'"sent_at" is not an ISO 8601 date with offset (got {_shown(text)})') from None
    if value.tzinfo is None:
        raise fail(
            f'"sent_at" is not an ISO 8601 date with offset (got {_shown(text)}; add Z or an offset like +01:00)'
        )
    try:
        utc = value.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:
        utc = None
    if utc is None or not SENT_AT_RANGE[0] <= utc < SENT_AT_RANGE[1]:
        raise fail(f'"sent_at" must be a time in the years 1970-2999 UTC (got {_shown(text)})')
    return utc


def _read_content(file: Path, name: str, fail: _Fail) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise fail(f"content file {name} not found") from None
    except UnicodeDecodeError:
        raise fail(f"content file {name} is not UTF-8 text") from None
    except OSError as exc:
        raise fail(f"content file {name}: cannot read ({exc.strerror or exc})") from None


def _links(value: Any, fail: _Fail) -> tuple[Link, ...]:
    if not isinstance(value, list):
        raise fail(f'"links" must be a list (got {_shown(value)})')
    links: list[Link] = []
    first_at: dict[str, int] = {}
    for position, item in enumerate(value, start=1):
        where = f"link #{position}: "
        if not isinstance(item, dict):
            raise fail(f"{where}must be an object (got {_shown(item)})")
        unknown = [k for k in item if k not in _LINK_FIELDS]
        if unknown:
            raise fail(f'{where}unknown field "{unknown[0]}" (known: {", ".join(_LINK_FIELDS)})')
        link_id = _string(item, "id", fail, where, required=True)
        if (problem := id_problem(link_id)) is not None:
            raise fail(f'{where}"id" {problem} (got {_shown(link_id)})')
        if link_id in first_at:
            raise fail(f'{where}duplicate link id "{link_id}" (also link #{first_at[link_id]})')
        first_at[link_id] = position
        url = _string(item, "url", fail, where, required=True)
        if not _is_web_url(url):
            raise fail(f'{where}"url" must be an absolute http or https URL with a host (got {_shown(url)})')
        label = _string(item, "label", fail, where) or link_id
        category = _string(item, "category", fail, where) or None
        web_tracking = item.get("web_tracking", False)
        if not isinstance(web_tracking, bool):
            raise fail(f'{where}"web_tracking" must be true or false (got {_shown(web_tracking)})')
        links.append(Link(link_id, position, url, label, category, web_tracking))
    return tuple(links)


def _is_web_url(url: str) -> bool:
    """http(s)://host/...: what a click may redirect to (not `https:javascript:...`, not a
    relative or scheme-less URL, no control characters or spaces)."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in _LINK_SCHEMES and url[len(parts.scheme) :].startswith("://") and bool(host)


class _Locator:
    """Names a recipient row the way its source counts: CSV line, Parquet row or inline item."""

    def __init__(self, kind: str, name: str = "", file: Path | None = None, single_column: bool = False):
        self.kind = kind
        self.prefix = f"recipients {name} " if name else ""
        self.file = file
        self.single_column = single_column

    def positions(self, indices: set[int]) -> dict[int, str]:
        """'line 7', 'row 7' or 'recipient #7' for each record index."""
        if self.kind == "csv":
            assert self.file is not None
            lines = _csv_lines_of_records(self.file, indices, self.single_column)
            return {i: f"line {n}" for i, n in lines.items()}
        if self.kind == "parquet":
            return {i: f"row {i + 1}" for i in indices}
        return {i: f"recipient #{i + 1}" for i in indices}


def _csv_lines_of_records(file: Path, indices: set[int], single_column: bool) -> dict[int, int]:
    """The line each data record (0-based, as DuckDB counts them) starts on; runs on the error path only.

    Differs from record + 2 when a field spans lines or the file has blank lines (DuckDB skips
    those, except in a one-column file where a blank line is an empty record).
    """
    found: dict[int, int] = {}
    with file.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        start, record = reader.line_num + 1, -1
        for row in reader:
            if row or single_column:
                record += 1
                if record in indices:
                    found[record] = start
                    if len(found) == len(indices):
                        break
            start = reader.line_num + 1
    return found


def _inside(base: Path, name: str, fail: _Fail) -> Path:
    """The file `name` of a manifest in the folder `base`, refused when it is outside that folder
    (an absolute path, `..`, or a symbolic link leading out): a manifest names its own files."""
    file = base / name
    root = os.path.realpath(base)
    if os.path.isabs(name) or os.path.commonpath([root, os.path.realpath(file)]) != root:
        raise fail(f"{_shown(name)} is outside the manifest's folder (name a file next to the manifest)")
    return file


def _recipients(value: Any, base: Path, fail: _Fail, *, confined: bool) -> tuple[str, pa.Table]:
    con = duckdb.connect(":memory:")
    source = "inline"
    try:
        if isinstance(value, list):
            rec, attrs_sql, locator = _inline_recipients(value, fail), "attrs", _Locator("inline")
        elif isinstance(value, str) and value:
            file = _inside(base, value, fail) if confined else base / value
            rec, attrs_sql, locator = _file_recipients(con, file, value, fail)
            source = value
        else:
            raise fail(f'"recipients" must be a file name or a list of objects (got {_shown(value)})')
        con.register("rec", rec)
        con.execute(
            f"""CREATE TABLE norm AS
                SELECT _idx,
                       CAST(recipient_id AS VARCHAR) AS recipient_id,
                       NULLIF(CAST(email AS VARCHAR), '') AS email,
                       COALESCE(NULLIF(CAST(status AS VARCHAR), ''), 'sent') AS status,
                       {attrs_sql} AS attributes
                FROM rec"""
        )
        _check_recipients(con, locator, fail)
        table = con.sql(
            "SELECT recipient_id, email, status, attributes FROM norm ORDER BY _idx"
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise fail(f"recipients {source}: {_first_line(exc)}") from None
    finally:
        con.close()
    return source, table


def _check_recipients(con: duckdb.DuckDBPyConnection, locator: _Locator, fail: _Fail) -> None:
    row = con.execute(_FIRST_BAD_RECIPIENT_SQL).fetchone()
    if row is None:
        return
    idx, recipient_id, status, first_idx, problem = row
    where = locator.positions({idx, first_idx})
    at = locator.prefix + where[idx]
    if problem == "empty":
        raise fail(f"{at}: recipient_id is empty")
    if problem == "long":
        raise fail(f"{at}: recipient_id is longer than {ID_MAX} characters (got {_shown(recipient_id)})")
    if problem == "chars":
        raise fail(f"{at}: recipient_id has characters outside [{ID_CHARS}] (got {_shown(recipient_id)})")
    if problem == "dots":
        raise fail(f"{at}: recipient_id is . or .. (got {_shown(recipient_id)})")
    if problem == "duplicate":
        raise fail(f'{at}: duplicate recipient_id "{recipient_id}" (first on {where[first_idx]})')
    raise fail(f"{at}: status must be sent or failed (got {_shown(status)})")


def _inline_recipients(items: list[Any], fail: _Fail) -> pa.Table:
    """An inline list is part of the manifest JSON, already in memory: one pass builds its columns."""
    ids: list[Any] = []
    emails: list[Any] = []
    statuses: list[Any] = []
    attrs: list[str | None] = []
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise fail(f"recipient #{n}: must be an object (got {_shown(item)})")
        if not isinstance(item.get("recipient_id"), str):
            raise fail(
                f'recipient #{n}: "recipient_id" must be a string (got {_shown(item.get("recipient_id"))})'
            )
        for key in ("email", "status"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise fail(f'recipient #{n}: "{key}" must be a string (got {_shown(item[key])})')
        ids.append(item["recipient_id"])
        emails.append(item.get("email"))
        statuses.append(item.get("status"))
        extra = {k: v for k, v in item.items() if k not in _RESERVED_COLUMNS}
        attrs.append(json.dumps(extra, ensure_ascii=False) if extra else None)
    return pa.table(
        {
            "_idx": pa.array(range(len(items)), pa.int64()),
            "recipient_id": pa.array(ids, pa.string()),
            "email": pa.array(emails, pa.string()),
            "status": pa.array(statuses, pa.string()),
            "attrs": pa.array(attrs, pa.string()),
        }
    )


def _is_parquet(file: Path) -> bool:
    if file.suffix.lower() in _PARQUET_SUFFIXES:
        return True
    with file.open("rb") as fh:
        return fh.read(4) == _PARQUET_MAGIC


def _file_recipients(
    con: duckdb.DuckDBPyConnection, file: Path, name: str, fail: _Fail
) -> tuple[pa.Table, str, _Locator]:
    """The recipients file as `_idx, recipient_id, email, status, attrs` (attrs: a struct, or NULL)."""
    try:
        parquet = _is_parquet(file)
    except FileNotFoundError:
        raise fail(f"recipients file {name} not found") from None
    except OSError as exc:
        raise fail(f"recipients file {name}: cannot read ({exc.strerror or exc})") from None
    if parquet:
        try:
            raw = con.read_parquet(str(file)).to_arrow_table()
        except duckdb.Error as exc:
            raise fail(f"recipients {name}: not a readable Parquet file ({_first_line(exc)})") from None
        if "recipient_id" not in raw.column_names:
            raise fail(f"recipients {name}: no recipient_id column (found: {', '.join(raw.column_names)})")
        locator = _Locator("parquet", name)
    else:
        header = _csv_header(file, name, fail)
        raw = _read_csv(con, file, name, header, fail)
        locator = _Locator("csv", name, file, single_column=len(header) == 1)
    return (
        _with_attributes(raw),
        ("to_json(attrs)::VARCHAR" if _has_attributes(raw) else "NULL::VARCHAR"),
        locator,
    )


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _csv_header(file: Path, name: str, fail: _Fail) -> list[str]:
    at = f"recipients {name} line 1"
    # Only the first line is decoded here: a bad byte further down is DuckDB's to report, with its line.
    try:
        with file.open("rb") as fh:
            first = fh.readline().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise fail(f"{at}: not UTF-8 text") from None
    except OSError as exc:
        raise fail(f"recipients {name}: cannot read ({exc.strerror or exc})") from None
    try:
        header = next(csv.reader([first]), None)
    except csv.Error as exc:
        raise fail(f"{at}: {exc}") from None
    if not header:
        raise fail(f"recipients {name}: the file is empty (expected a header row such as recipient_id,email)")
    if "recipient_id" not in header:
        raise fail(
            f"{at}: the header has no recipient_id column (found {len(header)} comma-separated "
            f"field{'s' if len(header) != 1 else ''}, not shown; expected a header such as recipient_id,email)"
        )
    seen: set[str] = set()
    for n, column in enumerate(header, start=1):
        if not column:
            raise fail(f"{at}: column {n} of the header has no name")
        if column in seen:
            raise fail(f'{at}: column "{column}" appears twice in the header')
        seen.add(column)
    return header


def _read_csv(
    con: duckdb.DuckDBPyConnection, file: Path, name: str, header: list[str], fail: _Fail
) -> pa.Table:
    # The dialect is fixed rather than sniffed: sniffing guesses delimiters and skips
    # "bad" leading rows, which turns a broken file into a silently different one.
    try:
        rel = con.read_csv(
            str(file),
            header=True,
            auto_detect=False,
            columns={column: "VARCHAR" for column in header},
            delimiter=",",
            quotechar='"',
            escapechar='"',
            strict_mode=True,
        )
        return rel.to_arrow_table()
    except duckdb.Error as exc:
        raise fail(_csv_error(name, str(exc))) from None


def _csv_error(name: str, text: str) -> str:
    line = _CSV_ERROR_LINE.search(text)
    at = f"recipients {name} line {line.group(1)}" if line else f"recipients {name}"
    if columns := _CSV_COLUMNS_FOUND.search(text):
        return f"{at}: expected {columns.group(1)} fields like the header, found {columns.group(2)}"
    if "unterminated quote" in text:
        return f"{at}: a quoted field is never closed"
    if "Invalid unicode" in text:
        return f"{at}: not UTF-8 text"
    return f"{at}: {_first_line(Exception(text.removeprefix('Invalid Input Error: ')))}"


def _has_attributes(raw: pa.Table) -> bool:
    return any(c not in _RESERVED_COLUMNS for c in raw.column_names)


def _with_attributes(raw: pa.Table) -> pa.Table:
    """Reserved columns kept, the others packed into one struct column `attrs`, blank records dropped.

    `_idx` numbers records as the reader produced them, before blank ones are dropped, so an
    error can still name the record's line.
    """
    n = raw.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {"_idx": pa.array(range(n), pa.int64())}
    for reserved in _RESERVED_COLUMNS:
        columns[reserved] = raw.column(reserved) if reserved in raw.column_names else pa.nulls(n, pa.string())
    others = [c for c in raw.column_names if c not in _RESERVED_COLUMNS]
    if others:
        columns["attrs"] = pa.StructArray.from_arrays(
            [raw.column(c).combine_chunks() for c in others], names=others
        )
    else:
        columns["attrs"] = pa.nulls(n, pa.string())
    table = pa.table(columns)
    blank = _all_null(raw)
    return table.filter(pc.invert(blank)) if blank is not None else table


def _all_null(raw: pa.Table) -> pa.ChunkedArray | pa.Array | None:
    mask: pa.ChunkedArray | pa.Array | None = None
    for column in raw.columns:
        is_null = pc.is_null(column)
        mask = is_null if mask is None else pc.and_(mask, is_null)
    return mask


def store_manifest(
    con: duckdb.DuckDBPyConnection, manifest: Manifest, secret: bytes | Sequence[bytes] | None = None
) -> ManifestResult:
    """Replace the delivery's rows in deliveries, links and recipients, all or nothing; hits are
    untouched. Recipients named by a tombstone of `tracklog forget` are left out (which takes the
    `secret`: tombstones hold keyed hashes)."""
    d = manifest.delivery_id
    con.register("manifest_recipients", manifest.recipients)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            stored = con.execute(
                "SELECT manifest_sha256 FROM deliveries WHERE delivery_id = ?", [d]
            ).fetchall()
            if stored == [(manifest.sha256,)]:
                con.execute("ROLLBACK")
                return _unchanged(con, manifest)
            replaced = bool(stored)
            for table in ("recipients", "links", "deliveries"):
                con.execute(f"DELETE FROM {table} WHERE delivery_id = ?", [d])
            con.execute(
                "INSERT INTO deliveries (delivery_id, label, sent_at, subject, content_file, content_html,"
                " manifest_path, manifest_sha256, loaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    d,
                    manifest.label,
                    manifest.sent_at,
                    manifest.subject,
                    manifest.content_file,
                    manifest.content_html,
                    str(manifest.path.resolve()),
                    manifest.sha256,
                    dt.datetime.now(dt.UTC).replace(tzinfo=None),
                ],
            )
            if manifest.links:
                con.executemany(
                    "INSERT INTO links (delivery_id, link_id, position, url, label, category, web_tracking)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        [d, k.link_id, k.position, k.url, k.label, k.category, k.web_tracking]
                        for k in manifest.links
                    ],
                )
            forgotten, params = "", list[object]([d])
            keys = [secret] if isinstance(secret, bytes) else list(secret or ())
            if keys:
                # a tombstone is the hash made with the signing key of its day: any current key
                hashes = " OR ".join(
                    f"f.recipient_hash = {sql_recipient_hash('m.recipient_id', '?', '?')}" for _ in keys
                )
                forgotten = (
                    " m WHERE NOT EXISTS (SELECT 1 FROM forgotten f WHERE (f.delivery_id IS NULL OR"
                    f" f.delivery_id = ?) AND ({hashes}))"
                )
                params.append(d)
                for key in keys:
                    ipad, opad = hmac_pads(key)
                    params += [opad, ipad]  # in the order the expression names them
            con.execute(
                "INSERT INTO recipients (delivery_id, recipient_id, email, status, attributes)"
                f" SELECT ?, recipient_id, email, status, attributes FROM manifest_recipients{forgotten}",
                params,
            )
            counts = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'failed')"
                " FROM manifest_recipients"
            ).fetchone()
            con.execute("COMMIT")
        except BaseException:
            cleanup(con, "ROLLBACK")  # the cause is what failed, not a rollback that fails after it
            raise
    finally:
        try:
            con.unregister("manifest_recipients")
        except duckdb.Error:
            pass
    assert counts is not None
    return _result(manifest, counts, replaced=replaced)


def _unchanged(con: duckdb.DuckDBPyConnection, manifest: Manifest) -> ManifestResult:
    counts = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'failed')"
        " FROM recipients WHERE delivery_id = ?",
        [manifest.delivery_id],
    ).fetchall()[0]
    return _result(manifest, counts, replaced=False, unchanged=True)


def _result(
    manifest: Manifest, counts: tuple[Any, ...], *, replaced: bool, unchanged: bool = False
) -> ManifestResult:
    """What storing `manifest` did; counts: recipients, sent, failed."""
    return ManifestResult(
        delivery_id=manifest.delivery_id,
        links=len(manifest.links),
        traps=sum(1 for k in manifest.links if k.is_trap),
        recipients=counts[0],
        sent=counts[1],
        failed=counts[2],
        replaced=replaced,
        unchanged=unchanged,
    )


def ingest_manifests(
    con: duckdb.DuckDBPyConnection, paths: Sequence[Path], secret: bytes | Sequence[bytes] | None = None
) -> list[ManifestOutcome]:
    """Load and store each manifest on its own: a bad one stores nothing and the others go on."""
    outcomes: list[ManifestOutcome] = []
    for path in paths:
        try:
            result = store_manifest(con, load_manifest(path), secret)
        except TracklogError as exc:
            outcomes.append(ManifestOutcome(path, None, str(exc)))
        except (ValueError, ArithmeticError, RecursionError, OSError) as exc:
            # a value no check above foresaw: this manifest fails, the run goes on
            outcomes.append(
                ManifestOutcome(path, None, f"manifest {path}: cannot be read ({_first_line(exc)})")
            )
        except duckdb.Error as exc:  # the database failed (a full disk): say why, go on
            outcomes.append(ManifestOutcome(path, None, f"manifest {path}: not stored: {_first_line(exc)}"))
        else:
            outcomes.append(ManifestOutcome(path, result, None))
    return outcomes


def expand_manifest_args(args: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Paths and globs to manifest paths (in order, each file once) and one error line per arg that
    names no file, so the caller reports those and still loads the others."""
    paths: list[Path] = []
    missing: list[str] = []
    seen: set[Path] = set()
    for arg in args:
        if _GLOB_CHARS.search(arg):
            found = [Path(m) for m in sorted(glob.glob(str(Path(arg).expanduser()), recursive=True))]
            if not found:
                missing.append(f"manifest {arg}: no file matches this pattern")
        else:
            found = [Path(arg).expanduser()]
            if not found[0].exists():
                missing.append(f"manifest {arg}: file not found")
                found = []
        for path in found:
            if (key := path.resolve()) not in seen:
                seen.add(key)
                paths.append(path)
    return paths, missing
