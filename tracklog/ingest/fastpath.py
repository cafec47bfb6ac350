"""The compiled fast path of the chunk parse: tl_lines -> tl_chunk for the `combined` and
`common` formats (also with [$time_iso8601] for [$time_local]), combined followed by quoted
variables such as "$uid_got" (nginx's `main`: "$http_x_forwarded_for"), then by space-separated
ones such as $request_time (or with text around them: `rt=$request_time uct="$upstream_connect_time"`,
nginx's upstream timing format; `[$proxy_upstream_name] $upstream_addr ...`, ingress-nginx's default
format), and the format `tracklog nginx-config` writes (MSEC_HEAD followed by
the same), and JSON lines, in one C pass (_fastlog.c), exactly the rows of the SQL path
(formats.py, routes.py, signing.py), which stays the reference and the path for every other
format, and wherever the extension is not built.

TRACKLOG_PURE=1 turns the fast path off.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tracklog.ingest.formats import (
    _JSON_CANONICAL_KEYS,
    _LISTS,
    _NEVER_ESCAPED,
    _SPACE_FREE,
    _SPACES_IN,
    COMBINED,
    COMMON,
    JSON_NAME,
    LogFormat,
    _split_segments,
    _strip_config_syntax,
    _tokenize,
    _Var,
    _word_template,
    resolve_format,
)
from tracklog.routes import OPTOUT_COOKIE

ABI = 14  # of _fastlog.c's parse(), line_starts() and key_index(): an extension built from older sources is not used
_fastlog: ModuleType | None
try:
    from tracklog.ingest import _fastlog  # type: ignore[attr-defined, no-redef]
except ImportError:  # not built (no compiler at install time): the SQL path does everything
    _fastlog = None
if _fastlog is not None and getattr(_fastlog, "ABI", None) != ABI:  # stale in-place build
    _fastlog = None

PURE_ENV = "TRACKLOG_PURE"
MAX_EXTRA = 16  # quoted variables after combined's user agent (as in _fastlog.c)
MAX_WORDS, PROG_TEXT = 32, 2048  # words after the last quote, and their text (as in _fastlog.c)
# how the SQL's regular expression matches a word's variable (formats._take_regexp), as _fastlog.c
# numbers them: [^ ]*, .*?, an upstream list
WORD_PLAIN, WORD_ANY, WORD_LIST = range(3)
# Rows per record batch of a parsed chunk as DuckDB scans it (a thread takes a batch at a time):
# on the benchmark 5-9% less wall time than one batch per chunk; 4k-32k measured alike
SCAN_BATCH_ROWS = 16_384

# tl_chunk: the columns and types both paths produce (the SQL's VARCHAR are strings here)
_STRINGS = {
    "reason", "line", "ip", "method", "path", "query", "referer", "user_agent", "uid", "extra",
    "kind", "delivery_id", "link_id", "recipient_id", "sig_status",
}  # fmt: skip
_FIXED = {"ts": pa.timestamp("us"), "status": pa.int16(), "bytes": pa.int64()}
# a few distinct values repeated on every line: dictionary-encoded (a chunk's user agents take
# 1 MB instead of 28), which DuckDB reads as VARCHAR
_DICTIONARY = {"user_agent", "referer"}
# tl_chunk's columns, in order: the parsed fields (NULL on a quarantined row) between the line's
# place and reason, and what routing and the signature check add
PARSED_FIELDS = (
    "ts",
    "ip",
    "method",
    "path",
    "query",
    "status",
    "bytes",
    "referer",
    "user_agent",
    "uid",
    "extra",
)
COLUMNS = (
    "line_no", "byte_offset", "reason", "line", *PARSED_FIELDS,
    "kind", "delivery_id", "link_id", "recipient_id", "sig_status",
)  # fmt: skip
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
_COMBINED_VARS = [m[2] for m in _VARIABLE.finditer(COMBINED)]
_COMMON_VARS = [m[2] for m in _VARIABLE.finditer(COMMON)]
# the same with [$time_iso8601] (one word, "[2026-11-27T09:14:00+01:00]") for [$time_local]
COMMON_ISO, COMBINED_ISO = (f.replace("[$time_local]", "[$time_iso8601]") for f in (COMMON, COMBINED))
_COMMON_ISO_VARS = [m[2] for m in _VARIABLE.finditer(COMMON_ISO)]
_COMBINED_ISO_VARS = [m[2] for m in _VARIABLE.finditer(COMBINED_ISO)]
# combined with $msec for $remote_addr - $remote_user [$time_local]: the head of the format the
# generated tracking server writes (nginx.LOG_FORMAT, with "$uid_got" "$uid_set" after it)
MSEC_HEAD = '$msec $remote_addr "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"'
_MSEC_VARS = [m[2] for m in _VARIABLE.finditer(MSEC_HEAD)]
# Plan.layout, as _fastlog.c's parse() takes it
COMMON_LAYOUT, COMBINED_LAYOUT, MSEC_LAYOUT, JSON_LAYOUT, COMMON_ISO_LAYOUT, COMBINED_ISO_LAYOUT = range(6)
_UID_ROLES = {"uid_got": 1, "uid_set": 2}
# $http_x_forwarded_for: in `extra` like any variable, and the address when $remote_addr is '-'
# (formats._canonical_layers), a line the C pass leaves to the SQL. nginx's own `main` format
# ends with it
_XFF = "http_x_forwarded_for"
_ROLES = {**_UID_ROLES, _XFF: 3}
# the variables routes.OPTED_OUT_SQL reads: the cookie's own ("1" opts out), the Cookie header
_OPTOUT = {f"cookie_{OPTOUT_COOKIE}": 1, "http_cookie": 2}
_NOT_EXTRA = frozenset(_JSON_CANONICAL_KEYS) | {_XFF}


@dataclass(frozen=True)
class Plan:
    """What the C pass needs to know of a format it covers."""

    layout: int  # COMMON_LAYOUT, COMBINED_LAYOUT, MSEC_LAYOUT, JSON_LAYOUT (JSON lines, no extras),
    # COMMON_ISO_LAYOUT or COMBINED_ISO_LAYOUT
    # per variable other than the layout's: ('"name":', role (0 extra, 1 uid_got, 2 uid_set,
    # 3 x_forwarded_for), decode, opt-out: 0, 1 its value "1", 2 a Cookie header; quoted (else
    # after the last quote, space-separated), elastic (the one of those that may hold spaces),
    # lead (a word before $remote_addr, such as $host: those come first)
    extras: tuple[tuple[bytes, int, bool, int, bool, bool, bool], ...]
    # () when the quoted variables after combined's user agent are separated by single spaces
    # and the unquoted ones are words after the last quote; else the text before each quoted
    # one and after the last quote, as (literal, extras index of its variable or -1, literal):
    # `rt=$request_time uct="$upstream_connect_time"`, nginx's upstream timing format
    gaps: tuple[tuple[bytes, int, bytes], ...] = ()
    # () or, with single spaces between the quoted values, the words after the last quote, each
    # (literal, extras index of its variable or -1, literal, WORD_PLAIN, WORD_ANY or WORD_LIST:
    # how the SQL's regular expression matches it): several variables with text around them
    # (`rt=$request_time urt=$upstream_response_time`), or several that may hold spaces
    # (ingress-nginx's default format; the SQL's regular expression, whose reading is the words'
    # when a line has as many words as the template; with more, the C pass finds the regular
    # expression's match when the variables are plain words or upstream lists, and defers the
    # line to the SQL otherwise)
    words: tuple[tuple[bytes, int, bytes, int], ...] = ()


def extension_available() -> bool:
    return _fastlog is not None


def _json_keys_agree() -> bool:
    """Whether the C pass reads JSON lines' keys as formats.py does (the canonical keys in order,
    then the forwarded-for list) and knows the opt-out cookie's variable."""
    if _fastlog is None:
        return False
    keys = (*_JSON_CANONICAL_KEYS, _XFF)
    return tuple(_fastlog.JSON_KEYS) == keys and _fastlog.JSON_OPTOUT_KEY == f"cookie_{OPTOUT_COOKIE}"


