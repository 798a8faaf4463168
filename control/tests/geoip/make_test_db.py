#!/usr/bin/env python3
"""Writes countries.mmdb, the tiny GeoIP country database the compiler tests read.

The file is committed, so the tests need neither this script nor the network. To regenerate it
(only when the networks below change):

    python3 -m venv /tmp/mmdb && /tmp/mmdb/bin/pip install mmdb-writer==0.2.7
    /tmp/mmdb/bin/python control/tests/geoip/make_test_db.py

Like MaxMind's GeoLite2-Country it is an IPv6 database with IPv4 networks in the ::/96 subtree,
and each record is {"country": {"iso_code": CC}}. The networks are test ranges, not real
GeoIP data; control/tests/compile_geoip.rs relies on exactly these.
"""

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

NETWORKS = {
    "US": ["10.10.0.0/16", "10.40.0.0/16", "10.41.0.0/16", "2001:db8:a::/48"],
    # 10.10.5.0/24 sits inside US's 10.10.0.0/16: a more specific network of another country.
    "DE": ["10.10.5.0/24", "10.30.0.0/16", "2001:db8:b::/48"],
    "CA": ["10.20.0.0/16"],
    # A country no test region lists.
    "JP": ["10.50.0.0/16"],
}


def main() -> None:
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="Switchyard-Test-Country",
        languages=["en"],
        description="Switchyard compiler test data (not real GeoIP data)",
    )
    # Broad networks first: a later, more specific insert overrides part of an earlier one.
    items = [(net, cc) for cc, nets in NETWORKS.items() for net in nets]
    items.sort(key=lambda item: int(item[0].split("/")[1]) + (96 if "." in item[0] else 0))
    for net, cc in items:
        writer.insert_network(IPSet([net]), {"country": {"iso_code": cc}})
    out = Path(__file__).with_name("countries.mmdb")
    writer.to_db_file(str(out))
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
