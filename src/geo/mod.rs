//! Client location: the only module that knows about MaxMind-format databases.
//!
//! [`GeoDb::build`] walks the whole database once, decodes each distinct data record once, and
//! turns it into one of our [`Location`]s; each distinct location is a [`CellId`]. It then builds
//! our own index (`index.rs`): a trie of the networks per address family and a quadtree of the
//! locations. The MaxMind reader is dropped after the build: on the query path,
//! [`GeoDb::lookup`] is a walk of our trie, with no decoding, no allocation and no lock.
//! Everything that depends only on the client's location (routing decisions, prepared answers)
//! is computed when a snapshot is built, not per query.

mod countries;
mod index;
mod location;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use maxminddb::{Reader, WithinOptions};
use serde::Deserialize;

pub use countries::{COUNTRIES_CSV, CountryTable};
pub use index::{
    Answers, COVER, FINEST_LEVEL, GeoHit, MIXED, Place, Quad, QuadId, Region, RegionId, Summary,
};
pub use location::{Continent, Coordinates, CountryCode, Location, UnitVector};

use index::{Quadtree, Trie, left_aligned};

/// Index of a distinct location of the geo database: clients in the same cell share every
/// routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellId(pub u32);

/// A loaded geo database, indexed for routing.
pub struct GeoDb {
    /// The location of each cell, indexed by [`CellId`].
    locations: Vec<Location>,
    /// Each cell's point on the unit sphere, for fast distances.
    points: Vec<UnitVector>,
    /// Quads and regions of the locations.
    tree: Quadtree,
    /// IPv4 networks.
    v4: Trie,
    /// IPv6 networks (IPv4 lives in `v4`; IPv4-mapped addresses are looked up there).
    v6: Trie,
    /// A short description for logs: type, build date and size.
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
    /// Opens the database held in `bytes` and indexes every network and distinct location.
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
        let ipv6 = reader.metadata().ip_version == 6;
        // IPv4 and IPv6 are walked at once when the database has both: they are separate
        // subtrees, and together the walk is most of a reload's work.
        let (mut v4, mut v6, locations) = if ipv6 {
            let everything_but_ipv4 = ipv6_outside_ipv4();
            let (part4, part6) = std::thread::scope(|scope| {
                let v4 =
                    scope.spawn(|| Walk::run(&reader, &[IpNetwork::V4(all_ipv4())], countries));
                let v6 = Walk::run(&reader, &everything_but_ipv4, countries);
                (v4.join().expect("walks do not panic"), v6)
            });
            let (part4, part6) = (part4?, part6?);
            if part4.v6.is_empty() && part6.v4.is_empty() {
                part4.merge(part6)
            } else {
                // No IPv4 subtree (IPv4 lives in IPv6 space): walk the tree as one.
                let whole = Walk::run(&reader, &[IpNetwork::V6(all_ipv6())], countries)?;
                (whole.v4, whole.v6, whole.locations)
            }
        } else {
            let whole = Walk::run(&reader, &[IpNetwork::V4(all_ipv4())], countries)?;
            (whole.v4, whole.v6, whole.locations)
        };
        if locations.is_empty() {
            return Err(GeoError::NoLocations);
        }
        let tree = Quadtree::build(&locations);
        // The two families' summaries are independent: one thread each.
        std::thread::scope(|scope| {
            let v4 = scope.spawn(|| v4.summarize(&tree));
            v6.summarize(&tree);
            v4.join().expect("summaries do not panic");
        });
        let metadata = reader.metadata();
        let description = format!(
            "{} built {} ({} distinct locations, {} quads, {} trie nodes, {} summarized by quads)",
            metadata.database_type,
            metadata.build_epoch,
            locations.len(),
            tree.quads.len(),
            v4.len() + v6.len(),
            v4.coarse_len() + v6.coarse_len(),
        );
        let points = locations
            .iter()
            .map(|l| UnitVector::of(&l.coordinates))
            .collect();
        Ok(GeoDb {
            locations,
            points,
            tree,
            v4,
            v6,
            description,
        })
    }

    /// Locates one address. IPv4-mapped IPv6 addresses are looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> GeoHit {
        let (bits, is_v4) = left_aligned(ip.to_canonical());
        self.trie(is_v4).lookup(bits)
    }

    /// The shortest prefix length, at most `end`, of a network around `ip` whose trie summary
    /// `accept` takes; `end` (normally the client's [`GeoHit::prefix_len`]) when none is.
    /// Routing uses it to find the widest network with one answer. `accept` must be monotone
    /// down the trie (true for a network, true for every network inside it): the path is
    /// searched by halves, not level by level.
    pub fn widest(&self, ip: IpAddr, end: u8, accept: &mut dyn FnMut(Summary) -> bool) -> u8 {
        let (bits, is_v4) = left_aligned(ip.to_canonical());
        self.trie(is_v4).widest(bits, end, accept)
    }

    /// The widest networks of each family in which every address has one answer under
    /// `answers`, among those whose trie summary cannot tell (it lists quads not decided as a
    /// whole), down to /24 in IPv4 and /56 in IPv6 (exact at any depth: a mixed network
    /// deeper never hides a wide one). Routing combines them with [`GeoDb::widest`], which
    /// finds the networks summaries tell, to find the widest network of one answer. Linear in
    /// the trie nodes whose summaries cannot tell.
    pub fn uniform_networks(&self, answers: &Answers<'_>) -> UniformNetworks {
        // Every listed network is at most `UNIFORM_*_MAX_LEN` (< 64) bits long, so the bits
        // below it are zero and hold its length: 4 bytes per IPv4 network and 8 per IPv6
        // one instead of 8 and 16 with the length beside it (about 100 MB less over 1,000
        // maps of the City database).
        let pack = |(addr, len): (u128, u8), width: u32| (addr >> (128 - width)) | u128::from(len);
        let v4 = self.v4.uniform_networks(answers, UNIFORM_V4_MAX_LEN);
        let v6 = self.v6.uniform_networks(answers, UNIFORM_V6_MAX_LEN);
        UniformNetworks {
            v4: v4.into_iter().map(|net| pack(net, 32) as u32).collect(),
            v6: v6.into_iter().map(|net| pack(net, 64) as u64).collect(),
        }
    }

    fn trie(&self, is_v4: bool) -> &Trie {
        if is_v4 { &self.v4 } else { &self.v6 }
    }

    /// Every cell's location, indexed by [`CellId`].
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// A cell's point on the unit sphere.
    pub fn point(&self, cell: CellId) -> &UnitVector {
        &self.points[cell.0 as usize]
    }

    /// The location of one cell.
    pub fn location(&self, cell: CellId) -> &Location {
        &self.locations[cell.0 as usize]
    }

    /// The quadtree, in preorder: the root (the whole world) is quad 0.
    pub fn quads(&self) -> &[Quad] {
        &self.tree.quads
    }

    /// The cells of a finest-level quad.
    pub fn quad_cells(&self, quad: QuadId) -> &[CellId] {
        let range = self.tree.quads[quad.0 as usize].cells.clone();
        &self.tree.cells_by_quad[range.start as usize..range.end as usize]
    }

    /// The finest quad holding a cell.
    pub fn cell_quad(&self, cell: CellId) -> QuadId {
        self.tree.cell_quad[cell.0 as usize]
    }

    /// The distinct regions (country and continent pairs).
    pub fn regions(&self) -> &[Region] {
        &self.tree.regions
    }

    /// A cell's region.
    pub fn cell_region(&self, cell: CellId) -> RegionId {
        self.tree.cell_region[cell.0 as usize]
    }

    /// Database type, build time and size, for logs.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// The longest networks [`GeoDb::uniform_networks`] lists in IPv4: ECS sources are at most /24
