"""Settings in one place: command-line flags > TRACKLOG_* environment > tracklog.toml > defaults.

The config file is TOML. Paths inside it (db, secret_file) are relative to the file itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracklog.errors import ConfigError, UsageError

DEFAULT_DB = "tracklog.duckdb"
DEFAULT_CONFIG = "tracklog.toml"
DEFAULT_WAIT_SECONDS = 60.0
DEFAULT_MAX_BAD_RATIO = 0.5
# hits this many days before a delivery's sent_at, or after, are "clock" (not counted)
DEFAULT_CLOCK_WINDOW_DAYS = (1, 400)
MAX_SECRETS = 16  # keys valid at once (the compiled pass tries them in order)


@dataclass(frozen=True)
class SigningKey:
    """One signing secret and its id (the id names it in messages and the README's rotation)."""

    key_id: str
    secret: bytes


_KNOWN_KEYS = {
    "db",
    "secret",
    "secret_file",
    "secrets",
    "clock_window_days",
    "verify_signatures",
    "log_format",
    "log_formats",
    "max_bad_ratio",
    "wait",
    "tz",
    "exclude",
    "truncate_ips",
    "classify",
}


@dataclass(frozen=True)
class ClassifySettings:
    """The classifier's signals and thresholds (the [classify] table of tracklog.toml; README
    "Machine opens and bot clicks"). Stored in the database by ingest and `tracklog reclassify`."""

    mpp_agents: tuple[str, ...] = ("Mozilla/5.0",)  # an open with exactly this agent: Apple MPP
    proxy_ranges: bool = True  # an open from the proxy_ranges networks: Apple MPP
    image_proxy_agents: tuple[str, ...] = ("GoogleImageProxy", "YahooMailProxy", "OutlookImageProxy")
    head: bool = True  # a HEAD request is a machine
    bot_agents: bool = True  # agents of the crawler-user-agents list (and ua-parser's spiders)
    extra_bot_agents: tuple[str, ...] = ("(?i)scanner",)  # more agent regexps (Python syntax)
    trap_window: float = 10.0  # seconds either side of a trap click
    burst_links: int = 3  # distinct links ...
    burst_window: float = 2.0  # ... clicked within this many seconds
    fast_seconds: float = 5.0  # a click this soon after sent_at with no open before it

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


_CLASSIFY_TYPES: dict[str, type | tuple[type, ...]] = {
    "mpp_agents": list,
    "proxy_ranges": bool,
    "image_proxy_agents": list,
    "head": bool,
    "bot_agents": bool,
    "extra_bot_agents": list,
    "trap_window": (int, float),
    "burst_links": int,
    "burst_window": (int, float),
    "fast_seconds": (int, float),
}


def classify_settings(data: dict[str, Any], where: str) -> ClassifySettings:
    """The [classify] table checked: known keys, types, ranges (ConfigError naming `where`)."""

    values: dict[str, Any] = {}
    value: Any
    for key, value in data.items():
        kind = _CLASSIFY_TYPES.get(key)
        if kind is None:
            raise ConfigError(
                f"{where}: unknown key classify.{key} (known: {', '.join(sorted(_CLASSIFY_TYPES))})"
            )
        type_ok = isinstance(value, kind)  # a separate name: mypy would narrow `value` to object
        if not type_ok or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"{where}: classify.{key} has the wrong type (got {value!r})")
        if kind is list:
            if not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{where}: classify.{key} must be a list of non-empty strings")
            if key == "extra_bot_agents":
                for pattern in value:
                    try:
                        re.compile(pattern)
                    except re.error as exc:
                        raise ConfigError(
                            f"{where}: classify.{key}: {pattern!r} is not a regexp ({exc})"
                        ) from exc
            value = tuple(value)
        elif kind is not bool and not 0 <= value <= 3600:
            raise ConfigError(f"{where}: classify.{key} must be between 0 and 3600 (got {value!r})")
        elif key == "burst_links" and value < 2:
            raise ConfigError(f"{where}: classify.burst_links must be 2 or more (got {value!r})")
        values[key] = float(value) if kind == (int, float) else value
    return ClassifySettings(**values)


