"""The tracking server as pure nginx, generated from the manifests in the database: a `map` from
delivery/link to the target URL (the only file that changes with new manifests), the four
tracking locations of tracklog/routes.py, the `log_format` tracklog parses (recorded in the
database, so `tracklog ingest` uses it unasked), the userid cookie, and the mirror copies.

No signing secret goes into nginx: it redirects any click on a known link and logs it; tracklog
verifies the signature at ingest and counts nothing forged. Every value from a manifest is
escaped (or refused) here before it reaches nginx's syntax.
"""

from __future__ import annotations

import html
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tracklog import routes
from tracklog.duck import duckdb
from tracklog.errors import DataError, UsageError
from tracklog.store import LOG_FORMAT_KEY, set_meta

# The log_format the generated server writes: what the reports use (method in $request, the
# userid cookie got or just set, the time with milliseconds), nginx's default escaping (\xHH),
# which tracklog/ingest/formats.py decodes.
LOG_FORMAT_NAME = "tracklog"
LOG_FORMAT = (
    '$msec $remote_addr "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$uid_got" "$uid_set"'
)

HTTP_FILE = "tracklog-http.conf"  # http{} level: log_format, the map file, the $ escape
MAP_FILE = "tracklog-links.map"  # the only file a new manifest changes
LOCATIONS_FILE = "tracklog-locations.conf"  # the four locations, for any server{}
SERVER_FILE = "tracklog-server.conf"  # a complete server{} including the locations
MIRROR_DIR = "mirror"  # one rendered copy per delivery: mirror/{delivery}.html
UNSUBSCRIBE_PAGE = "unsubscribe.html"

