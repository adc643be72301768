//! Decision maps: one service's geographic decision for every location of the geo database,
//! computed a whole quad at a time.
//!
//! A map depends only on its [`MapInputs`]: the candidate datacenters (already filtered by the
//! live state: eligible, capacity tiers) with their score parameters, per client context
//! (geofence and override, or measured latencies, by region), and how many datacenters an
//! answer needs. Services with equal inputs share one map, and a table rebuild reuses the
//! previous map of a service whose inputs did not change.
//!
//! Scores are `w × distance + b` within a tier (lower tiers first, ties by configured order).
//! From a quad's centre, every score can move by at most `w × radius` anywhere in the quad; when
//! the gaps between the first `depth + 1` candidates exceed those bounds, the quad's ranking is
//! the same for every location in it (triangle inequality), and the whole quad is decided at
//! once. Otherwise only the candidates that can still rank in the first `depth` anywhere in the
//! quad go down to its children; locations of an undecided finest quad are ranked one by one.
//! Sibling quads (and the cells of a quad) with one answer are merged into their parent, so the
//! map holds the largest identical-answer quads.
//!
//! A map does not know about client networks: [`GeoMap::resolve`] finds the widest network
//! around a client whose trie summary lies wholly inside quads or cells of the client's answer.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::geo::{CellId, Coordinates, GeoDb, GeoHit, Place, QuadId, RegionId, UnitVector};

use super::DcId;

/// A datacenter as one context ranks it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub(super) dc: DcId,
    /// Lower tiers rank first whatever the score (override preference, capacity).
    pub(super) tier: u8,
    /// Score per kilometre from the client.
    pub(super) per_km: f64,
    /// Score at distance zero.
    pub(super) offset: f64,
    /// Position in the configured order: breaks ties.
    pub(super) position: u32,
    /// Where the datacenter is.
    pub(super) at: Coordinates,
    /// `at` on the unit sphere (derived: not compared).
    pub(super) point: UnitVector,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.dc == other.dc
            && self.tier == other.tier
            && self.per_km.to_bits() == other.per_km.to_bits()
            && self.offset.to_bits() == other.offset.to_bits()
            && self.position == other.position
            && self.at.latitude.to_bits() == other.at.latitude.to_bits()
            && self.at.longitude.to_bits() == other.at.longitude.to_bits()
    }
}

impl Eq for Candidate {}

impl Hash for Candidate {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.dc.hash(state);
        self.tier.hash(state);
        self.per_km.to_bits().hash(state);
        self.offset.to_bits().hash(state);
        self.position.hash(state);
        self.at.latitude.to_bits().hash(state);
        self.at.longitude.to_bits().hash(state);
    }
}

/// How clients of one context are ranked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Context {
    /// In configured order; empty means SERVFAIL.
    pub(super) candidates: Vec<Candidate>,
    /// No candidate is eligible: these are every allowed datacenter, as if healthy.
    pub(super) failed_open: bool,
}

/// Everything a decision map depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct MapInputs {
    /// How many datacenters of a ranking an answer can use.
    pub(super) depth: usize,
    /// The distinct contexts.
    pub(super) contexts: Vec<Context>,
    /// Each region's context, by `RegionId`; `None` when context 0 applies everywhere.
    pub(super) by_region: Option<Vec<u16>>,
    /// The ranking of clients the database cannot place, and whether it failed open.
    pub(super) unlocated: (Vec<DcId>, bool),
    /// `least-loaded` with `max_extra_km` (as `f64` bits): candidates farther than this beyond
    /// the nearest one rank after all others (each group by score).
    pub(super) within_km: Option<u64>,
}

/// Index of a ranking in a [`GeoMap`].
pub(super) type GeoRank = u32;

/// One service's decision for every location.
#[derive(Debug)]
pub(super) struct GeoMap {
    /// Distinct rankings (the first `depth` datacenters), with whether each failed open.
    pub(super) rankings: Vec<(Box<[DcId]>, bool)>,
    /// Decided quads: (first id, end of subtree, ranking), sorted and disjoint.
    quads: Vec<(u32, u32, GeoRank)>,
    /// Cells of undecided quads, sorted by cell.
    cells: Vec<(u32, GeoRank)>,
    /// The ranking of unlocated clients.
    unlocated: GeoRank,
}

