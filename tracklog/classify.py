"""Machine opens and bot clicks: the one place where an accepted hit is told to be a person's
(`human`) or a machine's (`machine_open` for the open pixel, `bot_click` for any other route),
with the reasons (README "Machine opens and bot clicks"). The classes are stored with each hit
(`hits.class`, `hits.reasons`) by tracklog.derived; this module gives the rules as SQL, the
per-agent verdicts (each distinct user agent looked up once), the settings in force (stored in
the database, from the [classify] table of tracklog.toml) and the mail proxies' networks.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import re
import urllib.error
import urllib.request
from importlib import metadata, resources
from typing import Any, NamedTuple

import crawleruseragents
import pyarrow as pa

from tracklog import metrics, useragent
from tracklog.config import ClassifySettings
from tracklog.duck import duckdb, load_arrow
from tracklog.errors import DataError

load_arrow()  # this module hands Arrow tables to DuckDB

# Bump when the rules below change: stored classes are then made again (tracklog reclassify).
# 2: the rules are the same, but version 1 could leave a stored hit unflagged when a later batch
# brought another hit of its recipient (it judged stored hits over the batch's whole time span):
# classifying again fixes such hits in existing databases.
CLASSIFIER_VERSION = "2"
REASONS = ("mpp", "proxy_range", "head", "agent", "trap", "burst", "fast")
APPLE_EGRESS_URL = "https://mask-api.icloud.com/egress-ip-ranges.csv"
BUNDLED_RANGES = "apple-proxy-ranges.csv"


def _crawler_list_version() -> str:
    try:
        return metadata.version("crawler-user-agents")
    except metadata.PackageNotFoundError:
        return "none"


# -- per agent --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _extra_patterns(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def agent_kind(user_agent: str | None, settings: ClassifySettings) -> str | None:
    """What the agent says: 'proxy' (a mail client's image proxy: the reader's open, fetched
    for them; checked first, since crawler lists also name GoogleImageProxy), 'mpp' (exactly
    an Apple Mail Privacy Protection agent), 'bot' (crawler, HTTP library, scanner), else None."""
    if not user_agent:
        return None
    lowered = user_agent.lower()
    if any(p.lower() in lowered for p in settings.image_proxy_agents):
        return "proxy"
    if user_agent in settings.mpp_agents:
        return "mpp"
    if settings.bot_agents and (
        crawleruseragents.is_crawler(user_agent) or useragent.parse_agent(user_agent).device == "bot"
    ):
        return "bot"
    if any(p.search(user_agent) for p in _extra_patterns(settings.extra_bot_agents)):
        return "bot"
    return None


def add_agent_kinds(con: duckdb.DuckDBPyConnection, relation: str, settings: ClassifySettings) -> None:
    """The user agents of `relation` not in agent_kinds yet, looked up (once per distinct string)."""
    unseen = con.execute(f"""
SELECT DISTINCT x.user_agent FROM {relation} x
WHERE x.user_agent IS NOT NULL AND x.user_agent NOT IN (SELECT user_agent FROM agent_kinds)""").fetchall()
    if not unseen:
        return
    agents = [r[0] for r in unseen]
    table = pa.table(
        {
            "user_agent": pa.array(agents, pa.string()),
            "kind": pa.array([agent_kind(a, settings) for a in agents], pa.string()),
        }
    )
    con.register("_new_kinds", table)
    try:
        con.execute("INSERT INTO agent_kinds SELECT user_agent, kind FROM _new_kinds")
    finally:
        con.unregister("_new_kinds")


# -- the rules --------------------------------------------------------------------------------


def window_seconds(settings: ClassifySettings) -> float:
    """How far (either way) a hit's class can depend on other hits of its recipient."""
    return max(settings.trap_window, settings.burst_window, settings.fast_seconds)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


IPV4_RE = r"[0-9]{1,3}(\.[0-9]{1,3}){3}"


