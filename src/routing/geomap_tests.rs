//! Decision maps against brute force: for random candidates (datacenters of one metro area a
//! few kilometres apart, at one place, scored alike or not, in several tiers), every location
//! of a generated database gets from the map the ranking it gets by scoring every candidate.

use std::borrow::Cow;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::DcId;
use super::classes::{Answering, Usage};
use super::geomap::{Candidate, Context, GeoMap, MapInputs};
use crate::geo::{CellId, Coordinates, CountryTable, GeoDb, UnitVector, fixture::MmdbFixture};

/// Metro areas the generated locations cluster around, and datacenters sit in.
const METROS: &[(f64, f64)] = &[
    (51.51, -0.13),
    (50.11, 8.68),
    (39.04, -77.49),
    (37.34, -121.89),
    (1.35, 103.82),
    (-23.55, -46.63),
    (35.68, 139.69),
    (-33.87, 151.21),
];

/// A few thousand /24 networks: most near a metro area (within a few hundred kilometres),
/// some anywhere.
fn database() -> &'static GeoDb {
    static DB: OnceLock<GeoDb> = OnceLock::new();
    DB.get_or_init(|| {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut unit = move || (next() % 1_000_000) as f64 / 1_000_000.0;
        let mut fixture = MmdbFixture::new();
        for i in 0..4000u32 {
            let (lat, lon) = if i % 5 == 0 {
                (unit() * 160.0 - 80.0, unit() * 360.0 - 180.0)
            } else {
                let (lat, lon) = METROS[i as usize % METROS.len()];
                let spread = if i % 3 == 0 { 0.3 } else { 4.0 };
                (lat + (unit() - 0.5) * spread, lon + (unit() - 0.5) * spread)
            };
            let network = format!("{}.{}.{}.0/24", 10 + i / 65536, (i / 256) % 256, i % 256);
            fixture = fixture.city(&network, lat, lon, "GB", "EU");
        }
        let countries = CountryTable::parse(crate::config::COUNTRIES_CSV).unwrap();
        GeoDb::build(Cow::Owned(fixture.build()), &countries).unwrap()
    })
}

/// A candidate from drawn numbers: near a metro area (often within a few kilometres of
/// another candidate, sometimes at the very same place), scored alike or not.
fn candidate(i: usize, draw: (u8, u8, u8, u8), alike: bool) -> Candidate {
    let (metro, near, score, tier) = draw;
    let (lat, lon) = METROS[usize::from(metro) % METROS.len()];
    let offset_deg = match near % 4 {
        0 => 0.0,
        1 => 0.05 * f64::from(near / 4 % 8),
        _ => f64::from(near) / 255.0 * 3.0 - 1.5,
    };
    let at = Coordinates::new(lat + offset_deg, lon - offset_deg / 2.0).unwrap();
    let (per_km, offset) = if alike {
        (1.0, 0.0)
    } else {
        [
            (1.0, 0.0),
            (1.0, 0.0),
            (0.5, 0.0),
            (1.0, -300.0),
            (2.0, 40.0),
            (0.0, 7.0),
        ][usize::from(score) % 6]
    };
    Candidate {
        dc: DcId(i as u16),
        tier: [1, 1, 1, 0, 3][usize::from(tier) % 5],
        per_km,
        offset,
        position: ((i * 7) % 13) as u32,
        at,
        point: UnitVector::of(&at),
    }
}

/// The ranking of `cell` by scoring every candidate there.
fn brute_force(geo: &GeoDb, cell: CellId, inputs: &MapInputs) -> Vec<DcId> {
    let point = geo.point(cell);
    let candidates = &inputs.contexts[0].candidates;
    let distance = |c: &Candidate| point.distance_km(&c.point);
    let nearest = candidates
        .iter()
        .map(distance)
        .fold(f64::INFINITY, f64::min);
    let mut scored: Vec<(u8, f64, u32, DcId)> = candidates
        .iter()
        .map(|c| {
            let tier = match inputs.within_km.map(f64::from_bits) {
                Some(extra) => 2 * c.tier + u8::from(distance(c) > nearest + extra),
                None => c.tier,
            };
            (tier, c.per_km * distance(c) + c.offset, c.position, c.dc)
        })
        .collect();
    scored.sort_by(|a, b| (a.0, a.1, a.2).partial_cmp(&(b.0, b.1, b.2)).unwrap());
    scored.iter().take(inputs.depth).map(|s| s.3).collect()
}

/// Every cell's ranking in `map`.
fn map_rankings(geo: &GeoDb, map: &GeoMap) -> Vec<Vec<DcId>> {
    let (quads, cells) = map.entries();
    (0..geo.locations().len() as u32)
        .map(|cell| {
            let quad = geo.cell_quad(CellId(cell)).0;
            let whole = quads
                .iter()
                .find(|(start, end, _)| (*start..*end).contains(&quad));
            let (ranking, _) = match whole {
                Some((_, _, ranking)) => *ranking,
                None => {
                    cells
                        .iter()
                        .find(|(c, _)| *c == cell)
                        .expect("a cell outside decided quads is ranked on its own")
                        .1
                }
            };
            ranking.to_vec()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn maps_rank_every_location_as_brute_force_does(
        draws in prop::collection::vec(any::<(u8, u8, u8, u8)>(), 1..14),
        alike in any::<bool>(),
        depth in 1usize..4,
        within in prop::option::of(prop::sample::select(vec![0.0f64, 40.0, 900.0])),
    ) {
        let geo = database();
        let candidates: Vec<Candidate> = draws
            .iter()
            .enumerate()
            .map(|(i, &draw)| candidate(i, draw, alike))
            .collect();
        let inputs = MapInputs {
            depth,
            contexts: vec![Context { candidates, failed_open: false }],
            by_region: None,
            unlocated: (Vec::new(), false),
            within_km: within.map(f64::to_bits),
            answering: Answering {
                answers: depth,
                datacenters: (0..draws.len())
                    .map(|i| Usage {
                        dc: DcId(i as u16),
                        addresses: [1, 1],
                        spills: false,
                        full: false,
                    })
                    .collect(),
            },
        };
        let map = GeoMap::build(geo, &inputs);
        let got = map_rankings(geo, &map);
        for (cell, ranking) in got.iter().enumerate() {
            let want = brute_force(geo, CellId(cell as u32), &inputs);
            prop_assert_eq!(ranking, &want, "cell {} at {:?}", cell, geo.location(CellId(cell as u32)).coordinates);
        }
    }
}
