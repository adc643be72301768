//! Prepared answers of routed names: the A and AAAA records of every ranking of every service.
//!
//! Rebuilt with each routing table (every state change), so a query only picks a prepared set:
//! with `rotation: cyclic` or `random`, one of the orders prepared of each ranking's addresses
//! (`rotation.rs` says which).

use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::config::{Config, MAX_ROTATED_ADDRESSES, PoolConfig, Rotation, ServiceConfig};
use crate::routing::{DcId, RankingId, RoutingTable, ServiceId};

use super::answer::Reply;
use super::fast::{Prepared, question};
use super::rotation;
use super::rrset::RecordSet;

/// Prepared records of every service's rankings.
#[derive(Debug)]
pub struct Answers {
    /// Shared with the previous snapshot's for services whose rankings did not change.
    services: Vec<Arc<ServiceAnswers>>,
}

#[derive(Debug)]
struct ServiceAnswers {
    /// How the addresses are ordered across answers.
    rotation: Rotation,
    /// Indexed by `RankingId`.
    by_ranking: Vec<RankedRecords>,
}

/// The records of one ranking: A and AAAA, each cut to the service's answer size, in every
/// order its rotation gives.
#[derive(Debug)]
struct RankedRecords {
    a: Orders,
    aaaa: Orders,
}

/// The records of one address family in every order of their rotation (one for `fixed`): the
/// order `k` starts each datacenter's addresses at its `k`-th (modulo their number).
#[derive(Debug)]
struct Orders(Box<[Ordered]>);

/// The records of one order, and their wire form for the fast path (`None` when there are
/// none, or they cannot be encoded).
#[derive(Debug)]
struct Ordered {
    records: RecordSet,
    wire: Option<Prepared>,
}

/// The records a query gets for one ranking: the order its rotation chose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Picked<'a> {
    /// The records.
    pub(crate) records: &'a RecordSet,
    /// Their wire form as the fast path sends them, when prepared.
    pub(crate) wire: Option<&'a Prepared>,
    /// Which order (0: the configured one), of how many.
    pub(crate) order: (u8, u8),
}

impl Answers {
    /// Prepares the records of every ranking of `routing`. `previous` is the answers and table
    /// of the snapshot being replaced, when it has the same configuration: services whose
    /// rankings did not change keep their records.
    pub fn build(
        config: &Config,
        routing: &RoutingTable,
        previous: Option<(&Answers, &RoutingTable)>,
    ) -> Answers {
        let services = config
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| {
                let id = ServiceId(i as u16);
                match previous {
                    Some((answers, table)) if routing.same_rankings(table, id) => {
                        answers.services[i].clone()
                    }
                    _ => Arc::new(prepare_service(service, routing.rankings(id))),
                }
            })
            .collect();
        Answers { services }
    }

    /// The records for `qtype` of one ranking, in the order this query gets (see `rotation.rs`:
    /// the same for every call within one query). ANY gets the A set (RFC 8482 §4.1: one
    /// RRset), or AAAA for an IPv6-only service.
    pub(crate) fn pick(
        &self,
        service: ServiceId,
        ranking: RankingId,
        qtype: RecordType,
    ) -> Picked<'_> {
        let answers = &self.services[usize::from(service.0)];
        let ranked = &answers.by_ranking[ranking.0 as usize];
        let aaaa = ranked.is_aaaa(qtype);
        let orders = if aaaa { &ranked.aaaa.0 } else { &ranked.a.0 };
        let n = orders.len();
        let k = rotation::order(
            answers.rotation,
            rotation::key(service.0, ranking.0, aaaa),
            n,
        );
        Picked {
            records: &orders[k].records,
            wire: orders[k].wire.as_ref(),
            order: (k as u8, n as u8),
        }
    }
}

impl RankedRecords {
    /// Whether `qtype` gets the AAAA set: AAAA, and ANY for an IPv6-only service (RFC 8482
    /// §4.1: one RRset); everything else gets A.
    fn is_aaaa(&self, qtype: RecordType) -> bool {
        match qtype {
            RecordType::AAAA => true,
            RecordType::ANY => self.a.0[0].records.is_empty(),
            _ => false,
        }
    }
}