def plan_for(fmt: LogFormat) -> Plan | None:
    """The C plan of `fmt`, or None when only the SQL path handles it.

    A format is covered when its SQL is exactly that of common, or of combined or MSEC_HEAD
    (common and combined also with [$time_iso8601] for [$time_local], and after variables
    without spaces such as `$host`, a word each) followed by quoted variables, then variables
    separated by single spaces (such as `$request_time`; at most one of those may hold spaces,
    formats._SPACE_FREE), as formats.py compiles them, so the two paths read the same spec the
    same way."""
    if fmt.spec == JSON_NAME:
        return Plan(JSON_LAYOUT, ()) if _json_keys_agree() else None
    names = [m[1] or m[2] for m in _VARIABLE.finditer(fmt.spec)]
    want = fmt.select_sql("tl_lines")
    for layout, head, head_vars in (
        (COMMON_LAYOUT, COMMON, _COMMON_VARS),
        (COMMON_ISO_LAYOUT, COMMON_ISO, _COMMON_ISO_VARS),
        (COMBINED_LAYOUT, COMBINED, _COMBINED_VARS),
        (MSEC_LAYOUT, MSEC_HEAD, _MSEC_VARS),
        (COMBINED_ISO_LAYOUT, COMBINED_ISO, _COMBINED_ISO_VARS),
    ):
        at = names.index(head_vars[0]) if head_vars[0] in names else -1
        if at < 0 or names[at : at + len(head_vars)] != head_vars:
            continue
        leads, rest = names[:at], names[at + len(head_vars) :]
        if layout in (COMMON_LAYOUT, COMMON_ISO_LAYOUT) and rest:
            continue  # combined's head starts as common's
        break
    else:
        return None
    # variables before $remote_addr (such as $host): space-free plain extras, a word each
    if leads and (layout == MSEC_LAYOUT or any(not _plain_word(n) for n in leads)):
        return None
    extras = leads + rest
    if len(extras) > MAX_EXTRA or len(set(extras)) != len(extras) or set(extras) & set(head_vars):
        return None
    if any(name in _NOT_EXTRA and name not in _ROLES for name in extras):
        return None
    head = "".join(f"${name} " for name in leads) + head
    # the first `quoted` of the others in double quotes, then those after the last quote
    for quoted in range(len(rest), -1, -1):
        unquoted = rest[quoted:]
        spec = head + "".join(f' "${name}"' for name in rest[:quoted]) + "".join(f" ${n}" for n in unquoted)
        if resolve_format(spec, {}).select_sql("tl_lines") == want:
            break
    else:
        return _gapped_plan(fmt, layout, head, leads, rest, want) or _worded_plan(
            fmt, layout, head, leads, rest, want
        )
    elastic = [n for n in unquoted if n not in _SPACE_FREE] if len(unquoted) > 1 else []
    if len(elastic) > 1:  # the SQL matches them with a regular expression
        return _worded_plan(fmt, layout, head, leads, rest, want)
    return Plan(
        layout,
        tuple(
            _extra(
                name,
                quoted=len(leads) <= k < len(leads) + quoted,
                elastic=name in elastic,
                lead=k < len(leads),
            )
            for k, name in enumerate(extras)
        ),
    )


