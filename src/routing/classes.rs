//! Answer classes: which rankings of a decision map give a query the same reply.
//!
//! A map ranks as deep as any answer may need: past datacenters without addresses of one family
//! (they pass that family's answer on to the next) and past every datacenter that capacity spill
//! or slow start may move to the front. So places whose replies are the same often have
//! different rankings: with one answer, every place whose nearest datacenter is the same gets
//! the same A record, whatever the order of the others. The ECS scope compares classes rather
//! than rankings, so that it is the widest network of one *reply*.
//!
//! Two rankings are in one class for a family (A, AAAA, or both for ANY) when, for every hash
//! bucket of the client's network, the live layer's choice of them (`live.rs`: the ranking, or
//! with spill the ranking with one of its leading datacenters moved first) carries the same
//! records of that family: the same datacenters contributing addresses, in the same order, up
//! to the service's answer size (`dns::routed` prepares the records from exactly these, in
//! every rotation), with the same fail-open flag, and SERVFAIL (no datacenter at all) apart
//! from NODATA (no address of the family). Classes are computed once per map, when it is built,
//! from the rankings and the [`Answering`] part of its inputs; a query only compares ids.
//!
//! What this does not do: decide anything. The rankings are the map's, and the live layer
//! still answers from a ranking; classes only say where two rankings cannot be told apart by
//! their replies.

use std::collections::HashMap;

use super::{DcId, Family};

/// What the records of a ranking depend on besides the ranking: a part of the map's inputs, so
/// that services sharing a map also share its classes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Answering {
    /// How many addresses an answer carries.
    pub(super) answers: usize,
    /// The service's datacenters, sorted by `DcId`.
    pub(super) datacenters: Vec<Usage>,
}

/// How one datacenter takes part in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Usage {
    /// The datacenter.
    pub(super) dc: DcId,
    /// Its addresses of each family (A, AAAA), counted up to the answer size.
    pub(super) addresses: [usize; 2],
    /// Whether it sends some hash buckets on to the next datacenter (capacity spill, slow
    /// start).
    pub(super) spills: bool,
    /// Over its high watermark or latency limit: it takes no spill.
    pub(super) full: bool,
}

impl Answering {
    fn usage(&self, dc: DcId) -> Option<&Usage> {
        self.datacenters
            .binary_search_by_key(&dc, |u| u.dc)
            .ok()
            .map(|i| &self.datacenters[i])
    }

    /// The records a reply of `family` along `ranking` carries.
    fn carried(&self, ranking: &[DcId], family: Family) -> Carried {
        let of = |aaaa: bool| -> Box<[DcId]> {
            let mut taken = 0;
            let mut carried = Vec::new();
            for &dc in ranking {
                if taken >= self.answers {
                    break;
                }
                let n = self.usage(dc).map_or(0, |u| u.addresses[usize::from(aaaa)]);
                if n > 0 {
                    carried.push(dc);
                    taken += n;
                }
            }
            carried.into()
        };
        let (aaaa, datacenters) = match family {
            Family::A => (false, of(false)),
            Family::Aaaa => (true, of(true)),
            Family::Any => {
                let a = of(false);
                if a.is_empty() {
                    (true, of(true))
                } else {
                    (false, a)
                }
            }
        };
        Carried { aaaa, datacenters }
    }
}

/// Spill (capacity between the watermarks, slow start): the datacenters that can come first in
/// `ranking` depending on the client's hash bucket: the leading ones that are not full, up to
/// the first that spills nothing. Fewer than two means the bucket does not matter.
pub(super) fn spill_fronts(
    ranking: &[DcId],
    failed_open: bool,
    full: impl Fn(DcId) -> bool,
    spills: impl Fn(DcId) -> bool,
) -> Vec<DcId> {
    if failed_open {
        return Vec::new();
    }
    let mut fronts = Vec::new();
    for &dc in ranking {
        if full(dc) {
            break;
        }
        fronts.push(dc);
        if !spills(dc) {
            break;
        }
    }
    fronts
}

