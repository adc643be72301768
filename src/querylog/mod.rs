//! The query log: sampled queries and their answers, one JSON object per line, to a file or
//! stderr. Off by default; the share of queries logged is set at start (`server.query_log`) and
//! at runtime (`PUT /v1/querylog`).
//!
//! Off, it costs the query path one relaxed atomic load. On, each query draws from a per-thread
//! xorshift generator, and a sampled query copies its bytes and its reply's into one buffer and
//! hands them, with the snapshot that answered it, to a writer thread through a bounded
//! channel: `try_send` never waits, and when the writer falls behind the line is dropped and
//! counted (`meridian_samples_dropped_total{record="query_log"}`). The writer thread alone
//! formats and writes, so the query path keeps its one send.
//!
//! What a line says is worked out on the writer's side by [`Describe`], which `dns` implements
//! for its snapshot: the query and the reply are decoded there, the datacenters are those whose
//! addresses the reply actually carried, and the routing reason comes from re-deciding the
//! query on the very snapshot that answered it. This module knows neither DNS nor snapshots:
//! it carries bytes and a trait object.

use std::cell::Cell;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::SystemTime;

use serde::Serialize;

use crate::config::QueryLogConfig;
use crate::metrics::{SampleDrops, Sampler};
use crate::state::unix_ms;

/// The sampling rate's unit: queries per million.
pub const PER_MILLION: u32 = 1_000_000;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Standard error.
    Stderr,
    /// A file, appended to.
    File(PathBuf),
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Stderr => f.write_str("stderr"),
            Output::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Which path answered a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The UDP fast path, from prepared bytes.
    Fast,
    /// The general path (`dns::respond`).
    General,
}

/// The transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// What response rate limiting did with the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Sent as answered.
    Answer,
    /// Sent cut to an empty reply with TC (RRL slip).
    Slipped,
    /// Not sent (RRL drop).
    Dropped,
}

/// One sampled query, as it waits for the writer.
pub struct Sampled {
    /// When it was answered.
    pub unix_ms: u64,
    /// Whatever answered it (the snapshot), which can say what the answer meant.
    pub view: Arc<dyn Describe>,
    /// The query's bytes followed by the reply's.
    bytes: Vec<u8>,
    /// Where the reply starts in `bytes`.
    reply_at: usize,
    /// The query's source.
    pub src: SocketAddr,
    /// The path that answered.
    pub path: Path,
    /// The transport.
    pub protocol: Protocol,
    /// What rate limiting did.
    pub sent: Sent,
}

impl Sampled {
    /// A sampled `query` from `src` and the `reply` it got, answered from `view` (copied: one
    /// allocation, for sampled queries only).
    pub fn new(
        view: Arc<dyn Describe>,
        query: &[u8],
        reply: &[u8],
        src: SocketAddr,
        path: Path,
        protocol: Protocol,
        sent: Sent,
    ) -> Sampled {
        let mut bytes = Vec::with_capacity(query.len() + reply.len());
        bytes.extend_from_slice(query);
        bytes.extend_from_slice(reply);
        Sampled {
            unix_ms: unix_ms(SystemTime::now()),
            view,
            bytes,
            reply_at: query.len(),
            src,
            path,
            protocol,
            sent,
        }
    }

    /// The query's bytes.
    pub fn query(&self) -> &[u8] {
        &self.bytes[..self.reply_at]
    }

    /// The reply's bytes, as sent (or as it would have been, when rate limiting dropped it).
    pub fn reply(&self) -> &[u8] {
        &self.bytes[self.reply_at..]
    }
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled")
            .field("src", &self.src)
            .field("path", &self.path)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// Says what a sampled query and its reply were: implemented by the snapshot that answered.
pub trait Describe: Send + Sync {
    /// The line for `sampled`, worked out on the writer's thread.
    fn describe(&self, sampled: &Sampled) -> Line;
}

/// One line of the query log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// When the query was answered, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The client's network: its ECS address cut to the source prefix, else the resolver's
    /// address, and never longer than /24 (IPv4) or /48 (IPv6).
    pub client: String,
    /// Whether `client` came from EDNS Client Subnet.
    pub ecs: bool,
    /// The question's name, as asked (`None`: no question could be read).
    pub name: Option<String>,
    /// The question's type.
    #[serde(rename = "type")]
    pub qtype: Option<String>,
    /// The reply's rcode (`NOERROR`, `NXDOMAIN`, …).
    pub rcode: String,
    /// `fast` or `general`.
    pub path: &'static str,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// The service answered by routing, if any.
    pub service: Option<String>,
    /// The datacenters whose addresses the reply carried, in answer order.
    pub datacenters: Vec<String>,
    /// The ECS scope the reply carried (queries with ECS only).
    pub scope: Option<u8>,
    /// Why: the routing basis (`nearest`, `spill`, `override`, `fail-open`, …) for a routed
    /// answer, else what kind of answer (`static`, `nodata`, `nxdomain`, `refused`, …).
    pub reason: String,
    /// `answer`, or what response rate limiting did instead (`slipped`, `dropped`).
    pub sent: &'static str,
}