@dataclass
class Config:
    db: Path = Path(DEFAULT_DB)
    config_file: Path | None = None
    secret: bytes | None = None  # the signing key: the first of `secrets`
    # every key accepted when verifying, newest (the signing key) first
    secrets: tuple[SigningKey, ...] = ()
    verify_signatures: bool = True
    log_format: str | None = None  # None: the one `nginx-config` recorded, else combined
    log_formats: dict[str, str] = field(default_factory=dict)
    max_bad_ratio: float = DEFAULT_MAX_BAD_RATIO
    wait: float = DEFAULT_WAIT_SECONDS
    tz: str = "UTC"  # IANA zone (config key tz, env TRACKLOG_TZ): report times, export --yesterday
    exclude: list[str] = field(default_factory=list)  # ingest: file-name globs skipped in DIR/GLOB
    clock_window_days: tuple[int, int] = DEFAULT_CLOCK_WINDOW_DAYS
    truncate_ips: bool = False  # ingest: keep IPv4 /24 and IPv6 /48 of every hit's address
    classify: ClassifySettings = field(default_factory=ClassifySettings)

    def verify_secrets(self) -> list[bytes]:
        """The secrets a signature may be made with, the signing key first."""
        if self.secrets:
            return [k.secret for k in self.secrets]
        return [self.secret] if self.secret is not None else []

    def require_secrets(self) -> list[bytes]:
        """Every key a signature may be made with (the signing key first), or ConfigError."""
        self.require_secret()
        return self.verify_secrets()

    def require_secret(self) -> bytes:
        if self.secret is None:
            raise ConfigError(
                "no signing secret: set TRACKLOG_SECRET, or secret_file in the config file "
                "(or verify_signatures = false if your tracked URLs carry no signature)"
            )
        return self.secret


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only when there is a file to read: every command starts here

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: invalid TOML ({exc})") from exc
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"config {path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KNOWN_KEYS))})"
        )
    return data


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    value = data.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"config {path}: {key!r} has the wrong type (got {value!r})")
    return value


def _read_secret_file(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"secret file {path}: cannot read ({exc.strerror or exc})") from exc
    if not secret:
        raise ConfigError(f"secret file {path} is empty")
    return secret


def _signing_keys(items: list[Any], base: Path, path: Path) -> tuple[SigningKey, ...]:
    """`secrets = [{id = "2026-11", secret_file = "..."}, ...]`: newest first, ids unique."""
    if not items:
        raise ConfigError(f"config {path}: 'secrets' is empty (list at least one key)")
    if len(items) > MAX_SECRETS:
        raise ConfigError(f"config {path}: 'secrets' lists {len(items)} keys (at most {MAX_SECRETS})")
    keys: list[SigningKey] = []
    for n, item in enumerate(items, start=1):
        where = f"config {path}: secrets #{n}"
        if not isinstance(item, dict):
            raise ConfigError(f'{where} must be a table like {{id = "2026-11", secret_file = "..."}}')
        unknown = sorted(set(item) - {"id", "secret", "secret_file"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: id, secret, secret_file)")
        key_id = item.get("id")
        if not isinstance(key_id, str) or not key_id.strip():
            raise ConfigError(f"{where}: 'id' must be a non-empty string")
        if key_id in {k.key_id for k in keys}:
            raise ConfigError(f"{where}: id {key_id!r} appears twice")
        if ("secret" in item) == ("secret_file" in item):
            raise ConfigError(f"{where} ({key_id}): give exactly one of 'secret' and 'secret_file'")
        if "secret_file" in item:
            if not isinstance(item["secret_file"], str):
                raise ConfigError(f"{where} ({key_id}): 'secret_file' must be a string")
            secret = _read_secret_file(base / item["secret_file"])
        else:
            if not isinstance(item["secret"], str) or not item["secret"].strip():
                raise ConfigError(f"{where} ({key_id}): 'secret' is empty or not a string")
            secret = item["secret"].encode()
        keys.append(SigningKey(key_id, secret))
    return tuple(keys)


def _env_wait(text: str) -> float:
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not wait >= 0:  # also refuses nan
        raise ConfigError(f"TRACKLOG_WAIT must be 0 or more seconds (got {text!r})")
    return wait


def _zone_name(name: str, where: str) -> str:
    """`name` when it is a known IANA zone (or UTC), else a ConfigError naming `where`."""

    if name.upper() == "UTC":
        return "UTC"
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only for a zone other than UTC

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: unknown time zone {name!r} (use an IANA name like Europe/Paris, or UTC)"
        ) from None
    return name


