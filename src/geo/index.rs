//! Our own index of a geo database: a binary trie of its networks (one per address family) and a
//! quadtree of its locations, both built once per database load.
//!
//! The trie replaces the MaxMind tree walk on the query path: a leaf is one database network
//! with its cell, and every inner node carries a summary of what lies below it (up to
//! [`COVER`] cells or quads holding every located address below, and whether unlocated space
//! is mixed in). Routing uses the summaries to find, for a client, the widest prefix over which its
//! answer cannot change; where a summary lists quads, it can ask for the widest networks of one
//! answer under its own answer per cell (`Trie::uniform_networks`).
//!
//! The quadtree splits the longitude/latitude rectangle into four per level, down to
//! [`FINEST_LEVEL`]; only quads holding at least one location exist. Quads are numbered in
//! depth-first preorder, so every quad's subtree is the id range `id..end`. Each quad knows a
//! centre and a radius that bound every location in it: routing decides a whole quad at once
//! when, seen from its centre, the ranking cannot change anywhere within the radius.
//!
//! Nothing here knows about datacenters or policies.

use std::net::IpAddr;
use std::ops::Range;

use super::{CellId, Continent, Coordinates, CountryCode, Location, UnitVector};

/// The deepest quadtree level: 2^11 × 2^11 quads over the world, about 19 km × 10 km at the
/// equator.
pub const FINEST_LEVEL: u8 = 11;

/// Index of a quad, in depth-first preorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuadId(pub u32);

/// Index of a distinct (country, continent) pair of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub u16);

/// A country and continent, as the database places a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// The country, when known.
    pub country: Option<CountryCode>,
    /// The continent, when known.
    pub continent: Option<Continent>,
}

/// One square of the quadtree.
#[derive(Debug, Clone)]
pub struct Quad {
    /// One past the last id of this quad's subtree.
    pub end: u32,
    /// The enclosing quad (the root is its own parent).
    pub parent: u32,
    /// Depth in the tree: 0 is the whole world.
    pub level: u8,
    /// A point inside the quad's locations' bounding box.
    pub center: Coordinates,
    /// `center` on the unit sphere.
    pub center_point: UnitVector,
    /// Every location in the quad is at most this far from `center`, in kilometres.
    pub radius_km: f64,
    /// The chord of `radius_km`: every location's point is at most this far from
    /// `center_point` in a straight line.
    pub radius_chord: f64,
    /// The region of every location in the quad, or `None` when they differ.
    pub region: Option<RegionId>,
    /// The quad's cells (finest level only; empty above).
    pub cells: Range<u32>,
}

/// Most places a trie node's [`Summary`] lists before it coarsens them to enclosing quads.
pub const COVER: usize = 4;

/// Where the located addresses under a trie node are: at most [`COVER`] cells or quads that
/// hold all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Encoded places (see [`Place`]); 0 marks an unused slot.
    places: [u32; COVER],
    /// Whether addresses the database cannot place are below as well.
    pub unlocated: bool,
}

/// One place of a [`Summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Exactly this cell.
    Cell(CellId),
    /// Somewhere in this quad.
    Quad(QuadId),
}

impl Summary {
    /// Whether it lists quads: more places are below than it can list one by one.
    pub fn is_coarse(&self) -> bool {
        self.places
            .iter()
            .any(|&code| code != 0 && matches!(decode(code), Place::Quad(_)))
    }

    /// The places, none when everything below is unlocated.
    pub fn places(&self) -> impl Iterator<Item = Place> + '_ {
        self.places
            .iter()
            .take_while(|code| **code != 0)
            .map(|&code| decode(code))
    }
}

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

/// The quadtree and the regions, built from the cells' locations.
#[derive(Debug)]
pub(super) struct Quadtree {
    pub(super) quads: Vec<Quad>,
    /// Cells ordered by finest quad; `Quad::cells` indexes into it.
    pub(super) cells_by_quad: Vec<CellId>,
    /// Each cell's finest quad.
    pub(super) cell_quad: Vec<QuadId>,
    /// Distinct regions.
    pub(super) regions: Vec<Region>,
    /// Each cell's region.
    pub(super) cell_region: Vec<RegionId>,
    /// Each quad's Morton key (that of its first cell): two quads' keys tell how deep their
    /// common ancestor is without walking up to it.
    pub(super) quad_keys: Vec<u32>,
}

