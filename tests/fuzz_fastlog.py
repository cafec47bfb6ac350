"""Fuzz target of the compiled fast path (tracklog/ingest/_fastlog.c), and the differential check
the tests share: one chunk of log bytes through both paths, every column of tl_chunk compared.

    python tests/fuzz_fastlog.py -atheris_runs=20000 [CORPUS_DIR]   # atheris (pip install atheris)

Each input is a chunk of log bytes: split as ingest splits it (invalid UTF-8, NUL and CR
repaired), parsed by the C pass and by the SQL, which must agree on every row. With no C
compiler instrumented for coverage (atheris wants clang's -fsanitize=fuzzer-no-link), atheris
steers by the Python side's coverage and mutates from the seeds; test_fastpath.py runs it under
AddressSanitizer and UBSan, where any bad read or write in the C aborts the run.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracklog.ingest import fastpath
from tracklog.ingest.engine import CHUNK_COLUMNS, Ingester, make_chunk, split_lines
from tracklog.ingest.formats import COMBINED, resolve_format
from tracklog.nginx import LOG_FORMAT as MSEC_FORMAT  # the format the generated server writes

SECRET = b"test-secret"
UID_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$uid_got"'
)

# nginx's own `main` format (the one its stock nginx.conf defines): combined, then
# "$http_x_forwarded_for", the address when $remote_addr is '-'
MAIN_FORMAT = COMBINED + ' "$http_x_forwarded_for"'
# then timings after the last quote, space-separated; $upstream_response_time may hold spaces
# ("0.004, 0.002"): it takes the words between the others'
TIMING_FORMAT = MAIN_FORMAT + " $request_time $upstream_response_time $pipe"

# combined with the variables that carry the web-tracking opt-out (routes.OPTED_OUT_SQL)
OPTOUT_FORMAT = COMBINED + ' "$cookie_tl_optout" "$http_cookie"'

# nginx's `main` with [$time_iso8601] for [$time_local] (one word: "[2026-11-27T09:14:00+01:00]"),
# then a timing; and common with it
ISO_FORMAT = MAIN_FORMAT.replace("[$time_local]", "[$time_iso8601]") + " $request_time"
COMMON_ISO = '$remote_addr - $remote_user [$time_iso8601] "$request" $status $body_bytes_sent'
# variables before $remote_addr (a word each, in `extra` first; $server_port never escaped), then
# combined with a uid and a timing
HOST_FORMAT = "$host $server_port " + UID_FORMAT + " $request_time"

# nginx's upstream timing format (the nginx blog's `upstream_time`, after `main`): text around
# the quoted timings, a variable between two of them
UPSTREAM_FORMAT = MAIN_FORMAT + (
    ' rt=$request_time uct="$upstream_connect_time" uht="$upstream_header_time" urt="$upstream_response_time"'
)
# ingress-nginx's default log format: words with text around them after the last quote, four
# upstream lists among them (the SQL's regular expression)
INGRESS_FORMAT = COMBINED + (
    " $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr"
    " $upstream_response_length $upstream_response_time $upstream_status $req_id"
)

SEEDS = [
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif?s=abc HTTP/1.1" 200 43 "-" "Mozilla/5.0"\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /c/NL/hero/r1?x=1&s=WhPvSB_eoIpWVhhAypsTpg HTTP/1.1" 302 0 "-" "-"\n',
    b'203.0.113.9 - the boss [27/Nov/2026:09:14:00 -0230] "POST /u/NL/r1 HTTP/2.0" 200 - "-" "a\\x22b"\n',
    b'2001:db8::1 - - [01/Jan/2027:00:00:00 +0000] "\\x16\\x03\\x01\\x00\\xFC\\x03" 400 150 "-" "-"\n',
    b'1.2.3.4 - - [29/Feb/2024:23:59:59 +1400] "GET /caf\\xC3\\xA9?q=%41 HTTP/1.1" 200 43 "\\xE2\\x82" "\\xF0\\x9F\\x98\\x80x"\n',
    b'1.2.3.4 - - [7/nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 1e2 +5 "-" "-"\n',
    b'\n\xff\xfe\x00"\r\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /w/cart.gif?tl=2.NLr1WhPvSB_eoIpWVhhAypsTpg&amount=12.50&currency=EUR&items=2 HTTP/1.1" 200 43 "https://shop.example/" "Mozilla/5.0"\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /w/home.gif HTTP/1.1" 200 43 "-" "-"\n',
    # MSEC_FORMAT's lines ($msec first, no $remote_user, "$uid_got" "$uid_set" last)
    b'1793577601.123 203.0.113.9 "GET /o/NL/r1.gif?s=abc HTTP/1.1" 200 43 "-" "Mozilla/5.0" "uid=CgAAAGdHk" "-"\n',
    b'0000000001.000 2001:db8::1 "GET /c/NL/hero/r1?s=WhPvSB_eoIpWVhhAypsTpg HTTP/2.0" 302 0 "-" "a\\x22b" "-" "uid=x\\x3D"\n',
    b'253402300799.999 - "POST /u/NL/r1 HTTP/1.1" 200 - "-" "-" "-" "-"\n',
    b'1e9 1.2.3.4 "GET / HTTP/1.1" 200 43 "-" "-" "-" "-"\n',
    b'+1793577601.123  "-" 20 +5 "-" "-" "-" "-"\n',
    # OPTOUT_FORMAT's: page tags with a landing token, the opt-out cookie in either variable
    b'1.2.3.4 - - [27/Nov/2026:09:14:00 +0100] "GET /w/home.gif?tl=2.D1r1gCehSFptQbNKYOYlaSfB6Q&amount=2 HTTP/1.1" 200 43 "-" "-" "-" "a=b; tl_optout=1"\n',
    b'1.2.3.4 - - [27/Nov/2026:09:14:00 +0100] "GET /w/x.gif?a=1&tl=1.abc HTTP/1.1" 200 43 "-" "-" "1" "-"\n',
    # MAIN_FORMAT's: a forwarded-for list; no $remote_addr (the address then comes from the list)
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" "10.0.0.1, 192.0.2.7"\n',
    b'- - alice [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" " 10.0.0.1 ,x\\x22"\n',
    # TIMING_FORMAT's: one upstream, two, none ("-"), an empty one, too few words
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" "-" 0.005 0.004 .\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" "-" 0.005 0.004, 0.002 p\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" "-" 0.005 - .\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" "-" 0.005  .\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" "-" 0.005 .\n',
    # JSON lines: escapes, numbers, another key, the opt-out cookie, no timestamp, not JSON
    b'{"remote_addr":"203.0.113.9","time_local":"27/Nov/2026:09:14:00 +0100","request":"GET /o/NL/r1.gif?s=abc HTTP/1.1","status":200,"body_bytes_sent":43,"http_referer":"-","http_user_agent":"a\\"b\\u00e9\\ud83d\\ude00","request_time":"0.005"}\n',
    b'{ "msec" : "1793577601.123", "request": "GET /w/home.gif?tl=1.abc HTTP/1.1", "cookie_tl_optout": 1 }\n',
    b'{"remote_addr":"x","request":"GET / HTTP/1.1"}\n',
    # escaped values and a referer: the referer's column must not overwrite the decoded agent
    b'{"remote_addr":"1.2.3.4","msec":"1.000","request":"GET \\/o\\/NL\\/r1.gif HTTP/1.1","http_referer":"https://shop.example/","http_user_agent":"a\\"b\\u00e9"}\n',
    b'{"remote_addr":"x","remote_addr":"y","msec":"1.000"}\n',
    b'{"a":[1],"msec":"1.000"} x\n',
    # ISO_FORMAT's and COMMON_ISO's: an ISO time, its offset odd, a user with spaces, no brackets
    b'203.0.113.9 - - [2026-11-27T09:14:00+01:00] "GET /o/NL/r1.gif?s=abc HTTP/1.1" 200 43 "-" "-" "-" 0.005\n',
    b'203.0.113.9 - the boss [2026-11-27T09:14:00-23:59] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" "1.2.3.4" -\n',
    b'203.0.113.9 -  [2026-11-27T09:14:00+2400] "GET / HTTP/1.1" 200 43\n',
    b'203.0.113.9 - - 2026-11-27T09:14:00+01:00 "GET / HTTP/1.1" 200 43\n',
    b'203.0.113.9 - - [1969-12-31T23:59:59+00:00] "GET / HTTP/1.1" 200 43\n',
    # HOST_FORMAT's: the host, escaped, absent, empty; too few words before the address
    b't.example.com 443 203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" "uid=CgAA" 0.005\n',
    b't\\x22x - 203.0.113.9 - alice [27/Nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 200 43 "-" "-" "" -\n',
    b' 80 203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 200 43 "-" "-" "-" 1\n',
    b'80 203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 200 43 "-" "-" "-" 1\n',
    # UPSTREAM_FORMAT's: two upstreams, values absent, empty or escaped, a timing with a space,
    # its text cut short, a space too many
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" "-" rt=0.005 uct="0.001" uht="0.002" urt="0.004, 0.002"\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 200 43 "-" "-" "-" rt=- uct="-" uht="" urt="x\\x22y"\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 200 43 "-" "-" "-" rt=0 1 uct="a" uht="b" urt="c"\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 200 43 "-" "-" "-" rt=uct="a" uht="b" urt="c"\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 200 43 "-" "-" "-" rt=0.1 uct="a"  uht="b" urt="c" \n',
    # INGRESS_FORMAT's: one upstream, several (the SQL's reading), a word short, brackets missing
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET /o/NL/r1.gif HTTP/1.1" 200 43 "-" "-" 512 0.004 [ns-t-80] [] 10.0.0.7:80 43 0.002 200 5f3c\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 200 43 "-" "-" 512 0.004 [ns-t-80] [x\\x22] 10.0.0.7:80, 10.0.0.8:80 : 10.0.1.1:80 0, 0 : 5 0.1, 0.2 : 0.3 502, 502 : 200 ab\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 200 43 "-" "-" 512 0.004 [ns-t-80] [] 10.0.0.7:80 43 0.002 200\n',
    b'203.0.113.9 - - [27/Nov/2026:09:14:00 +0100] "GET / HTTP/1.1" 200 43 "-" "-" 512 0.004 ns-t-80 [] - - - - -\n',
]
# the formats the fuzz target and the sanitized run take the seeds through
SPECS = (
    "combined", "common", UID_FORMAT, MSEC_FORMAT, OPTOUT_FORMAT, MAIN_FORMAT, TIMING_FORMAT, "json", ISO_FORMAT,
    COMMON_ISO, HOST_FORMAT, UPSTREAM_FORMAT, INGRESS_FORMAT,
)  # fmt: skip


_INGESTERS: dict[tuple[str, bool, bool], Ingester] = {}


def _ingester(spec: str, *, fast: bool, verify: bool) -> Ingester:
    """One in-memory connection and Ingester per path and format, reused across inputs."""
    key = (spec, fast, verify)
    if key not in _INGESTERS:
        with _pure(not fast):
            _INGESTERS[key] = Ingester(
                duckdb.connect(),
                resolve_format(spec, {}),
                secret=SECRET,
                verify_signatures=verify,
                max_bad_ratio=1,
            )
        assert (_INGESTERS[key]._fast is not None) == fast
        _INGESTERS[key]._lookup = None  # the parse alone: no manifests here (test_lookup.py)
    return _INGESTERS[key]


def chunk_rows(
    buf: bytes, spec: str, *, fast: bool, verify: bool = True
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """(DESCRIBE of tl_chunk, its rows in line order) for one chunk, by one path: the columns an
    ingest reads from it (CHUNK_COLUMNS: the SQL path also has the request path, which the
    compiled pass's chunk does not keep)."""
    ingester = _ingester(spec, fast=fast, verify=verify)
    ingester._parse_chunk(make_chunk(buf, 1000, 0, ingester._fast))
    chunk = f"SELECT {', '.join(CHUNK_COLUMNS)} FROM tl_chunk"
    types = ingester.con.execute(f"DESCRIBE {chunk}").fetchall()
    return [t[:2] for t in types], ingester.con.execute(f"{chunk} ORDER BY line_no").fetchall()


def deferred_rows(buf: bytes, spec: str) -> int:
    """How many of the chunk's lines the C pass left to the SQL."""
    parser = fastpath.fast_parser(resolve_format(spec, {}), None)
    assert parser is not None
    lines, _ = split_lines(buf, 0, 0)
    return len(parser.parse(lines)[1])


def assert_same(buf: bytes, spec: str = "combined", *, verify: bool = True) -> int:
    """Both paths agree on every column of every row; returns the number of rows."""
    fast_types, fast = chunk_rows(buf, spec, fast=True, verify=verify)
    sql_types, sql = chunk_rows(buf, spec, fast=False, verify=verify)
    assert fast_types == sql_types
    assert len(fast) == len(sql)
    for got, want in zip(fast, sql, strict=True):
        assert got == want, _diff([t[0] for t in sql_types], got, want)
    return len(sql)


def _diff(names: list[str], got: tuple[Any, ...], want: tuple[Any, ...]) -> str:
    return "; ".join(
        f"{n}: fast {g!r} != sql {w!r}" for n, g, w in zip(names, got, want, strict=True) if g != w
    )


@contextmanager
def _pure(on: bool) -> Iterator[None]:
    old = os.environ.get(fastpath.PURE_ENV)
    os.environ[fastpath.PURE_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ[fastpath.PURE_ENV]
        else:
            os.environ[fastpath.PURE_ENV] = old


def parse_only(buf: bytes, spec: str) -> None:
    """The C pass alone (no SQL to compare with): for the sanitizers, fast enough for many inputs.
    The lines as the reader splits them, and as the compiled cut leaves them in place (any
    bytes: whatever they hold, the C must not read past them)."""
    lines, _ = split_lines(buf, 0, 0)
    line, starts = fastpath.split_buffer(buf)
    cut = pa.table({"line_no": starts, "byte_offset": starts, "line": line})
    for pads in (None, (b"6" * 64, b"\\" * 64)):
        parser = fastpath.fast_parser(resolve_format(spec, {}), pads)
        assert parser is not None
        for given, terminated in ((lines, False), (cut, True)):
            table, deferred = parser.parse(given, terminated=terminated)
            assert table.num_rows == given.num_rows
            assert all(0 <= i < given.num_rows for i in deferred.to_pylist())
            if not terminated:  # the cut's lines are not repaired: their text need not be UTF-8
                table.validate(full=True)


_ALPHABET = b' "\\x-[]/:+?&=sgif.0123456789AaFfCcEe\x00\r\xff\xc3\xa9'


def mutants(count: int, seed: int = 1) -> Iterator[bytes]:
    """Chunks of lines mutated from the seeds (bytes flipped, inserted, deleted, cut, spliced)."""
    rng = random.Random(seed)
    pool = [line for s in SEEDS for line in s.split(b"\n") if line]
    for _ in range(count):
        lines = []
        for _ in range(rng.randint(1, 40)):
            line = bytearray(rng.choice(pool))
            for _ in range(rng.randint(1, 6)):
                op, at = rng.randrange(5), rng.randrange(len(line) + 1)
                if op == 0 and line:
                    line[min(at, len(line) - 1)] = rng.choice(_ALPHABET)
                elif op == 1:
                    line[at:at] = bytes(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 4)))
                elif op == 2:
                    del line[at : at + rng.randint(1, 8)]
                elif op == 3:
                    line = line[:at]
                else:
                    other = rng.choice(pool)
                    line[at:] = other[rng.randrange(len(other)) :]
            lines.append(bytes(line))
        yield b"\n".join(lines) + b"\n"


