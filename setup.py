"""Builds the optional compiled fast path of ingest (tracklog/ingest/_fastlog.c); everything
else is in pyproject.toml.

The extension links OpenSSL's libcrypto for SHA-256 when its headers are there, else it is
built with its own portable SHA-256; when it cannot be built at all (no compiler, no Python
headers), installation still succeeds and ingest uses its pure SQL path.
"""

from __future__ import annotations

import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE = "tracklog/ingest/_fastlog.c"
CFLAGS = ["-O3", "-std=c11", "-Wall", "-Wno-unused-function"]


def fastlog(openssl: bool) -> Extension:
    if openssl:
        return Extension(
            "tracklog.ingest._fastlog",
            [SOURCE],
            define_macros=[("TL_OPENSSL", "1")],
            libraries=["crypto"],
            extra_compile_args=CFLAGS,
        )
    return Extension("tracklog.ingest._fastlog", [SOURCE], extra_compile_args=CFLAGS)


class OptionalBuildExt(build_ext):  # type: ignore[misc]
    """Tries libcrypto, then the portable SHA-256, then gives up with a warning (not an error)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - no compiler at all: the pure path is used
            _warn(f"no C compiler ({exc})")

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. no OpenSSL headers
            _warn(f"building with OpenSSL failed ({exc}); trying the portable SHA-256")
        portable = fastlog(openssl=False)
        ext.define_macros, ext.libraries = portable.define_macros, portable.libraries
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            _warn(f"the extension could not be built ({exc})")


def _warn(message: str) -> None:
    print(f"tracklog: {message}; ingest will use its pure SQL path", file=sys.stderr)


setup(ext_modules=[fastlog(openssl=True)], cmdclass={"build_ext": OptionalBuildExt})
