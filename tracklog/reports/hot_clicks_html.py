"""The hot-clicks page: the delivery's stored HTML, sanitised, with a pill after every tracked
link giving its clicks and share of the delivery's clicks, coloured by heat; a standalone page.

The message HTML comes from a manifest, so it is untrusted: `sanitise` (nh3, the Ammonia
sanitiser) keeps layout markup and inline styles and drops scripts, event handlers, forms,
frames and any URL that is not http(s) or mailto; the page also carries a Content-Security-
Policy that allows no script and no network (inline styles and data: images only), so even a
sanitiser bug could neither run code nor tell anyone the page was opened.

A link is matched to the manifest by its tracked URL (/c/{delivery}/{link}/...) or by its
target URL. The open pixel is removed, so viewing the page never looks like an open.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Collection
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from tracklog import metrics, routes
from tracklog.engines import Connection
from tracklog.errors import DataError
from tracklog.reports.common import ALL_TIME, Window, fetch_all, fetch_one
from tracklog.result import Result

BADGE_CLASS = "tracklog-badge"

# No script, no network, no plugins, no form posts; inline styles (the message's and ours) and
# data: images only.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'

# What an email's layout needs: the sanitiser's default tags plus the old presentational ones,
# and inline styles and table attributes on every element.
_EXTRA_TAGS = {"font", "u", "big", "small"}
_GENERIC_ATTRIBUTES = {
    "style",
    "class",
    "align",
    "valign",
    "width",
    "height",
    "bgcolor",
    "border",
    "cellpadding",
    "cellspacing",
    "dir",
    "lang",
    "title",
    "color",
    "face",
    "size",
    "role",
}
_URL_SCHEMES = {"http", "https", "mailto"}

HEAT_COLD, HEAT_HOT = 210, 0  # hue of the coldest (fewest clicks) and hottest link

STYLE = f"""
<style>
.{BADGE_CLASS} {{ display: inline-block; margin: 0 0 0 4px; padding: 1px 6px; border-radius: 9px;
  font: bold 12px/16px system-ui, sans-serif; color: #fff; vertical-align: middle;
  white-space: nowrap; text-decoration: none; box-shadow: 0 0 0 1px rgba(0,0,0,.25); }}
