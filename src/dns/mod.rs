//! DNS: the only module that knows about hickory.
//!
//! - `server.rs` registers sockets with hickory's server;
//! - `handler.rs` is our `RequestHandler`: header checks, EDNS, then `answer.rs`;
//! - `answer.rs` turns a question into records (zones, CNAMEs, routed services, CHAOS);
//! - `routed.rs` prepares the records of every routing outcome;
//! - `zone/` reads master files (our own reader, octet-exact), checks them and holds the static
//!   zone data;
//! - `rrset.rs` keeps record sets with their wire size, for the truncation decision;
//! - `explain.rs` explains a query (HTTP and `_explain.` TXT) by running it;
//! - `edns.rs` reads EDNS Client Subnet and builds the response's OPT record.

mod answer;
mod edns;
mod explain;
mod handler;
mod routed;
mod rrset;
mod server;
mod zone;

pub use answer::Catalog;
pub use explain::{ExplainError, QueryExplanation, explain_query};
pub use handler::Handler;
pub use routed::Answers;
pub use server::DnsServer;
