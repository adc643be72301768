//! Client location: the only module that knows about MaxMind-format databases.
//!
//! [`GeoDb::build`] walks the whole database once, decodes each distinct data record once, and
//! turns it into one of our [`Location`]s, numbered as a [`CellId`]. On the query path,
//! [`GeoDb::lookup`] is a trie walk plus a binary search: no decoding, no allocation, no lock.
//! Everything that depends only on the client's location (routing rankings, prepared answers) is
//! computed per cell when a snapshot is built, not per query.

mod countries;
mod location;

use std::borrow::Cow;
use std::net::IpAddr;

use maxminddb::{Reader, WithinOptions};
use serde::Deserialize;

pub use countries::{COUNTRIES_CSV, CountryTable};
pub use location::{Continent, Coordinates, CountryCode, Location};

/// Index of a distinct located record of the geo database: clients in the same cell share every
/// routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellId(pub u32);

/// What the database says about one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeoHit {
    /// The client's cell, or `None` when the database cannot place it (private or unknown
    /// network, or a record with neither coordinates nor a known country).
    pub cell: Option<CellId>,
    /// Prefix length, in the address's own family, of the database network that matched (or of
    /// the empty region around the address). No other answer can exist inside it.
    pub prefix_len: u8,
}

/// A loaded geo database.
pub struct GeoDb {
    reader: Reader<Cow<'static, [u8]>>,
    /// Data-section offsets of located records, sorted; a record's position is its [`CellId`].
    offsets: Vec<usize>,
    /// The location of each cell, indexed by [`CellId`].
    locations: Vec<Location>,
    /// A short description for logs: type and build date.
    description: String,
}

/// The geo database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file is not a valid MaxMind DB.
    #[error("not a valid MaxMind DB: {0}")]
    Invalid(#[from] maxminddb::MaxMindDbError),
    /// The database has no record we can place on a map.
    #[error("no record in the database has coordinates or a country in the country table")]
    NoLocations,
}

impl GeoDb {
    /// Opens the database held in `bytes` and indexes every distinct record.
    ///
    /// Records that carry coordinates (GeoIP2/GeoLite2 City, DB-IP City) use them; records that
    /// carry only a country (GeoIP2 Country, ip-location-db) use the country's point from
    /// `countries`. This walks the whole tree: run it off the query path (it is part of a snapshot
    /// build).
    ///
    /// # Errors
    ///
    /// [`GeoError`] when the file is not a MaxMind DB or nothing in it can be located.
    pub fn build(bytes: Cow<'static, [u8]>, countries: &CountryTable) -> Result<GeoDb, GeoError> {
        let reader = Reader::from_source(bytes)?;
        let mut records: Vec<(usize, Location)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for network in reader.networks(WithinOptions::default())? {
            let network = network?;
            let Some(offset) = network.offset() else {
                continue;
            };
            if !seen.insert(offset) {
                continue;
            }
            let record: Option<RawRecord<'_>> = network.decode()?;
            if let Some(location) = record.and_then(|r| r.locate(countries)) {
                records.push((offset, location));
            }
        }
        if records.is_empty() {
            return Err(GeoError::NoLocations);
        }
        records.sort_by_key(|(offset, _)| *offset);
        let metadata = reader.metadata();
        let description = format!(
            "{} built {} ({} distinct locations)",
            metadata.database_type,
            metadata.build_epoch,
            records.len()
        );
        let (offsets, locations) = records.into_iter().unzip();
        Ok(GeoDb {
            reader,
            offsets,
            locations,
            description,
        })
    }

    /// Locates one address. IPv4-mapped IPv6 addresses are looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> GeoHit {
        let ip = ip.to_canonical();
        let Ok(result) = self.reader.lookup(ip) else {
            // An IPv6 address in an IPv4-only database: nothing is known about it.
            return GeoHit {
                cell: None,
                prefix_len: 0,
            };
        };
        let prefix_len = match (result.network(), ip) {
            (Ok(network), IpAddr::V4(_)) if network.is_ipv4() => network.prefix(),
            // The tree ended above the IPv4 subtree: the whole IPv4 space shares this answer.
            (Ok(_), IpAddr::V4(_)) => 0,
            (Ok(network), IpAddr::V6(_)) => network.prefix(),
            (Err(_), _) => 0,
        };
        let cell = result
            .offset()
            .and_then(|offset| self.offsets.binary_search(&offset).ok())
            .map(|index| CellId(index as u32));
        GeoHit { cell, prefix_len }
    }

    /// Every cell's location, indexed by [`CellId`].
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// The location of one cell.
    pub fn location(&self, cell: CellId) -> &Location {
        &self.locations[cell.0 as usize]
    }

    /// Database type, build time and size, for logs.
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// The fields we read from a record, in either schema we understand: GeoIP2
/// (`location`, `country`, `registered_country`, `continent`) or ip-location-db (`country_code`,
/// `latitude`, `longitude`). Everything else in the record is skipped.
#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow)]
    country_code: Option<&'a str>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    location: Option<RawCoordinates>,
    #[serde(borrow)]
    country: Option<RawCountry<'a>>,
    #[serde(borrow)]
    registered_country: Option<RawCountry<'a>>,
    #[serde(borrow)]
    continent: Option<RawContinent<'a>>,
}

#[derive(Deserialize)]
struct RawCoordinates {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(Deserialize)]
struct RawCountry<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawContinent<'a> {
    code: Option<&'a str>,
}

impl RawRecord<'_> {
    fn locate(&self, countries: &CountryTable) -> Option<Location> {
        let country = self
            .country
            .as_ref()
            .and_then(|c| c.iso_code)
            .or(self.country_code)
            .or_else(|| self.registered_country.as_ref().and_then(|c| c.iso_code))
            .and_then(|code| code.parse::<CountryCode>().ok());
        let from_table = country.and_then(|code| countries.get(code));
        let continent = self
            .continent
            .as_ref()
            .and_then(|c| c.code)
            .and_then(|code| code.parse::<Continent>().ok())
            .or(from_table.map(|(continent, _)| continent));
        let (lat, lon) = match &self.location {
            Some(location) => (location.latitude, location.longitude),
            None => (self.latitude, self.longitude),
        };
        let own = match (lat, lon) {
            (Some(lat), Some(lon)) => Coordinates::new(lat, lon),
            _ => None,
        };
        let coordinates = own.or(from_table.map(|(_, point)| point))?;
        Some(Location {
            coordinates,
            country,
            continent,
        })
    }
}

#[cfg(test)]
#[path = "../../tests/common/mmdb_fixture.rs"]
pub(crate) mod fixture;

#[cfg(test)]
mod tests;