/// in practice (RFC 7871 §11.1), and a longer scope only says where the database splits a
/// source network, which summaries find on their own (exactly, if sometimes narrower).
const UNIFORM_V4_MAX_LEN: u8 = 24;
/// As [`UNIFORM_V4_MAX_LEN`], for IPv6 (/56 sources); within 64 bits.
const UNIFORM_V6_MAX_LEN: u8 = 56;

/// Disjoint networks of one answer, per family, in address order (see
/// [`GeoDb::uniform_networks`]); IPv6 networks by their first 64 bits. Each is one integer:
/// the network's address with its prefix length in the low byte, which a network of at most
/// /24 (IPv4) or /56 (IPv6 within 64 bits) leaves zero.
#[derive(Debug, Default)]
pub struct UniformNetworks {
    v4: Box<[u32]>,
    v6: Box<[u64]>,
}

impl UniformNetworks {
    /// The prefix length of the network holding `ip`, if any does.
    pub fn prefix_of(&self, ip: IpAddr) -> Option<u8> {
        fn find<T: Copy + Ord + Into<u64>>(networks: &[T], addr: T, width: u32) -> Option<u8> {
            let addr: u64 = addr.into();
            // Networks start where their packed value, length and all, sorts: the one
            // holding `addr` is the last whose start is not after it.
            let i = networks.partition_point(|net| (*net).into() & !0xff <= addr);
            let net: u64 = (*networks.get(i.checked_sub(1)?)?).into();
            let len = (net & 0xff) as u8;
            let differ = (net & !0xff) ^ addr;
            (len == 0 || differ >> (width - u32::from(len)) == 0).then_some(len)
        }
        match ip.to_canonical() {
            IpAddr::V4(v4) => find(&self.v4, v4.to_bits(), 32),
            IpAddr::V6(v6) => find(&self.v6, (v6.to_bits() >> 64) as u64, 64),
        }
    }
}

const _: () = assert!(UNIFORM_V4_MAX_LEN <= 24 && UNIFORM_V6_MAX_LEN <= 56);

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// One walk over part of the database: its networks in tries, its distinct locations.
struct Walk {
    v4: Trie,
    v6: Trie,
    locations: Vec<Location>,
}