_ID = f"[{routes.ID_CHARS}]{{1,{routes.ID_MAX}}}"
_DOLLAR = "tracklog_dollar"  # geo variable holding a literal "$" (nginx strings cannot escape it)
_URL_SCHEMES = ("http", "https", "mailto", "tel")
_HOSTNAME = re.compile(r"(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*")
_COOKIE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EXPIRES = re.compile(r"max|off|[0-9]{1,9}[smhdwMy]?")
_LISTEN = re.compile(r"(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}:|\[[0-9A-Fa-f:]+\]:|localhost:)?[0-9]{1,5}")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._~/@+=,-]*")  # absolute paths written into the config
# 1x1 transparent GIF: the open pixel of a mirror copy, so viewing it never counts an open
_BLANK_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
_NO_CACHE = 'add_header Cache-Control "no-store, no-cache, must-revalidate, max-age=0" always;'
# Mirror and unsubscribe pages are served from the tracking domain, which sets the userid cookie:
# no script may run there, whatever the message's HTML holds.
_PAGE_CSP = (
    "default-src 'none'; img-src * data:; style-src * 'unsafe-inline'; font-src * data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_DEFAULT_UNSUBSCRIBE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Unsubscribe</title></head>
<body style="font-family:sans-serif;max-width:36em;margin:3em auto">
<h1>Unsubscribe</h1>
<p>Do you want to stop receiving these emails?</p>
<form method="post"><button type="submit">Unsubscribe</button></form>
</body></html>
"""
_UNSUBSCRIBED = "<!DOCTYPE html><title>Unsubscribed</title><p>You are unsubscribed.</p>"
_OPTED_OUT = (
    "<!DOCTYPE html><title>Web tracking off</title><p>Web tracking is off for this browser. "
    "This does not unsubscribe you from our emails.</p>"
)
_OPTED_IN = "<!DOCTYPE html><title>Web tracking on</title><p>Web tracking is on again for this browser.</p>"


@dataclass(frozen=True)
class Settings:
    """What `tracklog nginx-config` was asked for; `check` validates every value that reaches
    the config (they come from a person, but go into nginx syntax all the same)."""

    server_name: str
    out: Path
    listen: str = "80"
    access_log: Path | None = None  # default /var/log/nginx/{server_name}/access.log
    mirror_upstream: str | None = None  # proxy the mirror page there instead of static copies
    unsubscribe_page: Path | None = None  # the HTML shown on GET /u/...; default a form that POSTs
    cookie_name: str = "uid"
    cookie_expires: str = "365d"
    cookie_domain: str | None = None

    def checked(self) -> Settings:
        if not _HOSTNAME.fullmatch(self.server_name) or len(self.server_name) > 253:
            raise UsageError(f"--server-name {self.server_name!r} is not a host name like t.example.com")
        if not _LISTEN.fullmatch(self.listen):
            raise UsageError(
                f"--listen {self.listen!r}: give PORT or ADDRESS:PORT, e.g. 80 or 127.0.0.1:8080"
            )
        if not _COOKIE_NAME.fullmatch(self.cookie_name):
            raise UsageError(f"--cookie-name {self.cookie_name!r}: use 1-64 of A-Z a-z 0-9 _ -")
        if not _EXPIRES.fullmatch(self.cookie_expires):
            raise UsageError(f"--cookie-expires {self.cookie_expires!r}: an nginx time like 365d, or max")
        if self.cookie_domain is not None and not _HOSTNAME.fullmatch(self.cookie_domain.removeprefix(".")):
            raise UsageError(f"--cookie-domain {self.cookie_domain!r} is not a domain like example.com")
        if self.mirror_upstream is not None:
            parts = urlsplit(self.mirror_upstream)
            if (
                parts.scheme not in ("http", "https")
                or not re.fullmatch(
                    r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:]+\](?::[0-9]{1,5})?", parts.netloc
                )
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
            ):
                raise UsageError(
                    f"--mirror-upstream {self.mirror_upstream!r}: give http(s)://HOST[:PORT] without a path "
                    "(nginx passes the request's own path, /m/{delivery}/{recipient}?s=...)"
                )
        out = self.out.resolve()
        log = (self.access_log or Path("/var/log/nginx") / self.server_name / "access.log").absolute()
        for what, path in (("--out", out), ("--access-log", log)):
            if not _SAFE_PATH.fullmatch(str(path)):
                raise UsageError(f"{what} {str(path)!r}: use a path of A-Z a-z 0-9 . _ ~ / @ + = , - only")
        return Settings(
            self.server_name,
            out,
            self.listen,
            log,
            self.mirror_upstream.rstrip("/") if self.mirror_upstream else None,
            self.unsubscribe_page,
            self.cookie_name,
            self.cookie_expires,
            self.cookie_domain,
        )


@dataclass
class Generated:
    """What a run wrote: each file and whether its content changed; links left out of the map."""

    files: list[tuple[Path, bool]] = field(default_factory=list)
    links: int = 0
    refused: list[str] = field(default_factory=list)


def generate(con: duckdb.DuckDBPyConnection, settings: Settings) -> Generated:
    """Write the configuration for `settings` from the manifests of `con` (a writer: the log
    format is recorded in the database for `tracklog ingest`). Files whose content is unchanged
    are not rewritten, so regenerating after a new manifest changes the map (and mirror copies)."""
    s = settings.checked()
    out = Generated()
    try:
        s.out.mkdir(parents=True, exist_ok=True)
        rows = con.execute(
            "SELECT delivery_id, link_id, url, coalesce(web_tracking, FALSE) FROM links"
            " ORDER BY delivery_id, position, link_id"
        ).fetchall()
        links = [(d, k, u) for d, k, u, _ in rows]
        web = {(d, k) for d, k, _, w in rows if w}
        map_text, out.links, out.refused = map_file(links, web)
        files = {
            MAP_FILE: map_text,
            HTTP_FILE: http_file(s),
            LOCATIONS_FILE: locations_file(s),
            SERVER_FILE: server_file(s),
            UNSUBSCRIBE_PAGE: _unsubscribe_page(s),
        }
        for name, text in files.items():
            out.files.append((s.out / name, write_atomic(s.out / name, text.encode("utf-8"))))
        if s.mirror_upstream is None:
            out.files.extend(write_mirror_pages(con, s.out / MIRROR_DIR))
    except OSError as exc:
        raise DataError(f"cannot write the nginx configuration in {s.out}: {exc.strerror or exc}") from exc
    set_meta(con, LOG_FORMAT_KEY, f"{LOG_FORMAT_NAME}\n{LOG_FORMAT}")
    return out


# -- nginx syntax ------------------------------------------------------------------------------


def nginx_url(url: str) -> str | None:
    """`url` as a double-quoted nginx string for a map value, or None when it must not be
    redirected to (a scheme other than http, https, mailto, tel).

    Every byte outside printable ASCII (controls, space, non-ASCII as UTF-8) is percent-encoded,
    as a browser would, so no raw newline ever reaches a Location header; then `\\` and `"` are
    escaped for nginx's lexer, and `$` (which nginx would read as a variable, and which no nginx
    string can escape) becomes the geo variable holding "$". Quotes, `;`, braces and `#` are
    plain text inside a quoted nginx string."""
    scheme = url.partition(":")[0].lower()
    if scheme not in _URL_SCHEMES or not url[len(scheme) + 1 :]:
        return None
    return f'"{_nginx_text(url)}"'


def _nginx_text(text: str) -> str:
    """`text` for the inside of a double-quoted nginx string (see nginx_url)."""
    encoded = "".join(
        chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass")
    )
    return encoded.replace("\\", "\\\\").replace('"', '\\"').replace("$", "${" + _DOLLAR + "}")


# Web tracking: a click on a web-tracking link carries the landing token (?s=SIG&tl=TOKEN, from
# `tracklog link`); nginx copies it, when shaped like one and the browser has not opted out,
# into the redirect, as "?tl=", "&tl=" or "tl=" (routes.landing_affixes) before the fragment.
_TOKEN_RE = f"[0-9]{{1,3}}\\.[{routes.ID_CHARS}]{{24,300}}"
_TL_SEPARATORS = {"?": "tracklog_tl_q", "&": "tracklog_tl_amp", "": "tracklog_tl"}
_OPTOUT_MAX_AGE = 10 * 365 * 24 * 3600  # the opt-out cookie lasts ten years


def landing_value(url: str) -> str | None:
    """The map value of a web-tracking link: its URL with the token variable in its query."""
    if nginx_url(url) is None:
        return None
    base, separator, fragment = routes.landing_affixes(url)
    return f'"{_nginx_text(base)}${{{_TL_SEPARATORS[separator]}}}{_nginx_text(fragment)}"'


def _map_key(delivery: str, link: str) -> str:
    # a key starting with "~" would be a regex; a leading "\" makes it literal (nginx strips it)
    key = f"{delivery}/{link}"
    return f'"\\{key}"' if key.startswith("~") else f'"{key}"'


def _map_regex(delivery: str, link: str) -> str:
    """A case-sensitive regex key matching exactly delivery/link (ids hold no regex syntax but '.')."""
    return '"~^' + f"{delivery}/{link}".replace(".", "\\.") + '$"'


def map_file(
    links: list[tuple[str, str, str]], web: set[tuple[str, str]] | None = None
) -> tuple[str, int, list[str]]:
    """The map file from (delivery_id, link_id, url) rows: (text, links mapped, refusals); the
    (delivery_id, link_id) in `web` redirect with the landing token (landing_value).

    nginx compares map strings case-insensitively, and tracklog ids are case-sensitive: ids that
    differ only in case get exact regex keys instead (a plain key for both would not load), and
    a second map gives back the key exactly as written, which the click location compares."""
    by_lower: dict[str, int] = {}
    for delivery, link, _ in links:
        lower = f"{delivery}/{link}".lower()
        by_lower[lower] = by_lower.get(lower, 0) + 1
    urls: list[str] = []
    keys: list[str] = []
    regex_urls: list[str] = []
    regex_keys: list[str] = []
    refused: list[str] = []
    longest = 0
    for delivery, link, url in links:
        if routes.id_problem(delivery) or routes.id_problem(link):
            refused.append(f"delivery {delivery!r} link {link!r}: invalid id")
            continue
        value = landing_value(url) if web and (delivery, link) in web else nginx_url(url)
        if value is None:
            refused.append(f"delivery {delivery} link {link}: URL scheme is not http, https, mailto or tel")
            continue
        exact = f'"{delivery}/{link}"'
        if by_lower[f"{delivery}/{link}".lower()] > 1:
            key = _map_regex(delivery, link)
            regex_urls.append(f"    {key} {value};")
            regex_keys.append(f"    {key} {exact};")
        else:
            key = _map_key(delivery, link)
            urls.append(f"    {key} {value};")
            keys.append(f"    {key} {exact};")
        longest = max(longest, len(delivery) + 1 + len(link))
    mapped = len(urls) + len(regex_urls)
    # every key must fit a bucket (nginx: pointer + key aligned to 8, plus a pointer), and the
    # table may grow with the links: too small and nginx -t refuses the map
    bucket = 64
    while bucket < 8 + ((longest + 2 + 7) // 8) * 8 + 8:
        bucket *= 2
    max_size = 2048
    while max_size < 4 * mapped:
        max_size *= 2
    source = '"$tracklog_delivery/$tracklog_link"'
    text = "\n".join(
        [
            "# Generated by `tracklog nginx-config` from the manifests in the database: do not edit,",
            "# regenerate after ingesting a manifest, then `nginx -t && nginx -s reload`.",
            f"# {mapped} link(s). A click on delivery/link answers 302 to the link's URL; any other, 404.",
            f"map_hash_bucket_size {bucket};",
            f"map_hash_max_size {max_size};",
            "",
            f"map {source} $tracklog_click_url {{",
            '    default "";',
            *urls,
            *regex_urls,
            "}",
            "",
            "# the key as the manifest spells it: nginx matched it ignoring case, tracklog ids do not",
            f"map {source} $tracklog_click_key {{",
            '    default "";',
            *keys,
            *regex_keys,
            "}",
            "",
        ]
    )
    return text, mapped, refused


def http_file(s: Settings) -> str:
    return "\n".join(
        [
            "# Generated by `tracklog nginx-config`: include it in the http {} block, once.",
            "# The log format tracklog parses (recorded in its database, so `tracklog ingest` uses it).",
            f"log_format {LOG_FORMAT_NAME} '{LOG_FORMAT}';",
            "",
            '# a literal "$" for the map values (nginx strings have no escape for it)',
            f'geo ${_DOLLAR} {{ default "$"; }}',
            "",
            f"include {s.out / MAP_FILE};",
            "",
            "# web tracking: the landing token of a click (?tl=), unless the browser opted out",
            *(
                line
                for variable, prefix in (
                    ("tracklog_tl_q", "?"),
                    ("tracklog_tl_amp", "&"),
                    ("tracklog_tl", ""),
                )
                for line in (
                    f'map "$cookie_{routes.OPTOUT_COOKIE}|$arg_{routes.TOKEN_PARAM}" ${variable} {{',
                    '    default "";',
                    f'    "~^(?!1\\|)[^|]*\\|(?<tracklog_token>{_TOKEN_RE})$" "{prefix}{routes.TOKEN_PARAM}=$tracklog_token";',
                    "}",
                )
            ),
            "# page tags of an opted-out browser are not logged at all",
            f"map $cookie_{routes.OPTOUT_COOKIE} $tracklog_log_web {{",
            "    default 1;",
            '    "1" 0;',
            "}",
            "",
        ]
    )


def _common(s: Settings) -> list[str]:
    """The lines every tracking location carries: its access log and the browser cookie."""
    lines = [
        f"access_log {s.access_log} {LOG_FORMAT_NAME};",
        "userid on;",
        f"userid_name {s.cookie_name};",
        f"userid_expires {s.cookie_expires};",
        "userid_path /;",
        "userid_flags httponly samesite=lax;",
    ]
    if s.cookie_domain:
        lines.append(f"userid_domain {s.cookie_domain};")
    return lines


def _location(
    pattern: str, body: list[str], s: Settings, comment: str, log_if: str | None = None
) -> list[str]:
    common = _common(s)
    if log_if is not None:
        common[0] = common[0].removesuffix(";") + f" if={log_if};"
    return [
        f"# {comment}",
        f'location ~ "^{pattern}$" {{',
        *(f"    {b}" for b in [*common, *body]),
        "}",
        "",
    ]


def _exact_location(path: str, body: list[str], comment: str) -> list[str]:
    return [
        f"# {comment}",
        f"location = {path} {{",
        "    access_log off;",
        *(f"    {b}" for b in body),
        "}",
        "",
    ]


def locations_file(s: Settings) -> str:
    """The tracking locations, exactly tracklog/routes.py's shapes, and the web-tracking opt-out (ids: 1-128 characters of
    [A-Za-z0-9._~-]); include it in the server {} of the tracking domain."""
    page_headers = [
        _NO_CACHE,
        f'add_header Content-Security-Policy "{_PAGE_CSP}" always;',
        'add_header X-Content-Type-Options "nosniff" always;',
        "default_type text/html;",
        "charset utf-8;",
    ]
    if s.mirror_upstream is None:
        mirror = [*page_headers, f"root {s.out / MIRROR_DIR};", "try_files /$tracklog_mirror.html =404;"]
    else:
        mirror = [_NO_CACHE, f"proxy_pass {s.mirror_upstream};"]
    text = [
        f"# Generated by `tracklog nginx-config` for {s.server_name}: include it in that server {{}} block.",
        "# No signature is checked here (the secret stays with tracklog): tracklog verifies ?s= at ingest.",
        "",
        *_location(
            f"/o/{_ID}/{_ID}\\.gif",
            [
                "empty_gif;",
                _NO_CACHE,
                'add_header Pragma "no-cache" always;',
                'add_header Expires "Thu, 01 Jan 1970 00:00:00 GMT" always;',
            ],
            s,
            "open pixel: the 43-byte transparent GIF, never cached",
        ),
        *_location(
            f"/c/(?<tracklog_delivery>{_ID})/(?<tracklog_link>{_ID})/{_ID}",
            [
                _NO_CACHE,
                'if ($tracklog_click_key != "$tracklog_delivery/$tracklog_link") { return 404; }',
                "return 302 $tracklog_click_url;",
            ],
            s,
            "click: 302 to the link's URL from the map; an unknown delivery or link is 404 (no open redirect)",
        ),
        *_location(
            f"/m/(?<tracklog_mirror>{_ID})/{_ID}",
            mirror,
            s,
            "mirror page: "
            + ("proxied" if s.mirror_upstream else "the delivery's copy, mirror/{delivery}.html"),
        ),
        *_location(
            f"/{routes.PAGE_LETTER}/{_ID}\\.gif",
            [
                "empty_gif;",
                _NO_CACHE,
                'add_header Pragma "no-cache" always;',
                'add_header Expires "Thu, 01 Jan 1970 00:00:00 GMT" always;',
            ],
            s,
            "page tag of the site (web tracking): the GIF; not logged when the browser opted out",
            log_if="$tracklog_log_web",
        ),
        *_exact_location(
            f"/{routes.PAGE_LETTER}/optout",
            [
                *page_headers,
                f'add_header Set-Cookie "{routes.OPTOUT_COOKIE}=1; Max-Age={_OPTOUT_MAX_AGE}; Path=/; SameSite=Lax" always;',
                f"return 200 '{_OPTED_OUT}';",
            ],
            "web-tracking opt-out: a long-lived cookie; nothing is logged",
        ),
        *_exact_location(
            f"/{routes.PAGE_LETTER}/optin",
            [
                *page_headers,
                f'add_header Set-Cookie "{routes.OPTOUT_COOKIE}=; Max-Age=0; Path=/; SameSite=Lax" always;',
                f"return 200 '{_OPTED_IN}';",
            ],
            "web-tracking opt-in: the opt-out cookie removed; nothing is logged",
        ),
        *_location(
            f"/u/{_ID}/{_ID}",
            [
                *page_headers,
                f"if ($request_method = POST) {{ return 200 '{_UNSUBSCRIBED}'; }}",
                f"root {s.out};",
                f"try_files /{UNSUBSCRIBE_PAGE} =404;",
            ],
            s,
            "unsubscribe: GET shows the page (opt-out link followed), POST is RFC 8058 one-click: 200, no redirect",
        ),
    ]
    return "\n".join(text)


def server_file(s: Settings) -> str:
    return "\n".join(
        [
            "# Generated by `tracklog nginx-config`: the tracking domain's server, in the http {} block",
            f"# after {HTTP_FILE}. Behind TLS, change listen (e.g. `listen 443 ssl;` and certificates).",
            "server {",
            f"    listen {s.listen};",
            f"    server_name {s.server_name};",
            f"    access_log {s.access_log} {LOG_FORMAT_NAME};",
            "    location / { return 404; }",
            f"    include {s.out / LOCATIONS_FILE};",
            "}",
            "",
        ]
    )


def _unsubscribe_page(s: Settings) -> str:
    if s.unsubscribe_page is None:
        return _DEFAULT_UNSUBSCRIBE
    try:
        return s.unsubscribe_page.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--unsubscribe-page {s.unsubscribe_page}: cannot read it as UTF-8 ({exc})") from exc


# -- mirror copies -----------------------------------------------------------------------------


def write_mirror_pages(con: duckdb.DuckDBPyConnection, folder: Path) -> list[tuple[Path, bool]]:
    """mirror/{delivery}.html for every delivery with HTML content (ids are safe file names:
    no '/', and nginx serves only {id}.html inside the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    deliveries = con.execute(
        "SELECT delivery_id, content_html FROM deliveries WHERE content_html IS NOT NULL ORDER BY delivery_id"
    ).fetchall()
    for delivery, content in deliveries:
        links = dict(
            con.execute("SELECT link_id, url FROM links WHERE delivery_id = ?", [delivery]).fetchall()
        )
        path = folder / f"{delivery}.html"
        written.append((path, write_atomic(path, mirror_page(str(content), str(delivery), links).encode())))
    return written


def mirror_page(content: str, delivery: str, links: dict[str, str]) -> str:
    """The one function that turns a message's stored HTML into its mirror copy.

    The copy is the same for every recipient, so the tracked URLs it holds (those of whoever the
    HTML was rendered for) must not count for anyone: a click URL becomes its link's target, the
    open pixel a blank image, the mirror and unsubscribe URLs '#'. Served with a CSP that runs no
    script (see locations_file)."""
    prefix = re.compile(
        r"(?:https?:)?//[^/\s\"'<>]+(/(?:"
        + "|".join(r.letter for r in routes.ROUTES)
        + ")/"
        + re.escape(delivery)
        + r"/[^\s\"'<>?#]*)(?:[?#][^\s\"'<>]*)?"
    )

    def replace(match: re.Match[str]) -> str:
        tracked = routes.parse_path(match.group(1))
        if tracked is not None and tracked.kind == "click" and tracked.link_id in links:
            return html.escape(links[tracked.link_id], quote=True)
        if tracked is not None and tracked.kind == "open":
            return _BLANK_GIF
        return "#"

    return prefix.sub(replace, content)


# -- files -------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> bool:
    """Write `path` so nginx never reads half a file: a temporary file in the same folder,
    fsynced, renamed over it, the folder fsynced. False (and nothing written) when unchanged."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # nginx's workers read it as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True
