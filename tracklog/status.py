"""What the database holds: ingested streams, quarantine by reason, rejected and orphan hits,
manifests and the last runs. Each section is an Arrow table for the one output path.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tracklog.derived import open_reader
from tracklog.signing import WRONG_SECRET_HINT, WRONG_SECRET_MIN, WRONG_SECRET_SHARE
from tracklog.store import OnWait

_SECTIONS = {
    "sources": """
        SELECT source_id, path, left(fingerprint, 16) AS fingerprint, fp_len, compressed,
               byte_offset, lines, hits, ignored, quarantined, log_format, last_ingest
        FROM sources ORDER BY source_id""",
    "quarantine": """
        SELECT reason, count(*) AS lines FROM quarantine GROUP BY reason ORDER BY lines DESC, reason""",
    "signatures": """
        SELECT sig_status, count(*) AS hits FROM hits GROUP BY sig_status ORDER BY sig_status""",
    "deliveries": """
        SELECT d.delivery_id, d.label, d.sent_at,
               (SELECT count(*) FROM links l WHERE l.delivery_id = d.delivery_id) AS links,
               (SELECT count(*) FROM recipients r WHERE r.delivery_id = d.delivery_id) AS recipients,
               d.loaded_at
        FROM deliveries d ORDER BY d.sent_at DESC""",
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


def status_tables(db: Path, wait: float, on_wait: OnWait | None = None) -> list[tuple[str, pa.Table]]:
    with open_reader(db, wait, on_wait) as con:
        out = [(name, con.sql(sql).to_arrow_table()) for name, sql in _SECTIONS.items()]
        out.insert(3, ("orphans", con.sql(_ORPHANS).to_arrow_table()))
        out.insert(3, ("signature_alerts", con.sql(_SIGNATURE_ALERTS).to_arrow_table()))
    return out