def load_config(
    config_file: str | None = None,
    db: str | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    """Build the settings: `config_file`/`db` are the command-line flags (None when not given)."""
    env = dict(os.environ) if env is None else env
    cfg = Config()
    path: Path | None = None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
    elif env.get("TRACKLOG_CONFIG"):
        path = Path(env["TRACKLOG_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"config file {path} (from TRACKLOG_CONFIG) not found")
    elif Path(DEFAULT_CONFIG).is_file():
        path = Path(DEFAULT_CONFIG)

    if path is not None:
        cfg.config_file = path
        data = _read_toml(path)
        base = path.parent
        if (v := _typed(data, "db", str, path)) is not None:
            if not v:
                raise ConfigError(
                    f"config {path}: 'db' is empty (name the DuckDB file, e.g. db = \"{DEFAULT_DB}\")"
                )
            cfg.db = base / v
        if (v := _typed(data, "secret", str, path)) is not None:
            # An empty key would still "verify" hits, ones anybody can forge: refuse it.
            if not v.strip():
                raise ConfigError(f"config {path}: 'secret' is empty (set a secret, or use TRACKLOG_SECRET)")
            cfg.secret = v.encode()
        if (v := _typed(data, "secret_file", str, path)) is not None:
            cfg.secret = _read_secret_file(base / v)
        if (v := _typed(data, "secrets", list, path)) is not None:
            if "secret" in data or "secret_file" in data:
                raise ConfigError(f"config {path}: use either 'secrets' or 'secret'/'secret_file', not both")
            cfg.secrets = _signing_keys(v, base, path)
            cfg.secret = cfg.secrets[0].secret
        if (v := _typed(data, "clock_window_days", list, path)) is not None:
            if len(v) != 2 or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 36500 for d in v
            ):
                raise ConfigError(
                    f"config {path}: 'clock_window_days' must be [days before sent_at, days after], "
                    f"two whole numbers from 0 to 36500 (got {v!r})"
                )
            cfg.clock_window_days = (v[0], v[1])
        if (v := _typed(data, "verify_signatures", bool, path)) is not None:
            cfg.verify_signatures = v
        if (v := _typed(data, "log_format", str, path)) is not None:
            cfg.log_format = v
        if (v := _typed(data, "log_formats", dict, path)) is not None:
            for name, fmt in v.items():
                if not isinstance(fmt, str):
                    raise ConfigError(f"config {path}: log_formats.{name} must be a string")
            cfg.log_formats = dict(v)
        if (v := _typed(data, "max_bad_ratio", (int, float), path)) is not None:
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"config {path}: 'max_bad_ratio' must be between 0 and 1 (got {v!r})")
            cfg.max_bad_ratio = float(v)
        if (v := _typed(data, "wait", (int, float), path)) is not None:
            if v < 0:
                raise ConfigError(f"config {path}: 'wait' must be 0 or more seconds (got {v!r})")
            cfg.wait = float(v)
        if (v := _typed(data, "tz", str, path)) is not None:
            cfg.tz = _zone_name(v, f"config {path}: 'tz'")
        if (v := _typed(data, "truncate_ips", bool, path)) is not None:
            cfg.truncate_ips = v
        if (v := _typed(data, "exclude", list, path)) is not None:
            if not all(isinstance(g, str) and g for g in v):
                raise ConfigError(f"config {path}: 'exclude' must be a list of file-name globs")
            cfg.exclude = list(v)
        if (v := _typed(data, "classify", dict, path)) is not None:
            cfg.classify = classify_settings(v, f"config {path}")

    if env.get("TRACKLOG_DB"):
        cfg.db = Path(env["TRACKLOG_DB"])
    if env.get("TRACKLOG_SECRET"):  # replaces the config's keys: one key
        cfg.secret = env["TRACKLOG_SECRET"].encode()
        cfg.secrets = ()
    if env.get("TRACKLOG_WAIT"):
        cfg.wait = _env_wait(env["TRACKLOG_WAIT"])
    if env.get("TRACKLOG_TZ"):
        cfg.tz = _zone_name(env["TRACKLOG_TZ"], "TRACKLOG_TZ")
    if db is not None:
        if not db:
            raise UsageError("--db is empty: name the DuckDB file")
        cfg.db = Path(db)
    return cfg
