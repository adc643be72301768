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
//! once. Two candidates of one tier scored alike (one `w > 0`, one `b`) rank by distance alone,
//! and the points nearer one of them are those on its side of the plane through the Earth's
//! centre that bisects them: a quad wholly on one side has their order everywhere, however
//! small the gap at its centre (two datacenters of one metro area). Otherwise only the
//! candidates that can still rank in the first `depth` anywhere in the quad go down to its
//! children; locations of an undecided finest quad are ranked one by one.
//! Sibling quads (and the cells of a quad) with one answer are merged into their parent, so the
//! map holds the largest identical-answer quads.
//!
//! A map knows client networks only through the geo database's trie: [`GeoMap::resolve`] finds
//! the widest network around a client whose trie summary lies wholly inside quads or cells of
//! the client's answer, or, where summaries list quads rather than cells (too many places below
//! them), the widest network of one answer that the map worked out exactly once it was built
//! ([`GeoMap::widen`], at any depth). Together they give the widest trie network around the
//! client in which every address has the client's answer. An answer here is a ranking's class
//! for the query's family (`classes.rs`): the records the reply carries, not the whole ranking.
//!
//! A change of candidates alone (a datacenter going down or up, a new latency or cost) brings a
//! map up to date from the previous one ([`GeoMap::update`]) rather than building it again.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use crate::geo::{
    Answers, CellId, Coordinates, GeoDb, GeoHit, MIXED, Place, Quad, QuadId, RegionId,
    UniformNetworks, UnitVector,
};

