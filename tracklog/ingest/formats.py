"""Log formats: an nginx log_format (or a name for one) compiled once into a DuckDB SELECT.

The SELECT parses a table of lines vectorized. Text formats become a split plan (split on '"',
then on the literal separators between variables); JSON formats use DuckDB's JSON functions.
Owns the canonical mapping of nginx variables to columns and the decoding of nginx's \\xHH escapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from tracklog.errors import UsageError

COMBINED = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)
COMMON = '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent'
BUILTIN_SPECS = {"combined": COMBINED, "common": COMMON}
JSON_NAME = "json"

OUTPUT_COLUMNS = (
    "line_no",
    "byte_offset",
    "line",
    "reason",
    "ts",
    "ip",
    "method",
    "target",
    "protocol",
    "status",
    "bytes",
    "referer",
    "user_agent",
    "uid",
    "extra",
)

# Variables nginx fills from the request line or from numbers, so they never contain a space;
# $time_local holds exactly one. Any other variable may (headers, $remote_user, the upstream
# lists "a, b"), so a segment splits around at most one of those.
_SPACE_FREE = frozenset(
    {
        "remote_addr",
        "remote_port",
        "status",
        "body_bytes_sent",
        "bytes_sent",
        "request_length",
        "request_time",
        "msec",
        "time_iso8601",
        "request_method",
        "request_uri",
        "server_protocol",
        "scheme",
        "host",
        "server_name",
        "server_addr",
        "server_port",
        "uid_got",
        "uid_set",
        "connection",
        "connection_requests",
        "pid",
        "request_id",
        "args",
        "query_string",
        "is_args",
        "pipe",
        "gzip_ratio",
        "ssl_protocol",
        "ssl_cipher",
        # ingress-nginx's default log format: a request id in hex and Kubernetes upstream names
        # (namespace-service-port), which hold no space
        "req_id",
        "proxy_upstream_name",
        "proxy_alternative_upstream_name",
    }
)
# nginx's upstream variables are lists when a request tried several servers: "a, b", and "a, b :
# c" after an internal redirect (nginx's documentation of $upstream_addr), each element without a
# space. Where a segment is matched by a regular expression, such a variable takes a whole list
# (not the shortest text that lets the rest match, which would split "a, b" between two of them).
_LISTS = frozenset(
    {
        "upstream_addr",
        "upstream_status",
        "upstream_response_time",
        "upstream_connect_time",
        "upstream_header_time",
        "upstream_response_length",
        "upstream_bytes_received",
        "upstream_bytes_sent",
    }
)
_LIST_RE2 = "([^ ]*(?:(?:, | : )[^ ]*)*)"
_SPACES_IN = {"time_local": 1}
# Values nginx never needs to escape (numbers, addresses, times): no decoding for them.
_NEVER_ESCAPED = frozenset(
    {
        "remote_addr",
        "remote_port",
        "status",
        "body_bytes_sent",
        "bytes_sent",
        "request_length",
        "request_time",
    }
    | {"msec", "time_local", "time_iso8601", "connection", "connection_requests", "pid", "server_port"}
)

_TIME_VARS = ("msec", "time_iso8601", "time_local")  # preference order: msec carries milliseconds
_TARGET_VARS = ("request", "request_uri", "uri")
# $uri$is_args$args, the documented way to log the normalised target, cannot be split (no literal
# between the variables), so the tokenizer reads it as one variable.
_URI_ARGS = "uri$is_args$args"
# The keys a JSON line may carry for the canonical columns; every other key goes to `extra`.
_JSON_CANONICAL_KEYS = (
    "remote_addr",
    "time_local",
    "time_iso8601",
    "msec",
    "request",
    "request_method",
    "request_uri",
    "uri",
    "args",
    "is_args",
    "server_protocol",
    "status",
    "body_bytes_sent",
    "bytes_sent",
    "http_referer",
    "http_user_agent",
    "uid_got",
    "uid_set",
)

_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
_ESCAPE_PARAM = re.compile(r"^\s*escape=(\w+)\s+")
_QUOTED_PARTS = re.compile(r"'((?:[^'\\]|\\.)*)'\s*")
_CONT = r"\\x([89ABab][0-9A-Fa-f])"  # an escaped UTF-8 continuation byte, 80-BF
# Well-formed UTF-8 sequences as nginx escapes them (RFC 3629 table 3-7), one lead byte range per
# pattern so each byte is its own group; the ASCII escapes last.
_UTF8_ESCAPES = (
    (r"\\x([Cc][2-9A-Fa-f]|[Dd][0-9A-Fa-f])" + _CONT, r"%\1%\2"),
    (r"\\x([Ee]0)\\x([ABab][0-9A-Fa-f])" + _CONT, r"%\1%\2%\3"),
    (r"\\x([Ee][1-9A-Ca-cEeFf])" + _CONT * 2, r"%\1%\2%\3"),
    (r"\\x([Ee][Dd])\\x([89][0-9A-Fa-f])" + _CONT, r"%\1%\2%\3"),
    (r"\\x([Ff]0)\\x([9ABab][0-9A-Fa-f])" + _CONT * 2, r"%\1%\2%\3%\4"),
    (r"\\x([Ff][1-3])" + _CONT * 3, r"%\1%\2%\3%\4"),
    (r"\\x([Ff]4)\\x(8[0-9A-Fa-f])" + _CONT * 2, r"%\1%\2%\3%\4"),
    (r"\\x([0-7][0-9A-Fa-f])", r"%\1"),
    (r"\\x[89A-Fa-f][0-9A-Fa-f]", "\ufffd"),  # what is left is not UTF-8
)


@dataclass(frozen=True)
class _Var:
    name: str


_Token = str | _Var  # a literal or a variable
_Columns = list[tuple[str, str]]  # (alias, SQL expression), evaluated as one projection


@dataclass(frozen=True)
class LogFormat:
    """A compiled log format; `select_sql` turns a relation of lines into parsed rows."""

    name: str
    spec: str
    _layers: tuple[tuple[tuple[str, str], ...], ...] = field(repr=False, compare=False)

    def select_sql(self, source: str) -> str:
        """A SELECT over `source` (line_no, byte_offset, line) producing OUTPUT_COLUMNS, in order."""
        sql = f"SELECT line_no, byte_offset, line FROM {_identifier(source)}"
        for layer in self._layers:
            columns = ", ".join(f"{expr} AS {alias}" for alias, expr in layer)
            sql = f"SELECT *, {columns} FROM ({sql})"
        return f"SELECT {', '.join(OUTPUT_COLUMNS)} FROM ({sql})"


def resolve_format(name_or_spec: str, named: Mapping[str, str]) -> LogFormat:
    """The format for a builtin name, a name from the config's `log_formats`, or an nginx spec."""
    if "$" in name_or_spec:
        return _compile(name_or_spec, name_or_spec)
    if name_or_spec in named:
        target = named[name_or_spec]
        if "$" in target:
            return _compile(name_or_spec, target)
        if target in BUILTIN_SPECS or target == JSON_NAME:
            return _compile(name_or_spec, BUILTIN_SPECS.get(target, target))
        raise UsageError(f'log format "{name_or_spec}" is "{target}", which is neither a spec nor a builtin')
    if name_or_spec in BUILTIN_SPECS:
        return _compile(name_or_spec, BUILTIN_SPECS[name_or_spec])
    if name_or_spec == JSON_NAME:
        return _compile(JSON_NAME, JSON_NAME)
    valid = ", ".join([*BUILTIN_SPECS, JSON_NAME, *sorted(named)])
    raise UsageError(
        f'unknown log format "{name_or_spec}": use one of {valid}, or an nginx log_format string with $variables'
    )


