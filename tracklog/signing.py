"""Signed tracking URLs: SIG = base64url(HMAC-SHA256(secret, path)[:16]) without padding.

`sign_path` and `verify_path` are the Python side (constant-time compare); `sql_expected_sig`
is the same function as a DuckDB expression, so ingest verifies millions of hits vectorized.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

SIG_BYTES = 16
SIG_CHARS = 22
_BLOCK = 64  # SHA-256 block size

# An input whose signed hits (at least WRONG_SECRET_MIN) fail verification at this share or more
# was most likely verified with the wrong secret: real traffic is signed by the sender, so nearly
# all-invalid does not happen because forgers outnumber the recipients.
WRONG_SECRET_SHARE = 0.9
WRONG_SECRET_MIN = 20
WRONG_SECRET_HINT = (
    "the signing secret is probably wrong (TRACKLOG_SECRET, secret_file or secrets in the config): "
    "fix it, then run `tracklog reverify`"
)


def looks_like_wrong_secret(signed: int, invalid: int) -> bool:
    return signed >= WRONG_SECRET_MIN and invalid >= WRONG_SECRET_SHARE * signed


def sign_path(secret: bytes, path: str) -> str:
    """The signature of a tracked URL path such as '/c/NL-2026-11/hero/r000123'."""
    digest = hmac.new(secret, path.encode("utf-8"), hashlib.sha256).digest()[:SIG_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_path(secret: bytes, path: str, sig: str | None) -> bool:
    if not sig:
        return False
    return hmac.compare_digest(sign_path(secret, path), sig)


# What a tombstone of `tracklog forget` hashes: a text no tracked URL signs (paths start with '/').
FORGET_PREFIX = "forget:"


def recipient_hash(secret: bytes, recipient: str) -> str:
    """The keyed hash of a recipient id that a tombstone keeps instead of the id."""
    return sign_path(secret, FORGET_PREFIX + recipient)


def sql_recipient_hash(recipient_expr: str, ipad_param: str, opad_param: str) -> str:
    """recipient_hash of the VARCHAR `recipient_expr` in SQL (see sql_expected_sig)."""
    return sql_expected_sig(f"'{FORGET_PREFIX}' || {recipient_expr}", ipad_param, opad_param)


def hmac_pads(secret: bytes) -> tuple[bytes, bytes]:
    """The inner and outer padded keys of HMAC-SHA256 (RFC 2104), to bind as SQL parameters."""
    key = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_pads_of(secrets: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The pads of several keys, concatenated in order (64 bytes per key): what the compiled
    pass takes, and what `sql_sig_valid` reads one key at a time."""
    pads = [hmac_pads(s) for s in secrets]
    return b"".join(p[0] for p in pads), b"".join(p[1] for p in pads)


def sql_pad_params(secrets: Sequence[bytes]) -> dict[str, bytes]:
    """The bound parameters of sql_sig_valid: ipad0, opad0, ipad1, ..."""
    params: dict[str, bytes] = {}
    for n, secret in enumerate(secrets):
        params[f"ipad{n}"], params[f"opad{n}"] = hmac_pads(secret)
    return params


def sql_sig_status(path_expr: str, sig_expr: str, keys: int) -> str:
    """The `sig_status` of a tracking hit as a DuckDB CASE: missing, invalid, or valid when the
    signature is that of one of `keys` keys (parameters $ipad0, $opad0, ...; see sql_pad_params).
    CASE tries the next key only for rows the previous one did not match, like the compiled
    pass: a second key costs nothing for hits signed with the first."""
    tries = " ".join(
        f"WHEN {sig_expr} = {sql_expected_sig(path_expr, f'$ipad{n}', f'$opad{n}')} THEN 'valid'"
        for n in range(keys)
    )
    return f"""CASE WHEN {sig_expr} IS NULL OR {sig_expr} = '' THEN 'missing'
                WHEN length({sig_expr}) <> {SIG_CHARS} THEN 'invalid'
                {tries} ELSE 'invalid' END"""


def sql_expected_sig(path_expr: str, ipad_param: str, opad_param: str) -> str:
    """A DuckDB expression computing SIG of the VARCHAR `path_expr`.

    HMAC = sha256(opad || sha256(ipad || path)); the parameters are the BLOBs from hmac_pads().
    Comparing in SQL is not constant-time, and need not be: ingest runs offline on logged
    requests, so no sender can observe how long a comparison took.
    """
    inner = f"unhex(sha256({ipad_param} || encode({path_expr})))"
    outer = f"unhex(substr(sha256({opad_param} || {inner}), 1, {SIG_BYTES * 2}))"
    return f"replace(replace(rtrim(to_base64({outer}), '='), '+', '-'), '/', '_')"