impl Walk {
    fn run<S: AsRef<[u8]>>(
        reader: &Reader<S>,
        cidrs: &[IpNetwork],
        countries: &CountryTable,
    ) -> Result<Walk, GeoError> {
        // Records by data offset, each decoded once; equal locations share a cell. Looked up
        // for most networks of the database: hashed with foldhash.
        let mut by_offset: HashMap<usize, Option<CellId>, foldhash::fast::RandomState> =
            HashMap::default();
        let mut cells: HashMap<LocationKey, CellId> = HashMap::new();
        let mut walk = Walk {
            v4: Trie::new(32),
            v6: Trie::new(128),
            locations: Vec::new(),
        };
        let mut last: Option<(usize, Option<CellId>)> = None;
        for cidr in cidrs {
            for network in reader.within(*cidr, WithinOptions::default())? {
                let network = network?;
                let Some(offset) = network.offset() else {
                    continue;
                };
                // Neighbouring networks often share a record: skip the lookup then.
                let cell = match last.filter(|(o, _)| *o == offset) {
                    Some((_, cell)) => cell,
                    None => match by_offset.get(&offset) {
                        Some(cell) => *cell,
                        None => {
                            let record: Option<RawRecord<'_>> = network.decode()?;
                            let located = record.and_then(|r| r.locate(countries));
                            let cell = located.map(|location| {
                                *cells.entry(LocationKey::of(&location)).or_insert_with(|| {
                                    walk.locations.push(location);
                                    CellId(walk.locations.len() as u32 - 1)
                                })
                            });
                            by_offset.insert(offset, cell);
                            cell
                        }
                    },
                };
                last = Some((offset, cell));
                let net = network.network()?;
                let (bits, is_v4) = left_aligned(net.network());
                if is_v4 {
                    walk.v4.insert(bits, net.prefix(), cell);
                } else {
                    walk.v6.insert(bits, net.prefix(), cell);
                }
            }
        }
        Ok(walk)
    }

    /// The IPv4 walk's tries and locations joined with the IPv6 walk's, whose cells are
    /// renumbered into one table.
    fn merge(self, other: Walk) -> (Trie, Trie, Vec<Location>) {
        let mut locations = self.locations;
        let mut ids: HashMap<LocationKey, u32> = locations
            .iter()
            .enumerate()
            .map(|(i, l)| (LocationKey::of(l), i as u32))
            .collect();
        let renumber: Vec<u32> = other
            .locations
            .iter()
            .map(|location| {
                *ids.entry(LocationKey::of(location)).or_insert_with(|| {
                    locations.push(*location);
                    locations.len() as u32 - 1
                })
            })
            .collect();
        let mut v6 = other.v6;
        v6.renumber_cells(&renumber);
        (self.v4, v6, locations)
    }
}

/// The IPv4 address an IPv6 address carries, and the bit of the IPv6 address where it starts:
/// IPv4-mapped (`::ffff:0:0/96`) and IPv4-compatible (`::/96`) addresses at bit 96, 6to4
/// (`2002::/16`, RFC 3056) at bit 16. Such clients are located by their IPv4 address, as gdnsd
/// does, and a scope `p` over the IPv4 address is `p` + that bit over the IPv6 one.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Ipv4Addr, u8)> {
    let bits = ip.to_bits();
    if bits >> 32 == 0 || bits >> 32 == 0xffff {
        return Some((Ipv4Addr::from_bits(bits as u32), 96));
    }
    if bits >> 112 == 0x2002 {
        return Some((Ipv4Addr::from_bits((bits >> 80) as u32), 16));
    }
    None
}

fn all_ipv4() -> ipnetwork::Ipv4Network {
    ipnetwork::Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("/0 is valid")
}

fn all_ipv6() -> ipnetwork::Ipv6Network {
    ipnetwork::Ipv6Network::new(Ipv6Addr::UNSPECIFIED, 0).expect("/0 is valid")
}

/// IPv6 space without `::/96` (where an IPv6 database keeps IPv4): the networks `1` at bit
/// `k` after `k` zero bits, for `k` from 0 to 95.
fn ipv6_outside_ipv4() -> Vec<IpNetwork> {
    (0..96u8)
        .map(|k| {
            let addr = Ipv6Addr::from_bits(1u128 << (127 - u32::from(k)));
            IpNetwork::V6(ipnetwork::Ipv6Network::new(addr, k + 1).expect("prefix within 128"))
        })
        .collect()
}

/// Equality of locations, for sharing cells: coordinates by their bits.
#[derive(PartialEq, Eq, Hash)]
struct LocationKey(u64, u64, Option<CountryCode>, Option<Continent>);

impl LocationKey {
    fn of(location: &Location) -> Self {
        LocationKey(
            location.coordinates.latitude.to_bits(),
            location.coordinates.longitude.to_bits(),
            location.country,
            location.continent,
        )
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

/// The standard fixture database with the shipped country table, for unit tests.
#[cfg(test)]
pub(crate) fn fixture_db() -> GeoDb {
    let countries = CountryTable::parse(COUNTRIES_CSV).expect("country table");
    GeoDb::build(Cow::Owned(fixture::standard()), &countries).expect("fixture database")
}

#[cfg(test)]
mod tests;
