"""The compiled fast path against the SQL path: every column of tl_chunk, on hypothesis-made
hostile lines, the real Apache corpus, the sample logs, the conftest data set and the benchmark
generator's lines; the coverage of formats; the sanitizer build; the fuzz target."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import LOG_FORMAT, apache_logs, log_line, make_dataset
from fuzz_fastlog import (
    COMMON_ISO,
    HOST_FORMAT,
    INGRESS_FORMAT,
    ISO_FORMAT,
    MAIN_FORMAT,
    MSEC_FORMAT,
    OPTOUT_FORMAT,
    SECRET,
    SEEDS,
    SPECS,
    TIMING_FORMAT,
    UID_FORMAT,
    UPSTREAM_FORMAT,
    assert_lookup_same,
    assert_same,
    chunk_rows,
    deferred_rows,
    mutants,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracklog.errors import DataError
from tracklog.ingest import fastpath, sources
from tracklog.ingest.engine import split_lines
from tracklog.ingest.formats import COMBINED, COMMON, resolve_format
from tracklog.signing import hmac_pads, sign_path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_logs"
SOURCE = ROOT / "tracklog" / "ingest" / "_fastlog.c"

pytestmark = pytest.mark.skipif(not fastpath.extension_available(), reason="the C extension is not built")


# -- which formats take the fast path ------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "combined",
        "common",
        LOG_FORMAT,
        MSEC_FORMAT,
        fastpath.MSEC_HEAD,
        fastpath.MSEC_HEAD + ' "$host" "$uid_set"',
        COMBINED + ' "$uid_set" "$request_time" "$host"',
        MAIN_FORMAT,
        fastpath.MSEC_HEAD + ' "$http_x_forwarded_for" "$uid_got"',
        COMBINED + " $request_time",
        fastpath.MSEC_HEAD + ' "$uid_got" "$uid_set" $request_time $upstream_connect_time',
        TIMING_FORMAT,
        "json",
        ISO_FORMAT,
        COMMON_ISO,
        COMBINED.replace("$time_local", "$time_iso8601") + ' "$uid_got"',
        HOST_FORMAT,
        UPSTREAM_FORMAT,
        INGRESS_FORMAT,
        COMBINED + " $upstream_addr $upstream_response_time",  # two that may hold spaces: words
        COMBINED + " rt=$request_time urt=$upstream_response_time",  # text around two after them
        MAIN_FORMAT + " [$request_time] - $pipe",
        COMBINED + ' "$host" $request_time $pipe x$request_id',
        COMBINED + " rt=$request_time",
        COMBINED + ' $request_time "$host"',
        COMBINED + 'rt=$request_time uct="$upstream_connect_time"',  # nginx's blog: no space
        fastpath.MSEC_HEAD + ' "$uid_got" x "$uid_set" y=$request_time',
        "$host "
        + COMBINED.replace("$time_local", "$time_iso8601")
        + ' "$http_x_forwarded_for" rt=$request_time',
        "$host " + COMMON,
        "$server_name $request_id " + ISO_FORMAT,
        (
            "'$remote_addr - $remote_user [$time_local] ' '\"$request\" $status $body_bytes_sent ' "
            '\'"$http_referer" "$http_user_agent"\''
        ),
        (  # the nginx blog's, pasted from a config file
            "escape=default '$remote_addr - $remote_user [$time_local] \"$request\" ' "
            "'$status $body_bytes_sent \"$http_referer\" ' '\"$http_user_agent\"' "
            '\'rt=$request_time uct="$upstream_connect_time" uht="$upstream_header_time" '
            'urt="$upstream_response_time"\''
        ),
    ],
)
def test_formats_covered(spec: str) -> None:
    assert fastpath.plan_for(resolve_format(spec, {})) is not None


@pytest.mark.parametrize(
    "spec",
    [
        '$remote_addr [$time_iso8601] "$request" $status',
        COMBINED + ' "$remote_addr"',  # canonical: not an extra
        COMBINED + ' "$request_uri"',
        COMBINED + ' "$host" "$host"',
        COMMON + " $request_time",
        COMBINED + ' $request_time $pipe "$host"',  # two variables between quotes
        COMBINED + " $request_time$pipe x",  # two in one word
        COMBINED + ' x "$host" $request_time $pipe',  # text between quotes, then words
        COMBINED + ' "rt=$request_time"',  # text around a quoted one
        COMBINED + ' "$host$request_time"',  # two in one quoted value
        COMMON + " x",
        '$msec $remote_addr "$request" $status $body_bytes_sent',  # no referer, agent
        fastpath.MSEC_HEAD.replace("$msec", "$time_iso8601"),
        COMBINED.replace("[$time_local]", "$time_iso8601"),  # no brackets
        COMBINED.replace("[$time_local]", "[$time_iso8601] [$time_local]"),
        "$http_host " + COMBINED,  # may hold spaces: the SQL's regular expression
        "$uid_got " + COMBINED,  # the uid, not a plain extra
        "$remote_user " + COMBINED,  # twice
        "$status " + COMBINED,  # a column's variable
        "$host: " + COMBINED,  # text after it
        "$host " + fastpath.MSEC_HEAD,
    ],
)
def test_formats_left_to_sql(spec: str) -> None:
    assert fastpath.plan_for(resolve_format(spec, {})) is None


def test_plan_layouts() -> None:
    def layout(spec: str) -> int:
        plan = fastpath.plan_for(resolve_format(spec, {}))
        assert plan is not None
        return plan.layout

    assert layout(MSEC_FORMAT) == fastpath.MSEC_LAYOUT
    assert layout(LOG_FORMAT) == layout("combined") == fastpath.COMBINED_LAYOUT
    assert layout("common") == fastpath.COMMON_LAYOUT
    assert layout(ISO_FORMAT) == fastpath.COMBINED_ISO_LAYOUT
    assert layout(COMMON_ISO) == fastpath.COMMON_ISO_LAYOUT


def test_msec_times() -> None:
    """$msec read as the SQL reads it, checked against datetimes computed here: nginx's form
    ("seconds.mmm") in the C pass, every other form deferred to the SQL, which reads it (DuckDB's
    DECIMAL cast takes "1e9" or "+1.5") or quarantines it as a bad timestamp."""
    stamps = {
        "1793577601.123": datetime(2026, 11, 2, 0, 0, 1, 123_000),
        "0.000": datetime(1970, 1, 1),
        "0000000001.001": datetime(1970, 1, 1, 0, 0, 1, 1000),
        "253402300799.999": datetime(9999, 12, 31, 23, 59, 59, 999_000),
    }
    bad = ["253402300800.000", "-", "", "-1.000", "x.123"]  # past 9999, no number, before 1970
    odd = ["1e9", "+1.000", "1.5", "1.1234", "1793577601", ".123", "1793577601.123x"]
    words = [*stamps, *bad, *odd]
    lines = [f'{w} 203.0.113.9 "GET /o/D/R.gif HTTP/1.1" 200 43 "-" "-" "-" "-"' for w in words]
    buf = "\n".join(lines).encode() + b"\n"
    assert assert_same(buf, MSEC_FORMAT) == len(lines)
    assert deferred_rows(buf, MSEC_FORMAT) == len(bad) + len(odd)
    types, rows = chunk_rows(buf, MSEC_FORMAT, fast=True)
    names = [name for name, _ in types]
    ts, reason = names.index("ts"), names.index("reason")
    assert [r[ts] for r in rows[: len(stamps)]] == list(stamps.values())
    assert [r[reason] for r in rows[len(stamps) : len(stamps) + len(bad)]] == ["bad timestamp"] * len(bad)


def test_nginx_main_format() -> None:
    """nginx's `main` format ends with "$http_x_forwarded_for": kept in `extra` after
    $remote_user, as the SQL keeps it; a line without $remote_addr (nginx always writes one) goes
    to the SQL, which takes the address from the list's first entry."""
    head = '[27/Nov/2026:09:14:00 +0100] "GET /o/D1/r1.gif HTTP/1.1" 200 43 "-" "-"'
    cases = [
        (f'203.0.113.9 - - {head} "-"', "203.0.113.9", None),
        (
            f'203.0.113.9 - - {head} "10.0.0.1, 192.0.2.7"',
            "203.0.113.9",
            '{"http_x_forwarded_for":"10.0.0.1, 192.0.2.7"}',
        ),
        (
            f'203.0.113.9 - alice {head} "10.0.0.1\\x22"',
            "203.0.113.9",
            '{"remote_user":"alice","http_x_forwarded_for":"10.0.0.1\\""}',
        ),
        (
            f'- - - {head} " 10.0.0.7 , 192.0.2.7"',
            "10.0.0.7",
            '{"http_x_forwarded_for":" 10.0.0.7 , 192.0.2.7"}',
        ),
        (f'- - - {head} "-"', None, None),
    ]
    buf = "\n".join(line for line, _, _ in cases).encode() + b"\n"
    assert assert_same(buf, MAIN_FORMAT) == len(cases)
    assert deferred_rows(buf, MAIN_FORMAT) == 2  # the two without $remote_addr
    types, rows = chunk_rows(buf, MAIN_FORMAT, fast=True)
    names = [name for name, _ in types]
    ip, extra, kind = names.index("ip"), names.index("extra"), names.index("kind")
    assert [(r[ip], r[extra]) for r in rows] == [(want_ip, want_extra) for _, want_ip, want_extra in cases]
    assert {r[kind] for r in rows} == {"open"}


