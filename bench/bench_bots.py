"""Accuracy of the machine/bot classification, on generated traffic whose truth is known.

Generates one delivery (--recipients, default 5,000) and the tracking log its recipients and
the machines in front of them would leave, each line labelled with what made it:

  people             open (desktop, mobile, Outlook) minutes to days after the send; some click
                     one link, some several links minutes apart, some two links 3-6 s apart
  Apple Mail (MPP)   Apple's proxy prefetches the pixel at delivery (agent "Mozilla/5.0", from
                     Apple's relay networks; some with an iPhone agent from 17.0.0.0/8); the
                     person may still click later from their own device
  Gmail users        the pixel fetched by GoogleImageProxy when they open (a person's open)
  corporate people   behind a mail gateway: the gateway's scanner follows every link (trap,
                     mirror and opt-out included) within a second, at delivery; or a single
                     link, 1-4 s after the send (15%: 6-90 s, which no rule catches); or HEADs
                     every link; the people themselves read and click from the company's
                     network (the gateway's /24), 10% of them as the message arrives
  hard people        0.5% of the others click a link 1-4 s after the send, images blocked
  crawler agents     a few recipients' pixels fetched by HTTP libraries

Then ingests it with tracklog (a child process, the real CLI) and prints, against the truth:
precision and recall of each machine class, the confusion matrix (truth x class, accepted hits)
and each human indicator of `report delivery` against the same indicator computed from the
people's lines by a plain Python count. Run: python bench/bench_bots.py [--recipients N]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

DELIVERY = "BOTS-2026"
SENT = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
LINKS = ["hero", "pick-1", "pick-2", "pick-3", "blog", "stores"]
TRAP = "trap"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
ANDROID = "Mozilla/5.0 (Linux; Android 14; SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36"
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.18129; Pro)"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
MPP = "Mozilla/5.0"
SCANNER_UAS = (
    "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
    DESKTOP,
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/119.0.6045.105 Safari/537.36",
)
LIBRARIES = ("python-requests/2.32.3", "Go-http-client/1.1", "curl/8.5.0")
APPLE_RELAY = ("172.225.42", "104.28.40", "146.75.168")  # Private Relay egress (matched by agent)
GOOGLE = ("66.249.84", "66.249.88")


@dataclass
class Line:
    ts: datetime
    ip: str
    method: str
    path: str
    ua: str
    truth: str  # human | machine_open | bot_click
    kind: str  # open | click | mirror | optout
    recipient: str
    link: str | None = None


class Traffic:
    def __init__(self, rng: random.Random, recipients: int) -> None:
        self.rng = rng
        self.n = recipients
        self.lines: list[Line] = []

    def ip(self, prefix: str | None = None) -> str:
        r = self.rng
        if prefix:
            return f"{prefix}.{r.randrange(1, 255)}"
        return f"{r.choice((81, 86, 90, 92, 109, 176, 188))}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"

    def add(
        self,
        t: datetime,
        ip: str,
        ua: str,
        truth: str,
        kind: str,
        rid: str,
        link: str | None = None,
        method: str = "GET",
    ) -> None:
        path = {
            "open": f"/o/{DELIVERY}/{rid}.gif",
            "click": f"/c/{DELIVERY}/{link}/{rid}",
            "mirror": f"/m/{DELIVERY}/{rid}",
            "optout": f"/u/{DELIVERY}/{rid}",
        }[kind]
        self.lines.append(Line(t, ip, method, path, ua, truth, kind, rid, link))

    def later(self, start: datetime, median_minutes: float) -> datetime:
        return start + timedelta(minutes=self.rng.lognormvariate(0, 1.2) * median_minutes)

    def person_reads(self, rid: str, ip: str, ua: str, opener: str | None, opened: datetime) -> None:
        """A person reads: the pixel (fetched by `opener`'s proxy, or not at all when None), then
        maybe clicks."""
        r = self.rng
        if opener == "own":
            self.add(opened, ip, ua, "human", "open", rid)
        elif opener == "gmail":
            self.add(opened, self.ip(r.choice(GOOGLE)), GMAIL_PROXY, "human", "open", rid)
        if r.random() < 0.35:
            t = opened + timedelta(seconds=r.uniform(8, 300))
            style = r.random()
            if style < 0.5:
                self.add(t, ip, ua, "human", "click", rid, r.choice(LINKS))
            elif style < 0.8:  # two links a few seconds apart
                a, b = r.sample(LINKS, 2)
                self.add(t, ip, ua, "human", "click", rid, a)
                self.add(t + timedelta(seconds=r.uniform(3, 6)), ip, ua, "human", "click", rid, b)
            else:  # a browse of several links, minutes apart
                for link in r.sample(LINKS, 3):
                    self.add(t, ip, ua, "human", "click", rid, link)
                    t += timedelta(seconds=r.uniform(30, 600))
        if r.random() < 0.02:
            self.add(opened + timedelta(seconds=r.uniform(20, 600)), ip, ua, "human", "optout", rid)
        if r.random() < 0.03:
            self.add(opened + timedelta(seconds=r.uniform(1, 30)), ip, ua, "human", "mirror", rid)

    def scan_everything(self, rid: str, gateway: str, ua: str) -> None:
        t = SENT + timedelta(seconds=self.rng.uniform(5, 120))
        targets = [("mirror", None)] + [("click", link) for link in [*LINKS, TRAP]] + [("optout", None)]
        for kind, link in targets:
            self.add(t, gateway, ua, "bot_click", kind, rid, link)
            t += timedelta(seconds=self.rng.uniform(0, 0.12))

    def generate(self) -> list[Line]:
        r = self.rng
        gateways = [(self.ip(f"40.94.{29 + g}"), r.choice(SCANNER_UAS)) for g in range(4)]
        for i in range(1, self.n + 1):
            rid = f"r{i:06d}"
            who = r.random()
            home, opened = self.ip(), self.later(SENT, 90)
            reads = r.random() < 0.45
            if who < 0.20:  # Apple Mail with MPP: the proxy prefetches at delivery
                at = SENT + timedelta(seconds=r.uniform(3, 600))
                if r.random() < 0.8:
                    self.add(at, self.ip(r.choice(APPLE_RELAY)), MPP, "machine_open", "open", rid)
                else:
                    self.add(at, self.ip("17.58.63"), IPHONE, "machine_open", "open", rid)
                if reads:
                    self.person_reads(rid, home, IPHONE, None, opened)
            elif who < 0.35:  # Gmail
                if reads:
                    self.person_reads(rid, home, r.choice((DESKTOP, ANDROID)), "gmail", opened)
            elif who < 0.50:  # a company behind a mail gateway
                gateway, scanner_ua = gateways[i % len(gateways)]
                scan = r.random()
                if scan < 0.5:
                    self.scan_everything(rid, gateway, scanner_ua)
                elif scan < 0.7:  # one link, with a browser's agent: mostly at the send, 15% later
                    at = SENT + timedelta(
                        seconds=r.uniform(0.5, 4) if r.random() < 0.85 else r.uniform(6, 90)
                    )
                    self.add(at, gateway, DESKTOP, "bot_click", "click", rid, r.choice(LINKS))
                elif scan < 0.8:  # HEAD on every link
                    at = SENT + timedelta(seconds=r.uniform(5, 120))
                    for link in LINKS:
                        self.add(at, gateway, DESKTOP, "bot_click", "click", rid, link, method="HEAD")
                        at += timedelta(seconds=r.uniform(0, 0.5))
                if reads:  # the person, from the company's network (the gateway's /24), some as
                    # the message arrives (while the gateway may still be scanning it)
                    office = gateway.rsplit(".", 1)[0] + f".{r.randrange(1, 255)}"
                    if r.random() < 0.1:
                        opened = SENT + timedelta(seconds=r.uniform(5, 150))
                    self.person_reads(rid, office, r.choice((OUTLOOK, DESKTOP)), "own", opened)
            else:
                if r.random() < 0.005:  # images blocked, clicks a link as the message lands
                    at = SENT + timedelta(seconds=r.uniform(1, 4))
                    self.add(at, home, DESKTOP, "human", "click", rid, r.choice(LINKS))
                    continue
                if r.random() < 0.01:  # an HTTP library fetches the pixel
                    self.add(
                        self.later(SENT, 30), self.ip(), r.choice(LIBRARIES), "machine_open", "open", rid
                    )
                if reads:
                    self.person_reads(
                        rid, home, r.choice((DESKTOP, MAC, ANDROID, IPHONE, OUTLOOK)), "own", opened
                    )
        return sorted(self.lines, key=lambda x: x.ts)


def log_line(x: Line) -> str:
    when = x.ts.strftime("%d/%b/%Y:%H:%M:%S +0000")
    status = 302 if x.kind == "click" else 200
    return f'{x.ip} - - [{when}] "{x.method} {x.path} HTTP/1.1" {status} 43 "-" "{x.ua}"'


def write_inputs(out: Path, lines: list[Line], recipients: int) -> None:
    (out / "access.log").write_text("".join(log_line(x) + "\n" for x in lines), encoding="utf-8")
    with (out / "recipients.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["recipient_id", "email", "status"])
        for i in range(1, recipients + 1):
            w.writerow([f"r{i:06d}", f"user{i}@example.com", "sent"])
    links = [{"id": link, "url": f"https://shop.example.com/{link}", "label": link} for link in LINKS]
    links.append({"id": TRAP, "url": "https://shop.example.com/x", "label": "hidden", "category": "trap"})
    manifest = {
        "delivery": DELIVERY,
        "label": "Bots benchmark",
        "sent_at": SENT.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "links": links,
        "recipients": "recipients.csv",
    }
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (out / "tracklog.toml").write_text("verify_signatures = false\n", encoding="utf-8")


def people_indicators(lines: list[Line], recipients: int) -> dict[str, float]:
    """The human indicators by a plain count of the people's lines."""
    people = [x for x in lines if x.truth == "human"]
    opens = [x for x in people if x.kind == "open"]
    clicks = [x for x in people if x.kind == "click"]
    openers = {x.recipient for x in people}
    clickers = {x.recipient for x in clicks}
    return {
        "opens_total": len(opens),
        "opens_unique": len(openers),
        "clicks_total": len(clicks),
        "clicks_unique": len(clickers),
        "persons_clicked": len({(x.ip, x.ua) for x in clicks}),
        "mirror_views": sum(1 for x in people if x.kind == "mirror"),
        "optout_clicks": sum(1 for x in people if x.kind == "optout"),
        "open_rate": round(100 * len(openers) / recipients, 1),
        "click_rate": round(100 * len(clickers) / recipients, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20261103)
    args = parser.parse_args()
    lines = Traffic(random.Random(args.seed), args.recipients).generate()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_inputs(out, lines, args.recipients)
        db = out / "bots.duckdb"
        base = [
            sys.executable,
            "-m",
            "tracklog",
            "--db",
            str(db),
            "--config",
            str(out / "tracklog.toml"),
            "--quiet",
        ]
        subprocess.run(
            [*base, "ingest", "--manifest", str(out / "manifest.json"), str(out / "access.log")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        report = json.loads(
            subprocess.run(
                [*base, "report", "delivery", DELIVERY, "--format", "json"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        import duckdb

        with duckdb.connect(str(db), read_only=True) as con:
            predicted = dict(con.execute("SELECT line_no, coalesce(class, 'human') FROM hits").fetchall())
    truth = {n: x.truth for n, x in enumerate(lines, start=1)}
    classes = ("human", "machine_open", "bot_click")
    matrix = Counter((truth[n], predicted.get(n, "(not a hit)")) for n in truth)
    print(
        f"{len(lines)} hits, {args.recipients} recipients; truth: "
        + ", ".join(f"{c} {sum(1 for t in truth.values() if t == c)}" for c in classes)
    )
    print("\nConfusion matrix (rows: truth, columns: tracklog's class)\n")
    print("| truth \\ class | " + " | ".join(classes) + " |")
    print("|---|" + "---:|" * len(classes))
    for t in classes:
        print(f"| {t} | " + " | ".join(str(matrix[(t, p)]) for p in classes) + " |")
    print("\n| class | precision | recall |\n|---|---:|---:|")
    for c in classes[1:]:
        tp = matrix[(c, c)]
        flagged = sum(matrix[(t, c)] for t in classes)
        actual = sum(matrix[(c, p)] for p in classes)
        print(f"| {c} | {tp / flagged if flagged else 0:.3f} | {tp / actual if actual else 0:.3f} |")
    want = people_indicators(lines, args.recipients)
    want["machine_opens"] = sum(1 for x in lines if x.truth == "machine_open")
    want["bot_clicks"] = sum(1 for x in lines if x.truth == "bot_click" and x.kind == "click")
    print("\n| indicator | truth | tracklog | error |\n|---|---:|---:|---:|")
    for name, value in want.items():
        got = report[name]
        err = (got - value) / value * 100 if value else 0.0
        print(f"| {name} | {value} | {got} | {err:+.2f}% |")


if __name__ == "__main__":
    main()
