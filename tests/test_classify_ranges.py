"""The bundled proxy-range list (Apple's published egress ranges plus 17.0.0.0/8): it parses, it
holds what the file holds (counted here with ipaddress, not with the loader), it has the
prefixes Apple publishes, and an open from one of its networks is a machine's while one from
just outside is a person's; overlapping and nested ranges of a loaded list match as listed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import duckdb
from click.testing import CliRunner
from conftest import IPHONE, NL1_SENT, DataSet, Hit, build_db, make_dataset

from tracklog import classify, derived
from tracklog.cli import cli

LATER = NL1_SENT + dt.timedelta(hours=2)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def shipped_text() -> str:
    return (resources.files("tracklog") / "data" / classify.BUNDLED_RANGES).read_text(encoding="utf-8")


def shipped_networks() -> list[Network]:
    """The file read line by line with ipaddress alone: '#' lines and blank lines skipped."""
    nets: list[Network] = []
    for line in shipped_text().splitlines():
        if line.strip() and not line.startswith("#"):
            nets.append(ipaddress.ip_network(line.split(",")[0].strip()))
    return nets


def disjoint_and_sorted(nets: Sequence[Network]) -> bool:
    return all(int(a.broadcast_address) < int(b.network_address) for a, b in itertools.pairwise(nets))


def inside(ip: str, nets: list[Network]) -> bool:
    """Whether the proxy_range signal must flag `ip`: IPv4 by address, IPv6 by its /64."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6:
        net64 = ipaddress.ip_network(f"{ip}/64", strict=False)
        return any(n.version == 6 and (net64.overlaps(n)) for n in nets)
    return any(n.version == 4 and addr in n for n in nets)


def run(db: Path, *args: str) -> str:
    env = {"TRACKLOG_CONFIG": "", "TRACKLOG_DB": "", "NO_COLOR": "1"}
    result = CliRunner().invoke(cli, ["--db", str(db), *args], env=env)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def classes_of(db: Path) -> list[tuple[str | None, str | None]]:
    """The stored classes, brought up to date as a report would (tracklog.derived.sync)."""
    with derived.open_reader(db, wait=10) as con:
        return con.execute("SELECT class, reasons FROM hits ORDER BY line_no").fetchall()


def test_the_shipped_list_parses_whole() -> None:
    nets = shipped_networks()
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    # the snapshot's 3291 IPv4 and 10457 IPv6 networks, and 17.0.0.0/8 before them
    assert (len(v4), len(v6)) == (3292, 10457)
    table = classify.parse_ranges(shipped_text(), "bundled")
    families = table.column("family").to_pylist()
    assert (families.count(4), families.count(6)) == (len(v4), len(v6))
    # the snapshot is a collapsed set: sorted, no two networks overlap
    assert disjoint_and_sorted(v4[1:]) and disjoint_and_sorted(v6)
    # the header says where the list comes from
    assert "005aeb4ae0ba2c2c604641c72a1846f8a76bc995" in shipped_text()


def test_the_shipped_list_has_apple_s_published_prefixes() -> None:
    nets = set(shipped_networks())
    published = [
        "17.0.0.0/8",  # Apple's own network (added by tracklog)
        "104.28.28.0/26",  # Cloudflare's egress for Private Relay
        "140.248.0.0/23",  # Fastly
        "146.75.128.0/23",
        "172.224.226.0/26",  # Akamai
        "172.226.188.0/22",
        "2606:54c0::/35",
        "2a02:26f7:b000:4000::/64",
        "2a04:4e41:700::/40",
        "2a09:bac3:d580::/45",
    ]
    assert [p for p in published if ipaddress.ip_network(p) not in nets] == []


def test_an_open_from_a_shipped_network_is_a_machine_s_and_just_outside_a_person_s(tmp_path: Path) -> None:
    nets = shipped_networks()
    v4_net = ipaddress.ip_network("104.28.72.36/31")  # a network of the snapshot, others around it
    v6_net = ipaddress.ip_network("2a09:bac3:d580::/45")  # the last network of the list
    in_v4, out_v4 = str(v4_net.broadcast_address), str(v4_net.broadcast_address + 1)
    before_v4 = str(v4_net.network_address - 1)
    in_v6 = str(v6_net.broadcast_address)
    out_v6 = str(v6_net.broadcast_address + 1)  # the next /64
    ips = [in_v4, out_v4, before_v4, in_v6, out_v6, "17.253.1.1"]
    assert [inside(ip, nets) for ip in ips] == [True, False, False, True, False, True]
    hits = [Hit("NL1", f"r{i + 1}", "open", LATER, ua=IPHONE, ip=ip) for i, ip in enumerate(ips)]
    db = build_db(tmp_path / "s.duckdb", DataSet(make_dataset().deliveries, hits))
    expected = [("machine_open", "proxy_range") if inside(ip, nets) else ("human", None) for ip in ips]
    assert classes_of(db) == expected