impl Quadtree {
    pub(super) fn build(locations: &[Location]) -> Quadtree {
        let mut regions: Vec<Region> = Vec::new();
        let mut region_ids = std::collections::HashMap::new();
        let cell_region: Vec<RegionId> = locations
            .iter()
            .map(|location| {
                let region = Region {
                    country: location.country,
                    continent: location.continent,
                };
                *region_ids.entry(region).or_insert_with(|| {
                    regions.push(region);
                    RegionId(u16::try_from(regions.len() - 1).expect("fewer than 65536 regions"))
                })
            })
            .collect();
        let mut keyed: Vec<(u32, CellId)> = locations
            .iter()
            .enumerate()
            .map(|(i, location)| (morton(&location.coordinates), CellId(i as u32)))
            .collect();
        keyed.sort_unstable();
        let mut tree = Quadtree {
            quads: Vec::new(),
            cells_by_quad: keyed.iter().map(|(_, cell)| *cell).collect(),
            cell_quad: vec![QuadId(0); locations.len()],
            regions,
            cell_region,
            quad_keys: Vec::new(),
        };
        if !keyed.is_empty() {
            tree.build_quad(0, 0, &keyed, 0, locations);
        }
        tree
    }

    /// Builds the quad at `level` holding `keyed[..]` (which starts at `offset` of the sorted
    /// cells), then its children; returns its id.
    fn build_quad(
        &mut self,
        level: u8,
        parent: u32,
        keyed: &[(u32, CellId)],
        offset: usize,
        locations: &[Location],
    ) -> u32 {
        let id = self.quads.len() as u32;
        self.quad_keys.push(keyed[0].0);
        self.quads.push(Quad {
            end: id + 1,
            parent,
            level,
            center: locations[keyed[0].1.0 as usize].coordinates,
            center_point: UnitVector::of(&locations[keyed[0].1.0 as usize].coordinates),
            radius_km: 0.0,
            radius_chord: 0.0,
            region: None,
            cells: 0..0,
        });
        let (center, radius_km, region) = if level == FINEST_LEVEL {
            for (_, cell) in keyed {
                self.cell_quad[cell.0 as usize] = QuadId(id);
            }
            self.quads[id as usize].cells = offset as u32..(offset + keyed.len()) as u32;
            let points: Vec<Coordinates> = keyed
                .iter()
                .map(|(_, cell)| locations[cell.0 as usize].coordinates)
                .collect();
            let center = bounding_center(points.iter().copied());
            let radius = points
                .iter()
                .map(|point| center.distance_km(point))
                .fold(0.0, f64::max);
            let first = self.cell_region[keyed[0].1.0 as usize];
            let uniform = keyed
                .iter()
                .all(|(_, cell)| self.cell_region[cell.0 as usize] == first);
            (center, radius, uniform.then_some(first))
        } else {
            // The two bits below this level's in the Morton key pick the child.
            let shift = 2 * u32::from(FINEST_LEVEL - level - 1);
            let mut children = Vec::new();
            let mut start = 0;
            while start < keyed.len() {
                let quarter = (keyed[start].0 >> shift) & 3;
                let len = keyed[start..]
                    .iter()
                    .take_while(|(key, _)| (key >> shift) & 3 == quarter)
                    .count();
                let child = self.build_quad(
                    level + 1,
                    id,
                    &keyed[start..start + len],
                    offset + start,
                    locations,
                );
                children.push(child);
                start += len;
            }
            let center = bounding_center(children.iter().map(|&c| self.quads[c as usize].center));
            let radius = children
                .iter()
                .map(|&c| {
                    let child = &self.quads[c as usize];
                    center.distance_km(&child.center) + child.radius_km
                })
                .fold(0.0, f64::max);
            let first = self.quads[children[0] as usize].region;
            let uniform = first.is_some()
                && children
                    .iter()
                    .all(|&c| self.quads[c as usize].region == first);
            (center, radius, if uniform { first } else { None })
        };
        let end = self.quads.len() as u32;
        let quad = &mut self.quads[id as usize];
        quad.end = end;
        quad.center = center;
        quad.center_point = UnitVector::of(&center);
        // Distances are rounded; a little slack keeps the bound a bound.
        quad.radius_km = radius_km * (1.0 + 1e-9) + 1e-6;
        quad.radius_chord = UnitVector::chord_of_km(quad.radius_km);
        quad.region = region;
        id
    }

