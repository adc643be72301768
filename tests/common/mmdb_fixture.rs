//! A small MaxMind DB written by the tests themselves: known networks with known places, in both
//! schemas meridian reads (GeoIP2 City and ip-location-db country), IPv4 and IPv6.
//!
//! Shared by the library's unit tests (`geo::fixture`) and the integration tests; it is never
//! part of the built server.
#![allow(unreachable_pub, dead_code)]

use std::net::IpAddr;

use maxminddb_writer::Database;
use maxminddb_writer::metadata::IpVersion;
use maxminddb_writer::paths::IpAddrWithMask;
use serde::Serialize;

/// Builder of a test database.
pub struct MmdbFixture {
    db: Database,
}

#[derive(Serialize)]
struct CityRecord {
    location: Point,
    country: Iso,
    continent: Code,
}

#[derive(Serialize)]
struct Point {
    latitude: f64,
    longitude: f64,
}

#[derive(Serialize)]
struct Iso {
    iso_code: String,
}

#[derive(Serialize)]
struct Code {
    code: String,
}

#[derive(Serialize)]
struct CountryRecord {
    country_code: String,
}

impl MmdbFixture {
    /// An empty IPv6 database (IPv4 networks live in its ::/96 subtree, as in MaxMind's files).
    pub fn new() -> Self {
        let mut db = Database::default();
        db.metadata.ip_version = IpVersion::V6;
        db.metadata.binary_format_major_version = 2;
        db.metadata.database_type = "meridian-test".to_owned();
        Self { db }
    }

    /// A GeoIP2-City-style record: coordinates, country and continent.
    pub fn city(
        mut self,
        network: &str,
        lat: f64,
        lon: f64,
        country: &str,
        continent: &str,
    ) -> Self {
        let record = CityRecord {
            location: Point {
                latitude: lat,
                longitude: lon,
            },
            country: Iso {
                iso_code: country.to_owned(),
            },
            continent: Code {
                code: continent.to_owned(),
            },
        };
        let data = self.db.insert_value(record).expect("serialize record");
        self.db.insert_node(tree_path(network), data);
        self
    }

    /// An ip-location-db-style record: only `country_code`.
    pub fn country(mut self, network: &str, country: &str) -> Self {
        let record = CountryRecord {
            country_code: country.to_owned(),
        };
        let data = self.db.insert_value(record).expect("serialize record");
        self.db.insert_node(tree_path(network), data);
        self
    }

    /// The database file's bytes.
    pub fn build(self) -> Vec<u8> {
        self.db.write_to(Vec::new()).expect("write database")
    }
}

/// Where an IPv4 or IPv6 network sits in an IPv6 tree.
fn tree_path(network: &str) -> IpAddrWithMask {
    let (addr, len) = network.split_once('/').expect("network/len");
    let len: u8 = len.parse().expect("prefix length");
    match addr.parse::<IpAddr>().expect("address") {
        IpAddr::V4(v4) => IpAddrWithMask::new(IpAddr::V6(v4.to_ipv6_compatible()), 96 + len),
        v6 => IpAddrWithMask::new(v6, len),
    }
}

/// The database most tests use. Known answers against the example datacenters:
/// GB → eu-west, AU and SG → ap-south, Mountain View → us-west, US by country → us-east,
/// BR → sa-east, 198.51.100.0/24 → no location.
pub fn standard() -> Vec<u8> {
    MmdbFixture::new()
        .city("81.2.69.0/24", 51.5142, -0.0931, "GB", "EU")
        .city("1.128.0.0/16", -33.8688, 151.2093, "AU", "OC")
        .city("8.8.8.0/24", 37.386, -122.0838, "US", "NA")
        .country("3.0.0.0/8", "US")
        .city("200.160.0.0/20", -23.5505, -46.6333, "BR", "SA")
        .city("2a02:8800::/32", 51.5142, -0.0931, "GB", "EU")
        .city("2400:cb00::/32", 1.2897, 103.8501, "SG", "AS")
        .country("2600:1f00::/24", "US")
        .country("198.51.100.0/24", "ZZ")
        .build()
}
