"""The generated tracking server against a REAL nginx: `tracklog nginx-config` writes the files
from stored manifests, nginx runs them on 127.0.0.1 (its own prefix, run as the current user),
real HTTP requests go through it, and the access log it wrote is ingested (with the log format
the generation recorded) and reported. Every expected figure is worked out by hand from the
requests sent here, in the comments; hostile manifest URLs must never break the config.
Without nginx these tests skip (fail under TRACKLOG_CI=1)."""

from __future__ import annotations

import http.client
import http.cookiejar
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import skip_or_fail
from fuzz_fastlog import assert_same, deferred_rows

from tracklog import nginx
from tracklog.ingest import fastpath
from tracklog.signing import sign_path

SECRET = "nginx-e2e-secret"
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
# nginx's empty_gif (ngx_http_empty_gif_module.c): a 1x1 transparent GIF89a, 43 bytes
GIF_43 = bytes.fromhex(
    "47494638396101000100800100000000ffffff21f90401000001002c00000000010001000002024c01003b"
)
NO_CACHE = "no-store, no-cache, must-revalidate, max-age=0"
# what the manifest says, and what the Location header must carry: bytes outside printable
# ASCII percent-encoded, everything else (quotes, ;, $, braces, backslash) exactly as written;
# nginx syntax in a URL the manifest accepts (it refuses control characters and spaces, so those
# never reach the map; nginx.py percent-encodes them all the same)
HOSTILE_URL = 'https://shop.example.com/bf?q="x";$y{z}\\w\'#}é'
HOSTILE_LOCATION = 'https://shop.example.com/bf?q="x";$y{z}\\w\'#}%C3%A9'


def _need_nginx() -> str:
    if NGINX is None:
        skip_or_fail("nginx is not installed (apt-get install nginx-light)")
    return NGINX


def tracklog(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real command in its own process (the tree under test first on the path)."""
    env = {**os.environ, "TRACKLOG_SECRET": SECRET, "TRACKLOG_CONFIG": "", "NO_COLOR": "1"}
    env.pop("TRACKLOG_DB", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
    )
    run = subprocess.run(
        [sys.executable, "-m", "tracklog", "--db", str(cwd / "t.duckdb"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check:
        assert run.returncode == 0, run.stderr
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Nginx:
    prefix: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def main_conf(prefix: Path, out: Path) -> Path:
    """A main nginx.conf in `prefix` around the generated files, as a user's would be."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    temps = "\n".join(
        f"    {kind}_temp_path {prefix / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # else workers would be nobody, unable to read tmp
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 64; }}
http {{
{temps}
    include {out / nginx.HTTP_FILE};
    include {out / nginx.SERVER_FILE};
}}
"""
    )
    return conf


def nginx_test(prefix: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_need_nginx(), "-t", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def start_nginx() -> Iterator[Any]:
    started: list[Nginx] = []

    def start(server: Nginx, conf: Path) -> Nginx:
        test = nginx_test(server.prefix, conf)
        assert test.returncode == 0, test.stderr
        server.proc = subprocess.Popen(
            [
                _need_nginx(),
                "-p",
                str(server.prefix),
                "-e",
                str(server.prefix / "error.log"),
                "-c",
                str(conf),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(server)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=0.1).close()
                return server
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nginx did not listen: {(server.prefix / 'error.log').read_text()}")

    yield start
    for server in started:
        stop(server)


def stop(server: Nginx) -> None:
    """Graceful stop (SIGQUIT): the workers finish and the access log is complete."""
    if server.proc is not None and server.proc.poll() is None:
        server.proc.send_signal(signal.SIGQUIT)
        server.proc.wait(timeout=20)


def write_manifest(folder: Path, delivery: str, links: list[dict[str, str]], recipients: list[str]) -> Path:
    path = folder / f"{delivery}.json"
    html = (
        f'<html><body><a href="http://t.example.com/c/{delivery}/hero/r0?s=x">Hero</a>'
        f'<a href="http://t.example.com/u/{delivery}/r0?s=y">Unsubscribe</a>'
        f'<img src="http://t.example.com/o/{delivery}/r0.gif?s=z"></body></html>'
    )
    (folder / f"{delivery}.html").write_text(html)
    path.write_text(
        json.dumps(
            {
                "delivery": delivery,
                "label": f"Delivery {delivery}",
                "sent_at": "2026-12-01T00:00:00Z",
                "content": f"{delivery}.html",
                "links": links,
                "recipients": [{"recipient_id": r, "email": f"{r}@example.org"} for r in recipients],
            }
        )
    )
    return path


def url(base: str, path: str, sig: str | None = None) -> str:
    return f"{base}{path}?s={sig if sig is not None else sign_path(SECRET.encode(), path)}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# a person's browser: urllib's own agent (Python-urllib) is an HTTP library, a machine to the
# classifier (tracklog.classify), and so is a bare "Mozilla/5.0" (Apple's MPP)
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


def browser(follow: bool = True) -> urllib.request.OpenerDirector:
    """A client with its own cookie jar (the userid cookie makes it one browser)."""
    handlers: list[Any] = [urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())]
    if not follow:
        handlers.append(_NoRedirect())
    opener = urllib.request.build_opener(*handlers)
    opener.addheaders = [("User-Agent", BROWSER_UA)]
    return opener


def fetch(opener: urllib.request.OpenerDirector, target: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; 3xx/4xx are answers here, not errors."""
    request = urllib.request.Request(target, **kw)
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()
    finally:
        time.sleep(0.003)  # $msec has milliseconds: keep every request in its own


