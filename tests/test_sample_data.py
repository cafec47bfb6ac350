"""The bundled sample data end to end, checked against the generator's own ground truth
(sample_logs/expected.json, counted by generate.py from what it wrote, not by any parser)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from tracklog.cli import cli

SAMPLE = Path(__file__).resolve().parents[1] / "sample_logs"
LOGS = ["access.log.2.gz", "access.log.1", "access.log"]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, object]]]:
    db = tmp_path_factory.mktemp("sample") / "sample.duckdb"
    args = ["--db", str(db), "--config", str(SAMPLE / "tracklog.toml"), "ingest", "--format", "json"]
    args += ["--manifest", str(SAMPLE / "manifests" / "*.json")] + [str(SAMPLE / f) for f in LOGS]
    res = CliRunner().invoke(cli, args, env={"TRACKLOG_SECRET": "", "TRACKLOG_DB": ""})
    assert res.exit_code == 0, res.stderr
    return db, json.loads(res.stdout)


@pytest.fixture(scope="module")
def truth() -> dict[str, object]:
    return json.loads((SAMPLE / "expected.json").read_text())


def q(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_lines_per_file(ingested: tuple[Path, list[dict[str, object]]], truth: dict) -> None:
    _, summary = ingested
    assert {Path(str(r["input"])).name: r["lines"] for r in summary[:-1]} == truth["log_lines"]


def test_hits_by_kind_signature_and_status(
    ingested: tuple[Path, list[dict[str, object]]], truth: dict
) -> None:
    db, _ = ingested
    assert dict(q(db, "SELECT kind, count(*) FROM hits GROUP BY kind")) == truth["tracking_hits_by_kind"]
    by_sig = dict(q(db, "SELECT sig_status, count(*) FROM hits GROUP BY sig_status"))
    assert by_sig == truth["tracking_hits_by_sig"]
    by_status = {str(k): v for k, v in q(db, "SELECT status, count(*) FROM hits GROUP BY status")}
    assert by_status == truth["tracking_hits_by_status"]


def test_ignored_and_quarantined(ingested: tuple[Path, list[dict[str, object]]], truth: dict) -> None:
    _, summary = ingested
    tags = truth["lines_by_tag"]
    # noise is ignored; the TLS handshake and SSH probe are well-formed lines with a non-HTTP
    # request (ignored); the line cut in the middle of its URL does not parse (quarantined)
    noise = sum(n for tag, n in tags.items() if tag.startswith("noise_"))
    total = summary[-1]
    assert total["ignored"] == noise + tags["malformed_tls"] + tags["malformed_ssh"]
    assert total["quarantined"] == tags["malformed_truncated"]


def test_delivery_figures(ingested: tuple[Path, list[dict[str, object]]], truth: dict) -> None:
    db, _ = ingested
    deliveries = truth["deliveries"]
    for delivery in ("NL-2026-11", "TX-WELCOME-2026-11", "PROMO-BF-2026"):
        res = CliRunner().invoke(cli, ["--db", str(db), "report", "delivery", delivery, "--format", "json"])
        assert res.exit_code == 0, res.stderr
        got, want = json.loads(res.stdout), deliveries[delivery]
        assert got["sent"] == want["recipients"]
        assert got["delivered"] == want["recipients"] - want["failed"]
        assert got["rejected_hits"] == sum(n for sig, n in want["hits_by_sig"].items() if sig != "valid")
    # the people's figures and the machines' beside them, as the generator knows them (its
    # scanners and Apple's MPP proxy are machines; README "Machine opens and bot clicks")
    for delivery in ("NL-2026-11", "TX-WELCOME-2026-11", "PROMO-BF-2026"):
        res = CliRunner().invoke(cli, ["--db", str(db), "report", "delivery", delivery, "--format", "json"])
        got, people = json.loads(res.stdout), deliveries[delivery]["people"]
        assert {k: got[k] for k in ("opens_total", "clicks_total", "machine_opens", "bot_clicks")} == {
            k: people[k] for k in ("opens_total", "clicks_total", "machine_opens", "bot_clicks")
        }
        assert (got["opens_unique"], got["clicks_unique"]) == (
            people["recipients_opened"],
            people["recipients_clicked"],
        )


def test_orphans(ingested: tuple[Path, list[dict[str, object]]], truth: dict) -> None:
    db, _ = ingested
    res = CliRunner().invoke(cli, ["--db", str(db), "status", "--format", "json"])
    orphans = {r["delivery_id"]: r for r in json.loads(res.stdout)["orphans"]}
    nl10 = truth["deliveries"]["NL-2026-10"]["hits"]
    assert orphans["NL-2026-10"]["orphan_hits"] == nl10["open"] + nl10["click"]
    assert orphans["NL-2026-10"]["unknown_delivery"] == nl10["open"] + nl10["click"]


def test_web_tracking_funnel(ingested: tuple[Path, list[dict[str, object]]], truth: dict) -> None:
    """The shop's page tags after the Black Friday clicks: the generator's own counts."""
    db, _ = ingested
    res = CliRunner().invoke(
        cli, ["--db", str(db), "report", "funnel", "--delivery", "PROMO-BF-2026", "--format", "json"]
    )
    assert res.exit_code == 0, res.stderr
    got, want = json.loads(res.stdout), truth["web"]["PROMO-BF-2026"]
    (web,) = got["web"]
    assert (web["page_views"], web["visitors"], web["transactions"]) == (
        want["page_views"],
        want["visitors"],
        want["transactions"],
    )
    steps = {s["step"]: s["readers"] for s in got["funnel"]}
    assert (steps["visited"], steps["converted"]) == (want["visitors"], want["converted"])
    (eur,) = got["revenue"]
    assert (eur["currency"], Decimal(eur["revenue"])) == ("EUR", Decimal(want["revenue_eur"]))
    anonymous = q(db, "SELECT count(*) FROM hits WHERE kind = 'page' AND resolution = 'anonymous'")
    assert anonymous == [(truth["anonymous_page_views"],)]
