"""The generated 10-million-hit database that bench_reports.py and bench_incremental.py share.

Built directly in DuckDB (range() into hits, deliveries, links, recipients: no log parsing):
DELIVERIES deliveries D00..D09 sent a week apart, RECIPIENTS_PER_DELIVERY recipients each
(r0000000.., about 2% failed), LINKS_PER_DELIVERY links l0..l11 (the last a trap), and hits in
time order as a log appends them, each within HIT_SPREAD_SECONDS of its delivery's send, about
1% of them from recipients beyond the manifest (orphans). The derived tables (report caches) are
not built here: the caller brings them up to date.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from tracklog.schema import HIT_COLUMNS
from tracklog.store import open_writer

DELIVERIES = 10
RECIPIENTS_PER_DELIVERY = 200_000
LINKS_PER_DELIVERY = 12  # the last one a trap
FIRST_SEND = datetime(2026, 1, 5, 9, 0, 0)  # UTC; delivery d is sent d weeks later
HIT_SPREAD_SECONDS = 259_200  # every hit within 3 days of its delivery's send
USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.0",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
]


def delivery_id(d: int) -> str:
    return f"D{d:02d}"


def recipient_id(r: int) -> str:
    return f"r{r:07d}"


def link_id(k: int) -> str:
    return f"l{k}"


def last_hit_bound() -> datetime:
    """No hit of the built database is later than this."""
    return FIRST_SEND + timedelta(weeks=DELIVERIES - 1, seconds=HIT_SPREAD_SECONDS)


def build(db: Path, hits: int) -> None:
    """Create `db` with the deliveries, links, recipients and `hits` hits (0: manifests only)."""
    ids = "'D' || lpad(CAST(d AS VARCHAR), 2, '0')"
    first_send = f"TIMESTAMP '{FIRST_SEND:%Y-%m-%d %H:%M:%S}'"
    with open_writer(db) as con:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"""
INSERT INTO deliveries
SELECT {ids}, 'Delivery ' || d, {first_send} + INTERVAL (7 * d) DAY, 'Subject ' || d,
    NULL, NULL, 'bench.json', repeat('0', 64), now()::TIMESTAMP
FROM range({DELIVERIES}) t(d)""")
        con.execute(f"""
INSERT INTO links (delivery_id, link_id, position, url, label, category)
SELECT {ids}, 'l' || k, k + 1, 'https://shop.example.com/p/' || (k + d) % 20, 'Link ' || k,
    CASE WHEN k = {LINKS_PER_DELIVERY - 1} THEN 'trap' WHEN k % 3 = 0 THEN 'content' ELSE 'promo' END
FROM range({DELIVERIES}) a(d), range({LINKS_PER_DELIVERY}) b(k)""")
        con.execute(f"""
INSERT INTO recipients
SELECT {ids}, 'r' || lpad(CAST(r AS VARCHAR), 7, '0'),
    'user' || r || '@' || ['gmail.com', 'yahoo.fr', 'orange.fr', 'outlook.com', 'example.org'][1 + r % 5],
    CASE WHEN hash(d, r) % 50 = 0 THEN 'failed' ELSE 'sent' END, NULL
FROM range({DELIVERIES}) a(d), range({RECIPIENTS_PER_DELIVERY}) b(r)""")
        con.execute(
            "INSERT INTO sources (source_id, fingerprint, fp_len, path, compressed, byte_offset, lines, hits, "
            "ignored, quarantined, log_format, first_ingest, last_ingest) "
            "VALUES (1, 'bench', 0, 'bench', false, 0, 0, 0, 0, 0, 'combined', now()::TIMESTAMP, now()::TIMESTAMP)"
        )
        agents = ", ".join("'" + ua.replace("'", "''") + "'" for ua in USER_AGENTS)
        con.execute(f"""
INSERT INTO hits ({", ".join(HIT_COLUMNS)})
SELECT 1, i + 1, i * 200,
    {first_send} + INTERVAL (7 * d) DAY
        + INTERVAL (CAST(pow(hash(i, 3) % 1000 / 1000.0, 3) * {HIT_SPREAD_SECONDS} AS BIGINT)) SECOND,
    '198.51.' || (r % 250) || '.' || (r % 200), CASE WHEN kind = 'unsubscribe' AND hash(i, 4) % 2 = 0 THEN 'POST' ELSE 'GET' END,
    's=x',
    CASE WHEN hash(i, 5) % 100 = 0 THEN 404 ELSE 200 END, 43, NULL,
    [{agents}][1 + CAST((r + hash(i, 6) % 2) % {len(USER_AGENTS)} AS INTEGER)],
    CASE WHEN r % 2 = 0 THEN 'uid' || r END, NULL, kind, {ids},
    CASE WHEN kind = 'click' THEN 'l' || least(CAST(pow(hash(i, 7) % 1000 / 1000.0, 2) * {LINKS_PER_DELIVERY} AS BIGINT), {LINKS_PER_DELIVERY - 1}) END,
    'r' || lpad(CAST(r AS VARCHAR), 7, '0'),
    CASE WHEN hash(i, 8) % 100 = 0 THEN 'invalid' ELSE 'valid' END
FROM (
    SELECT i, i % {DELIVERIES} AS d,
        -- recipients beyond the manifest make ~1% orphans
        hash(i, 1) % {RECIPIENTS_PER_DELIVERY * 101 // 100} AS r,
        CASE WHEN hash(i, 2) % 100 < 60 THEN 'open' WHEN hash(i, 2) % 100 < 95 THEN 'click'
             WHEN hash(i, 2) % 100 < 98 THEN 'mirror' ELSE 'unsubscribe' END AS kind
    FROM range({hits}) t(i)
)
ORDER BY 4  -- by time, as a log appends them (refresh_derived keeps that order in hit_facts)""")
        con.execute("CHECKPOINT")