def ip_numbers_sql(ips: str) -> str:
    """Each address of the relation `ips` (column ip, text) with its family and number: IPv4 as
    its 32 bits, IPv6 as its first 64 bits (the network part the proxy ranges are matched on);
    NULLs for anything else. Each address split once, by its family."""
    v4 = " + ".join(f"(TRY_CAST(p4[{i + 1}] AS UBIGINT) << {24 - 8 * i})" for i in range(4))
    groups = (
        "string_split(CASE WHEN contains(ip, '::') THEN trim(replace(ip, '::', ':' || "
        "repeat('0:', 8 - len(list_filter(string_split(ip, ':'), lambda g: g <> '')))), ':') ELSE ip END, ':')"
    )
    v6 = (
        "CASE WHEN len(g6) = 8 AND len(list_filter(g6, lambda g: regexp_full_match(g, '[0-9A-Fa-f]{1,4}'))) = 8 "
        "THEN "
        + " + ".join(f"(TRY_CAST('0x' || g6[{i + 1}] AS UBIGINT) << {48 - 16 * i})" for i in range(4))
        + " END"
    )
    return f"""
SELECT ip, family, CASE WHEN family = 4 THEN {v4} WHEN family = 6 THEN {v6} END AS number FROM (
    SELECT ip, family, CASE WHEN family = 4 THEN string_split(ip, '.') END AS p4,
        CASE WHEN family = 6 THEN {groups} END AS g6
    FROM (
        SELECT ip, CASE WHEN regexp_full_match(ip, '{IPV4_RE}') THEN 4
            WHEN contains(ip, ':') AND regexp_full_match(ip, '[0-9A-Fa-f:]{{2,39}}') THEN 6 END AS family
        FROM {ips}
    ) f
) s"""


# The columns of a hit that classify_sql reads (the relation it judges need have no others)
UNIT_COLUMNS = (
    "source_id",
    "line_no",
    "ts",
    "ip",
    "method",
    "status",
    "user_agent",
    "kind",
    "delivery_id",
    "link_id",
    "recipient_id",
    "sig_status",
)


# The stored proxy ranges with overlapping ones merged (per family, in order of lo: a range
# starts a new group unless it begins within one before it), so that an address lies in at most
# one of them: the one with the greatest lo at or below it (an ASOF join, a sorted lookup rather
# than a comparison with every range), if it ends at or above it. Same matches as
# `number BETWEEN lo AND hi` against the stored ranges, whatever list was loaded.
DISJOINT_RANGES = """
    SELECT family, min(lo) AS lo, max(hi) AS hi FROM (
        SELECT family, lo, hi, sum(CASE WHEN lo <= reach THEN 0 ELSE 1 END)
            OVER (PARTITION BY family ORDER BY lo, hi ROWS UNBOUNDED PRECEDING) AS grp
        FROM (
            SELECT family, lo, hi, max(hi) OVER (
                PARTITION BY family ORDER BY lo, hi ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
            ) AS reach
            FROM proxy_ranges
        ) s
    ) g GROUP BY family, grp"""


def _accepted_sql(x: str) -> str:
    return f"({x}.sig_status IN ('valid', 'unchecked') AND NOT coalesce({x}.status >= 400, FALSE))"


def _local_signals(
    settings: ClassifySettings, type_: str, agent: str, in_range: str, method: str
) -> dict[str, str]:
    """The signals a hit shows by itself (the first of REASONS; the others, trap, burst and fast,
    look at its recipient's other hits within a window), over the SQL expressions of its event
    type, agent kind (agent_kinds.kind), whether its address is in the proxy ranges, and method."""
    return {
        "mpp": f"{type_} = 'open' AND {agent} = 'mpp'",
        "proxy_range": f"{type_} = 'open' AND coalesce({agent}, '') <> 'proxy' AND {in_range}",
        "head": f"upper({method}) = 'HEAD'" if settings.head else "FALSE",
        "agent": f"{agent} = 'bot'",
    }


