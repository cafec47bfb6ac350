"""Shared fixtures: a small hand-made tracking data set (two deliveries, their manifests and
hits, including rejected, failed, trap and orphan hits) stored in a real DuckDB file, the same
hits as nginx log lines, and an independent plain-Python model of the metric definitions.

The hits are inserted straight into the documented `hits` table; `write_tracking_log` writes
them as log lines too, so the fixture can switch to real ingest.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

import crawleruseragents
import duckdb
import pytest
from click.testing import CliRunner

from tracklog import derived, metrics
from tracklog.cli import cli
from tracklog.schema import HIT_COLUMNS
from tracklog.signing import sign_path
from tracklog.store import open_writer


def skip_or_fail(reason: str) -> NoReturn:
    """Skip where an external requirement is missing; fail under TRACKLOG_CI=1 so CI always runs it."""
    if os.environ.get("TRACKLOG_CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


# A real-world corpus kept beside the repository (../shared), not in it: a fresh clone has none.
APACHE_LOGS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "apache_logs"


def apache_logs() -> Path:
    """The 10,000-line apache_logs corpus, or a skip (a failure in CI) where it is absent."""
    if not APACHE_LOGS.is_file():
        skip_or_fail(f"{APACHE_LOGS} is absent (the shared corpora live beside the repository)")
    return APACHE_LOGS


SECRET = b"test-secret"
# combined + the userid cookie, as a user would configure nginx for persons_clicked
LOG_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$uid_got"'
)

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.0"
SCANNER = "Mozilla/5.0 (compatible; LinkScanner/1.0)"
ONECLICK = "Google-OneClick-Unsubscribe"
MPP = "Mozilla/5.0"  # Apple Mail Privacy Protection's prefetch
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
PYTHON_REQUESTS = "python-requests/2.31.0"

NL1_SENT = dt.datetime(2026, 11, 3, 9, 0)
NL2_SENT = dt.datetime(2026, 12, 1, 10, 0)

NL1_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Our November picks</title></head>
<body style="font-family:sans-serif">
<p><a href="https://t.example.com/m/NL1/r000000?s=x">View in your browser</a></p>
<h1>Hello,</h1>
<p><a href="https://t.example.com/c/NL1/hero/r000000?s=abc">Hero banner &amp; sale</a></p>
<p>Our picks: <a href="https://shop.example.com/p/shoes">new shoes</a> and the
<a href='https://blog.example.com/winter'>winter blog post</a>.</p>
<p><a href="https://shop.example.com/sale">Hero again, by target URL</a></p>
<a href="https://t.example.com/c/NL1/trap/r000000" style="display:none">.</a>
<a href="https://t.example.com/x" style="display:none" aria-hidden="true">hidden</a>
<p><a href="https://t.example.com/u/NL1/r000000?s=y">Unsubscribe</a></p>
<img src="https://t.example.com/o/NL1/r000000.gif?s=z" width="1" height="1" alt="">
</body></html>
"""


@dataclass(frozen=True)
class Hit:
    delivery: str
    recipient: str
    kind: str  # open | click | mirror | unsubscribe
    ts: dt.datetime
    link: str | None = None
    method: str = "GET"
    status: int = 200
    sig: str = "valid"  # valid | invalid | missing | unchecked
    ip: str = "198.51.100.1"
    ua: str | None = IPHONE
    uid: str | None = None

    @property
    def path(self) -> str:
        if self.kind == "open":
            return f"/o/{self.delivery}/{self.recipient}.gif"
        if self.kind == "click":
            return f"/c/{self.delivery}/{self.link}/{self.recipient}"
        return f"/{self.kind[0]}/{self.delivery}/{self.recipient}"

    @property
    def query(self) -> str | None:
        if self.sig == "missing":
            return None
        if self.sig == "invalid":
            return "s=AAAAAAAAAAAAAAAAAAAAAA"
        return "s=" + sign_path(SECRET, self.path)


@dataclass
class Delivery:
    delivery_id: str
    label: str
    sent_at: dt.datetime
    subject: str | None
    content_html: str | None
    links: list[tuple[str, str, str, str | None]]  # (id, url, label, category) in message order
    recipients: list[tuple[str, str | None, str]]  # (id, email, status)


@dataclass
class DataSet:
    deliveries: list[Delivery]
    hits: list[Hit] = field(default_factory=list)


