"""Fuzz target for the message-HTML sanitiser (issue 12): whatever a manifest's HTML holds, the
hot-clicks page and the dashboard carry no script, no event handler, no frame or form, and no
URL with a scheme other than http, https or mailto. Inline styles stay (email layout needs
them): the page's policy forbids loading anything they name. Run briefly with the suite (hypothesis);
`HYPOTHESIS_PROFILE=long` runs it for longer.
"""

from __future__ import annotations

import html
import os
import re
from html.parser import HTMLParser

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracklog.reports.hot_clicks_html import LinkFigures, annotate, sanitise

EXAMPLES = 20000 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 300

ACTIVE_TAGS = {
    "script",
    "iframe",
    "frame",
    "frameset",
    "object",
    "embed",
    "applet",
    "form",
    "input",
    "button",
    "textarea",
    "select",
    "base",
    "link",
    "meta",
    "svg",
    "math",
    "style",
    "template",
}
ALLOWED_SCHEMES = {"http", "https", "mailto"}
URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "background", "poster", "cite", "data"}

TAGS = [
    "a",
    "img",
    "p",
    "div",
    "span",
    "table",
    "td",
    "script",
    "iframe",
    "svg",
    "math",
    "style",
    "form",
    "object",
    "embed",
    "base",
    "meta",
    "body",
    "html",
    "head",
    "title",
    "template",
    "noscript",
    "textarea",
]
ATTRS = [
    "href",
    "src",
    "onerror",
    "onload",
    "onclick",
    "style",
    "srcdoc",
    "action",
    "formaction",
    "xlink:href",
    "background",
    "data",
    "class",
    "ONMOUSEOVER",
    "on",
    "http-equiv",
    "content",
]
VALUES = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "jav&#x09;ascript:alert(1)",
    "java\nscript:x",
    "&#106;avascript:x",
    " javascript:x",
    "data:text/html,<script>x</script>",
    "vbscript:x",
    "https://ok.example/",
    "https:javascript:x",
    "mailto:a@b.c",
    "/relative",
    "x",
    "alert(1)",
    "expression(alert(1))",
    "url(javascript:x)",
    '"><script>x</script>',
    "0;url=javascript:x",
]

fragment = st.one_of(
    st.builds(
        lambda tag, attrs, inner, close: (
            f"<{tag}"
            + "".join(f' {a}="{v}"' if q else f" {a}={v.replace(' ', '')}" for a, v, q in attrs)
            + f">{inner}"
            + (f"</{tag}>" if close else "")
        ),
        st.sampled_from(TAGS),
        st.lists(st.tuples(st.sampled_from(ATTRS), st.sampled_from(VALUES), st.booleans()), max_size=3),
        st.sampled_from(["", "text", "alert(1)", "<!--", "-->", "<![CDATA[", "]]>", "</script>"]),
        st.booleans(),
    ),
    st.sampled_from(["<", ">", "&", '"', "'", "<!--x-->", "<!DOCTYPE html>", "</", "<a", "=", "\x00"]),
    st.text(max_size=8),
)
documents = st.lists(fragment, max_size=12).map("".join)


class _Check(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ACTIVE_TAGS:
            self.problems.append(f"tag {tag}")
        for name, value in attrs:
            if name.startswith("on") or name in ("srcdoc", "formaction", "http-equiv"):
                self.problems.append(f"attribute {name}")
            if name in URL_ATTRS and value is not None:
                scheme = _scheme(value)
                if scheme is not None and scheme not in ALLOWED_SCHEMES:
                    self.problems.append(f"{name}={value!r}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def _scheme(url: str) -> str | None:
    """The scheme a browser would see: entities decoded, whitespace and controls removed."""
    cleaned = re.sub(r"[\x00-\x20]", "", html.unescape(url)).lower()
    match = re.match(r"^([a-z][a-z0-9+.\-]*):", cleaned)
    return match.group(1) if match else None


def _problems(page: str) -> list[str]:
    check = _Check()
    check.feed(page)
    check.close()
    return check.problems


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_sanitised_message_has_nothing_active(document: str) -> None:
    assert _problems(sanitise(document)) == []


@settings(max_examples=EXAMPLES // 3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.text(max_size=20))
def test_annotated_page_has_nothing_active_but_its_policy(document: str, title: str) -> None:
    page = annotate(document, "NL1", [LinkFigures("hero", "https://x.test/", 2, 100.0)], title)
    head, _, body = page.partition("</head>")
    assert head.count("<meta ") == 2  # the policy and the charset: nothing of the message
    assert _problems(body) == []


def test_the_checker_sees_what_it_must() -> None:
    """The check above can fail: it finds each kind of active content in raw HTML."""
    assert _problems('<a href="jav&#x09;ascript:x">a</a>') == ["href='jav\\tascript:x'"]
    assert _problems('<img src=x onerror="y">') == ["attribute onerror"]
    assert _problems("<script>x</script>") == ["tag script"]
    assert _problems('<a href="https://ok.example/">ok</a>') == []
