//! Geo lookups against the test-written fixture database.

use std::net::IpAddr;

use super::*;

/// (address, expected country, expected prefix length in the address's family).
const CASES: &[(&str, Option<&str>, u8)] = &[
    ("81.2.69.160", Some("GB"), 24),
    ("1.128.3.4", Some("AU"), 16),
    ("8.8.8.8", Some("US"), 24),
    ("3.3.3.3", Some("US"), 8),
    ("200.160.1.1", Some("BR"), 20),
    ("2a02:8800::1", Some("GB"), 32),
    ("2400:cb00:1::2", Some("SG"), 32),
    ("2600:1f00::1", Some("US"), 24),
    ("::ffff:81.2.69.1", Some("GB"), 24),
    ("198.51.100.7", None, 24),
];

#[test]
fn lookups_find_known_networks() {
    let db = fixture_db();
    for &(addr, country, prefix_len) in CASES {
        let ip: IpAddr = addr.parse().unwrap();
        let hit = db.lookup(ip);
        let got = hit
            .cell
            .map(|cell| db.location(cell).country.unwrap().to_string());
        assert_eq!(got.as_deref(), country, "{addr}");
        assert_eq!(hit.prefix_len, prefix_len, "{addr}");
    }
}

#[test]
fn unknown_and_private_addresses_have_no_cell() {
    let db = fixture_db();
    for addr in ["10.1.2.3", "192.168.0.1", "fd00::1", "127.0.0.1"] {
        let hit = db.lookup(addr.parse().unwrap());
        assert_eq!(hit.cell, None, "{addr}");
        assert!(
            hit.prefix_len > 0,
            "{addr}: empty regions still have a network"
        );
    }
}

#[test]
fn city_records_keep_their_coordinates_and_country_records_use_the_table() {
    let db = fixture_db();
    let london = db.location(db.lookup("81.2.69.1".parse().unwrap()).cell.unwrap());
    assert_eq!(london.coordinates.latitude, 51.5142);
    assert_eq!(london.continent, Some(Continent::Europe));
    let us = db.location(db.lookup("3.1.1.1".parse().unwrap()).cell.unwrap());
    // The table's point for the United States is its capital, in the east.
    assert!(us.coordinates.longitude > -80.0 && us.coordinates.longitude < -75.0);
    assert_eq!(us.continent, Some(Continent::NorthAmerica));
}

#[test]
fn records_sharing_data_share_a_cell() {
    let db = fixture_db();
    let v4 = db.lookup("81.2.69.1".parse().unwrap()).cell;
    let v6 = db.lookup("2a02:8800::1".parse().unwrap()).cell;
    // Two networks, two records with equal content: the writer stores them once or twice, but
    // either way each resolves to a located cell with the same coordinates.
    assert_eq!(
        db.location(v4.unwrap()).coordinates,
        db.location(v6.unwrap()).coordinates
    );
}

#[test]
fn garbage_is_rejected() {
    let countries = CountryTable::default();
    let error = GeoDb::build(Cow::Borrowed(b"not a database"), &countries).unwrap_err();
    assert!(matches!(error, GeoError::Invalid(_)), "{error}");
    // A valid database whose records cannot be placed is useless for routing.
    let only_unknown = fixture::MmdbFixture::new()
        .country("10.0.0.0/8", "ZZ")
        .build();
    let error = GeoDb::build(Cow::Owned(only_unknown), &countries).unwrap_err();
    assert!(matches!(error, GeoError::NoLocations), "{error}");
}

#[test]
fn ipv6_addresses_carrying_ipv4_give_it_and_where_it_starts() {
    let cases: &[(&str, Option<(&str, u8)>)] = &[
        ("::ffff:81.2.69.160", Some(("81.2.69.160", 96))),
        ("::81.2.69.160", Some(("81.2.69.160", 96))),
        ("2002:5102:45a0::1", Some(("81.2.69.160", 16))),
        (
            "2002:5102:45a0:ffff:ffff:ffff:ffff:ffff",
            Some(("81.2.69.160", 16)),
        ),
        ("2003:5102:45a0::1", None),
        ("2001:db8::1", None),
        ("::1:ffff:5102:45a0", None),
    ];
    for &(v6, want) in cases {
        let got = embedded_ipv4(v6.parse().unwrap());
        let want = want.map(|(v4, at)| (v4.parse().unwrap(), at));
        assert_eq!(got, want, "{v6}");
    }
}

#[test]
fn widest_searched_by_halves_is_the_first_level_accepted() {
    // Monotone tests ("every place listed is one of these cells", with or without unlocated
    // space), each compared with a walk of the path level by level.
    let db = fixture_db();
    let n_cells = db.locations().len().min(8) as u32;
    let extra = [
        "10.1.2.3",
        "81.2.69.1",
        "3.200.1.1",
        "2a02:8800:ffff::1",
        "128.0.0.1",
    ];
    for addr in CASES.iter().map(|case| case.0).chain(extra) {
        let ip: IpAddr = addr.parse().unwrap();
        let hit = db.lookup(ip);
        let (bits, is_v4) = left_aligned(ip.to_canonical());
        let path = db.trie(is_v4).path_summaries(bits, hit.prefix_len);
        for mask in 0u32..1 << n_cells {
            for allow_unlocated in [false, true] {
                let mut accept = |summary: Summary| {
                    (allow_unlocated || !summary.unlocated)
                        && summary.places().all(
                            |place| matches!(place, Place::Cell(cell) if mask >> cell.0 & 1 == 1),
                        )
                };
                let want = path
                    .iter()
                    .position(|summary| accept(*summary))
                    .map_or(hit.prefix_len, |depth| depth as u8);
                let got = db.widest(ip, hit.prefix_len, &mut accept);
                assert_eq!(
                    got, want,
                    "{addr} cells {mask:#b} unlocated {allow_unlocated}"
                );
            }
        }
    }
}