def _nl1(minutes: float) -> dt.datetime:
    return NL1_SENT + dt.timedelta(minutes=minutes)


def _nl2(minutes: float) -> dt.datetime:
    return NL2_SENT + dt.timedelta(minutes=minutes)


def _s(when: dt.datetime, seconds: float) -> dt.datetime:
    return when + dt.timedelta(seconds=seconds)


def make_dataset() -> DataSet:
    nl1 = Delivery(
        "NL1",
        "November newsletter",
        NL1_SENT,
        "Our November picks",
        NL1_HTML,
        [
            ("hero", "https://shop.example.com/sale", "Hero banner", "promo"),
            ("shoes", "https://shop.example.com/p/shoes", "Shoes", "promo"),
            ("blog", "https://blog.example.com/winter", "Winter blog", "content"),
            ("trap", "https://t.example.com/x", "hidden", "trap"),
        ],
        [
            ("r1", "jane@example.com", "sent"),
            ("r2", "bob@Example.COM", "sent"),
            ("r3", "ann@mail.test", "sent"),
            ("r4", "joe@example.com", "sent"),
            ("r5", "amy@mail.test", "sent"),
            ("r6", "kim@example.org", "failed"),
            ("r7", None, "sent"),
        ],
    )
    nl2 = Delivery(
        "NL2",
        "December newsletter",
        NL2_SENT,
        None,
        None,
        [
            ("sale", "https://shop.example.com/sale", "Sale banner", "promo"),
            ("news", "https://blog.example.com/news", "News", None),
        ],
        [
            ("r1", "jane@example.com", "sent"),
            ("r2", "bob@example.com", "sent"),
            ("r8", "lee@example.org", "sent"),
        ],
    )
    hits = [
        # NL1, r1: iPhone with a uid cookie; opens, clicks hero > shoes > hero, one trap click
        Hit("NL1", "r1", "open", _nl1(5), uid="u1"),
        Hit("NL1", "r1", "click", _nl1(6), "hero", uid="u1"),
        Hit("NL1", "r1", "click", _nl1(7), "shoes", uid="u1"),
        Hit("NL1", "r1", "click", _nl1(8), "hero", uid="u1"),
        Hit("NL1", "r1", "open", _nl1(65), uid="u1"),
        Hit("NL1", "r1", "click", _nl1(6.5), "trap", ua=SCANNER, ip="203.0.113.9"),
        # r2: desktop without cookie; a 304 open counts; clicks shoes > blog, then shoes from a
        # second browser (the message was forwarded, or read on another device)
        Hit("NL1", "r2", "open", _nl1(30), ua=CHROME_WIN, ip="198.51.100.2"),
        Hit("NL1", "r2", "click", _nl1(31), "shoes", ua=CHROME_WIN, ip="198.51.100.2"),
        Hit("NL1", "r2", "click", _nl1(40), "blog", ua=CHROME_WIN, ip="198.51.100.2"),
        Hit("NL1", "r2", "open", _nl1(90), status=304, ua=CHROME_WIN, ip="198.51.100.2"),
        Hit("NL1", "r2", "click", _nl1(200), "shoes", ua=ANDROID, ip="198.51.100.9"),
        # r3: images blocked: a click without an open pixel still proves the open
        Hit("NL1", "r3", "click", _nl1(125), "hero", ua=THUNDERBIRD, ip="198.51.100.3", uid="u3"),
        # r4: mirror page, then the opt-out link, then the provider's one-click POST
        Hit("NL1", "r4", "mirror", _nl1(10), ip="198.51.100.4"),
        Hit("NL1", "r4", "unsubscribe", _nl1(11), ip="198.51.100.4"),
        Hit("NL1", "r4", "unsubscribe", _nl1(12), method="POST", ua=ONECLICK, ip="192.0.2.1"),
        # r5: one-click POST only (not an open), and an open with unchecked signature
        Hit("NL1", "r5", "unsubscribe", _nl1(20), method="POST", ua=ONECLICK, ip="192.0.2.1"),
        Hit("NL1", "r5", "open", _nl1(300), sig="unchecked", ua=None, ip="198.51.100.5"),
        # r6 (status failed in the manifest) opened a day later anyway
        Hit("NL1", "r6", "open", _nl1(1500), ua=THUNDERBIRD, ip="198.51.100.6"),
        # rejected: forged and missing signatures
        Hit("NL1", "r1", "open", _nl1(50), sig="invalid", ip="203.0.113.50"),
        Hit("NL1", "r2", "click", _nl1(51), "hero", sig="missing", ip="203.0.113.51"),
        # failed: 4xx/5xx with a valid signature
        Hit("NL1", "r3", "click", _nl1(52), "hero", status=404, ip="198.51.100.3"),
        Hit("NL1", "r3", "open", _nl1(53), status=500, ip="198.51.100.3"),
        # orphans: unknown recipient, unknown link, unknown delivery
        Hit("NL1", "r99", "click", _nl1(60), "hero", ip="198.51.100.99"),
        Hit("NL1", "r1", "click", _nl1(61), "gone", uid="u1"),
        Hit("NL9", "r1", "open", _nl1(62), uid="u1"),
        # NL2
        Hit("NL2", "r1", "open", _nl2(2), uid="u1"),
        Hit("NL2", "r1", "click", _nl2(3), "sale", uid="u1"),
        Hit("NL2", "r8", "open", _nl2(100), ua=ANDROID, ip="198.51.100.8"),
        Hit("NL2", "r8", "click", _nl2(101), "sale", ua=ANDROID, ip="198.51.100.8"),
        Hit("NL2", "r8", "click", _nl2(102), "news", ua=ANDROID, ip="198.51.100.8"),
        Hit("NL2", "r8", "click", _nl2(103), "sale", ua=ANDROID, ip="198.51.100.8"),
        Hit("NL2", "r2", "open", _nl2(1440), ua=CHROME_WIN, ip="198.51.100.2"),
        # machines (README "Machine opens and bot clicks"), and people that look a bit like them
        # r4's Apple Mail: MPP prefetches seconds after the send (exact agent; Apple's network)
        Hit("NL1", "r4", "open", _s(NL1_SENT, 2), ua=MPP, ip="17.58.63.10"),
        Hit("NL1", "r4", "open", _s(NL1_SENT, 4), ip="17.58.63.11"),
        # r3 reads in Gmail: the image proxy's open is r3's (a person), then the click above
        Hit("NL1", "r3", "open", _nl1(124.5), ua=GMAIL_PROXY, ip="66.249.84.1"),
        # a gateway's scanner follows every link of r5's message within a second, and the
        # opt-out link, seconds after the send (with a browser's agent)
        Hit("NL1", "r5", "click", _s(NL1_SENT, 3), "hero", ua=CHROME_WIN, ip="192.0.2.77"),
        Hit("NL1", "r5", "click", _s(NL1_SENT, 3.4), "shoes", ua=CHROME_WIN, ip="192.0.2.77"),
        Hit("NL1", "r5", "click", _s(NL1_SENT, 3.8), "blog", ua=CHROME_WIN, ip="192.0.2.77"),
        Hit("NL1", "r5", "unsubscribe", _s(NL1_SENT, 4.2), ua=CHROME_WIN, ip="192.0.2.77"),
        # a HEAD on r2's hero link (a scanner checking it), a HEAD on r8's pixel
        Hit("NL1", "r2", "click", _nl1(29), "hero", method="HEAD", ua=CHROME_WIN, ip="192.0.2.78"),
        Hit("NL2", "r8", "open", _nl2(99), method="HEAD", ua=ANDROID, ip="192.0.2.79"),
        # r1 opens and clicks within seconds of the send: a person (the open came first)
        Hit("NL1", "r1", "open", _s(NL1_SENT, 1), uid="u1"),
        Hit("NL1", "r1", "click", _s(NL1_SENT, 3), "blog", uid="u1"),
        # r2 in NL2 clicks two links 5 s apart: a person
        Hit("NL2", "r2", "click", _s(_nl2(1441), 0), "sale", ua=CHROME_WIN, ip="198.51.100.2"),
        Hit("NL2", "r2", "click", _s(_nl2(1441), 5), "news", ua=CHROME_WIN, ip="198.51.100.2"),
        # an HTTP library fetches r1's NL2 pixel
        Hit("NL2", "r1", "open", _nl2(30), ua=PYTHON_REQUESTS, ip="203.0.113.20"),
        # last (a later batch than what it flags): a trap click 4 s after r2's shoes click in
        # NL1, from r2's own browser: it flags that click too
        Hit("NL1", "r2", "click", _s(_nl1(31), 4), "trap", ua=CHROME_WIN, ip="198.51.100.2"),
    ]
    return DataSet([nl1, nl2], hits)


