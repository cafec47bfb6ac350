"""Log formats: each builtin and spec kind parsed by a real in-memory DuckDB, escapes, odd lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from conftest import apache_logs
from hypothesis import given, settings
from hypothesis import strategies as st

from tracklog.errors import UsageError
from tracklog.ingest.formats import OUTPUT_COLUMNS, resolve_format

LINE = (
    '203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif?s=abc HTTP/1.1" 200 43 '
    '"https://mail.example/" "Mozilla/5.0 (X11)"'
)


def parse(name_or_spec: str, lines: list[str], named: dict[str, str] | None = None) -> list[dict[str, Any]]:
    con = duckdb.connect()
    try:
        table = pa.table(
            {
                "line_no": pa.array(range(1, len(lines) + 1), pa.int64()),
                "byte_offset": pa.array([0] * len(lines), pa.int64()),
                "line": pa.array(lines, pa.string()),
            }
        )
        con.register("lines", table)
        cursor = con.execute(
            resolve_format(name_or_spec, named or {}).select_sql("lines") + " ORDER BY line_no"
        )
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def parse_one(name_or_spec: str, line: str, named: dict[str, str] | None = None) -> dict[str, Any]:
    return parse(name_or_spec, [line], named)[0]


def test_output_columns_in_contract_order() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE lines (line_no BIGINT, byte_offset BIGINT, line VARCHAR)")
    types = con.execute(f"DESCRIBE {resolve_format('combined', {}).select_sql('lines')}").fetchall()
    assert [(r[0], r[1]) for r in types] == [
        ("line_no", "BIGINT"),
        ("byte_offset", "BIGINT"),
        ("line", "VARCHAR"),
        ("reason", "VARCHAR"),
        ("ts", "TIMESTAMP"),
        ("ip", "VARCHAR"),
        ("method", "VARCHAR"),
        ("target", "VARCHAR"),
        ("protocol", "VARCHAR"),
        ("status", "SMALLINT"),
        ("bytes", "BIGINT"),
        ("referer", "VARCHAR"),
        ("user_agent", "VARCHAR"),
        ("uid", "VARCHAR"),
        ("extra", "VARCHAR"),
    ]
    assert tuple(r[0] for r in types) == OUTPUT_COLUMNS


def test_combined_converts_time_to_utc() -> None:
    row = parse_one("combined", LINE)
    assert row == {
        "line_no": 1,
        "byte_offset": 0,
        "line": LINE,
        "reason": None,
        "ts": datetime(2026, 11, 27, 8, 14),
        "ip": "203.0.113.9",
        "method": "GET",
        "target": "/o/NL/r1.gif?s=abc",
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes": 43,
        "referer": "https://mail.example/",
        "user_agent": "Mozilla/5.0 (X11)",
        "uid": None,
        "extra": None,
    }


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        ("27/Nov/2026:09:14:00 +0000", datetime(2026, 11, 27, 9, 14)),
        ("27/Nov/2026:00:30:00 +0530", datetime(2026, 11, 26, 19, 0)),
        ("31/Dec/2026:23:00:00 -0200", datetime(2027, 1, 1, 1, 0)),
    ],
)
def test_time_local_offsets(stamp: str, utc: datetime) -> None:
    assert parse_one("combined", LINE.replace("27/Nov/2026:09:14:00 +0100", stamp))["ts"] == utc


def test_common_and_dashes() -> None:
    line = '198.51.100.7 - alice [03/Nov/2026:10:00:00 +0000] "HEAD /m/D1/R1 HTTP/1.0" 304 -'
    row = parse_one("common", line)
    assert (row["reason"], row["method"], row["target"], row["status"], row["bytes"]) == (
        None,
        "HEAD",
        "/m/D1/R1",
        304,
        None,
    )
    assert (row["referer"], row["user_agent"], row["extra"]) == (None, None, '{"remote_user":"alice"}')


def test_remote_user_with_spaces() -> None:
    row = parse_one("combined", LINE.replace(" - - [", " - the boss [", 1))
    assert row["reason"] is None
    assert json.loads(row["extra"]) == {"remote_user": "the boss"}


def test_nginx_escapes_are_decoded() -> None:
    line = (
        r'203.0.113.9 - - [27/Nov/2026:09:14:00 +0000] "GET /caf\xC3\xA9?q=%41 HTTP/1.1" 200 43 '
        r'"-" "say \x22hi\x22 C:\x5Cx41 tab\x09 100% \xE2\x82\xAC"'
    )
    row = parse_one("combined", line)
    assert row["reason"] is None
    assert row["target"] == "/café?q=%41"
    assert row["user_agent"] == 'say "hi" C:\\x41 tab\t 100% €'


def test_invalid_utf8_escapes_become_replacement_characters() -> None:
    line = (
        r'203.0.113.9 - - [27/Nov/2026:09:14:00 +0000] "\x16\x03\x01\x00\xFC\x03" 400 150 "-" "a\xC3(b\xFF"'
    )
    row = parse_one("combined", line)
    assert row["reason"] is None
    assert (row["method"], row["target"], row["protocol"]) == (None, None, None)
    assert row["user_agent"] == "a\ufffd(b\ufffd"
    assert row["status"] == 400


def test_requests_of_odd_shapes() -> None:
    def request(req: str) -> tuple[str | None, str | None, str | None]:
        row = parse_one("combined", LINE.replace("GET /o/NL/r1.gif?s=abc HTTP/1.1", req))
        assert row["reason"] is None
        return row["method"], row["target"], row["protocol"]

    assert request("GET /x") == ("GET", "/x", None)
    assert request("GET /a b HTTP/1.1") == ("GET", "/a b", "HTTP/1.1")
    assert request("garbage") == (None, None, None)
    assert request("-") == (None, None, None)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "empty line"),
        ("garbage", "does not match log format"),
        ("\ufffd\ufffd\x03\x01\ufffd", "does not match log format"),
        (LINE + ' "extra"', "does not match log format"),
        (LINE.replace(' "https://mail.example/"', ""), "does not match log format"),
        (LINE.replace(" - - [", " x - ["), "does not match log format"),
        (LINE.replace("27/Nov/2026:09:14:00", "27/Foo/2026:09:14:00"), "bad timestamp"),
        (LINE.replace(" 200 43 ", " 2000 43 "), "bad status"),
        (LINE.replace(" 200 43 ", " OK 43 "), "bad status"),
        (LINE.replace(" 200 43 ", " 200 x "), "bad bytes"),
        (LINE[:-1], "does not match log format"),
    ],
)
def test_odd_lines_get_a_reason(line: str, reason: str) -> None:
    assert parse_one("combined", line)["reason"] == reason


def test_a_one_megabyte_line() -> None:
    long_agent = "A" * 1_000_000
    rows = parse("combined", [LINE.replace("Mozilla/5.0 (X11)", long_agent), "x" * 1_000_000])
    assert rows[0]["reason"] is None
    assert rows[0]["user_agent"] == long_agent
    assert rows[1]["reason"] == "does not match log format"


def test_custom_spec_with_extra_variables_and_uid() -> None:
    spec = (
        '$remote_addr [$time_iso8601] "$request_method $request_uri $server_protocol" $status $bytes_sent '
        'rt=$request_time $uid_got $host "$http_user_agent"'
    )
    line = (
        '2001:db8::1 [2026-11-27T09:14:00+01:00] "GET /c/D/L/R?x=1 HTTP/2.0" 302 512 '
        'rt=0.004 uid=0A0B0C0D5E6F7A8B track.example "curl/8"'
    )
    row = parse_one(spec, line)
    assert row["reason"] is None
    assert (row["ip"], row["ts"], row["method"], row["target"], row["protocol"]) == (
        "2001:db8::1",
        datetime(2026, 11, 27, 8, 14),
        "GET",
        "/c/D/L/R?x=1",
        "HTTP/2.0",
    )
    assert (row["status"], row["bytes"], row["uid"], row["user_agent"]) == (
        302,
        512,
        "0A0B0C0D5E6F7A8B",
        "curl/8",
    )
    assert json.loads(row["extra"]) == {"request_time": "0.004", "host": "track.example"}


def test_named_format_from_config_and_msec() -> None:
    named = {"timed": '$msec $remote_addr "$request" $status "$http_user_agent" $uid_set'}
    line = '1764234840.123 192.0.2.1 "GET /o/D/R.gif HTTP/1.1" 200 "Mail" uid=ABCDEF'
    fmt = resolve_format("timed", named)
    assert (fmt.name, fmt.spec) == ("timed", named["timed"])
    row = parse_one("timed", line, named)
    assert row["reason"] is None
    assert row["ts"] == datetime(2025, 11, 27, 9, 14, 0, 123000)
    assert (row["ip"], row["target"], row["status"], row["user_agent"], row["uid"]) == (
        "192.0.2.1",
        "/o/D/R.gif",
        200,
        "Mail",
        "ABCDEF",
    )
    assert row["extra"] is None


def test_uri_and_args_make_the_target() -> None:
    spec = '$remote_addr [$time_local] "$request_method $uri$is_args$args" $status'
    line = '192.0.2.1 [27/Nov/2026:09:14:00 +0000] "GET /o/D/R.gif?s=1" 200'
    row = parse_one(spec, line)
    assert (row["reason"], row["method"], row["target"]) == (None, "GET", "/o/D/R.gif?s=1")


def test_unquoted_spaced_variables_fall_back_to_a_regexp() -> None:
    spec = '$remote_addr $http_user_agent | $http_referer [$time_local] "$request"'
    line = '192.0.2.1 Mozilla/5.0 (X11; Linux) | https://a.example/x y [27/Nov/2026:09:14:00 +0000] "GET / HTTP/1.1"'
    row = parse_one(spec, line)
    assert (row["reason"], row["user_agent"], row["referer"]) == (
        None,
        "Mozilla/5.0 (X11; Linux)",
        "https://a.example/x y",
    )
    assert parse_one(spec, "192.0.2.1 no bar here")["reason"] == "does not match log format"


INGRESS_NGINX = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
    '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
    "[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length "
    "$upstream_response_time $upstream_status $req_id"
)


def test_ingress_nginx_default_format() -> None:
    """ingress-nginx's default log_format: several upstream lists after the last quote, each
    taking its whole list (one server, several, an internal redirect's two groups), and the
    request id at the end (the first match of an unanchored regexp left it empty)."""
    head = '192.0.2.1 - - [27/Nov/2026:09:14:00 +0000] "GET /c/D/R/1?s=x HTTP/1.1" 302 0 "-" "Mozilla/5.0" '
    one = parse_one(
        INGRESS_NGINX, head + "512 0.004 [default-tracking-80] [] 10.0.0.7:8080 0 0.002 302 5f3c9a1e"
    )
    assert (one["reason"], one["status"], one["user_agent"]) == (None, 302, "Mozilla/5.0")
    assert json.loads(one["extra"]) == {
        "request_length": "512",
        "request_time": "0.004",
        "proxy_upstream_name": "default-tracking-80",
        "proxy_alternative_upstream_name": "",
        "upstream_addr": "10.0.0.7:8080",
        "upstream_response_length": "0",
        "upstream_response_time": "0.002",
        "upstream_status": "302",
        "req_id": "5f3c9a1e",
    }
    lists = "10.0.0.7:8080, 10.0.0.8:8080 : 10.0.1.1:80 0, 0 : 5 0.002, 0.002 : 0.001 502, 302 : 200 ab12"
    many = json.loads(parse_one(INGRESS_NGINX, head + "512 0.004 [t-80] [t-canary-80] " + lists)["extra"])
    assert (many["upstream_addr"], many["upstream_response_length"]) == (
        "10.0.0.7:8080, 10.0.0.8:8080 : 10.0.1.1:80",
        "0, 0 : 5",
    )
    assert (many["upstream_response_time"], many["upstream_status"], many["req_id"]) == (
        "0.002, 0.002 : 0.001",
        "502, 302 : 200",
        "ab12",
    )
    assert many["proxy_alternative_upstream_name"] == "t-canary-80"
    # a list whose elements do not fit (an element with a space) does not match the format
    bad = head + "512 0.004 [t-80] [] 10.0.0.7:8080,  10.0.0.8:8080 0 0.002 302 ab12"
    assert parse_one(INGRESS_NGINX, bad)["reason"] == "does not match log format"


def test_regexp_values_are_those_of_the_whole_line() -> None:
    """Variables that may hold spaces, matched by a regular expression: each takes the shortest
    text that lets the rest of the line match, the last one the rest."""
    spec = '$remote_addr [$time_local] "$request" $status $http_x_a $http_x_b'
    head = '192.0.2.1 [27/Nov/2026:09:14:00 +0000] "GET / HTTP/1.1" 200 '
    assert json.loads(parse_one(spec, head + "a b c d")["extra"]) == {"http_x_a": "a", "http_x_b": "b c d"}
    bracketed = '$remote_addr [$time_local] "$request" $status [$http_x_a] $http_x_b [$http_x_c]'
    row = parse_one(bracketed, head + "[x] y] z [w] v]")
    assert json.loads(row["extra"]) == {"http_x_a": "x", "http_x_b": "y] z", "http_x_c": "w] v"}


def test_json_lines_by_variable_name() -> None:
    lines = [
        json.dumps(
            {
                "remote_addr": "192.0.2.1",
                "time_iso8601": "2026-11-27T09:14:00+01:00",
                "request": "GET /o/D/R.gif HTTP/1.1",
                "status": 200,
                "body_bytes_sent": "43",
                "http_referer": "",
                "http_user_agent": 'caf\u00e9 "q"',
                "uid_got": "uid=00AA",
                "upstream_addr": "10.0.0.1:80",
                "request_time": 0.001,
            }
        ),
        '{"remote_addr":"192.0.2.2","msec":"1764234840.5","request_method":"GET","request_uri":"/x","status":"404"}',
        '{"remote_addr":"192.0.2.2"}',
        "not json",
        "[1, 2]",
        '{"msec":"1764234840.5","status":"20x"}',
        "",
    ]
    rows = parse("json", lines)
    first = rows[0]
    assert (first["reason"], first["ts"], first["ip"], first["method"], first["target"]) == (
        None,
        datetime(2026, 11, 27, 8, 14),
        "192.0.2.1",
        "GET",
        "/o/D/R.gif",
    )
    assert (first["status"], first["bytes"], first["referer"], first["user_agent"], first["uid"]) == (
        200,
        43,
        None,
        'café "q"',
        "00AA",
    )
    assert json.loads(first["extra"]) == {"upstream_addr": "10.0.0.1:80", "request_time": 0.001}
    second = rows[1]
    assert (second["reason"], second["ts"], second["method"], second["target"], second["status"]) == (
        None,
        datetime(2025, 11, 27, 9, 14, 0, 500000),
        "GET",
        "/x",
        404,
    )
    assert second["extra"] is None
    assert [r["reason"] for r in rows[2:]] == [
        "missing timestamp",
        "invalid JSON",
        "invalid JSON",
        "bad status",
        "empty line",
    ]


def test_json_template_spec_with_escape_prefix() -> None:
    spec = (
        'escape=json \'{"ip":"$remote_addr","t":"$time_local","req":"$request","st":$status,'
        '"ua":"$http_user_agent","rt":"$request_time","where":"$host$uri"}\''
    )
    line = (
        '{"ip":"192.0.2.1","t":"27/Nov/2026:09:14:00 -0100","req":"GET /o/D/R.gif HTTP/1.1","st":200,'
        '"ua":"say \\"hi\\" \\u00e9\\\\","rt":"0.010","where":"a.example/o/D/R.gif"}'
    )
    row = parse_one(spec, line)
    assert row["reason"] is None
    assert (row["ip"], row["ts"], row["target"], row["status"]) == (
        "192.0.2.1",
        datetime(2026, 11, 27, 10, 14),
        "/o/D/R.gif",
        200,
    )
    assert row["user_agent"] == 'say "hi" é\\'
    assert json.loads(row["extra"]) == {"request_time": "0.010", "where": "a.example/o/D/R.gif"}
    assert parse_one(spec, '{"ip": "x"')["reason"] == "invalid JSON"


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown log format \"nope\".*combined, common, json, mine"):
        resolve_format("nope", {"mine": "$remote_addr [$time_local] $request_uri"})


def test_spec_without_time_or_target_is_refused() -> None:
    with pytest.raises(UsageError, match="time_local"):
        resolve_format('$remote_addr "$request"', {})
    with pytest.raises(UsageError, match="request"):
        resolve_format("$remote_addr [$time_local]", {})


_TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(lambda s: s != "-")
_WORD = st.text(st.characters(codec="utf-8", exclude_characters=" "), min_size=1, max_size=40)


def nginx_escape(text: str) -> str:
    """What nginx's default log escaping writes for a value."""
    out = []
    for byte in text.encode():
        out.append(f"\\x{byte:02X}" if byte in (0x22, 0x5C) or byte < 0x20 or byte >= 0x7F else chr(byte))
    return "".join(out)


@settings(max_examples=200, deadline=None)
@given(
    ip=st.ip_addresses().map(str),
    user=_TEXT,
    moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 1, 1)),
    offset_minutes=st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15),
    method=st.sampled_from(["GET", "POST", "HEAD"]),
    target=_WORD.filter(lambda s: s != "-"),
    status=st.integers(100, 599),
    size=st.integers(0, 10**12),
    referer=_TEXT,
    agent=_TEXT,
)
def test_combined_round_trip(
    ip: str,
    user: str,
    moment: datetime,
    offset_minutes: int,
    method: str,
    target: str,
    status: int,
    size: int,
    referer: str,
    agent: str,
) -> None:
    moment = moment.replace(microsecond=0)
    zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.replace(tzinfo=UTC).astimezone(zone)
    line = (
        f"{ip} - {nginx_escape(user)} [{local.strftime('%d/%b/%Y:%H:%M:%S %z')}] "
        f'"{method} {nginx_escape(target)} HTTP/1.1" {status} {size} '
        f'"{nginx_escape(referer)}" "{nginx_escape(agent)}"'
    )
    row = parse_one("combined", line)
    assert row["reason"] is None
    assert (row["ts"], row["ip"], row["method"], row["target"], row["protocol"]) == (
        moment,
        ip,
        method,
        target,
        "HTTP/1.1",
    )
    assert (row["status"], row["bytes"], row["referer"], row["user_agent"]) == (status, size, referer, agent)
    assert json.loads(row["extra"]) == {"remote_user": user}


def test_real_corpus() -> None:
    """10,000 real combined lines. The one whose user agent lacks its closing quote (cut short)
    is quarantined as 'does not match log format', not parsed leniently: nginx never writes
    such a line, so it is damage, and a format check that shrugs at it would shrug at others."""
    lines = apache_logs().read_text(encoding="utf-8", errors="replace").splitlines()
    assert len(lines) == 10_000
    rows = parse("combined", lines)
    bad = [r for r in rows if r["reason"] is not None]
    assert [
        (r["reason"], r["line"].endswith("Googlebot/2.1; +http://www.google.com/bot.html")) for r in bad
    ] == [("does not match log format", True)]
    good = [r for r in rows if r["reason"] is None]
    assert all(r["ts"] is not None and r["status"] is not None and r["ip"] for r in good)
    assert good[0]["ts"] == datetime(2015, 5, 17, 10, 5, 3)
