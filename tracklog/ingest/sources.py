"""Where log bytes come from: expanding FILE|DIR|GLOB|- arguments, opening plain or gzip
input (detected by magic bytes), fingerprinting a stream by its first bytes, and reading it
from a byte offset in chunks of complete lines.

A plain file may still be written, so its unterminated last line is held back; gzip files
and stdin are complete, so their last line is consumed even without a newline.
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import hashlib
import io
import os
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from tracklog.errors import DataError

try:  # zlib-ng inflates in about half the CPU of zlib; same bytes, same errors, same API
    from zlib_ng import gzip_ng, zlib_ng

    GzipReader: type[gzip.GzipFile] = gzip_ng.GzipFile
    ZLIB_ERRORS: tuple[type[Exception], ...] = (zlib.error, cast(type[Exception], zlib_ng.error))
except ImportError:  # the standard library's zlib
    GzipReader = gzip.GzipFile
    ZLIB_ERRORS = (zlib.error,)
_READ_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, *ZLIB_ERRORS)

FP_MAX = 4096  # bytes of (decompressed) head that identify a log stream
# bytes per step: bounds memory. 32 MiB: about 735 MB peak on the benchmark log against 925 MB
# for 64 MiB, which is up to 25% faster (each chunk costs about 0.6 s of fixed merge and commit
# work); memory won over speed here. TRACKLOG_CHUNK_BYTES overrides it (tests, tuning)
CHUNK = int(os.environ.get("TRACKLOG_CHUNK_BYTES") or 32 << 20)
GZIP_MAGIC = b"\x1f\x8b"
STDIN = "-"
# Not access logs: what a directory or glob stands for never includes these (nginx writes its
# error log next to the access logs). A file named explicitly is always read.
DEFAULT_EXCLUDE = ("error.log*",)


@dataclass(frozen=True)
class InputSpec:
    """One log input as named by the user, resolved to a path (or '-' for stdin), and the
    tracking server it comes from (`--source`, or the directory it was named by), if known."""

    name: str
    server: str | None = None


def expand_inputs(
    args: list[str], exclude: Sequence[str] = DEFAULT_EXCLUDE
) -> tuple[list[InputSpec], list[str], list[str]]:
    """Resolve FILE|DIR|GLOB|- arguments to inputs, oldest first; return (inputs, errors,
    skipped).

    A directory stands for its regular, non-hidden files, which come from the tracking server
    named like the directory (a directory per server), and a glob for the files it matches,
    except those whose name matches a pattern of `exclude` (fnmatch on the file name): these
    come back as `skipped`. Duplicates (same real path) are dropped. Names that match nothing
    come back as one-line errors.
    """
    found: list[tuple[float, str]] = []
    servers: dict[str, str] = {}
    errors: list[str] = []
    skipped: list[str] = []
    seen: set[str] = set()

    def kept(paths: list[str]) -> list[str]:
        out = []
        for p in paths:
            if any(fnmatch.fnmatchcase(os.path.basename(p), g) for g in exclude):
                skipped.append(p)
            else:
                out.append(p)
        return out

    def add(path: str) -> None:
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            mtime = 0.0
        found.append((mtime, path))

    stdin_seen = False
    for arg in args:
        if arg == STDIN:
            if not stdin_seen:
                stdin_seen = True
            continue
        if os.path.isdir(arg):
            names = sorted(
                os.path.join(arg, n)
                for n in os.listdir(arg)
                if not n.startswith(".") and os.path.isfile(os.path.join(arg, n))
            )
            server = os.path.basename(os.path.normpath(os.path.abspath(arg)))
            for n in kept(names):
                add(n)
                servers.setdefault(n, server)
            continue
        if os.path.exists(arg) or os.path.islink(arg):
            add(arg)
            continue
        if glob.has_magic(arg):
            matches = sorted(p for p in glob.glob(arg) if os.path.isfile(p))
            if not matches:
                errors.append(f"{arg}: no file matches this pattern")
            for m in kept(matches):
                add(m)
            continue
        errors.append(f"{arg}: no such file or directory")
    # oldest first, so rotated files (access.log.2.gz, .1, then access.log) go in time order
    found.sort(key=lambda t: (t[0], t[1]))
    specs = [InputSpec(p, servers.get(p)) for _, p in found]
    if stdin_seen:
        specs.append(InputSpec(STDIN))
    return specs, errors, skipped


class LogStream:
    """An opened input: decompressed bytes, its head (for the fingerprint), and how to read it."""

    def __init__(self, spec: InputSpec) -> None:
        self.name = spec.name
        self.server = spec.server
        self.complete = True  # may the unterminated last line be consumed?
        self.compressed = False
        self.size_limit: int | None = None  # plain files: bytes present when opened
        self._raw: BinaryIO
        self._fh: BinaryIO | gzip.GzipFile
        self._pending = b""  # bytes read ahead (head of stdin) not yet handed out
        self._pos = 0
        try:
            if spec.name == STDIN:
                self._raw = sys.stdin.buffer
                first = self._raw.read(2)
                if first == GZIP_MAGIC:
                    self.compressed = True
                    self._fh = GzipReader(fileobj=_Prefixed(first, self._raw), mode="rb")
                else:
                    self._fh = self._raw
                    self._pending = first
            else:
                self._raw = open(spec.name, "rb")  # noqa: SIM115 - closed in close()
                magic = self._raw.read(2)
                self._raw.seek(0)
                if magic == GZIP_MAGIC:
                    self.compressed = True
                    self._fh = GzipReader(fileobj=self._raw, mode="rb")
                else:
                    self._fh = self._raw
                    self.complete = False
                    self.size_limit = os.fstat(self._raw.fileno()).st_size
            self.head = self._read_head()
        except OSError as exc:
            raise DataError(f"{spec.name}: {_describe(exc)}") from exc

    def _read_head(self) -> bytes:
        if self.name != STDIN and not self.compressed:
            head = self._raw.read(min(FP_MAX, self.size_limit or 0))
            self._raw.seek(0)
            return head
        head = self._pending + self._read_exact(FP_MAX - len(self._pending))
        self._pending = head
        return head

    def _read_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n > 0:
            try:
                b = self._fh.read(n)
            except _READ_ERRORS as exc:
                raise DataError(f"{self.name}: {_describe(exc)}") from exc
            if not b:
                break
            parts.append(b)
            n -= len(b)
        return b"".join(parts)

    def read(self, n: int) -> bytes:
        """Up to n decompressed bytes from the current position; b'' at the end."""
        if self._pending:
            out, self._pending = self._pending[:n], self._pending[n:]
            if len(out) < n:
                out += self._read_exact(n - len(out))
        else:
            if self.size_limit is not None:
                n = min(n, self.size_limit - self._pos)
                if n <= 0:
                    return b""
            out = self._read_exact(n)
        self._pos += len(out)
        return out

    def skip(self, offset: int) -> None:
        """Move to decompressed byte `offset` (seek for plain files, read and drop otherwise)."""
        if self.name != STDIN and not self.compressed:
            self._raw.seek(offset)
            self._pos = offset
            return
        left = offset - self._pos
        while left > 0:
            got = self.read(min(left, CHUNK))
            if not got:
                raise DataError(f"{self.name}: shorter than the {offset} bytes already ingested from it")
            left -= len(got)

    def chunks(self, start: int) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) of complete lines from `start`; the last line is held back unless complete."""
        self.skip(start)
        offset = start
        carry = b""
        while True:
            data = self.read(CHUNK)
            if not data:
                break
            buf = carry + data if carry else data
            del data
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                carry = buf  # a line longer than CHUNK: keep reading until it ends
                continue
            carry = buf[cut:]
            lines = buf[:cut]  # no copy when the chunk ends at a newline (a whole-bytes slice)
            del buf  # while suspended, hold only what was handed out
            yield offset, lines
            offset += cut
        if carry and self.complete:
            yield offset, carry + b"\n"

    def disk_position(self) -> int:
        """Bytes consumed of the file on disk (compressed bytes for gzip), for progress."""
        if self.compressed and self.name != STDIN:
            return self._raw.tell()
        return self._pos

    def close(self) -> None:
        if self.name != STDIN:
            self._raw.close()


class _Prefixed(io.RawIOBase):
    """A stream that first returns `prefix` then reads from `rest` (stdin after a magic peek)."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)


def fingerprint(head: bytes, length: int) -> str:
    return hashlib.sha256(head[:length]).hexdigest()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (*ZLIB_ERRORS, EOFError, gzip.BadGzipFile)):
        return f"corrupt gzip data ({exc})"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file or directory"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)


def display_name(name: str) -> str:
    return "<stdin>" if name == STDIN else str(Path(name))