def _reasons_sql(signals: dict[str, str]) -> str:
    return (
        "nullif(concat_ws(',', "
        + ", ".join(f"CASE WHEN {sql} THEN '{name}' END" for name, sql in signals.items())
        + "), '')"
    )


def _class_sql(accepted: str, type_: str, reasons: str) -> str:
    return (
        f"CASE WHEN NOT {accepted} THEN NULL WHEN {type_} = 'unsubscribe' OR {reasons} IS NULL THEN 'human' "
        f"WHEN {type_} = 'open' THEN 'machine_open' ELSE 'bot_click' END"
    )


def proxy_ips_sql(units: str, settings: ClassifySettings) -> str:
    """The distinct addresses (column ip) of the opens of `units` in the proxy ranges."""
    if not settings.proxy_ranges:
        return "SELECT CAST(NULL AS VARCHAR) AS ip WHERE FALSE"
    return f"""
    SELECT DISTINCT n.ip FROM ({ip_numbers_sql(f"(SELECT DISTINCT ip FROM {units} WHERE kind = 'open')")}) n ASOF JOIN ({DISJOINT_RANGES}) r ON r.family = n.family AND n.number >= r.lo
    WHERE n.number <= r.hi"""


def _fast_time_sql(type_: str, ms: str, sent_ms: str, settings: ClassifySettings) -> str:
    """A hit close enough to the send for the `fast` signal (which also needs another one)."""
    fs = _ms(settings.fast_seconds)
    return (
        f"{type_} IN ('click', 'mirror', 'optout') AND {sent_ms} IS NOT NULL "
        f"AND {ms} BETWEEN {sent_ms} - {fs} AND {sent_ms} + {fs}"
    )


def candidates_sql(units: str, settings: ClassifySettings) -> str:
    """The (delivery_id, recipient_id) pairs of `units` whose hits a window signal may flag: an
    accepted trap click, as many accepted clicks (on any links: a cheaper count than distinct
    links) as a burst needs, or a hit close enough to the send to be too fast. Every pair `n` of
    classify_sql is one, from the click, mirror and opt-out hits alone; a few more may be, which
    classify_sql(picked=True) judges the same. Any other recipient's hits have their local
    signals only (local_sql)."""
    accepted = _accepted_sql("x")
    type_ = metrics.type_sql("x")
    fast = _fast_time_sql(type_, "epoch_ms(x.ts)", "epoch_ms(d.sent_at)", settings)
    return f"""
SELECT x.delivery_id, x.recipient_id FROM {units} x
LEFT JOIN (SELECT delivery_id, link_id FROM links WHERE category = '{metrics.TRAP_CATEGORY}') l
    ON l.delivery_id = x.delivery_id AND l.link_id = x.link_id
LEFT JOIN deliveries d ON d.delivery_id = x.delivery_id
WHERE x.kind IN ('click', 'mirror', 'unsubscribe')
GROUP BY x.delivery_id, x.recipient_id
HAVING bool_or(x.kind = 'click' AND l.link_id IS NOT NULL AND {accepted})
    OR count(*) FILTER (WHERE x.kind = 'click' AND x.link_id IS NOT NULL AND {accepted}) >= {int(settings.burst_links)}
    OR bool_or({fast})"""


class Local(NamedTuple):
    """SQL expressions over one hit, by its local signals alone (local_sql)."""

    reasons: str  # its reasons, as classify_sql gives them to a hit of no candidate
    any: str  # whether it may show one (a cheap test first: no reason without it)


def local_sql(h: str, agent: str, ranges: str, settings: ClassifySettings) -> Local:
    """The hit `h` by its local signals alone: what classify_sql gives a hit whose recipient is
    not among candidates_sql's. `agent` is the alias of its agent_kinds row (joined on
    user_agent), `ranges` of its proxy_ips_sql row (joined on ip for an open)."""
    type_ = metrics.type_sql(h)
    accepted = _accepted_sql(h)
    signals = _local_signals(settings, type_, f"{agent}.kind", f"{ranges}.ip IS NOT NULL", f"{h}.method")
    reasons = f"CASE WHEN {accepted} AND {type_} <> 'unsubscribe' THEN {_reasons_sql(signals)} END"
    head = f" OR upper({h}.method) = 'HEAD'" if settings.head else ""
    return Local(reasons, f"({agent}.kind IN ('mpp', 'bot') OR {ranges}.ip IS NOT NULL{head})")


