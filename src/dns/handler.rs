//! The query side of our UDP and TCP loops (`udp.rs`, `tcp.rs`): [`Handler::answer`] takes a
//! message's bytes, answers it from the fast path's prepared answers (UDP, common shapes) or
//! through [`respond`](super::respond), the one answer path (by way of `wire.rs`), counts what
//! the response says (routed answers, failed-open decisions, directory lookups, the query
//! itself), samples routed queries into the traffic record, applies response rate limiting to
//! UDP, and returns the bytes to send. Nothing here does I/O, locks or logs above `debug`.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use hickory_proto::op::ResponseCode;
use tracing::error;

use crate::config::RrlConfig;
use crate::metrics::{
    DnsEvent, ErrorKind, InternalError, Metrics, QueryType, Rcode, panic_message,
};
use crate::querylog::{self, QueryLog, Sampled, Sent};
use crate::routing::Toggle;
use crate::state::{BanAction, unix_ms};
use crate::traffic::Traffic;

use super::answer::RoutedInfo;
use super::fast;
use super::respond::{Response, Transport};
use super::rotation;
use super::rrl::{RateLimiter, Verdict};
use super::wire::{Outcome, answer_bytes, error_reply};
use super::{Shared, Snapshot};

/// Answers DNS queries from the current snapshot.
#[derive(Clone)]
pub struct Handler {
    state: Shared,
    /// Shared, not locked: every handle the query path touches is an atomic.
    metrics: Arc<Metrics>,
    /// Response rate limiting of UDP replies, when configured; its buckets are atomics.
    rrl: Option<Arc<RateLimiter>>,
    /// The sampled record of recent traffic, when kept: a per-thread countdown and, once in a
    /// while, a `try_send` (see `traffic`).
    traffic: Option<Arc<Traffic>>,
    /// The query log: off, one relaxed atomic load per query (see `querylog`).
    query_log: Option<Arc<QueryLog>>,
}

impl Handler {
    /// A handler reading snapshots from `state` and counting into `metrics`.
    pub fn new(state: Shared, metrics: Arc<Metrics>) -> Self {
        Handler {
            state,
            metrics,
            rrl: None,
            traffic: None,
            query_log: None,
        }
    }

    /// This handler, offering sampled queries to `query_log` (`None`: no log).
    pub fn with_query_log(self, query_log: Option<Arc<QueryLog>>) -> Self {
        Handler { query_log, ..self }
    }

    /// This handler, sampling routed queries into `traffic` (`None`: no record).
    pub fn with_traffic(self, traffic: Option<Arc<Traffic>>) -> Self {
        Handler {
            traffic: traffic.filter(|traffic| traffic.is_on()),
            ..self
        }
    }

    /// This handler, limiting UDP responses as `rrl` says (`None`: no limit).
    pub fn with_rrl(self, rrl: Option<RrlConfig>) -> Self {
        Handler {
            rrl: rrl.map(|config| Arc::new(RateLimiter::new(config, Instant::now()))),
            ..self
        }
    }

    /// Answers the message `bytes` from `src` into `reply`: `true` to send it, `false` to send
    /// nothing (not a query, or a UDP response dropped by rate limiting).
    ///
    /// The one entry point of every query, whichever path answers it: a UDP query of a shape
    /// the fast path knows is answered from prepared bytes (`fast/`), every other one by the
    /// general path (`wire.rs`, `respond.rs`), with the same bytes either way. What the caller
    /// passes in `reply` is overwritten; its capacity is reused.
    ///
    /// A panic while answering (a bug, or a query of death) is caught here, at the one entry
    /// point of both socket loops: that query gets SERVFAIL, the panic is logged, counted and
    /// kept for `GET /v1/errors`, and the loop goes on serving.
    pub fn answer(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
        reply: &mut Vec<u8>,
    ) -> bool {
        guarded(
            &self.metrics,
            &self.state,
            bytes,
            transport,
            reply,
            |reply| self.answer_unguarded(bytes, src, transport, reply),
        )
    }

