"""Readers' user agents as (browser, OS, device type), parsed with ua-parser (the maintained
uap-core database); each distinct string is parsed once per process (cached).

ua-parser names the device (iPhone, SM-G991B, Mac); the device *type* is derived here from the
parsed OS and device family, because ua-parser has no such field.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import ua_parser

UNKNOWN = "Other"
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "Tizen"})
_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "macOS", "Linux", "Ubuntu", "Chrome OS", "Fedora", "Debian", "FreeBSD", "OpenBSD"}
)
_TABLET_DEVICES = ("iPad", "Kindle", "Tablet", "Tab")


class Agent(NamedTuple):
    browser: str
    os: str
    device: str  # desktop | mobile | tablet | bot | other


@functools.lru_cache(maxsize=65536)
def parse_agent(user_agent: str | None) -> Agent:
    if not user_agent:
        return Agent(UNKNOWN, UNKNOWN, "other")
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