def test_iso_time_in_brackets() -> None:
    """[$time_iso8601] where common and combined have [$time_local]: one word, read in C when it is
    exactly as nginx writes it (UTC by hand below), every other form left to the SQL; the words
    before it as combined's ($remote_user may hold spaces)."""
    tail = '"GET /o/D1/r1.gif HTTP/1.1" 200 43 "-" "-" "-" 0.005'
    cases = [
        ("203.0.113.9 - - [2026-11-27T09:14:00+01:00]", datetime(2026, 11, 27, 8, 14), None),
        ("203.0.113.9 - the boss [2026-11-27T00:30:00-02:30]", datetime(2026, 11, 27, 3, 0), "the boss"),
        ("203.0.113.9 -  [2024-02-29T23:59:59+00:00]", datetime(2024, 2, 29, 23, 59, 59), ""),
        ("203.0.113.9 - - [1970-01-01T01:00:00+01:00]", datetime(1970, 1, 1), None),
    ]
    deferred = [  # the SQL's to judge
        "203.0.113.9 - - [2026-11-27T09:14:00+0100]",
        "203.0.113.9 - - [2026-11-27T09:14:00+24:00]",
        "203.0.113.9 - - [2026-02-29T09:14:00+01:00]",
        "203.0.113.9 - - [2026-11-27T09:14:00Z]",
        "203.0.113.9 - - [2026-11-27 09:14:00+01:00]",
        "203.0.113.9 - - [1969-12-31T23:59:59+00:00]",
    ]
    quarantined = ["203.0.113.9 - [2026-11-27T09:14:00+01:00]", "203.0.113.9 x - [2026-11-27T09:14:00+01:00]"]
    lines = [f"{head} {tail}" for head in [c[0] for c in cases] + deferred + quarantined]
    buf = "\n".join(lines).encode() + b"\n"
    for verify in (True, False):
        assert assert_same(buf, ISO_FORMAT, verify=verify) == len(lines)
    assert deferred_rows(buf, ISO_FORMAT) == len(deferred)
    types, rows = chunk_rows(buf, ISO_FORMAT, fast=True)
    names = [name for name, _ in types]
    ts, extra, reason = names.index("ts"), names.index("extra"), names.index("reason")
    assert [r[ts] for r in rows[: len(cases)]] == [want for _, want, _ in cases]
    users = [json.loads(r[extra]).get("remote_user") for r in rows[: len(cases)]]
    assert users == [user for _, _, user in cases]
    assert [r[reason] for r in rows[-2:]] == ["does not match log format"] * 2
    # common with it: the same times
    common = "\n".join(f'{head} "GET / HTTP/1.1" 200 43' for head, _, _ in cases).encode() + b"\n"
    assert assert_same(common, COMMON_ISO) == len(cases)
    assert deferred_rows(common, COMMON_ISO) == 0
    types, rows = chunk_rows(common, COMMON_ISO, fast=True)
    ts = [name for name, _ in types].index("ts")
    assert [r[ts] for r in rows] == [want for _, want, _ in cases]


def test_variables_before_the_address() -> None:
    """$host $server_port before $remote_addr: a word each, first in `extra` (in the format's
    order: before $remote_user), decoded unless never escaped, '-' left out. Expected `extra`
    written by hand; too few words before the address is no match."""
    rest = '[27/Nov/2026:09:14:00 +0100] "GET /o/D1/r1.gif HTTP/1.1" 200 43 "-" "-" "uid=CgAA" 0.005'
    cases = [
        (
            f"t.example.com 443 203.0.113.9 - - {rest}",
            "203.0.113.9",
            '{"host":"t.example.com","server_port":"443","request_time":"0.005"}',
        ),
        (
            f"t\\x22x - 203.0.113.9 - the boss {rest}",
            "203.0.113.9",
            '{"host":"t\\"x","remote_user":"the boss","request_time":"0.005"}',
        ),
        (
            f" 80 203.0.113.9 - - {rest}",
            "203.0.113.9",
            '{"host":"","server_port":"80","request_time":"0.005"}',
        ),
        (
            f"- \\x41 203.0.113.9 - - {rest}",
            "203.0.113.9",
            '{"server_port":"\\\\x41","request_time":"0.005"}',
        ),
    ]
    bad = [f"80 203.0.113.9 - - {rest}", f"t.example.com 443 203.0.113.9 - {rest}"]
    buf = "\n".join([line for line, _, _ in cases] + bad).encode() + b"\n"
    for verify in (True, False):
        assert assert_same(buf, HOST_FORMAT, verify=verify) == len(cases) + len(bad)
    assert deferred_rows(buf, HOST_FORMAT) == 0
    types, rows = chunk_rows(buf, HOST_FORMAT, fast=True)
    names = [name for name, _ in types]
    ip, extra, uid, reason = (names.index(c) for c in ("ip", "extra", "uid", "reason"))
    assert [(r[ip], r[extra], r[uid]) for r in rows[: len(cases)]] == [(a, x, "CgAA") for _, a, x in cases]
    assert [r[reason] for r in rows[len(cases) :]] == ["does not match log format"] * len(bad)


def check_extra(spec: str, head: str, cases: Sequence[tuple[str, str | None]]) -> None:
    """Each line `head` + a case's tail, in `spec`: both paths agree, the C pass defers none, and
    each line's quarantine reason, else its `extra`, is the case's (written by hand)."""
    buf = "".join(f"{head}{tail}\n" for tail, _ in cases).encode()
    assert assert_same(buf, spec) == len(cases)
    assert deferred_rows(buf, spec) == 0
    types, rows = chunk_rows(buf, spec, fast=True)
    names = [name for name, _ in types]
    extra, reason = names.index("extra"), names.index("reason")
    assert [r[reason] or r[extra] for r in rows] == [want for _, want in cases]


def test_unquoted_variables() -> None:
    """Variables after the last quote, as the SQL splits them: one takes everything after the
    space; several take a word each, but $upstream_response_time, which may hold spaces, takes
    the words between the others'. Expected `extra` written by hand."""
    head = '203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/D1/r1.gif HTTP/1.1" 200 43 "-" "-" "-"'
    x = "upstream_response_time"
    cases = [
        (" 0.005 0.004 .", f'{{"request_time":"0.005","{x}":"0.004","pipe":"."}}'),
        (" 0.005 0.004, 0.002 p", f'{{"request_time":"0.005","{x}":"0.004, 0.002","pipe":"p"}}'),
        (" 0.005 0.004 . x", f'{{"request_time":"0.005","{x}":"0.004 .","pipe":"x"}}'),
        (" 0.005 - .", '{"request_time":"0.005","pipe":"."}'),
        (" 0.005  .", f'{{"request_time":"0.005","{x}":"","pipe":"."}}'),
        (" - - -", None),
        (" 0.005 .", "does not match log format"),
        ("", "does not match log format"),
        ("0.005 0.004 .", "does not match log format"),
    ]
    check_extra(TIMING_FORMAT, head, cases)
    # one variable: everything after the space, spaces too
    spec = COMBINED + " $request_time"
    head = head.rsplit(" ", 1)[0]
    cases = [(" 0.005", '{"request_time":"0.005"}'), (" 0 1", '{"request_time":"0 1"}'), (" -", None)]
    cases += [("", "does not match log format"), ("0.005", "does not match log format")]
    check_extra(spec, head, cases)
    # nginx-config's format followed by one: the same reading
    spec = MSEC_FORMAT + " $request_time"
    head = '1793577601.123 203.0.113.9 "GET /o/D1/r1.gif HTTP/1.1" 200 43 "-" "-" "uid=CgAAAGdHk" "-"'
    check_extra(spec, head, cases)


def test_text_between_quotes() -> None:
    """nginx's upstream timing format: text around the quoted timings and a variable between two
    quotes, read as the SQL reads a piece with one variable (starts with the text before it, ends
    with the text after it, the value in between, spaces too). Expected `extra` by hand."""
    head = '203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/D1/r1.gif HTTP/1.1" 200 43 "-" "-" "-"'
    u = ("upstream_connect_time", "upstream_header_time", "upstream_response_time")
    mismatch = "does not match log format"
    cases = [
        (
            ' rt=0.005 uct="0.001" uht="0.002" urt="0.004, 0.002"',
            f'{{"request_time":"0.005","{u[0]}":"0.001","{u[1]}":"0.002","{u[2]}":"0.004, 0.002"}}',
        ),
        (' rt=- uct="-" uht="" urt="x\\x22y"', f'{{"{u[1]}":"","{u[2]}":"x\\"y"}}'),
        (
            ' rt=0 1 uct="a" uht="b" urt="c"',
            f'{{"request_time":"0 1","{u[0]}":"a","{u[1]}":"b","{u[2]}":"c"}}',
        ),
        (' rt= uct="a" uht="b" urt="c"', f'{{"request_time":"","{u[0]}":"a","{u[1]}":"b","{u[2]}":"c"}}'),
        (
            ' rt= uct= uct="a" uht="b" urt="c"',
            f'{{"request_time":" uct=","{u[0]}":"a","{u[1]}":"b","{u[2]}":"c"}}',
        ),
        (' rt=uct="a" uht="b" urt="c"', mismatch),  # shorter than its text
        (' rt=0.1 uct="a" uht="b" urt="c" ', mismatch),  # text after the last quote
        (' rt=0.1 uct="a"  uht="b" urt="c"', mismatch),
        ('rt=0.1 uct="a" uht="b" urt="c"', mismatch),
        (' rt=0.1 uct="a" uht="b"', mismatch),  # a quote short
        (' rt=0.1 uct="a" uht="b" urt="c" "d"', mismatch),
        (' RT=0.1 uct="a" uht="b" urt="c"', mismatch),
    ]
    check_extra(UPSTREAM_FORMAT, head, cases)
    # the nginx blog's format: no space after the agent's quote; a variable after the last quote
    spec = COMBINED + 'rt=$request_time uct="$upstream_connect_time" $pipe'
    head = head.rsplit(" ", 1)[0]
    cases = [
        ('rt=0.005 uct="0.001" p', f'{{"request_time":"0.005","{u[0]}":"0.001","pipe":"p"}}'),
        ('rt=0.005 uct="0.001" ', f'{{"request_time":"0.005","{u[0]}":"0.001","pipe":""}}'),
        (' rt=0.005 uct="0.001" p', mismatch),
        ('rt=0.005 uct="0.001"', mismatch),
    ]
    check_extra(spec, head, cases)
    # a variable between two spaces: the texts around it cannot overlap (a single space is
    # too short for both)
    spec = COMBINED + ' "$host" $request_time "$pipe"'
    cases = [
        (' "h" 0.1 "p"', '{"host":"h","request_time":"0.1","pipe":"p"}'),
        (' "h"  "p"', '{"host":"h","request_time":"","pipe":"p"}'),
        (' "h" 0 1 "p"', '{"host":"h","request_time":"0 1","pipe":"p"}'),
        (' "h" "p"', mismatch),
        (' "h""p"', mismatch),
        (' "h"0.1 "p"', mismatch),
    ]
    check_extra(spec, head, cases)


