"""Write a large, realistic tracking-domain access log (nginx combined format) for benchmarks.

With --pages SHARE, that share of the lines are the site's page tags (web tracking: /w/TAG.gif
with the landing token of a recipient, 30% without one, order confirmations with an amount).
With --format tracklog, the same traffic in the format `tracklog nginx-config` has nginx write
(`$msec $remote_addr "$request" ... "$http_user_agent" "$uid_got" "$uid_set"`, milliseconds
drawn at random; the browser's uid cookie on clicks and mirror views). With --format main, nginx's
own `main` format (combined, then "$http_x_forwarded_for"); main-iso, the same with
[$time_iso8601] ("[2026-11-02T00:00:01+00:00]") in place of [$time_local]; upstream, `main` then
nginx's upstream timings (`rt=$request_time uct="$upstream_connect_time"
uht="$upstream_header_time" urt="$upstream_response_time"`: "-" for the tracking hits nginx
answers itself, times for the rest, two upstreams now and then); ingress, ingress-nginx's default
format (combined, then `$request_length $request_time [$proxy_upstream_name]
[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length
$upstream_response_time $upstream_status $req_id`: every request proxied to the tracking
application behind it, one in 64 to two servers, "a, b").

About 60% opens, 30% clicks, the rest mirror pages, unsubscribes (GET and one-click POST) and
non-tracking noise, over 5 deliveries and 50,000 recipients, signed with --secret; a few hits
carry a bad or no signature and a few lines are malformed. Speed comes from drawing all random
choices in bulk, caching one signature per distinct path and one timestamp string per second.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import hmac
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tracklog.signing import SIG_BYTES, sign_path

T = TypeVar("T")

DEFAULT_LINES = 2_000_000
DEFAULT_SECRET = "bench-secret-not-for-production"
RECIPIENTS = 50_000
START = datetime(2026, 11, 2, 0, 0, 0, tzinfo=UTC)
SPAN_SECONDS = 21 * 86400
CHUNK = 50_000
FORMATS = ("combined", "tracklog", "main", "main-iso", "upstream", "ingress")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

DELIVERIES = {
    "NL-2026-11": ("hero", "pick-1", "pick-2", "pick-3", "blog", "stores", "trap"),
    "PROMO-BF-2026": ("hero", "code", "women", "men", "home", "app", "trap"),
    "TX-WELCOME-2026-11": ("confirm", "welcome-code", "new-in", "app", "help", "trap"),
    "NL-2026-12": ("hero", "gift-guide", "pick-1", "pick-2", "stores", "trap"),
    "PROMO-CYBER-2026": ("hero", "tech", "home", "code", "app", "trap"),
}
LINK_WEIGHTS = (30, 16, 11, 8, 6, 3)  # by position: the first links get most clicks; trap is last

OPEN_UAS = (  # mail clients and image proxies fetching the pixel
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Mozilla/5.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.18129; Pro)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)",
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0",
    (
        "Mozilla/5.0 (Linux; Android 14; SM-A546B Build/UP1A.231005.007; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36"
    ),
)
OPEN_UA_WEIGHTS = (30, 22, 9, 4, 1, 5, 6, 6, 3, 2, 2, 3)
BROWSER_UAS = (  # people clicking, reading the mirror page, opting out
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 "
        "Edg/131.0.0.0"
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
        "Safari/605.1.15"
    ),
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
        "Mobile/15E148 Safari/604.1"
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 "
        "Mobile/15E148 Safari/604.1"
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1"
    ),
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 "
        "Chrome/122.0.0.0 Mobile Safari/537.36"
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240905.003; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/130.0.6723.107 Mobile Safari/537.36"
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
        "Mobile/15E148 Safari/604.1"
    ),
    # link scanners of corporate mail gateways
    "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/96.0.4664.110 "
        "Safari/537.36"
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/119.0.6045.105 "
        "Safari/537.36"
    ),
    "Barracuda Sentinel (EE)",
)
BROWSER_UA_WEIGHTS = (16, 6, 6, 6, 5, 3, 1, 14, 6, 2, 8, 5, 3, 2, 5, 3, 2, 1)
ONE_CLICK_UAS = (
    "Mozilla/5.0 (compatible; Gmail Actions)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
)
NOISE = (  # (request, status, bytes, user agent)
    ("GET / HTTP/1.1", 200, 2, "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)"),
    ("GET /favicon.ico HTTP/2.0", 404, 153, BROWSER_UAS[0]),
    (
        "GET /robots.txt HTTP/1.1",
        200,
        26,
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ),
    (
        "GET /robots.txt HTTP/1.1",
        200,
        26,
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    ),
    ("GET /wp-login.php HTTP/1.1", 404, 153, "Mozilla/5.0 zgrab/0.x"),
    ("GET /.env HTTP/1.1", 404, 153, "python-requests/2.32.3"),
    ("GET /.git/config HTTP/1.1", 404, 153, "Go-http-client/1.1"),
    ("POST /xmlrpc.php HTTP/1.1", 404, 153, "-"),
)
MALFORMED = (
    '"\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xFC\\x03\\x03\\x9C\\xB7" 400 157 "-" "-"',
    '"SSH-2.0-Go" 400 157 "-" "-"',
)


def ip_pool(rng: random.Random, n: int) -> list[str]:
    first = (2, 5, 31, 37, 46, 66, 74, 77, 78, 80, 81, 82, 86, 88, 90, 92, 104, 109, 172, 176, 188, 212)
    ips = [
        f"{rng.choice(first)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(n)
    ]
    for i in range(0, n, 12):  # some clients reach the server over IPv6
        ips[i] = "2a01:cb{:02x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}".format(
            *(rng.randrange(0x10000) for _ in range(7))
        )
    return ips


def weighted_table(items: Sequence[T], weights: Sequence[float], size: int) -> list[T]:
    """A lookup table of `size` entries in which each item fills a share proportional to its weight."""
    total = sum(weights)
    table: list[T] = []
    for item, w in zip(items, weights, strict=True):
        table += [item] * round(size * w / total)
    return (table + [items[0]] * size)[:size]


PAGE_TAGS = ("home", "product", "product", "search", "cart", "order-confirmed")


def lines(n: int, secret: bytes, seed: int, fmt: str = "combined", pages: float = 0.0) -> Iterator[str]:
    """The log, one line at a time (without the newline), in `fmt` (FORMATS), `pages` of them
    page tags.

    One 96-bit random number per line, cut into fields, picks everything through lookup tables.
    """
    rng = random.Random(seed)
    deliveries = list(DELIVERIES.items())
    rids = [f"r{i:06d}" for i in range(1, RECIPIENTS + 1)]
    ips = ip_pool(rng, 40_000)
    kinds = weighted_table(range(8), (600, 300, 30, 14, 6, 48, 1.5, 0.5), 4096)
    delivery_of = weighted_table(range(len(deliveries)), (30, 30, 5, 20, 15), 128)
    link_of = weighted_table(range(len(LINK_WEIGHTS)), LINK_WEIGHTS, 256)
    open_ua_of = weighted_table(OPEN_UAS, OPEN_UA_WEIGHTS, 256)
    browser_ua_of = weighted_table(BROWSER_UAS, BROWSER_UA_WEIGHTS, 256)
    base = hmac.new(secret, digestmod=hashlib.sha256)
    sigs: dict[str, str] = {}

    def signed(path: str) -> str:
        sig = sigs.get(path)
        if sig is None:
            mac = base.copy()
            mac.update(path.encode())
            sig = sigs[path] = base64.urlsafe_b64encode(mac.digest()[:SIG_BYTES]).rstrip(b"=").decode()
        return f"{path}?s={sig}"

    probe = "/o/NL-2026-11/r000001.gif"
    assert signed(probe) == f"{probe}?s={sign_path(secret, probe)}"
    page_rng = random.Random(seed + 1)  # its own draws: without page tags, the log is unchanged

    def page_tag(r: int, who: int) -> str:
        tag = PAGE_TAGS[(r >> 20) % len(PAGE_TAGS)]
        if (r >> 24) % 10 < 3:  # an anonymous visitor
            return f"/w/{tag}.gif?ref=home"
        d_id = deliveries[delivery_of[(r >> 33) & 127]][0]
        token = signed(f"/w/{d_id}/{rids[who]}").split("?s=")[1]
        query = f"tl={len(d_id)}.{d_id}{rids[who]}{token}"
        if tag == "order-confirmed":
            query += f"&amount={(r >> 40) % 20000 / 100:.2f}&currency=EUR&items={(r >> 56) % 4 + 1}"
        return f"/w/{tag}.gif?{query}"

    mean_gap = SPAN_SECONDS / n
    t = START.timestamp()
    minute = -1
    prefix = ""
    for _ in range(n):
        r = rng.getrandbits(96)
        t += mean_gap * 2 * ((r >> 80) & 0xFFFF) / 0x10000
        second = int(t)
        if second // 60 != minute:
            minute = second // 60
            d = datetime.fromtimestamp(minute * 60, UTC)
            prefix = f" - - [{d.day:02d}/{MONTHS[d.month - 1]}/{d.year}:{d:%H:%M}:"
            if fmt == "main-iso":  # [$time_iso8601]: "[2026-11-02T00:00:01+00:00]"
                prefix = f" - - [{d:%Y-%m-%dT%H:%M}:"
        kind = kinds[r & 4095]
        who = (r >> 12) % RECIPIENTS
        jitter = (r >> 30) & 7
        ip = ips[(who * 7 + jitter) % len(ips)]
        if fmt == "combined":
            head, tail = f"{ip}{prefix}{second % 60:02d} +0000]", ""
        elif fmt == "ingress":  # ingress-nginx's default format; every request proxied
            head = f"{ip}{prefix}{second % 60:02d} +0000]"
            rt = ((r >> 20) & 15) / 1000
            if (r >> 74) & 63 == 0:  # a retry: two servers
                up = f"10.1.{jitter}.7:8080, 10.1.{jitter}.8:8080 0, 43 {rt / 2:.3f}, {rt / 2:.3f} 502, 200"
            else:
                up = f"10.1.{jitter}.7:8080 43 {rt:.3f} 200"
            tail = (
                f" {300 + (r >> 52) % 400} {rt:.3f} [default-tracking-80] [] {up} {r & 0xFFFFFFFFFFFF:012x}"
            )
        elif fmt in ("main", "main-iso", "upstream"):
            # nginx's `main`: combined, then "$http_x_forwarded_for" (1 in 16 a list)
            head = f"{ip}{prefix}{second % 60:02d}{'+00:00' if fmt == 'main-iso' else ' +0000'}]"
            tail = f' "10.{who % 256}.{jitter}.1, 192.0.2.7"' if (r >> 74) & 15 == 0 else ' "-"'
            if fmt == "upstream":  # the timings: nginx answers the tracking hits itself
                rt = ((r >> 20) & 15) / 1000
                up = "-" if kind != 5 else f"{rt / 2:.3f}"
                urt = up if kind != 5 or jitter else f"{rt / 4:.3f}, {rt / 4:.3f}"
                tail += f' rt={rt:.3f} uct="{up}" uht="{up}" urt="{urt}"'
        else:  # $msec, its milliseconds drawn from the line's random number
            head = f"{second}.{((r >> 70) & 1023) % 1000:03d} {ip}"
            tail = f' "uid=B{who:07X}0000" "-"' if kind in (1, 2) else ' "-" "-"'
        if pages and page_rng.random() < pages:
            page = page_tag(page_rng.getrandbits(64), who)
            ua = browser_ua_of[(r >> 66) & 255]
            yield f'{head} "GET {page} HTTP/1.1" 200 43 "https://shop.example.com/" "{ua}"{tail}'
            continue
        if kind == 5:
            req, status, size, ua = NOISE[who % len(NOISE)]
            yield f'{head} "{req}" {status} {size} "-" "{ua}"{tail}'
            continue
        if kind == 6:
            yield f"{head} {MALFORMED[who % 2]}{tail}"
            continue
        d_id, links = deliveries[delivery_of[(r >> 33) & 127]]
        rid = rids[who]
        rare = (r >> 40) & 1023
        if kind == 0:
            target = signed(f"/o/{d_id}/{rid}.gif")
            cached = jitter == 0
            method, status, size, ua = (
                "GET",
                304 if cached else 200,
                0 if cached else 43,
                open_ua_of[(r >> 50) & 255],
            )
        elif kind == 1:
            link = links[-1] if rare < 4 else links[min(link_of[(r >> 58) & 255], len(links) - 2)]
            target = signed(f"/c/{d_id}/{link}/{rid}")
            method, status, size, ua = "GET", 302, 145, browser_ua_of[(r >> 66) & 255]
        elif kind == 2:
            target = signed(f"/m/{d_id}/{rid}")
            method, status, size, ua = "GET", 200, 24816 + jitter, browser_ua_of[(r >> 66) & 255]
        elif kind == 3:
            target = signed(f"/u/{d_id}/{rid}")
            method, status, size, ua = "GET", 200, 2650, browser_ua_of[(r >> 66) & 255]
        elif kind == 4:
            target = signed(f"/u/{d_id}/{rid}")
            method, status, size, ua = "POST", 200, 0, ONE_CLICK_UAS[jitter % 2]
        else:  # kind 7: a bad or missing signature
            target = signed(f"/o/{d_id}/{rid}.gif")
            target = target[: target.index("?")] if jitter < 3 else target[:-4] + "AAAA"
            method, status, size, ua = "GET", 200, 43, browser_ua_of[(r >> 66) & 255]
        if rare == 1023:  # a truncated line now and then, as after a crash mid-write
            yield f'{head} "{method} {target[:30]}'
            continue
        yield f'{head} "{method} {target} HTTP/1.1" {status} {size} "-" "{ua}"{tail}'


def write_manifests(folder: Path) -> list[Path]:
    """One manifest per delivery of the log (JSON + recipients CSV): all RECIPIENTS of each
    (about 1% failed), its links in message order, the last one the trap. Returns the JSON paths."""
    folder.mkdir(parents=True, exist_ok=True)
    domains = ("gmail.com", "yahoo.fr", "orange.fr", "outlook.com", "example.org")
    paths = []
    for d_id, links in DELIVERIES.items():
        csv_name = f"{d_id.lower()}.recipients.csv"
        with (folder / csv_name).open("w") as fh:
            fh.write("recipient_id,email,status\n")
            for i in range(1, RECIPIENTS + 1):
                status = "failed" if i % 97 == 0 else "sent"
                fh.write(f"r{i:06d},user{i}@{domains[i % len(domains)]},{status}\n")
        doc = {
            "delivery": d_id,
            "label": d_id.replace("-", " ").title(),
            "sent_at": START.isoformat().replace("+00:00", "Z"),
            "links": [
                {
                    "id": link,
                    "url": f"https://shop.example.com/{d_id.lower()}/{link}",
                    "label": link,
                    **({"category": "trap"} if link == "trap" else {}),
                }
                for link in links
            ],
            "recipients": csv_name,
        }
        path = folder / f"{d_id}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        paths.append(path)
    return paths


def write_log(
    path: Path,
    n: int,
    secret: bytes,
    seed: int = 1,
    compress: bool = False,
    fmt: str = "combined",
    pages: float = 0.0,
) -> int:
    """Write n lines in `fmt` to path (gzip-compressed if asked); returns the uncompressed size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    size = 0
    with tmp.open("wb") as raw:
        out: BinaryIO = gzip.GzipFile(path.stem, "wb", 6, raw, mtime=0) if compress else raw  # type: ignore[assignment]
        batch: list[str] = []
        for line in lines(n, secret, seed, fmt, pages):
            batch.append(line)
            if len(batch) == CHUNK:
                size += out.write(("\n".join(batch) + "\n").encode())
                batch.clear()
        if batch:
            size += out.write(("\n".join(batch) + "\n").encode())
        if compress:
            out.close()
    tmp.replace(path)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lines", type=int, default=DEFAULT_LINES, help="number of lines (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the log file to write")
    parser.add_argument("--gzip", action="store_true", help="gzip-compress the output")
    parser.add_argument("--secret", default=DEFAULT_SECRET, help="signing secret (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--format", choices=FORMATS, default="combined", help="log format (default: %(default)s)"
    )
    parser.add_argument(
        "--pages", type=float, default=0.0, help="share of the lines that are page tags (default: 0)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    size = write_log(
        args.out, args.lines, args.secret.encode(), args.seed, args.gzip, args.format, args.pages
    )
    took = time.perf_counter() - started
    print(
        f"wrote {args.out}: {args.lines:,} lines, {size / 1e6:,.0f} MB uncompressed, in {took:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