    fn answer_unguarded(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
        reply: &mut Vec<u8>,
    ) -> bool {
        let started = Instant::now();
        // A new query: address rotation advances once for it, whichever path answers.
        rotation::next_query();
        // One snapshot for the whole query: every record sent comes from this consistent view.
        let snapshot = self.state.peek();
        // Banned queries first, before any other work and any path (with no rule, one length
        // test).
        if let Some(action) = snapshot.live.banned.check(bytes) {
            return match (action, error_reply(&snapshot, bytes, ResponseCode::Refused)) {
                (BanAction::Refuse, Some(refused)) => {
                    *reply = refused;
                    true
                }
                _ => false,
            };
        }
        // The `fast_path` toggle off: every query takes the general path.
        let fast = match transport {
            Transport::Udp if snapshot.live.toggles.is_on(Toggle::FastPath) => {
                fast::answer(&snapshot, bytes, src, reply)
            }
            _ => None,
        };
        let path = match fast {
            Some(_) => querylog::Path::Fast,
            None => querylog::Path::General,
        };
        let (qtype, rcode, class) = if let Some(answered) = fast {
            if let Some(routed) = answered.routed {
                self.count_routed(&snapshot, routed, Some(answered.client));
            }
            (answered.qtype, answered.rcode, answered.class)
        } else {
            let Outcome::Reply(general) = answer_bytes(&snapshot, bytes, src, transport, |s, r| {
                self.count(s, r);
            }) else {
                return false;
            };
            if general.malformed {
                self.metrics.record_dns_event(DnsEvent::Malformed);
            }
            *reply = general.bytes;
            (general.qtype, general.rcode, general.class)
        };
        self.metrics.record_query(
            QueryType::from_code(qtype),
            Rcode::from_code(rcode),
            started.elapsed().as_secs_f64(),
        );
        let verdict = match (&self.rrl, transport) {
            (Some(rrl), Transport::Udp) if snapshot.live.toggles.is_on(Toggle::Rrl) => {
                rrl.check(src.ip(), class, started)
            }
            _ => Verdict::Send,
        };
        let sent = match verdict {
            Verdict::Send => Sent::Answer,
            Verdict::Slip => {
                self.metrics.record_dns_event(DnsEvent::RrlSlipped);
                slip(reply);
                Sent::Slipped
            }
            Verdict::Drop => {
                self.metrics.record_dns_event(DnsEvent::RrlDropped);
                Sent::Dropped
            }
        };
        if let Some(log) = &self.query_log
            && log.sampled()
        {
            let protocol = match transport {
                Transport::Udp => querylog::Protocol::Udp,
                Transport::Tcp => querylog::Protocol::Tcp,
            };
            let view = Arc::clone(&*snapshot);
            log.offer(Sampled::new(view, bytes, reply, src, path, protocol, sent));
        }
        sent != Sent::Dropped
    }

    /// Counts what `response` did, besides the query itself.
    fn count(&self, snapshot: &Snapshot, response: &Response<'_>) {
        if let Some(routed) = response.reply.routed {
            let client = response
                .client
                .as_ref()
                .map(|client| (client.ip, client.source_prefix));
            self.count_routed(snapshot, routed, client);
        }
        if let Some((source, reason)) = response.lookup {
            self.metrics.record_lookup(source, reason);
        }
    }

    /// Counts a routed answer: by service and first datacenter, and whether it failed open;
    /// samples it into the traffic record with its `client` (address and source prefix).
    fn count_routed(
        &self,
        snapshot: &Snapshot,
        routed: RoutedInfo,
        client: Option<(std::net::IpAddr, u8)>,
    ) {
        let counters = &snapshot.loaded.counters;
        if let Some(first) = routed.first {
            counters
                .answers
                .inc(usize::from(routed.service.0), usize::from(first.0));
        }
        if routed.failed_open {
            counters.failed_open.inc(usize::from(routed.service.0));
        }
        if let (Some(traffic), Some((ip, source_prefix))) = (&self.traffic, client) {
            traffic.record(&snapshot.loaded.config, routed.service, ip, source_prefix);
        }
    }
}