def test_words_after_the_last_quote() -> None:
    """Several variables after the last quote with text around them: a word each, as the SQL
    splits them (one that may hold spaces takes the words between the others'); with several
    that may hold spaces, as the SQL's regular expression reads them: ingress-nginx's default
    format (its upstream lists "a, b" and "a, b : c": a line with more words than the format is
    matched as the regular expression matches it), and variables that may hold any text, where
    such a line is left to the SQL. Expected `extra` written by hand."""
    head = '203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/D1/r1.gif HTTP/1.1" 200 43 "-" "-"'
    mismatch = "does not match log format"
    keys = (
        "request_length", "request_time", "proxy_upstream_name", "proxy_alternative_upstream_name",
        "upstream_addr", "upstream_response_length", "upstream_response_time", "upstream_status", "req_id",
    )  # fmt: skip

    def extra(*values: str | None) -> str:
        return (
            "{" + ",".join(f'"{k}":"{v}"' for k, v in zip(keys, values, strict=True) if v is not None) + "}"
        )

    cases = [
        (
            " 512 0.004 [ns-t-80] [] 10.0.0.7:80 43 0.002 302 5f3c",
            extra("512", "0.004", "ns-t-80", "", "10.0.0.7:80", "43", "0.002", "302", "5f3c"),
        ),
        (
            " 512 0.004 [-] [x\\x22y] - - - - -",
            extra("512", "0.004", None, 'x\\"y', None, None, None, None, None),
        ),
        (
            " 512 0.004 [] [] 10.0.0.7:80,x 0 0 200 ",
            extra("512", "0.004", "", "", "10.0.0.7:80,x", "0", "0", "200", ""),
        ),
        (" 512 0.004 [a]b] [] 1 2 3 4 5", extra("512", "0.004", "a]b", "", "1", "2", "3", "4", "5")),
        (" 512 0.004 [ns-t-80] [] 10.0.0.7:80 43 0.002 302", mismatch),  # a word short
        (" 512 0.004 ns-t-80 [] 1 2 3 4 5", mismatch),  # no brackets
        (" 512 0.004 [ns-t-80 [] 1 2 3 4 5", mismatch),
        (" 512 0.004 [] 1 2 3 4 5", mismatch),
        ("512 0.004 [a] [] 1 2 3 4 5", mismatch),
        ("", mismatch),
    ]
    check_extra(INGRESS_FORMAT, head, cases)
    # several servers: more words than the format, each list whole (as the regular expression
    # reads them: a list's element may end with a comma, so "a, b" may also be read as "a," and
    # "b" when the rest needs it)
    lists = " 512 0.004 [t-80] [] 10.0.0.7:80, 10.0.0.8:80 : 10.0.1.1:80 0, 0 : 5 0.1, 0.2 : 0.3 502, 502 : 200 ab"
    odd = [
        (" 1 2 [a] [b] x, y z w v u", ("x, y", "z", "w", "v", "u")),
        (" 1 2 [a] [b] x, y z w v", ("x,", "y", "z", "w", "v")),
        (" 1 2 [a] [b] x : y, z : w v u t s", ("x : y, z : w", "v", "u", "t", "s")),
        (" 1 2 [a] [b] x,, y z w v u", ("x,, y", "z", "w", "v", "u")),
        (" 1 2 [a] [b] x ,y z w v u", None),
        (" 1 2 [a] [b] x, y z w v u t", None),
    ]
    buf = "".join(f"{head}{tail}\n" for tail in [lists, *(t for t, _ in odd)]).encode()
    assert assert_same(buf, INGRESS_FORMAT) == len(odd) + 1
    assert deferred_rows(buf, INGRESS_FORMAT) == 0
    types, rows = chunk_rows(buf, INGRESS_FORMAT, fast=True)
    extra, reason = (next(i for i, (name, _) in enumerate(types) if name == c) for c in ("extra", "reason"))
    got = json.loads(rows[0][extra])
    assert (got["upstream_addr"], got["upstream_status"], got["req_id"]) == (
        "10.0.0.7:80, 10.0.0.8:80 : 10.0.1.1:80",
        "502, 502 : 200",
        "ab",
    )
    for row, (_, want) in zip(rows[1:], odd, strict=True):
        if want is None:
            assert row[reason] == mismatch
            continue
        values = json.loads(row[extra])
        assert tuple(values[k] for k in keys[4:]) == want
    # lists whose elements end with a comma or are empty: several readings match, and the one RE2
    # finds is the first in its order (each list's longest element first, then another element
    # before the list ends), worked out by hand
    spec = COMBINED + " $upstream_addr $upstream_status"
    cases = [
        (" x, , y", ("x,", ", y")),
        (" a, b", ("a,", "b")),
        (" x,, y z", ("x,, y", "z")),
        (" , , ,", (",", ", ,")),
        (" a : , b", ("a : ,", "b")),
        (" a, : b c", ("a, : b", "c")),
    ]
    buf = "".join(f"{head}{tail}\n" for tail, _ in cases).encode()
    assert assert_same(buf, spec) == len(cases)
    assert deferred_rows(buf, spec) == 0
    types, rows = chunk_rows(buf, spec, fast=True)
    extra = next(i for i, (name, _) in enumerate(types) if name == "extra")
    got = [json.loads(row[extra]) for row in rows]
    assert [(g.get("upstream_addr", "-"), g.get("upstream_status", "-")) for g in got] == [
        w for _, w in cases
    ]
    # variables that may hold any text ($http_x_a: the shortest text that lets the rest match):
    # a line with more words than the format is the SQL's
    spec = COMBINED + " $http_x_a $http_x_b [$request_time]"
    buf = f"{head} a b [1]\n{head} a b c [1]\n".encode()
    assert assert_same(buf, spec) == 2
    assert deferred_rows(buf, spec) == 1
    # text around two, one of which may hold spaces: it takes the words between
    spec = COMBINED + " rt=$request_time urt=$upstream_response_time x"
    cases = [
        (" rt=0.1 urt=0.2 x", '{"request_time":"0.1","upstream_response_time":"0.2"}'),
        (" rt=0.1 urt=0.2, 0.3 : 0.4 x", '{"request_time":"0.1","upstream_response_time":"0.2, 0.3 : 0.4"}'),
        (" rt=0.1 urt= x", '{"request_time":"0.1","upstream_response_time":""}'),
        (" rt= urt=- x", '{"request_time":""}'),
        (" rt=0.1 urt=0.2 y", mismatch),
        (" rt=0.1 ur=0.2 x", mismatch),
        (" rt=0.1 x", mismatch),
        (" rt=0.1  x", mismatch),
        (" rt=0.1 urt=0.2", mismatch),
    ]
    check_extra(spec, head, cases)


def test_json_lines() -> None:
    """JSON lines (`--log-format json`) read as the SQL reads them, expected values written by
    hand: keys in any order, JSON escapes, numbers, the keys that are not columns kept in `extra`
    (as json_merge_patch writes them), the opt-out cookie there; what the C pass leaves to the
    SQL (a key given twice, a value that is neither a string nor an integer, $time_iso8601, an
    address from the forwarded-for list alone, a request line without a space when
    $request_method could stand in) is counted."""
    t = '"time_local":"27/Nov/2026:09:14:00 +0100"'
    sig = sign_path(SECRET, "/o/D1/r1.gif")
    token = f"2.D1r1{sign_path(SECRET, '/w/D1/r1')}"
    cases = [  # (line, ip, status, bytes, user agent, extra, kind, reason)
        (
            (
                f'{{"remote_addr":"203.0.113.9",{t},"request":"GET /o/D1/r1.gif?s={sig} HTTP/1.1","status":200,'
                '"body_bytes_sent":"43","http_user_agent":"a\\"b\\u00e9\\ud83d\\ude00\\/","request_time":0}'
            ),
            "203.0.113.9",
            200,
            43,
            'a"b\u00e9\U0001f600/',
            '{"request_time":0}',
            "open",
            None,
        ),
        (
            (
                f'  {{ "request" : "GET /c/D1/l/r1 HTTP/2.0" , {t} , "x_y":"\\u0001\\t\\"", "n":-12,'
                '"http_x_forwarded_for":"10.0.0.1", "remote_user":"-" }  '
            ),
            "10.0.0.1",
            None,
            None,
            None,
            '{"x_y":"\\u0001\\t\\"","n":-12,"http_x_forwarded_for":"10.0.0.1","remote_user":"-"}',
            "click",
            None,
        ),
        (
            f'{{"msec":"1793577601.123",{t},"request":"GET /w/home.gif?tl={token} HTTP/1.1","cookie_tl_optout":1}}',
            None,
            None,
            None,
            None,
            '{"cookie_tl_optout":1}',
            None,
            None,
        ),
        (
            (
                f'{{"msec":"1793577601.123","request":"GET /w/home.gif?tl={token} HTTP/1.1",'
                '"http_cookie":"a=b; tl_optout=1"}'
            ),
            None,
            None,
            None,
            None,
            '{"http_cookie":"a=b; tl_optout=1"}',
            None,
            None,
        ),
        (
            f'{{{t},"request":"GET /w/home.gif?tl={token} HTTP/1.1"}}',
            None,
            None,
            None,
            None,
            None,
            "page",
            None,
        ),
        (
            '{"remote_addr":"203.0.113.9","request":"GET /o/D1/r1.gif HTTP/1.1"}',
            *[None] * 6,
            "missing timestamp",
        ),
        (f'{{{t},"status":"20"}}', *[None] * 6, "bad status"),
        (f'{{{t},"status":"-","body_bytes_sent":"","request":"-"}}', *[None] * 6, None),
        (
            '{"time_iso8601":"2026-11-27T09:14:00+01:00","status":"404","bytes_sent":0}',
            None,
            404,
            0,
            *[None] * 4,
        ),
        ('{"time_iso8601":"2026-11-27T09:14:00+25:00"}', *[None] * 6, "bad timestamp"),
    ]
    deferred = [
        f"{{{t},{t}}}",
        f'{{{t},"a":1.5}}',
        f'{{{t},"a":null}}',
        f'{{{t},"a":{{"b":"c"}}}}',
        '{"time_iso8601":"2026-11-27T09:14:00+0100"}',
        '{"time_iso8601":"2026-11-27T09:14:00Z"}',
        '{"time_iso8601":"2026-02-29T09:14:00+01:00"}',
        f'{{"msec":"1e9",{t}}}',
        f'{{"http_x_forwarded_for":"10.0.0.1, 10.0.0.2",{t}}}',
        f'{{{t},"request":"GET","request_method":"POST"}}',
        f'{{{t},"a":"\\ud800"}}',
        f'{{{t},"a":"\\u0000"}}',
        f'{{{t},"a":01}}',
        f"{{{t}}} x",
        "{}",
        "not json",
    ]
    lines = [c[0] for c in cases] + deferred
    buf = "\n".join(lines).encode() + b"\n"
    for verify in (True, False):
        assert assert_same(buf, "json", verify=verify) == len(lines)
    # and two of the cases: the second (its address from the list), the offset +25:00 (a bad
    # timestamp, the SQL says)
    assert deferred_rows(buf, "json") == len(deferred) + 2
    types, rows = chunk_rows(buf, "json", fast=True)
    names = [name for name, _ in types]
    cols = [names.index(c) for c in ("ip", "status", "bytes", "user_agent", "extra", "kind", "reason")]
    assert [tuple(r[c] for c in cols) for r in rows[: len(cases)]] == [c[1:] for c in cases]
    reasons = [r[names.index("reason")] for r in rows[len(cases) :]]
    assert reasons[-2:] == ["missing timestamp", "invalid JSON"]
    # the times, as the SQL computes them in UTC: $time_local, $msec before it, $time_iso8601
    ts = names.index("ts")
    local, iso = datetime(2026, 11, 27, 8, 14), datetime(2026, 11, 27, 8, 14)
    assert [rows[k][ts] for k in (0, 2, 8)] == [local, datetime(2026, 11, 2, 0, 0, 1, 123_000), iso]