impl Line {
    /// A line with what `sampled` itself says filled in, and the rest empty.
    pub fn new(sampled: &Sampled) -> Line {
        Line {
            unix_ms: sampled.unix_ms,
            client: sampled.src.ip().to_string(),
            ecs: false,
            name: None,
            qtype: None,
            rcode: String::new(),
            path: match sampled.path {
                Path::Fast => "fast",
                Path::General => "general",
            },
            transport: match sampled.protocol {
                Protocol::Udp => "udp",
                Protocol::Tcp => "tcp",
            },
            service: None,
            datacenters: Vec::new(),
            scope: None,
            reason: String::new(),
            sent: match sampled.sent {
                Sent::Answer => "answer",
                Sent::Slipped => "slipped",
                Sent::Dropped => "dropped",
            },
        }
    }
}

/// The query log: its rate, and the channel to its writer thread.
pub struct QueryLog {
    /// Queries logged per million; 0 is off. Read once per query, relaxed: a change takes
    /// effect on each thread soon after, which is all a sampling rate needs.
    rate: AtomicU32,
    /// The rate the configuration set, which a timed change reverts to.
    configured: u32,
    /// Counts rate changes, so that the revert timer of a change replaced since does nothing.
    changes: AtomicU64,
    sender: SyncSender<Sampled>,
    output: Output,
    /// Lines written, counted by the writer.
    written: Arc<AtomicU64>,
    drops: SampleDrops,
}

impl std::fmt::Debug for QueryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryLog")
            .field("rate", &self.rate)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl QueryLog {
    /// The query log `config` describes, writing to `output` (its file opened for appending
    /// now), with its writer thread started; dropped lines are counted in `drops`.
    ///
    /// # Errors
    ///
    /// The file cannot be opened, or the thread cannot be started.
    pub fn start(
        config: &QueryLogConfig,
        output: Output,
        drops: SampleDrops,
    ) -> io::Result<Arc<QueryLog>> {
        let out: Box<dyn Write + Send> = match &output {
            Output::Stderr => Box::new(io::stderr()),
            Output::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let capacity = usize::try_from(config.queue_lines).unwrap_or(usize::MAX);
        let (sender, receiver) = sync_channel(capacity);
        let written = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&written);
        std::thread::Builder::new()
            .name("query-log".to_owned())
            .spawn(move || write_lines(&receiver, out, &counted))?;
        Ok(Arc::new(QueryLog {
            rate: AtomicU32::new(config.per_million.min(PER_MILLION)),
            configured: config.per_million.min(PER_MILLION),
            changes: AtomicU64::new(0),
            sender,
            output,
            written,
            drops,
        }))
    }

    /// Whether this query is to be logged. Off: one relaxed atomic load.
    #[inline]
    pub fn sampled(&self) -> bool {
        let rate = self.rate.load(Ordering::Relaxed);
        rate != 0 && (rate >= PER_MILLION || draw() < rate)
    }

    /// Hands `sampled` to the writer without waiting: when the writer is behind, it is
    /// dropped and counted.
    pub fn offer(&self, sampled: Sampled) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.sender.try_send(sampled)
        {
            self.drops.record(Sampler::QueryLog);
        }
    }

    /// Queries logged per million now (0: off).
    pub fn rate(&self) -> u32 {
        self.rate.load(Ordering::Relaxed)
    }

    /// The rate the configuration set.
    pub fn configured(&self) -> u32 {
        self.configured
    }

    /// Logs `per_million` queries in a million from now on (0 turns it off); returns the
    /// change's number, which [`QueryLog::revert`] takes.
    pub fn set_rate(&self, per_million: u32) -> u64 {
        self.rate
            .store(per_million.min(PER_MILLION), Ordering::Relaxed);
        self.changes.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Puts the configured rate back, unless another change came after `change`; whether it
    /// did.
    pub fn revert(&self, change: u64) -> bool {
        let reverted = self
            .changes
            .compare_exchange(change, change + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if reverted {
            self.rate.store(self.configured, Ordering::Relaxed);
        }
        reverted
    }

    /// Where it writes.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Lines dropped so far (the writer was behind).
    pub fn dropped(&self) -> u64 {
        self.drops.get(Sampler::QueryLog)
    }
}

/// A number below [`PER_MILLION`] from this thread's xorshift generator.
fn draw() -> u32 {
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            // A new thread: seeded from the thread-local's address, which differs between
            // threads, and the clock, which differs between runs.
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            x = ((std::ptr::from_ref(state) as usize as u64) ^ (u64::from(nanos) << 32)) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        u32::try_from((x >> 32) % u64::from(PER_MILLION)).expect("below a million")
    })
}

/// The writer thread: describes and writes each sampled query, flushing whenever the channel
/// is empty; ends when the log is dropped. A line that cannot be written is lost (the output
/// is gone: a full disk, a closed stderr), and nothing on the query path notices.
fn write_lines(received: &Receiver<Sampled>, out: Box<dyn Write + Send>, written: &AtomicU64) {
    let mut out = BufWriter::new(out);
    loop {
        let sampled = match received.try_recv() {
            Ok(sampled) => sampled,
            Err(TryRecvError::Empty) => {
                let _ = out.flush();
                match received.recv() {
                    Ok(sampled) => sampled,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        // A describer that panics (a bug) loses its line, not the log.
        let line = std::panic::catch_unwind(AssertUnwindSafe(|| sampled.view.describe(&sampled)));
        // The snapshot it held goes now, not when the next line comes.
        drop(sampled);
        if let Ok(line) = line
            && write_line(&mut out, &line).is_ok()
        {
            written.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = out.flush();
}

fn write_line(out: &mut impl Write, line: &Line) -> io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests;