def class_sql(h: str, reasons: str) -> str:
    """The class of the hit `h` whose reasons (as classify_sql gives them) are `reasons`: none for
    a hit not accepted, `human` without a reason, else by its route (the reasons of a hit not
    accepted, and of a one-click unsubscribe POST, are always NULL)."""
    return (
        f"CASE WHEN NOT {_accepted_sql(h)} THEN NULL WHEN {reasons} IS NULL THEN 'human' "
        f"WHEN {h}.kind = 'open' THEN 'machine_open' ELSE 'bot_click' END"
    )


def classify_sql(
    units: str, settings: ClassifySettings, *, ranges: str | None = None, picked: bool = False
) -> str:
    """Per hit of the relation `units` (the hits of some recipients, with every other hit of
    theirs within window_seconds() of each): source_id, line_no, class, reasons. Window
    signals look only at the accepted hits of the same delivery and recipient (ids as logged,
    so an orphan is classified too). Reads agent_kinds (add_agent_kinds first), links,
    deliveries and proxy_ranges. Every threshold is a number of the validated settings.

    `ranges`: a query giving proxy_ips_sql's addresses for the opens of `units` (else computed
    here). `picked`: the recipients of `units` were picked by candidates_sql, so the
    windows run on all their hits (the same classes: for a recipient a window signal cannot
    flag, every window value is 0 or unused) rather than on the candidates found here."""
    tw, bw, fs = _ms(settings.trap_window), _ms(settings.burst_window), _ms(settings.fast_seconds)
    reader = "PARTITION BY u.delivery_id, u.recipient_id ORDER BY u.ms"
    accepted = _accepted_sql("x")

    def fast_time(a: str) -> str:
        return _fast_time_sql(f"{a}.type", f"{a}.ms", f"{a}.sent_ms", settings)

    signals = {
        **_local_signals(settings, "w.type", "w.agent", "w.in_range", "w.method"),
        "trap": "w.near_trap = 1",
        "burst": "w.type = 'click' AND w.in_burst = 1",
        "fast": f"{fast_time('w')} AND w.opened_before = 0",
    }
    candidates = (
        ""
        if picked
        else f"""
), n AS (
    -- the recipients whose hits a window signal can flag: a trap click, enough distinct links
    -- clicked for a burst, or a hit close enough to the send to be too fast. The windows run on
    -- their hits alone (most recipients have none of these): for the others every window value
    -- is 0 (no trap click in any frame, fewer links than a burst in any frame) or unused (fast)
    SELECT u.delivery_id, u.recipient_id FROM u GROUP BY u.delivery_id, u.recipient_id
    HAVING max(CASE WHEN u.accepted AND u.is_trap THEN 1 ELSE 0 END) = 1
        OR count(DISTINCT CASE WHEN u.accepted AND u.type = 'click' THEN u.link_id END) >= {int(settings.burst_links)}
        OR max(CASE WHEN {fast_time("u")} THEN 1 ELSE 0 END) = 1
), uw AS (
    SELECT u.* FROM u JOIN n ON n.delivery_id IS NOT DISTINCT FROM u.delivery_id
        AND n.recipient_id IS NOT DISTINCT FROM u.recipient_id"""
    )
    others = (
        ""
        if picked
        else """
    UNION ALL
    SELECT u.*, 0 AS near_trap, 0 AS burst_start, 0 AS opened_before, 0 AS in_burst FROM u
    WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.delivery_id IS NOT DISTINCT FROM u.delivery_id
        AND n.recipient_id IS NOT DISTINCT FROM u.recipient_id)"""
    )
    return f"""
WITH u AS (
    SELECT x.source_id, x.line_no, x.delivery_id, x.recipient_id, x.link_id, x.method,
        {metrics.type_sql("x")} AS type, {accepted} AS accepted, epoch_ms(x.ts) AS ms,
        epoch_ms(d.sent_at) AS sent_ms, k.kind AS agent,
        x.kind = 'click' AND coalesce(l.category, '') = '{metrics.TRAP_CATEGORY}' AS is_trap,
        p.ip IS NOT NULL AS in_range
    FROM {units} x
    LEFT JOIN agent_kinds k ON k.user_agent = x.user_agent
    LEFT JOIN links l ON l.delivery_id = x.delivery_id AND l.link_id = x.link_id
    LEFT JOIN deliveries d ON d.delivery_id = x.delivery_id
    LEFT JOIN ({ranges or proxy_ips_sql(units, settings)}) p ON p.ip = x.ip AND x.kind = 'open'{candidates}
), s AS (
    SELECT u.*,
        max(CASE WHEN u.accepted AND u.is_trap THEN 1 ELSE 0 END)
            OVER ({reader} RANGE BETWEEN {tw} PRECEDING AND {tw} FOLLOWING) AS near_trap,
        CASE WHEN u.accepted AND u.type = 'click' AND count(DISTINCT CASE WHEN u.accepted AND u.type = 'click'
            THEN u.link_id END) OVER ({reader} RANGE BETWEEN CURRENT ROW AND {bw} FOLLOWING)
            >= {int(settings.burst_links)} THEN 1 ELSE 0 END AS burst_start,
        max(CASE WHEN u.accepted AND u.type = 'open' THEN 1 ELSE 0 END)
            OVER ({reader} RANGE BETWEEN {fs} PRECEDING AND CURRENT ROW) AS opened_before
    FROM {"u" if picked else "uw"} u
), w AS (
    SELECT s.*, max(s.burst_start) OVER (
        PARTITION BY s.delivery_id, s.recipient_id ORDER BY s.ms RANGE BETWEEN {bw} PRECEDING AND CURRENT ROW
    ) AS in_burst
    FROM s{others}
), r AS (
    SELECT w.source_id, w.line_no, w.accepted, w.type, {_reasons_sql(signals)} AS reasons FROM w
)
SELECT r.source_id, r.line_no, {_class_sql("r.accepted", "r.type", "r.reasons")} AS class,
    CASE WHEN r.accepted AND r.type <> 'unsubscribe' THEN r.reasons END AS reasons
FROM r
"""


