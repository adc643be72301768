//! Prepared answers of routed names: the A and AAAA records of every ranking of every service.
//!
//! Rebuilt with each routing table (every state change), so a query only picks a prepared set.

use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::config::{Config, PoolConfig, ServiceConfig};
use crate::routing::{DcId, RankingId, RoutingTable, ServiceId};

use super::answer::Reply;
use super::fast::{Prepared, question};
use super::rrset::RecordSet;

/// Prepared records of every service's rankings.
#[derive(Debug)]
pub struct Answers {
    /// Shared with the previous snapshot's for services whose rankings did not change.
    services: Vec<Arc<ServiceAnswers>>,
}

#[derive(Debug)]
struct ServiceAnswers {
    /// Indexed by `RankingId`.
    by_ranking: Vec<RankedRecords>,
}

/// The records of one ranking: A and AAAA, each cut to the service's answer size, and their
/// wire form for the fast path (`None` when there are none, or they cannot be encoded).
#[derive(Debug)]
struct RankedRecords {
    a: RecordSet,
    aaaa: RecordSet,
    a_wire: Option<Prepared>,
    aaaa_wire: Option<Prepared>,
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

    /// The records for `qtype` of one ranking. ANY gets the A set (RFC 8482 §4.1: one RRset),
    /// or AAAA for an IPv6-only service.
    pub(crate) fn records(
        &self,
        service: ServiceId,
        ranking: RankingId,
        qtype: RecordType,
    ) -> &RecordSet {
        let ranked = &self.services[usize::from(service.0)].by_ranking[ranking.0 as usize];
        if ranked.is_aaaa(qtype) {
            &ranked.aaaa
        } else {
            &ranked.a
        }
    }

    /// The wire form of [`Answers::records`], as the fast path sends it after the question.
    pub(crate) fn wire(
        &self,
        service: ServiceId,
        ranking: RankingId,
        qtype: RecordType,
    ) -> Option<&Prepared> {
        let ranked = &self.services[usize::from(service.0)].by_ranking[ranking.0 as usize];
        if ranked.is_aaaa(qtype) {
            ranked.aaaa_wire.as_ref()
        } else {
            ranked.a_wire.as_ref()
        }
    }
}

impl RankedRecords {
    /// Whether `qtype` gets the AAAA set: AAAA, and ANY for an IPv6-only service (RFC 8482
    /// §4.1: one RRset); everything else gets A.
    fn is_aaaa(&self, qtype: RecordType) -> bool {
        match qtype {
            RecordType::AAAA => true,
            RecordType::ANY => self.a.is_empty(),
            _ => false,
        }
    }
}

/// Prepares the records of every ranking: walk the ranking, take addresses until the service's
/// answer size is reached.
fn prepare_service(service: &ServiceConfig, rankings: &[Box<[DcId]>]) -> ServiceAnswers {
    let name = Name::from_ascii(format!("{}.", service.name)).expect("validated name");
    let pool = |dc: &DcId| {
        service
            .pools
            .iter()
            .find(|pool| pool.datacenter == usize::from(dc.0))
            .expect("rankings only hold the service's own datacenters")
    };
    // The first `answers` addresses along the ranking, as records of the service's name.
    let take = |ranking: &[DcId], rdata: &dyn Fn(&PoolConfig) -> Vec<RData>| -> RecordSet {
        let records: Vec<Record> = ranking
            .iter()
            .flat_map(|dc| rdata(pool(dc)))
            .take(service.answers.get() as usize)
            .map(|rdata| Record::from_rdata(name.clone(), service.ttl, rdata))
            .collect();
        RecordSet::new(records)
    };
    // Every routed answer follows a question of the service's name, whatever its case.
    let question = question(&LowerName::new(&name), u16::from(RecordType::A));
    let wire = |records: &RecordSet| {
        let question = question.as_ref()?;
        (!records.is_empty())
            .then(|| Prepared::encode(question, Reply::answer(records)))
            .flatten()
    };
    let by_ranking = rankings
        .iter()
        .map(|ranking| {
            let a = take(ranking, &|pool| {
                pool.a.iter().map(|ip| RData::A(A(*ip))).collect()
            });
            let aaaa = take(ranking, &|pool| {
                pool.aaaa.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect()
            });
            RankedRecords {
                a_wire: wire(&a),
                aaaa_wire: wire(&aaaa),
                a,
                aaaa,
            }
        })
        .collect();
    ServiceAnswers { by_ranking }
}
