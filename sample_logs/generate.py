"""Generate the sample data set: three delivery manifests (recipients CSV, HTML content) and the
tracking domain's nginx access logs for them, rotated over access.log.2.gz, access.log.1, access.log.

Deterministic: the same --seed, --scale and --secret give byte-identical files. Standard library
only, plus tracklog.signing so that the signatures are the ones ingest verifies. expected.json
holds the ground truth (line counts per file and per category) for tests.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import html
import io
import json
import math
import random
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tracklog.signing import sign_path

DEMO_SECRET = "tracklog-demo-secret-NOT-FOR-PRODUCTION-4f9c2e"
HOST = "t.example.com"
PLACEHOLDER_RECIPIENT = "r000000"  # the recipient id of the tracked URLs inside the stored HTML
LOCAL_OFFSET = timedelta(hours=1)  # the tracking server logs in Europe/Paris time (CET, +0100)
LOG_START = datetime(2026, 11, 1, 5, 25, 0, tzinfo=UTC)  # logrotate's cron.daily, 06:25 local
ROTATIONS = (datetime(2026, 11, 9, 5, 25, 0, tzinfo=UTC), datetime(2026, 11, 25, 5, 25, 0, tzinfo=UTC))
LOG_END = datetime(2026, 12, 4, 11, 0, 0, tzinfo=UTC)
GZIP_MTIME = int(ROTATIONS[1].timestamp())  # when logrotate compressed access.log.2
OUTAGE = (datetime(2026, 11, 27, 7, 41, 0, tzinfo=UTC), datetime(2026, 11, 27, 7, 45, 0, tzinfo=UTC))
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

PIXEL_BYTES = 43
REDIRECT_BYTES = 145  # nginx's own "302 Found" page
ERROR_BYTES = {400: 157, 404: 153, 500: 177}

# --- user agents -------------------------------------------------------------------------------
GMAIL_PROXY_UA = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO_PROXY_UA = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
APPLE_PROXY_UA = "Mozilla/5.0"
GMAIL_ONE_CLICK_UA = "Mozilla/5.0 (compatible; Gmail Actions)"
IPHONE_MAIL_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
OUTLOOK_DESKTOP_UAS = (
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.18129; Pro)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)",
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
)
THUNDERBIRD_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0"
SAMSUNG_MAIL_UA = (
    "Mozilla/5.0 (Linux; Android 14; SM-A546B Build/UP1A.231005.007; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36"
)
DESKTOP_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
)
IPHONE_SAFARI_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/{version} Mobile/15E148 Safari/604.1"
)
ANDROID_BROWSERS = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240905.003; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.107 Mobile Safari/537.36",
)
MOBILE_BROWSERS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
)
SCANNER_UAS = (  # corporate mail gateways that follow every link of an incoming message
    "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/96.0.4664.110 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/119.0.6045.105 Safari/537.36",
)
NOISE_SCANNER_UAS = (
    "Mozilla/5.0 zgrab/0.x",
    "python-requests/2.32.3",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/78.0.3904.108 Safari/537.36",
    "Go-http-client/1.1",
    "-",
)
CRAWLER_UAS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
)
UPTIME_UA = "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)"
SCANNED_PATHS = (
    "/wp-login.php",
    "/.env",
    "/.git/config",
    "/xmlrpc.php",
    "/wp-admin/setup-config.php",
    "/phpmyadmin/index.php",
    "/actuator/health",
    "/cgi-bin/luci/;stok=/locale",
    "/admin/config.php",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/.aws/credentials",
    "/owa/auth/logon.aspx",
)

# --- people ------------------------------------------------------------------------------------
FIRST_NAMES = (
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Emma",
    "Inès",
    "Sarah",
    "Julie",
    "Laura",
    "Marie",
    "Anaïs",
    "Clara",
    "Lucie",
    "Pauline",
    "Nathalie",
    "Isabelle",
    "Sophie",
    "Amélie",
    "Zoé",
    "Jade",
    "Thomas",
    "Lucas",
    "Hugo",
    "Nicolas",
    "Julien",
    "Maxime",
    "Antoine",
    "Alexandre",
    "Romain",
    "Kevin",
    "Mathieu",
    "Pierre",
    "Louis",
    "Karim",
    "Mehdi",
    "Yanis",
    "Olivier",
    "Laurent",
    "Paul",
    "Arthur",
    "Noah",
    "David",
    "Sébastien",
    "Théo",
)
LAST_NAMES = (
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Michel",
    "Garcia",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier",
    "Morel",
    "Girard",
    "Andre",
    "Mercier",
    "Dupont",
    "Lambert",
    "Bonnet",
    "Francois",
    "Martinez",
    "Legrand",
    "Garnier",
    "Faure",
    "Rousseau",
    "Blanc",
    "Guerin",
    "Muller",
    "Henry",
    "Roussel",
    "Nicolas",
    "Perrin",
    "Benali",
    "Nguyen",
    "Haddad",
    "Lopez",
    "Schmitt",
    "Chevalier",
    "Fontaine",
    "Lemoine",
    "Gauthier",
)
# domain -> (weight, mailbox family)
DOMAINS = {
    "gmail.com": (30, "gmail"),
    "outlook.com": (7, "microsoft"),
    "hotmail.fr": (6, "microsoft"),
    "hotmail.com": (2, "microsoft"),
    "live.fr": (2, "microsoft"),
    "yahoo.fr": (6, "yahoo"),
    "yahoo.com": (2, "yahoo"),
    "icloud.com": (8, "apple"),
    "me.com": (1, "apple"),
    "orange.fr": (10, "isp"),
    "wanadoo.fr": (2, "isp"),
    "free.fr": (5, "isp"),
    "sfr.fr": (3, "isp"),
    "laposte.net": (3, "isp"),
    "gmx.fr": (1, "isp"),
    "proton.me": (1, "isp"),
    "acme-corp.com": (3, "corporate"),
    "globex-industries.fr": (3, "corporate"),
    "initech.io": (1, "corporate"),
    "umbrella-group.eu": (1, "corporate"),
}
# mailbox family -> (mail client, weight)
CLIENTS = {
    "gmail": (("gmail_proxy", 70), ("apple_mpp", 22), ("iphone_mail", 8)),
    "microsoft": (("webmail", 60), ("apple_mpp", 25), ("iphone_mail", 15)),
    "yahoo": (("yahoo_proxy", 75), ("apple_mpp", 25)),
    "apple": (("apple_mpp", 85), ("iphone_mail", 15)),
    "isp": (("webmail", 50), ("android_mail", 15), ("apple_mpp", 20), ("thunderbird", 15)),
    "corporate": (("outlook_desktop", 80), ("apple_mpp", 10), ("iphone_mail", 10)),
}
WEBMAIL_ORIGINS = {"microsoft": "https://outlook.live.com/", "isp": "https://webmail.orange.fr/"}
SEGMENT_OPEN_RATE = {"vip": 0.72, "active": 0.5, "occasional": 0.28, "lapsed": 0.08, "new": 0.78}
SEGMENT_WEIGHTS = (("vip", 8), ("active", 37), ("occasional", 35), ("lapsed", 20))
ISP_FIRST_OCTETS = (
    2,
    5,
    31,
    37,
    46,
    77,
    78,
    79,
    80,
    81,
    82,
    83,
    86,
    88,
    90,
    91,
    92,
    109,
    176,
    178,
    188,
    212,
    213,
)
MOBILE_PREFIXES = ("37.165", "37.166", "92.184", "176.144", "80.215", "5.51")
GOOGLE_PROXY_PREFIXES = (
    "66.249.84",
    "66.249.88",
    "66.249.93",
    "66.102.6",
    "66.102.8",
    "74.125.210",
    "74.125.212",
)
APPLE_PROXY_PREFIXES = ("172.225.42", "172.225.177", "172.226.32", "104.28.40", "104.28.86", "146.75.168")
YAHOO_PROXY_PREFIXES = ("87.248.114", "87.248.117", "188.125.72", "188.125.73")
GOOGLE_ACTIONS_PREFIXES = ("209.85.218", "209.85.221", "209.85.128")
SCANNER_PREFIXES = ("40.94.29", "40.94.31", "52.100.158", "148.163.151", "207.211.30")


@dataclass(frozen=True)
class Link:
    id: str
    url: str
    label: str
    category: str
    weight: float  # how much readers click it, relative to the other links
    web: bool = False  # web tracking: the click carries the landing token (tl=) to the shop


@dataclass(frozen=True)
class Delivery:
    id: str
    label: str
    sent_at: datetime
    subject: str
    kind: str  # newsletter | promo | transactional
    links: tuple[Link, ...]
    open_factor: float
    click_rate: float  # of openers
    max_days: float
    one_click: bool  # sent with List-Unsubscribe-Post (marketing mail only)
    mirror_bytes: int

    @property
    def slug(self) -> str:
        return self.id.lower()


@dataclass
class Person:
    rid: str
    email: str
    first_name: str
    segment: str
    family: str
    client: str
    browser: str
    mobile: bool
    home_ip: str
    mobile_ip: str
    work_ip: str | None
    ios: str
    outlook_ua: str
    scanner: tuple[str, str] | None = None  # (ip, ua) of the domain's mail gateway


@dataclass
class Hit:
    ts: int
    seq: int
    tag: str  # what the line is, for expected.json
    ip: str = ""
    method: str = "GET"
    target: str = ""
    status: int = 200
    size: int = 0
    referer: str = "-"
    ua: str = "-"
    proto: str = "HTTP/1.1"
    raw: str | None = None  # the whole line, for malformed lines
    delivery: str | None = None
    recipient: str | None = None
    kind: str | None = None  # open | click | mirror | unsubscribe | page, for route-valid tracking hits
    sig: str = "valid"  # valid | invalid | missing (a page tag's token: missing = anonymous)
    amount: str | None = None  # a page tag's transaction amount (EUR), as written


def trap() -> Link:
    return Link("trap", f"https://{HOST}/x", "hidden", "trap", 0.0)


DELIVERIES = (
    Delivery(
        "NL-2026-11",
        "November newsletter",
        datetime(2026, 11, 3, 9, 0, tzinfo=UTC),
        "Our November picks",
        "newsletter",
        (
            Link("hero", "https://shop.example.com/sale", "Hero banner", "promo", 30),
            Link(
                "pick-1", "https://shop.example.com/p/wool-overcoat", "Pick 1: wool overcoat", "product", 16
            ),
            Link(
                "pick-2", "https://shop.example.com/p/leather-boots", "Pick 2: leather boots", "product", 11
            ),
            Link(
                "pick-3", "https://shop.example.com/p/cashmere-scarf", "Pick 3: cashmere scarf", "product", 8
            ),
            Link(
                "blog",
                "https://blog.example.com/2026/11/winter-layering",
                "Read: winter layering",
                "editorial",
                6,
            ),
            Link("stores", "https://www.example.com/stores", "Find a store", "info", 3),
            Link("instagram", "https://www.instagram.com/example", "Instagram", "social", 2),
            Link("prefs", "https://www.example.com/account/preferences", "Email preferences", "account", 1.5),
            trap(),
        ),
        1.0,
        0.22,
        9,
        True,
        24816,
    ),
    Delivery(
        "TX-WELCOME-2026-11",
        "Welcome email, November sign-ups",
        datetime(2026, 11, 10, 10, 0, tzinfo=UTC),
        "Welcome to Example!",
        "transactional",
        (
            Link("confirm", "https://www.example.com/account/confirm", "Confirm your email", "account", 40),
            Link(
                "welcome-code",
                "https://shop.example.com/welcome?code=WELCOME10",
                "10% off your first order",
                "promo",
                22,
            ),
            Link("new-in", "https://shop.example.com/new-in", "Start shopping", "promo", 12),
            Link("app", "https://www.example.com/app", "Get the app", "app", 5),
            Link("help", "https://help.example.com/", "Help centre", "support", 2),
            trap(),
        ),
        1.0,
        0.45,
        9,
        False,
        14208,
    ),
    Delivery(
        "PROMO-BF-2026",
        "Black Friday 2026",
        datetime(2026, 11, 27, 7, 0, tzinfo=UTC),
        "Black Friday: up to 50% off, today only",
        "promo",
        (
            Link(
                "hero", "https://shop.example.com/black-friday", "Hero: up to 50% off", "promo", 34, web=True
            ),
            Link(
                "code",
                "https://shop.example.com/black-friday?code=BF30",
                "Extra 30% with BF30",
                "promo",
                14,
                web=True,
            ),
            Link(
                "women", "https://shop.example.com/black-friday/women", "Shop women", "category", 12, web=True
            ),
            Link("men", "https://shop.example.com/black-friday/men", "Shop men", "category", 9, web=True),
            Link("home", "https://shop.example.com/black-friday/home", "Shop home", "category", 5, web=True),
            Link("app", "https://www.example.com/app", "Get the app", "app", 1.5),
            trap(),
        ),
        0.9,
        0.3,
        7,
        True,
        31094,
    ),
)
ORPHAN_DELIVERY = "NL-2026-10"  # sent in October: no manifest in this data set
ORPHAN_LINKS = ("hero", "pick-1")
REMOVED_LINK = ("NL-2026-11", "gift-guide")  # in the sent message, missing from the manifest: 404


class Generator:
    def __init__(self, rng: random.Random, secret: bytes, scale: int) -> None:
        self.rng = rng
        self.secret = secret
        self.scale = scale
        self.hits: list[Hit] = []
        self.used_emails: dict[str, None] = {}
        self.recipients: dict[str, list[tuple[Person, str]]] = {}  # delivery -> (person, status)

    # --- helpers ---------------------------------------------------------------------------------
    def add(self, when: datetime | int, tag: str, **fields: object) -> Hit:
        ts = int(when.timestamp()) if isinstance(when, datetime) else when
        hit = Hit(ts=ts, seq=len(self.hits), tag=tag, **fields)  # type: ignore[arg-type]
        self.hits.append(hit)
        return hit

    def signed(self, path: str) -> str:
        return f"{path}?s={sign_path(self.secret, path)}"

    def token(self, delivery: str, recipient: str) -> str:
        """The landing token of a web-tracking click (README, "Web tracking")."""
        return f"{len(delivery)}.{delivery}{recipient}{sign_path(self.secret, f'/w/{delivery}/{recipient}')}"

    def ip_in(self, prefix: str) -> str:
        rest = 4 - prefix.count(".") - 1
        return prefix + "".join(f".{self.rng.randint(1, 254)}" for _ in range(rest))

    def home_ip(self) -> str:
        if self.rng.random() < 0.1:
            groups = [f"{self.rng.randint(0, 0xFFFF):x}" for _ in range(5)]
            return (
                f"2a01:cb{self.rng.randint(0, 0x1F):02x}:"
                + ":".join(groups)
                + f":{self.rng.randint(1, 0xFFFF):x}"
            )
        return f"{self.rng.choice(ISP_FIRST_OCTETS)}.{self.rng.randint(0, 255)}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"

    def weighted(self, pairs: tuple[tuple[str, float], ...]) -> str:
        return self.rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]

    # --- population --------------------------------------------------------------------------------
    def email_for(self, first: str, last: str, domain: str) -> str:
        ascii_first = first.translate(str.maketrans("éèëïçÉ", "eeeicE")).lower()
        ascii_last = last.lower()
        while True:
            style = self.rng.randrange(6)
            local = (
                f"{ascii_first}.{ascii_last}",
                f"{ascii_first}{ascii_last}",
                f"{ascii_first[0]}.{ascii_last}",
                f"{ascii_first}.{ascii_last}{self.rng.randint(1, 99)}",
                f"{ascii_first}_{ascii_last}",
                f"{ascii_last}.{ascii_first}{self.rng.randint(60, 99)}",
            )[style]
            email = f"{local}@{domain}"
            if email not in self.used_emails:
                self.used_emails[email] = None
                return email

    def person(
        self, number: int, segment: str, gateways: dict[str, tuple[str, str]], work_ips: dict[str, str]
    ) -> Person:
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        domain = self.weighted(tuple((d, w) for d, (w, _) in DOMAINS.items()))
        family = DOMAINS[domain][1]
        client = self.weighted(CLIENTS[family])
        if client in ("iphone_mail", "apple_mpp", "android_mail"):
            mobile = rng.random() < 0.8
        elif client == "gmail_proxy":
            mobile = rng.random() < 0.55
        else:
            mobile = rng.random() < 0.1
        ios = rng.choice(("18_1", "18_1_1", "18_0", "17_6_1", "17_5"))
        if mobile and client in ("iphone_mail", "apple_mpp"):
            browser = IPHONE_SAFARI_UA.format(ios=ios, version=".".join(ios.split("_")[:2]))
        elif mobile and client == "android_mail":
            browser = rng.choice(ANDROID_BROWSERS)
        elif mobile:
            browser = rng.choice(ANDROID_BROWSERS + MOBILE_BROWSERS)
        elif client in ("iphone_mail", "apple_mpp"):
            browser = DESKTOP_BROWSERS[4]
        else:
            browser = rng.choice(DESKTOP_BROWSERS)
        return Person(
            rid=f"r{number:06d}",
            email=self.email_for(first, last, domain),
            first_name=first,
            segment=segment,
            family=family,
            client=client,
            browser=browser,
            mobile=mobile,
            home_ip=self.home_ip(),
            mobile_ip=self.ip_in(rng.choice(MOBILE_PREFIXES)),
            work_ip=work_ips.get(domain),
            ios=ios,
            outlook_ua=rng.choice(OUTLOOK_DESKTOP_UAS),
            scanner=gateways.get(domain),
        )

    def population(self) -> tuple[list[Person], list[Person]]:
        corporate = [d for d, (_, fam) in DOMAINS.items() if fam == "corporate"]
        gateways = {
            d: (self.ip_in(self.rng.choice(SCANNER_PREFIXES)), self.rng.choice(SCANNER_UAS))
            for d in corporate[::2]
        }
        work_ips = {d: self.home_ip() for d in corporate}
        base_n, new_n = 2100 * self.scale, 330 * self.scale
        base = [self.person(i + 1, self.weighted(SEGMENT_WEIGHTS), gateways, work_ips) for i in range(base_n)]
        new = [self.person(base_n + i + 1, "new", gateways, work_ips) for i in range(new_n)]
        return base, new

    def assign(self, base: list[Person], new: list[Person]) -> None:
        s = self.scale
        lists = {
            "NL-2026-11": self.rng.sample(base, 1250 * s),
            "TX-WELCOME-2026-11": list(new),
            "PROMO-BF-2026": self.rng.sample(base, 1620 * s) + self.rng.sample(new, 200 * s),
        }
        for delivery, people in lists.items():
            people.sort(key=lambda p: p.rid)
            self.recipients[delivery] = [
                (p, "failed" if self.rng.random() < 0.012 else "sent") for p in people
            ]

    # --- behaviour -------------------------------------------------------------------------------
    def delay(self, median_s: float, sigma: float) -> float:
        return self.rng.lognormvariate(math.log(median_s), sigma)

    def daytime(self, t: datetime) -> datetime:
        """People read mail after waking up: most night-time reads move to the morning."""
        local = t + LOCAL_OFFSET
        if local.hour < 6 and self.rng.random() < 0.85:
            morning = local.replace(hour=6, minute=30, second=0) + timedelta(
                seconds=self.rng.uniform(0, 9000)
            )
            return morning - LOCAL_OFFSET
        return t

    def open_hit(
        self, d: Delivery, p: Person, t: datetime, repeat: bool, referer: str = "-", tag: str = "open"
    ) -> None:
        path = f"/o/{d.id}/{p.rid}.gif"
        rng = self.rng
        if p.client == "gmail_proxy":
            ip, ua, proto = self.ip_in(rng.choice(GOOGLE_PROXY_PREFIXES)), GMAIL_PROXY_UA, "HTTP/1.1"
        elif p.client == "apple_mpp":
            ip, ua, proto = self.ip_in(rng.choice(APPLE_PROXY_PREFIXES)), APPLE_PROXY_UA, "HTTP/1.1"
        elif p.client == "yahoo_proxy":
            ip, ua, proto = self.ip_in(rng.choice(YAHOO_PROXY_PREFIXES)), YAHOO_PROXY_UA, "HTTP/1.1"
        elif p.client == "iphone_mail":
            ip, ua, proto = (
                (p.mobile_ip if rng.random() < 0.6 else p.home_ip),
                IPHONE_MAIL_UA.format(ios=p.ios),
                "HTTP/2.0",
            )
        elif p.client == "outlook_desktop":
            ip, ua, proto = p.work_ip or p.home_ip, p.outlook_ua, "HTTP/1.1"
        elif p.client == "android_mail":
            ip, ua, proto = p.mobile_ip, SAMSUNG_MAIL_UA, "HTTP/2.0"
        elif p.client == "thunderbird":
            ip, ua, proto = p.home_ip, THUNDERBIRD_UA, "HTTP/1.1"
        else:
            ip, ua, proto = p.home_ip, p.browser, "HTTP/2.0"
        cached = repeat and p.client not in ("gmail_proxy", "apple_mpp", "yahoo_proxy") and rng.random() < 0.4
        status, size = (304, 0) if cached else (200, PIXEL_BYTES)
        self.add(
            t,
            "open_304" if cached else tag,
            ip=ip,
            target=self.signed(path),
            status=status,
            size=size,
            referer=referer,
            ua=ua,
            proto=proto,
            delivery=d.id,
            recipient=p.rid,
            kind="open",
        )

    def second_device_open(self, d: Delivery, p: Person, t: datetime) -> None:
        if p.client in ("iphone_mail", "apple_mpp", "android_mail"):
            ip, ua = p.home_ip, DESKTOP_BROWSERS[4] if p.client != "android_mail" else DESKTOP_BROWSERS[0]
        else:
            ip, ua = p.mobile_ip, IPHONE_MAIL_UA.format(ios=p.ios)
        self.add(
            t,
            "open_second_device",
            ip=ip,
            target=self.signed(f"/o/{d.id}/{p.rid}.gif"),
            status=200,
            size=PIXEL_BYTES,
            ua=ua,
            proto="HTTP/2.0",
            delivery=d.id,
            recipient=p.rid,
            kind="open",
        )

    def click_hit(
        self,
        d: Delivery,
        p: Person,
        link_id: str,
        t: datetime,
        referer: str | None = None,
        ip: str | None = None,
        ua: str | None = None,
        tag: str = "click",
    ) -> None:
        if referer is None:
            origin = WEBMAIL_ORIGINS.get(p.family) if p.client == "webmail" else None
            referer = origin if origin and self.rng.random() < 0.5 else "-"
        web = any(lk.web for lk in d.links if lk.id == link_id)
        self.add(
            t,
            tag,
            ip=ip or (p.mobile_ip if p.mobile else (p.work_ip or p.home_ip)),
            target=self.signed(f"/c/{d.id}/{link_id}/{p.rid}")
            + (f"&tl={self.token(d.id, p.rid)}" if web else ""),
            status=302,
            size=REDIRECT_BYTES,
            referer=referer,
            ua=ua or p.browser,
            proto="HTTP/2.0",
            delivery=d.id,
            recipient=p.rid,
            kind="click",
        )

    def pick_links(self, d: Delivery, n: int) -> list[str]:
        pool = [lk for lk in d.links if lk.weight > 0]
        chosen: list[str] = []
        for _ in range(min(n, len(pool))):
            lk = self.rng.choices(pool, weights=[x.weight for x in pool])[0]
            pool.remove(lk)
            chosen.append(lk.id)
        return chosen

    def click_stream(self, d: Delivery, p: Person, t: datetime, referer: str | None = None) -> datetime:
        n = self.rng.choices((1, 2, 3, 4), weights=(58, 25, 11, 6))[0]
        for i, link_id in enumerate(self.pick_links(d, n)):
            t += timedelta(seconds=self.rng.uniform(4, 75) if i == 0 else self.rng.uniform(15, 240))
            self.click_hit(d, p, link_id, t, referer=referer, tag="click" if n == 1 else "click_stream")
        return t

    def gateway_scan(self, d: Delivery, p: Person, delivered: datetime) -> None:
        assert p.scanner is not None
        ip, ua = p.scanner
        t = delivered + timedelta(seconds=self.rng.uniform(8, 150))
        targets = [(f"/m/{d.id}/{p.rid}", "mirror", 200, d.mirror_bytes)]
        targets += [(f"/c/{d.id}/{lk.id}/{p.rid}", "click", 302, REDIRECT_BYTES) for lk in d.links]
        targets.append((f"/u/{d.id}/{p.rid}", "unsubscribe", 200, 2650))
        for path, kind, status, size in targets:
            t += timedelta(seconds=self.rng.choice((0, 0, 1)))
            self.add(
                t,
                "scanner",
                ip=ip,
                target=self.signed(path),
                status=status,
                size=size,
                ua=ua,
                delivery=d.id,
                recipient=p.rid,
                kind=kind,
            )

    def recipient_events(self, d: Delivery, p: Person, delivered: datetime) -> None:
        rng = self.rng
        end = d.sent_at + timedelta(days=d.max_days)
        if p.scanner and rng.random() < 0.6:
            self.gateway_scan(d, p, delivered)
        if p.client == "apple_mpp" and rng.random() < 0.92:
            self.open_hit(
                d, p, delivered + timedelta(seconds=self.delay(240, 1.3)), False, tag="open_mpp_prefetch"
            )
        rate = SEGMENT_OPEN_RATE[p.segment] * d.open_factor
        if rng.random() >= rate:
            return
        while True:
            t = self.daytime(delivered + timedelta(seconds=self.delay(5400, 1.7)))
            if t < end:
                break
        images_blocked = p.client == "outlook_desktop" and rng.random() < 0.4
        n_opens = rng.choices((1, 2, 3, 4, 6), weights=(52, 26, 11, 7, 4))[0]
        opens = [t]
        for _ in range(n_opens - 1):
            nxt = self.daytime(opens[-1] + timedelta(seconds=self.delay(4 * 3600, 1.5)))
            if nxt >= end:
                break
            opens.append(nxt)
        if not images_blocked:
            for i, ot in enumerate(opens):
                if p.client == "apple_mpp" and i > 0 and rng.random() < 0.5:
                    continue  # Apple's proxy serves some re-opens from its cache
                self.open_hit(d, p, ot, repeat=i > 0)
            if rng.random() < 0.15:
                self.second_device_open(d, p, opens[-1] + timedelta(seconds=self.delay(3 * 3600, 1.2)))
        last = opens[-1]
        if rng.random() < d.click_rate * (1.4 if p.segment == "vip" else 1.0):
            last = max(last, self.click_stream(d, p, opens[0] if rng.random() < 0.75 else opens[-1]))
            if len(opens) > 1 and rng.random() < 0.25:
                last = max(last, self.click_stream(d, p, opens[-1]))
        if rng.random() < 0.03:
            self.mirror_view(d, p, opens[0] + timedelta(seconds=rng.uniform(3, 40)))
        if rng.random() < 0.012:
            self.forwarded(d, p, last + timedelta(seconds=rng.uniform(4 * 3600, 2 * 86400)))
        if d.kind != "transactional" and rng.random() < 0.015:
            self.add(
                opens[-1] + timedelta(seconds=rng.uniform(10, 200)),
                "unsubscribe_get",
                ip=p.mobile_ip if p.mobile else p.home_ip,
                target=self.signed(f"/u/{d.id}/{p.rid}"),
                status=200,
                size=2650,
                ua=p.browser,
                proto="HTTP/2.0",
                delivery=d.id,
                recipient=p.rid,
                kind="unsubscribe",
            )
        if d.one_click and p.family in ("gmail", "yahoo") and rng.random() < 0.02:
            self.one_click(d, p, opens[0] + timedelta(seconds=rng.uniform(5, 120)))

    def mirror_view(self, d: Delivery, p: Person, t: datetime) -> None:
        ip = p.mobile_ip if p.mobile else p.home_ip
        url = f"https://{HOST}" + self.signed(f"/m/{d.id}/{p.rid}")
        self.add(
            t,
            "mirror",
            ip=ip,
            target=self.signed(f"/m/{d.id}/{p.rid}"),
            status=200,
            size=d.mirror_bytes + self.rng.randint(0, 60),
            ua=p.browser,
            proto="HTTP/2.0",
            delivery=d.id,
            recipient=p.rid,
            kind="mirror",
        )
        self.add(
            t + timedelta(seconds=1),
            "open_from_mirror",
            ip=ip,
            target=self.signed(f"/o/{d.id}/{p.rid}.gif"),
            status=200,
            size=PIXEL_BYTES,
            referer=url,
            ua=p.browser,
            proto="HTTP/2.0",
            delivery=d.id,
            recipient=p.rid,
            kind="open",
        )
        self.add(
            t + timedelta(seconds=1),
            "noise_favicon",
            ip=ip,
            target="/favicon.ico",
            status=404,
            size=ERROR_BYTES[404],
            referer=url,
            ua=p.browser,
            proto="HTTP/2.0",
        )
        if self.rng.random() < 0.5:
            self.click_hit(
                d,
                p,
                self.pick_links(d, 1)[0],
                t + timedelta(seconds=self.rng.uniform(10, 120)),
                referer=url,
                ip=ip,
                tag="click_from_mirror",
            )

    def forwarded(self, d: Delivery, p: Person, t: datetime) -> None:
        """The message was forwarded: someone else's device opens it, maybe clicks, under p's id."""
        ip = self.home_ip()
        ua = self.rng.choice(DESKTOP_BROWSERS + MOBILE_BROWSERS)
        self.add(
            t,
            "open_forwarded",
            ip=ip,
            target=self.signed(f"/o/{d.id}/{p.rid}.gif"),
            status=200,
            size=PIXEL_BYTES,
            ua=ua,
            proto="HTTP/2.0",
            delivery=d.id,
            recipient=p.rid,
            kind="open",
        )
        if self.rng.random() < 0.6:
            self.click_hit(
                d,
                p,
                self.pick_links(d, 1)[0],
                t + timedelta(seconds=self.rng.uniform(8, 90)),
                referer="-",
                ip=ip,
                ua=ua,
                tag="click_forwarded",
            )

    def one_click(self, d: Delivery, p: Person, t: datetime) -> None:
        if p.family == "gmail":
            ip, ua = self.ip_in(self.rng.choice(GOOGLE_ACTIONS_PREFIXES)), GMAIL_ONE_CLICK_UA
        else:
            ip, ua = self.ip_in(self.rng.choice(YAHOO_PROXY_PREFIXES)), YAHOO_PROXY_UA
        self.add(
            t,
            "unsubscribe_post",
            ip=ip,
            method="POST",
            target=self.signed(f"/u/{d.id}/{p.rid}"),
            status=200,
            size=0,
            ua=ua,
            delivery=d.id,
            recipient=p.rid,
            kind="unsubscribe",
        )

    def deliveries(self) -> None:
        for d in DELIVERIES:
            recipients = self.recipients[d.id]
            window = 900 + 0.4 * len(recipients)  # the sending MTA's pace
            for i, (p, status) in enumerate(recipients):
                if status == "sent":
                    delivered = d.sent_at + timedelta(
                        seconds=window * i / len(recipients) + self.rng.uniform(1, 30)
                    )
                    self.recipient_events(d, p, delivered)

    # --- anomalies and noise -----------------------------------------------------------------------
    def anomalies(self) -> None:
        rng, s = self.rng, self.scale
        nl, promo = (next(d for d in DELIVERIES if d.id == i) for i in ("NL-2026-11", "PROMO-BF-2026"))
        promo_sent = [p for p, st in self.recipients[promo.id] if st == "sent"]
        nl_sent = [p for p, st in self.recipients[nl.id] if st == "sent"]
        # forged: someone enumerating recipient ids with made-up signatures
        t = promo.sent_at + timedelta(hours=5, minutes=12)
        ip = "45.148.10.77"
        for i in range(6 * s):
            fake = "".join(
                rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
                for _ in range(22)
            )
            path = f"/o/{promo.id}/r{i + 1:06d}.gif" if i % 3 else f"/c/{promo.id}/code/r{i + 1:06d}"
            kind, status, size = ("open", 200, PIXEL_BYTES) if i % 3 else ("click", 302, REDIRECT_BYTES)
            self.add(
                t + timedelta(seconds=2 * i),
                "forged",
                ip=ip,
                target=f"{path}?s={fake}",
                status=status,
                size=size,
                ua="python-requests/2.32.3",
                delivery=promo.id,
                recipient=f"r{i + 1:06d}",
                kind=kind,
                sig="invalid",
            )
        # tampered: a real signature on an edited path, or a cut signature
        for i in range(4 * s):
            p, q = rng.sample(nl_sent, 2)
            t = nl.sent_at + timedelta(hours=rng.uniform(3, 60))
            good = sign_path(self.secret, f"/c/{nl.id}/hero/{p.rid}")
            variant = i % 4
            if variant == 0:  # recipient id edited
                target, rid = f"/c/{nl.id}/hero/{q.rid}?s={good}", q.rid
            elif variant == 1:  # link id edited
                target, rid = f"/c/{nl.id}/pick-1/{p.rid}?s={good}", p.rid
            elif variant == 2:  # signature cut short by a mail client's line wrapping
                target, rid = f"/c/{nl.id}/hero/{p.rid}?s={good[:15]}", p.rid
            else:  # the signature of another delivery's URL
                other = sign_path(self.secret, f"/c/{promo.id}/hero/{p.rid}")
                target, rid = f"/c/{nl.id}/hero/{p.rid}?s={other}", p.rid
            self.add(
                t,
                "tampered",
                ip=p.home_ip,
                target=target,
                status=302,
                size=REDIRECT_BYTES,
                ua=p.browser,
                proto="HTTP/2.0",
                delivery=nl.id,
                recipient=rid,
                kind="click",
                sig="invalid",
            )
        # missing: the query string lost (copied from a plain-text part, or stripped by a client)
        for i in range(5 * s):
            p = rng.choice(promo_sent)
            t = promo.sent_at + timedelta(hours=rng.uniform(1, 48))
            if i == 0:
                target, kind, status, size = f"/o/{promo.id}/{p.rid}.gif", "open", 200, PIXEL_BYTES
            else:
                target, kind, status, size = f"/c/{promo.id}/hero/{p.rid}", "click", 302, REDIRECT_BYTES
            self.add(
                t,
                "missing_sig",
                ip=p.home_ip,
                target=target,
                status=status,
                size=size,
                ua=p.browser,
                proto="HTTP/2.0",
                delivery=promo.id,
                recipient=p.rid,
                kind=kind,
                sig="missing",
            )
        # extra query parameters after a valid signature (a tracked link shared on social media)
        for i in range(3 * s):
            p = rng.choice(promo_sent)
            t = promo.sent_at + timedelta(hours=rng.uniform(6, 30))
            fbclid = "IwAR" + "".join(
                rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
                for _ in range(40)
            )
            self.add(
                t,
                "extra_query",
                ip=self.home_ip(),
                target=self.signed(f"/c/{promo.id}/hero/{p.rid}") + f"&fbclid={fbclid}",
                status=302,
                size=REDIRECT_BYTES,
                referer="http://m.facebook.com/",
                ua=rng.choice(MOBILE_BROWSERS),
                proto="HTTP/2.0",
                delivery=promo.id,
                recipient=p.rid,
                kind="click",
            )
        # orphans: late activity on October's newsletter, whose manifest is not loaded
        for i in range(12 * s):
            p = rng.choice(nl_sent)
            t = LOG_START + timedelta(hours=rng.uniform(1, 150))
            if i % 6 == 5:
                path, kind, status, size = (
                    f"/c/{ORPHAN_DELIVERY}/{rng.choice(ORPHAN_LINKS)}/{p.rid}",
                    "click",
                    302,
                    REDIRECT_BYTES,
                )
            else:
                path, kind, status, size = f"/o/{ORPHAN_DELIVERY}/{p.rid}.gif", "open", 200, PIXEL_BYTES
            self.add(
                t,
                "orphan",
                ip=p.home_ip,
                target=self.signed(path),
                status=status,
                size=size,
                ua=p.browser,
                proto="HTTP/2.0",
                delivery=ORPHAN_DELIVERY,
                recipient=p.rid,
                kind=kind,
            )
        # a link in the sent message that the manifest lacks: signed, answered 404
        for _ in range(3 * s):
            p = rng.choice(nl_sent)
            t = nl.sent_at + timedelta(hours=rng.uniform(0.5, 30))
            self.add(
                t,
                "unknown_link",
                ip=p.home_ip,
                target=self.signed(f"/c/{REMOVED_LINK[0]}/{REMOVED_LINK[1]}/{p.rid}"),
                status=404,
                size=ERROR_BYTES[404],
                ua=p.browser,
                proto="HTTP/2.0",
                delivery=nl.id,
                recipient=p.rid,
                kind="click",
            )
        # the redirect upstream was down for four minutes during the Black Friday peak
        for hit in self.hits:
            if (
                hit.kind in ("click", "unsubscribe")
                and OUTAGE[0].timestamp() <= hit.ts < OUTAGE[1].timestamp()
            ):
                hit.status, hit.size = 500, ERROR_BYTES[500]
                hit.tag += "+500"

    def noise(self) -> None:
        rng = self.rng
        start, end = int(LOG_START.timestamp()), int(LOG_END.timestamp())
        monitor_ips = ("216.144.250.150", "69.162.124.235", "63.143.42.246")
        for i, ts in enumerate(range(start + 37, end, 2 * 3600)):
            self.add(
                ts,
                "noise_health",
                ip=monitor_ips[i % 3],
                target="/",
                status=200,
                size=2,
                ua=UPTIME_UA,
                proto="HTTP/1.1",
            )
        for ts in range(start + 5000, end, 86400):
            self.add(
                ts + rng.randint(0, 80000),
                "noise_robots",
                ip=self.home_ip(),
                target="/robots.txt",
                status=200,
                size=26,
                ua=rng.choice(CRAWLER_UAS),
            )
        for ts in range(start + 3000, end, 43200):
            ip = f"{rng.choice((45, 89, 185, 193, 194))}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            ua = rng.choice(NOISE_SCANNER_UAS)
            t = ts + rng.randint(0, 40000)
            for path in rng.sample(SCANNED_PATHS, rng.randint(1, 3)):
                self.add(t, "noise_scanner", ip=ip, target=path, status=404, size=ERROR_BYTES[404], ua=ua)
                t += rng.randint(0, 2)

    def web_visits(self, rng: random.Random) -> None:
        """The shop's page tags after the clicks on web-tracking links (each followed click lands
        with its token: landing page, product, cart, order), anonymous visitors (no token) and a
        few forged tokens. A random stream of its own, so the rest of the data set is unchanged."""
        links = {(d.id, lk.id): lk for d in DELIVERIES for lk in d.links if lk.web}
        clicks = [
            h for h in self.hits
            if h.kind == "click" and h.tag in ("click", "click_stream") and h.status == 302 and h.sig == "valid"
        ]  # fmt: skip
        for h in clicks:
            assert h.delivery is not None and h.recipient is not None
            link = links.get((h.delivery, h.target.split("/")[3]))
            if link is None or rng.random() >= 0.85:
                continue  # not a web-tracking link, or the landing page never loaded
            token = self.token(h.delivery, h.recipient)
            landing = f"{link.url}{'&' if '?' in link.url else '?'}tl={token}"
            t, steps = h.ts + rng.randint(1, 5), ["landing"]
            if rng.random() < 0.55:
                steps.append("product")
                if rng.random() < 0.4:
                    steps.append("cart")
                    if rng.random() < 0.6:
                        steps.append("order-confirmed")
            for step in steps:
                amount = None
                query = f"tl={token}"
                if step == "order-confirmed":
                    amount = f"{rng.randint(1990, 24900) / 100:.2f}"
                    query += f"&amount={amount}&currency=EUR&items={rng.randint(1, 4)}"
                self.page_tag(t, step, query, h.ip, h.ua, landing, h.delivery, h.recipient, "valid", amount)
                t += rng.randint(20, 300)
        start = int(datetime(2026, 11, 27, 7, 0, tzinfo=UTC).timestamp())
        for i in range(150 * self.scale):
            ip = f"{rng.choice(('81.64', '90.12', '176.150', '86.245'))}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            t = start + rng.randint(0, 6 * 86400)
            self.page_tag(t, rng.choice(("landing", "product")), "", ip, DESKTOP_BROWSERS[i % len(DESKTOP_BROWSERS)],
                          "https://shop.example.com/", None, None, "missing", None)  # fmt: skip
        for i in range(3):  # a token copied with a made-up signature: rejected
            fake = f"{len('PROMO-BF-2026')}.PROMO-BF-2026r{i + 1:06d}" + "A" * 22
            self.page_tag(start + 9000 + i, "landing", f"tl={fake}", "45.148.10.77", "curl/8.5.0", "-",
                          "PROMO-BF-2026", f"r{i + 1:06d}", "invalid", None)  # fmt: skip

    def page_tag(
        self,
        ts: int,
        name: str,
        query: str,
        ip: str,
        ua: str,
        referer: str,
        delivery: str | None,
        recipient: str | None,
        sig: str,
        amount: str | None,
    ) -> None:
        self.add(
            ts,
            "page_tag" if delivery is not None and sig == "valid" else f"page_tag_{sig}",
            ip=ip,
            target=f"/w/{name}.gif" + (f"?{query}" if query else ""),
            status=200,
            size=PIXEL_BYTES,
            referer=referer,
            ua=ua,
            proto="HTTP/2.0",
            delivery=delivery,
            recipient=recipient,
            kind="page",
            sig=sig,
            amount=amount,
        )

    def malformed(self) -> None:
        tls = "".join(
            f"\\x{b:02X}" for b in (0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03)
        )
        tls += "".join(f"\\x{self.rng.randrange(256):02X}" for _ in range(24))
        t = datetime(2026, 11, 4, 2, 17, 9, tzinfo=UTC)
        self.add(
            t,
            "malformed_tls",
            raw=f'193.163.125.14 - - [{nginx_time(int(t.timestamp()))}] "{tls}" 400 157 "-" "-"',
        )
        t = datetime(2026, 11, 10, 10, 31, 44, tzinfo=UTC)
        p = self.recipients["TX-WELCOME-2026-11"][7][0]
        line = (
            f'{p.home_ip} - - [{nginx_time(int(t.timestamp()))}] "GET '
            f'{self.signed(f"/o/TX-WELCOME-2026-11/{p.rid}.gif")} HTTP/1.1" 200 43 "-" "{p.browser}"'
        )
        self.add(t, "malformed_truncated", raw=line[: line.index("?s=") + 9])
        t = datetime(2026, 11, 28, 3, 2, 51, tzinfo=UTC)
        self.add(
            t,
            "malformed_ssh",
            raw=f'162.142.125.217 - - [{nginx_time(int(t.timestamp()))}] "SSH-2.0-Go" 400 157 "-" "-"',
        )


def nginx_time(ts: int) -> str:
    local = datetime.fromtimestamp(ts, UTC) + LOCAL_OFFSET
    return f"{local.day:02d}/{MONTHS[local.month - 1]}/{local.year}:{local:%H:%M:%S} +0100"


def log_line(h: Hit) -> str:
    if h.raw is not None:
        return h.raw
    return (
        f'{h.ip} - - [{nginx_time(h.ts)}] "{h.method} {h.target} {h.proto}" {h.status} {h.size} '
        f'"{h.referer}" "{h.ua}"'
    )


# --- files ---------------------------------------------------------------------------------------
def manifest_json(d: Delivery) -> str:
    doc = {
        "delivery": d.id,
        "label": d.label,
        "sent_at": d.sent_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "subject": d.subject,
        "content": f"{d.slug}.html",
        "links": [
            {"id": lk.id, "url": lk.url, "label": lk.label, "category": lk.category}
            | ({"web_tracking": True} if lk.web else {})
            for lk in d.links
        ],
        "recipients": f"{d.slug}.recipients.csv",
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def recipients_csv(rows: list[tuple[Person, str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["recipient_id", "email", "status", "first_name", "segment"])
    for p, status in rows:
        writer.writerow([p.rid, p.email, status, p.first_name, p.segment])
    return buf.getvalue()


INTROS = {
    "newsletter": (
        "Hello {{first_name}},",
        (
            "Cold mornings are back. Here is what our buyers picked for November, "
            "and a few ideas to stay warm without looking like a duvet."
        ),
    ),
    "transactional": (
        "Welcome, {{first_name}}!",
        (
            "Thanks for creating your Example account. Confirm your email "
            "address so we can keep your account safe, then enjoy 10% off your first order."
        ),
    ),
    "promo": (
        "Black Friday is here, {{first_name}}",
        (
            "Up to 50% off across the shop, today only. Add code BF30 at "
            "checkout for an extra 30% off already reduced items."
        ),
    ),
}


def content_html(d: Delivery, secret: bytes) -> str:
    def tracked(path: str) -> str:
        return html.escape(f"https://{HOST}{path}?s={sign_path(secret, path)}")

    r = PLACEHOLDER_RECIPIENT
    heading, intro = INTROS[d.kind]
    blocks = []
    for lk in d.links:
        href = html.escape(lk.url)
        if lk.category == "trap":
            blocks.append(
                f'<a href="{href}" style="display:none" aria-hidden="true" tabindex="-1">{html.escape(lk.label)}</a>'
            )
        elif lk is d.links[0]:
            blocks.append(
                f'<a href="{href}" class="button" style="background:#111;color:#fff;padding:14px 28px;'
                f'text-decoration:none;display:inline-block">{html.escape(lk.label)}</a>'
            )
        else:
            blocks.append(f'<p><a href="{href}" style="color:#0b57d0">{html.escape(lk.label)}</a></p>')
    body = "\n        ".join(blocks)
    unsubscribe = (
        f'<a href="{tracked(f"/u/{d.id}/{r}")}" style="color:#666">Unsubscribe</a>'
        if d.kind != "transactional"
        else f'<a href="{tracked(f"/u/{d.id}/{r}")}" style="color:#666">Stop welcome emails</a>'
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{html.escape(d.subject)}</title>
</head>
<body style="margin:0;background:#f4f4f4;font-family:Helvetica,Arial,sans-serif">
  <table role="presentation" width="100%" cellpadding="0" cellspacing="0">
    <tr><td align="center" style="padding:8px;font-size:12px;color:#666">
      <a href="{tracked(f"/m/{d.id}/{r}")}" style="color:#666">View this email in your browser</a>
    </td></tr>
    <tr><td align="center">
      <table role="presentation" width="600" style="background:#fff;padding:32px">
        <tr><td>
        <h1 style="font-size:26px">{html.escape(heading)}</h1>
        <p style="font-size:16px;line-height:1.5">{html.escape(intro)}</p>
        {body}
        </td></tr>
      </table>
    </td></tr>
    <tr><td align="center" style="padding:16px;font-size:12px;color:#666">
      Example SAS, 12 rue de l'Exemple, 75002 Paris. You receive this email because you have an Example account.<br>
      {unsubscribe}
    </td></tr>
  </table>
  <img src="{tracked(f"/o/{d.id}/{r}.gif")}" width="1" height="1" alt="" style="display:block;border:0">
</body>
</html>
"""