# -- settings and proxy ranges in the database ------------------------------------------------


def _settings_json(settings: ClassifySettings) -> str:
    return json.dumps(settings.as_dict(), sort_keys=True)


def _version(settings: ClassifySettings, ranges_digest: str) -> str:
    text = "\n".join(
        [
            CLASSIFIER_VERSION,
            _settings_json(settings),
            _crawler_list_version(),
            useragent.PARSER_VERSION,
            ranges_digest,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _ranges_digest(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute("SELECT digest FROM proxy_ranges_source").fetchall()
    return str(rows[0][0]) if rows else ""


def stored_settings(con: duckdb.DuckDBPyConnection) -> tuple[ClassifySettings, str]:
    """The settings in force and their version (the defaults until ingest or reclassify stores
    the configured ones; the bundled proxy ranges until refreshed)."""
    if not con.execute("SELECT 1 FROM proxy_ranges_source").fetchall():
        if _is_read_only(con):
            return ClassifySettings(), _version(ClassifySettings(), "")
        _store_ranges(con, parse_ranges(_bundled_ranges(), BUNDLED_RANGES), f"bundled {BUNDLED_RANGES}")
    rows = con.execute("SELECT settings, version FROM classifier_settings").fetchall()
    if not rows:
        settings = ClassifySettings()
        version = _version(settings, _ranges_digest(con))
        if not _is_read_only(con):
            con.execute("INSERT INTO classifier_settings VALUES (?, ?)", [_settings_json(settings), version])
        return settings, version
    data: dict[str, Any] = json.loads(rows[0][0])
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return ClassifySettings(**values), str(rows[0][1])


def store_settings(con: duckdb.DuckDBPyConnection, settings: ClassifySettings) -> bool:
    """Make `settings` the ones in force; whether the version changed (the stored classes are
    then made again by tracklog.derived.sync)."""
    _, old = stored_settings(con)
    version = _version(settings, _ranges_digest(con))
    if version == old:
        return False
    con.execute("DELETE FROM classifier_settings")
    con.execute("INSERT INTO classifier_settings VALUES (?, ?)", [_settings_json(settings), version])
    return True


def _is_read_only(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return bool(rows and rows[0][0])


def _bundled_ranges() -> str:
    return (resources.files("tracklog") / "data" / BUNDLED_RANGES).read_text(encoding="utf-8")


def parse_ranges(text: str, name: str) -> pa.Table:
    """The CIDRs of a proxy-range list (Apple's egress CSV: the prefix first on each line; blank
    lines and # comments skipped) as columns family, lo, hi (see ip_numbers_sql)."""
    family: list[int] = []
    lo: list[int] = []
    hi: list[int] = []
    for n, line in enumerate(text.splitlines(), start=1):
        field = line.split(",", 1)[0].strip()
        if not field or field.startswith("#"):
            continue
        try:
            net = ipaddress.ip_network(field, strict=False)
        except ValueError:
            shown = field[:60].encode("ascii", "backslashreplace").decode()
            raise DataError(f"proxy ranges {name}, line {n}: {shown!r} is not an IP network (CIDR)") from None
        shift = 0 if net.version == 4 else 64
        family.append(net.version)
        lo.append(int(net.network_address) >> shift)
        hi.append(int(net.broadcast_address) >> shift)
    if not family:
        raise DataError(f"proxy ranges {name}: no IP network found")
    return pa.table(
        {
            "family": pa.array(family, pa.int8()),
            "lo": pa.array(lo, pa.uint64()),
            "hi": pa.array(hi, pa.uint64()),
        }
    )


def _store_ranges(con: duckdb.DuckDBPyConnection, ranges: pa.Table, source: str) -> None:
    con.register("_ranges", ranges)
    try:
        con.execute("DELETE FROM proxy_ranges")
        con.execute("INSERT INTO proxy_ranges SELECT family, lo, hi FROM _ranges")
    finally:
        con.unregister("_ranges")
    digest = hashlib.sha256(
        "\n".join(
            f"{r[0]} {r[1]} {r[2]}" for r in con.execute("SELECT * FROM proxy_ranges ORDER BY ALL").fetchall()
        ).encode()
    ).hexdigest()[:16]
    con.execute("DELETE FROM proxy_ranges_source")
    con.execute("INSERT INTO proxy_ranges_source VALUES (?, ?, ?)", [source, digest, ranges.num_rows])


def read_ranges_source(source: str, timeout: float = 60.0) -> tuple[str, str]:
    """The text of a proxy-range list from an http(s) URL or a local file, and its name."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as response:
                return response.read().decode("utf-8", errors="replace"), source
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataError(
                f"cannot download {source}: {exc} (download it another way and use --from FILE)"
            ) from exc
    try:
        with open(source, encoding="utf-8", errors="replace") as fh:
            return fh.read(), source
    except OSError as exc:
        raise DataError(f"cannot read proxy ranges {source}: {exc.strerror or exc}") from exc


def replace_ranges(con: duckdb.DuckDBPyConnection, text: str, name: str) -> int:
    """Make the list `text` the proxy ranges in force (the settings' version changes with it,
    so tracklog.derived.sync classifies again); how many networks it holds."""
    settings, _ = stored_settings(con)
    ranges = parse_ranges(text, name)
    _store_ranges(con, ranges, name)
    version = _version(settings, _ranges_digest(con))
    con.execute("UPDATE classifier_settings SET version = ?", [version])
    return int(ranges.num_rows)