def test_json_decoded_values_are_not_overwritten() -> None:
    """A JSON line's escaped values are decoded into a buffer that the referer and user agent
    columns must not share: the referer's copy overwrote an escaped user agent with its own bytes
    (found by a longer sanitized run: "a\\"b..." stored as the referer's first bytes). Expected
    values written by hand."""
    t = '"time_local":"27/Nov/2026:09:14:00 +0100","status":200'
    lines = [
        (
            (
                f'{{"remote_addr":"1.2.3.4",{t},"request":"GET \\/o\\/D1\\/r1.gif HTTP/1.1",'
                '"http_referer":"https:\\/\\/shop.example\\/a","http_user_agent":"Mozilla \\"x\\"",'
                '"request_time":"0\\u002e005"}'
            ),
            ("https://shop.example/a", 'Mozilla "x"', "r1", '{"request_time":"0.005"}'),
        ),
        (
            (
                f'{{"remote_addr":"1.2.3.4",{t},"request":"GET /o/D1/r2.gif HTTP/1.1",'
                '"http_referer":"https://a.example/a/long/referer","http_user_agent":"a\\\\b\\u00e9"}'
            ),
            ("https://a.example/a/long/referer", "a\\b\u00e9", "r2", None),
        ),
    ]
    buf = "".join(f"{line}\n" for line, _ in lines).encode()
    assert assert_same(buf, "json") == len(lines)
    assert deferred_rows(buf, "json") == 0
    types, rows = chunk_rows(buf, "json", fast=True)
    names = [name for name, _ in types]
    got = [tuple(r[names.index(c)] for c in ("referer", "user_agent", "recipient_id", "extra")) for r in rows]
    assert got == [want for _, want in lines]


def test_msec_layout_with_other_variables() -> None:
    """nginx-config's head followed by variables of the user's: kept in `extra` as the SQL keeps
    them (no $remote_user in this layout), with the uid and the opt-out cookie read alike."""
    spec = fastpath.MSEC_HEAD + ' "$host" "$uid_got" "$request_time" "$cookie_tl_optout"'
    token = f"2.D1r1{sign_path(SECRET, '/w/D1/r1')}"
    values = [
        ("t.example.com", "uid=AB", "0.002", "-"),
        ("-", "-", "-", "-"),
        ("t\\x22x", "-", "", "1"),
        ("", "uid=", "-", "0"),
    ]
    lines = [
        f'1793577601.123 203.0.113.9 "GET {target} HTTP/1.1" 200 43 "-" "-" "{h}" "{u}" "{t}" "{c}"'
        for target in ("/o/D1/r1.gif", f"/w/home.gif?tl={token}")
        for h, u, t, c in values
    ]
    buf = "\n".join(lines).encode() + b"\n"
    assert fastpath.plan_for(resolve_format(spec, {})) is not None
    assert assert_same(buf, spec) == len(lines)
    assert deferred_rows(buf, spec) == 0
    types, rows = chunk_rows(buf, spec, fast=True)
    names = [name for name, _ in types]
    extra, kind = names.index("extra"), names.index("kind")
    assert rows[0][extra] == '{"host":"t.example.com","request_time":"0.002"}'
    assert rows[1][extra] is None
    assert [r[kind] for r in rows[len(values) :]] == ["page", "page", None, "page"]  # the cookie "1"


def test_pure_env_turns_the_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    fmt = resolve_format("combined", {})
    assert fastpath.fast_parser(fmt, None) is not None
    monkeypatch.setenv("TRACKLOG_PURE", "1")
    assert fastpath.fast_parser(fmt, None) is None


def test_signature_matches_signing() -> None:
    from tracklog.ingest import _fastlog  # type: ignore[attr-defined]

    for secret in (b"demo-secret", b"k" * 64, b"long" * 40, b""):
        ipad, opad = hmac_pads(secret)
        for path in ("/c/NL-2026-11/hero/r000123", "", "/o/" + "x" * 300 + ".gif"):
            assert _fastlog.hmac_sig(ipad, opad, path.encode()) == sign_path(secret, path)
    assert (
        _fastlog.hmac_sig(*hmac_pads(b"demo-secret"), b"/c/NL-2026-11/hero/r000123")
        == "WhPvSB_eoIpWVhhAypsTpg"
    )


# -- real and generated data sets --------------------------------------------------------


def test_escaped_requests() -> None:
    """A request with nginx's \\xHH escapes is decoded and routed by the C pass, as by the SQL
    (an escaped 'w' makes a page tag)."""
    sig = sign_path(SECRET, "/c/NL/l1/r1")
    lines = [
        f'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET {path} HTTP/1.1" 302 0 "-" "Mozilla/5.0"'
        for path in (
            f"/c/NL/l1/r1?s={sig}&q=\\x22x\\x22",  # an escaped quote in the query
            f"/c/NL/l\\x31/r1?s={sig}",  # an escaped id: signed as decoded, valid
            f"/c\\x2FNL/l1/r1?s={sig}",  # an escaped '/': a click once decoded
            "/o/NL/r1.gif?s=\\xC3\\xA9\\xFF",  # UTF-8 and an invalid byte
            "/\\x77/p1.gif?tl=1.abc",  # an escaped 'w': a page tag (its token too short)
        )
    ]
    buf = "\n".join(lines).encode() + b"\n"
    assert assert_same(buf) == 5
    assert deferred_rows(buf, "combined") == 0
    types, rows = chunk_rows(buf, "combined", fast=True)
    names = [name for name, _ in types]
    got = [(r[names.index("kind")], r[names.index("link_id")], r[names.index("sig_status")]) for r in rows]
    assert got == [
        ("click", "l1", "valid"),
        ("click", "l1", "valid"),
        ("click", "l1", "valid"),
        ("open", None, "invalid"),
        ("page", "p1", "invalid"),
    ]


