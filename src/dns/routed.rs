//! Prepared answers of routed names: the A and AAAA records of every ranking of every service.
//!
//! Rebuilt with each routing table (every state change), so a query only picks a prepared set.

use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::config::{Config, PoolConfig, ServiceConfig};
use crate::routing::{DcId, RankingId, RoutingTable, ServiceId};

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

/// The records of one ranking: A and AAAA, each cut to the service's answer size.
#[derive(Debug)]
struct RankedRecords {
    a: RecordSet,
    aaaa: RecordSet,
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
        let RankedRecords { a, aaaa } =
            &self.services[usize::from(service.0)].by_ranking[ranking.0 as usize];
        match qtype {
            RecordType::AAAA => aaaa,
            RecordType::ANY if a.is_empty() => aaaa,
            _ => a,
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
    let by_ranking = rankings
        .iter()
        .map(|ranking| RankedRecords {
            a: take(ranking, &|pool| {
                pool.a.iter().map(|ip| RData::A(A(*ip))).collect()
            }),
            aaaa: take(ranking, &|pool| {
                pool.aaaa.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect()
            }),
        })
        .collect();
    ServiceAnswers { by_ranking }
}
