"""Web tracking after the click: landing tokens, page tags (with and without amounts, forged,
malformed or missing tokens, the opt-out cookie), the funnel and web indicators on a hand-made
data set (every expected figure worked out by hand in the comments), IP truncation, and
`tracklog forget` leaving no trace of the recipient anywhere in the database file nor in the
exports written afterwards."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner, Result
from conftest import stored_and_defined
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracklog import derived, routes
from tracklog.cli import cli
from tracklog.ingest.formats import COMBINED
from tracklog.tracked_urls import landing_token, landing_url

SECRET = "web-secret"
DELIVERY = "WEB-1"
# a log format with the opt-out cookie, as a site logging it would have (extra variable)
FORMAT = COMBINED + ' "$cookie_tl_optout"'
ID_ALPHABET = "ABCXYZabcxyz0123456789._~-"
SHOP = "https://shop.example.com/landing?utm=mail#top"
FORGET_ID = "zq-forget-me-7"  # a recipient id, email and IP found nowhere else
FORGET_EMAIL = "zq.forget.me@example.net"
FORGET_IP = "192.0.2.201"


def token_by_hand(delivery: str, recipient: str, secret: str = SECRET) -> str:
    """The landing token from its definition (README), with the hmac module only."""
    mac = hmac.new(secret.encode(), f"/w/{delivery}/{recipient}".encode(), hashlib.sha256).digest()[:16]
    sig = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    return f"{len(delivery)}.{delivery}{recipient}{sig}"


def sig_by_hand(path: str) -> str:
    mac = hmac.new(SECRET.encode(), path.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def run(db: Path, *args: str, secret: bool = True) -> Result:
    env = {"TRACKLOG_CONFIG": "", "TRACKLOG_DB": "", "NO_COLOR": "1", "COLUMNS": "200"}
    env["TRACKLOG_SECRET"] = SECRET if secret else ""
    if not secret:
        env["TRACKLOG_SECRET"] = None  # type: ignore[assignment]
    return CliRunner().invoke(cli, ["--db", str(db), *args], env=env, catch_exceptions=False)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.stderr
    return result.stdout


def manifest(folder: Path, label: str = "Web one") -> Path:
    recipients = [{"recipient_id": f"r{i}", "email": f"r{i}@example.org"} for i in range(1, 6)]
    recipients.append({"recipient_id": "r6", "email": "r6@example.org", "status": "failed"})
    recipients.append({"recipient_id": FORGET_ID, "email": FORGET_EMAIL})
    path = folder / "web-1.json"
    path.write_text(
        json.dumps(
            {
                "delivery": DELIVERY,
                "label": label,
                "sent_at": "2026-12-01T08:00:00Z",
                "links": [
                    {
                        "id": "shop",
                        "url": "https://shop.example.com/landing?utm=mail#top",
                        "web_tracking": True,
                    },
                    {"id": "blog", "url": "https://blog.example.com/post"},
                ],
                "recipients": recipients,
            }
        )
    )
    return path


# a person's browser (a bare "Mozilla/5.0" is Apple's Mail Privacy Protection to the classifier)
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15"


def line(ip: str, hhmm: str, target: str, ua: str = BROWSER, cookie: str = "-", referer: str = "-") -> str:
    return (
        f'{ip} - - [01/Dec/2026:{hhmm}:00 +0000] "GET {target} HTTP/1.1" 200 43 "{referer}" "{ua}" "{cookie}"'
    )


def signed(path: str) -> str:
    return f"{path}?s={sig_by_hand(path)}"


def click(link: str, recipient: str) -> str:
    path = f"/c/{DELIVERY}/{link}/{recipient}"
    web = f"&tl={token_by_hand(DELIVERY, recipient)}" if link == "shop" else ""
    return signed(path) + web


def tag(name: str, recipient: str | None, extra: str = "") -> str:
    query = f"tl={token_by_hand(DELIVERY, recipient)}" if recipient else ""
    query = "&".join(q for q in (query, extra) if q)
    return f"/w/{name}.gif" + (f"?{query}" if query else "")


def log_lines() -> list[str]:
    forged = token_by_hand(DELIVERY, "r2", secret="not-the-secret")
    return [
        # r1: open, click on the web-tracking link, three pages (the last a transaction), and a
        # second visit two hours later
        line("203.0.113.1", "09:00", signed(f"/o/{DELIVERY}/r1.gif")),
        line("203.0.113.1", "09:01", click("shop", "r1")),
        line("203.0.113.1", "09:02", tag("home", "r1")),
        line("203.0.113.1", "09:05", tag("cart", "r1")),
        line("203.0.113.1", "09:06", tag("order-confirmed", "r1", "amount=12.50&currency=EUR&items=2")),
        line("203.0.113.1", "11:00", tag("home", "r1")),
        # r2: open and a click on the link without web tracking
        line("203.0.113.2", "09:10", signed(f"/o/{DELIVERY}/r2.gif")),
        line("203.0.113.2", "09:11", click("blog", "r2")),
        # r3: open, click, one page
        line("203.0.113.3", "09:20", signed(f"/o/{DELIVERY}/r3.gif")),
        line("203.0.113.3", "09:21", click("shop", "r3")),
        line("203.0.113.3", "09:22", tag("home", "r3")),
        # r4: open only; then a page with its token but the opt-out cookie: never stored
        line("203.0.113.4", "10:00", signed(f"/o/{DELIVERY}/r4.gif")),
        line("203.0.113.4", "10:05", tag("home", "r4"), cookie="1"),
        # r5: a transaction in USD (lower case) with no open or click logged
        line("203.0.113.5", "10:30", tag("order-confirmed", "r5", "amount=7.5&currency=usd&items=1")),
        # anonymous: three pages of one browser within 30 minutes, the last a transaction
        line("198.51.100.7", "09:30", tag("home", None)),
        line("198.51.100.7", "09:31", tag("cart", None)),
        line("198.51.100.7", "09:40", tag("order-confirmed", None, "amount=3&currency=EUR")),
        # a forged token (r2's, signed with another key) and a malformed one: rejected
        line("203.0.113.9", "09:50", tag("home", None, f"tl={forged}")),
        line("203.0.113.9", "09:51", tag("home", None, "tl=garbage")),
        # the recipient forgotten later: open, click, page, transaction
        line(FORGET_IP, "09:55", signed(f"/o/{DELIVERY}/{FORGET_ID}.gif"), ua=f"Agent {FORGET_ID}"),
        line(FORGET_IP, "09:56", click("shop", FORGET_ID)),
        line(FORGET_IP, "09:57", tag("order-confirmed", FORGET_ID, "amount=99.99&currency=EUR&items=9")),
        # anonymous page views whose referer is a landing URL with a token: the forgotten
        # recipient's, and that of an id that merely starts like r1's
        line(
            "198.51.100.8",
            "09:58",
            tag("home", None),
            referer=landing_url(SHOP, token_by_hand(DELIVERY, FORGET_ID)),
        ),
        line(
            "198.51.100.9",
            "09:59",
            tag("home", None),
            referer=landing_url(SHOP, token_by_hand(DELIVERY, "r1x")),
        ),
        # a line that does not parse, naming the forgotten recipient
        f'{FORGET_IP} - - [garbage] "GET /o/{DELIVERY}/{FORGET_ID}.gif" x',
    ]


@pytest.fixture
def web_db(tmp_path: Path) -> Path:
    db = tmp_path / "web.duckdb"
    log = tmp_path / "access.log"
    log.write_text("".join(f"{x}\n" for x in log_lines()))
    ok(run(db, "ingest", "--manifest", str(manifest(tmp_path)), "--log-format", FORMAT, str(log)))
    return db


def q(db: Path, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


# -- tokens ----------------------------------------------------------------------------------


def test_token_signing_and_parsing() -> None:
    token = landing_token(SECRET.encode(), DELIVERY, "r1")
    assert token == token_by_hand(DELIVERY, "r1")
    assert routes.split_token(token) == (DELIVERY, "r1", token[-22:])
    # ids with dots, tildes and digits: the length prefix keeps them apart
    tricky = landing_token(SECRET.encode(), "1.2", "3.4~5")
    assert tricky.startswith("3.1.23.4~5") and routes.split_token(tricky) == ("1.2", "3.4~5", tricky[-22:])
    # not a token: no length, length 0, too short for a recipient and a signature, bad chars
    for bad in (
        "",
        "garbage",
        "0.x" + "A" * 30,
        "5.WEB-1" + "A" * 22,
        "2.NLr1%41" + "A" * 22,
        "999." + "x" * 40,
    ):
        assert routes.split_token(bad) is None
    # a token signs a text no tracked URL signs: never the signature of a route's path
    assert token[-22:] != sig_by_hand(f"/m/{DELIVERY}/r1") and token[-22:] != sig_by_hand(f"/u/{DELIVERY}/r1")


def test_landing_url_keeps_query_and_fragment() -> None:
    assert landing_url("https://s.example/a?x=1#top", "T") == "https://s.example/a?x=1&tl=T#top"
    assert landing_url("https://s.example/a", "T") == "https://s.example/a?tl=T"
    assert landing_url("https://s.example/a?", "T") == "https://s.example/a?tl=T"
    assert landing_url("https://s.example/#x?y", "T") == "https://s.example/?tl=T#x?y"


def test_link_prints_tokens(web_db: Path) -> None:
    out = ok(
        run(
            web_db,
            "link",
            "--delivery",
            DELIVERY,
            "--recipient",
            "r1",
            "--type",
            "click",
            "--format",
            "csv",
            "--base-url",
            "https://t.example.com",
        )
    )
    token = token_by_hand(DELIVERY, "r1")
    assert out.splitlines() == [
        "recipient_id,type,link_id,url,landing_url",
        (
            f"r1,click,shop,https://t.example.com{signed(f'/c/{DELIVERY}/shop/r1')}&tl={token},"
            f"https://shop.example.com/landing?utm=mail&tl={token}#top"
        ),
        f"r1,click,blog,https://t.example.com{signed(f'/c/{DELIVERY}/blog/r1')},",
    ]


def test_manifest_web_tracking_must_be_boolean_on_a_web_url(tmp_path: Path) -> None:
    path = manifest(tmp_path)
    doc = json.loads(path.read_text())
    doc["links"][0]["web_tracking"] = "yes"
    path.write_text(json.dumps(doc))
    result = run(tmp_path / "x.duckdb", "ingest", "--manifest", str(path))
    assert result.exit_code != 0 and '"web_tracking" must be true or false' in result.stderr
    doc["links"][0] = {"id": "mail", "url": "mailto:a@example.org", "web_tracking": True}
    path.write_text(json.dumps(doc))
    result = run(tmp_path / "x.duckdb", "ingest", "--manifest", str(path))
    assert result.exit_code != 0 and "must be an absolute http or https URL" in result.stderr


# -- page tags -------------------------------------------------------------------------------


def test_tag_hits_stored_and_attributed(web_db: Path) -> None:
    rows = q(
        web_db,
        "SELECT recipient_id, link_id, sig_status, resolution FROM hits WHERE kind = 'page' ORDER BY ts",
    )
    assert rows == [
        ("r1", "home", "valid", "event"),
        ("r1", "cart", "valid", "event"),
        ("r1", "order-confirmed", "valid", "event"),
        ("r3", "home", "valid", "event"),
        (None, "home", "missing", "anonymous"),
        (None, "cart", "missing", "anonymous"),
        (None, "order-confirmed", "missing", "anonymous"),
        ("r2", "home", "invalid", "rejected"),  # forged: rejected like a forged signature
        (None, "home", "invalid", "rejected"),  # malformed
        (FORGET_ID, "order-confirmed", "valid", "event"),
        (None, "home", "missing", "anonymous"),  # referer: the forgotten recipient's landing URL
        (None, "home", "missing", "anonymous"),
        ("r5", "order-confirmed", "valid", "event"),
        ("r1", "home", "valid", "event"),
    ]
    # the opted-out page view of r4 was never stored
    assert q(web_db, "SELECT count(*) FROM hits WHERE recipient_id = 'r4'") == [(1,)]


def test_funnel_figures_by_hand(web_db: Path) -> None:
    out = json.loads(ok(run(web_db, "report", "funnel", "--delivery", DELIVERY, "--format", "json")))
    # delivered: r1..r5 and the forgotten-to-be recipient (r6 failed) = 6; deepest step per reader:
    # r1 converted, r2 clicked, r3 visited, r4 opened, r5 converted (a page with its token
    # implies the click), zq converted
    assert out["funnel"] == [
        {"step": "delivered", "readers": 6, "rate": None, "of_delivered": 100.0},
        {"step": "opened", "readers": 6, "rate": 100.0, "of_delivered": 100.0},
        {"step": "clicked", "readers": 5, "rate": 83.3, "of_delivered": 83.3},
        {"step": "visited", "readers": 4, "rate": 80.0, "of_delivered": 66.7},
        {"step": "converted", "readers": 3, "rate": 75.0, "of_delivered": 50.0},
    ]
    # page views: r1 4, r3 1, r5 1, zq 1 = 7; visits: r1 2 (11:00 is > 30 min after 09:06), r3,
    # r5, zq 1 each = 5; visitors 4; 7 / 4 = 1.75 -> 1.8; transactions r1, r5, zq; items 2+1+9
    assert out["web"] == [
        {
            "page_views": 7,
            "visits": 5,
            "visitors": 4,
            "pages_per_visitor": 1.8,
            "transactions": 3,
            "items": 12,
        }
    ]
    # EUR: 12.50 + 99.99 = 112.49, / 6 delivered = 18.748333 -> 18.7483; USD: 7.5 / 6 = 1.25
    assert out["revenue"] == [
        {
            "currency": "EUR",
            "transactions": 2,
            "items": 11,
            "revenue": "112.4900",
            "revenue_per_delivered": "18.7483",
        },
        {
            "currency": "USD",
            "transactions": 1,
            "items": 1,
            "revenue": "7.5000",
            "revenue_per_delivered": "1.2500",
        },
    ]
    table = ok(run(web_db, "report", "funnel", "--delivery", DELIVERY))
    # anonymous: 5 page views; visits: one browser at 09:30, 09:31, 09:40, and two other
    # browsers (09:58, 09:59) = 3; one transaction; apart
    assert "5 anonymous page views (no token), 3 visits, 1 transactions" in table
    assert "2 rejected" not in table and "1 rejected" in table  # the forged token of WEB-1


def test_the_footer_of_every_delivery_counts_the_hits_that_name_none(web_db: Path) -> None:
    """All time, the footer reads the stored totals of the deliveries and adds the hits that name
    no delivery; a window counts with the definitions: both say the same. By hand: the forged
    token names WEB-1, the malformed one names no delivery: 2 rejected; nothing failed."""
    every = ok(run(web_db, "report", "urls"))
    windowed = ok(run(web_db, "report", "urls", "--since", "2000-01-01"))
    footer = [ln for ln in every.splitlines() if ln.startswith("Not counted:")]
    assert footer == [ln for ln in windowed.splitlines() if ln.startswith("Not counted:")]
    assert footer[0].startswith("Not counted: 2 rejected (bad signature), 0 failed (4xx/5xx),")


def test_funnel_window(web_db: Path) -> None:
    out = json.loads(
        ok(
            run(
                web_db,
                "report",
                "funnel",
                "--delivery",
                DELIVERY,
                "--until",
                "2026-12-01T09:15:00",
                "--format",
                "json",
            )
        )
    )
    # before 09:15: r1 converted (09:06), r2 clicked (09:11)
    assert [r["readers"] for r in out["funnel"]] == [6, 2, 2, 1, 1]
    assert out["revenue"] == [
        {
            "currency": "EUR",
            "transactions": 1,
            "items": 2,
            "revenue": "12.5000",
            "revenue_per_delivered": "2.0833",
        }
    ]


def test_recipient_tab_shows_pages_and_transactions(web_db: Path) -> None:
    rows = json.loads(ok(run(web_db, "recipient", "r1", "--format", "json")))
    assert [(r["type"], r["link_id"], r["amount"], r["currency"]) for r in rows] == [
        ("page", "home", None, None),
        ("transaction", "order-confirmed", "12.5000", "EUR"),
        ("page", "cart", None, None),
        ("page", "home", None, None),
        ("click", "shop", None, None),
        ("open", None, None, None),
    ]


def test_opt_out_cookie_header_form(tmp_path: Path) -> None:
    """A log format with the whole Cookie header: the opt-out is read from it too."""
    db = tmp_path / "c.duckdb"
    log = tmp_path / "access.log"
    log.write_text(
        "".join(
            f"{line('203.0.113.4', '10:05', tag('home', 'r4'), cookie=c)}\n"
            for c in ("a=1; tl_optout=1", "tl_optout=1", "tl_optout=0", "x_tl_optout=1")
        )
    )
    ok(
        run(
            db,
            "ingest",
            "--manifest",
            str(manifest(tmp_path)),
            "--log-format",
            COMBINED + ' "$http_cookie"',
            str(log),
        )
    )
    assert q(db, "SELECT count(*) FROM hits WHERE kind = 'page'") == [(2,)]


# -- privacy ---------------------------------------------------------------------------------


def test_truncate_ips(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    log = tmp_path / "access.log"
    ips = ["203.0.113.77", "2001:db8:85a3:1234::1", "2001:0db8::1", "fe80::1:2:3:4"]
    log.write_text("".join(f"{line(ip, '09:00', signed(f'/o/{DELIVERY}/r1.gif'))}\n" for ip in ips))
    ok(
        run(
            db,
            "ingest",
            "--manifest",
            str(manifest(tmp_path)),
            "--log-format",
            FORMAT,
            "--truncate-ips",
            str(log),
        )
    )
    stored = [r[0] for r in q(db, "SELECT ip FROM hits ORDER BY line_no")]
    expected = [
        ipaddress.ip_network(f"{ip}/{24 if '.' in ip else 48}", strict=False).network_address for ip in ips
    ]
    assert [ipaddress.ip_address(str(s)) for s in stored] == expected
    # without the flag (nor the config key) the addresses are kept whole
    other = tmp_path / "whole.duckdb"
    ok(run(other, "ingest", "--manifest", str(manifest(tmp_path)), "--log-format", FORMAT, str(log)))
    assert [r[0] for r in q(other, "SELECT ip FROM hits ORDER BY line_no")] == ips
    # the config key does what the flag does
    config = tmp_path / "tracklog.toml"
    config.write_text("truncate_ips = true\n")
    by_config = tmp_path / "config.duckdb"
    ok(
        run(
            by_config,
            "--config",
            str(config),
            "ingest",
            "--manifest",
            str(manifest(tmp_path)),
            "--log-format",
            FORMAT,
            str(log),
        )
    )
    assert [r[0] for r in q(by_config, "SELECT ip FROM hits ORDER BY line_no")] == stored


def text_cells(db: Path) -> str:
    """Every text and blob cell of every table and view of the database, as one string."""
    cells: list[str] = []
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
        for (table,) in tables:
            cols = con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database()"
                " AND table_name = ?",
                [table],
            ).fetchall()
            for col, kind in cols:
                if kind in ("VARCHAR", "BLOB") or kind.endswith("[]"):
                    cells += [str(v) for (v,) in con.execute(f'SELECT "{col}" FROM "{table}"').fetchall()]
    return "\n".join(cells)


def test_forget_leaves_no_trace(web_db: Path, tmp_path: Path) -> None:
    before = text_cells(web_db)
    assert FORGET_ID in before and FORGET_EMAIL in before and FORGET_IP in before
    assert q(web_db, "SELECT count(*) FROM hits WHERE ip = ?", [FORGET_IP]) == [(3,)]
    result = run(web_db, "forget", FORGET_ID)
    assert result.exit_code == 0, result.stderr
    assert "1 quarantined line" in result.stderr
    # the anonymous page view that came from its landing URL went too; r1x's stayed
    assert q(web_db, "SELECT ip FROM hits WHERE resolution = 'anonymous' AND referer <> '-' ORDER BY ts") == [
        ("198.51.100.9",)
    ]
    after = text_cells(web_db)
    for trace in (FORGET_ID, FORGET_EMAIL, FORGET_IP):
        assert trace not in after
    # the tombstone holds the keyed hash, never the id
    stones = q(web_db, "SELECT delivery_id, recipient_hash FROM forgotten")
    assert stones == [(None, sig_by_hand(f"forget:{FORGET_ID}"))]
    # the raw file: after a checkpoint nothing of the recipient is left in its bytes
    raw = web_db.read_bytes()
    for trace in (FORGET_ID, FORGET_EMAIL, FORGET_IP):
        assert trace.encode() not in raw
    # the figures are those without it (derived tables recomputed): delivered 5 ...
    out = json.loads(ok(run(web_db, "report", "funnel", "--delivery", DELIVERY, "--format", "json")))
    assert [r["readers"] for r in out["funnel"]] == [5, 5, 4, 3, 2]
    assert out["revenue"][0]["revenue"] == "12.5000"
    indicators = json.loads(ok(run(web_db, "report", "delivery", DELIVERY, "--format", "json")))
    # opens: r1..r4 (4, the forgotten one's gone); clicks: r1, r2, r3
    assert (indicators["opens_unique"], indicators["clicks_unique"], indicators["sent"]) == (4, 3, 6)
    with derived.open_reader(web_db, wait=10) as con:  # every stored figure is its definition
        for stored, defined in stored_and_defined(con):
            assert stored == defined
    assert indicators == json.loads(
        ok(run(web_db, "report", "delivery", DELIVERY, "--since", "2026-01-01", "--format", "json"))
    )
    # exports written afterwards hold none of it
    ok(run(web_db, "export", "--out", str(tmp_path / "exp"), "--date", "2026-12-01"))
    exported = "".join(p.read_text() for p in (tmp_path / "exp").rglob("*.csv"))
    assert "r1" in exported and FORGET_ID not in exported and FORGET_EMAIL not in exported
    assert FORGET_IP not in exported


def test_forget_tombstone_keeps_it_out(web_db: Path, tmp_path: Path) -> None:
    ok(run(web_db, "forget", FORGET_ID, "--delivery", DELIVERY))
    # the manifest changed (so it is stored again) and a new log with the recipient's hits
    log = tmp_path / "again.log"
    log.write_text(
        f"{line(FORGET_IP, '12:00', signed(f'/o/{DELIVERY}/{FORGET_ID}.gif'))}\n"
        f"{line('203.0.113.2', '12:01', signed(f'/o/{DELIVERY}/r2.gif'))}\n"
    )
    ok(
        run(
            web_db,
            "ingest",
            "--manifest",
            str(manifest(tmp_path, label="Web one again")),
            "--log-format",
            FORMAT,
            str(log),
        )
    )
    assert q(web_db, "SELECT count(*) FROM recipients WHERE recipient_id = ?", [FORGET_ID]) == [(0,)]
    assert q(web_db, "SELECT count(*) FROM hits WHERE recipient_id = ?", [FORGET_ID]) == [(0,)]
    assert q(web_db, "SELECT count(*) FROM hits WHERE recipient_id = 'r2' AND ts >= '2026-12-01 12:00'") == [
        (1,)
    ]
    assert FORGET_ID not in text_cells(web_db)


def test_forget_unknown_recipient(web_db: Path) -> None:
    result = run(web_db, "forget", "nobody")
    assert result.exit_code == 4 and "recipient 'nobody' is not in the database" in result.stderr
    result = run(web_db, "forget", "r1", "--delivery", "NOPE")
    assert result.exit_code == 4


def test_decimal_amounts_are_exact(web_db: Path) -> None:
    with duckdb.connect(str(web_db), read_only=True) as con:
        total = con.execute("SELECT sum(amount) FROM page_events WHERE NOT anonymous").fetchone()
    assert total == (Decimal("119.9900"),)  # 12.50 + 7.5 + 99.99, no float on the way


TOKENISH = st.one_of(
    st.builds(
        lambda d, r, sig: f"{len(d)}.{d}{r}{sig}",
        st.text(alphabet=ID_ALPHABET, min_size=1, max_size=5),
        st.text(alphabet=ID_ALPHABET, min_size=1, max_size=5),
        st.text(alphabet=ID_ALPHABET, min_size=20, max_size=24),
    ),
    st.text(alphabet=ID_ALPHABET + "%&=?/ ", max_size=40),
)


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(tag_name=st.text(alphabet=ID_ALPHABET, min_size=0, max_size=6), tl=TOKENISH, before=st.booleans())
def test_page_routes_agree_in_python_and_sql(tag_name: str, tl: str, before: bool) -> None:
    """routes.parse_path (with the query) and routed_sql read the same page tag the same way."""
    query = f"x=1&tl={tl}" if before else f"tl={tl}&amount=1"
    target = f"/w/{tag_name}.gif?{query}"
    with duckdb.connect() as con:
        con.execute("CREATE TABLE lines (reason VARCHAR, method VARCHAR, target VARCHAR, extra VARCHAR)")
        con.execute("INSERT INTO lines VALUES (NULL, 'GET', ?, NULL)", [target])
        row = con.execute(
            f"SELECT kind, delivery_id, link_id, recipient_id FROM ({routes.routed_sql('lines')})"
        ).fetchone()
    hit = routes.parse_path(target.partition("?")[0], "GET", query)
    assert row == ((None,) * 4 if hit is None else (hit.kind, hit.delivery_id, hit.link_id, hit.recipient_id))
    if hit is not None and hit.recipient_id is not None:
        assert routes.split_token(tl) == (hit.delivery_id, hit.recipient_id, tl[-22:])


def test_forget_touches_no_one_else(web_db: Path) -> None:
    per_recipient = "SELECT coalesce(recipient_id, ''), count(*) FROM hits GROUP BY ALL ORDER BY ALL"
    before = dict(q(web_db, per_recipient))
    ok(run(web_db, "forget", "r1"))
    after = dict(q(web_db, per_recipient))
    # r1's 6 hits (open, click, 4 pages) go; the anonymous view with r1x's token in its referer stays
    assert before.pop("r1") == 6 and "r1" not in after
    assert after == before
    assert q(web_db, "SELECT count(*) FROM recipients WHERE recipient_id LIKE 'r%'") == [(5,)]