def test_page_tags() -> None:
    """Page tags (/w/TAG.gif?tl=TOKEN) in the compiled pass, checked by hand: the token's
    delivery and recipient, its signature, and the opt-out cookie in either variable."""
    token = f"2.D1r1{sign_path(SECRET, '/w/D1/r1')}"  # routes.landing_token, by hand
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    r128, r129, d129 = "r" * 128, "r" * 129, "d" * 129  # ids of 1-128 characters only
    long_r = f"2.D1{r128}{sign_path(SECRET, f'/w/D1/{r128}')}"
    too_long_r = f"2.D1{r129}{sign_path(SECRET, f'/w/D1/{r129}')}"
    too_long_d = f"129.{d129}r1{sign_path(SECRET, f'/w/{d129}/r1')}"
    cases = [  # (method, target, $cookie_tl_optout, $http_cookie) -> kind, delivery, tag, recipient, verdict
        (("GET", f"/w/home.gif?tl={token}", "-", "-"), ("page", "D1", "home", "r1", "valid")),
        (("GET", "/w/home.gif", "-", "-"), ("page", None, "home", None, "missing")),
        (("GET", "/w/home.gif?tl=", "-", "-"), ("page", None, "home", None, "missing")),
        (("GET", f"/w/cart.gif?a=1&tl={token}&amount=2", "-", "-"), ("page", "D1", "cart", "r1", "valid")),
        (("GET", f"/w/cart.gif?tl={forged}", "-", "-"), ("page", "D1", "cart", "r1", "invalid")),
        (("GET", "/w/cart.gif?tl=1.abc", "-", "-"), ("page", None, "cart", None, "invalid")),
        (("GET", f"/w/x.y.gif?tl={token}x", "-", "-"), ("page", "D1", "x.y", f"r1{token[6]}", "invalid")),
        (("GET", f"/w/home.gif?tl={long_r}", "-", "-"), ("page", "D1", "home", r128, "valid")),
        (("GET", f"/w/home.gif?tl={too_long_r}", "-", "-"), ("page", None, "home", None, "invalid")),
        (("GET", f"/w/home.gif?tl={too_long_d}", "-", "-"), ("page", None, "home", None, "invalid")),
        (("GET", f"/w/{'t' * 128}.gif", "-", "-"), ("page", None, "t" * 128, None, "missing")),
        (("GET", f"/w/{'t' * 129}.gif", "-", "-"), (None,) * 5),
        (("HEAD", f"/w/home.gif?tl={token}", "-", "-"), (None,) * 5),
        (("GET", f"/w/a/b.gif?tl={token}", "-", "-"), (None,) * 5),
        (("GET", f"/w/home.gif?tl={token}", "1", "-"), (None,) * 5),
        (("GET", f"/w/home.gif?tl={token}", "0", "-"), ("page", "D1", "home", "r1", "valid")),
        (("GET", f"/w/home.gif?tl={token}", "-", "a=b; tl_optout=1"), (None,) * 5),
        (("GET", f"/w/home.gif?tl={token}", "-", " tl_optout=1 ;x=y"), (None,) * 5),
        (("GET", f"/w/home.gif?tl={token}", "-", "\\x09tl_optout=1"), (None,) * 5),
        (("GET", f"/w/home.gif?tl={token}", "-", "tl_optout=10"), ("page", "D1", "home", "r1", "valid")),
        (("GET", f"/w/home.gif?tl={token}", "-", "xtl_optout=1"), ("page", "D1", "home", "r1", "valid")),
        (("GET", f"/w/home.gif?tl={token}", "-", "tl_optout=1 x"), ("page", "D1", "home", "r1", "valid")),
    ]
    lines = [
        f'1.2.3.4 - - [27/Nov/2026:09:14:00 +0100] "{m} {t} HTTP/1.1" 200 43 "-" "-" "{c}" "{h}"'
        for (m, t, c, h), _ in cases
    ]
    buf = "\n".join(lines).encode() + b"\n"
    for verify in (True, False):
        assert assert_same(buf, OPTOUT_FORMAT, verify=verify) == len(cases)
        assert deferred_rows(buf, OPTOUT_FORMAT) == 0
        types, rows = chunk_rows(buf, OPTOUT_FORMAT, fast=True, verify=verify)
        names = [name for name, _ in types]
        cols = [names.index(c) for c in ("kind", "delivery_id", "link_id", "recipient_id", "sig_status")]
        # unverified, a token shaped like one is unchecked
        want = [w if verify or w[1] is None else (*w[:4], "unchecked") for _, w in cases]
        assert [tuple(r[c] for c in cols) for r in rows] == want


def test_apache_corpus() -> None:
    buf = apache_logs().read_bytes()
    for spec in SPECS:
        assert assert_same(buf, spec) == 10_000
    assert deferred_rows(buf, "combined") == 0


@pytest.mark.parametrize("name", ["access.log.2.gz", "access.log.1", "access.log"])
def test_sample_logs(name: str) -> None:
    raw = (SAMPLES / name).read_bytes()
    buf = gzip.decompress(raw) if name.endswith(".gz") else raw
    assert assert_same(buf) > 100
    assert deferred_rows(buf, "combined") == 0


def test_conftest_data_set() -> None:
    buf = "".join(log_line(h) + "\n" for h in make_dataset().hits).encode()
    assert assert_same(buf, LOG_FORMAT) == len(make_dataset().hits)
    assert assert_same(buf, LOG_FORMAT, verify=False) > 0
    assert deferred_rows(buf, LOG_FORMAT) == 0


def test_benchmark_generator_lines() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from gen_log import lines
    finally:
        sys.path.remove(str(ROOT / "bench"))
    buf = "".join(line + "\n" for line in lines(30_000, SECRET, seed=3))
    assert assert_same(buf.encode()) == 30_000
    assert deferred_rows(buf.encode(), "combined") == 0
    # the same traffic in nginx-config's format: the same rows but for the time's milliseconds
    # and the uid, every hit's second the combined line's
    msec = "".join(line + "\n" for line in lines(30_000, SECRET, seed=3, fmt="tracklog")).encode()
    assert assert_same(msec, MSEC_FORMAT) == 30_000
    assert deferred_rows(msec, MSEC_FORMAT) == 0
    names, want = chunk_rows(buf.encode(), "combined", fast=True)
    got = chunk_rows(msec, MSEC_FORMAT, fast=True)[1]
    cols = [i for i, (n, _) in enumerate(names) if n not in ("line", "ts", "uid", "extra", "byte_offset")]
    ts = [n for n, _ in names].index("ts")
    assert [[r[i] for i in cols] for r in got] == [[r[i] for i in cols] for r in want]
    assert [r[ts] and r[ts].replace(microsecond=0) for r in got] == [r[ts] for r in want]
    # with page tags (web tracking), which the compiled pass reads too
    pages = "".join(line + "\n" for line in lines(20_000, SECRET, seed=3, fmt="tracklog", pages=0.3)).encode()
    assert assert_same(pages, MSEC_FORMAT) == 20_000
    assert deferred_rows(pages, MSEC_FORMAT) == 0
    kind = [n for n, _ in names].index("kind")
    kinds = [r[kind] for r in chunk_rows(pages, MSEC_FORMAT, fast=True)[1]]
    assert 5_000 < kinds.count("page") < 7_000


def test_seeds_and_odd_lines() -> None:
    """Every seed line in every format, as one chunk (each line is compared on its own), and each
    seed as a chunk of its own in combined."""
    every = b"".join(SEEDS)
    for spec in SPECS:
        for verify in (True, False):
            assert assert_same(every, spec, verify=verify) == every.count(b"\n")
    for seed in SEEDS:
        assert_same(seed)
        assert_same(seed, verify=False)


def test_megabyte_lines() -> None:
    sig, agent = "a" * 1_000_000, "\\x22" * 300_000
    good = (
        f'1.2.3.4 - - [27/Nov/2026:09:14:00 +0100] "GET /o/D/R.gif?s={sig} HTTP/1.1" 200 43 "-" "{agent}"\n'
    )
    buf = good.encode() + b"x" * 2_000_000 + b"\n" + b'"' * 1_000_000 + b"\n"
    assert assert_same(buf) == 3


def test_deferred_rows_are_computed_by_the_sql() -> None:
    """Values nginx never writes but DuckDB reads leniently are the SQL's to compute, in place."""
    ok = '1.2.3.4 - - [27/Nov/2026:09:14:00 +0100] "GET /o/D/R.gif HTTP/1.1" 200 43 "-" "-"\n'
    odd = [
        ok.replace("27/Nov", "7/nov"),
        ok.replace("+0100", "+01:00"),
        ok.replace("+0100", "+2400"),
        ok.replace("27/Nov", "31/Feb"),
        ok.replace(" 200 ", " 1e2 "),
        ok.replace(" 200 ", " +20 "),
        ok.replace(" 43 ", " 1_000 "),
        ok.replace(" 43 ", " 99999999999999999999 "),
        ok.replace(" 43 ", "  "),
    ]
    buf = "".join(line for pair in zip([ok] * len(odd), odd, strict=True) for line in pair).encode()
    assert assert_same(buf) == 2 * len(odd)
    assert deferred_rows(buf, "combined") == len(odd)


def test_lines_cut_in_place_are_the_readers_lines() -> None:
    """split_buffer (the compiled cut, no copy of the text) gives the lines and offsets that
    split_lines (Arrow's reader) gives, each with its '\n'; an empty line is one; bytes after
    the last '\n' are no line."""
    buf = apache_logs().read_bytes() + b"\n\n" + SEEDS[0] + "caf\u00e9 \u20ac\n".encode()
    want, repaired = split_lines(buf, 0, 0)
    assert not repaired
    line, starts = fastpath.split_buffer(buf + b"no newline yet")
    assert line.to_pylist() == [text + "\n" for text in want.column("line").to_pylist()]
    assert starts.to_pylist() == want.column("byte_offset").to_pylist()
    assert fastpath.split_buffer(b"")[0].to_pylist() == []
    assert fastpath.split_buffer(b"x")[0].to_pylist() == []