def _extra(
    name: str, *, quoted: bool = False, elastic: bool = False, lead: bool = False
) -> tuple[bytes, int, bool, int, bool, bool, bool]:
    return (
        f'"{name}":'.encode(),
        _ROLES.get(name, 0),
        name not in _NEVER_ESCAPED,
        _OPTOUT.get(name, 0),
        quoted,
        elastic,
        lead,
    )


def _tail_segments(fmt: LogFormat, layout: int, head: str) -> list[list[Any]] | None:
    """The segments of `fmt` after its combined-like `head` (formats._split_segments: the text
    between each two quotes, the quoted values at odd indices, the last one after the last
    quote), or None when the layout has no user agent or the quotes do not pair."""
    if layout not in (COMBINED_LAYOUT, MSEC_LAYOUT, COMBINED_ISO_LAYOUT):
        return None
    tail = _split_segments(_tokenize(_strip_config_syntax(fmt.spec)[0]))[head.count('"') :]
    return None if len(tail) % 2 == 0 else tail


def _extras(
    leads: list[str], extras: list[str], quoted: list[str]
) -> tuple[tuple[bytes, int, bool, int, bool, bool, bool], ...]:
    """Plan.extras for `extras` (`leads` first, `quoted` among them), none elastic."""
    return tuple(_extra(name, quoted=name in quoted, lead=k < len(leads)) for k, name in enumerate(extras))