/// Runs `answer` for the message `bytes`; if it panics, returns SERVFAIL for the message (or
/// nothing, when it has no header), and logs, counts and keeps the panic. Unwinding through it
/// leaves nothing half-changed that a later query reads: the snapshot is immutable, and
/// counters and rate-limit buckets are atomics.
fn guarded(
    metrics: &Metrics,
    state: &Shared,
    bytes: &[u8],
    transport: Transport,
    reply: &mut Vec<u8>,
    answer: impl FnOnce(&mut Vec<u8>) -> bool,
) -> bool {
    let payload = match std::panic::catch_unwind(AssertUnwindSafe(|| answer(&mut *reply))) {
        Ok(send) => return send,
        Err(payload) => payload,
    };
    let message = panic_message(payload.as_ref());
    let context = match transport {
        Transport::Udp => "dns udp",
        Transport::Tcp => "dns tcp",
    };
    // A query of death may come in a flood: one line per second at most; every one is counted
    // and kept.
    if log_allowed() {
        error!(context, %message, "answering a DNS query panicked; it got SERVFAIL");
    }
    metrics.keep_error(InternalError {
        unix_ms: unix_ms(SystemTime::now()),
        kind: ErrorKind::Panic,
        context: context.to_owned(),
        message,
    });
    metrics.record_query(QueryType::from_code(0), Rcode::ServFail, 0.0);
    match error_reply(&state.load(), bytes, ResponseCode::ServFail) {
        Some(servfail) => {
            *reply = servfail;
            true
        }
        None => false,
    }
}

/// Whether a panic may be logged now: once per second at most, over the whole process.
fn log_allowed() -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = unix_ms(SystemTime::now()) / 1000;
    let last = LAST.load(Ordering::Relaxed);
    last != now
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// `reply` cut to its header and question, with TC set: what a rate-limited client gets instead
/// of the answer, so that a real resolver retries over TCP (RRL "slip").
fn slip(reply: &mut Vec<u8>) {
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
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::config::Source;

    /// A panic while answering, as a bug would raise: the query gets SERVFAIL with its id and
    /// question, and the panic is counted and kept; an answer that does not panic passes
    /// through untouched.
    #[test]
    fn a_panic_while_answering_gets_servfail_and_is_kept() {
        let snapshot = Snapshot::load(&Source::Example, 1).expect("the example loads");
        let (shared, _publisher) = Shared::new(snapshot);
        let metrics = Metrics::new();
        let mut query = Message::new(0x4242, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(
            Name::from_str("www.example.com.").expect("a name"),
            RecordType::AAAA,
        ));
        let bytes = query.to_vec().expect("encodes");

        let mut reply = Vec::new();
        assert!(guarded(
            &metrics,
            &shared,
            &bytes,
            Transport::Tcp,
            &mut reply,
            |_| panic!("injected by the test")
        ));
        let reply = Message::from_vec(&reply).expect("decodes");
        assert_eq!(reply.metadata.id, 0x4242);
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(reply.queries, query.queries);
        let kept = metrics.recent_errors();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].kind, ErrorKind::Panic);
        assert_eq!(kept[0].context, "dns tcp");
        assert_eq!(kept[0].message, "injected by the test");
        assert!(
            metrics
                .render()
                .contains("meridian_internal_errors_total{kind=\"panic\"} 1")
        );

        let mut passed = Vec::new();
        assert!(guarded(
            &metrics,
            &shared,
            &bytes,
            Transport::Udp,
            &mut passed,
            |reply| {
                *reply = vec![7];
                true
            }
        ));
        assert_eq!(passed, vec![7]);
        // No header: nothing to answer, panic or not.
        assert!(!guarded(
            &metrics,
            &shared,
            &[1, 2],
            Transport::Udp,
            &mut passed,
            |_| panic!("again")
        ));
        assert_eq!(metrics.recent_errors().len(), 2);
    }
}