/// Prepares the records of every ranking: walk the ranking, take addresses until the service's
/// answer size is reached; with a rotation, once per starting address.
fn prepare_service(service: &ServiceConfig, rankings: &[Box<[DcId]>]) -> ServiceAnswers {
    let name = Name::from_ascii(format!("{}.", service.name)).expect("validated name");
    let pool = |dc: &DcId| {
        service
            .pools
            .iter()
            .find(|pool| pool.datacenter == usize::from(dc.0))
            .expect("rankings only hold the service's own datacenters")
    };
    let answers = service.answers.get() as usize;
    // Every routed answer follows a question of the service's name, whatever its case.
    let question = question(&LowerName::new(&name), u16::from(RecordType::A));
    let ordered = |records: Vec<Record>| {
        let records = RecordSet::new(records);
        let wire = question.as_ref().and_then(|question| {
            (!records.is_empty())
                .then(|| Prepared::encode(question, Reply::answer(&records)))
                .flatten()
        });
        Ordered { records, wire }
    };
    // Every order of one family's addresses along `ranking`.
    let orders = |ranking: &[DcId], rdata: &dyn Fn(&PoolConfig) -> Vec<RData>| -> Orders {
        let pools: Vec<Vec<RData>> = ranking.iter().map(|dc| rdata(pool(dc))).collect();
        let n = n_orders(service.rotation, &pools, answers);
        let orders = (0..n)
            .map(|k| {
                let records = pools
                    .iter()
                    .flat_map(|addresses| {
                        let start = if addresses.is_empty() {
                            0
                        } else {
                            k % addresses.len()
                        };
                        addresses[start..].iter().chain(&addresses[..start])
                    })
                    .take(answers)
                    .map(|rdata| Record::from_rdata(name.clone(), service.ttl, rdata.clone()))
                    .collect();
                ordered(records)
            })
            .collect();
        Orders(orders)
    };
    let by_ranking = rankings
        .iter()
        .map(|ranking| RankedRecords {
            a: orders(ranking, &|pool| {
                pool.a.iter().map(|ip| RData::A(A(*ip))).collect()
            }),
            aaaa: orders(ranking, &|pool| {
                pool.aaaa.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect()
            }),
        })
        .collect();
    ServiceAnswers {
        rotation: service.rotation,
        by_ranking,
    }
}

/// How many orders a ranking's addresses of one family (`pools`, along the ranking) are
/// prepared in: 1 for `fixed`; else enough that every pool that contributes to the answer
/// starts at each of its addresses equally often (the least common multiple of their sizes),
/// or, should that exceed [`MAX_ROTATED_ADDRESSES`], as many as the largest has addresses.
fn n_orders<T>(rotation: Rotation, pools: &[Vec<T>], answers: usize) -> usize {
    if rotation == Rotation::Fixed {
        return 1;
    }
    let mut taken = 0;
    let sizes: Vec<usize> = pools
        .iter()
        .map(Vec::len)
        .filter(|&n| n > 0)
        .take_while(|&n| {
            let before = taken;
            taken += n;
            before < answers
        })
        .collect();
    let largest = sizes.iter().copied().max().unwrap_or(1);
    let mut lcm = 1;
    for n in sizes {
        lcm = lcm / gcd(lcm, n) * n;
        if lcm > MAX_ROTATED_ADDRESSES {
            return largest;
        }
    }
    lcm
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_enough_for_every_contributing_pool_to_start_everywhere() {
        // (rotation, pool sizes along the ranking, answers, orders)
        #[rustfmt::skip]
        let cases: &[(Rotation, &[usize], usize, usize)] = &[
            (Rotation::Fixed, &[3, 2], 1, 1),
            (Rotation::Cyclic, &[3, 2], 1, 3),
            (Rotation::Random, &[3, 2], 1, 3),
            // The second pool contributes too: each starts everywhere within lcm(3, 2) orders.
            (Rotation::Cyclic, &[3, 2], 4, 6),
            (Rotation::Cyclic, &[3, 2], 3, 3),
            // Empty pools (no address of the family) are skipped.
            (Rotation::Cyclic, &[0, 2, 4], 3, 4),
            (Rotation::Cyclic, &[1, 1], 2, 1),
            (Rotation::Cyclic, &[], 1, 1),
            (Rotation::Cyclic, &[0, 0], 2, 1),
            // Past the bound, as many as the largest pool has addresses.
            (Rotation::Cyclic, &[32, 31], 40, 32),
            (Rotation::Cyclic, &[5, 7], 6, 7),
            (Rotation::Cyclic, &[4, 8], 9, 8),
        ];
        for &(rotation, sizes, answers, expected) in cases {
            let pools: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0; n]).collect();
            assert_eq!(
                n_orders(rotation, &pools, answers),
                expected,
                "{rotation:?} {sizes:?} answers {answers}"
            );
        }
    }
}