    /// The level of the smallest quad holding both `a` and `b`.
    pub(super) fn common_level(&self, a: u32, b: u32) -> u8 {
        let differ = self.quad_keys[a as usize] ^ self.quad_keys[b as usize];
        // Keys use the low 2 × FINEST_LEVEL bits, two per level from the top.
        let shared = (differ.leading_zeros() - (32 - 2 * u32::from(FINEST_LEVEL))) / 2;
        let shared = u8::try_from(shared).expect("at most FINEST_LEVEL");
        shared
            .min(self.quads[a as usize].level)
            .min(self.quads[b as usize].level)
    }

    /// The smallest quad holding both `a` and `b`.
    pub(super) fn common_ancestor(&self, mut a: u32, mut b: u32) -> u32 {
        while self.quads[a as usize].level > self.quads[b as usize].level {
            a = self.quads[a as usize].parent;
        }
        while self.quads[b as usize].level > self.quads[a as usize].level {
            b = self.quads[b as usize].parent;
        }
        while a != b {
            a = self.quads[a as usize].parent;
            b = self.quads[b as usize].parent;
        }
        a
    }
}

/// A binary trie of one address family's networks, with a summary on every inner node.
#[derive(Debug, Default)]
pub(super) struct Trie {
    /// Children of each inner node: [`EMPTY`], a leaf ([`LEAF`] | cell, or [`UNPLACED`]) or
    /// the index of an inner node. Node 0 is the root.
    nodes: Vec<[u32; 2]>,
    /// Each inner node's summary.
    summaries: Vec<Summary>,
    /// Address width: 32 or 128.
    bits: u8,
    /// The inner nodes on the path of the last insert, by depth, and its address: networks
    /// come in address order, so the next insert starts where the paths part.
    path: Vec<u32>,
    last: u128,
}

const EMPTY: u32 = 0;
const LEAF: u32 = 1 << 31;
/// A database record we cannot place.
const UNPLACED: u32 = LEAF | (LEAF - 1);

impl Trie {
    pub(super) fn new(bits: u8) -> Trie {
        Trie {
            nodes: vec![[EMPTY; 2]],
            summaries: Vec::new(),
            bits,
            path: vec![0],
            last: 0,
        }
    }

    /// Adds the network `addr`/`prefix_len` (address left-aligned in a u128) holding `cell`.
    /// Networks must not overlap (a MaxMind tree's never do).
    pub(super) fn insert(&mut self, addr: u128, prefix_len: u8, cell: Option<CellId>) {
        let leaf = cell.map_or(UNPLACED, |cell| LEAF | cell.0);
        if prefix_len == 0 {
            // The whole family is one network: the root's two halves are the same leaf.
            self.nodes[0] = [leaf, leaf];
            return;
        }
        // The shared path with the last insert is still valid: start below it.
        let common = ((addr ^ self.last).leading_zeros() as usize)
            .min(self.path.len() - 1)
            .min(usize::from(prefix_len - 1));
        self.path.truncate(common + 1);
        self.last = addr;
        let mut node = self.path[common] as usize;
        for depth in common as u8..prefix_len - 1 {
            let bit = bit_at(addr, depth);
            let child = self.nodes[node][bit];
            node = if child == EMPTY {
                let new = self.nodes.len() as u32;
                self.nodes.push([EMPTY; 2]);
                self.nodes[node][bit] = new;
                new as usize
            } else if child & LEAF != 0 {
                // Inside an existing network: the database is not a tree; keep the first.
                return;
            } else {
                child as usize
            };
            self.path.push(node as u32);
        }
        let bit = bit_at(addr, prefix_len - 1);
        self.nodes[node][bit] = leaf;
    }

