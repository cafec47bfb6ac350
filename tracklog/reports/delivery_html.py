"""The delivery dashboard (`report delivery ID --html FILE`): one self-contained page with the
tracking indicators, the funnel, the opens/clicks timeline, the hot-clicks view of the message,
top domains, browsers and devices, and the hits not counted.

Every figure comes from the same report functions as the terminal and JSON reports, and carries
a data-field (or data-*) attribute so a test can read it back from the rendered page. Charts are
inline SVG; the page loads nothing (see hot_clicks_html.CSP) and has no script.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

from tracklog.engines import Connection
from tracklog.errors import DataError
from tracklog.reports import delivery as delivery_reports
from tracklog.reports import hot_clicks as hot_clicks_report
from tracklog.reports import stats as stats_report
from tracklog.reports.common import ALL_TIME, Window, excluded_hits
from tracklog.reports.hot_clicks_html import (
    annotated_body,
    link_figures,
    message_html,
    page,
    page_facts,
    trap_urls,
)
from tracklog.result import Result

TOP = 10  # rows of the domain, browser and device tables
OPENS_COLOUR, CLICKS_COLOUR = "#1e88e5", "#e65100"

# indicator -> label on the page, in the order shown
INDICATORS = {
    "sent": "Sent",
    "delivered": "Delivered",
    "opens_unique": "Opens (unique)",
    "opens_total": "Opens",
    "open_rate": "Open rate %",
    "clicks_unique": "Clicks (unique)",
    "clicks_total": "Clicks",
    "click_rate": "Click rate %",
    "raw_reactivity": "Reactivity %",
    "persons_clicked": "Persons clicked",
    "forwards_estimate": "Forwards (estimate)",
    "mirror_views": "Mirror page views",
    "optout_clicks": "Opt-out link clicks",
    "unsubscribes": "Unsubscribes (one-click)",
}
EXCLUDED = {
    "rejected_hits": "rejected (bad signature)",
    "failed_hits": "failed (4xx/5xx)",
    "orphan_hits": "orphan (not in a manifest)",
    "machine_opens": "machine opens",
    "bot_clicks": "bot clicks",
}

_DASHBOARD_STYLE = """
<style>
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: #212121; background: #fafafa; }
.dash { max-width: 1100px; margin: 0 auto; padding: 16px; }
.dash h1 { font-size: 20px; margin: 0 0 4px; } .dash h2 { font-size: 16px; margin: 24px 0 8px; }
.muted { color: #616161; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; }
.card { background: #fff; border: 1px solid #e0e0e0; border-radius: 6px; padding: 8px 10px; }
.card .v { font-size: 22px; font-weight: 600; } .card .k { font-size: 12px; color: #616161; }
.dash table { border-collapse: collapse; background: #fff; }
.dash td, .dash th { border: 1px solid #e0e0e0; padding: 3px 8px; text-align: left; }
.dash td.n { text-align: right; font-variant-numeric: tabular-nums; }
.grid3 { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; }
.message { background: #fff; border: 1px solid #e0e0e0; padding: 8px; overflow: auto; }
.key { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; }
</style>
"""


def dashboard_page(
    con: Connection, delivery_id: str, window: Window = ALL_TIME, tz: dt.tzinfo | None = None
) -> str:
    indicators = delivery_reports.delivery_indicators(con, delivery_id, window)
    row = indicators.to_pylist()[0]
    label = str(row["label"])
    links = hot_clicks_report.hot_clicks(con, delivery_id, window)
    figures = link_figures(links)
    facts = page_facts(con, delivery_id, label, sum(f.clicks for f in figures), window, tz)
    timeline, reach = stats_report.timeline_and_reach(con, "auto", delivery_id, window)
    try:
        _, content = message_html(con, delivery_id)
        message = annotated_body(content, delivery_id, figures, trap_urls(con, delivery_id), facts)
    except DataError:
        message = '<p class="muted">The manifest carries no HTML content for this delivery.</p>'
    parts = [
        f'<h1>{_e(label)} <span class="muted">({_e(delivery_id)})</span></h1>',
        _intro(row, window, tz),
        _cards(row),
        "<h2>Funnel</h2>",
        _funnel_svg(delivery_reports.funnel(indicators)),
        "<h2>Opens and clicks since the send</h2>",
        _timeline_svg(timeline, stats_report.reach_marks(timeline, reach)),
        "<h2>Hot clicks</h2>",
        f'<p class="muted">{_e(facts.period) or "no clicks"} · {HOT_CLICKS_LEGEND}</p>',
        f'<div class="message" data-section="message">{message}</div>',
        _table("Top domains", "domains", stats_report.breakdown(con, "domain", delivery_id, window, TOP)),
        '<div class="grid3">',
        _table("Browsers", "browsers", stats_report.breakdown(con, "browser", delivery_id, window, TOP)),
        _table("Devices", "devices", stats_report.breakdown(con, "device", delivery_id, window, TOP)),
        "</div>",
        "<h2>Not counted</h2>",
        _excluded(excluded_hits(con, delivery_id, window)),
    ]
    body = '<div class="dash">' + "\n".join(parts) + "</div>"
    return page(f"Delivery {label} ({delivery_id})", body, _DASHBOARD_STYLE)


HOT_CLICKS_LEGEND = "colour: share of the clicks, blue (fewest) to red (most); grey: mirror page, opt-out and untracked links."


def _intro(row: dict[str, Any], window: Window, tz: dt.tzinfo | None) -> str:
    subject = f" · subject: {row['subject']}" if row.get("subject") else ""
    return (
        f'<p class="muted">Sent {_e(_time(row["sent_at"], tz))}{_e(subject)} · '
        f"{_e(_window_text(window, tz))} · times in {_e(_zone(tz))}</p>"
    )


def _e(text: object) -> str:
    return html.escape(str(text))


def _num(value: Any) -> str:
    """As the tables show a number (render.cell_text)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _time(value: dt.datetime | None, tz: dt.tzinfo | None) -> str:
    if value is None:
        return ""
    moment = value.replace(tzinfo=dt.UTC)
    if tz is None or tz is dt.UTC:
        return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    return moment.astimezone(tz).isoformat(timespec="seconds")


def _zone(tz: dt.tzinfo | None) -> str:
    return str(getattr(tz, "key", "")) or "UTC"


def _window_text(window: Window, tz: dt.tzinfo | None) -> str:
    if window.since is None and window.until is None:
        return "all hits"
    since = _time(window.since, tz) if window.since else "the start"
    until = _time(window.until, tz) if window.until else "now"
    return f"hits from {since} to before {until}"


def _cards(row: dict[str, Any]) -> str:
    cards = "".join(
        f'<div class="card"><div class="v" data-field="{name}">{_e(_num(row[name]))}</div>'
        f'<div class="k">{_e(text)}</div></div>'
        for name, text in INDICATORS.items()
    )
    return f'<div class="cards">{cards}</div>'


def _funnel_svg(funnel: Result) -> str:
    rows = funnel.to_pylist()
    top = max((r["count"] for r in rows), default=0) or 1
    bar_w, line_h = 560, 30
    out = [f'<svg width="{bar_w + 330}" height="{line_h * len(rows) + 4}" role="img" aria-label="Funnel">']
    for i, r in enumerate(rows):
        y = i * line_h + 2
        w = max(1, round(bar_w * r["count"] / top)) if r["count"] else 0
        automated = "" if r["not_counted"] is None else f" · {r['not_counted']} automated, not counted"
        out.append(
            f'<text x="0" y="{y + 19}" font-size="13">{_e(r["stage"])}</text>'
            f'<rect x="90" y="{y}" width="{w}" height="{line_h - 6}" fill="{OPENS_COLOUR}"></rect>'
            f'<text x="{96 + w}" y="{y + 17}" font-size="13"><tspan data-funnel="{_e(r["stage"])}">{r["count"]}</tspan>'
            f" ({_num(r['of_sent'])}% of sent){_e(automated)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _timeline_svg(timeline: Result, marks: dict[int, str]) -> str:
    rows = timeline.to_pylist()
    if not rows:
        return '<p class="muted">No opens or clicks.</p>'
    top = max(max(r["opens"], r["clicks"]) for r in rows) or 1
    slot, height, base = 24, 200, 220
    width = slot * len(rows) + 60
    out = [
        (
            f'<p><span class="key" style="background:{OPENS_COLOUR}"></span>opens'
            f'<span class="key" style="background:{CLICKS_COLOUR}"></span>clicks'
            '<span class="muted"> · dashed: the bucket where opens reach 50% and 90% of their count</span></p>'
        ),
        f'<svg width="{width}" height="{base + 40}" role="img" aria-label="Opens and clicks over time">',
        f'<line x1="40" y1="{base}" x2="{width}" y2="{base}" stroke="#9e9e9e"></line>',
        f'<text x="0" y="{base - height + 4}" font-size="11">{top}</text><text x="0" y="{base}" font-size="11">0</text>',
    ]
    for i, r in enumerate(rows):
        x = 44 + i * slot
        for j, (series, colour) in enumerate((("opens", OPENS_COLOUR), ("clicks", CLICKS_COLOUR))):
            h = round(height * r[series] / top)
            out.append(
                f'<rect x="{x + j * 10}" y="{base - h}" width="9" height="{h}" fill="{colour}" '
                f'data-bucket="{_e(r["bucket"])}" data-series="{series}" data-value="{r[series]}">'
                f"<title>{_e(r['bucket'])}: {r[series]} {series}</title></rect>"
            )
        if i in marks:
            out.append(
                f'<line x1="{x - 2}" y1="{base - height - 10}" x2="{x - 2}" y2="{base}" stroke="#424242" '
                f'stroke-dasharray="4 3"></line><text x="{x}" y="{base - height - 12}" font-size="11">'
                f"{_e(marks[i].lstrip('◀ '))}</text>"
            )
        if i % max(1, len(rows) // 12) == 0:
            out.append(f'<text x="{x}" y="{base + 16}" font-size="11">{_e(r["bucket"])}</text>')
    out.append("</svg>")
    return "".join(out)


_COLUMN_HEADERS = {  # the terminal tables' headers (render.HEADERS, which the core may not import)
    "domain": "Domain",
    "sent": "Sent",
    "delivered": "Delivered",
    "opens_unique": "Opens (unique)",
    "clicks_unique": "Clicks (unique)",
    "open_rate": "Open rate %",
    "click_rate": "Click rate %",
    "browser": "Browser",
    "device": "Device",
    "opens": "Opens",
    "clicks": "Clicks",
    "readers": "Readers",
    "share": "Share of opens %",
}


def _table(title: str, section: str, table: Result) -> str:
    rows = table.to_pylist()
    head = "".join(f"<th>{_e(_COLUMN_HEADERS.get(name, name))}</th>" for name in table.column_names)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"n" if isinstance(v, int | float) else ""}" data-col="{_e(k)}">{_e(_num(v))}</td>'
            for k, v in r.items()
        )
        + "</tr>"
        for r in rows
    )
    empty = "" if rows else f'<tr><td colspan="{len(table.column_names)}" class="muted">none</td></tr>'
    return (
        f'<div><h2>{_e(title)}</h2><table data-section="{section}"><tr>{head}</tr>{body}{empty}</table></div>'
    )


def _excluded(counts: dict[str, int]) -> str:
    items = "".join(
        f'<li><span data-excluded="{name}">{counts.get(name, 0)}</span> {_e(text)}</li>'
        for name, text in EXCLUDED.items()
    )
    return f"<ul>{items}</ul>"