TOML = """\
# Configuration for the sample data set in this folder: run tracklog from here (see README.md).
#
# DEMO SECRET. It is published with these sample logs and signs only their tracked URLs.
# NEVER use it in production: make your own (python -c "import secrets; print(secrets.token_urlsafe(32))"),
# keep it out of version control, and give it to tracklog with secret_file or TRACKLOG_SECRET.
secret = "{secret}"
"""


def write_outputs(gen: Generator, out: Path, secret: str) -> dict[str, object]:
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    for d in DELIVERIES:
        (out / "manifests" / f"{d.id}.json").write_text(manifest_json(d), encoding="utf-8")
        (out / "manifests" / f"{d.slug}.recipients.csv").write_text(
            recipients_csv(gen.recipients[d.id]), encoding="utf-8"
        )
        (out / "manifests" / f"{d.slug}.html").write_text(content_html(d, secret.encode()), encoding="utf-8")
    (out / "tracklog.toml").write_text(TOML.format(secret=secret), encoding="utf-8")

    hits = sorted(gen.hits, key=lambda h: (h.ts, h.seq))
    bounds = [int(b.timestamp()) for b in ROTATIONS]
    files: dict[str, list[Hit]] = {"access.log.2.gz": [], "access.log.1": [], "access.log": []}
    for h in hits:
        name = "access.log.2.gz" if h.ts < bounds[0] else "access.log.1" if h.ts < bounds[1] else "access.log"
        files[name].append(h)
    for name, rows in files.items():
        data = "".join(log_line(h) + "\n" for h in rows).encode("utf-8")
        if name.endswith(".gz"):
            with (
                (out / name).open("wb") as raw,
                gzip.GzipFile("access.log.2", "wb", 9, raw, mtime=GZIP_MTIME) as gz,
            ):
                gz.write(data)
        else:
            (out / name).write_bytes(data)
    expected = ground_truth(gen, files)
    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    return expected