/// What a map says for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GeoAnswer {
    pub(super) rank: GeoRank,
    /// The widest prefix around the client with this answer.
    pub(super) prefix_len: u8,
}

/// Map sizes, for `check-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapStats {
    /// Decided quads.
    pub quads: usize,
    /// Cells ranked one by one.
    pub cells: usize,
    /// Distinct rankings.
    pub rankings: usize,
}

impl GeoMap {
    /// Decides every quad and location of `geo` for `inputs`.
    pub(super) fn build(geo: &GeoDb, inputs: &MapInputs) -> GeoMap {
        let mut builder = Builder {
            geo,
            inputs,
            ids: [HashMap::new(), HashMap::new()],
            scratch: Vec::new(),
            ranking: Vec::new(),
            map: GeoMap {
                rankings: Vec::new(),
                quads: Vec::new(),
                cells: Vec::new(),
                unlocated: 0,
            },
        };
        // Cut like every other ranking, so that unlocated space merges with neighbours that
        // have the same answer.
        let (ranking, failed_open) = &inputs.unlocated;
        let depth = inputs.depth.min(ranking.len());
        builder.map.unlocated = builder.intern(&ranking[..depth], *failed_open);
        if !geo.quads().is_empty() {
            builder.decide(0, None);
        }
        let mut map = builder.map;
        map.cells.sort_unstable();
        map
    }

    /// Sizes, for `check-config`.
    pub(super) fn stats(&self) -> MapStats {
        MapStats {
            quads: self.quads.len(),
            cells: self.cells.len(),
            rankings: self.rankings.len(),
        }
    }

    /// The answer for a client the database placed at `hit`, and the widest network around
    /// `ip` over which it holds.
    pub(super) fn resolve(&self, geo: &GeoDb, ip: std::net::IpAddr, hit: GeoHit) -> GeoAnswer {
        let rank = hit
            .cell
            .map_or(self.unlocated, |cell| self.cell_rank(geo, cell));
        let prefix_len = geo.widest(ip, hit.prefix_len, &mut |summary| {
            (!summary.unlocated || rank == self.unlocated)
                && summary.places().all(|place| match place {
                    Place::Cell(cell) => {
                        Some(cell) == hit.cell || self.cell_rank(geo, cell) == rank
                    }
                    Place::Quad(quad) => self.quad_rank(quad) == Some(rank),
                })
        });
        GeoAnswer { rank, prefix_len }
    }

    /// The ranking of a whole quad, when it is decided.
    fn quad_rank(&self, quad: QuadId) -> Option<GeoRank> {
        let i = self.quads.partition_point(|(start, _, _)| *start <= quad.0);
        let (_, end, rank) = *self.quads.get(i.checked_sub(1)?)?;
        (quad.0 < end).then_some(rank)
    }

    fn cell_rank(&self, geo: &GeoDb, cell: CellId) -> GeoRank {
        if let Some(rank) = self.quad_rank(geo.cell_quad(cell)) {
            return rank;
        }
        match self.cells.binary_search_by_key(&cell.0, |(c, _)| *c) {
            Ok(i) => self.cells[i].1,
            // Every cell is in a decided quad or ranked on its own.
            Err(_) => self.unlocated,
        }
    }
}

/// Slack on score comparisons: distances are computed the same way everywhere, but a bound
/// should not rest on the last bit.
const SLACK: f64 = 1e-6;

struct Builder<'a> {
    geo: &'a GeoDb,
    inputs: &'a MapInputs,
    /// Ranking ids, by whether the ranking failed open.
    ids: [HashMap<Box<[DcId]>, GeoRank>; 2],
    map: GeoMap,
    /// Buffers reused from cell to cell.
    scratch: Vec<(u8, f64, u32, DcId)>,
    ranking: Vec<DcId>,
}

