"""Readers' user agents as (browser, OS, device type), parsed with ua-parser (the maintained
uap-core database); each distinct string is parsed once per process (cached).

ua-parser names the device (iPhone, SM-G991B, Mac); the device *type* is derived here from the
parsed OS and device family, because ua-parser has no such field.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # imported where used: reports read parsed agents, they do not parse any
    import pyarrow as pa

UNKNOWN = "Other"
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "Tizen"})
_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "macOS", "Linux", "Ubuntu", "Chrome OS", "Fedora", "Debian", "FreeBSD", "OpenBSD"}
)
_TABLET_DEVICES = ("iPad", "Kindle", "Tablet", "Tab")


def installed_version(distribution: str) -> str:
    """The installed version of `distribution`, or "none": from the name of its .dist-info
    directory, the first on sys.path (as importlib.metadata finds it); importlib.metadata,
    whose import alone costs every command about 15 ms, only where there is no such directory."""
    prefix = distribution.replace("-", "_").lower() + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info") and name.lower().startswith(prefix):
                return name[len(prefix) : -len(".dist-info")]
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "none"


def _parser_version() -> str:
    return ", ".join(
        f"{package} {installed_version(package)}" for package in ("ua-parser", "ua-parser-builtins")
    )


# Stored with the parsed user agents (metrics.refresh_derived): another version parses again.
PARSER_VERSION = _parser_version()


class Agent(NamedTuple):
    browser: str
    os: str
    device: str  # desktop | mobile | tablet | bot | other


@functools.lru_cache(maxsize=65536)
def parse_agent(user_agent: str | None) -> Agent:
    if not user_agent:
        return Agent(UNKNOWN, UNKNOWN, "other")
    import ua_parser

    result = ua_parser.parse(user_agent)
    browser = result.user_agent.family if result.user_agent else UNKNOWN
    os_family = result.os.family if result.os else UNKNOWN
    device_family = result.device.family if result.device else UNKNOWN
    return Agent(browser, os_family, device_type(os_family, device_family, user_agent))


def device_type(os_family: str, device_family: str, user_agent: str) -> str:
    if device_family == "Spider":
        return "bot"
    if any(marker in device_family for marker in _TABLET_DEVICES):
        return "tablet"
    if os_family == "Android" and "Mobile" not in user_agent:
        return "tablet"  # Android's own convention: tablets omit the Mobile token
    if os_family in _MOBILE_OS:
        return "mobile"
    if os_family in _DESKTOP_OS:
        return "desktop"
    return "other"


def agents_table(agents: list[str]) -> pa.Table:
    """Columns user_agent, browser, os, device: the given user agents parsed."""
    import pyarrow as pa

    parsed = [parse_agent(a) for a in agents]
    return pa.table(
        {
            "user_agent": pa.array(agents, pa.string()),
            "browser": pa.array([p.browser for p in parsed], pa.string()),
            "os": pa.array([p.os for p in parsed], pa.string()),
            "device": pa.array([p.device for p in parsed], pa.string()),
        }
    )