def _compile(name: str, spec: str) -> LogFormat:
    if spec == JSON_NAME:
        return LogFormat(name, spec, _json_lines_layers())
    template, escape = _strip_config_syntax(spec)
    if template.lstrip().startswith("{"):
        return LogFormat(name, spec, _json_template_layers(template))
    if escape not in ("default", None):
        raise UsageError(f"log format {spec!r}: escape={escape} is only supported for JSON object formats")
    return LogFormat(name, spec, _text_layers(_tokenize(template), spec))


def _strip_config_syntax(spec: str) -> tuple[str, str | None]:
    """The template of a pasted log_format value, without `escape=...` and the config's quotes."""
    escape = None
    match = _ESCAPE_PARAM.match(spec)
    if match:
        escape = match[1]
        spec = spec[match.end() :]
    stripped = spec.strip()
    if stripped.startswith("'"):
        parts = list(_QUOTED_PARTS.finditer(stripped))
        if parts and "".join(m[0] for m in parts) == stripped:
            return "".join(m[1].replace("\\'", "'") for m in parts), escape
    return spec, escape


def _tokenize(template: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    for match in _VARIABLE.finditer(template):
        if match.start() > pos:
            tokens.append(template[pos : match.start()])
        tokens.append(_Var(match[1] or match[2]))
        pos = match.end()
    if pos < len(template):
        tokens.append(template[pos:])
    return _merge_uri_args(tokens)


def _merge_uri_args(tokens: list[_Token]) -> list[_Token]:
    names = [t.name if isinstance(t, _Var) else None for t in tokens]
    for i in range(len(tokens) - 2):
        if names[i : i + 3] == ["uri", "is_args", "args"]:
            return [*tokens[:i], _Var(_URI_ARGS), *_merge_uri_args(tokens[i + 3 :])]
    return tokens


# ---------------------------------------------------------------- text formats: the split plan


@dataclass
class _RawValues:
    """Per variable, the SQL of its raw text; time variables keep their literal prefix and
    suffix (`affixes`), which strptime then checks as part of its pattern."""

    exprs: dict[str, str] = field(default_factory=dict)
    affixes: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, name: str, expr: str) -> None:
        self.exprs.setdefault(name, expr)