/// A candidate's score as seen from a quad's centre, with its error bound.
#[derive(Debug, Clone, Copy)]
struct Scored {
    index: usize,
    tier: u8,
    score: f64,
    bound: f64,
    position: u32,
}

impl Builder<'_> {
    fn intern(&mut self, ranking: &[DcId], failed_open: bool) -> GeoRank {
        let ids = &mut self.ids[usize::from(failed_open)];
        if let Some(&id) = ids.get(ranking) {
            return id;
        }
        let id = self.map.rankings.len() as GeoRank;
        let key: Box<[DcId]> = ranking.into();
        self.map.rankings.push((key.clone(), failed_open));
        ids.insert(key, id);
        id
    }

    fn context_of_region(&self, region: Option<RegionId>) -> Option<usize> {
        match (&self.inputs.by_region, region) {
            (None, _) => Some(0),
            (Some(by_region), Some(region)) => Some(usize::from(by_region[usize::from(region.0)])),
            (Some(_), None) => None,
        }
    }

    /// Decides quad `id` with `candidates` (those that can still rank, or all of its context's
    /// when `None`); returns the ranking of the whole quad when it has one.
    fn decide(&mut self, id: u32, candidates: Option<&[Candidate]>) -> Option<GeoRank> {
        let geo = self.geo;
        let quad = &geo.quads()[id as usize];
        let finest = quad.level == crate::geo::FINEST_LEVEL;
        let Some(context) = self.context_of_region(quad.region) else {
            // Clients here fall in different contexts: decide below, each with its own.
            return self.split(id, finest, None);
        };
        let inputs = self.inputs;
        let all = &inputs.contexts[context];
        let candidates = candidates.unwrap_or(&all.candidates);
        if candidates.is_empty() {
            let rank = self.intern(&[], false);
            self.map.quads.push((id, quad.end, rank));
            return Some(rank);
        }
        let mut scored: Vec<Scored> = candidates
            .iter()
            .enumerate()
            .map(|(index, c)| Scored {
                index,
                tier: c.tier,
                score: c.per_km * quad.center_point.distance_km(&c.point) + c.offset,
                bound: c.per_km * quad.radius_km,
                position: c.position,
            })
            .collect();
        if let Some(extra) = inputs.within_km.map(f64::from_bits) {
            // Whether each candidate is within `extra` of the nearest is decided for the whole
            // quad only when no distance (moving by up to the radius) can cross the line.
            let r = quad.radius_km;
            let distances: Vec<f64> = candidates
                .iter()
                .map(|c| quad.center_point.distance_km(&c.point))
                .collect();
            let nearest = distances.iter().copied().fold(f64::INFINITY, f64::min);
            for s in &mut scored {
                let d = distances[s.index];
                let out = if d + r + SLACK <= nearest - r + extra {
                    false
                } else if d - r - SLACK > nearest + r + extra {
                    true
                } else {
                    return self.split(id, finest, Some(candidates));
                };
                s.tier = 2 * s.tier + u8::from(out);
            }
        }
        scored.sort_by(|a, b| {
            (a.tier, a.score, a.position)
                .partial_cmp(&(b.tier, b.score, b.position))
                .expect("scores are numbers")
        });
        let depth = inputs.depth.min(scored.len());
        if is_decided(&scored, depth) {
            let ranking: Vec<DcId> = scored[..depth]
                .iter()
                .map(|s| candidates[s.index].dc)
                .collect();
            let rank = self.intern(&ranking, all.failed_open);
            self.map.quads.push((id, quad.end, rank));
            return Some(rank);
        }
        // Only a candidate whose best case beats the depth-th best worst case can rank.
        let mut worst: Vec<(u8, f64)> =
            scored.iter().map(|s| (s.tier, s.score + s.bound)).collect();
        worst.sort_by(|a, b| a.partial_cmp(b).expect("scores are numbers"));
        let cutoff = worst[depth - 1];
        // Candidate order does not matter: ties are broken by configured position.
        let kept: Vec<Candidate> = scored
            .iter()
            .filter(|s| (s.tier, s.score - s.bound - SLACK) <= cutoff)
            .map(|s| candidates[s.index])
            .collect();
        self.split(id, finest, Some(&kept))
    }

    /// Decides the children of quad `id` (or its cells, when finest) and merges them back into
    /// one entry when they all have the same ranking.
    fn split(
        &mut self,
        id: u32,
        finest: bool,
        candidates: Option<&[Candidate]>,
    ) -> Option<GeoRank> {
        let geo = self.geo;
        let quad = &geo.quads()[id as usize];
        if finest {
            let start = self.map.cells.len();
            for &cell in geo.quad_cells(QuadId(id)) {
                let rank = self.rank_cell(cell, candidates);
                self.map.cells.push((cell.0, rank));
            }
            let first = self.map.cells[start].1;
            if self.map.cells[start..].iter().all(|(_, r)| *r == first) {
                self.map.cells.truncate(start);
                self.map.quads.push((id, quad.end, first));
                return Some(first);
            }
            return None;
        }
        let start = self.map.quads.len();
        let mut child = id + 1;
        let mut same: Option<Option<GeoRank>> = None;
        while child < quad.end {
            let rank = self.decide(child, candidates);
            same = Some(match same {
                None => rank,
                Some(previous) if previous == rank => rank,
                Some(_) => None,
            });
            child = geo.quads()[child as usize].end;
        }
        match same.flatten() {
            Some(rank) => {
                self.map.quads.truncate(start);
                self.map.quads.push((id, quad.end, rank));
                Some(rank)
            }
            None => None,
        }
    }

    /// Ranks one location exactly.
    fn rank_cell(&mut self, cell: CellId, candidates: Option<&[Candidate]>) -> GeoRank {
        let geo = self.geo;
        let inputs = self.inputs;
        let context = self
            .context_of_region(Some(geo.cell_region(cell)))
            .expect("a cell has a region");
        let all = &inputs.contexts[context];
        let candidates = candidates.unwrap_or(&all.candidates);
        let point = geo.point(cell);
        let mut scored = std::mem::take(&mut self.scratch);
        scored.clear();
        scored.extend(candidates.iter().map(|c| {
            let score = c.per_km * point.distance_km(&c.point) + c.offset;
            (c.tier, score, c.position, c.dc)
        }));
        if let Some(extra) = inputs.within_km.map(f64::from_bits) {
            let nearest = candidates
                .iter()
                .map(|c| point.distance_km(&c.point))
                .fold(f64::INFINITY, f64::min);
            for (s, c) in scored.iter_mut().zip(candidates) {
                let out = point.distance_km(&c.point) > nearest + extra;
                s.0 = 2 * s.0 + u8::from(out);
            }
        }
        scored.sort_by(|a, b| {
            (a.0, a.1, a.2)
                .partial_cmp(&(b.0, b.1, b.2))
                .expect("scores are numbers")
        });
        let depth = inputs.depth.min(scored.len());
        let mut ranking = std::mem::take(&mut self.ranking);
        ranking.clear();
        ranking.extend(scored[..depth].iter().map(|s| s.3));
        let rank = self.intern(&ranking, all.failed_open);
        self.scratch = scored;
        self.ranking = ranking;
        rank
    }
}

/// Whether the first `depth` places of `scored` (sorted at the centre) hold everywhere in the
/// quad: each gap up to place `depth + 1` exceeds the two scores' bounds.
fn is_decided(scored: &[Scored], depth: usize) -> bool {
    let apart = |a: &Scored, b: &Scored, bound: f64| {
        a.tier < b.tier || (a.bound + bound == 0.0) || b.score - a.score > a.bound + bound + SLACK
    };
    for i in 0..depth {
        let Some(next) = scored.get(i + 1) else {
            return true;
        };
        let bound = if i + 1 == depth {
            // Anything below the cut must stay below: the widest bound among them counts.
            scored[i + 1..]
                .iter()
                .filter(|s| s.tier == next.tier)
                .map(|s| s.bound)
                .fold(0.0, f64::max)
        } else {
            next.bound
        };
        if !apart(&scored[i], next, bound) {
            return false;
        }
    }
    true
}