def assert_lookup_same(data: bytes) -> None:
    """The recipient lookup of the compiled extension (fastpath.key_add, key_lookup) against
    a dict: the index's keys are (delivery number, id) pairs cut from `data` (any bytes, the
    empty id too), the queries every key, each id under other delivery numbers (-1: none), and
    near misses (an id cut short, grown by a byte), from element 1 of a sliced array."""
    pieces = data.split(data[:1] or b"\n")[:400]
    keys: dict[tuple[int, bytes], int] = {}
    for i, piece in enumerate(pieces):
        keys.setdefault((i % 3, piece), len(keys))
    numbers = pa.array([n for n, _ in keys], pa.int32())
    ids = pa.array([k for _, k in keys], pa.large_binary())
    index = fastpath.key_index()
    half = len(keys) // 2  # added in two steps (the second one grows the table)
    fastpath.key_add(index, numbers[:half], ids[:half])
    fastpath.key_add(index, numbers[half:], ids[half:])
    queries = [(9, b"")]
    for n, key in keys:
        queries += [
            (n, key),
            ((n + 1) % 3, key),
            (-1, key),
            (n, key[:-1]),
            (n, key + b"\x00"),
            (n, key + b"0"),
        ]
    ids = pa.array([k for _, k in queries], pa.binary())[1:]
    got = fastpath.key_lookup(index, pa.array([n for n, _ in queries], pa.int32())[1:], ids)
    want = [keys.get((n, k), -1) if n >= 0 else -1 for n, k in queries[1:]]
    assert got.to_pylist() == want