def _plan_if_same(spec: str, want: str, plan: Plan) -> Plan | None:
    """`plan` when `spec`, the format as the plan reads it, compiles to the SQL `want` (the
    format's own), else None."""
    return plan if resolve_format(spec, {}).select_sql("tl_lines") == want else None


def _gapped_plan(
    fmt: LogFormat, layout: int, head: str, leads: list[str], rest: list[str], want: str
) -> Plan | None:
    """The plan of a combined-like format whose variables after the user agent are quoted ones
    with text around them (each piece between two quotes, and after the last, a literal with at
    most one variable: formats._plan_segment's single-variable reading), or None."""
    tail = _tail_segments(fmt, layout, head)
    if tail is None:
        return None
    names: list[str] = []
    quoted: list[str] = []
    gaps: list[tuple[str, str | None, str]] = []
    for i, segment in enumerate(tail):
        variables = [t.name for t in segment if isinstance(t, _Var)]
        if i % 2:  # a quoted value: one variable, nothing else
            if len(segment) != 1 or len(variables) != 1:
                return None
            quoted += variables
            names += variables
            continue
        if len(variables) > 1:  # several: words or a regular expression (the SQL's)
            return None
        at = next((k for k, t in enumerate(segment) if isinstance(t, _Var)), len(segment))
        pre, post = ("".join(str(t) for t in part) for part in (segment[:at], segment[at + 1 :]))
        gaps.append((pre, variables[0] if variables else None, post))
        names += variables
    if names != rest:
        return None
    spec = head + "".join(
        pre + (f"${{{name}}}" if name else "") + post + (f'"${{{quoted[g]}}}"' if g < len(quoted) else "")
        for g, (pre, name, post) in enumerate(gaps)
    )
    extras = leads + rest
    return _plan_if_same(
        spec,
        want,
        Plan(
            layout,
            _extras(leads, extras, quoted),
            tuple(
                (pre.encode(), extras.index(name) if name else -1, post.encode()) for pre, name, post in gaps
            ),
        ),
    )


def _worded_plan(
    fmt: LogFormat, layout: int, head: str, leads: list[str], rest: list[str], want: str
) -> Plan | None:
    """The plan of a combined-like format whose quoted variables after the user agent are
    separated by single spaces, followed after the last quote by several variables in words with
    text around them (formats._word_template: each word a literal with at most one variable in
    it), or None."""
    tail = _tail_segments(fmt, layout, head)
    if tail is None:
        return None
    quoted: list[str] = []
    for i, segment in enumerate(tail[:-1]):
        if i % 2 == 0 and segment != [" "]:
            return None
        if i % 2 and (len(segment) != 1 or not isinstance(segment[0], _Var)):
            return None
        quoted += [t.name for t in segment if isinstance(t, _Var)]
    words: list[tuple[str, str | None, str, int]] = []
    for word in _word_template(tail[-1]):
        variables = [(k, part) for k, part in enumerate(word) if isinstance(part, tuple)]
        if len(variables) > 1 or any(part[0] in _SPACES_IN for _, part in variables):
            return None
        if not variables:
            words.append(("".join(str(p) for p in word), None, "", WORD_PLAIN))
            continue
        at, (name, index) = variables[0]
        pre, post = ("".join(str(p) for p in part) for part in (word[:at], word[at + 1 :]))
        kind = WORD_PLAIN if index is not None else WORD_LIST if name in _LISTS else WORD_ANY
        words.append((pre, name, post, kind))
    if len(words) > MAX_WORDS or sum(len((pre + post).encode()) + 1 for pre, _, post, _ in words) > PROG_TEXT:
        return None
    names = [name for _, name, _, _ in words if name]
    if len(names) < 2 or quoted + names != rest:
        return None
    text = " ".join(pre + (f"${{{name}}}" if name else "") + post for pre, name, post, _ in words)
    spec = head + "".join(f' "${{{name}}}"' for name in quoted) + text
    extras = leads + rest
    return _plan_if_same(
        spec,
        want,
        Plan(
            layout,
            _extras(leads, extras, quoted),
            words=tuple(
                (pre.encode(), extras.index(name) if name else -1, post.encode(), kind)
                for pre, name, post, kind in words
            ),
        ),
    )


