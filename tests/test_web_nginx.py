"""Web tracking through a REAL nginx running the generated configuration (the fixture and
helpers of test_nginx.py): the landing token carried from the click to the site, the page tags,
the opt-out and opt-in cookie (an opted-out browser gets no token and its page tags are not
logged), then the log ingested and the funnel reported. Expected figures by hand, in comments."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from test_nginx import (
    GIF_43,
    NO_CACHE,
    SECRET,
    Nginx,
    browser,
    fetch,
    free_port,
    main_conf,
    start_nginx,  # noqa: F401  (the fixture)
    stop,
    tracklog,
    url,
    write_manifest,
)


def token(delivery: str, recipient: str) -> str:
    """The landing token by its definition (README), with the hmac module only."""
    mac = hmac.new(SECRET.encode(), f"/w/{delivery}/{recipient}".encode(), hashlib.sha256).digest()[:16]
    return f"{len(delivery)}.{delivery}{recipient}" + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_web_tracking_through_a_real_nginx(tmp_path: Path, start_nginx: Any) -> None:  # noqa: F811
    port = free_port()
    server = Nginx(tmp_path / "prefix", port)
    server.prefix.mkdir()
    links = [
        {"id": "shop", "url": "https://shop.example.com/landing?utm=mail#top", "web_tracking": True},
        {"id": "bare", "url": "https://shop.example.com/x", "web_tracking": True},
        {"id": "blog", "url": "https://blog.example.com/post"},
    ]
    manifest = write_manifest(tmp_path, "WEB-1", links, ["r1", "r2", "r3"])
    tracklog(tmp_path, "ingest", "--manifest", str(manifest))
    out = tmp_path / "conf"
    log_dir = server.prefix / "t1"
    log_dir.mkdir()
    tracklog(tmp_path, "nginx-config", "--server-name", "t.example.com", "--out", str(out),
             "--listen", f"127.0.0.1:{port}", "--access-log", str(log_dir / "access.log"))  # fmt: skip
    start_nginx(server, main_conf(server.prefix, out))
    base = server.base
    # the click URLs as `tracklog link` prints them, for r1 and r2
    printed = tracklog(tmp_path, "link", "--delivery", "WEB-1", "--type", "click", "--format", "csv",
                       "--base-url", base).stdout.splitlines()  # fmt: skip
    rows = {(r.split(",")[0], r.split(",")[2]): r.split(",") for r in printed[1:]}
    t1, t2 = token("WEB-1", "r1"), token("WEB-1", "r2")
    assert rows[("r1", "shop")][3].endswith(f"&tl={t1}")

    a, b, anon = browser(follow=False), browser(follow=False), browser(follow=False)
    # r1, browser A: the click redirects to the landing URL with the token, before the fragment
    status, headers, _ = fetch(a, rows[("r1", "shop")][3])
    assert (status, headers["Location"]) == (302, f"https://shop.example.com/landing?utm=mail&tl={t1}#top")
    assert headers["Location"] == rows[("r1", "shop")][4]  # = the landing_url tracklog printed
    status, headers, _ = fetch(a, rows[("r1", "bare")][3])
    assert headers["Location"] == f"https://shop.example.com/x?tl={t1}"
    # a link without web tracking, and a token that is not shaped like one: never copied
    assert fetch(a, rows[("r1", "blog")][3])[1]["Location"] == "https://blog.example.com/post"
    status, headers, _ = fetch(a, url(base, "/c/WEB-1/bare/r1") + "&tl=x%22%0D%0ASet-Cookie:a")
    assert headers["Location"] == "https://shop.example.com/x"
    # the landing page's tags: a page view and a transaction
    status, headers, body = fetch(a, f"{base}/w/home.gif?tl={t1}")
    assert (status, body, headers["Content-Type"], headers["Cache-Control"]) == (
        200,
        GIF_43,
        "image/gif",
        NO_CACHE,
    )
    fetch(a, f"{base}/w/order-confirmed.gif?tl={t1}&amount=19.90&currency=EUR&items=3")
    # an anonymous visit (no token) and a forged token
    fetch(anon, f"{base}/w/home.gif")
    fetch(anon, f"{base}/w/home.gif?tl={token('WEB-1', 'r3')[:-2]}AA")
    # r2, browser B: opts out; its click gets no token, its page tag is answered but not logged
    status, headers, body = fetch(b, f"{base}/w/optout")
    assert status == 200 and "tl_optout=1" in headers["Set-Cookie"] and b"does not unsubscribe" in body
    status, headers, _ = fetch(b, rows[("r2", "shop")][3])
    assert headers["Location"] == "https://shop.example.com/landing?utm=mail#top"
    status, _, body = fetch(b, f"{base}/w/cart.gif?tl={t2}")
    assert (status, body) == (200, GIF_43)
    # ... then opts in again: the cookie is removed, and the next page tag is logged
    status, headers, _ = fetch(b, f"{base}/w/optin")
    assert status == 200 and "Max-Age=0" in headers["Set-Cookie"]
    status, headers, _ = fetch(b, rows[("r2", "shop")][3])
    assert headers["Location"] == f"https://shop.example.com/landing?utm=mail&tl={t2}#top"
    fetch(b, f"{base}/w/home.gif?tl={t2}")

    stop(server)
    log = (log_dir / "access.log").read_text(encoding="latin-1").splitlines()
    # logged: A's 4 clicks and 2 tags, anon's 2 tags, B's 2 clicks and 1 tag (after opting in);
    # not: B's opted-out tag, nor /w/optout and /w/optin
    assert len(log) == 11
    assert sum("/w/" in x for x in log) == 5 and not any("optout" in x or "optin" in x for x in log)
    tracklog(tmp_path, "ingest", str(log_dir))  # the format nginx-config recorded
    funnel = json.loads(
        tracklog(tmp_path, "report", "funnel", "--delivery", "WEB-1", "--format", "json").stdout
    )
    # delivered 3; r1 converted, r2 visited; r3 nothing (its forged tag is rejected)
    assert [(s["step"], s["readers"]) for s in funnel["funnel"]] == [
        ("delivered", 3),
        ("opened", 2),
        ("clicked", 2),
        ("visited", 2),
        ("converted", 1),
    ]
    assert funnel["web"] == [
        {"page_views": 3, "visits": 2, "visitors": 2, "pages_per_visitor": 1.5, "transactions": 1, "items": 3}
    ]
    # 19.90 / 3 delivered = 6.6333...
    assert funnel["revenue"] == [
        {
            "currency": "EUR",
            "transactions": 1,
            "items": 3,
            "revenue": "19.9000",
            "revenue_per_delivered": "6.6333",
        }
    ]
    table = tracklog(tmp_path, "report", "funnel", "--delivery", "WEB-1").stdout
    assert "1 anonymous page views (no token)" in table and "1 rejected" in table
