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
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tracklog.cli import cli
from tracklog.reports.hot_clicks_html import LinkFigures, annotate

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
    probed = tmp_path / "probed.html"
    probed.write_text(
        page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8"
    )
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
    assert {link["badge"] for link in links if link["link"] == "hero"} == {"42.8%"}
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