def one_input(data: bytes) -> None:
    """The fuzz target: the input as a chunk of lines, in combined, the uid format, the msec
    format, the opt-out format, nginx's `main`, it with timings, JSON lines, `main` with an ISO
    time, the uid format after $host $server_port, the upstream timing format or ingress-nginx's;
    and cut into the keys and queries of the recipient lookup."""
    if not data:
        return
    assert_lookup_same(data)
    buf = data if data.endswith(b"\n") else data + b"\n"
    formats = (
        "combined",
        UID_FORMAT,
        MSEC_FORMAT,
        OPTOUT_FORMAT,
        MAIN_FORMAT,
        TIMING_FORMAT,
        "json",
        ISO_FORMAT,
        HOST_FORMAT,
        UPSTREAM_FORMAT,
        INGRESS_FORMAT,
    )
    spec = formats[data[0] % len(formats)]
    assert_same(buf, spec, verify=data[-1] % 4 != 0)


def main() -> None:
    import atheris

    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):  # no corpus folder: start from the seeds
        seeds = Path(tempfile.mkdtemp(prefix="tracklog-fuzz-"))
        for i, seed in enumerate(SEEDS):
            (seeds / f"seed{i}").write_bytes(seed)
        args.append(str(seeds))
    # coverage of the Python side guides the mutations (instrument_all would take half a minute)
    for func in (
        fastpath.FastParser.parse,
        fastpath.split_buffer,
        fastpath._array,
        split_lines,
        Ingester._parse_chunk,
        assert_same,
        assert_lookup_same,
        one_input,
    ):
        atheris.instrument_func(func)
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
