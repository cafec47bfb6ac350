"""The hot-clicks page: the delivery's stored HTML with a badge after every tracked link giving
its share of the delivery's clicks, coloured by heat; a standalone page for a browser.

A link is matched to the manifest by its tracked URL (/c/{delivery}/{link}/...) or by its
target URL. The open pixel is removed, so viewing the page never looks like an open.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pyarrow as pa

from tracklog import metrics, routes
from tracklog.engines import Connection
from tracklog.errors import DataError
from tracklog.reports.common import fetch_all, fetch_one

BADGE_CLASS = "tracklog-badge"

_STYLE = f"""
<style>
.{BADGE_CLASS} {{ display: inline-block; margin: 0 0 0 4px; padding: 1px 6px; border-radius: 9px;
  font: bold 12px/16px system-ui, sans-serif; color: #fff; vertical-align: middle;
  white-space: nowrap; text-decoration: none; box-shadow: 0 0 0 1px rgba(0,0,0,.25); }}
.{BADGE_CLASS}.untracked {{ background: #9e9e9e; }}
.tracklog-header {{ font: 14px/1.4 system-ui, sans-serif; background: #263238; color: #fff;
  padding: 8px 12px; }}
</style>
"""


@dataclass(frozen=True)
class LinkFigures:
    link_id: str
    url: str
    clicks: int
    share: float


def annotate(
    content: str, delivery_id: str, rows: list[LinkFigures], title: str, traps: Collection[str] = ()
) -> str:
    """`content` with a badge after each <a> that points at one of `rows`, a grey badge after
    any other link, and none after the trap links (`traps`: their URLs), which nobody sees."""
    tracked = routes.click_link_re(delivery_id)
    by_id = {r.link_id: r for r in rows}
    by_url = {_norm(r.url): r for r in rows}
    hidden = {_norm(url) for url in traps}
    top = max((r.share for r in rows), default=0.0)
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
            badge = _untracked_badge(anchor.href, delivery_id)
        end = content.index(">", offsets[anchor.end[0] - 1] + anchor.end[1]) + 1
        edits.append((end, end, badge))
    for (line, col), tag in finder.pixels(delivery_id):
        start = offsets[line - 1] + col
        edits.append((start, start + len(tag), ""))
    out = content
    for start, end, text in sorted(edits, reverse=True):
        out = out[:start] + text + out[end:]
    return _wrap(out, title)


def _norm(url: str) -> str:
    return html.unescape(url).strip().rstrip("/")


def _badge(row: LinkFigures, top: float) -> str:
    heat = row.share / top if top > 0 else 0.0
    hue = round(210 - 210 * heat)  # blue (cold) -> red (hot)
    return (
        f'<span class="{BADGE_CLASS}" data-link-id="{html.escape(row.link_id)}" '
        f'data-share="{row.share:.1f}" data-clicks="{row.clicks}" '
        f'style="background: hsl({hue}, 75%, 42%)" title="{row.clicks} click{"" if row.clicks == 1 else "s"}">{row.share:.1f}%</span>'
    )


def _untracked_badge(href: str, delivery_id: str) -> str:
    """Grey: the mirror page and unsubscribe routes (not link clicks), or a plain link."""
    kind = "not tracked"
    for route, name in (("mirror", "mirror page"), ("unsubscribe", "unsubscribe")):
        if routes.delivery_prefix(route, delivery_id) in href:
            kind = name
    return f'<span class="{BADGE_CLASS} untracked" data-link-id="" title="{html.escape(href)}">{kind}</span>'


def _wrap(body: str, title: str) -> str:
    header = f'<div class="tracklog-header">Hot clicks: {html.escape(title)}</div>'
    if re.search(r"<head[^>]*>", body, re.IGNORECASE):
        charset = "" if re.search(r"<meta[^>]+charset", body, re.IGNORECASE) else '<meta charset="utf-8">'
        body = re.sub(
            r"(<head[^>]*>)", lambda m: m.group(1) + charset + _STYLE, body, count=1, flags=re.IGNORECASE
        )
        if re.search(r"<body[^>]*>", body, re.IGNORECASE):
            return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + header, body, count=1, flags=re.IGNORECASE)
        return body
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>{_STYLE}</head>'
        f"<body>{header}{body}</body></html>\n"
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


def hot_clicks_page(con: Connection, delivery_id: str, table: pa.Table) -> str:
    """The annotated page for `table` (the hot_clicks report of `delivery_id`)."""
    row = fetch_one(con, "SELECT label, content_html FROM deliveries WHERE delivery_id = ?", [delivery_id])
    if row is None or not row[1]:
        raise DataError(
            f'delivery {delivery_id!r} has no HTML content (add "content" to its manifest and ingest it again)'
        )
    figures = [
        LinkFigures(str(r["link_id"]), str(r["url"]), int(r["clicks"]), float(r["share"]))
        for r in _rows(table)
    ]
    clicks = sum(f.clicks for f in figures)
    traps = fetch_all(
        con,
        "SELECT url FROM links WHERE delivery_id = ? AND category = ?",
        [delivery_id, metrics.TRAP_CATEGORY],
    )
    title = f"{row[0]} ({delivery_id}), {clicks} clicks"
    return annotate(str(row[1]), delivery_id, figures, title, [str(t[0]) for t in traps])


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()  # type: ignore[no-any-return]
