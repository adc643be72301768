//! Explaining a query: what meridian answers and why, for `/v1/explain` and `_explain.` TXT.
//!
//! Runs the same steps as a real query (the catalog's `respond`, the same client location),
//! then retraces the routing decision with every datacenter's reason, so the explanation
//! always matches the answer.

use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::op::Edns;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use ipnet::IpNet;

use super::Snapshot;
use crate::geo::Location;
use crate::metrics::Rcode;
use crate::routing::{self, Explanation};

use super::answer::{Located, Question};
use super::edns::{ClientAddr, masked};

/// The label that asks for an explanation over DNS: `_explain.www.example.com TXT`.
pub(crate) const EXPLAIN_LABEL: &[u8] = b"_explain";

/// What meridian answers to one query, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryExplanation {
    /// The response code.
    pub rcode: String,
    /// The answer section, as text (`www.example.com. 30 IN A 192.0.2.3`).
    pub answers: Vec<String>,
    /// The address that was located.
    pub client: IpAddr,
    /// Whether it came from EDNS Client Subnet (else it is the resolver's).
    pub from_ecs: bool,
    /// The geo database network that matched.
    pub network: IpNet,
    /// Where the database places the client.
    pub location: Option<Location>,
    /// The ECS scope the reply carries (queries with ECS only).
    pub ecs_scope: Option<u8>,
    /// The network the answer holds for: every address in it gets the same answer under the
    /// current state (the client's address at the scope's length, in its own family).
    pub scope_network: IpNet,
    /// The service answered by routing, and its decision retraced.
    pub routing: Option<(String, Explanation)>,
}

/// The question to explain cannot be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// Not a domain name.
    #[error("{0:?} is not a domain name")]
    Name(String),
    /// Not a record type.
    #[error("{0:?} is not a record type")]
    Type(String),
    /// The ECS network has host bits set past its prefix, or a bad prefix.
    #[error("{0}")]
    Ecs(String),
}

/// Explains the query `name`/`qtype` from `resolver`, with ECS `ecs` if given.
///
/// # Errors
///
/// [`ExplainError`] for a name, type or ECS network that no query could carry.
pub fn explain_query(
    snapshot: &Snapshot,
    name: &str,
    qtype: &str,
    resolver: IpAddr,
    ecs: Option<IpNet>,
) -> Result<QueryExplanation, ExplainError> {
    let fqdn = if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    };
    let name = Name::from_ascii(&fqdn).map_err(|_| ExplainError::Name(name.to_owned()))?;
    let qtype = RecordType::from_str(&qtype.to_ascii_uppercase())
        .map_err(|_| ExplainError::Type(qtype.to_owned()))?;
    let edns = ecs.map(|net| {
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                net.addr(),
                net.prefix_len(),
                0,
            )));
        edns
    });
    let client = ClientAddr::from_query(edns.as_ref(), resolver).map_err(|_| {
        ExplainError::Ecs("the ECS network has bits set past its prefix length".to_owned())
    })?;
    Ok(explain_client(
        snapshot,
        &LowerName::new(&name),
        qtype,
        &client,
    ))
}

/// Explains a query for an already-validated client (the DNS `_explain.` path).
pub(crate) fn explain_client(
    snapshot: &Snapshot,
    name: &LowerName,
    qtype: RecordType,
    client: &ClientAddr,
) -> QueryExplanation {
    let loaded = &snapshot.loaded;
    let question = Question {
        name,
        qtype,
        qclass: DNSClass::IN,
    };
    let reply = loaded.zones.respond(
        &snapshot.prepared,
        &snapshot.routing,
        &loaded.geo,
        question,
        client,
    );
    let located = Located::new(&loaded.geo, client);
    let location = located.hit.cell.map(|cell| *loaded.geo.location(cell));
    let routing = reply.routed.map(|routed| {
        let explanation = routing::explain(
            &snapshot.routing,
            &loaded.config,
            &snapshot.states,
            routed.service,
            &located.client,
            location.as_ref(),
        );
        let id = loaded.config.services[usize::from(routed.service.0)]
            .id
            .clone();
        (id, explanation)
    });
    QueryExplanation {
        rcode: Rcode::from_code(u16::from(reply.rcode)).label().to_owned(),
        answers: reply.answers.iter().map(Record::to_string).collect(),
        client: client.ip,
        from_ecs: client.ecs.is_some_and(|e| e.source_prefix() > 0),
        network: IpNet::new(
            masked(client.ip, located.hit.prefix_len),
            located.hit.prefix_len,
        )
        .expect("prefix lengths come from the address's family"),
        location,
        ecs_scope: client.ecs.map(|_| client.reply_scope(reply.scope)),
        scope_network: IpNet::new(masked(client.ip, reply.scope), reply.scope)
            .expect("scopes come from the address's family"),
        routing,
    }
}

/// The explanation as TXT strings (each under 255 bytes), for `_explain.` queries.
pub(crate) fn txt_lines(explanation: &QueryExplanation) -> Vec<String> {
    let place = explanation.location.map_or_else(
        || "unlocated".to_owned(),
        |l| {
            format!(
                "{} {} ({:.2},{:.2})",
                l.country.map_or("??".to_owned(), |c| c.to_string()),
                l.continent.map_or("??", |c| c.code()),
                l.coordinates.latitude,
                l.coordinates.longitude
            )
        },
    );
    let mut lines = vec![format!(
        "client {} ({}) network {} {place}",
        explanation.client,
        if explanation.from_ecs {
            "ecs"
        } else {
            "resolver"
        },
        explanation.network
    )];
    lines.push(format!(
        "rcode {} scope {} holds for {} answer {}",
        explanation.rcode,
        explanation
            .ecs_scope
            .map_or("-".to_owned(), |s| s.to_string()),
        explanation.scope_network,
        if explanation.answers.is_empty() {
            "-".to_owned()
        } else {
            explanation.answers.join(" | ")
        }
    ));
    if let Some((service, routing)) = &explanation.routing {
        lines.push(format!(
            "service {service} policy {} basis {}{}",
            routing.policy,
            format!("{:?}", routing.basis).to_lowercase(),
            if routing.failed_open {
                " FAILED OPEN"
            } else {
                ""
            }
        ));
        for dc in &routing.datacenters {
            let distance = dc
                .distance_km
                .map_or(String::new(), |d| format!(" {d:.0} km"));
            let score = dc.score.map_or(String::new(), |s| format!(" score {s:.1}"));
            let rank = dc.rank.map_or("-".to_owned(), |r| r.to_string());
            lines.push(format!(
                "{rank} {}{distance}{score}: {}",
                dc.name, dc.reason
            ));
        }
    }
    lines
        .into_iter()
        .map(|mut line| {
            line.truncate(255);
            line
        })
        .collect()
}

/// TXT records of an explanation, owned by `owner`.
pub(crate) fn txt_records(owner: &Name, explanation: &QueryExplanation) -> Vec<Record> {
    txt_lines(explanation)
        .into_iter()
        .map(|line| {
            Record::from_rdata(
                owner.clone(),
                0,
                RData::TXT(hickory_proto::rr::rdata::TXT::new(vec![line])),
            )
        })
        .collect()
}