def is_machine(h: Hit) -> bool:
    """Whether a machine made the request: a mail gateway's scan, or Apple's Mail Privacy
    Protection proxy (its prefetch, and every open it fetches for an Apple Mail reader)."""
    return h.tag in ("scanner", "open_mpp_prefetch") or (h.kind == "open" and h.ua == APPLE_PROXY_UA)


def human_truth(mine: list[Hit]) -> dict[str, int]:
    """The people's figures of one delivery and the machines' beside them, from the generator's
    own records: accepted = valid signature and no 4xx/5xx; a click on the trap is a machine's."""
    accepted = [h for h in mine if h.sig == "valid" and h.status < 400]
    people = [h for h in accepted if not is_machine(h)]
    clicks = [h for h in people if h.kind == "click"]
    return {
        "opens_total": sum(1 for h in people if h.kind == "open"),
        "clicks_total": len(clicks),
        "recipients_opened": len(
            {h.recipient for h in people if h.kind in ("open", "click", "mirror")}
            | {h.recipient for h in people if h.kind == "unsubscribe" and h.method == "GET"}
        ),
        "recipients_clicked": len({h.recipient for h in clicks}),
        "machine_opens": sum(1 for h in accepted if is_machine(h) and h.kind == "open"),
        "bot_clicks": sum(1 for h in accepted if is_machine(h) and h.kind == "click"),
    }