.{BADGE_CLASS}.untracked {{ background: #757575; }}
.tracklog-header {{ font: 14px/1.5 system-ui, sans-serif; background: #263238; color: #fff;
  padding: 8px 12px; }}
.tracklog-legend {{ display: inline-flex; align-items: center; gap: 6px; margin-left: 12px; }}
.tracklog-ramp {{ display: inline-block; width: 120px; height: 10px; border-radius: 5px;
  background: linear-gradient(to right, hsl({HEAT_COLD}, 75%, 42%), hsl(105, 75%, 42%), hsl({HEAT_HOT}, 75%, 42%)); }}
</style>
"""


@dataclass(frozen=True)
class LinkFigures:
    link_id: str
    url: str
    clicks: int
    share: float


@dataclass(frozen=True)
class PageFacts:
    """What the header of the page says besides the links."""

    title: str
    clicks: int = 0
    period: str = ""  # e.g. "clicks from 2026-11-03T09:06:00Z to 2026-11-04T10:00:00Z"
    mirror_views: int = 0
    optout_clicks: int = 0


def sanitise(content: str) -> str:
    """The message HTML without anything active: see the module docstring."""
    import nh3

    attributes = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
    attributes["*"] = set(_GENERIC_ATTRIBUTES)
    return str(
        nh3.clean(
            content,
            tags=nh3.ALLOWED_TAGS | _EXTRA_TAGS,
            attributes=attributes,
            url_schemes=_URL_SCHEMES,
            clean_content_tags={"script", "style", "title"},
            strip_comments=True,
        )
    )


def annotate(
    content: str,
    delivery_id: str,
    rows: list[LinkFigures],
    title: str | PageFacts,
    traps: Collection[str] = (),
) -> str:
    """The standalone page: `content` sanitised with a pill after each <a> that points at one
    of `rows`, a grey pill after any other link, and none after the trap links (`traps`: their
    URLs), which nobody sees."""
    facts = title if isinstance(title, PageFacts) else PageFacts(title)
    body = annotated_body(content, delivery_id, rows, traps, facts)
    return page(facts.title, header_html(facts) + body)


def annotated_body(
    content: str,
    delivery_id: str,
    rows: list[LinkFigures],
    traps: Collection[str] = (),
    facts: PageFacts | None = None,
) -> str:
    """The sanitised message with its pills (no page around it)."""
    content = sanitise(content)
    facts = facts or PageFacts("")
    tracked = routes.click_link_re(delivery_id)
    by_id = {r.link_id: r for r in rows}
    by_url = {_norm(r.url): r for r in rows}
    hidden = {_norm(url) for url in traps}
    top = max((r.clicks for r in rows), default=0)
    finder = _AnchorFinder()
    finder.feed(content)
    finder.close()
    offsets = _line_offsets(content)
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), non-overlapping
    for anchor in finder.anchors:
        match = tracked.search(anchor.href)
        row = by_id.get(match.group(1)) if match else by_url.get(_norm(anchor.href))
        if row is None and _norm(anchor.href) in hidden:
            continue
        if row is not None:
            badge = _badge(row, top)
        elif match:
            continue  # a trap or unknown link of this delivery: never shown
        else:
            badge = _untracked_badge(anchor.href, delivery_id, facts)
        end = content.index(">", offsets[anchor.end[0] - 1] + anchor.end[1]) + 1
        edits.append((end, end, badge))
    for (line, col), tag in finder.pixels(delivery_id):
        start = offsets[line - 1] + col
        edits.append((start, start + len(tag), ""))
    out = content
    for start, end, text in sorted(edits, reverse=True):
        out = out[:start] + text + out[end:]
    return out


def _norm(url: str) -> str:
    return html.unescape(url).strip().rstrip("/")


def heat_colour(clicks: int, top: int) -> str:
    """The pill colour of a link with `clicks` when the most clicked link has `top`."""
    heat = clicks / top if top > 0 else 0.0
    return f"hsl({round(HEAT_COLD + (HEAT_HOT - HEAT_COLD) * heat)}, 75%, 42%)"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _badge(row: LinkFigures, top: int) -> str:
    return (
        f'<span class="{BADGE_CLASS}" data-link-id="{html.escape(row.link_id)}" '
        f'data-share="{row.share:.1f}" data-clicks="{row.clicks}" '
        f'style="background: {heat_colour(row.clicks, top)}">'
        f"{row.share:.1f}% · {_plural(row.clicks, 'click')}</span>"
    )


def _untracked_badge(href: str, delivery_id: str, facts: PageFacts) -> str:
    """Grey: the mirror page and opt-out routes (with their counts: not link clicks), or a
    plain link."""
    text, kind, count = "not tracked", "", ""
    if routes.delivery_prefix("mirror", delivery_id) in href:
        text, kind, count = (
            f"mirror page · {_plural(facts.mirror_views, 'view')}",
            "mirror",
            str(facts.mirror_views),
        )
    elif routes.delivery_prefix("unsubscribe", delivery_id) in href:
        text, kind, count = (
            f"opt-out · {_plural(facts.optout_clicks, 'click')}",
            "optout",
            str(facts.optout_clicks),
        )
    return (
        f'<span class="{BADGE_CLASS} untracked" data-link-id="" data-kind="{kind}" data-count="{count}" '
        f'title="{html.escape(href)}">{text}</span>'
    )


def header_html(facts: PageFacts) -> str:
    """The bar above the message: what it is, the period covered, and the colour legend."""
    period = f" · {html.escape(facts.period)}" if facts.period else ""
    return (
        f'<div class="tracklog-header">Hot clicks: {html.escape(facts.title)} · '
        f'<span data-field="clicks_total">{facts.clicks}</span> clicks{period}'
        '<span class="tracklog-legend">fewest clicks <span class="tracklog-ramp"></span> most clicks'
        f' <span class="{BADGE_CLASS} untracked">not a link click</span></span></div>'
    )


def page(title: str, body: str, extra_style: str = "") -> str:
    """A standalone page around `body`, with the Content-Security-Policy first in its head."""
    return (
        f'<!DOCTYPE html>\n<html><head>{CSP_META}<meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>{STYLE}{extra_style}</head>"
        f"<body>{body}</body></html>\n"
    )


def _line_offsets(text: str) -> list[int]:
    """Offset of each line's first character (HTMLParser counts lines by '\\n' only)."""
    offsets = [0]
    for line in text.split("\n")[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    return offsets


@dataclass
class _Anchor:
    href: str
    end: tuple[int, int] = (0, 0)  # (line, col) of the closing </a>


class _AnchorFinder(HTMLParser):
    """Collects <a href> elements with the position of their end tag, and <img> tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[_Anchor] = []
        self._open: list[_Anchor] = []
        self._imgs: list[tuple[tuple[int, int], str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self._open.append(_Anchor(href))
        elif tag == "img":
            self._imgs.append((self.getpos(), dict(attrs).get("src") or "", self.get_starttag_text() or ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open:
            anchor = self._open.pop()
            anchor.end = self.getpos()
            self.anchors.append(anchor)

    def pixels(self, delivery_id: str) -> list[tuple[tuple[int, int], str]]:
        marker = routes.delivery_prefix("open", delivery_id)
        return [(pos, text) for pos, src, text in self._imgs if marker in src]


def message_html(con: Connection, delivery_id: str) -> tuple[str, str]:
    """The delivery's label and stored HTML, or DataError when it has none."""
    row = fetch_one(con, "SELECT label, content_html FROM deliveries WHERE delivery_id = ?", [delivery_id])
    if row is None or not row[1]:
        raise DataError(
            f'delivery {delivery_id!r} has no HTML content (add "content" to its manifest and ingest it again)'
        )
    return str(row[0]), str(row[1])


def link_figures(table: Result) -> list[LinkFigures]:
    return [
        LinkFigures(str(r["link_id"]), str(r["url"]), int(r["clicks"]), float(r["share"]))
        for r in _rows(table)
    ]


def trap_urls(con: Connection, delivery_id: str) -> list[str]:
    traps = fetch_all(
        con,
        "SELECT url FROM links WHERE delivery_id = ? AND category = ?",
        [delivery_id, metrics.TRAP_CATEGORY],
    )
    return [str(t[0]) for t in traps]


def page_facts(
    con: Connection,
    delivery_id: str,
    label: str,
    clicks: int,
    window: Window = ALL_TIME,
    tz: dt.tzinfo | None = None,
) -> PageFacts:
    """The header's figures: the period the counted clicks cover, mirror views and opt-outs."""
    row = fetch_one(
        con,
        f"""SELECT min(e.ts) FILTER (WHERE e.type = 'click'), max(e.ts) FILTER (WHERE e.type = 'click'),
            {metrics.EVENT_COUNTS["mirror_views"]}, {metrics.EVENT_COUNTS["optout_clicks"]}
        FROM events e WHERE e.delivery_id = ? AND e.ts >= ? AND e.ts < ?""",
        [delivery_id, *window.params()],
    )
    first, last, mirror, optout = row if row is not None else (None, None, 0, 0)
    period = ""
    if first is not None:
        period = f"clicks from {_time(first, tz)} to {_time(last, tz)}"
    return PageFacts(f"{label} ({delivery_id})", clicks, period, int(mirror or 0), int(optout or 0))


def _time(value: dt.datetime, tz: dt.tzinfo | None) -> str:
    """As the tables show a time (render.cell_text; the core does not import the output layer)."""
    moment = value.replace(tzinfo=dt.UTC)
    if tz is None or tz is dt.UTC:
        return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    return moment.astimezone(tz).isoformat(timespec="seconds")


def hot_clicks_page(
    con: Connection,
    delivery_id: str,
    table: Result,
    window: Window = ALL_TIME,
    tz: dt.tzinfo | None = None,
) -> str:
    """The annotated page for `table` (the hot_clicks report of `delivery_id`)."""
    label, content = message_html(con, delivery_id)
    figures = link_figures(table)
    facts = page_facts(con, delivery_id, label, sum(f.clicks for f in figures), window, tz)
    return annotate(content, delivery_id, figures, facts, trap_urls(con, delivery_id))


def _rows(table: Result) -> list[dict[str, Any]]:
    return table.to_pylist()
