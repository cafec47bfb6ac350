"""Test helpers: nginx combined log lines for tracking hits, signed like a real sender would,
written independently of tracklog's parser (plain string formatting)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

SECRET = b"test-secret"
UAS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
]


def sig(path: str, secret: bytes = SECRET) -> str:
    mac = hmac.new(secret, path.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def line(
    path: str,
    *,
    method: str = "GET",
    status: int = 200,
    query: str | None = "sign",
    ts: str = "03/Nov/2026:09:15:00 +0000",
    ip: str = "203.0.113.9",
    ua: str = UAS[0],
) -> str:
    """One combined-format line; query 'sign' appends the correct ?s=, None no query at all."""
    target = path
    if query == "sign":
        target = f"{path}?s={sig(path)}"
    elif query is not None:
        target = f"{path}?{query}"
    return f'{ip} - - [{ts}] "{method} {target} HTTP/1.1" {status} 43 "-" "{ua}"\n'


def tracking_lines(n: int, seed: int = 1, delivery: str = "NL-1") -> list[str]:
    """n lines: a mix of opens, clicks and noise; each line's kind is recoverable from its text."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        r = rnd.random()
        rec = f"r{rnd.randrange(50):04d}"
        minute, sec = divmod(i % 3600, 60)
        ts = f"03/Nov/2026:10:{minute:02d}:{sec:02d} +0000"
        if r < 0.5:
            out.append(line(f"/o/{delivery}/{rec}.gif", ts=ts))
        elif r < 0.85:
            out.append(line(f"/c/{delivery}/link{rnd.randrange(3)}/{rec}", status=302, ts=ts))
        else:
            out.append(line("/favicon.ico", status=404, query=None, ts=ts))
    return out


def expected_counts(lines: list[str]) -> dict[str, int]:
    """Counts computed from the text alone: opens, clicks, ignored."""
    opens = sum(1 for x in lines if '"GET /o/' in x)
    clicks = sum(1 for x in lines if '"GET /c/' in x)
    return {"open": opens, "click": clicks, "ignored": len(lines) - opens - clicks}


# The indicator field names of issue 4, in order: the spec, written out independently of the code.
ISSUE4_FIELDS = [
    "sent",
    "delivered",
    "opens_total",
    "opens_unique",
    "clicks_total",
    "clicks_unique",
    "persons_clicked",
    "forwards_estimate",
    "open_rate",
    "click_rate",
    "raw_reactivity",
    "mirror_views",
    "optout_clicks",
    "unsubscribes",
    "rejected_hits",
    "failed_hits",
    "machine_opens",
    "bot_clicks",
]