def ground_truth(gen: Generator, files: dict[str, list[Hit]]) -> dict[str, object]:
    """What the logs contain, counted from the generator's own records (not from a parser)."""
    tracked = [h for rows in files.values() for h in rows if h.kind is not None]
    per_delivery: dict[str, dict[str, object]] = {}
    for d_id in [d.id for d in DELIVERIES] + [ORPHAN_DELIVERY]:
        mine = [h for h in tracked if h.delivery == d_id]
        rows = gen.recipients.get(d_id, [])
        per_delivery[d_id] = {
            "recipients": len(rows),
            "failed": sum(1 for _, st in rows if st == "failed"),
            "hits": dict(sorted(Counter(h.kind for h in mine).items())),
            "hits_by_sig": dict(sorted(Counter(h.sig for h in mine).items())),
            "trap_clicks": sum(1 for h in mine if h.target.startswith(f"/c/{d_id}/trap/")),
            "recipients_with_valid_open": len(
                {h.recipient for h in mine if h.kind == "open" and h.sig == "valid"}
            ),
            "recipients_with_valid_click": len(
                {h.recipient for h in mine if h.kind == "click" and h.sig == "valid" and h.status != 404}
            ),
            "people": human_truth(mine),
        }
    pages = [h for h in tracked if h.kind == "page" and h.sig == "valid"]
    web = {
        d_id: {
            "page_views": sum(1 for h in pages if h.delivery == d_id),
            "visitors": len({h.recipient for h in pages if h.delivery == d_id}),
            "transactions": sum(1 for h in pages if h.delivery == d_id and h.amount is not None),
            "converted": len({h.recipient for h in pages if h.delivery == d_id and h.amount is not None}),
            "revenue_eur": str(
                sum((Decimal(h.amount) for h in pages if h.delivery == d_id and h.amount), Decimal(0))
            ),
        }
        for d_id in sorted({h.delivery for h in pages if h.delivery is not None})
    }
    return {
        "web": web,
        "anonymous_page_views": sum(1 for h in tracked if h.kind == "page" and h.sig == "missing"),
        "log_lines": {name: len(rows) for name, rows in files.items()},
        "lines_by_file_and_tag": {
            name: dict(sorted(Counter(h.tag for h in rows).items())) for name, rows in files.items()
        },
        "tracking_hits": len(tracked),
        "tracking_hits_by_kind": dict(sorted(Counter(h.kind or "" for h in tracked).items())),
        "tracking_hits_by_sig": dict(sorted(Counter(h.sig for h in tracked).items())),
        "tracking_hits_by_status": {str(k): v for k, v in sorted(Counter(h.status for h in tracked).items())},
        "lines_by_tag": dict(sorted(Counter(h.tag for rows in files.values() for h in rows).items())),
        "deliveries": per_delivery,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output folder (default: this script's)",
    )
    parser.add_argument("--seed", type=int, default=20261103, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--scale", type=int, default=1, help="multiply recipients and events by N (default: 1)"
    )
    parser.add_argument(
        "--secret", default=DEMO_SECRET, help="signing secret (default: the published demo secret)"
    )
    args = parser.parse_args()
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    gen = Generator(random.Random(args.seed), args.secret.encode(), args.scale)
    base, new = gen.population()
    gen.assign(base, new)
    gen.deliveries()
    gen.anomalies()
    gen.noise()
    gen.malformed()
    gen.web_visits(random.Random(args.seed + 1))
    expected = write_outputs(gen, args.out, args.secret)
    lines = expected["log_lines"]
    assert isinstance(lines, dict)
    print(
        f"wrote {args.out}: " + ", ".join(f"{name} {n} lines" for name, n in lines.items()), file=sys.stderr
    )


if __name__ == "__main__":
    main()