def store_manifests(con: duckdb.DuckDBPyConnection, data: DataSet) -> None:
    for d in data.deliveries:
        con.execute(
            "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                d.delivery_id,
                d.label,
                d.sent_at,
                d.subject,
                None,
                d.content_html,
                f"{d.delivery_id}.json",
                "0" * 64,
                dt.datetime(2026, 12, 31),
            ],
        )
        for pos, (link_id, url, label, category) in enumerate(d.links, start=1):
            con.execute(
                "INSERT INTO links (delivery_id, link_id, position, url, label, category) VALUES (?, ?, ?, ?, ?, ?)",
                [d.delivery_id, link_id, pos, url, label, category],
            )
        for rid, email, status in d.recipients:
            con.execute(
                "INSERT INTO recipients VALUES (?, ?, ?, ?, NULL)", [d.delivery_id, rid, email, status]
            )


def store_hits(con: duckdb.DuckDBPyConnection, hits: list[Hit]) -> None:
    rows = [
        [
            1,
            i,
            0,
            h.ts,
            h.ip,
            h.method,
            h.query,
            h.status,
            43,
            None,
            h.ua,
            h.uid,
            None,
            h.kind,
            h.delivery,
            h.link,
            h.recipient,
            h.sig,
        ]
        for i, h in enumerate(hits, start=1)
    ]
    columns = ", ".join(HIT_COLUMNS)
    con.executemany(f"INSERT INTO hits ({columns}) VALUES ({', '.join(['?'] * len(HIT_COLUMNS))})", rows)