    /// Computes every inner node's summary; call once after the last insert.
    pub(super) fn summarize(&mut self, tree: &Quadtree) {
        let empty = Summary {
            places: [0; COVER],
            unlocated: true,
        };
        self.summaries = vec![empty; self.nodes.len()];
        // Children are always created after their parent, so a reverse scan sees them first.
        for node in (0..self.nodes.len()).rev() {
            let [left, right] = self.nodes[node];
            let left = self.child_summary(left);
            let right = self.child_summary(right);
            self.summaries[node] = combine(&left, &right, tree);
        }
    }

    /// The widest networks no longer than `max_len` in which every address has one answer,
    /// among those whose summary cannot tell (it lists quads not decided as a whole), as
    /// (left-aligned address, prefix length) in address order. `answers` gives each cell's
    /// answer, each quad's (the answer of all its locations, or [`MIXED`]) and that of
    /// addresses the database cannot place.
    ///
    /// Bottom-up over the trie: a node has one answer when its summary's places tell so, or
    /// else when both children have the same one, at any depth, so a network deeper than
    /// `max_len` with places of several answers never hides a wide one of one answer above it.
    /// Only nodes whose summaries cannot tell are descended (and, down to `max_len`, those
    /// whose summaries tell several answers, for their children), and below `max_len` a walk
    /// stops at the first address of another answer. Networks a summary tells are left out:
    /// [`Trie::widest`] finds them on the query path.
    pub(super) fn uniform_networks(&self, answers: &Answers<'_>, max_len: u8) -> Vec<(u128, u8)> {
        let mut widest = Vec::new();
        if self.is_empty() || self.whole_family().is_some() {
            return widest;
        }
        let mut walk = Uniform {
            trie: self,
            answers,
            max_len,
            widest: &mut widest,
        };
        match answers.tell(&self.summaries[0]) {
            Told::One(_) => {}
            Told::Several => {
                walk.node(0, 0, 0);
            }
            Told::Unknown(_) => {
                if walk.node(0, 0, 0) != MIXED {
                    widest.push((0, 0));
                }
            }
        }
        // A node records its children after the networks below both of them.
        widest.sort_unstable();
        widest
    }

    fn child_summary(&self, child: u32) -> Summary {
        match child {
            EMPTY | UNPLACED => Summary {
                places: [0; COVER],
                unlocated: true,
            },
            leaf if leaf & LEAF != 0 => {
                let mut places = [0; COVER];
                places[0] = encode(Place::Cell(CellId(leaf & !LEAF)));
                Summary {
                    places,
                    unlocated: false,
                }
            }
            node => self.summaries[node as usize],
        }
    }

    /// The cell and network of `addr` (left-aligned).
    pub(super) fn lookup(&self, addr: u128) -> GeoHit {
        if let Some(child) = self.whole_family() {
            let cell = (child != EMPTY && child != UNPLACED).then_some(CellId(child & !LEAF));
            return GeoHit {
                cell,
                prefix_len: 0,
            };
        }
        let mut node = 0usize;
        // The address's bits from the top: one shift per level rather than one from the top.
        let mut rest = addr;
        for depth in 0..self.bits {
            let child = self.nodes[node][(rest >> 127) as usize];
            rest <<= 1;
            match child {
                EMPTY | UNPLACED => {
                    return GeoHit {
                        cell: None,
                        prefix_len: depth + 1,
                    };
                }
                leaf if leaf & LEAF != 0 => {
                    return GeoHit {
                        cell: Some(CellId(leaf & !LEAF)),
                        prefix_len: depth + 1,
                    };
                }
                inner => node = inner as usize,
            }
        }
        unreachable!("a path through the trie ends in a leaf within the address width")
    }