def _plain_word(name: str) -> bool:
    """Whether `name` can be a variable before the head: a word without spaces, kept in `extra`."""
    return name in _SPACE_FREE and name not in _NOT_EXTRA and name not in _ROLES and name not in _OPTOUT


class FastParser:
    """Parses tables of lines (line_no, byte_offset, line) into tl_chunk's columns."""

    def __init__(self, plan: Plan, pads: tuple[bytes, bytes] | None) -> None:
        assert _fastlog is not None
        self._parse = _fastlog.parse
        self.plan = plan
        self.pads = pads

    def parse(self, lines: pa.Table, *, terminated: bool = False) -> tuple[pa.Table, pa.Array]:
        """(tl_chunk rows, deferred): the rows the C pass left to the SQL (see _fastlog.c) are
        placeholders, and `deferred` holds their indices in `lines`. `terminated`: each line
        ends with its '\n' (split_buffer's lines), which is not part of it."""
        batches: list[pa.RecordBatch] = []
        deferred: list[pa.Array] = []
        start = 0
        ipad, opad = self.pads if self.pads is not None else (None, None)
        for batch in lines.to_batches():
            line = batch.column(2)
            if line.type != pa.large_string():
                line = line.cast(pa.large_string())
            _, offsets, data = line.buffers()
            columns, rows, wide = self._parse(
                offsets,
                data if data is not None else b"",
                line.offset,
                len(line),
                self.plan.layout,
                self.plan.extras,
                ipad,
                opad,
                False,
                terminated,
                self.plan.gaps,
                self.plan.words,
            )
            arrays = [batch.column(0), batch.column(1)]
            arrays += [
                _array(name, len(batch), parts, wide)
                for name, parts in zip(COLUMNS[2:], columns, strict=True)
            ]
            batches.append(pa.RecordBatch.from_arrays(arrays, names=list(COLUMNS)))
            rows_buf = pa.py_buffer(rows)
            if rows_buf.size:
                deferred.append(
                    pc.add(pa.Array.from_buffers(pa.int64(), rows_buf.size // 8, [None, rows_buf]), start)
                )
            start += len(batch)
        schema = chunk_schema(wide=any(b.schema.field("line").type == pa.large_string() for b in batches))
        table = pa.Table.from_batches([b if b.schema == schema else b.cast(schema) for b in batches], schema)
        # handed to DuckDB in slices (no copy): its scan of an Arrow table gives each thread a
        # record batch at a time, so one batch of the whole chunk would be scanned by one thread
        table = pa.Table.from_batches(table.to_batches(max_chunksize=SCAN_BATCH_ROWS), schema)
        return table, pa.concat_arrays(deferred) if deferred else pa.array([], pa.int64())


def key_index_available() -> bool:
    """Whether the compiled recipient lookup can be used (lookup.py), as the fast parse can."""
    return _fastlog is not None and os.environ.get(PURE_ENV, "") in ("", "0")


def key_index() -> Any:
    """An empty _fastlog.KeyIndex (see key_add, key_lookup)."""
    assert _fastlog is not None
    return _fastlog.key_index()


def key_add(index: Any, numbers: pa.Array, ids: pa.Array) -> None:
    """Entries added to `index`, numbered on from its size: `numbers` (int32, each one's delivery
    number, no nulls) and `ids` (strings, no nulls), copied. ValueError on a key it has."""
    ids = _large(ids)
    _, offsets, data = ids.buffers()
    index.add(_values(numbers, 4), offsets.slice(ids.offset * 8, (len(ids) + 1) * 8), _data(data), len(ids))


def key_lookup(index: Any, numbers: pa.Array, ids: pa.Array) -> pa.Array:
    """The entry of `index` of each (numbers[i], ids[i]), -1 for none (int32); ids[i] may be
    null where numbers[i] is -1."""
    ids = _large(ids)
    _, offsets, data = ids.buffers()
    rows = index.lookup(_values(numbers, 4), offsets, _data(data), ids.offset, len(ids))
    return pa.Array.from_buffers(pa.int32(), len(ids), [None, pa.py_buffer(rows)])


def _large(ids: pa.Array) -> pa.Array:
    """Strings (or bytes, for tests) with int64 offsets, as the C reads them."""
    if pa.types.is_binary(ids.type) or pa.types.is_large_binary(ids.type):
        return ids.cast(pa.large_binary())
    return ids.cast(pa.large_string())


def _values(array: pa.Array, width: int) -> pa.Buffer:
    """The values buffer of a fixed-width array without nulls, from its first element."""
    assert array.null_count == 0
    return array.buffers()[1].slice(array.offset * width, len(array) * width)


def _data(buffer: pa.Buffer | None) -> pa.Buffer | bytes:
    return buffer if buffer is not None else b""


def split_buffer(buf: bytes | bytearray) -> tuple[pa.Array, pa.Array]:
    """(lines, starts): the '\n'-terminated lines of `buf` as a large_string array over `buf`
    itself, each with its '\n' (no copy of the text: parse them with terminated=True), and the
    offset of each line in `buf`. Only for text that is valid UTF-8 (engine._is_clean)."""
    assert _fastlog is not None
    starts = pa.py_buffer(_fastlog.line_starts(buf))
    n = starts.size // 8 - 1
    lines = pa.Array.from_buffers(pa.large_string(), n, [None, starts, pa.py_buffer(buf)])
    return lines, pa.Array.from_buffers(pa.int64(), n, [None, starts])


def chunk_schema(*, wide: bool = False) -> pa.Schema:
    """tl_chunk as the fast path builds it; `wide`: int64 string offsets (chunks past 256 MiB)."""
    fields = [pa.field("line_no", pa.int64()), pa.field("byte_offset", pa.int64())]
    return pa.schema(fields + [pa.field(name, _type(name, wide)) for name in COLUMNS[2:]])


def _type(name: str, wide: bool) -> pa.DataType:
    text = pa.large_string() if wide else pa.string()
    if name in _DICTIONARY:
        return pa.dictionary(pa.int32(), text)
    return text if name in _STRINGS else _FIXED[name]


def _array(name: str, length: int, parts: tuple[Any, ...], wide: bool) -> pa.Array:
    """An Arrow array over the C pass's buffers (no copy): validity, [offsets,] data, null count;
    for a dictionary: validity, indices, the values' offsets and data, their count, null count."""
    kind = _type(name, wide)
    if name in _DICTIONARY:
        validity, indices, offsets, data, entries, nulls = parts
        values = pa.Array.from_buffers(
            kind.value_type, entries, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
        buffers = [pa.py_buffer(validity), pa.py_buffer(indices)]
        return pa.DictionaryArray.from_buffers(kind, length, buffers, values, null_count=nulls)
    *buffers, nulls = (pa.py_buffer(p) if not isinstance(p, int) else p for p in parts)
    return pa.Array.from_buffers(kind, length, buffers, null_count=nulls)


def parse_path(parser: FastParser | None) -> str:
    """Which path parses the lines, given fast_parser's answer for their format, and why not the
    compiled pass (`ingest --profile`)."""
    if parser is not None:
        return "the compiled pass"
    if _fastlog is None:
        return "the SQL path: the compiled extension is not built (no C compiler at install)"
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"the SQL path: {PURE_ENV}={os.environ[PURE_ENV]}"
    return (
        "the SQL path: the compiled pass does not read this log format "
        "(2.5 times the time per line; see the README, The compiled pass)"
    )


def fast_parser(fmt: LogFormat, pads: tuple[bytes, bytes] | None) -> FastParser | None:
    """The fast parser for `fmt`, or None: not built, not a covered format, or TRACKLOG_PURE=1."""
    if _fastlog is None or os.environ.get(PURE_ENV, "") not in ("", "0"):
        return None
    plan = plan_for(fmt)
    return FastParser(plan, pads) if plan is not None else None