def build_db(path: Path, data: DataSet, *, manifests: bool = True, hits: bool = True) -> Path:
    with open_writer(path) as con:
        if manifests:
            store_manifests(con, data)
        if hits:
            store_hits(con, data.hits)
    return path


def log_line(h: Hit) -> str:
    """The hit as nginx would log it with LOG_FORMAT (combined plus "$uid_got")."""
    when = h.ts.replace(tzinfo=dt.UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    target = h.path + (f"?{h.query}" if h.query else "")
    return (
        f'{h.ip} - - [{when}] "{h.method} {target} HTTP/1.1" {h.status} 43 "-" '
        f'"{h.ua or "-"}" "{h.uid or "-"}"'
    )


def write_tracking_log(path: Path, hits: list[Hit]) -> Path:
    path.write_text("".join(log_line(h) + "\n" for h in sorted(hits, key=lambda h: h.ts)), encoding="utf-8")
    return path


# --- the independent model: the definitions of issue 4 in plain Python -----------------------


def half_up_tenths(num: int, den: int) -> float:
    if den == 0:
        return 0.0
    q = Fraction(num, den) * 10
    return int(q + Fraction(1, 2)) / 10 if q >= 0 else -int(-q + Fraction(1, 2)) / 10


def pct(num: int, den: int) -> float:
    return half_up_tenths(100 * num, den)


class Model:
    """What the reports must say about a DataSet, computed row by row."""

    def __init__(self, data: DataSet) -> None:
        self.data = data
        self.by_id = {d.delivery_id: d for d in data.deliveries}

    def event_type(self, h: Hit) -> str:
        if h.kind == "unsubscribe":
            return "unsubscribe" if h.method == "POST" else "optout"
        return h.kind

    def accepted(self, h: Hit) -> bool:
        return h.sig in ("valid", "unchecked") and h.status < 400

    # the classifier's defaults (README "Machine opens and bot clicks"), written out again
    IMAGE_PROXIES = ("googleimageproxy", "yahoomailproxy", "outlookimageproxy")
    APPLE = ipaddress.ip_network("17.0.0.0/8")

    def agent_kind(self, ua: str | None) -> str | None:
        if not ua:
            return None
        if any(p in ua.lower() for p in self.IMAGE_PROXIES):
            return "proxy"
        if ua == "Mozilla/5.0":
            return "mpp"
        if crawleruseragents.is_crawler(ua) or re.search("(?i)scanner", ua):
            return "bot"
        return None

    def reasons(self, h: Hit) -> list[str]:
        """Why the accepted hit `h` is a machine's ([] for a person's)."""
        t = self.event_type(h)
        if t == "unsubscribe":
            return []
        kind = self.agent_kind(h.ua)
        peers = [
            p
            for p in self.data.hits
            if p.delivery == h.delivery and p.recipient == h.recipient and self.accepted(p)
        ]
        clicks = [p for p in peers if p.kind == "click"]
        sec = dt.timedelta(seconds=1)
        out = []
        if t == "open" and kind == "mpp":
            out.append("mpp")
        if t == "open" and kind != "proxy" and ipaddress.ip_address(h.ip) in self.APPLE:
            out.append("proxy_range")
        if h.method == "HEAD":
            out.append("head")
        if kind == "bot":
            out.append("agent")
        if any(self.is_trap(p) and abs(p.ts - h.ts) <= 10 * sec for p in peers):
            out.append("trap")
        if t == "click" and any(
            c.ts <= h.ts <= c.ts + 2 * sec
            and len({x.link for x in clicks if c.ts <= x.ts <= c.ts + 2 * sec}) >= 3
            for c in clicks
        ):
            out.append("burst")
        d = self.by_id.get(h.delivery)
        if (
            t in ("click", "mirror", "optout")
            and d is not None
            and abs(h.ts - d.sent_at) <= 5 * sec
            and not any(p.kind == "open" and h.ts - 5 * sec <= p.ts <= h.ts for p in peers)
        ):
            out.append("fast")
        return out

    def hit_class(self, h: Hit) -> str | None:
        if not self.accepted(h):
            return None
        if not self.reasons(h):
            return "human"
        return "machine_open" if h.kind == "open" else "bot_click"

    def resolves(self, h: Hit) -> bool:
        d = self.by_id.get(h.delivery)
        if d is None or h.recipient not in {r[0] for r in d.recipients}:
            return False
        if h.kind == "click":
            links = {link[0]: link for link in d.links}
            return h.link in links and links[h.link][3] != "trap"
        return True

    def resolves_recipient(self, h: Hit) -> bool:
        """The hit's delivery has a manifest that names its recipient (links aside)."""
        d = self.by_id.get(h.delivery)
        return d is not None and h.recipient in {r[0] for r in d.recipients}

    def events(
        self, delivery: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> list[Hit]:
        return [
            h
            for h in self.data.hits
            if self.hit_class(h) == "human"
            and self.resolves(h)
            and (delivery is None or h.delivery == delivery)
            and (since is None or h.ts >= since)
            and (until is None or h.ts < until)
        ]

    def orphans(self) -> list[Hit]:
        return [
            h
            for h in self.data.hits
            if self.hit_class(h) == "human" and not self.is_trap(h) and not self.resolves(h)
        ]

    def is_trap(self, h: Hit) -> bool:
        d = self.by_id.get(h.delivery)
        return bool(d and h.kind == "click" and any(lk[0] == h.link and lk[3] == "trap" for lk in d.links))

    def indicators(
        self, delivery: str, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> dict[str, Any]:
        d = self.by_id[delivery]
        ev = self.events(delivery, since, until)
        mine = [
            h
            for h in self.data.hits
            if h.delivery == delivery and (since is None or h.ts >= since) and (until is None or h.ts < until)
        ]
        opens = [h for h in ev if self.event_type(h) == "open"]
        clicks = [h for h in ev if self.event_type(h) == "click"]
        openers = {h.recipient for h in ev if self.event_type(h) in ("open", "click", "mirror", "optout")}
        clickers = {h.recipient for h in clicks}
        browsers = {("uid", h.uid) if h.uid else ("ipua", h.ip, h.ua) for h in clicks}
        delivered = sum(1 for r in d.recipients if r[2] == "sent")
        return {
            "delivery": delivery,
            "label": d.label,
            "subject": d.subject,
            "sent_at": d.sent_at,
            "sent": len(d.recipients),
            "delivered": delivered,
            "opens_total": len(opens),
            "opens_unique": len(openers),
            "clicks_total": len(clicks),
            "clicks_unique": len(clickers),
            "persons_clicked": len(browsers),
            "forwards_estimate": max(0, len(browsers) - len(clickers)),
            "open_rate": pct(len(openers), delivered),
            "click_rate": pct(len(clickers), delivered),
            "raw_reactivity": pct(len(clickers), len(openers)),
            "mirror_views": sum(1 for h in ev if self.event_type(h) == "mirror"),
            "optout_clicks": sum(1 for h in ev if self.event_type(h) == "optout"),
            "unsubscribes": len({h.recipient for h in ev if self.event_type(h) == "unsubscribe"}),
            "rejected_hits": sum(1 for h in mine if h.sig in ("invalid", "missing")),
            "failed_hits": sum(1 for h in mine if h.sig in ("valid", "unchecked") and h.status >= 400),
            "machine_opens": sum(1 for h in mine if self.hit_class(h) == "machine_open"),
            "bot_clicks": sum(1 for h in mine if self.hit_class(h) == "bot_click" and h.kind == "click"),
        }

    def hot_clicks(self, delivery: str) -> tuple[list[dict[str, Any]], int]:
        """The non-trap links in message order with clicks and clickers, and clicks_total."""
        d = self.by_id[delivery]
        clicks = [h for h in self.events(delivery) if h.kind == "click"]
        total = len(clicks)
        rows = []
        for pos, (link_id, url, label, category) in enumerate(d.links, start=1):
            if category == "trap":
                continue
            mine = [h for h in clicks if h.link == link_id]
            rows.append(
                {
                    "position": pos,
                    "link_id": link_id,
                    "label": label,
                    "url": url,
                    "clicks": len(mine),
                    "clickers": len({h.recipient for h in mine}),
                }
            )
        return rows, total


@pytest.fixture
def dataset() -> DataSet:
    return make_dataset()


@pytest.fixture
def model(dataset: DataSet) -> Model:
    return Model(dataset)


@pytest.fixture(scope="session")
def _tracking_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_db(tmp_path_factory.mktemp("template") / "tracking.duckdb", make_dataset())


@pytest.fixture
def tracking_db(tmp_path: Path, _tracking_db_template: Path) -> Path:
    """A database file of its own holding the hand-made data set (manifests and hits)."""
    return Path(shutil.copy(_tracking_db_template, tmp_path / "tracking.duckdb"))


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    """A path where no database exists yet."""
    return tmp_path / "missing.duckdb"


@pytest.fixture
def reader(tracking_db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to tracking_db, as the reports get it (the derived tables brought
    up to date first: the fixture stores its hits straight into `hits`)."""
    with derived.open_reader(tracking_db, wait=10) as con:
        yield con


ALL_TIME_WINDOW = (dt.datetime(1970, 1, 1), dt.datetime(9999, 12, 31))


def _rows(con: duckdb.DuckDBPyConnection, relation: derived.Relation) -> list[tuple[Any, ...]]:
    sql, params = relation
    return sorted(con.execute(f"SELECT * FROM ({sql}) r", params).fetchall(), key=repr)


def stored_and_defined(con: duckdb.DuckDBPyConnection) -> list[tuple[list[Any], list[Any]]]:
    """Each derived figure as stored (merged at every commit) and as the definitions compute it
    over all the events in one query."""
    pairs = [(derived.totals(), derived.totals(ALL_TIME_WINDOW))]
    pairs += [(derived.dimensions(d), derived.dimensions(d, ALL_TIME_WINDOW)) for d in metrics.DIMENSIONS]
    pairs.append((derived.domains(), derived.domains(ALL_TIME_WINDOW)))
    pairs.append((derived.minutes(), derived.minutes(ALL_TIME_WINDOW)))
    pairs.append((derived.not_counted(), derived.not_counted(ALL_TIME_WINDOW)))
    return [(_rows(con, stored), _rows(con, defined)) for stored, defined in pairs]


SAMPLE_LOGS = Path(__file__).parent.parent / "sample_logs"


def run_sample(db: Path, *args: str) -> str:
    """`tracklog --db DB ARGS` in this process with the sample's config (its secret); its stdout.
    Fails the test on a non-zero exit."""
    result = CliRunner().invoke(
        cli,
        ["--db", str(db), *args],
        env={"TRACKLOG_CONFIG": str(SAMPLE_LOGS / "tracklog.toml"), "TRACKLOG_DB": None},
    )
    assert result.exit_code == 0, result.stderr
    return result.stdout