    /// The shortest prefix length `p <= end` such that `accept` holds for the summary of the
    /// node at depth `p` on `addr`'s path (`end` itself, the client's network, is always
    /// accepted). The whole family is depth 0, when the root is an inner node.
    ///
    /// `accept` must be monotone down the path: when it holds for a node, it holds for every
    /// node below it. Summaries only narrow going down (a child's places each lie inside one
    /// of its parent's, and a child mixes in unlocated space only if its parent does), so any
    /// test of the form "every place listed lies in places of one answer" is. The path is
    /// walked once, then searched by halves: about five summaries tested for an IPv4 client
    /// instead of one per level. Whatever `accept` is, the depth returned is one it accepted.
    pub(super) fn widest(
        &self,
        addr: u128,
        end: u8,
        accept: &mut dyn FnMut(Summary) -> bool,
    ) -> u8 {
        if self.whole_family().is_some() {
            return 0;
        }
        // The inner nodes on the path, by depth: `path[d]` is the network of length `d`.
        let mut path = [0u32; 128];
        let mut len = 0;
        let mut node = 0u32;
        let mut rest = addr;
        for _ in 0..end {
            path[len] = node;
            len += 1;
            let child = self.nodes[node as usize][(rest >> 127) as usize];
            rest <<= 1;
            if child == EMPTY || child & LEAF != 0 {
                break;
            }
            node = child;
        }
        // The first accepted depth in `0..len`; `len` stands for `end`, always accepted.
        let (mut lo, mut hi) = (0, len);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if accept(self.summaries[path[mid] as usize]) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if lo == len { end } else { lo as u8 }
    }

    /// The summaries of the inner nodes on `addr`'s path shallower than `end`, by depth: what
    /// [`Trie::widest`] searches, for tests that walk it level by level.
    #[cfg(test)]
    pub(super) fn path_summaries(&self, addr: u128, end: u8) -> Vec<Summary> {
        let mut summaries = Vec::new();
        if self.whole_family().is_some() {
            return summaries;
        }
        let mut node = 0u32;
        for depth in 0..end {
            summaries.push(self.summaries[node as usize]);
            let child = self.nodes[node as usize][bit_at(addr, depth)];
            if child == EMPTY || child & LEAF != 0 {
                break;
            }
            node = child;
        }
        summaries
    }

    /// Whether no network was inserted.
    pub(super) fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && self.nodes[0] == [EMPTY; 2]
    }

    /// Replaces every leaf's cell `c` by `renumber[c]` (before [`Trie::summarize`]).
    pub(super) fn renumber_cells(&mut self, renumber: &[u32]) {
        for children in &mut self.nodes {
            for child in children {
                if *child & LEAF != 0 && *child != UNPLACED {
                    *child = LEAF | renumber[(*child & !LEAF) as usize];
                }
            }
        }
    }

    /// The one leaf (or emptiness) covering the whole family, when the root is not split.
    fn whole_family(&self) -> Option<u32> {
        let [left, right] = self.nodes[0];
        (left == right && (left == EMPTY || left & LEAF != 0)).then_some(left)
    }

    /// Number of inner nodes whose summary lists quads, for logs.
    pub(super) fn coarse_len(&self) -> usize {
        self.summaries.iter().filter(|s| s.is_coarse()).count()
    }

    /// Number of inner nodes, for logs.
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// Answers per place, for [`Trie::uniform_networks`].
#[derive(Debug, Clone, Copy)]
pub struct Answers<'a> {
    /// By `CellId`.
    pub cells: &'a [u32],
    /// By `QuadId`: the answer of every location in the quad, or [`MIXED`].
    pub quads: &'a [u32],
    /// Of addresses the database cannot place.
    pub unlocated: u32,
}

/// What a summary's places tell of the answers below a trie node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    /// Every address below has this answer.
    One(u32),
    /// Some addresses below have different answers.
    Several,
    /// The places include quads of several answers: only the addresses below can tell. The
    /// answer of the other places, if any.
    Unknown(Option<u32>),
}

impl Answers<'_> {
    /// What `summary` tells. Every place it lists holds at least one address below (cells, and
    /// quads enclosing some): a place of one answer is an answer below.
    fn tell(&self, summary: &Summary) -> Told {
        let mut seen = summary.unlocated.then_some(self.unlocated);
        let mut unknown = false;
        for place in summary.places() {
            let here = match place {
                Place::Cell(cell) => self.cells[cell.0 as usize],
                Place::Quad(quad) => self.quads[quad.0 as usize],
            };
            match seen {
                _ if here == MIXED => unknown = true,
                Some(value) if value != here => return Told::Several,
                _ => seen = Some(here),
            }
        }
        match seen {
            _ if unknown => Told::Unknown(seen),
            Some(value) => Told::One(value),
            None => Told::Several,
        }
    }
}

/// The walk of [`Trie::uniform_networks`].
struct Uniform<'t> {
    trie: &'t Trie,
    answers: &'t Answers<'t>,
    max_len: u8,
    widest: &'t mut Vec<(u128, u8)>,
}

