"""What the database holds: ingested streams, quarantine by reason, rejected and orphan hits,
manifests and the last runs. Each section is a tracklog.result.Result for the one output path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from tracklog.derived import open_reader
from tracklog.result import Result
from tracklog.signing import WRONG_SECRET_HINT, WRONG_SECRET_MIN, WRONG_SECRET_SHARE
from tracklog.store import OnWait

_SECTIONS = {
    "sources": """
        SELECT source_id, path, left(fingerprint, 16) AS fingerprint, fp_len, compressed,
               byte_offset, lines, hits, ignored, quarantined, log_format, last_ingest
        FROM sources ORDER BY source_id""",
    "servers": """
        SELECT coalesce(server, '-') AS server, count(*) AS streams, sum(lines)::BIGINT AS lines,
               sum(hits)::BIGINT AS hits, max(last_hit) AS last_hit, max(last_ingest) AS last_ingest
        FROM sources GROUP BY ALL ORDER BY server""",
    "quarantine": """
        SELECT reason, count(*) AS lines FROM quarantine GROUP BY reason ORDER BY lines DESC, reason""",
    "signatures": """
        SELECT sig_status, count(*) AS hits FROM hits GROUP BY sig_status ORDER BY sig_status""",
    # counted per delivery once (a correlated count per delivery took twice as long)
    "deliveries": """
        SELECT d.delivery_id, d.label, d.sent_at, coalesce(l.n, 0) AS links, coalesce(r.n, 0) AS recipients,
               d.loaded_at
        FROM deliveries d
        LEFT JOIN (SELECT delivery_id, count(*) AS n FROM links GROUP BY delivery_id) l
            ON l.delivery_id = d.delivery_id
        LEFT JOIN (SELECT delivery_id, count(*) AS n FROM recipients GROUP BY delivery_id) r
            ON r.delivery_id = d.delivery_id
        ORDER BY d.sent_at DESC""",
    "last_runs": """
        SELECT run_id, started_at, finished_at, files, lines, hits, ignored, quarantined, rejected, errors,
               exit_code
        FROM runs ORDER BY run_id DESC LIMIT 5""",
}

# Streams whose signed hits nearly all failed verification: most likely a wrong secret
# (signing.looks_like_wrong_secret), until `tracklog reverify` with the right one.
_SIGNATURE_ALERTS = f"""
    SELECT x.source_id, s.path, x.signed, x.invalid, '{WRONG_SECRET_HINT}' AS likely_cause
    FROM (
        SELECT source_id, count(*) FILTER (WHERE sig_status IN ('valid', 'invalid')) AS signed,
               count(*) FILTER (WHERE sig_status = 'invalid') AS invalid
        FROM hits GROUP BY source_id
    ) x JOIN sources s ON s.source_id = x.source_id
    WHERE x.signed >= {WRONG_SECRET_MIN} AND x.invalid >= {WRONG_SECRET_SHARE} * x.signed
    ORDER BY x.source_id"""

# Orphan hits per delivery id (the `orphan_counts` view), most first.
_ORPHANS = "SELECT * FROM orphan_counts ORDER BY orphan_hits DESC, delivery_id"


def status_tables(db: Path, wait: float, on_wait: OnWait | None = None) -> list[tuple[str, Result]]:
    with open_reader(db, wait, on_wait) as con:
        out = [(name, Result.from_cursor(con.execute(sql))) for name, sql in _SECTIONS.items()]
        out.insert(4, ("orphans", Result.from_cursor(con.execute(_ORPHANS))))
        out.insert(4, ("signature_alerts", Result.from_cursor(con.execute(_SIGNATURE_ALERTS))))
    return out


def server_lags(
    db: Path,
    wait: float,
    max_lag: dt.timedelta,
    now: dt.datetime,
    servers: Sequence[str] = (),
    on_wait: OnWait | None = None,
) -> tuple[Result, list[str]]:
    """Per tracking server (only `servers` when given): its newest hit, how long ago that was at
    `now` (UTC), and whether that is more than `max_lag`; with one line per late server. No
    hit yet, or an asked server never ingested, is late too."""
    with open_reader(db, wait, on_wait) as con:
        rows = con.execute(
            "SELECT coalesce(server, '-') AS server, max(last_hit) AS last_hit, sum(lines)::BIGINT AS lines "
            "FROM sources GROUP BY ALL ORDER BY server"
        ).fetchall()
    if servers:
        rows = [r for r in rows if r[0] in servers]
    out: list[dict[str, object]] = []
    late: list[str] = []
    for server, last_hit, lines in rows:
        lag = None if last_hit is None else max(now - last_hit, dt.timedelta(0))
        is_late = lag is None or lag > max_lag
        out.append(
            {
                "server": server,
                "last_hit": last_hit,
                "lag_seconds": None if lag is None else int(lag.total_seconds()),
                "lines": int(lines),
                "status": "late" if is_late else "ok",
            }
        )
        if is_late:
            since = "no tracking hit yet" if lag is None else f"last tracking hit {_duration(lag)} ago"
            late.append(f"server {server}: {since} (more than --max-lag {_duration(max_lag)})")
    known = {r[0] for r in rows}
    late += [
        f"server {name}: no logs ingested from it" for name in dict.fromkeys(servers) if name not in known
    ]
    if not rows and not servers:
        late.append("no tracking logs ingested yet")
    columns = (
        ("server", "string"),
        ("last_hit", "timestamp"),
        ("lag_seconds", "integer"),
        ("lines", "integer"),
        ("status", "string"),
    )
    return Result.from_columns([(name, kind, [r[name] for r in out]) for name, kind in columns]), late


def _duration(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds()) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{mins}m" if mins or not (days or hours) else "",
    ]
    return "".join(parts)
