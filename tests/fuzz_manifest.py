"""Fuzz target of the manifest loader (tracklog/manifest.py): any bytes as a manifest file (next
to a small recipients CSV it may name) either load or fail with one DataError line naming the
manifest; any other exception, a traceback or a multi-line message is a finding.

    python tests/fuzz_manifest.py -atheris_runs=20000 [CORPUS_DIR]   # atheris (pip install atheris)

Run for a bounded number of inputs by tests/test_reliability.py (marker `fuzz`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracklog.errors import DataError
from tracklog.manifest import load_manifest

_FOLDER = Path(tempfile.mkdtemp(prefix="tracklog-fuzz-manifest-"))
(_FOLDER / "r.csv").write_text("recipient_id,email,status\nr1,a@example.com,sent\nr2,,failed\n")
(_FOLDER / "m.html").write_text('<a href="https://t.example.com/c/D/a/r1">x</a>')
_MANIFEST = _FOLDER / "m.json"

SEEDS = [
    json.dumps(
        {
            "delivery": "NL-2026-11",
            "label": "November",
            "sent_at": "2026-11-03T09:00:00+01:00",
            "subject": "Hello",
            "content": "m.html",
            "links": [
                {"id": "hero", "url": "https://shop.example.com/?a=1", "label": "Hero", "category": "trap"}
            ],
            "recipients": "r.csv",
        }
    ).encode(),
    json.dumps(
        {
            "delivery": "X",
            "sent_at": "2026-11-03T09:00:00Z",
            "links": [],
            "recipients": [{"recipient_id": "r1", "email": "x@y.z", "segment": {"a": [1, 2.5, None]}}],
        }
    ).encode(),
    b'{"delivery": "D", "sent_at": "9999-12-31T23:59:59-12:00", "links": [], "recipients": []}',
    b'{"delivery": "D", "sent_at": "2026-11-03T09:00:00Z", "links": NaN, "recipients": "../r.csv"}',
]


def check(data: bytes) -> None:
    """The property: load, or one DataError line that names the manifest."""
    _MANIFEST.write_bytes(data)
    try:
        load_manifest(_MANIFEST)
    except DataError as exc:
        message = str(exc)
        if not message.startswith(f"manifest {_MANIFEST}: ") or "\n" in message:
            raise AssertionError(f"bad error message: {message!r}") from exc


def main() -> None:
    import atheris

    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):  # no corpus folder given: the seeds
        seeds = Path(tempfile.mkdtemp(prefix="tracklog-fuzz-seeds-"))
        for i, seed in enumerate(SEEDS):
            (seeds / f"seed{i}").write_bytes(seed)
        argv.append(str(seeds))
    atheris.Setup(argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
