"""Benchmark loading a big delivery manifest: 1,000,000 recipients in a CSV file.

Writes bench/out/manifest-<N>/ once (reused afterwards), then runs
`tracklog --db <fresh db> --quiet ingest --manifest FILE` and prints wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import OUT, CommandFailed, print_table, run_tracklog

DEFAULT_RECIPIENTS = 1_000_000
DELIVERY = "BENCH-NL-2026-12"
DOMAINS = (
    "gmail.com",
    "outlook.com",
    "hotmail.fr",
    "yahoo.fr",
    "icloud.com",
    "orange.fr",
    "free.fr",
    "acme-corp.com",
)
FIRST_NAMES = (
    "Camille",
    "Léa",
    "Manon",
    "Thomas",
    "Lucas",
    "Hugo",
    "Inès",
    "Karim",
    "Sophie",
    "Nicolas",
    "Zoé",
)
SEGMENTS = ("vip", "active", "occasional", "lapsed")
LINKS = ("hero", "pick-1", "pick-2", "pick-3", "blog", "stores", "trap")


def write_manifest(folder: Path, n: int) -> Path:
    """A manifest with n recipients (about 1.2% failed); returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(n)
    slug = DELIVERY.lower()
    links = [
        {
            "id": link,
            "url": "https://t.example.com/x" if link == "trap" else f"https://shop.example.com/{link}",
            "label": "hidden" if link == "trap" else link.replace("-", " ").title(),
            "category": "trap" if link == "trap" else "promo",
        }
        for link in LINKS
    ]
    body = "\n".join(f'<a href="{lk["url"]}">{lk["label"]}</a>' for lk in links)
    (folder / f"{slug}.html").write_text(
        f"<!DOCTYPE html>\n<html><body>\n{body}\n</body></html>\n", encoding="utf-8"
    )
    picks = rng.choices(range(1 << 20), k=n)
    with (folder / f"{slug}.recipients.csv").open("w", encoding="utf-8", newline="\n") as out:
        out.write("recipient_id,email,status,first_name,segment\n")
        batch = []
        for i, r in enumerate(picks, start=1):
            status = "failed" if r % 83 == 0 else "sent"
            batch.append(
                f"r{i:07d},user{i}@{DOMAINS[r % len(DOMAINS)]},{status},"
                f"{FIRST_NAMES[(r >> 3) % len(FIRST_NAMES)]},{SEGMENTS[(r >> 7) % len(SEGMENTS)]}\n"
            )
            if len(batch) == 100_000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))
    manifest = {
        "delivery": DELIVERY,
        "label": f"Benchmark newsletter, {n:,} recipients",
        "sent_at": "2026-12-01T09:00:00Z",
        "subject": "Our December picks",
        "content": f"{slug}.html",
        "links": links,
        "recipients": f"{slug}.recipients.csv",
    }
    path = folder / f"{DELIVERY}.json"
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipients",
        type=int,
        default=DEFAULT_RECIPIENTS,
        help="recipients in the manifest (default: %(default)s)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs (default: %(default)s)")
    args = parser.parse_args()

    folder = OUT / f"manifest-{args.recipients}"
    manifest = folder / f"{DELIVERY}.json"
    if not manifest.exists():
        print(f"generating {folder} ({args.recipients:,} recipients)...", file=sys.stderr)
        started = time.perf_counter()
        write_manifest(folder, args.recipients)
        print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    csv_mb = (folder / f"{DELIVERY.lower()}.recipients.csv").stat().st_size / 1e6
    rows: list[list[str]] = []
    for run_no in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory(prefix="tracklog-bench-") as tmp:
            db = Path(tmp) / "bench.duckdb"
            print(f"loading {manifest.name} (run {run_no})...", file=sys.stderr)
            try:
                run = run_tracklog(
                    ["--db", str(db), "--quiet", "ingest", "--manifest", str(manifest)], cwd=Path(tmp)
                )
            except CommandFailed as exc:
                print(f"Error: {exc}", file=sys.stderr)
                sys.exit(1)
            rows.append(
                [
                    manifest.name,
                    f"{args.recipients:,}",
                    f"{csv_mb:,.0f}",
                    str(run_no),
                    f"{run.wall_s:.2f}",
                    f"{args.recipients / run.wall_s:,.0f}",
                    f"{run.peak_rss_mb:,.0f}",
                ]
            )
    print_table(["manifest", "recipients", "CSV MB", "run", "wall s", "recipients/s", "peak RSS MB"], rows)


if __name__ == "__main__":
    main()