/// `ranking` with `dc` moved first: the ranking of a client whose bucket `dc` keeps.
pub(super) fn moved_first(ranking: &[DcId], dc: DcId) -> Vec<DcId> {
    let mut moved = vec![dc];
    moved.extend(ranking.iter().copied().filter(|d| *d != dc));
    moved
}

/// The records of one reply: whose addresses, of which family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Carried {
    /// AAAA records (for ANY: no datacenter of the ranking has A).
    aaaa: bool,
    /// The datacenters whose addresses the records are, in order: those with addresses of the
    /// family, until the answer size is reached.
    datacenters: Box<[DcId]>,
}

/// What a reply of one family carries, for every hash bucket: equal keys, equal replies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// No datacenter at all: SERVFAIL.
    servfail: bool,
    failed_open: bool,
    /// The records; with spill, per possible front (`None`: the same for every bucket).
    carried: Vec<(Option<DcId>, Carried)>,
}

/// Each ranking's class, per family; families that group rankings alike share one table.
#[derive(Debug, Default)]
pub(super) struct Classes {
    /// Class ids by ranking, numbered in order of first appearance, so that two families that
    /// group alike have equal tables.
    tables: Vec<Box<[u32]>>,
    /// Whether each table has one class only: every client gets the same reply.
    single: Vec<bool>,
    /// Each family's table, by [`Family`] (A, AAAA, ANY).
    of: [u8; 3],
}

impl Classes {
    /// The classes of `rankings` (each with whether it failed open) under `answering`.
    pub(super) fn of(rankings: &[(Box<[DcId]>, bool)], answering: &Answering) -> Classes {
        let key = |ranking: &[DcId], failed_open: bool, family: Family| {
            let full = |dc: DcId| answering.usage(dc).is_some_and(|u| u.full);
            let spills = |dc: DcId| answering.usage(dc).is_some_and(|u| u.spills);
            let fronts = spill_fronts(ranking, failed_open, full, spills);
            let mut carried: Vec<_> = if fronts.len() < 2 {
                vec![(None, answering.carried(ranking, family))]
            } else {
                fronts
                    .iter()
                    .map(|&dc| {
                        let moved = moved_first(ranking, dc);
                        (Some(dc), answering.carried(&moved, family))
                    })
                    .collect()
            };
            // A split whose fronts all carry the same records answers alike in every bucket.
            if carried.windows(2).all(|w| w[0].1 == w[1].1) {
                carried.truncate(1);
                carried[0].0 = None;
            }
            Key {
                servfail: ranking.is_empty(),
                failed_open,
                carried,
            }
        };
        let [a, aaaa, any]: [Vec<u32>; 3] = [Family::A, Family::Aaaa, Family::Any].map(|family| {
            let mut ids: HashMap<Key, u32> = HashMap::new();
            rankings
                .iter()
                .map(|(ranking, open)| {
                    let next = ids.len() as u32;
                    *ids.entry(key(ranking, *open, family)).or_insert(next)
                })
                .collect()
        });
        let mut classes = Classes::default();
        for (family, table) in [a, aaaa, any].into_iter().enumerate() {
            let at = match classes.tables.iter().position(|t| **t == *table) {
                Some(at) => at,
                None => {
                    // Ids start at 0 in order of appearance: one class is all zeros.
                    classes.single.push(table.iter().all(|c| *c == 0));
                    classes.tables.push(table.into());
                    classes.tables.len() - 1
                }
            };
            classes.of[family] = at as u8;
        }
        classes
    }

    /// The index of `family`'s table.
    pub(super) fn table_of(&self, family: Family) -> usize {
        usize::from(self.of[family as usize])
    }

    /// The distinct tables: class ids by ranking.
    pub(super) fn tables(&self) -> &[Box<[u32]>] {
        &self.tables
    }

