//! The checks an authoritative server makes before it serves a zone, with Knot DNS's semantic
//! checks as the yardstick: each problem names the file and line of the record at fault.
//!
//! - exactly one SOA, at the apex, and NS records at the apex;
//! - a CNAME is the only data at its name (RFC 1034 §3.6.2, RFC 2181 §10.1), and there is one;
//! - one DNAME per name, and no names below a DNAME (RFC 6672 §2.4: they could never be
//!   reached);
//! - every name server inside the zone has an address: glue below a delegation (RFC 9471),
//!   an A or AAAA record otherwise, and it is not an alias (RFC 2181 §10.3);
//! - the same record twice is an error, and so are two TTLs in one RRset (RFC 2181 §5.2).
//!
//! Duplicates are refused rather than merged as RFC 2181 §5 lets a server do: a zone file is
//! an operator's configuration, and a record written twice is nearly always an edit that went
//! wrong (a copied line whose address was meant to change), which `check-config` should catch
//! before it is served. Records outside the zone are refused in `mod.rs` as they are read.
//!
//! Knot only warns about missing glue, a name server without an address and mixed TTLs, and
//! merges duplicates; here they are errors, since a refused reload keeps the last good zone.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use hickory_proto::rr::{LowerName, RData, Record, RecordType};

use crate::routing::ServiceId;

use super::Node;
use super::rdata::{DNAME, name_from_wire, type_name};
use super::reader::{At, Parsed};
use crate::dns::rrset::RecordSet;

const SOA: u16 = 6;
const NS: u16 = 2;
const CNAME: u16 = 5;
const A: u16 = 1;
const AAAA: u16 = 28;

/// The records of a zone as read, by name and then type in file order, with where each was
/// written; turned into [`Node`]s once checked.
#[derive(Debug, Default)]
pub(super) struct Drafts {
    names: HashMap<LowerName, Vec<Draft>>,
    /// The main file, for problems that belong to no line (a missing SOA).
    file: Option<Arc<Path>>,
}

/// One RRset as read.
#[derive(Debug)]
struct Draft {
    code: u16,
    records: Vec<(Record, Vec<u8>, At)>,
}

impl Drafts {
    /// Adds a record; a duplicate, or a TTL that differs from its RRset's, is a problem.
    pub(super) fn add(
        &mut self,
        owner: LowerName,
        parsed: Parsed,
        rdata: RData,
        problems: &mut Vec<(At, String)>,
    ) {
        if self.file.is_none() {
            self.file = Some(parsed.at.file.clone());
        }
        let drafts = self.names.entry(owner).or_default();
        let draft = match drafts.iter_mut().position(|d| d.code == parsed.code) {
            Some(i) => &mut drafts[i],
            None => {
                drafts.push(Draft {
                    code: parsed.code,
                    records: Vec::new(),
                });
                drafts.last_mut().expect("just pushed")
            }
        };
        let what = format!("{} {}", parsed.owner, type_name(parsed.code));
        if let Some((_, _, first)) = draft
            .records
            .iter()
            .find(|(_, wire, _)| *wire == parsed.wire)
        {
            problems.push((
                parsed.at,
                format!("{what}: the same record is already at {first} (write each record once)"),
            ));
            return;
        }
        if let Some((record, _, first)) = draft.records.first()
            && record.ttl != parsed.ttl
        {
            problems.push((
                parsed.at.clone(),
                format!(
                    "{what}: TTL {} differs from the TTL {} of the same RRset at {first} (RFC 2181 §5.2: one TTL per RRset)",
                    parsed.ttl, record.ttl
                ),
            ));
        }
        let record = Record::from_rdata(parsed.owner, parsed.ttl, rdata);
        draft.records.push((record, parsed.wire, parsed.at));
    }

    /// The checked records as nodes.
    pub(super) fn into_nodes(self) -> HashMap<LowerName, Node> {
        self.names
            .into_iter()
            .map(|(name, drafts)| {
                let rrsets: Vec<(RecordType, RecordSet)> = drafts
                    .into_iter()
                    .map(|draft| {
                        let records: Vec<Record> =
                            draft.records.into_iter().map(|(r, _, _)| r).collect();
                        (RecordType::from(draft.code), RecordSet::new(records))
                    })
                    .collect();
                let dname_target = rrsets
                    .iter()
                    .find(|(rtype, _)| u16::from(*rtype) == DNAME)
                    .and_then(|(_, set): &(RecordType, RecordSet)| set.records().first())
                    .and_then(|record| match &record.data {
                        RData::Unknown { rdata, .. } => name_from_wire(&rdata.anything),
                        _ => None,
                    });
                (
                    name,
                    Node {
                        rrsets,
                        dname_target,
                        ..Node::default()
                    },
                )
            })
            .collect()
    }

    fn rrset(&self, name: &LowerName, code: u16) -> Option<&Draft> {
        self.names.get(name)?.iter().find(|d| d.code == code)
    }
}

/// Runs every check on `drafts`, adding what it finds to `problems`.
pub(super) fn check(
    drafts: &Drafts,
    origin: &LowerName,
    services: &[(ServiceId, LowerName)],
    problems: &mut Vec<(At, String)>,
) {
    let whole_file = At {
        file: drafts
            .file
            .clone()
            .unwrap_or_else(|| Arc::from(Path::new("zone file"))),
        line: 0,
    };
    apex(drafts, origin, &whole_file, problems);
    for (name, node) in &drafts.names {
        aliases(name, node, origin, problems);
    }
    below_dnames(drafts, origin, services, problems);
    name_servers(drafts, origin, services, problems);
}