def test_wide_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks past 256 MiB get int64 string offsets (large_string): same rows, forced on a small one."""
    from tracklog.ingest import _fastlog  # type: ignore[attr-defined]

    def wide_parse(*args: object) -> object:
        return _fastlog.parse(*args[:8], True, *args[9:])  # force_wide

    buf = apache_logs().read_bytes()[:200_000] + SEEDS[2] + SEEDS[3]
    narrow = fastpath.fast_parser(resolve_format("combined", {}), hmac_pads(SECRET))
    assert narrow is not None
    lines, _ = split_lines(buf, 0, 0)
    want, _ = narrow.parse(lines)
    monkeypatch.setattr(narrow, "_parse", wide_parse)
    got, _ = narrow.parse(lines)
    assert got.schema.field("ip").type == pa.large_string()
    assert got.schema.field("user_agent").type == pa.dictionary(pa.int32(), pa.large_string())
    assert got.cast(want.schema).equals(want)


def test_parse_refuses_plans_it_cannot_follow() -> None:
    """parse() checks the plan it is given (fastpath.plan_for never makes these): a layout it
    does not know, a leading variable after a quoted one or in the msec layout, a variable
    after common's head, gaps (the text around the quoted ones) that do not fit the variables."""
    from tracklog.ingest import _fastlog  # type: ignore[attr-defined]

    line = pa.array(["x"], pa.large_string())
    _, offsets, data = line.buffers()
    lead, quoted = (b'"host":', 0, True, 0, False, False, True), (b'"a":', 0, True, 0, True, False, False)
    cases = [
        (6, (), "bad layout"),
        (fastpath.COMBINED_LAYOUT, (quoted, lead), "bad variable order"),
        (fastpath.MSEC_LAYOUT, (lead,), "bad variable order"),
        (fastpath.COMMON_LAYOUT, (lead, quoted), "leading variables only"),
    ]
    for layout, extras, message in cases:
        with pytest.raises(ValueError, match=message):
            _fastlog.parse(offsets, data, 0, 1, layout, extras, None, None)
    assert _fastlog.parse(offsets, data, 0, 1, fastpath.COMMON_LAYOUT, (lead,), None, None)[2] is False
    # gaps: one per quoted variable and one after the last quote; a gap's variable an unquoted
    # one between the quoted ones around it; every unquoted one a gap's
    word, elastic = (b'"t":', 0, False, 0, False, False, False), (b'"t":', 0, False, 0, False, True, False)
    blank = (b" ", -1, b"")
    combined = fastpath.COMBINED_LAYOUT
    gapped = [
        (combined, (quoted, word), (blank, (b" t=", 1, b"")), None),
        (combined, (word, quoted), ((b" t=", 0, b" "), blank), None),
        (combined, (quoted,), (blank,), "one more than the quoted"),
        (fastpath.COMMON_LAYOUT, (), (blank,), "leading variables only|combined layouts"),
        (combined, (quoted, elastic), (blank, (b" ", 1, b"")), "none elastic"),
        (combined, (quoted, word), (blank, blank), "outside the gaps"),
        (combined, (quoted, word), ((b" ", 1, b" "), blank), "bad gap variable"),  # after its quote
        (combined, (quoted, word), (blank, (b" ", 0, b"")), "bad gap variable"),  # a quoted one
        (combined, (lead, word, quoted), ((b" ", 0, b" "), blank), "bad gap variable"),  # a lead
        (combined, (quoted, word), (blank, (b" ", 5, b"")), "bad gap variable"),
        (combined, (quoted,), (blank, (b" ", -1, b"x")), "bad gap"),
    ]
    for layout, extras, gaps, message in gapped:
        args = (offsets, data, 0, 1, layout, extras, None, None, False, False, gaps)
        if message is None:
            assert _fastlog.parse(*args)[2] is False
            continue
        with pytest.raises(ValueError, match=message):
            _fastlog.parse(*args)


# -- hypothesis: hostile combined lines ----------------------------------------------------

ID = st.text("AZaz09._~-", min_size=1, max_size=3) | st.sampled_from(["x" * 128, "x" * 129, ""])


def escape(b: int, upper: bool) -> str:
    return f"\\x{b:02X}" if upper else f"\\x{b:02x}"


ESCAPE = st.builds(
    lambda bs, upper: "".join(escape(b, upper) for b in bs),
    st.lists(st.integers(0, 255), min_size=1, max_size=4)
    | st.sampled_from(
        [[0xC3, 0xA9], [0xE2, 0x82, 0xAC], [0xF0, 0x9F, 0x98, 0x80], [0xE1, 0x80], [0xED, 0xA0, 0x80]]
    ),
    st.booleans(),
)
PIECE = (
    st.text(st.characters(codec="utf-8", exclude_characters='"\n'), max_size=6)
    | ESCAPE
    | st.sampled_from(
        ["\\", "\\x", "\\xZ1", "%", "%41", "?", "&s=", "s=", " ", "  ", "-", "\x00", "\r", "\t", "é"]
    )
)
TEXT = st.lists(PIECE, max_size=5).map("".join)
FIELD = st.sampled_from(["-", "", "Mozilla/5.0 (X11)", "\\x22hi\\x22"]) | TEXT


@st.composite
def tokens(draw: st.DrawFn) -> str:
    """Landing tokens (routes.landing_token): valid, forged, and not quite shaped like one."""
    delivery, recipient = draw(ID), draw(ID)
    # routes.landing_token's shape, made here (ids of any length: 0 or past 128 too)
    good = f"{len(delivery)}.{delivery}{recipient}{sign_path(SECRET, f'/w/{delivery}/{recipient}')}"
    shaped = draw(
        st.sampled_from(
            [
                good,
                good[:-1] + ("A" if good[-1] != "A" else "B"),  # forged
                "0" + good,  # a leading zero: the same length
                good[: len(str(len(delivery))) + 1 + len(delivery) + 22],  # no recipient
                "1.abc",
                "129." + "x" * 150,
                "3.abc" + "x" * 22,
                "1234.abcdefghijklmnopqrstuvwxyz",
                ".x",
                "1.",
                good.replace(".", ",", 1),
            ]
        )
    )
    return draw(st.sampled_from([shaped, shaped + draw(TEXT)]))


@st.composite
def targets(draw: st.DrawFn) -> str:
    letter = draw(st.sampled_from(["o", "c", "m", "u", "w", "w", "x", ""]))
    ids = [draw(ID) for _ in range(3 if letter == "c" else 1 if letter == "w" else 2)]
    gif = letter in ("o", "w") and draw(st.booleans())
    path = f"/{letter}/" + "/".join(ids) + (".gif" if gif else "")
    path = draw(
        st.sampled_from([path, path + "/", path.replace("/", "//", 1), "/o/D/R.gif.gif", "/w/.gif.gif", "/"])
    )
    sig = draw(st.sampled_from([sign_path(SECRET, path), "", "AAAAAAAAAAAAAAAAAAAAAA", "short"]) | TEXT)
    query = draw(
        st.sampled_from(
            [None, f"s={sig}", f"a=1&s={sig}", f"s={sig}&a=1", f"a=1&s={sig}&s=x", "a=1", "", "s"]
        )
        | st.builds(
            lambda t, q: q.format(t), tokens(), st.sampled_from(["tl={}", "a=1&tl={}&amount=2", "tl=&tl={}"])
        )
    )
    # the path as logged: a byte of it may be written as nginx's \\xHH escape (of '/' or 'w' too,
    # so that an escaped route or page tag decodes to one), signed as decoded
    at = draw(st.none() | st.integers(0, len(path) - 1))
    if at is not None and path[at].isascii():
        path = path[:at] + escape(ord(path[at]), draw(st.booleans())) + path[at + 1 :]
    return path + ("" if query is None else "?" + query)


def requests() -> st.SearchStrategy[str]:
    method = st.sampled_from(["GET", "POST", "HEAD", "", "get"])
    protocol = st.sampled_from(["HTTP/1.1", "HTTP/2.0", ""])
    usual = st.builds(lambda m, t, p: f"{m} {t} {p}", method, targets(), protocol)
    odd = st.builds(lambda m, t: f"{m} {t}", method, targets()) | st.builds(
        lambda m, t, x: f"{m} {t} {x} HTTP/1.1", method, targets(), TEXT
    )
    return (
        usual
        | odd
        | FIELD
        | st.sampled_from(["\\x16\\x03\\x01\\x00\\xFC\\x03", "SSH-2.0-Go", "GET\\x20/o/D/R.gif"])
    )


def stamps(iso: bool = False) -> st.SearchStrategy[str]:
    """[$time_local] (`iso`: [$time_iso8601]) as nginx writes it, any moment and offset, or odd
    forms (the SQL's)."""

    def stamp(moment: datetime, minutes: int) -> str:
        local = moment.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=minutes)))
        return (
            "[" + (local.isoformat("T", "seconds") if iso else local.strftime("%d/%b/%Y:%H:%M:%S %z")) + "]"
        )

    canonical = st.builds(
        stamp,
        st.datetimes(min_value=datetime(1000, 2, 1), max_value=datetime(9999, 11, 30)),
        st.integers(-23 * 60, 23 * 60),
    )
    if not iso:
        odd = [
            "[7/nov/2026:09:14:00 +0100]",
            "[29/Feb/2023:00:00:00 +0000]",
            "[x]",
            "[27/Nov/2026:09:14:00 Z]",
            "-",
        ]
        return canonical | st.sampled_from(odd)
    odd = [
        "[2026-11-27T09:14:00+0100]",
        "[2026-11-27T09:14:00Z]",
        "[2023-02-29T00:00:00+00:00]",
        "[2026-11-27T09:14:00+01:00",
        "2026-11-27T09:14:00+01:00]",
        "[27/Nov/2026:09:14:00 +0100]",
        "[]",
        "-",
    ]
    return canonical | st.sampled_from(odd) | TEXT


@st.composite
def iso_lines(draw: st.DrawFn, full: bool) -> bytes:
    """Lines of ISO_FORMAT (`full`) or COMMON_ISO, a few of the other, users with spaces or none."""
    user = draw(st.sampled_from(["-", "alice", "the boss", ""]) | TEXT)
    ip = draw(st.sampled_from(["203.0.113.9", "-", ""]))
    line = f'{ip} - {user} {draw(stamps(iso=True))} "{draw(requests())}" 200 43'
    if full == (draw(st.integers(0, 9)) > 0):
        line += f' "{draw(FIELD)}" "{draw(FIELD)}" "{draw(FIELD)}" {draw(WORDS)}'
    return line.encode("utf-8", "surrogatepass")


@st.composite
def combined_lines(draw: st.DrawFn) -> bytes:
    ip = draw(st.sampled_from(["203.0.113.9", "-", "", "2001:db8::1"]) | TEXT)
    user = draw(st.sampled_from(["-", "alice", "the boss", ""]) | TEXT)
    status = draw(st.sampled_from(["200", "302", "404", "2000", "20", "OK", "-", ""]))
    size = draw(st.sampled_from(["43", "0", "-", "", "x", "007"]))
    fields = [draw(requests()), draw(FIELD), draw(FIELD), draw(FIELD)]
    line = (
        f'{ip} - {user} {draw(stamps())} "{fields[0]}" {status} {size} "{fields[1]}" "{fields[2]}" "{fields[3]}"'
    ).encode("utf-8", "surrogatepass")
    # damage: drop the uid field or more, cut, or add bytes (invalid UTF-8 too)
    cut = draw(st.sampled_from([None, -len(fields[3].encode()) - 4, None, None]))
    if cut is not None:
        line = line[:cut]
    if draw(st.integers(0, 9)) == 0:
        line = line[: draw(st.integers(0, len(line)))]
    return line + draw(st.sampled_from([b"", b"", b"\xff", b"\x00", b"\r", b'"', b" x"]))


