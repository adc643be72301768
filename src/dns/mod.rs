//! DNS: the only module that knows about hickory.
//!
//! - `server.rs` registers sockets with hickory's server;
//! - `respond.rs` is the one answer path: (snapshot, request, client address, transport) to a
//!   response, with header checks, EDNS, `_explain.` and directory names, wildcards, truncation;
//! - `handler.rs` answers a message's bytes for the socket loops (through `wire.rs` and
//!   `respond.rs`), counts, and applies response rate limiting;
//! - `answer.rs` turns a question into records (zones, CNAMEs, routed services, CHAOS);
//! - `routed.rs` prepares the records of every routing outcome (in every order of their
//!   rotation, which `rotation.rs` picks from per query);
//! - `zone/` reads master files (our own reader, octet-exact), checks them and holds the static
//!   zone data;
//! - `rrset.rs` keeps record sets with their wire size, for the truncation decision;
//! - `explain.rs` explains a query (HTTP and `_explain.` TXT) by running it;
//! - `edns.rs` reads EDNS Client Subnet and builds the response's OPT record;
//! - `fast/` is the UDP fast path: a minimal parser and answers prepared in the snapshot, byte
//!   for byte the general path's;
//! - `batch.rs` receives and sends datagrams in batches (`recvmmsg`, `sendmmsg`).

mod answer;
mod batch;
mod edns;
mod explain;
mod fast;
mod handler;
mod logged;
mod respond;
mod rotation;
mod routed;
pub mod rrl;
mod rrset;
mod server;
mod tcp;
mod udp;
mod wire;
mod zone;

use std::path::PathBuf;

use crate::config::{Config, Problem};
use crate::routing::RoutingTable;
use crate::state::{self, Prepare};

pub use answer::Catalog;
pub use explain::{ExplainError, QueryExplanation, explain_query};
pub use fast::both_paths;
pub use handler::Handler;
pub use respond::{Response, Transport, respond};
pub use routed::Answers;
pub use server::DnsServer;
pub use tcp::AcceptErrors;

/// The number of the record type written `text` (`A`, `any`, `TYPE65`), as DNS names it.
pub fn qtype_code(text: &str) -> Option<u16> {
    use std::str::FromStr;
    hickory_proto::rr::RecordType::from_str(&text.to_ascii_uppercase())
        .ok()
        .map(u16::from)
}

/// The name of the record type numbered `code` (`TYPE65534` for one without a name).
pub fn qtype_name(code: u16) -> String {
    hickory_proto::rr::RecordType::from(code).to_string()
}

/// Parses the master file `text` for `origin` as a zone load does, reading no other file (an
/// `$INCLUDE` is a problem): the number of names with records, or every problem. For the fuzz
/// target in `fuzz/` and its regression tests.
///
/// # Errors
///
/// Every problem, as `file:line: what is wrong`.
#[doc(hidden)]
pub fn parse_zone(origin: &str, text: &[u8]) -> Result<usize, Vec<String>> {
    let mut no_include = |path: &std::path::Path| {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} not read", path.display()),
        ))
    };
    zone::Zone::parse_with(
        origin,
        text,
        std::path::Path::new("fuzz.zone"),
        &[],
        &mut no_include,
    )
    .map(|zone| zone.n_names())
}

/// The snapshot queries read: the state's snapshot carrying our zones ([`Catalog`]) and
/// prepared records ([`Answers`]).
pub type Snapshot = state::Snapshot<Answers>;
/// What a load reads from files, with our zones.
pub type Loaded = state::Loaded<Answers>;
/// The read handle of [`Snapshot`]s.
pub type Shared = state::Shared<Answers>;
/// The state manager, publishing [`Snapshot`]s.
pub type Manager = state::Manager<Answers>;

/// The snapshot carries our zones and prepared records without knowing them: `state` sits
/// below `dns` and builds them through this.
impl Prepare for Answers {
    type Zones = Catalog;

    fn load_zones(
        config: &Config,
        zone_texts: &[(String, PathBuf)],
        identity: &str,
    ) -> Result<Catalog, Vec<Problem>> {
        Catalog::build(config, zone_texts, identity)
    }

    fn prepare(
        _zones: &Catalog,
        config: &Config,
        routing: &RoutingTable,
        previous: Option<(&Answers, &RoutingTable)>,
    ) -> Answers {
        Answers::build(config, routing, previous)
    }

    fn summary(zones: &Catalog) -> (usize, usize) {
        zones.summary()
    }
}