/// Addresses under a node have more than one answer.
pub const MIXED: u32 = u32::MAX;

impl Uniform<'_> {
    /// The one answer of inner node `node` (network `addr`/`len`, shorter than `max_len`), or
    /// [`MIXED`]; records the widest networks of one answer below it, down to `max_len`, that
    /// their summaries do not tell.
    fn node(&mut self, node: u32, addr: u128, len: u8) -> u32 {
        let trie = self.trie;
        let [left, right] = trie.nodes[node as usize];
        let half = 1u128 << (127 - u32::from(len));
        let children = [(left, addr), (right, addr | half)];
        let mut values = [MIXED; 2];
        let mut told = [true; 2];
        let deeper = len + 1 < self.max_len;
        for (i, &(child, at)) in children.iter().enumerate() {
            values[i] = match child {
                EMPTY | UNPLACED => self.answers.unlocated,
                leaf if leaf & LEAF != 0 => self.answers.cells[(leaf & !LEAF) as usize],
                inner => match self.answers.tell(&trie.summaries[inner as usize]) {
                    Told::One(value) => value,
                    Told::Several => {
                        // Below a summary of cells, every summary tells.
                        if deeper && trie.summaries[inner as usize].is_coarse() {
                            // For the networks of one answer below it.
                            self.node(inner, at, len + 1);
                        }
                        MIXED
                    }
                    Told::Unknown(_) => {
                        told[i] = false;
                        if deeper {
                            self.node(inner, at, len + 1)
                        } else {
                            self.value(inner, None)
                        }
                    }
                },
            };
        }
        if values[0] != MIXED && values[0] == values[1] {
            return values[0];
        }
        for i in 0..2 {
            if values[i] != MIXED && !told[i] {
                self.widest.push((children[i].1, len + 1));
            }
        }
        MIXED
    }

    /// The one answer of inner node `node`, or [`MIXED`] as soon as an address below answers
    /// otherwise, or otherwise than `expected`; records nothing.
    fn value(&self, node: u32, expected: Option<u32>) -> u32 {
        let trie = self.trie;
        let seen = match self.answers.tell(&trie.summaries[node as usize]) {
            Told::One(value) => {
                return if expected.is_none_or(|e| e == value) {
                    value
                } else {
                    MIXED
                };
            }
            Told::Several => return MIXED,
            Told::Unknown(seen) => seen,
        };
        let expected = match (expected, seen) {
            (Some(e), Some(s)) if e != s => return MIXED,
            (Some(e), _) => Some(e),
            (None, s) => s,
        };
        let [left, right] = trie.nodes[node as usize];
        let left = self.child_value(left, expected);
        if left == MIXED {
            return MIXED;
        }
        self.child_value(right, Some(left))
    }

    fn child_value(&self, child: u32, expected: Option<u32>) -> u32 {
        let value = match child {
            EMPTY | UNPLACED => self.answers.unlocated,
            leaf if leaf & LEAF != 0 => self.answers.cells[(leaf & !LEAF) as usize],
            inner => return self.value(inner, expected),
        };
        if expected.is_none_or(|e| e == value) {
            value
        } else {
            MIXED
        }
    }
}

/// Left-aligns an address in a u128 and gives its family's width.
pub(super) fn left_aligned(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u128::from(v4.to_bits()) << 96, true),
        IpAddr::V6(v6) => (v6.to_bits(), false),
    }
}

fn bit_at(addr: u128, depth: u8) -> usize {
    ((addr >> (127 - u32::from(depth))) & 1) as usize
}

