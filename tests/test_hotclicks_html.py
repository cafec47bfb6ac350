"""The hot-clicks HTML page in a real headless Chromium: it renders, every visible link carries
its badge, hidden (trap) links carry none, and the shares of the tracked links add up to 100%.

Skipped only when Chromium is missing outside CI; with CI set it must run.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tracklog.cli import cli
from tracklog.reports.hot_clicks_html import CSP_META, LinkFigures, annotate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Chromium is not installed (apt-get install chromium); required when CI is set",
)

# Test instrumentation appended to a copy of the page: after layout, list every link with its
# visibility and the badge that follows it.
_PROBE = """
<script>
window.addEventListener('load', () => {
  const out = [];
  for (const a of document.querySelectorAll('a[href]')) {
    const r = a.getBoundingClientRect();
    const visible = r.width > 0 && r.height > 0 && getComputedStyle(a).visibility !== 'hidden';
    const b = a.nextElementSibling;
    const badge = b && b.classList.contains('tracklog-badge') ? b : null;
    const br = badge ? badge.getBoundingClientRect() : null;
    out.push({href: a.getAttribute('href'), visible: visible,
              badge: badge ? badge.textContent : null,
              badgeVisible: !!br && br.width > 0 && br.height > 0,
              link: badge ? badge.dataset.linkId : null,
              share: badge && badge.dataset.share ? parseFloat(badge.dataset.share) : null});
  }
  const pre = document.createElement('pre');
  pre.id = 'tracklog-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None, "CI is set but Chromium is missing: install it (apt-get install chromium)"
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def probe(tmp_path: Path, page: Path) -> list[dict[str, Any]]:
    """The links of `page` as laid out; the probe is a script, so this copy goes without the
    page's Content-Security-Policy (which would block it: see test_csp_blocks_any_script)."""
    probed = tmp_path / "probed.html"
    text = page.read_text(encoding="utf-8").replace(CSP_META, "")
    probed.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", probed.as_uri()).stdout
    match = re.search(r'<pre id="tracklog-probe">(.*?)</pre>', dom, re.DOTALL)
    assert match, f"the page did not finish rendering: {dom[:500]}"
    return json.loads(html.unescape(match.group(1)))  # type: ignore[no-any-return]


def write_page(tracking_db: Path, tmp_path: Path) -> Path:
    page = tmp_path / "hot.html"
    env = {"TRACKLOG_CONFIG": "", "TRACKLOG_DB": ""}
    result = CliRunner().invoke(
        cli,
        ["--db", str(tracking_db), "report", "hot-clicks", "--delivery", "NL1", "--html", str(page)],
        env=env,
    )
    assert result.exit_code == 0, result.stderr
    return page


def test_page_renders_with_a_badge_on_every_visible_link(tracking_db: Path, tmp_path: Path) -> None:
    links = probe(tmp_path, write_page(tracking_db, tmp_path))
    visible = [link for link in links if link["visible"]]
    assert len(visible) == 6
    for link in visible:
        assert link["badge"] and link["badgeVisible"], link
    hidden = [link for link in links if not link["visible"]]
    assert [link["href"] for link in hidden] == [
        "https://t.example.com/c/NL1/trap/r000000",  # by tracked URL
        "https://t.example.com/x",  # by target URL
    ]
    assert all(link["badge"] is None for link in hidden)
    shares = {link["link"]: link["share"] for link in links if link["link"]}
    assert set(shares) == {"hero", "shoes", "blog"}
    assert sum(round(s * 10) for s in shares.values()) == 1000
    # hero 3 of the 7 human clicks (shoes 2, blog 2): 42.8% after largest-remainder rounding
    # (shoes and blog, 28.57% each, take the two missing tenths)
    assert {link["badge"] for link in links if link["link"] == "hero"} == {"42.8% · 3 clicks"}
    assert "/o/NL1/" not in (tmp_path / "hot.html").read_text()  # viewing it is not an open


def test_page_screenshot(tracking_db: Path, tmp_path: Path) -> None:
    shot = tmp_path / "hot.png"
    chromium(
        tmp_path, "--window-size=900,600", f"--screenshot={shot}", write_page(tracking_db, tmp_path).as_uri()
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


def test_annotate_matches_by_tracked_and_target_url_without_a_browser() -> None:
    content = (
        '<p><a href="https://t.example.com/c/D1/a/R?s=1">A</a> <a href="https://x.test/b/">B</a>'
        ' <a href="https://x.test/other">C</a></p>'
    )
    rows = [LinkFigures("a", "https://x.test/a", 1, 33.3), LinkFigures("b", "https://x.test/b", 2, 66.7)]
    page = annotate(content, "D1", rows, "T")
    assert re.findall(r'data-link-id="(\w*)"', page) == ["a", "b", ""]
    assert page.startswith("<!DOCTYPE html>") and "not tracked" in page


# -- untrusted message HTML (issue 12, repro 5) -----------------------------------------------

PWN = "document.body.setAttribute('data-pwned', '1')"
HOSTILE_HTML = f"""<!DOCTYPE html><html><head><title>x</title>
<script>{PWN}</script><meta http-equiv="refresh" content="0;url=https://evil.example/"></head>
<body onload="{PWN}">
<p><a href="https://t.example.com/c/NL1/hero/r000000?s=abc">Hero</a></p>
<img src="x" onerror="{PWN}">
<svg><script>{PWN}</script></svg><svg onload="{PWN}"></svg>
<a href="javascript:{PWN}">js</a> <a href="https:javascript:{PWN}">js2</a>
<iframe srcdoc="<script>parent.{PWN}</script>"></iframe>
<form action="https://evil.example/"><input name="q"></form>
<div style="background:url(https://evil.example/beacon.gif)">styled</div>
</body></html>"""


def dump_dom(tmp_path: Path, page: Path) -> str:
    return chromium(tmp_path, "--dump-dom", page.as_uri()).stdout


def test_message_scripts_and_event_handlers_do_not_run(tmp_path: Path) -> None:
    page = tmp_path / "hostile.html"
    page.write_text(annotate(HOSTILE_HTML, "NL1", [LinkFigures("hero", "https://x.test/", 1, 100.0)], "T"))
    dom = dump_dom(tmp_path, page)
    assert "data-pwned" not in dom and "<script" not in dom and "onerror" not in dom and "onload" not in dom
    assert "javascript:" not in page.read_text() and "<iframe" not in dom and "<form" not in dom
    assert 'data-link-id="hero"' in dom  # the page itself still works
    # The control: the same message as it was written before (no sanitiser, no policy) runs them.
    raw = tmp_path / "raw.html"
    raw.write_text(HOSTILE_HTML.replace("<meta http-equiv", "<meta name"))
    assert 'data-pwned="1"' in dump_dom(tmp_path, raw)


def test_the_content_security_policy_blocks_any_script(tracking_db: Path, tmp_path: Path) -> None:
    """Defence in depth: a script that got past the sanitiser would still not run."""
    text = write_page(tracking_db, tmp_path).read_text(encoding="utf-8")
    assert text.index(CSP_META) < text.index("<title>")  # the policy comes first in the head
    injected = f'<script>{PWN}</script><img src=x onerror="{PWN}"></body>'
    with_csp = tmp_path / "with_csp.html"
    with_csp.write_text(text.replace("</body>", injected))
    assert 'data-pwned="1"' not in dump_dom(tmp_path, with_csp)  # the body was not changed
    without = tmp_path / "without_csp.html"
    without.write_text(text.replace(CSP_META, "").replace("</body>", injected))
    assert 'data-pwned="1"' in dump_dom(tmp_path, without)


def test_hot_clicks_page_has_legend_period_counts_and_route_pills(
    tracking_db: Path, tmp_path: Path, model: Any
) -> None:
    dom = dump_dom(tmp_path, write_page(tracking_db, tmp_path))
    ind = model.indicators("NL1")
    assert "fewest clicks" in dom and "most clicks" in dom and "tracklog-ramp" in dom  # the legend
    # the period: the first and last counted click of NL1, by the model
    clicks = sorted(h.ts for h in model.events("NL1") if h.kind == "click")
    assert f"clicks from {clicks[0].isoformat()}Z to {clicks[-1].isoformat()}Z" in dom
    assert f'<span data-field="clicks_total">{ind["clicks_total"]}</span> clicks' in dom
    assert "42.8% · 3 clicks" in dom  # absolute counts are visible, not only in a tooltip
    assert re.search(
        rf'data-kind="mirror" data-count="{ind["mirror_views"]}"[^>]*>mirror page · 1 view<', dom
    )
    assert re.search(rf'data-kind="optout" data-count="{ind["optout_clicks"]}"[^>]*>opt-out · 1 click<', dom)


# -- the delivery dashboard -------------------------------------------------------------------


class _Figures(HTMLParser):
    """Every element's data-* attribute with the element's text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[dict[str, str], str]] = []
        self._stack: list[tuple[dict[str, str], list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        data = {k: v or "" for k, v in attrs if k.startswith("data-")}
        if tag in ("br", "img", "meta", "line", "input"):
            if data:
                self.found.append((data, ""))
            return
        self._stack.append((data, []))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("br", "img", "meta", "line", "input") or not self._stack:
            return
        data, text = self._stack.pop()
        joined = "".join(text)
        if self._stack:
            self._stack[-1][1].append(joined)
        if data:
            self.found.append((data, joined.strip()))

    def handle_data(self, data: str) -> None:
        if self._stack:
            self._stack[-1][1].append(data)

    def values(self, attr: str) -> dict[str, str]:
        return {d[attr]: text for d, text in self.found if attr in d}


def _cli_json(db: Path, *args: str) -> Any:
    result = CliRunner().invoke(
        cli, ["--db", str(db), *args, "--format", "json"], env={"TRACKLOG_CONFIG": "", "TRACKLOG_DB": ""}
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_delivery_dashboard_renders_the_reports_figures(
    tracking_db: Path, tmp_path: Path, model: Any
) -> None:
    page = tmp_path / "dashboard.html"
    result = CliRunner().invoke(
        cli,
        ["--db", str(tracking_db), "report", "delivery", "NL1", "--html", str(page)],
        env={"TRACKLOG_CONFIG": "", "TRACKLOG_DB": ""},
    )
    assert result.exit_code == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    # self-contained: no script, nothing loaded from anywhere, the policy forbids it anyway
    assert "<script" not in text and "<link" not in text and not re.search(r'\ssrc="(?!data:)', text)
    assert CSP_META in text
    dom = dump_dom(tmp_path, page)
    figures = _Figures()
    figures.feed(dom)

    # indicators: the JSON report's, and the independent model's
    report = _cli_json(tracking_db, "report", "delivery", "NL1")
    expected = model.indicators("NL1")
    shown = figures.values("data-field")
    for name in (
        "sent",
        "delivered",
        "opens_unique",
        "opens_total",
        "clicks_unique",
        "clicks_total",
        "open_rate",
        "click_rate",
        "raw_reactivity",
        "mirror_views",
        "optout_clicks",
        "unsubscribes",
    ):
        value = report[name]
        as_text = f"{value:.1f}" if isinstance(value, float) else str(value)
        assert shown[name] == as_text, name
        assert value == expected[name], name

    # the funnel: sent -> delivered -> opened -> clicked
    assert figures.values("data-funnel") == {
        "sent": str(expected["sent"]),
        "delivered": str(expected["delivered"]),
        "opened": str(expected["opens_unique"]),
        "clicked": str(expected["clicks_unique"]),
    }

    # the timeline: the bars are the stats report's buckets, and add up to the model's counts
    stats = _cli_json(tracking_db, "report", "stats", "--delivery", "NL1")
    bars = {
        (d["data-bucket"], d["data-series"]): int(d["data-value"])
        for d, _ in figures.found
        if "data-series" in d
    }
    assert bars == {(b["bucket"], s): b[s] for b in stats["buckets"] for s in ("opens", "clicks")}
    assert sum(v for (_, s), v in bars.items() if s == "opens") == expected["opens_total"]
    assert sum(v for (_, s), v in bars.items() if s == "clicks") == expected["clicks_total"]

    # hot clicks: every link's clicks as the model counts them
    rows, _total = model.hot_clicks("NL1")
    pills = {d["data-link-id"]: int(d["data-clicks"]) for d, _ in figures.found if d.get("data-clicks")}
    assert pills == {r["link_id"]: r["clicks"] for r in rows if r["clicks"]}

    # top domains: the domain report's rows
    domains = _cli_json(tracking_db, "report", "stats", "--by", "domain", "--delivery", "NL1")
    cells = [d for d, _ in figures.found if d.get("data-col") == "domain"]
    assert len(cells) == len(domains)
    shown_domains = [text for d, text in figures.found if d.get("data-col") == "domain"]
    assert shown_domains == [r["domain"] or "" for r in domains]

    # not counted: rejected and failed from the model, orphans of NL1 (r99 and the gone link)
    excluded = figures.values("data-excluded")
    assert excluded["rejected_hits"] == str(expected["rejected_hits"])
    assert excluded["failed_hits"] == str(expected["failed_hits"])
    assert excluded["orphan_hits"] == str(sum(1 for h in model.orphans() if h.delivery == "NL1"))


def test_delivery_dashboard_screenshot(tracking_db: Path, tmp_path: Path) -> None:
    """For a person to look at: tests/out/dashboard.png (ignored by git)."""
    page = tmp_path / "dashboard.html"
    result = CliRunner().invoke(
        cli,
        ["--db", str(tracking_db), "report", "delivery", "NL1", "--html", str(page)],
        env={"TRACKLOG_CONFIG": "", "TRACKLOG_DB": ""},
    )
    assert result.exit_code == 0, result.stderr
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    shot = out / "dashboard.png"
    chromium(tmp_path, "--window-size=1200,1800", f"--screenshot={shot}", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000
    print(f"dashboard screenshot: {shot}")


def test_the_page_fetches_nothing_the_message_names(tmp_path: Path) -> None:
    """Images and CSS backgrounds of the message would tell a server the page was opened: a real
    local HTTP server counts the requests Chromium makes for the page (none) and for the same
    message written raw (some: the control)."""
    import http.server
    import threading

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    message = (
        f'<p><img src="{base}/img.png" alt="product"></p>'
        f'<div style="background:url({base}/bg.png);height:20px">styled</div>'
        f'<p><a href="{base}/link">a link, not followed</a></p>'
    )
    try:
        page = tmp_path / "beacon.html"
        page.write_text(annotate(message, "NL1", [], "T"))
        dump_dom(tmp_path, page)
        assert seen == []
        raw = tmp_path / "beacon-raw.html"
        raw.write_text(f"<!DOCTYPE html><html><body>{message}</body></html>")
        dump_dom(tmp_path, raw)
        assert "/img.png" in seen
    finally:
        server.shutdown()
