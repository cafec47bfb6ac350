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
import stat
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from tracklog.errors import DataError

try:  # zlib-ng inflates in about half the CPU of zlib; same bytes, same errors, same API
    from zlib_ng import gzip_ng, zlib_ng

    GzipReader: type[gzip.GzipFile] = gzip_ng.GzipFile
    ZLIB_ERRORS: tuple[type[Exception], ...] = (zlib.error, cast(type[Exception], zlib_ng.error))
    _decompressobj: Any = zlib_ng.decompressobj
except ImportError:  # the standard library's zlib
    GzipReader = gzip.GzipFile
    ZLIB_ERRORS = (zlib.error,)
    _decompressobj = zlib.decompressobj
_READ_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, *ZLIB_ERRORS)

FP_MAX = 4096  # bytes of (decompressed) head that identify a log stream
# Bytes per chunk, the unit an ingest classifies, stores and commits (with the read position):
# bounds memory with READ. TRACKLOG_CHUNK_BYTES overrides it (tests, tuning). See the README's
# Performance section for the sizes measured.
CHUNK = int(os.environ.get("TRACKLOG_CHUNK_BYTES") or 40 << 20)
# Bytes per read: a chunk is read, split and parsed in pieces of a quarter of it (engine.
# _split_chunks gathers them), so the bytes held at once are a piece's, not a chunk's.
READ = max(CHUNK // 4, 4096)
# At most this many bytes of parsed columns per chunk (the compiled pass's Arrow table, which
# the process holds twice: the chunk being stored and the next one, outside DuckDB's memory
# limit): a format whose variables kept in `extra` make the parsed rows wider than the lines
# (each value written with its variable's name as JSON) gathers fewer pieces into a chunk. The
# benchmark's formats parse 40 MiB of lines into 26-28 MiB, below it; ingress-nginx's default
# format into 55 MiB, which took the ingest's peak over 500 MB.
PARSED_CHUNK = CHUNK
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


@dataclass(frozen=True)
class GzipCheck:
    """What a pass over a gzip file verified: the decompressed bytes of its complete members
    whose CRC matched, and why the rest could not be used (None: the whole file is good)."""

    verified: int
    damage: str | None


_VERIFY_READ = 1 << 20


def verify_gzip(raw: BinaryIO) -> GzipCheck:
    """Inflate every member of the gzip file `raw` (from where it is; put back there after)
    and check its CRC and length: only the bytes of members that pass can be trusted. A corrupt
    member is detected at its end at the latest, so nothing of it is ever ingested. Costs one
    gunzip without storing anything (zlib-ng: about 0.3 s per 100 MB compressed)."""
    start = raw.tell()
    verified = 0
    done = 0  # decompressed bytes of the current member so far
    inflate = _decompressobj(wbits=31)
    in_member = False
    damage: str | None = None
    try:
        pending = b""
        while True:
            data = pending or raw.read(_VERIFY_READ)
            pending = b""
            if not data:
                break
            if not in_member:
                data = data.lstrip(b"\0")  # zero padding between members, as gzip tolerates
                if not data:
                    continue
                in_member = True
            done += len(inflate.decompress(data))
            if inflate.eof:  # the member's trailer (CRC-32 and length) matched
                verified += done
                done, in_member = 0, False
                pending = inflate.unused_data
                inflate = _decompressobj(wbits=31)
        if in_member:
            damage = "truncated gzip data (the last member has no end)"
    except ZLIB_ERRORS as exc:
        damage = f"corrupt gzip data ({exc})"
    except OSError as exc:
        damage = _describe(exc)
    finally:
        raw.seek(start)
    return GzipCheck(verified, damage)


class LogStream:
    """An opened input: decompressed bytes, its head (for the fingerprint), and how to read it.

    A gzip input is verified first (verify_gzip): only its verified bytes are read, and
    `damage` says why the rest is not."""

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
        self.damage: str | None = None  # gzip: why the bytes after `verified` are not read
        self.verified: int | None = None  # gzip: decompressed bytes whose CRC matched
        self._spool: IO[bytes] | None = None
        try:
            if spec.name == STDIN:
                self._raw = sys.stdin.buffer
                first = self._raw.read(2)
                if first == GZIP_MAGIC:
                    # verified before anything is read: spooled (compressed) to a temporary file
                    self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
                    self._spool.write(first)
                    while block := self._raw.read(_VERIFY_READ):
                        self._spool.write(block)
                    self._spool.seek(0)
                    self._open_gzip(self._spool)
                else:
                    self._fh = self._raw
                    self._pending = first
            else:
                self._raw = _open_regular(spec.name)
                magic = self._raw.read(2)
                self._raw.seek(0)
                if magic == GZIP_MAGIC:
                    self._open_gzip(self._raw)
                else:
                    self._fh = self._raw
                    self.complete = False
                    self.size_limit = os.fstat(self._raw.fileno()).st_size
            self.head = self._read_head()
        except OSError as exc:
            raise DataError(f"{spec.name}: {_describe(exc)}") from exc

    def _open_gzip(self, raw: BinaryIO) -> None:
        self.compressed = True
        check = verify_gzip(raw)
        self.verified, self.damage = check.verified, check.damage
        if self.damage is not None:
            self.complete = False  # a member may end inside a line: it waits for the intact copy
        self._gz_raw = raw
        self._fh = GzipReader(fileobj=raw, mode="rb")

    def _read_head(self) -> bytes:
        if self.name != STDIN and not self.compressed:
            head = self._raw.read(min(FP_MAX, self.size_limit or 0))
            self._raw.seek(0)
            return head
        want = FP_MAX - len(self._pending)
        if self.verified is not None:
            want = min(want, self.verified)
        head = self._pending + self._read_exact(want)
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
            limit = self.size_limit if self.verified is None else self.verified
            if limit is not None:
                n = min(n, limit - self._pos)
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
            got = self.read(min(left, READ))
            if not got:
                raise DataError(f"{self.name}: shorter than the {offset} bytes already ingested from it")
            left -= len(got)

    def _read_after(self, carry: bytes) -> bytearray:
        """`carry` followed by the next READ bytes at most (what read(READ) returns), read into
        one buffer: the chunk is never copied (joining `carry` to a chunk read on its own, then
        cutting the result at its last newline, held three copies of it at once)."""
        if self._pending:  # the head of stdin, read ahead: once, and small
            buf = bytearray(carry)
            buf += self.read(READ)
            return buf
        limit = self.size_limit if self.verified is None else self.verified
        want = READ if limit is None else max(0, min(READ, limit - self._pos))
        buf = bytearray(len(carry) + want)
        buf[: len(carry)] = carry
        done = len(carry)
        readinto = cast(io.BufferedIOBase, self._fh).readinto  # files, stdin's buffer, GzipFile
        with memoryview(buf) as view:
            while done < len(buf):
                try:
                    got = readinto(view[done:])
                except _READ_ERRORS as exc:
                    raise DataError(f"{self.name}: {_describe(exc)}") from exc
                if not got:
                    break
                done += got
        self._pos += done - len(carry)
        del buf[done:]
        return buf

    def chunks(self, start: int) -> Iterator[tuple[int, bytearray]]:
        """(offset, bytes) of complete lines from `start`; the last line is held back unless complete."""
        self.skip(start)
        offset = start
        carry = b""
        while True:
            buf = self._read_after(carry)
            if len(buf) == len(carry):
                break
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                carry = bytes(buf)  # a line longer than READ: keep reading until it ends
                continue
            carry = bytes(buf[cut:])
            del buf[cut:]  # in place: the chunk's lines are not copied
            yield offset, buf
            del buf  # while suspended, hold only what was handed out
            offset += cut
        if carry and self.complete:
            yield offset, bytearray(carry + b"\n")

    def disk_position(self) -> int:
        """Bytes consumed of the file on disk (compressed bytes for gzip), for progress."""
        if self.compressed:
            return self._gz_raw.tell()
        return self._pos

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
        if self.name != STDIN:
            self._raw.close()


def _open_regular(name: str) -> BinaryIO:
    """The file opened for reading, refusing what is not a regular file: a FIFO with no writer
    would block the run (holding the lock) forever, a device never ends. Opened non-blocking,
    so that a FIFO is seen for what it is instead of waiting for a writer."""
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            if stat.S_ISDIR(info.st_mode):
                raise DataError(f"{name}: is a directory")
            kind = "a named pipe (FIFO)" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
            raise DataError(f"{name}: {kind}, not read (pipe it to `tracklog ingest -` instead)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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