def test_overlapping_and_nested_ranges_match_as_listed(tmp_path: Path) -> None:
    """A refreshed list need not be collapsed: a network inside another, networks that overlap,
    the same network twice, IPv6 networks narrower than the /64 matched on."""
    listed = [
        "10.0.0.0/8",
        "10.1.0.0/16",  # inside 10.0.0.0/8
        "10.200.0.0/30",  # inside too, after 10.1.0.0/16
        "11.0.0.0/31",
        "11.0.0.0/32",  # the same start
        "11.0.0.0/31",  # twice
        "12.0.0.8/29",
        "12.0.0.16/30",  # adjacent to the one before
        "2001:db8::/32",
        "2001:db8:0:1:8000::/65",  # inside, narrower than a /64
        "2001:db9:0:5:1::/80",  # alone, narrower than a /64
    ]
    nets = [ipaddress.ip_network(n) for n in listed]
    ips = [
        "10.255.255.255",  # in 10.0.0.0/8, after the nested ones
        "10.200.0.9",  # in 10.0.0.0/8 only
        "11.0.0.1",
        "11.0.0.2",  # outside
        "12.0.0.19",
        "12.0.0.20",  # outside
        "9.255.255.255",  # outside
        "2001:db8:ffff:ffff::1",
        "2001:db9:0:5::7",  # the /64 of a listed /80
        "2001:db9:0:6::1",  # outside
    ]
    expected_in = [True, True, True, False, True, False, False, True, True, False]
    assert [inside(ip, nets) for ip in ips] == expected_in
    hits = [
        Hit("NL1", f"r{i % 7 + 1}", "open", LATER + dt.timedelta(hours=i), ua=IPHONE, ip=ip)
        for i, ip in enumerate(ips)
    ]
    db = build_db(tmp_path / "o.duckdb", DataSet(make_dataset().deliveries, hits))
    ranges = tmp_path / "ranges.csv"
    ranges.write_text("# a list with overlaps\n" + "\n".join(f"{n},XX,XX-1,City," for n in listed) + "\n")
    rows = json.loads(run(db, "proxy-ranges", "update", "--from", str(ranges), "--format", "json"))
    assert {r["delivery"]: r["machine_opens"] for r in rows}["NL1"] == sum(expected_in)
    assert classes_of(db) == [("machine_open", "proxy_range") if i else ("human", None) for i in expected_in]


def test_proxy_ranges_update_loads_the_real_size_list(tmp_path: Path) -> None:
    """The shipped file given to `proxy-ranges update --from` (as a downloaded list would be):
    every network stored, and the classes the same as with the bundled list."""
    ips = ["104.28.72.37", "104.28.72.38", "2a02:26f7:b000:4000::1", "2a02:26f7:b000:4001::1"]
    hits = [Hit("NL1", f"r{i + 1}", "open", LATER, ua=IPHONE, ip=ip) for i, ip in enumerate(ips)]
    db = build_db(tmp_path / "u.duckdb", DataSet(make_dataset().deliveries, hits))
    before = classes_of(db)
    copy = tmp_path / "egress-ip-ranges.csv"
    copy.write_text(shipped_text())
    run(db, "proxy-ranges", "update", "--from", str(copy), "--format", "json")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT ranges FROM proxy_ranges_source").fetchall() == [
            (len(shipped_networks()),)
        ]
        assert con.execute("SELECT count(*) FROM proxy_ranges").fetchall() == [(len(shipped_networks()),)]
    nets = shipped_networks()
    assert (
        classes_of(db)
        == before
        == [("machine_open", "proxy_range") if inside(ip, nets) else ("human", None) for ip in ips]
    )


def test_comment_lines_are_skipped() -> None:
    table = classify.parse_ranges("# source: x, y\n   # indented, too\n\n17.0.0.0/8\n", "c.csv")
    assert table.num_rows == 1
