//! The query side of our UDP and TCP loops (`udp.rs`, `tcp.rs`): [`Handler::answer`] takes a
//! message's bytes, answers it through [`respond`](super::respond), the one answer path (by way
//! of `wire.rs`), counts what the response says (routed answers, failed-open decisions,
//! directory lookups, the query itself), applies response rate limiting to UDP, and returns the
//! bytes to send. Nothing here does I/O, locks or logs above `debug`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::RrlConfig;
use crate::metrics::{DnsEvent, Metrics, QueryType, Rcode};
use crate::routing::Toggle;

use super::respond::{Response, Transport};
use super::rrl::{RateLimiter, Verdict};
use super::wire::{Outcome, answer_bytes};
use super::{Shared, Snapshot};

/// Answers DNS queries from the current snapshot.
#[derive(Clone)]
pub struct Handler {
    state: Shared,
    /// Shared, not locked: every handle the query path touches is an atomic.
    metrics: Arc<Metrics>,
    /// Response rate limiting of UDP replies, when configured; its buckets are atomics.
    rrl: Option<Arc<RateLimiter>>,
}

impl Handler {
    /// A handler reading snapshots from `state` and counting into `metrics`.
    pub fn new(state: Shared, metrics: Arc<Metrics>) -> Self {
        Handler {
            state,
            metrics,
            rrl: None,
        }
    }

    /// This handler, limiting UDP responses as `rrl` says (`None`: no limit).
    pub fn with_rrl(self, rrl: Option<RrlConfig>) -> Self {
        Handler {
            rrl: rrl.map(|config| Arc::new(RateLimiter::new(config, Instant::now()))),
            ..self
        }
    }

    /// Answers the message `bytes` from `src`: the reply to send, or `None` to send nothing (not
    /// a query, or a UDP response dropped by rate limiting).
    pub fn answer(&self, bytes: &[u8], src: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
        let started = Instant::now();
        // One snapshot for the whole query: every record sent comes from this consistent view.
        let snapshot = self.state.load();
        let Outcome::Reply(reply) = answer_bytes(&snapshot, bytes, src, transport, |s, r| {
            self.count(s, r);
        }) else {
            return None;
        };
        if reply.malformed {
            self.metrics.record_dns_event(DnsEvent::Malformed);
        }
        self.metrics.record_query(
            QueryType::from_code(reply.qtype),
            Rcode::from_code(reply.rcode),
            started.elapsed().as_secs_f64(),
        );
        let verdict = match (&self.rrl, transport) {
            (Some(rrl), Transport::Udp) if snapshot.live.toggles.is_on(Toggle::Rrl) => {
                rrl.check(src.ip(), reply.class, started)
            }
            _ => Verdict::Send,
        };
        match verdict {
            Verdict::Send => Some(reply.bytes),
            Verdict::Slip => {
                self.metrics.record_dns_event(DnsEvent::RrlSlipped);
                Some(slipped(reply.bytes))
            }
            Verdict::Drop => {
                self.metrics.record_dns_event(DnsEvent::RrlDropped);
                None
            }
        }
    }

    /// Counts what `response` did, besides the query itself.
    fn count(&self, snapshot: &Snapshot, response: &Response<'_>) {
        if let Some(routed) = response.reply.routed {
            let counters = &snapshot.loaded.counters;
            if let Some(first) = routed.first {
                counters
                    .answers
                    .inc(usize::from(routed.service.0), usize::from(first.0));
            }
            if routed.failed_open {
                counters.failed_open.inc(usize::from(routed.service.0));
            }
        }
        if let Some((source, reason)) = response.lookup {
            self.metrics.record_lookup(source, reason);
        }
    }
}

/// `reply` cut to its header and question, with TC set: what a rate-limited client gets instead
/// of the answer, so that a real resolver retries over TCP (RRL "slip").
fn slipped(mut reply: Vec<u8>) -> Vec<u8> {
    use hickory_proto::serialize::binary::BinDecoder;
    use hickory_server::zone_handler::Queries;
    let n_questions = reply
        .get(4..6)
        .map_or(0, |count| u16::from_be_bytes([count[0], count[1]]));
    let question_len = reply
        .get(12..)
        .and_then(|rest| Queries::read(&mut BinDecoder::new(rest), usize::from(n_questions)).ok())
        .map_or(0, |queries| queries.as_bytes().len());
    if reply.len() >= 12 {
        reply.truncate(12 + question_len);
        // TC (RFC 1035 §4.1.1: bit 6 of the third byte); no answer, authority or additional
        // records.
        reply[2] |= 0x02;
        reply[6..12].fill(0);
        if question_len == 0 {
            reply[4..6].fill(0);
        }
    }
    reply
}