/// Exactly one SOA, at the apex; NS records at the apex.
fn apex(drafts: &Drafts, origin: &LowerName, whole_file: &At, problems: &mut Vec<(At, String)>) {
    match drafts.rrset(origin, SOA) {
        None => problems.push((
            whole_file.clone(),
            format!("the apex {origin} has no SOA record"),
        )),
        Some(soa) => {
            for (_, _, at) in soa.records.iter().skip(1) {
                problems.push((
                    at.clone(),
                    format!("a second SOA at the apex {origin}: a zone has exactly one"),
                ));
            }
        }
    }
    if drafts.rrset(origin, NS).is_none() {
        problems.push((
            whole_file.clone(),
            format!("the apex {origin} has no NS records"),
        ));
    }
    for (name, node) in drafts.names.iter().filter(|(name, _)| *name != origin) {
        if let Some(soa) = node.iter().find(|d| d.code == SOA) {
            problems.push((
                soa.records[0].2.clone(),
                format!("{name} SOA: an SOA record belongs at the apex {origin} only"),
            ));
        }
    }
}

/// A CNAME alone at its name, one CNAME and one DNAME per name.
fn aliases(name: &LowerName, node: &[Draft], origin: &LowerName, problems: &mut Vec<(At, String)>) {
    for code in [CNAME, DNAME] {
        if let Some(draft) = node.iter().find(|d| d.code == code) {
            for (_, _, at) in draft.records.iter().skip(1) {
                problems.push((
                    at.clone(),
                    format!(
                        "{name} {}: a second {} at one name (there can be only one)",
                        type_name(code),
                        type_name(code)
                    ),
                ));
            }
        }
    }
    let Some(cname) = node.iter().find(|d| d.code == CNAME) else {
        return;
    };
    let others: Vec<String> = node
        .iter()
        .filter(|d| d.code != CNAME)
        .map(|d| format!("{} at {}", type_name(d.code), d.records[0].2))
        .collect();
    if !others.is_empty() {
        let apex = if name == origin {
            " (the apex holds SOA and NS, so it cannot be an alias)"
        } else {
            ""
        };
        problems.push((
            cname.records[0].2.clone(),
            format!(
                "{name} CNAME: a CNAME must be the only data at its name (RFC 1034 §3.6.2), but there is also {}{apex}",
                others.join(", ")
            ),
        ));
    }
}

/// Nothing below a DNAME (RFC 6672 §2.4), data or service.
fn below_dnames(
    drafts: &Drafts,
    origin: &LowerName,
    services: &[(ServiceId, LowerName)],
    problems: &mut Vec<(At, String)>,
) {
    let dnames: HashMap<&LowerName, &At> = drafts
        .names
        .iter()
        .filter_map(|(name, node)| {
            let dname = node.iter().find(|d| d.code == DNAME)?;
            Some((name, &dname.records[0].2))
        })
        .collect();
    if dnames.is_empty() {
        return;
    }
    let dname_above = |name: &LowerName| -> Option<(LowerName, &At)> {
        let mut parent = name.base_name();
        while origin.zone_of(&parent) {
            if let Some(at) = dnames.get(&parent) {
                return Some((parent, at));
            }
            if parent == *origin {
                break;
            }
            parent = parent.base_name();
        }
        None
    };
    for (name, node) in &drafts.names {
        if let Some((dname, dname_at)) = dname_above(name) {
            let first = &node[0];
            problems.push((
                first.records[0].2.clone(),
                format!(
                    "{name} {}: the name is below the DNAME at {dname} ({dname_at}), so it can never be answered (RFC 6672 §2.4)",
                    type_name(first.code)
                ),
            ));
        }
    }
    for (_, name) in services {
        if let Some((dname, dname_at)) = dname_above(name) {
            problems.push((
                dname_at.clone(),
                format!("{dname} DNAME: the service {name} is below it and could never be answered (RFC 6672 §2.4)"),
            ));
        }
    }
}

/// Every in-zone name server has an address (glue below a delegation) and is not an alias.
fn name_servers(
    drafts: &Drafts,
    origin: &LowerName,
    services: &[(ServiceId, LowerName)],
    problems: &mut Vec<(At, String)>,
) {
    let service_names: HashSet<&LowerName> = services.iter().map(|(_, name)| name).collect();
    let cuts: Vec<&LowerName> = drafts
        .names
        .iter()
        .filter(|(name, node)| *name != origin && node.iter().any(|d| d.code == NS))
        .map(|(name, _)| name)
        .collect();
    for (name, node) in &drafts.names {
        let Some(ns) = node.iter().find(|d| d.code == NS) else {
            continue;
        };
        for (record, _, at) in &ns.records {
            let RData::NS(target) = &record.data else {
                continue;
            };
            let target = LowerName::new(&target.0);
            if !origin.zone_of(&target) {
                continue;
            }
            if drafts.rrset(&target, CNAME).is_some() {
                problems.push((
                    at.clone(),
                    format!("{name} NS {target}: the name server is an alias (a CNAME), which NS must not name (RFC 2181 §10.3)"),
                ));
                continue;
            }
            let has_address = drafts.rrset(&target, A).is_some()
                || drafts.rrset(&target, AAAA).is_some()
                || service_names.contains(&target);
            if has_address {
                continue;
            }
            let message = match cuts.iter().find(|cut| cut.zone_of(&target)) {
                Some(cut) => format!(
                    "{name} NS {target}: glue is missing: the name server is below the delegation {cut}, so this zone must give its A or AAAA records (RFC 9471)"
                ),
                None => format!(
                    "{name} NS {target}: the name server is in this zone but has no A or AAAA record"
                ),
            };
            problems.push((at.clone(), message));
        }
    }
}