# Each hostile example compares one chunk on both paths, and the SQL path's fixed cost per chunk
# dominates it: a few dozen examples of up to 30 lines test as many lines as 150 of up to 12.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(combined_lines(), min_size=1, max_size=30),
    st.sampled_from(["combined", UID_FORMAT, "common", MAIN_FORMAT]),
)
def test_hostile_lines(lines: list[bytes], spec: str) -> None:
    assert_same(b"\n".join(lines) + b"\n", spec)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.builds(
            lambda host, port, line, tail: f"{host} {port} ".encode("utf-8", "surrogatepass") + line + tail,
            st.sampled_from(["t.example.com", "-", "", "t\\x22x"]) | TEXT,
            st.sampled_from(["443", "-", "\\x41"]),
            combined_lines(),
            st.sampled_from([b" 0.005", b"", b" -"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_hostile_host_lines(lines: list[bytes]) -> None:
    """HOST_FORMAT: words before the address, then combined_lines' damaged lines."""
    assert_same(b"\n".join(lines) + b"\n", HOST_FORMAT)


WORDS = st.sampled_from(["0.005", "-", "", "0.004,", "\\x22x", "\u00e9", "\t"]) | TEXT


@st.composite
def timing_lines(draw: st.DrawFn) -> bytes:
    """Lines of nginx's `main` followed by words after the last quote (TIMING_FORMAT, and
    combined with one variable there), as many as the format has or not, spaces doubled or not."""
    ip = draw(st.sampled_from(["203.0.113.9", "-"]))
    words = draw(st.lists(WORDS, max_size=6))
    tail = draw(st.sampled_from([" ", "", "  "])) + " ".join(words)
    line = (
        f'{ip} - - [27/Nov/2026:09:14:00 +0100] "{draw(requests())}" 200 43 "-" "{draw(FIELD)}" '
        f'"{draw(FIELD)}"{tail}'
    )
    return line.encode("utf-8", "surrogatepass")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(timing_lines(), min_size=1, max_size=30), st.sampled_from([TIMING_FORMAT, "$REQUEST_TIME"]))
def test_hostile_timing_lines(lines: list[bytes], spec: str) -> None:
    if spec == "$REQUEST_TIME":  # the same lines without ' "xff"', one variable after the agent
        spec = COMBINED + " $request_time"
        lines = [line[: line.rindex(b' "')] + line[line.rindex(b'"') + 1 :] for line in lines]
    assert_same(b"\n".join(lines) + b"\n", spec)


GAP_TEXT = st.sampled_from([" ", "", "  ", " rt=", " uct=", "rt=", "=", " urt=", "\\x22", " uht="])


@st.composite
def upstream_lines(draw: st.DrawFn) -> bytes:
    """Lines of UPSTREAM_FORMAT: half with the format's text around the timings, half with text
    right or not, as many quoted values as the format has or not."""
    right = draw(st.booleans())
    texts = [" rt=", " uct=", " uht=", " urt="]

    def text(k: int) -> str:
        return texts[k] if right else draw(GAP_TEXT | st.just(texts[k]))

    tail = text(0) + draw(WORDS) + text(1)
    for k in range(3 if right else draw(st.integers(1, 4))):
        tail += (text(min(k + 1, 3)) if k else "") + f'"{draw(WORDS)}"'
    tail += "" if right else draw(st.sampled_from(["", " ", " x"]))
    line = (
        f'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "{draw(requests())}" 200 43 "-" "{draw(FIELD)}" '
        f'"{draw(FIELD)}"{tail}'
    )
    return line.encode("utf-8", "surrogatepass")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(upstream_lines(), min_size=1, max_size=30))
def test_hostile_upstream_lines(lines: list[bytes]) -> None:
    assert_same(b"\n".join(lines) + b"\n", UPSTREAM_FORMAT)


LIST_ELEMENT = st.sampled_from(["10.0.0.7:80", "0.002", "-", "", "502", "unix:/s", "a,b", ",", "x,", ":"])


@st.composite
def ingress_lines(draw: st.DrawFn) -> bytes:
    """Lines of INGRESS_FORMAT: half with its brackets, and upstream lists of one element or
    several (", " and " : " between them); half with any words, brackets or not, spaces doubled
    or missing."""
    if draw(st.booleans()):
        words = [draw(WORDS), draw(WORDS), f"[{draw(WORDS)}]", f"[{draw(WORDS)}]"]
        for _ in range(4):
            elements = draw(st.lists(LIST_ELEMENT | WORDS, min_size=1, max_size=3))
            words.append(
                "".join(
                    e + (draw(st.sampled_from([", ", " : "])) if k < len(elements) - 1 else "")
                    for k, e in enumerate(elements)
                )
            )
        words.append(draw(WORDS))
        tail = " " + " ".join(words)
    else:
        pieces = draw(st.lists(WORDS | st.sampled_from(["[", "]", "[x]", "[]", ", ", " : "]), max_size=14))
        tail = "".join(p + draw(st.sampled_from([" ", "", "  "])) for p in pieces)
    line = (
        f'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "{draw(requests())}" 200 43 "-" "{draw(FIELD)}"{tail}'
    )
    return line.encode("utf-8", "surrogatepass")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ingress_lines(), min_size=1, max_size=30))
def test_hostile_ingress_lines(lines: list[bytes]) -> None:
    assert_same(b"\n".join(lines) + b"\n", INGRESS_FORMAT)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([ISO_FORMAT, COMMON_ISO]).flatmap(
        lambda spec: st.tuples(
            st.just(spec), st.lists(iso_lines(spec == ISO_FORMAT), min_size=1, max_size=30)
        )
    )
)
def test_hostile_iso_lines(case: tuple[str, list[bytes]]) -> None:
    spec, lines = case
    assert_same(b"\n".join(lines) + b"\n", spec)


JSON_KEYS = st.sampled_from(
    [
        "remote_addr", "time_local", "msec", "time_iso8601", "request", "request_method", "request_uri",
        "status", "body_bytes_sent", "bytes_sent", "http_referer", "http_user_agent", "uid_got", "uid_set",
        "http_x_forwarded_for", "remote_user", "request_time", "cookie_tl_optout", "http_cookie", "a-b", "\u00e9",
    ]
)  # fmt: skip
JSON_VALUES = (
    st.sampled_from(
        [
            "-",
            "",
            "27/Nov/2026:09:14:00 +0100",
            "1793577601.123",
            "2026-11-27T09:14:00+01:00",
            "2026-11-27T09:14:00-23:59",
            "2026-11-27T24:14:00+01:00",
            "200",
            "43",
            "1",
            "a=b; tl_optout=1",
            "x=1",
        ]
    )
    | st.builds(lambda t: f"GET {t} HTTP/1.1", targets())
    | requests()
    | TEXT
    | st.integers(-300, 10**19)
    | st.sampled_from([None, 1.5, [1], {"a": "b"}, True])
)


@st.composite
def json_lines(draw: st.DrawFn) -> bytes:
    """JSON lines of any keys (the canonical ones, the opt-out cookie, others), values strings,
    numbers and what is neither, spaced or not, escaped as ASCII or not, a key sometimes twice,
    sometimes cut or followed by junk; half of them a line nginx could write (every column's key,
    the referer and agent any text, escaped or not), then any other pairs."""
    pairs = draw(st.lists(st.tuples(JSON_KEYS, JSON_VALUES), max_size=8))
    if draw(st.booleans()):
        request = draw(st.builds(lambda t: f"GET {t} HTTP/1.1", targets()))
        base: dict[str, Any] = {
            "remote_addr": "203.0.113.9", "time_local": "27/Nov/2026:09:14:00 +0100", "request": request,
            "status": 200, "http_referer": draw(FIELD), "http_user_agent": draw(FIELD),
        }  # fmt: skip
        pairs = [*base.items(), *(p for p in pairs if p[0] not in base)]
    ascii_only = draw(st.booleans())
    sep = draw(st.sampled_from([",", ", ", " ,\t"])), draw(st.sampled_from([":", ": ", " : "]))
    items = [
        json.dumps(k, ensure_ascii=ascii_only) + sep[1] + json.dumps(v, ensure_ascii=ascii_only)
        for k, v in pairs
    ]
    line = (
        draw(st.sampled_from(["", " "]))
        + "{"
        + sep[0].join(items)
        + "}"
        + draw(st.sampled_from(["", " ", " x"]))
    )
    data = line.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_lines(), min_size=1, max_size=30))
def test_hostile_json_lines(lines: list[bytes]) -> None:
    assert_same(b"\n".join(lines) + b"\n", "json")


COOKIES = st.sampled_from(
    ["-", "1", "0", "tl_optout=1", "a=b; tl_optout=1", "tl_optout=1 ;x", "\\x09tl_optout=1", "tl_optout=10"]
)


@st.composite
def optout_lines(draw: st.DrawFn) -> bytes:
    """combined lines with "$cookie_tl_optout" "$http_cookie" (OPTOUT_FORMAT), page tags often."""
    ip = draw(st.sampled_from(["203.0.113.9", "-"]))
    request = draw(requests() | st.builds(lambda t: f"GET /w/home.gif?tl={t} HTTP/1.1", tokens()))
    cookie, header = draw(COOKIES | TEXT), draw(COOKIES | TEXT | st.builds("; ".join, st.lists(COOKIES)))
    line = f'{ip} - - [27/Nov/2026:09:14:00 +0100] "{request}" 200 43 "-" "-" "{cookie}" "{header}"'
    return line.encode("utf-8", "surrogatepass")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(optout_lines(), min_size=1, max_size=30))
def test_hostile_optout_lines(lines: list[bytes]) -> None:
    assert_same(b"\n".join(lines) + b"\n", OPTOUT_FORMAT)


def msecs() -> st.SearchStrategy[str]:
    canonical = st.builds(
        lambda secs, ms, width: f"{secs:0{width}d}.{ms:03d}",
        st.integers(0, 253402300800 + 5) | st.sampled_from([0, 253402300799, 253402300800]),
        st.integers(0, 999),
        st.sampled_from([1, 10, 12, 13]),
    )
    odd = st.sampled_from(["-", "", "1e9", "+1.000", "1.5", "1.1234", "1793577601", ".123", "-1.000", "1 2"])
    return canonical | odd | TEXT


