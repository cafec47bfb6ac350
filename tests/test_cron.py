"""The README's crontab, run as cron would run it: its command lines, as written but for the
paths, under `env -i PATH=/usr/bin:/bin` (cron's minimal environment) with /bin/sh, against a
small data set whose hits fall on yesterday; then the exported files are checked against the
independent computation of tests/test_export.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import LOG_FORMAT, SECRET, Delivery, Model, write_tracking_log
from test_export import (
    EVENT_HEADER,
    UNSUBSCRIBE_HEADER,
    csv_text,
    expected_events,
    expected_unsubscribes,
    export_dataset,
)

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def crontab_commands() -> list[str]:
    """The commands of the README's crontab block (after the five time fields)."""
    block = re.search(r"```crontab\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert block, "README.md has no ```crontab block"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    commands = [ln.split(None, 5)[5] for ln in lines]
    assert len(commands) == 2 and "%" not in "".join(commands)  # cron turns % into a newline
    return commands


def shifted(data: Any, days: int) -> Any:
    """The data set moved by whole days (sends and hits)."""
    delta = dt.timedelta(days=days)
    data.deliveries = [dataclasses.replace(d, sent_at=d.sent_at + delta) for d in data.deliveries]
    data.hits = [dataclasses.replace(h, ts=h.ts + delta) for h in data.hits]
    return data


def write_manifest(folder: Path, d: Delivery) -> None:
    links = [{"id": i, "url": u, "label": lb, **({"category": c} if c else {})} for i, u, lb, c in d.links]
    recipients = [{"recipient_id": r, "status": s, **({"email": e} if e else {})} for r, e, s in d.recipients]
    manifest = {
        "delivery": d.delivery_id,
        "label": d.label,
        "sent_at": d.sent_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        **({"subject": d.subject} if d.subject else {}),
        "links": links,
        "recipients": recipients,
    }
    (folder / f"{d.delivery_id}.json").write_text(json.dumps(manifest), encoding="utf-8")


def console_script(path: Path) -> Path:
    """What `pip install` puts in a virtualenv's bin/, pinned to this checkout (the venv of the
    test run may hold an editable install of another one)."""
    path.parent.mkdir(parents=True)
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from tracklog.cli import main\nsys.exit(main())\n",
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path


def cron(command: str, root: Path) -> subprocess.CompletedProcess[str]:
    local = command.replace("/srv/", f"{root}/srv/").replace("/var/log/", f"{root}/var/log/")
    return subprocess.run(
        ["env", "-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c", local],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_readme_crontab_runs_under_crons_environment(tmp_path: Path) -> None:
    ingest, export = crontab_commands()
    assert " ingest " in ingest and " export " in export and "--yesterday" in export
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    data = shifted(export_dataset(), (yesterday - dt.date(2026, 11, 3)).days)
    model = Model(data)

    srv = tmp_path / "srv" / "tracklog"
    (srv / "manifests").mkdir(parents=True)
    for d in data.deliveries:
        write_manifest(srv / "manifests", d)
    (srv / "tracklog.toml").write_text(
        f"secret = \"{SECRET.decode()}\"\nlog_format = '{LOG_FORMAT}'\n", encoding="utf-8"
    )
    console_script(srv / ".venv" / "bin" / "tracklog")
    nginx = tmp_path / "var" / "log" / "nginx" / "t.example.com"
    nginx.mkdir(parents=True)
    write_tracking_log(nginx / "access.log", data.hits)
    (nginx / "error.log").write_text('2026/11/03 09:00:00 [error] 12#12: *1 open() "/x" failed\n' * 50)
    (tmp_path / "var" / "log" / "tracklog").mkdir(parents=True)
    cron_log = tmp_path / "var" / "log" / "tracklog" / "cron.log"

    for command in (ingest, ingest, export):  # the 5-minute job twice, then the nightly one
        result = cron(command, tmp_path)
        assert result.returncode == 0, (command, result.stdout, result.stderr, cron_log.read_text())
        assert result.stdout == "" and result.stderr == ""
    if dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1) != yesterday:
        pytest.skip("ran across midnight UTC: 'yesterday' changed during the test")
    assert not cron_log.exists() or cron_log.read_text() == ""  # nothing went wrong

    out = tmp_path / "srv" / "exports" / "tracking"
    part = f"date={yesterday.isoformat()}"
    events = (out / "events" / part / "events.csv").read_text(encoding="utf-8")
    assert events == csv_text(EVENT_HEADER, expected_events(model, yesterday, whole_seconds=True))
    assert events.count("\n") > 10  # the day's hits were ingested once, not twice, not zero
    unsubscribes = (out / "unsubscribes" / part / "unsubscribes.csv").read_text(encoding="utf-8")
    assert unsubscribes == csv_text(UNSUBSCRIBE_HEADER, expected_unsubscribes(model, yesterday))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "deliveries",
        "events",
        "recipients",
        "unsubscribes",
    ]
    # error.log was skipped, not ingested (nor an error)
    status = subprocess.run(
        [
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            str(srv / ".venv" / "bin" / "tracklog"),
            "status",
            "--format",
            "json",
        ],
        cwd=srv,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [Path(s["path"]).name for s in json.loads(status.stdout)["sources"]] == ["access.log"]