#[test]
fn uniform_networks_are_exact_where_summaries_list_quads() {
    // Eight cities in one /16, more than a summary lists one by one.
    let mut fixture = fixture::MmdbFixture::new();
    for i in 0..8u32 {
        let network = format!("30.1.{}.0/19", i * 32);
        let lat = 50.0 + f64::from(i) * 0.7;
        let lon = -9.0 + f64::from(i) * 1.3;
        fixture = fixture.city(&network, lat, lon, "GB", "EU");
    }
    let countries = CountryTable::parse(COUNTRIES_CSV).unwrap();
    let db = GeoDb::build(Cow::Owned(fixture.build()), &countries).unwrap();
    let quads = vec![MIXED; db.quads().len()];
    let mut cells = vec![1; db.locations().len()];
    let one_answer = db.uniform_networks(&Answers {
        cells: &cells,
        quads: &quads,
        unlocated: 2,
    });
    let inside: IpAddr = "30.1.200.7".parse().unwrap();
    assert_eq!(one_answer.prefix_of(inside), Some(16), "{one_answer:?}");
    assert_eq!(one_answer.prefix_of("30.2.0.1".parse().unwrap()), None);
    assert_eq!(one_answer.prefix_of("::1".parse().unwrap()), None);
    // One city answers otherwise: the /16 has two answers, and its halves list their cells.
    cells[db.lookup(inside).cell.unwrap().0 as usize] = 3;
    let two_answers = db.uniform_networks(&Answers {
        cells: &cells,
        quads: &quads,
        unlocated: 2,
    });
    assert_eq!(two_answers.prefix_of(inside), None, "{two_answers:?}");
}

#[test]
fn uniform_networks_are_found_at_any_depth_and_in_address_order() {
    // 40.0.0.0/16 holds eight cities of answer 1; 40.1.0.0/16 splits into a /17 of eight
    // cities of answer 2 and, deeper, a /24 of eight of answer 3 beside unplaced space.
    // Summaries list quads everywhere above the cities (all MIXED below), so only the walk
    // can tell.
    let mut networks = Vec::new();
    for i in 0..8u32 {
        networks.push(format!("40.0.{}.0/19", i * 32));
        networks.push(format!("40.1.{}.0/20", i * 16));
        networks.push(format!("40.1.200.{}/27", i * 32));
    }
    let mut fixture = fixture::MmdbFixture::new();
    for (i, network) in networks.iter().enumerate() {
        let lat = 40.0 + (i % 16) as f64 * 0.9;
        let lon = -8.0 + i as f64 * 0.7;
        fixture = fixture.city(network, lat, lon, "ES", "EU");
    }
    let countries = CountryTable::parse(COUNTRIES_CSV).unwrap();
    let db = GeoDb::build(Cow::Owned(fixture.build()), &countries).unwrap();
    let quads = vec![MIXED; db.quads().len()];
    let mut cells = vec![0; db.locations().len()];
    // Each group's eight networks, from its first address by its networks' size.
    for (first, step, answer) in [
        ("40.0.0.1", 32 << 8, 1),
        ("40.1.0.1", 16 << 8, 2),
        ("40.1.200.1", 32, 3),
    ] {
        let first: Ipv4Addr = first.parse().unwrap();
        for i in 0..8u32 {
            let at = Ipv4Addr::from_bits(first.to_bits() + i * step);
            cells[db.lookup(at.into()).cell.unwrap().0 as usize] = answer;
        }
    }
    let uniform = db.uniform_networks(&Answers {
        cells: &cells,
        quads: &quads,
        unlocated: 9,
    });
    for (ip, len) in [
        ("40.0.0.1", Some(16)),
        ("40.0.255.255", Some(16)),
        ("40.1.0.1", Some(17)),
        ("40.1.127.255", Some(17)),
        ("40.1.200.1", Some(24)),
        ("40.1.200.255", Some(24)),
        // Unplaced, and cells listed one by one: not the walk's to find.
        ("40.1.128.1", None),
        ("40.2.0.1", None),
    ] {
        assert_eq!(
            uniform.prefix_of(ip.parse().unwrap()),
            len,
            "{ip} in {uniform:?}"
        );
    }
}

#[test]
fn common_levels_from_keys_match_the_common_ancestors() {
    let db = fixture_db();
    let tree = &db.tree;
    let n = tree.quads.len() as u32;
    for a in 0..n {
        for b in (a..n).step_by(3) {
            let common = tree.common_ancestor(a, b);
            assert_eq!(
                tree.common_level(a, b),
                tree.quads[common as usize].level,
                "{a} {b}"
            );
        }
    }
    assert!(n > 10, "the fixture has quads at several levels: {n}");
}