use super::classes::{Answering, Classes};
use super::{DcId, Family};

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
    /// What the records of a ranking depend on, for its answer classes.
    pub(super) answering: Answering,
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
    /// Each ranking's answer class, per family.
    classes: Classes,
    /// The widest networks of one class that trie summaries are too coarse to find, by table
    /// of `classes`, once [`GeoMap::widen`] has worked them out.
    uniform: OnceLock<Vec<UniformNetworks>>,
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
        let mut builder = Builder::new(geo, inputs);
        if !geo.quads().is_empty() {
            builder.decide(0, None);
        }
        builder.finish()
    }

    /// The map for `inputs`, from `previous`, the map built for `before` over the same `geo`:
    /// only the entries a change of candidates can touch are decided again (those whose
    /// ranking holds a datacenter that left or changed, and those a new or changed candidate
    /// may enter, by the same bounds as [`GeoMap::build`]); the rest keep their ranking.
    /// Siblings are merged as in a build, so the result is the map `build` makes. `None` when
    /// the change is not one of candidates (another depth, or place rules appearing or
    /// going): build then.
    pub(super) fn update(
        geo: &GeoDb,
        before: &MapInputs,
        previous: &GeoMap,
        inputs: &MapInputs,
    ) -> Option<GeoMap> {
        // With `within_km`, a candidate's tier depends on the nearest one: a change of one
        // candidate can move the others.
        if before.depth != inputs.depth
            || before.by_region.is_some() != inputs.by_region.is_some()
            || before.within_km.is_some()
            || inputs.within_km.is_some()
        {
            return None;
        }
        let changes = Changes::between(before, inputs);
        let mut builder = Builder::new(geo, inputs);
        if !geo.quads().is_empty() {
            let mut update = Update {
                previous,
                changes: &changes,
                next: 0,
                remap: vec![None; previous.rankings.len()],
            };
            update.quad(&mut builder, 0);
        }
        Some(builder.finish())
    }

    /// Every entry with its ranking spelled out: equal for maps that decide alike.
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub(super) fn entries(
        &self,
    ) -> (
        Vec<(u32, u32, &(Box<[DcId]>, bool))>,
        Vec<(u32, &(Box<[DcId]>, bool))>,
    ) {
        let ranking = |rank: GeoRank| &self.rankings[rank as usize];
        (
            self.quads
                .iter()
                .map(|&(a, b, r)| (a, b, ranking(r)))
                .collect(),
            self.cells.iter().map(|&(c, r)| (c, ranking(r))).collect(),
        )
    }

    /// Works out the widest networks of one class where trie summaries list quads of several
    /// classes, unless done already; returns whether it did. Linear in the trie nodes whose
    /// summaries cannot tell, per family that groups rankings its own way: run off the query
    /// path, once per map.
    pub(super) fn widen(&self, geo: &GeoDb) -> bool {
        if self.uniform.get().is_some() {
            return false;
        }
        let uniform = self
            .classes
            .tables()
            .iter()
            .enumerate()
            .map(|(table, class)| {
                if self.classes.is_single(table) {
                    // One reply everywhere: `resolve` needs no networks.
                    return UniformNetworks::default();
                }
                let unlocated = class[self.unlocated as usize];
                let mut quads = vec![MIXED; geo.quads().len()];
                let mut cells = vec![unlocated; geo.locations().len()];
                for &(start, end, rank) in &self.quads {
                    let class = class[rank as usize];
                    quads[start as usize..end as usize].fill(class);
                    for quad in start..end {
                        for cell in geo.quad_cells(QuadId(quad)) {
                            cells[cell.0 as usize] = class;
                        }
                    }
                }
                for &(cell, rank) in &self.cells {
                    cells[cell as usize] = class[rank as usize];
                }
                let answers = Answers {
                    cells: &cells,
                    quads: &quads,
                    unlocated,
                };
                geo.uniform_networks(&answers)
            })
            .collect();
        // Another thread may have got there first: the result is the same.
        let _ = self.uniform.set(uniform);
        true
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
    /// `ip` over which the reply of `family` carries the same records.
    pub(super) fn resolve(
        &self,
        geo: &GeoDb,
        ip: std::net::IpAddr,
        hit: GeoHit,
        family: Family,
    ) -> GeoAnswer {
        let rank = hit
            .cell
            .map_or(self.unlocated, |cell| self.cell_rank(geo, cell));
        let table = self.classes.table_of(family);
        if self.classes.is_single(table) {
            // One reply for every client (a family no datacenter has addresses of, say).
            return GeoAnswer {
                rank,
                prefix_len: 0,
            };
        }
        let classes = &self.classes.tables()[table];
        let class = classes[rank as usize];
        // Where summaries list quads, the exact widest network of this class, if any: the
        // summaries need only be searched above it.
        let uniform = self
            .uniform
            .get()
            .and_then(|uniform| uniform[table].prefix_of(ip));
        let end = uniform.map_or(hit.prefix_len, |wide| wide.min(hit.prefix_len));
        // Monotone down the trie, as `widest` needs: a child's places lie inside its parent's,
        // and a quad decided whole gives its ranking to every quad and cell inside it.
        let prefix_len = geo.widest(ip, end, &mut |summary| {
            (!summary.unlocated || classes[self.unlocated as usize] == class)
                && summary.places().all(|place| match place {
                    Place::Cell(cell) => {
                        Some(cell) == hit.cell
                            || classes[self.cell_rank(geo, cell) as usize] == class
                    }
                    Place::Quad(quad) => self
                        .quad_rank(quad)
                        .is_some_and(|rank| classes[rank as usize] == class),
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
    /// Ranking ids, by whether the ranking failed open (looked up for every decided quad and
    /// ranked cell: hashed with foldhash).
    ids: [HashMap<Box<[DcId]>, GeoRank, foldhash::fast::RandomState>; 2],
    map: GeoMap,
    /// Buffers reused from cell to cell.
    scratch: Vec<(u8, f64, u32, DcId)>,
    ranking: Vec<DcId>,
    scored: Vec<Scored>,
    worst: Vec<(u8, f64)>,
    /// The candidates kept for each quadtree level's children, reused from quad to quad.
    kept: Vec<Vec<Candidate>>,
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

impl<'a> Builder<'a> {
    fn new(geo: &'a GeoDb, inputs: &'a MapInputs) -> Builder<'a> {
        let mut builder = Builder {
            geo,
            inputs,
            ids: [HashMap::default(), HashMap::default()],
            scratch: Vec::new(),
            ranking: Vec::new(),
            scored: Vec::new(),
            worst: Vec::new(),
            kept: vec![Vec::new(); usize::from(crate::geo::FINEST_LEVEL) + 1],
            map: GeoMap {
                rankings: Vec::new(),
                quads: Vec::new(),
                cells: Vec::new(),
                unlocated: 0,
                classes: Classes::default(),
                uniform: OnceLock::new(),
            },
        };
        // Cut like every other ranking, so that unlocated space merges with neighbours that
        // have the same answer.
        let (ranking, failed_open) = &inputs.unlocated;
        let depth = inputs.depth.min(ranking.len());
        builder.map.unlocated = builder.intern(&ranking[..depth], *failed_open);
        builder
    }

    fn finish(self) -> GeoMap {
        let mut map = self.map;
        map.cells.sort_unstable();
        // A map lives as long as the snapshots that share it, and its vectors grew by
        // doubling: up to half of what they hold would be spare room.
        map.quads.shrink_to_fit();
        map.cells.shrink_to_fit();
        map.rankings.shrink_to_fit();
        map.classes = Classes::of(&map.rankings, &self.inputs.answering);
        map
    }

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
        let mut scored = std::mem::take(&mut self.scored);
        scored.clear();
        scored.extend(candidates.iter().enumerate().map(|(index, c)| Scored {
            index,
            tier: c.tier,
            score: c.per_km * quad.center_point.distance_km(&c.point) + c.offset,
            bound: c.per_km * quad.radius_km,
            position: c.position,
        }));
        if let Some(extra) = inputs.within_km.map(f64::from_bits) {
            // Whether each candidate is within `extra` of the nearest is decided for the whole
            // quad only when no distance (moving by up to the radius) can cross the line.
            // The nearest of all the context's candidates, not only of those that can still
            // rank here.
            let r = quad.radius_km;
            let nearest = all
                .candidates
                .iter()
                .map(|c| quad.center_point.distance_km(&c.point))
                .fold(f64::INFINITY, f64::min);
            for s in &mut scored {
                let d = quad.center_point.distance_km(&candidates[s.index].point);
                let out = if d + r + SLACK <= nearest - r + extra {
                    false
                } else if d - r - SLACK > nearest + r + extra {
                    true
                } else {
                    self.scored = scored;
                    return self.split(id, finest, Some(candidates));
                };
                s.tier = 2 * s.tier + u8::from(out);
            }
        }
        let depth = inputs.depth.min(scored.len());
        // Only the first `depth + 1` places need an order.
        let order = |a: &Scored, b: &Scored| {
            (a.tier, a.score, a.position)
                .partial_cmp(&(b.tier, b.score, b.position))
                .expect("scores are numbers")
        };
        if depth + 1 < scored.len() {
            scored.select_nth_unstable_by(depth, order);
        }
        let head = (depth + 1).min(scored.len());
        scored[..head].sort_unstable_by(order);
        let beats = |a: &Scored, b: &Scored| {
            beats_everywhere(quad, a, b, &candidates[a.index], &candidates[b.index])
        };
        if is_decided(&scored, depth, beats) {
            let ranking: Vec<DcId> = scored[..depth]
                .iter()
                .map(|s| candidates[s.index].dc)
                .collect();
            self.scored = scored;
            let rank = self.intern(&ranking, all.failed_open);
            self.map.quads.push((id, quad.end, rank));
            return Some(rank);
        }
        // Only a candidate whose best case beats the depth-th best worst case can rank.
        let mut worst = std::mem::take(&mut self.worst);
        worst.clear();
        worst.extend(scored.iter().map(|s| (s.tier, s.score + s.bound)));
        let (_, &mut cutoff, _) = worst.select_nth_unstable_by(depth - 1, |a, b| {
            a.partial_cmp(b).expect("scores are numbers")
        });
        self.worst = worst;
        // Candidate order does not matter: ties are broken by configured position.
        let level = usize::from(quad.level);
        let mut kept = std::mem::take(&mut self.kept[level]);
        kept.clear();
        // Nor can one that each of the first `depth` at the centre beats everywhere.
        let (first, rest) = scored.split_at(depth);
        kept.extend(first.iter().map(|s| candidates[s.index]));
        kept.extend(
            rest.iter()
                .filter(|s| (s.tier, s.score - s.bound - SLACK) <= cutoff)
                .filter(|s| !first.iter().all(|f| beats(f, s)))
                .map(|s| candidates[s.index]),
        );
        self.scored = scored;
        let rank = self.split(id, finest, Some(&kept));
        self.kept[level] = kept;
        rank
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
        if finest {
            let start = self.map.cells.len();
            for &cell in geo.quad_cells(QuadId(id)) {
                let rank = self.rank_cell(cell, candidates);
                self.map.cells.push((cell.0, rank));
            }
            return self.merge_cells(id, start);
        }
        self.merge_children(id, |builder, child| builder.decide(child, candidates))
    }

    /// Replaces the cells of finest quad `id` (from `start` on) by one entry for the quad when
    /// they all have one ranking.
    fn merge_cells(&mut self, id: u32, start: usize) -> Option<GeoRank> {
        let first = self.map.cells[start].1;
        if self.map.cells[start..].iter().all(|(_, r)| *r == first) {
            self.map.cells.truncate(start);
            self.map
                .quads
                .push((id, self.geo.quads()[id as usize].end, first));
            return Some(first);
        }
        None
    }

    /// Decides each child of quad `id` with `decide`, then replaces their entries by one for
    /// the quad when they all have one ranking.
    fn merge_children(
        &mut self,
        id: u32,
        mut decide: impl FnMut(&mut Self, u32) -> Option<GeoRank>,
    ) -> Option<GeoRank> {
        let geo = self.geo;
        let end = geo.quads()[id as usize].end;
        let start = self.map.quads.len();
        let mut child = id + 1;
        let mut same: Option<Option<GeoRank>> = None;
        while child < end {
            let rank = decide(self, child);
            same = Some(match same {
                None => rank,
                Some(previous) if previous == rank => rank,
                Some(_) => None,
            });
            child = geo.quads()[child as usize].end;
        }
        let rank = same.flatten()?;
        self.map.quads.truncate(start);
        self.map.quads.push((id, end, rank));
        Some(rank)
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
            let nearest = all
                .candidates
                .iter()
                .map(|c| point.distance_km(&c.point))
                .fold(f64::INFINITY, f64::min);
            for (s, c) in scored.iter_mut().zip(candidates) {
                let out = point.distance_km(&c.point) > nearest + extra;
                s.0 = 2 * s.0 + u8::from(out);
            }
        }
        let depth = inputs.depth.min(scored.len());
        let order = |a: &(u8, f64, u32, DcId), b: &(u8, f64, u32, DcId)| {
            (a.0, a.1, a.2)
                .partial_cmp(&(b.0, b.1, b.2))
                .expect("scores are numbers")
        };
        if depth > 0 && depth < scored.len() {
            scored.select_nth_unstable_by(depth - 1, order);
        }
        scored[..depth].sort_unstable_by(order);
        let mut ranking = std::mem::take(&mut self.ranking);
        ranking.clear();
        ranking.extend(scored[..depth].iter().map(|s| s.3));
        let rank = self.intern(&ranking, all.failed_open);
        self.scratch = scored;
        self.ranking = ranking;
        rank
    }
}

/// Whether the first `depth` places of `scored` (its first `depth + 1` sorted at the centre,
/// the rest after them) hold everywhere in the quad: each of the first `depth` beats the next
/// everywhere, and the last of them beats every one below the cut.
fn is_decided(scored: &[Scored], depth: usize, beats: impl Fn(&Scored, &Scored) -> bool) -> bool {
    for i in 0..depth {
        let Some(next) = scored.get(i + 1) else {
            return true;
        };
        if i + 1 < depth {
            if !beats(&scored[i], next) {
                return false;
            }
        } else {
            // Anything below the cut must stay below.
            return scored[i + 1..].iter().all(|s| beats(&scored[i], s));
        }
    }
    true
}

/// Whether `a` (scored `sa` at the centre of `quad`) ranks before `b` everywhere in the quad.
///
/// Two bounds, the first that tells: each score moves by at most `per_km × radius` from the
/// centre (triangle inequality); and, for two candidates of one tier scored alike
/// (`per_km > 0`, one `offset`), only the distances' order matters, and the points nearer `a`
/// are those on `a`'s side of the plane through the Earth's centre that bisects `a` and `b`,
/// so when the whole quad lies on that side (its points are within a chord of `radius_chord`
/// from the centre's), `a` is nearer everywhere. The second is what decides a quad close to
/// two datacenters of one metro area, whose distances never differ by more than the few
/// kilometres between them.
fn beats_everywhere(quad: &Quad, sa: &Scored, sb: &Scored, a: &Candidate, b: &Candidate) -> bool {
    if sa.tier != sb.tier {
        return sa.tier < sb.tier;
    }
    if sa.bound + sb.bound == 0.0 {
        // Constant scores.
        return (sa.score, sa.position) < (sb.score, sb.position);
    }
    if sb.score - sa.score > sa.bound + sb.bound + SLACK {
        return true;
    }
    if a.per_km != b.per_km || a.offset != b.offset || a.per_km <= 0.0 {
        return false;
    }
    if a.point == b.point {
        // One place: equal scores everywhere.
        return sa.position < sb.position;
    }
    // Everywhere in the quad the cosines differ by more than `margin`, so the angles by
    // more, and the scores by `per_km` times as many kilometres: at least `SLACK`.
    let margin = SLACK / (a.per_km * UnitVector::km_of_angle(1.0));
    quad.center_point.nearer(&a.point, &b.point) - quad.radius_chord * a.point.chord(&b.point)
        > margin
}

/// How the candidates of one context changed between two map inputs.
#[derive(Debug)]
struct Change {
    /// The context in the new inputs.
    context: usize,
    /// Whether it fails open now and did not before, or the reverse.
    failed_open: bool,
    /// Datacenters that left the context or whose parameters changed.
    removed: Vec<DcId>,
    /// Candidates that joined the context or whose parameters changed.
    added: Vec<Candidate>,
}

/// The changes between two map inputs, by region.
#[derive(Debug)]
struct Changes {
    changes: Vec<Change>,
    /// Each region's change, by `RegionId`; one entry for every region when contexts do not
    /// depend on the place.
    by_region: Vec<Option<u32>>,
}

impl Changes {
    fn between(before: &MapInputs, after: &MapInputs) -> Changes {
        let mut changes: Vec<Change> = Vec::new();
        let mut pairs: HashMap<(u16, u16), Option<u32>> = HashMap::new();
        let mut change_of = |old: u16, new: u16| -> Option<u32> {
            *pairs.entry((old, new)).or_insert_with(|| {
                let (old_c, new_c) = (
                    &before.contexts[usize::from(old)],
                    &after.contexts[usize::from(new)],
                );
                if old_c == new_c {
                    return None;
                }
                let removed = old_c
                    .candidates
                    .iter()
                    .filter(|c| !new_c.candidates.contains(c))
                    .map(|c| c.dc)
                    .collect();
                let added = new_c
                    .candidates
                    .iter()
                    .filter(|c| !old_c.candidates.contains(c))
                    .copied()
                    .collect();
                changes.push(Change {
                    context: usize::from(new),
                    failed_open: old_c.failed_open != new_c.failed_open,
                    removed,
                    added,
                });
                Some((changes.len() - 1) as u32)
            })
        };
        let by_region = match (&before.by_region, &after.by_region) {
            (Some(old), Some(new)) => old
                .iter()
                .zip(new)
                .map(|(&o, &n)| change_of(o, n))
                .collect(),
            _ => vec![change_of(0, 0)],
        };
        Changes { changes, by_region }
    }

    /// The changes that can apply to clients of `region` (`None`: a quad of several regions).
    fn of(&self, region: Option<RegionId>) -> impl Iterator<Item = &Change> {
        let only = match (self.by_region.len(), region) {
            (1, _) => Some(self.by_region[0]),
            (_, Some(region)) => Some(self.by_region[usize::from(region.0)]),
            (_, None) => None,
        };
        let all = only
            .is_none()
            .then(|| self.changes.iter())
            .into_iter()
            .flatten();
        only.flatten()
            .map(|i| &self.changes[i as usize])
            .into_iter()
            .chain(all)
    }
}

/// A map being brought from its previous inputs to new ones (see [`GeoMap::update`]).
struct Update<'p> {
    previous: &'p GeoMap,
    changes: &'p Changes,
    /// The next of the previous map's quads to visit.
    next: usize,
    /// Previous ranking ids, interned in the new map as they are met.
    remap: Vec<Option<GeoRank>>,
}

impl Update<'_> {
    /// Brings quad `id` up to date; returns its ranking when the whole quad has one.
    fn quad(&mut self, builder: &mut Builder<'_>, id: u32) -> Option<GeoRank> {
        let geo = builder.geo;
        let quad = &geo.quads()[id as usize];
        if let Some(&(start, end, rank)) = self.previous.quads.get(self.next)
            && start == id
        {
            self.next += 1;
            if self.may_change(builder, quad, rank) {
                return builder.decide(id, None);
            }
            let rank = self.keep(builder, rank);
            builder.map.quads.push((id, end, rank));
            return Some(rank);
        }
        if quad.level == crate::geo::FINEST_LEVEL {
            // Cells ranked one by one: ranked again where their context changed.
            let start = builder.map.cells.len();
            for &cell in geo.quad_cells(QuadId(id)) {
                let region = geo.cell_region(cell);
                let rank = if self.changes.of(Some(region)).next().is_some() {
                    builder.rank_cell(cell, None)
                } else {
                    let i = self
                        .previous
                        .cells
                        .binary_search_by_key(&cell.0, |(c, _)| *c)
                        .expect("a cell outside decided quads is ranked on its own");
                    self.keep(builder, self.previous.cells[i].1)
                };
                builder.map.cells.push((cell.0, rank));
            }
            return builder.merge_cells(id, start);
        }
        builder.merge_children(id, |builder, child| self.quad(builder, child))
    }

    /// The previous ranking `rank`, as an id of the new map.
    fn keep(&mut self, builder: &mut Builder<'_>, rank: GeoRank) -> GeoRank {
        if let Some(id) = self.remap[rank as usize] {
            return id;
        }
        let (ranking, failed_open) = &self.previous.rankings[rank as usize];
        let id = builder.intern(ranking, *failed_open);
        self.remap[rank as usize] = Some(id);
        id
    }

    /// Whether a quad that had ranking `rank` everywhere may rank otherwise somewhere now.
    fn may_change(&self, builder: &Builder<'_>, quad: &Quad, rank: GeoRank) -> bool {
        let (ranking, _) = &self.previous.rankings[rank as usize];
        let depth = builder.inputs.depth;
        self.changes.of(quad.region).any(|change| {
            if change.failed_open || ranking.iter().any(|dc| change.removed.contains(dc)) {
                return true;
            }
            if change.added.is_empty() {
                return false;
            }
            // A short ranking holds every candidate there was: any new one joins it.
            let Some(last) = ranking.last().filter(|_| ranking.len() >= depth) else {
                return true;
            };
            let candidates = &builder.inputs.contexts[change.context].candidates;
            let Some(last) = candidates.iter().find(|c| c.dc == *last) else {
                // Not a candidate of this context: the quad's clients are elsewhere, or
                // this is not known; decide again.
                return true;
            };
            change.added.iter().any(|new| may_pass(new, last, quad))
        })
    }
}

/// Whether `new` can rank before `last` anywhere in `quad`.
fn may_pass(new: &Candidate, last: &Candidate, quad: &Quad) -> bool {
    if new.tier != last.tier {
        return new.tier < last.tier;
    }
    let best =
        new.per_km * (quad.center_point.distance_km(&new.point) - quad.radius_km) + new.offset;
    let worst =
        last.per_km * (quad.center_point.distance_km(&last.point) + quad.radius_km) + last.offset;
    best - SLACK <= worst
}