def _text_layers(tokens: list[_Token], spec: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    names = _variable_names(tokens)
    if not any(v in names for v in _TIME_VARS):
        raise UsageError(f"log format {spec!r} has no $time_local, $time_iso8601 or $msec")
    if not any(v in names for v in (*_TARGET_VARS, _URI_ARGS)):
        raise UsageError(f"log format {spec!r} has no $request, $request_uri or $uri")
    segments = _split_segments(tokens)
    split: _Columns = [("_q", "string_split(line, '\"')"), ("_bs", "contains(line, '\\')")]
    words: _Columns = []
    raw = _RawValues()
    checks = [f"len(_q) = {len(segments)}"]
    for index, segment in enumerate(segments, start=1):
        checks.extend(_plan_segment(f"_q[{index}]", f"_w{index}", segment, words, raw))
    values: _Columns = [("_ok", " AND ".join(checks))]
    values += [(_raw_alias(n), raw.exprs[n]) for n in names]
    texts: _Columns = [(_text_alias(n), _text_value(n, raw.affixes.get(n))) for n in names]
    canonical = _canonical_layers(names, raw.affixes, "does not match log format", json_lines=False)
    layers = [split, words, values, texts, *canonical]
    return tuple(tuple(layer) for layer in layers if layer)


def _variable_names(tokens: list[_Token]) -> list[str]:
    """Distinct variable names in order of first appearance."""
    return list(dict.fromkeys(t.name for t in tokens if isinstance(t, _Var)))


def _split_segments(tokens: list[_Token]) -> list[list[_Token]]:
    """The tokens between the format's literal double quotes: nginx escapes '"' in every value."""
    segments: list[list[_Token]] = [[]]
    for token in tokens:
        if isinstance(token, _Var):
            segments[-1].append(token)
            continue
        first, *rest = token.split('"')
        if first:
            segments[-1].append(first)
        for piece in rest:
            segments.append([piece] if piece else [])
    return segments


_WordPart = str | tuple[str, int | None]  # a literal, or (variable, part index; None: any spaces)


def _plan_segment(
    piece: str, words_alias: str, segment: list[_Token], words: _Columns, raw: _RawValues
) -> list[str]:
    """Checks that `piece` matches the segment; adds the variables' raw SQL values to `raw`."""
    variables = [t for t in segment if isinstance(t, _Var)]
    if not variables:
        return [f"{piece} = {_literal(''.join(t for t in segment if isinstance(t, str)))}"]
    if len(variables) == 1:
        return _take_affixed(piece, variables[0].name, *_affixes(segment), raw)
    template = _word_template(segment)
    elastic = [
        i for i, word in enumerate(template) if any(isinstance(p, tuple) and p[1] is None for p in word)
    ]
    if len(elastic) > 1 or any(sum(isinstance(p, tuple) for p in word) > 1 for word in template):
        return _take_regexp(piece, segment, raw)
    words.append((words_alias, f"string_split({piece}, ' ')"))
    count = len(template)
    checks = [f"len({words_alias}) {'>=' if elastic else '='} {count}"]
    spans: dict[str, list[tuple[str, str, str]]] = {}
    for i, word in enumerate(template):
        ref = _word_ref(words_alias, i, count, elastic[0] if elastic else None)
        literals = [p for p in word if isinstance(p, str)]
        if len(literals) == len(word):
            checks.append(f"{ref} = {_literal(''.join(literals))}")
            continue
        name = next(p[0] for p in word if isinstance(p, tuple))
        spans.setdefault(name, []).append((ref, *_affixes(word)))
    for name, parts in spans.items():
        joined = " || ' ' || ".join(ref for ref, _, _ in parts)
        checks.extend(_take_affixed(joined, name, parts[0][1], parts[-1][2], raw))
    return checks


def _word_ref(words_alias: str, i: int, count: int, elastic: int | None) -> str:
    """Word i of the template: counted from the end after the elastic word, which takes the
    words in between (cheaply when it has no space, the usual case)."""
    if elastic is None or i < elastic:
        return f"{words_alias}[{i + 1}]"
    if i > elastic:
        return f"{words_alias}[{i - count}]"
    joined = f"array_to_string(list_slice({words_alias}, {i + 1}, {i - count}), ' ')"
    return f"CASE WHEN len({words_alias}) = {count} THEN {words_alias}[{i + 1}] ELSE {joined} END"


def _word_template(segment: list[_Token]) -> list[list[_WordPart]]:
    """The segment as space-separated words; a variable with spaces spans several words."""
    template: list[list[_WordPart]] = [[]]
    for token in segment:
        if isinstance(token, str):
            first, *rest = token.split(" ")
            template[-1].append(first)
            template.extend([piece] for piece in rest)
        elif token.name in _SPACES_IN:
            template[-1].append((token.name, 0))
            template.extend([(token.name, k)] for k in range(1, _SPACES_IN[token.name] + 1))
        else:
            template[-1].append((token.name, 0 if token.name in _SPACE_FREE else None))
    return template


def _affixes(parts: list[_WordPart] | list[_Token]) -> tuple[str, str]:
    """The literal text before and after the one variable of `parts`."""
    index = next(i for i, part in enumerate(parts) if not isinstance(part, str))
    prefix = "".join(p for p in parts[:index] if isinstance(p, str))
    suffix = "".join(p for p in parts[index + 1 :] if isinstance(p, str))
    return prefix, suffix


def _take_affixed(ref: str, name: str, prefix: str, suffix: str, raw: _RawValues) -> list[str]:
    """`ref` is prefix + the variable + suffix: record the variable, return the checks."""
    if name in ("time_local", "time_iso8601"):
        raw.add(name, ref)
        raw.affixes.setdefault(name, (prefix, suffix))
        return []
    raw.add(name, _strip_affixes(ref, prefix, suffix))
    checks = []
    if prefix:
        checks.append(f"starts_with({ref}, {_literal(prefix)})")
    if suffix:
        checks.append(f"ends_with({ref}, {_literal(suffix)})")
    if prefix and suffix:
        checks.append(f"strlen({ref}) >= {len((prefix + suffix).encode())}")
    return checks


def _strip_affixes(ref: str, prefix: str, suffix: str) -> str:
    if not prefix and not suffix:
        return ref
    if not suffix:
        return f"substr({ref}, {len(prefix) + 1})"
    return f"substr({ref}, {len(prefix) + 1}, length({ref}) - {len(prefix) + len(suffix)})"


def _take_regexp(piece: str, segment: list[_Token], raw: _RawValues) -> list[str]:
    """Fallback for what splitting cannot express: several variables that may hold spaces, or
    variables with no literal between them. RE2 capture groups are slow, but only such formats pay.

    The values are those of the match of the whole piece (anchored: regexp_extract finds the
    first match, which ends early when the last variable may be empty), in RE2's leftmost-first
    order: a variable that may hold any text takes the shortest text that lets the rest match, a
    word or an upstream list the longest (a list's elements, each longest first)."""
    pattern = ""
    names: list[str] = []
    for token in segment:
        if isinstance(token, str):
            pattern += _re2_escape(token)
        else:
            names.append(token.name)
            pattern += (
                "([^ ]*)" if token.name in _SPACE_FREE else _LIST_RE2 if token.name in _LISTS else "(.*?)"
            )
    groups = ", ".join(_literal(f"g{i}") for i in range(len(names)))
    extracted = f"regexp_extract({piece}, {_literal('^' + pattern + '$')}, [{groups}])"
    for i, name in enumerate(names):
        raw.add(name, f"{extracted}.g{i}")
    return [f"regexp_full_match({piece}, {_literal(pattern)})"]


def _re2_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\.^$|?*+()[]{}" else c for c in text)


def _raw_alias(name: str) -> str:
    return '"_v_' + name.replace("$", "_") + '"'


def _text_alias(name: str) -> str:
    return '"_t_' + name.replace("$", "_") + '"'


def _text_value(name: str, affixes: tuple[str, str] | None) -> str:
    """A variable's value as text: nginx writes '-' for empty values and escapes with \\xHH."""
    value = f"nullif({_strip_affixes(_raw_alias(name), *affixes) if affixes else _raw_alias(name)}, '-')"
    if name in _NEVER_ESCAPED:
        return value
    return f"CASE WHEN _bs THEN {_unescaped(value)} ELSE {value} END"


def _unescaped(expr: str) -> str:
    """Decode nginx's \\xHH escapes (UTF-8 reassembled, invalid bytes as U+FFFD) in DuckDB.

    Only lines with a backslash pay: each escape becomes %HH for url_decode, after '%' itself
    is protected, and escapes that are not part of well-formed UTF-8 become U+FFFD first."""
    percent = f"replace({expr}, '%', '%25')"
    for pattern, replacement in _UTF8_ESCAPES:
        percent = f"regexp_replace({percent}, {_literal(pattern)}, {_literal(replacement)}, 'g')"
    return f"coalesce(try(url_decode({percent})), {expr})"


# ---------------------------------------------------------------- JSON formats


def _json_lines_layers() -> tuple[tuple[tuple[str, str], ...], ...]:
    keys = [*_JSON_CANONICAL_KEYS, "http_x_forwarded_for"]
    paths = ", ".join(_literal(_json_path([k])) for k in keys)
    removed = _literal(json.dumps(dict.fromkeys(_JSON_CANONICAL_KEYS)))
    parse: _Columns = [
        ("_ok", "CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' ELSE false END"),
        ("_j", f"CASE WHEN _ok THEN json_extract_string(line, [{paths}]) END"),
        # VARCHAR as `hits.extra` and the compiled pass's (DuckDB's JSON type otherwise)
        (
            "_extra",
            f"CASE WHEN _ok THEN CAST(nullif(json_merge_patch(line, {removed}), '{{}}') AS VARCHAR) END",
        ),
    ]
    texts: _Columns = [
        (_text_alias(k), f"nullif(nullif(_j[{i}], ''), '-')") for i, k in enumerate(keys, start=1)
    ]
    raws: _Columns = [(_raw_alias(k), _text_alias(k)) for k in keys]
    layers = [parse, texts + raws, *_canonical_layers(keys, {}, "invalid JSON", json_lines=True)]
    return tuple(tuple(layer) for layer in layers)


def _json_template_layers(template: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    fields = list(_json_template_fields(template))
    names = list(dict.fromkeys(name for _, name in fields if name is not None))
    paths = ", ".join(_literal(_json_path(path)) for path, _ in fields)
    parse: _Columns = [
        ("_ok", "CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' ELSE false END"),
        ("_j", f"CASE WHEN _ok THEN json_extract_string(line, [{paths}]) END"),
    ]
    first_field: dict[str, int] = {}
    for i, (_, name) in enumerate(fields, start=1):
        if name is not None:
            first_field.setdefault(name, i)
    texts: _Columns = [(_text_alias(n), f"nullif(nullif(_j[{first_field[n]}], ''), '-')") for n in names]
    texts += [(_raw_alias(n), _text_alias(n)) for n in names]
    composite = [
        (".".join(path), f"nullif(_j[{i}], '')")
        for i, (path, name) in enumerate(fields, start=1)
        if name is None
    ]
    texts += [(_text_alias(key), expr) for key, expr in composite]
    canonical = _canonical_layers(
        names, {}, "invalid JSON", json_lines=False, composite=[k for k, _ in composite]
    )
    layers = [parse, texts, *canonical]
    return tuple(tuple(layer) for layer in layers)


def _json_template_fields(template: str) -> Iterator[tuple[list[str], str | None]]:
    """(key path, variable) per value of the template; variable None for mixed text like "$a/$b"."""
    try:
        parsed = json.loads(_mark_json_variables(template))
    except json.JSONDecodeError as exc:
        raise UsageError(f"log format {template!r} looks like JSON but is not valid JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise UsageError(f"log format {template!r}: a JSON log format must be an object")
    yield from _walk_json_template(parsed, [])


def _mark_json_variables(template: str) -> str:
    """The template with each $variable turned into a JSON-safe marker (quoted when it is bare)."""
    out: list[str] = []
    in_string = escaped = False
    pos = 0
    while pos < len(template):
        char = template[pos]
        match = _VARIABLE.match(template, pos) if char == "$" else None
        if match:
            marker = "\\u0000" + (match[1] or match[2]) + "\\u0000"
            out.append(marker if in_string else f'"{marker}"')
            pos = match.end()
            escaped = False
            continue
        if char == '"' and not escaped:
            in_string = not in_string
        escaped = in_string and char == "\\" and not escaped
        out.append(char)
        pos += 1
    return "".join(out)


def _walk_json_template(node: dict[str, object], path: list[str]) -> Iterator[tuple[list[str], str | None]]:
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _walk_json_template(value, [*path, key])
        elif isinstance(value, str) and "\0" in value:
            whole = re.fullmatch(r"\0([A-Za-z0-9_]+)\0", value)
            yield [*path, key], whole[1] if whole else None


def _json_path(keys: list[str]) -> str:
    return "$" + "".join("." + json.dumps(k) for k in keys)


# ---------------------------------------------------------------- the canonical columns


def _canonical_layers(
    names: list[str],
    affixes: dict[str, tuple[str, str]],
    mismatch: str,
    json_lines: bool,
    composite: list[str] | None = None,
) -> list[_Columns]:
    """From the variables' raw and text columns to the output columns and the reason.

    Where several variables can feed a column, the first present is the one used (the others stay
    in `extra`) and the rest back it up in a coalesce: in JSON lines the keys vary per line."""
    present = set(names)
    used: set[str] = set()

    def pick(*candidates: str) -> list[str]:
        found = [c for c in candidates if c in present]
        used.update(found[:1])
        return found

    def text(*candidates: str) -> str:
        return _coalesce([_text_alias(n) for n in pick(*candidates)])

    ip = [
        _text_alias(n) if n == "remote_addr" else f"trim(split_part({_text_alias(n)}, ',', 1))"
        for n in pick("remote_addr", "http_x_forwarded_for")
    ]
    times = pick(*_TIME_VARS)
    has_request = bool(pick("request"))
    target = [_text_alias(n) for n in pick("request_uri", _URI_ARGS)]
    if "uri" in present:
        args = f" || coalesce('?' || {_text_alias('args')}, '')" if pick("args") else ""
        target.append(f"{_text_alias('uri')}{args}")
        used.add("uri")
    uid = text("uid_got", "uid_set")
    used.update(("uid_got", "uid_set"))
    statuses = pick("status")
    sizes = pick("body_bytes_sent", "bytes_sent")
    values: _Columns = [
        ("ip", _coalesce(ip)),
        ("ts", _coalesce([_timestamp(n, _raw_alias(n), affixes.get(n, ("", ""))) for n in times])),
        ("_req", _text_alias("request") if has_request else "NULL::VARCHAR"),
        ("_method", text("request_method")),
        ("_target", _coalesce(target)),
        ("_protocol", text("server_protocol")),
        ("_status_raw", _coalesce([_raw_alias(n) for n in statuses])),
        ("_bytes_raw", _coalesce([f"nullif({_raw_alias(n)}, '-')" for n in sizes])),
        ("referer", text("http_referer")),
        ("user_agent", text("http_user_agent")),
        ("uid", f"substr({uid}, strpos({uid}, '=') + 1)" if uid != "NULL::VARCHAR" else uid),
        (
            "extra",
            "_extra" if json_lines else _json_object([n for n in names if n not in used] + (composite or [])),
        ),
    ]
    if json_lines:
        values.append(("_time_raw", _coalesce([_raw_alias(n) for n in times])))
    request: _Columns = [
        ("_rp", "string_split(_req, ' ')"),
        ("status", "CASE WHEN strlen(_status_raw) = 3 THEN try_cast(_status_raw AS SMALLINT) END"),
        ("bytes", "try_cast(_bytes_raw AS BIGINT)"),
    ]
    columns: _Columns = [
        ("method", _request_part("_rp[1]", "_rp[1]", "_method")),
        ("target", _request_part("_rp[2]", "array_to_string(list_slice(_rp, 2, -2), ' ')", "_target")),
        ("protocol", _request_part("_rp[3]", "_rp[-1]", "_protocol")),
    ]
    reasons = ["WHEN line = '' THEN 'empty line'"]
    reasons.append(f"WHEN NOT _ok THEN {_literal(mismatch)}")
    if json_lines:
        reasons.append("WHEN _time_raw IS NULL THEN 'missing timestamp'")
    reasons.append("WHEN ts IS NULL THEN 'bad timestamp'")
    if statuses:
        reasons.append(
            f"WHEN status IS NULL {'AND _status_raw IS NOT NULL ' if json_lines else ''}THEN 'bad status'"
        )
    if sizes:
        reasons.append("WHEN _bytes_raw IS NOT NULL AND (bytes IS NULL OR bytes < 0) THEN 'bad bytes'")
    columns.append(("reason", f"CASE {' '.join(reasons)} END"))
    return [values, request, columns]


def _request_part(usual: str, other: str, fallback: str) -> str:
    """A part of $request ("GET /x HTTP/1.1"): the usual three words, else the odd shapes nginx
    also logs (HTTP/0.9 "GET /x", one word of garbage, a target with spaces)."""
    if usual == other:
        odd = f"CASE WHEN len(_rp) >= 2 THEN {other} END"
    elif usual == "_rp[2]":
        odd = f"CASE WHEN len(_rp) = 2 THEN _rp[2] WHEN len(_rp) > 3 THEN {other} END"
    else:
        odd = f"CASE WHEN len(_rp) > 3 THEN {other} END"
    part = f"CASE WHEN len(_rp) = 3 THEN {usual} ELSE {odd} END"
    return part if fallback == "NULL::VARCHAR" else f"coalesce({part}, {fallback})"


def _timestamp(name: str, raw: str, affixes: tuple[str, str]) -> str:
    """UTC from the variable's text; through epoch_us so the session's TimeZone plays no part."""
    if name == "msec":
        return _in_range(f"try(CAST(try_cast({raw} AS DECIMAL(18, 3)) * 1000 AS BIGINT) * 1000)")
    body = "%Y-%m-%dT%H:%M:%S%z" if name == "time_iso8601" else "%d/%b/%Y:%H:%M:%S %z"
    prefix, suffix = (a.replace("%", "%%") for a in affixes)
    parsed = f"epoch_us(try_strptime({raw}, {_literal(prefix + body + suffix)}))"
    # strptime's %z takes any two digits: +2500 or +0199 is no offset nginx writes
    text = f"left({raw}, length({raw}) - {len(affixes[1])})" if affixes[1] else raw
    offset = f"regexp_extract({text}, '[+-]([0-9][0-9]):?([0-9][0-9])$', ['h', 'm'])"
    bad = f"(try_cast({offset}.h AS INTEGER) > 23 OR try_cast({offset}.m AS INTEGER) > 59)"
    return f"CASE WHEN {bad} THEN NULL ELSE {_in_range(parsed)} END"


# Times are kept in UTC years 1970-9999 (as _fastlog.c): before or after, a 'bad timestamp'.
_MAX_EPOCH_US = 253402300800 * 1_000_000


def _in_range(epoch_us: str) -> str:
    return f"CASE WHEN {epoch_us} >= 0 AND {epoch_us} < {_MAX_EPOCH_US} THEN make_timestamp({epoch_us}) END"


def _coalesce(exprs: list[str]) -> str:
    if not exprs:
        return "NULL::VARCHAR"
    return exprs[0] if len(exprs) == 1 else f"coalesce({', '.join(exprs)})"


def _json_object(names: list[str]) -> str:
    """A JSON object of the non-NULL text columns of `names`, NULL when all are."""
    members = [f"{_literal(json.dumps(n) + ':')} || to_json({_text_alias(n)})" for n in names]
    if not members:
        return "NULL::VARCHAR"
    if len(members) == 1:
        return f"'{{' || {members[0]} || '}}'"
    return f"nullif('{{' || concat_ws(',', {', '.join(members)}) || '}}', '{{}}')"


def _literal(text: str) -> str:
    """A SQL string literal; the text comes from the user's config, never from a log line."""
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