@pytest.fixture
def landing() -> Iterator[str]:
    """A second web server, the target of the followed click."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"landing page"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/landing?from=mail"
    server.shutdown()
    server.server_close()


def test_end_to_end_through_a_real_nginx(tmp_path: Path, start_nginx: Any, landing: str) -> None:
    _need_nginx()
    port = free_port()
    server = Nginx(tmp_path / "prefix", port)
    server.prefix.mkdir()
    links = [
        {"id": "hero", "url": "https://shop.example.com/sale", "label": "Hero"},
        {"id": "code", "url": HOSTILE_URL, "label": "Code"},
        {"id": "local", "url": landing, "label": "Landing"},
        {"id": "trap", "url": "https://shop.example.com/trap", "label": "hidden", "category": "trap"},
    ]
    manifest = write_manifest(tmp_path, "NGX-1", links, ["r1", "r2", "r3", "r4"])
    tracklog(tmp_path, "ingest", "--manifest", str(manifest))
    out = tmp_path / "conf"
    log_dir = server.prefix / "t1"  # the server is named after its log's directory at ingest
    log_dir.mkdir()
    gen = generate(tmp_path, out, port, log_dir / "access.log")
    assert {Path(r["file"]).name for r in gen} >= {nginx.MAP_FILE, "NGX-1.html"}
    start_nginx(server, main_conf(server.prefix, out))
    base = server.base
    a, c, d = browser(follow=False), browser(follow=False), browser()
    b = browser()

    # r1, browser A: two opens, clicks on hero and on the hostile URL (not followed)
    status, headers, body = fetch(a, url(base, "/o/NGX-1/r1.gif"))
    assert (status, len(body), body, headers["Content-Type"]) == (200, 43, GIF_43, "image/gif")
    assert headers["Cache-Control"] == NO_CACHE and headers["Pragma"] == "no-cache"
    assert headers["Expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert fetch(a, url(base, "/o/NGX-1/r1.gif"))[0] == 200
    status, headers, _ = fetch(a, url(base, "/c/NGX-1/hero/r1"))
    assert (status, headers["Location"]) == (302, "https://shop.example.com/sale")
    status, headers, _ = fetch(a, url(base, "/c/NGX-1/code/r1"))
    assert (status, headers["Location"]) == (302, HOSTILE_LOCATION)
    # r1's message forwarded: the hero link clicked in another browser, C
    assert fetch(c, url(base, "/c/NGX-1/hero/r1"))[0] == 302
    # r2, browser B: a click followed to the landing server, then the mirror page
    status, _, body = fetch(b, url(base, "/c/NGX-1/local/r2"))
    assert (status, body) == (200, b"landing page")
    status, headers, body = fetch(b, url(base, "/m/NGX-1/r2"))
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert (
        "script-src" not in headers["Content-Security-Policy"]
        and "default-src 'none'" in headers["Content-Security-Policy"]
    )
    page = body.decode()
    assert (
        'href="https://shop.example.com/sale"' in page and "/c/NGX-1/" not in page and "/o/NGX-1/" not in page
    )
    # r2 again, a mail client with a long hostile user agent (quotes, backslashes, $, braces, latin-1)
    hostile_ua = ('Mozilla/5.0 "evil" \\ $x {y}; <b>é</b> ' * 150)[:6000]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", url("", "/o/NGX-1/r2.gif"), skip_accept_encoding=True)
    conn.putheader("User-Agent", hostile_ua.encode("latin-1"))
    conn.endheaders()
    assert conn.getresponse().status == 200
    conn.close()
    time.sleep(0.003)
    # r3, browser D: the opt-out link (GET shows the page), then its form's POST; then the
    # mailbox provider's RFC 8058 one-click POST
    status, headers, body = fetch(d, url(base, "/u/NGX-1/r3"))
    assert status == 200 and b'<form method="post">' in body
    status, headers, body = fetch(d, url(base, "/u/NGX-1/r3"), data=b"", method="POST")
    assert status == 200 and "Location" not in headers and b"unsubscribed" in body
    one_click = b"List-Unsubscribe=One-Click"
    status, headers, body = fetch(
        browser(), url(base, "/u/NGX-1/r3"), data=one_click, method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert status == 200 and "Location" not in headers and b"unsubscribed" in body
    # r4: a forged signature (nginx still redirects: the link exists), the trap link, a HEAD
    status, headers, _ = fetch(a, url(base, "/c/NGX-1/hero/r4", sig="A" * 22))
    assert (status, headers["Location"]) == (302, "https://shop.example.com/sale")
    assert fetch(browser(follow=False), url(base, "/c/NGX-1/trap/r4"))[0] == 302
    status, headers, body = fetch(browser(), url(base, "/o/NGX-1/r4.gif"), method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "43", b"")
    # an unknown link, an unknown delivery (validly signed: only the map decides), and a link id
    # differing only in case from the manifest's (tracklog ids are case-sensitive): 404
    assert fetch(a, url(base, "/c/NGX-1/nope/r1"))[0] == 404
    assert fetch(a, url(base, "/c/OTHER/hero/r1"))[0] == 404
    assert fetch(a, url(base, "/c/NGX-1/HERO/r1"))[0] == 404
    # not a tracking route
    assert fetch(a, f"{base}/favicon.ico")[0] == 404
    requests_sent = 18  # every fetch above to nginx, plus the hostile user agent's

    stop(server)
    log = (log_dir / "access.log").read_text(encoding="latin-1")
    assert len(log.splitlines()) == requests_sent
    if fastpath.extension_available():  # nginx's own lines: the compiled pass reads them all
        raw = (log_dir / "access.log").read_bytes()
        assert assert_same(raw, nginx.LOG_FORMAT) == requests_sent  # as the SQL does
        assert deferred_rows(raw, nginx.LOG_FORMAT) == 0
    # the format recorded by nginx-config is the one ingest uses: no --log-format here
    tracklog(tmp_path, "ingest", str(log_dir))

    report = json.loads(tracklog(tmp_path, "report", "delivery", "NGX-1", "--format", "json").stdout)
    assert report == {
        "delivery": "NGX-1",
        "label": "Delivery NGX-1",
        "subject": None,
        "sent_at": "2026-12-01T00:00:00Z",
        "sent": 4,
        "delivered": 4,
        "opens_total": 3,  # r1 twice, r2 (hostile user agent); r4's HEAD is a machine's
        "opens_unique": 3,  # r1 (open), r2 (click, mirror, open), r3 (opt-out GET)
        "clicks_total": 4,  # r1 hero (A), r1 code (A), r1 hero (C), r2 local; trap and forged not
        "clicks_unique": 2,  # r1, r2
        "persons_clicked": 3,  # browsers A, C, B by their userid cookie
        "forwards_estimate": 1,  # 3 - 2
        "open_rate": 75.0,  # 3 / 4
        "click_rate": 50.0,  # 2 / 4
        "raw_reactivity": 66.7,  # 2 / 3
        "mirror_views": 1,
        "optout_clicks": 1,  # r3's GET
        "unsubscribes": 1,  # r3's POSTs: one recipient
        "rejected_hits": 1,  # the forged signature
        "failed_hits": 2,  # nope and HERO (404, valid signature); OTHER is another delivery's
        "machine_opens": 1,  # r4's HEAD on the pixel
        "bot_clicks": 1,  # r4's click on the trap link
    }
    tab = json.loads(tracklog(tmp_path, "recipient", "r1", "--format", "json").stdout)
    assert [(e["type"], e["link_id"], e["url"]) for e in tab] == [
        ("click", "hero", "https://shop.example.com/sale"),  # browser C, the newest
        ("click", "code", HOSTILE_URL),
        ("click", "hero", "https://shop.example.com/sale"),
        ("open", None, None),
        ("open", None, None),
    ]
    assert [e["ts"] for e in tab] == sorted((e["ts"] for e in tab), reverse=True)
    tab = json.loads(tracklog(tmp_path, "recipient", "r3", "--format", "json").stdout)
    assert [e["type"] for e in tab] == ["unsubscribe", "unsubscribe", "optout"]
    hot = json.loads(
        tracklog(tmp_path, "report", "hot-clicks", "--delivery", "NGX-1", "--format", "json").stdout
    )
    assert [(h["link_id"], h["clicks"], h["clickers"], h["share"]) for h in hot] == [
        ("hero", 2, 1, 50.0),
        ("code", 1, 1, 25.0),
        ("local", 1, 1, 25.0),
    ]
    status = json.loads(tracklog(tmp_path, "status", "--format", "json").stdout)
    (t1,) = status["servers"]
    # hits: the 18 lines less the favicon (the HEAD is a hit: a machine's)
    assert (t1["server"], t1["streams"], t1["lines"], t1["hits"]) == ("t1", 1, requests_sent, 17)
    assert t1["last_hit"] is not None


# Manifest URLs as an attacker would write them, and the Location nginx must answer with (by
# hand: bytes outside printable ASCII percent-encoded as UTF-8, nothing else changed).
HOSTILE = {
    "quote": ('https://x.example/a"b', 'https://x.example/a"b'),
    "squote": ("https://x.example/a'b';", "https://x.example/a'b';"),
    "semi": ("https://x.example/;return;200;'pwned';", "https://x.example/;return;200;'pwned';"),
    "dollar": ("https://x.example/$host${uri}$", "https://x.example/$host${uri}$"),
    "braces": ("https://x.example/}server{listen;9;{", "https://x.example/}server{listen;9;{"),
    "backslash": ('https://x.example/a\\";\\n\\', 'https://x.example/a\\";\\n\\'),
    "hash": ("https://x.example/#include;/etc/passwd", "https://x.example/#include;/etc/passwd"),
    "unicode": ("https://x.example/café?q=ü", "https://x.example/caf%C3%A9?q=%C3%BC"),
}
# Whitespace and control characters never reach the map from a manifest (the loader refuses such
# URLs); nginx.nginx_url percent-encodes them all the same (test_nginx_url_escapes_or_refuses).


def hostile_links() -> list[dict[str, str]]:
    links = [{"id": k, "url": u} for k, (u, _) in HOSTILE.items()]
    # ids that differ only in case (nginx compares map keys ignoring case)
    links += [
        {"id": "Case", "url": "https://x.example/upper"},
        {"id": "case", "url": "https://x.example/lower"},
        {"id": "a.b", "url": "https://x.example/dot"},  # '.' is no regex wildcard
    ]
    return links


def generate(cwd: Path, out: Path, port: int, log: Path, *extra: str) -> list[dict[str, Any]]:
    run = tracklog(
        cwd,
        "nginx-config",
        "--server-name",
        "t.example.com",
        "--out",
        str(out),
        "--listen",
        f"127.0.0.1:{port}",
        "--access-log",
        str(log),
        "--format",
        "json",
        *extra,
    )
    return list(json.loads(run.stdout))


def test_hostile_manifest_urls_never_break_the_config(tmp_path: Path, start_nginx: Any) -> None:
    _need_nginx()
    port = free_port()
    server = Nginx(tmp_path / "prefix", port)
    server.prefix.mkdir()
    tracklog(tmp_path, "ingest", "--manifest", str(write_manifest(tmp_path, "H-1", hostile_links(), ["r1"])))
    # a delivery id starting with "~" would be a regex key to nginx; ids "X" and "x" collide
    tracklog(tmp_path, "ingest", "--manifest", str(write_manifest(tmp_path, "~t", [{"id": "x", "url": "https://x.example/tilde"}], ["r1"])))  # fmt: skip
    tracklog(tmp_path, "ingest", "--manifest", str(write_manifest(tmp_path, "X", [{"id": "x", "url": "https://x.example/X"}], ["r1"])))  # fmt: skip
    tracklog(tmp_path, "ingest", "--manifest", str(write_manifest(tmp_path, "x", [{"id": "x", "url": "https://x.example/x"}], ["r1"])))  # fmt: skip
    out = tmp_path / "conf"
    generate(tmp_path, out, port, server.prefix / "access.log")
    start_nginx(server, main_conf(server.prefix, out))
    client = browser(follow=False)
    for link, (_, location) in HOSTILE.items():
        status, headers, _ = fetch(client, f"{server.base}/c/H-1/{link}/r1")
        assert (link, status, headers.get("Location"), headers.get("X-Evil")) == (link, 302, location, None)
    expected = {
        "/c/H-1/Case/r1": "https://x.example/upper",
        "/c/H-1/case/r1": "https://x.example/lower",
        "/c/H-1/a.b/r1": "https://x.example/dot",
        "/c/~t/x/r1": "https://x.example/tilde",
        "/c/X/x/r1": "https://x.example/X",
        "/c/x/x/r1": "https://x.example/x",
    }
    for path, location in expected.items():
        status, headers, _ = fetch(client, server.base + path)
        assert (path, status, headers.get("Location")) == (path, 302, location)
    for path in (
        "/c/H-1/CASE/r1",
        "/c/H-1/aXb/r1",
        "/c/H-1/QUOTE/r1",
        "/c/~T/x/r1",
        "/c/t/x/r1",
        "/c/H-1/semi;/r1",
    ):
        assert (path, fetch(client, server.base + path)[0]) == (path, 404)


def test_regenerating_changes_only_the_map_and_a_reload_serves_it(tmp_path: Path, start_nginx: Any) -> None:
    _need_nginx()
    port = free_port()
    server = Nginx(tmp_path / "prefix", port)
    server.prefix.mkdir()
    first = [{"id": "hero", "url": "https://x.example/1"}]
    tracklog(tmp_path, "ingest", "--manifest", str(write_manifest(tmp_path, "D1", first, ["r1"])))
    out = tmp_path / "conf"
    written = generate(tmp_path, out, port, server.prefix / "access.log")
    assert all(r["changed"] for r in written)
    conf = main_conf(server.prefix, out)
    start_nginx(server, conf)
    client = browser(follow=False)
    assert fetch(client, f"{server.base}/c/D2/hero/r1")[0] == 404

    again = generate(tmp_path, out, port, server.prefix / "access.log")
    assert [r for r in again if r["changed"]] == []  # nothing new: nothing rewritten
    second = [{"id": "hero", "url": "https://x.example/2"}]
    tracklog(tmp_path, "ingest", "--manifest", str(write_manifest(tmp_path, "D2", second, ["r1"])))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    changed = {
        Path(r["file"]).name
        for r in generate(tmp_path, out, port, server.prefix / "access.log")
        if r["changed"]
    }
    assert changed == {nginx.MAP_FILE, "D2.html"}  # the map, and the new delivery's mirror copy
    untouched = {p: t for p, t in before.items() if p.name not in (nginx.MAP_FILE, nginx.MIRROR_DIR)}
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    assert [p.name for p in out.rglob(".*.tmp")] == []  # no temporary file left behind

    assert nginx_test(server.prefix, conf).returncode == 0
    reload = subprocess.run(
        [_need_nginx(), "-p", str(server.prefix), "-e", str(server.prefix / "error.log"), "-c", str(conf), "-s", "reload"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert reload.returncode == 0, reload.stderr
    for _ in range(100):  # the new workers take over
        status, headers, _ = fetch(client, f"{server.base}/c/D2/hero/r1")
        if status == 302:
            break
        time.sleep(0.05)
    assert (status, headers["Location"]) == (302, "https://x.example/2")
    assert fetch(client, f"{server.base}/c/D1/hero/r1")[1]["Location"] == "https://x.example/1"


def test_a_large_map_with_the_longest_ids_loads(tmp_path: Path) -> None:
    _need_nginx()
    links = [{"id": f"{i:04d}-" + "L" * 123, "url": f"https://x.example/{i}"} for i in range(3000)]
    delivery = "D" * 128
    tracklog(tmp_path, "ingest", "--manifest", str(write_manifest(tmp_path, delivery, links, ["r1"])))
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    out = tmp_path / "conf"
    generate(tmp_path, out, free_port(), prefix / "access.log")
    test = nginx_test(prefix, main_conf(prefix, out))
    assert test.returncode == 0, test.stderr


def test_mirror_upstream_and_custom_unsubscribe_page(tmp_path: Path) -> None:
    page = tmp_path / "bye.html"
    page.write_text("<p>Bye</p>\n")
    out = tmp_path / "conf"
    generate(tmp_path, out, 8080, tmp_path / "access.log", "--mirror-upstream", "http://127.0.0.1:9000",
             "--unsubscribe-page", str(page), "--cookie-name", "tl", "--cookie-domain", "example.com")  # fmt: skip
    locations = (out / nginx.LOCATIONS_FILE).read_text()
    assert "proxy_pass http://127.0.0.1:9000;" in locations and not (out / nginx.MIRROR_DIR).exists()
    assert "userid_name tl;" in locations and "userid_domain example.com;" in locations
    assert (out / nginx.UNSUBSCRIBE_PAGE).read_text() == "<p>Bye</p>\n"
    if NGINX is not None:
        prefix = tmp_path / "prefix"
        prefix.mkdir()
        test = nginx_test(prefix, main_conf(prefix, out))
        assert test.returncode == 0, test.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--server-name", "t.example.com; include /etc/passwd"),
        ("--server-name", "t.example.com\nlisten 9"),
        ("--listen", "80; root /"),
        ("--cookie-name", "uid;"),
        ("--cookie-expires", "1d; userid off"),
        ("--cookie-domain", "example.com }"),
        ("--mirror-upstream", "http://up/x"),
        ("--mirror-upstream", "http://up;"),
        ("--access-log", "/var/log/a b.log"),
        ("--out", "conf;x"),
    ],
)
def test_options_that_would_inject_config_are_refused(tmp_path: Path, option: str, value: str) -> None:
    args = {"--server-name": "t.example.com", option: value}
    run = tracklog(tmp_path, "nginx-config", *[x for kv in args.items() for x in kv], check=False)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(f"Error: {option} ") and run.stdout == ""
    assert not (tmp_path / "tracklog-nginx").exists() and not (tmp_path / "conf;x").exists()


def test_nginx_url_escapes_or_refuses() -> None:
    assert nginx.nginx_url("https://x.example/a") == '"https://x.example/a"'
    assert nginx.nginx_url('https://x/"\\$') == '"https://x/\\"\\\\${tracklog_dollar}"'
    assert nginx.nginx_url("https://x/\n") == '"https://x/%0A"'
    assert (
        nginx.nginx_url("https://x/a\nadd_header X-Evil 1;\r\n")
        == '"https://x/a%0Aadd_header%20X-Evil%201;%0D%0A"'
    )
    assert (
        nginx.nginx_url("https://x/} server { listen 9; {") == '"https://x/}%20server%20{%20listen%209;%20{"'
    )
    for refused in ("javascript:alert(1)", "data:text/html,x", "//x.example", "https:", "ftp://x"):
        assert nginx.nginx_url(refused) is None


def test_a_link_nginx_cannot_redirect_to_is_left_out_with_a_warning() -> None:
    text, mapped, refused = nginx.map_file([("D", "ok", "https://x/"), ("D", "js", "javascript:alert(1)")])
    assert mapped == 1 and refused == ["delivery D link js: URL scheme is not http, https, mailto or tel"]
    assert '"D/ok" "https://x/";' in text and "javascript" not in text


def test_the_mirror_copy_counts_for_nobody() -> None:
    content = (
        '<a href="https://t.example.com/c/D/hero/r9?s=abc&amp;x=1">Hero</a>'
        "<a href='//t.example.com/c/D/gone/r9'>Gone</a>"
        '<a href="https://t.example.com/u/D/r9?s=u">Unsubscribe</a>'
        '<a href="https://t.example.com/m/D/r9">Mirror</a>'
        '<img src="https://t.example.com/o/D/r9.gif?s=o">'
        '<a href="https://t.example.com/c/OTHER/hero/r9">Other delivery</a>'
    )
    page = nginx.mirror_page(content, "D", {"hero": 'https://shop.example/?a=1&b="2"'})
    assert page == (
        '<a href="https://shop.example/?a=1&amp;b=&quot;2&quot;">Hero</a>'
        "<a href='#'>Gone</a>"
        '<a href="#">Unsubscribe</a>'
        '<a href="#">Mirror</a>'
        '<img src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7">'
        '<a href="https://t.example.com/c/OTHER/hero/r9">Other delivery</a>'
    )