/// The places of both children, coarsened to enclosing quads when there are more than
/// [`COVER`]: cells first become their finest quads, then the two places with the finest
/// common quad are replaced by it, until they fit.
fn combine(a: &Summary, b: &Summary, tree: &Quadtree) -> Summary {
    let unlocated = a.unlocated || b.unlocated;
    // The common cases: one child's places hold the other's, or both fit.
    let mut union = [0u32; 2 * COVER];
    let mut n = 0;
    for &code in a.places.iter().chain(&b.places).filter(|c| **c != 0) {
        if !union[..n].contains(&code) {
            union[n] = code;
            n += 1;
        }
    }
    if n <= COVER {
        let mut places = [0; COVER];
        places[..n].copy_from_slice(&union[..n]);
        return Summary { places, unlocated };
    }
    // More than COVER places: coarsen them to quads, merging the pair with the deepest common
    // ancestor until COVER are left. At most 2 × COVER quads (and the ancestor of two) are held
    // at once, on the stack: this runs for most inner nodes of a City database's trie.
    let mut quads = [0u32; 2 * COVER + 1];
    for (quad, &code) in quads.iter_mut().zip(&union[..n]) {
        *quad = match decode(code) {
            Place::Cell(cell) => tree.cell_quad[cell.0 as usize].0,
            Place::Quad(quad) => quad.0,
        };
    }
    let mut len = outermost(&mut quads[..n], tree);
    while len > COVER {
        // The pair with the deepest common ancestor, the first such in pair order.
        let mut best = (0, 1, tree.common_level(quads[0], quads[1]));
        for i in 0..len {
            for j in i + 1..len {
                let level = tree.common_level(quads[i], quads[j]);
                if level > best.2 {
                    best = (i, j, level);
                }
            }
        }
        quads[len] = tree.common_ancestor(quads[best.0], quads[best.1]);
        len = outermost(&mut quads[..=len], tree);
    }
    let mut encoded = [0; COVER];
    for (slot, &quad) in encoded.iter_mut().zip(&quads[..len]) {
        *slot = encode(Place::Quad(QuadId(quad)));
    }
    Summary {
        places: encoded,
        unlocated,
    }
}

/// Sorts `quads`, then moves to the front those not inside another (or equal to one before
/// them): a quad's subtree follows it. Returns how many those are.
fn outermost(quads: &mut [u32], tree: &Quadtree) -> usize {
    quads.sort_unstable();
    let mut kept = 0;
    for i in 0..quads.len() {
        let quad = quads[i];
        if kept > 0 && quad < tree.quads[quads[kept - 1] as usize].end {
            continue;
        }
        quads[kept] = quad;
        kept += 1;
    }
    kept
}

const TAG_CELL: u32 = 1 << 30;
const TAG_QUAD: u32 = 2 << 30;
const ID_MASK: u32 = TAG_CELL - 1;

fn encode(place: Place) -> u32 {
    match place {
        Place::Cell(cell) => TAG_CELL | cell.0,
        Place::Quad(quad) => TAG_QUAD | quad.0,
    }
}

fn decode(code: u32) -> Place {
    match code & (3 << 30) {
        TAG_CELL => Place::Cell(CellId(code & ID_MASK)),
        _ => Place::Quad(QuadId(code & ID_MASK)),
    }
}

/// The Morton (Z-order) key of a point at the finest level: x from longitude, y from latitude,
/// interleaved so that every quad's locations are contiguous once sorted.
fn morton(point: &Coordinates) -> u32 {
    let side = f64::from(1u32 << FINEST_LEVEL);
    let x = (((point.longitude + 180.0) / 360.0 * side) as u32).min((1 << FINEST_LEVEL) - 1);
    let y = (((point.latitude + 90.0) / 180.0 * side) as u32).min((1 << FINEST_LEVEL) - 1);
    let mut key = 0;
    for bit in (0..u32::from(FINEST_LEVEL)).rev() {
        key = (key << 2) | (((y >> bit) & 1) << 1) | ((x >> bit) & 1);
    }
    key
}

/// The middle of the bounding box of `points` (longitudes do not wrap: quads never straddle the
/// antimeridian).
fn bounding_center(points: impl Iterator<Item = Coordinates>) -> Coordinates {
    let (mut lat_lo, mut lat_hi, mut lon_lo, mut lon_hi) = (90.0f64, -90.0f64, 180.0f64, -180.0f64);
    for point in points {
        lat_lo = lat_lo.min(point.latitude);
        lat_hi = lat_hi.max(point.latitude);
        lon_lo = lon_lo.min(point.longitude);
        lon_hi = lon_hi.max(point.longitude);
    }
    Coordinates::new((lat_lo + lat_hi) / 2.0, (lon_lo + lon_hi) / 2.0)
        .expect("the middle of valid coordinates is valid")
}