@st.composite
def msec_lines(draw: st.DrawFn) -> bytes:
    """Lines of the format the generated server writes ($msec $remote_addr, no $remote_user,
    then as combined, then "$uid_got" "$uid_set"), damaged as combined_lines damages them."""
    ip = draw(st.sampled_from(["203.0.113.9", "-", "", "2001:db8::1"]) | TEXT)
    status = draw(st.sampled_from(["200", "302", "404", "2000", "OK", "-"]))
    size = draw(st.sampled_from(["43", "0", "-", "", "x"]))
    fields = [draw(requests()), draw(FIELD), draw(FIELD), draw(FIELD), draw(FIELD)]
    line = (
        f'{draw(msecs())} {ip} "{fields[0]}" {status} {size} "{fields[1]}" "{fields[2]}" "{fields[3]}" "{fields[4]}"'
    ).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        line = line[: draw(st.integers(0, len(line)))]
    return line + draw(st.sampled_from([b"", b"", b"\xff", b"\x00", b"\r", b'"', b" x"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(msec_lines(), min_size=1, max_size=30))
def test_hostile_msec_lines(lines: list[bytes]) -> None:
    assert_same(b"\n".join(lines) + b"\n", MSEC_FORMAT)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=8))
def test_random_bytes(lines: list[bytes]) -> None:
    assert_same(b"\n".join(lines) + b"\n")


# -- the recipient lookup (key_index) -----------------------------------------------------


def test_recipient_lookup_matches_a_dict() -> None:
    """key_index/key_lookup against a dict, with keys and queries cut from real and mutated
    lines (any bytes, the empty id, ids differing in a byte or in their delivery)."""
    for data in [apache_logs().read_bytes()[:200_000], *SEEDS, b"\n\n", b"x", *mutants(300, seed=7)]:
        assert_lookup_same(data)


def test_recipient_lookup_refuses_bad_tables() -> None:
    ids = pa.array(["r1", "r2", "r1"], pa.large_string())
    index = fastpath.key_index()
    fastpath.key_add(index, pa.array([0, 0, 1], pa.int32()), ids)  # r1 of two deliveries
    got = fastpath.key_lookup(index, pa.array([1, 0, 2, -1], pa.int32()), pa.array(["r1", "r1", "r1", "r1"]))
    assert got.to_pylist() == [2, 0, -1, -1]
    with pytest.raises(ValueError, match="too short"):  # fewer delivery numbers than ids
        index.lookup(b"\0\0\0\0", *pa.array(["a", "b"], pa.large_string()).buffers()[1:], 0, 2)
    with pytest.raises(ValueError, match="out of bounds"):  # offsets past the data
        index.lookup(bytes(8), pa.array([0, 5, 99], pa.int64()).buffers()[1], b"abcde", 0, 2)
    with pytest.raises(ValueError, match="duplicate key"):  # the join would give two rows
        fastpath.key_add(index, pa.array([1], pa.int32()), pa.array(["r1"], pa.large_string()))
    with pytest.raises(ValueError, match="broken"):  # half added: never used again
        fastpath.key_lookup(index, pa.array([0], pa.int32()), pa.array(["r1"]))
    with pytest.raises(ValueError, match="negative"):
        fastpath.key_add(
            fastpath.key_index(), pa.array([-1], pa.int32()), pa.array(["r1"], pa.large_string())
        )
    assert fastpath.key_lookup(
        fastpath.key_index(), pa.array([0], pa.int32()), pa.array(["r1"])
    ).to_pylist() == [-1]


# -- the sanitizer build and the fuzz target ---------------------------------------------

_SANITIZED_RUN = textwrap.dedent(
    """
    import gzip, importlib.util, sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("tracklog.ingest._fastlog", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["tracklog.ingest._fastlog"] = module
    sys.path.insert(0, sys.argv[2])
    import fuzz_fastlog as f
    assert f.fastpath._fastlog is module, "not the sanitized build"
    corpus = Path(sys.argv[3]).read_bytes()
    samples = Path(sys.argv[4])
    chunks = [corpus, gzip.decompress((samples / "access.log.2.gz").read_bytes()), *f.SEEDS]
    for chunk in chunks:
        f.assert_same(chunk, "combined")
        for spec in f.SPECS:
            f.parse_only(chunk, spec)
    for i, chunk in enumerate(f.mutants(int(sys.argv[5]))):
        f.parse_only(chunk, f.SPECS[i % len(f.SPECS)])
        f.assert_lookup_same(chunk)
    print("sanitized run ok")
    """
)


def _sanitizer_runtimes() -> tuple[str, str]:
    """gcc's libasan.so and libubsan.so (preloaded: the Python binary is not instrumented)."""
    found = []
    for name in ("libasan.so", "libubsan.so"):
        try:
            path = subprocess.run(
                ["gcc", f"-print-file-name={name}"], check=False, capture_output=True, text=True
            ).stdout.strip()
        except OSError:
            pytest.skip("no gcc")
        if not os.path.isabs(path) or not os.path.exists(path):
            pytest.skip(f"gcc's sanitizer runtime {name} is not installed")
        found.append(path)
    return found[0], found[1]


def _build_sanitized(tmp_path: Path, *, openssl: bool) -> tuple[Path, dict[str, str]]:
    asan, ubsan = _sanitizer_runtimes()
    out = tmp_path / ("_fastlog_ssl.so" if openssl else "_fastlog_portable.so")
    cmd = [
        "gcc",
        "-shared",
        "-fPIC",
        "-g",
        "-O1",
        "-std=c11",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
        "-DTL_NO_MMAP",  # malloc everywhere, so every buffer has redzones
        f"-I{sysconfig.get_paths()['include']}",
        str(SOURCE),
        "-o",
        str(out),
        *(["-DTL_OPENSSL=1", "-lcrypto"] if openssl else []),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    env = dict(os.environ)
    env["LD_PRELOAD"] = f"{asan} {ubsan}"
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"  # CPython's own allocations are not leaks
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    return out, env


@pytest.mark.parametrize("openssl", [True, False], ids=["openssl", "portable-sha256"])
def test_sanitized_build(tmp_path: Path, openssl: bool) -> None:
    """The extension built with -fsanitize=address,undefined, in a subprocess: the corpus, the
    sample log and the seeds through the C pass in every format (and compared with the SQL in
    combined: each format's comparison is test_apache_corpus's and test_seeds_and_odd_lines',
    without the sanitizers' cost), then thousands of mutated chunks; any out-of-bounds access or
    undefined behaviour aborts the run."""
    if openssl and not Path("/usr/include/openssl/sha.h").exists():
        pytest.skip("no OpenSSL headers")
    corpus = apache_logs()
    lib, env = _build_sanitized(tmp_path, openssl=openssl)
    args = [sys.executable, "-c", _SANITIZED_RUN, str(lib), str(ROOT / "tests"), str(corpus), str(SAMPLES)]
    run = subprocess.run(
        [*args, "1500" if openssl else "300"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    assert "sanitized run ok" in run.stdout


@pytest.mark.fuzz
def test_fuzz_target(tmp_path: Path) -> None:
    """The atheris fuzz target for a bounded number of inputs (guided by the Python side's
    coverage; gcc cannot instrument the C for it, which the sanitized run covers instead)."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed{i}").write_bytes(seed)
    args = [
        sys.executable,
        str(ROOT / "tests" / "fuzz_fastlog.py"),
        "-atheris_runs=400",
        "-max_len=800",
        "-seed=1",
    ]
    run = subprocess.run([*args, str(corpus)], check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-5000:]
    assert "Done 400 " in run.stderr


def test_sanitizer_sees_a_bad_read(tmp_path: Path) -> None:
    """The sanitizer runtime works here: a deliberate out-of-bounds read aborts a program."""
    _sanitizer_runtimes()
    probe = tmp_path / "oob.c"
    probe.write_text("#include <stdlib.h>\nint main(void){char*p=malloc(4);int r=p[4];free(p);return r;}\n")
    exe = tmp_path / "oob"
    subprocess.run(
        ["gcc", "-fsanitize=address", "-g", str(probe), "-o", str(exe)], check=True, capture_output=True
    )
    run = subprocess.run(
        [str(exe)], check=False, capture_output=True, text=True, env={"ASAN_OPTIONS": "detect_leaks=0"}
    )
    assert run.returncode != 0 and "heap-buffer-overflow" in run.stderr


# -- gzip: zlib-ng and the standard library's zlib read the same bytes -----------------------


def _read_all(path: Path) -> tuple[bytes, str | None]:
    stream = sources.LogStream(sources.InputSpec(str(path)))
    try:
        return b"".join(buf for _, buf in stream.chunks(0)), stream.damage
    except DataError as exc:
        return b"", str(exc)
    finally:
        stream.close()


def test_gzip_readers_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("zlib_ng")
    assert sources.GzipReader is not gzip.GzipFile
    corpus = apache_logs().read_bytes()
    whole = gzip.compress(corpus)
    cases = {
        "sample.gz": (SAMPLES / "access.log.2.gz").read_bytes(),
        "members.gz": whole + gzip.compress(corpus[:5000], compresslevel=1),  # logrotate appends members
        "truncated.gz": whole[:-300],
        "damaged.gz": whole[:2000] + bytes(64) + whole[2064:],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    fast = {name: _read_all(tmp_path / name) for name in cases}
    monkeypatch.setattr(sources, "GzipReader", gzip.GzipFile)
    assert {name: _read_all(tmp_path / name) for name in cases} == fast
    assert fast["members.gz"][0] == corpus + corpus[:5000] + b"\n"  # gzip: its last line is complete
    # nothing of a member whose checksum could not be verified is read
    assert fast["truncated.gz"][0] == b"" and "truncated gzip data" in str(fast["truncated.gz"][1])
    assert fast["damaged.gz"][0] == b"" and "corrupt gzip data" in str(fast["damaged.gz"][1])