    /// Whether every ranking is in one class in table `table`: the reply is the same for every
    /// client.
    pub(super) fn is_single(&self, table: usize) -> bool {
        self.single[table]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(dc: u16, a: usize, aaaa: usize, spills: bool, full: bool) -> Usage {
        Usage {
            dc: DcId(dc),
            addresses: [a, aaaa],
            spills,
            full,
        }
    }

    fn ranking(dcs: &[u16], open: bool) -> (Box<[DcId]>, bool) {
        (dcs.iter().map(|&d| DcId(d)).collect(), open)
    }

    /// (answer size and datacenters, rankings, expected class tables of A, AAAA and ANY)
    type Case<'a> = (Answering, &'a [(&'a [u16], bool)], [&'a [u32]; 3]);

    #[test]
    fn rankings_with_the_same_records_share_a_class() {
        let plain = |answers| Answering {
            answers,
            datacenters: vec![
                usage(0, 1, 0, false, false),
                usage(1, 1, 1, false, false),
                usage(2, 2, 0, false, false),
                usage(3, 0, 1, false, false),
            ],
        };
        #[rustfmt::skip]
        let cases: &[Case<'_>] = &[
            // One answer: the first datacenter with addresses of the family decides.
            (plain(1), &[(&[0, 1, 2], false), (&[0, 2, 1], false), (&[1, 0, 2], false)],
             [&[0, 0, 1], &[0, 0, 0], &[0, 0, 1]]),
            // ANY gets AAAA only where no datacenter of the ranking has A.
            (plain(1), &[(&[3], false), (&[1, 3], false), (&[3, 1], false)],
             [&[0, 1, 1], &[0, 1, 0], &[0, 1, 1]]),
            // 0 and 2 have no AAAA, 3 no A: 3 carries every AAAA answer, 0 passes A on to 2.
            (plain(1), &[(&[0, 3], false), (&[2, 3], false), (&[3, 0], false)],
             [&[0, 1, 0], &[0, 0, 0], &[0, 1, 0]]),
            // Two answers: 2 has two addresses and fills the A answer alone.
            (plain(2), &[(&[2, 0], false), (&[2, 1], false), (&[0, 2], false), (&[0, 1], false)],
             [&[0, 0, 1, 2], &[0, 1, 0, 1], &[0, 0, 1, 2]]),
            // Failing open and SERVFAIL are told apart from answers with the same records.
            (plain(1), &[(&[0], false), (&[0], true), (&[], false), (&[2], false)],
             [&[0, 1, 2, 3], &[0, 1, 2, 0], &[0, 1, 2, 3]]),
        ];
        for (answering, rankings, expected) in cases {
            let rankings: Vec<_> = rankings.iter().map(|(r, o)| ranking(r, *o)).collect();
            let classes = Classes::of(&rankings, answering);
            for (family, want) in [Family::A, Family::Aaaa, Family::Any]
                .into_iter()
                .zip(expected)
            {
                assert_eq!(
                    &*classes.tables()[classes.table_of(family)],
                    *want,
                    "{family:?} {rankings:?}"
                );
            }
        }
    }

    #[test]
    fn spill_keeps_apart_rankings_whose_fronts_carry_other_records() {
        // 0 spills into whichever datacenter comes next: [0, 1] and [0, 2] differ by bucket.
        let answering = Answering {
            answers: 1,
            datacenters: vec![
                usage(0, 1, 1, true, false),
                usage(1, 1, 1, false, false),
                usage(2, 1, 1, false, false),
                usage(3, 1, 1, false, true),
            ],
        };
        let rankings = [
            ranking(&[0, 1, 2], false),
            ranking(&[0, 2, 1], false),
            ranking(&[0, 1, 3], false),
            // A full datacenter takes no spill: 0 keeps every bucket.
            ranking(&[0, 3, 1], false),
            ranking(&[0, 3, 2], false),
            // 2 spills nothing: its answer in every bucket, whatever follows.
            ranking(&[2, 0, 1], false),
            ranking(&[2, 1, 0], false),
            // Failed open: no spill.
            ranking(&[0, 1], true),
            ranking(&[0, 2], true),
        ];
        let classes = Classes::of(&rankings, &answering);
        let a = &classes.tables()[classes.table_of(Family::A)];
        assert_eq!(&**a, &[0, 1, 0, 2, 2, 3, 3, 4, 4]);
        // Both families have one address everywhere: one table for all three.
        assert_eq!(classes.tables().len(), 1);
    }
}
