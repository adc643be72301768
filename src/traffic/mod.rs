//! The sampled record of recent traffic, and what-if simulations over it.
//!
//! [`Traffic`] keeps, per service, how many queries came from each client network (IPv4 /24,
//! IPv6 /48, or the ECS source prefix when shorter: the networks routing hashes) over a sliding
//! window, in fixed memory. The query path only counts down a per-thread counter and, once in
//! `sample_one_in` queries, offers the (service, network) pair to a bounded channel with
//! `try_send`: no lock, no allocation, and a full channel drops the sample (counted). The
//! channel is drained into the window by [`Traffic::collect`], which the server calls a few
//! times a second off the query path and before every read.
//!
//! `simulate.rs` replays the record through the routing core: the same [`RoutingTable`]s and
//! [`Client::locate`] DNS answers with, under the live state and under a changed one.
//!
//! It does not know what a snapshot is, nor HTTP or JSON: callers pass the configuration and
//! the tables, and turn the results into their own views.
//!
//! [`RoutingTable`]: crate::routing::RoutingTable
//! [`Client::locate`]: crate::routing::Client::locate

mod simulate;

pub use simulate::{
    Change, Changed, DcChange, DcShare, Move, Projection, ServiceChange, ServiceOutcome,
    Simulation, WatermarkFinding, World, WorldError, simulate,
};

use std::cell::Cell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::config::{Config, TrafficConfig};
use crate::routing::{NETWORK_PREFIX_V4, NETWORK_PREFIX_V6, ServiceId};

/// How many columns the window slides by: it reaches back between 9/10 and all of its length.
const COLUMNS: usize = 10;
/// Samples waiting between two collections; more are dropped (and counted). At one in 16
/// queries and a collection every 100 ms this holds 2.6 million queries a second.
const CHANNEL_CAPACITY: usize = 16_384;

/// One recorded query, as it waits in the channel.
struct Sampled {
    /// The configuration the query was answered under: service ids are its indexes.
    config: Arc<Config>,
    service: ServiceId,
    network: IpNet,
}

/// The sampled record of recent traffic: a lock-free recording side and a window behind a
/// mutex that only collections and readers take.
#[derive(Debug)]
pub struct Traffic {
    settings: TrafficConfig,
    /// `try_send` on a bounded channel never blocks and, since nothing ever waits on the
    /// receiving side, never takes the channel's waker lock either.
    sender: SyncSender<Sampled>,
    /// Taken by [`Traffic::collect`] only (a few times a second, and by readers); never on the
    /// query path.
    inner: Mutex<Inner>,
    /// Samples the full channel dropped.
    dropped: AtomicU64,
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled")
            .field("service", &self.service)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Inner {
    receiver: Receiver<Sampled>,
    window: Window,
}

/// Counts per (service, network) in `COLUMNS` columns of a sliding window.
#[derive(Debug)]
struct Window {
    column_length: Duration,
    max_networks: usize,
    /// When the current column began.
    column_start: Option<Instant>,
    /// Index of the current column.
    current: usize,
    /// By service id, then client network.
    counts: HashMap<String, HashMap<IpNet, [u32; COLUMNS]>>,
    /// Networks held, over every service.
    n_networks: usize,
    /// Samples of networks not kept because the window was full.
    overflowed: u64,
}

/// What the record holds now: sampled queries per service and client network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Each query stands for this many (the sampling rate).
    pub sample_one_in: u32,
    /// How far back it reaches.
    pub window: Duration,
    /// Sampled queries by service id and client network, sorted.
    pub networks: Vec<SampledNetwork>,
    /// Samples lost: the channel was full, or the window held `max_networks` already.
    pub dropped: u64,
}

/// Sampled queries of one service from one client network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SampledNetwork {
    /// The service's id (its key under `services`).
    pub service: String,
    /// The client network.
    pub network: IpNet,
    /// Queries sampled from it (multiply by [`Sample::sample_one_in`] for an estimate of all).
    pub queries: u64,
}

thread_local! {
    /// Queries this thread answers before it records the next one, and the state of the
    /// xorshift generator that draws the next gap.
    static COUNTDOWN: Cell<(u32, u64)> = const { Cell::new((0, 0)) };
}

impl Traffic {
    /// An empty record with these settings.
    pub fn new(settings: TrafficConfig) -> Arc<Traffic> {
        let (sender, receiver) = sync_channel(CHANNEL_CAPACITY);
        let columns = u32::try_from(COLUMNS).expect("a handful of columns");
        Arc::new(Traffic {
            settings,
            sender,
            inner: Mutex::new(Inner {
                receiver,
                window: Window {
                    column_length: (settings.window / columns).max(Duration::from_millis(1)),
                    max_networks: settings.max_networks as usize,
                    column_start: None,
                    current: 0,
                    counts: HashMap::new(),
                    n_networks: 0,
                    overflowed: 0,
                },
            }),
            dropped: AtomicU64::new(0),
        })
    }

    /// Whether queries are sampled at all.
    pub fn is_on(&self) -> bool {
        self.settings.sample_one_in > 0
    }

    /// Counts one routed query of `service` (under `config`) from `ip`, whose ECS source prefix
    /// is `source_prefix` (the address's length without ECS). On the query path: a thread-local
    /// countdown, and once in `sample_one_in` queries an `Arc` clone and a `try_send`.
    pub fn record(&self, config: &Arc<Config>, service: ServiceId, ip: IpAddr, source_prefix: u8) {
        let one_in = self.settings.sample_one_in;
        if one_in == 0 {
            return;
        }
        let due = COUNTDOWN.with(|countdown| match countdown.get() {
            (0, state) => {
                // The gap to the next sample is drawn from 0 to 2 × (one_in - 1), so that it
                // averages one in `one_in` without falling into step with a client that asks
                // in a fixed pattern (two names in turn would otherwise always sample one).
                let state = next_random(state, countdown);
                let span = u64::from(one_in - 1) * 2 + 1;
                let gap = u32::try_from(state % span).unwrap_or(u32::MAX);
                countdown.set((gap, state));
                true
            }
            (n, state) => {
                countdown.set((n - 1, state));
                false
            }
        });
        if !due {
            return;
        }
        let sampled = Sampled {
            config: Arc::clone(config),
            service,
            network: network_of(ip, source_prefix),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.sender.try_send(sampled)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Samples lost so far: the channel was full, or the window held `max_networks` already
    /// (waiting samples collected first, as of `now`).
    pub fn dropped(&self, now: Instant) -> u64 {
        self.collect(now);
        let overflowed = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .window
            .overflowed;
        self.dropped.load(Ordering::Relaxed) + overflowed
    }

    /// Moves waiting samples into the window and slides it to `now`.
    pub fn collect(&self, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner { receiver, window } = &mut *inner;
        window.slide(now);
        while let Ok(sampled) = receiver.try_recv() {
            let Some(service) = sampled.config.services.get(usize::from(sampled.service.0)) else {
                continue;
            };
            window.add(&service.id, sampled.network);
        }
    }

    /// The record as of `now` (waiting samples collected first).
    pub fn sample(&self, now: Instant) -> Sample {
        self.collect(now);
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut networks: Vec<SampledNetwork> = inner
            .window
            .counts
            .iter()
            .flat_map(|(service, networks)| {
                networks.iter().map(|(network, counts)| SampledNetwork {
                    service: service.clone(),
                    network: *network,
                    queries: counts.iter().map(|&n| u64::from(n)).sum(),
                })
            })
            .filter(|entry| entry.queries > 0)
            .collect();
        networks.sort();
        Sample {
            sample_one_in: self.settings.sample_one_in,
            window: self.settings.window,
            networks,
            dropped: self.dropped.load(Ordering::Relaxed) + inner.window.overflowed,
        }
    }
}

impl Window {
    /// Starts a new column for every `column_length` since the current one began, clearing it,
    /// and forgets networks whose every column is empty.
    fn slide(&mut self, now: Instant) {
        let Some(start) = self.column_start else {
            self.column_start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        let steps = (elapsed.as_nanos() / self.column_length.as_nanos()) as usize;
        if steps == 0 {
            return;
        }
        for step in 1..=steps.min(COLUMNS) {
            let column = (self.current + step) % COLUMNS;
            for counts in self.counts.values_mut().flat_map(HashMap::values_mut) {
                counts[column] = 0;
            }
        }
        self.current = (self.current + steps) % COLUMNS;
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        self.column_start = Some(start + self.column_length * steps);
        for networks in self.counts.values_mut() {
            networks.retain(|_, counts| counts.iter().any(|&n| n > 0));
        }
        self.counts.retain(|_, networks| !networks.is_empty());
        self.n_networks = self.counts.values().map(HashMap::len).sum();
    }

    fn add(&mut self, service: &str, network: IpNet) {
        let full = self.n_networks >= self.max_networks;
        // The service's name is copied only the first time it is seen.
        if !self.counts.contains_key(service) {
            if full {
                self.overflowed += 1;
                return;
            }
            self.counts.insert(service.to_owned(), HashMap::new());
        }
        let networks = self.counts.get_mut(service).expect("inserted above");
        match networks.entry(network) {
            Entry::Occupied(mut entry) => {
                let count = &mut entry.get_mut()[self.current];
                *count = count.saturating_add(1);
            }
            Entry::Vacant(_) if full => self.overflowed += 1,
            Entry::Vacant(entry) => {
                let mut counts = [0; COLUMNS];
                counts[self.current] = 1;
                entry.insert(counts);
                self.n_networks += 1;
            }
        }
    }
}

/// The next state of a xorshift64 generator; a zero state (a new thread) is seeded from the
/// thread-local's own address, which differs between threads.
fn next_random(state: u64, seed: &Cell<(u32, u64)>) -> u64 {
    let mut x = if state == 0 {
        (std::ptr::from_ref(seed) as usize as u64) | 1
    } else {
        state
    };
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The network a client is counted under: its address cut to /24 (IPv4) or /48 (IPv6), or to
/// its ECS source prefix when that is shorter; the networks routing hashes clients by.
pub fn network_of(ip: IpAddr, source_prefix: u8) -> IpNet {
    let ip = ip.to_canonical();
    let prefix = match ip {
        IpAddr::V4(_) => NETWORK_PREFIX_V4,
        IpAddr::V6(_) => NETWORK_PREFIX_V6,
    }
    .min(source_prefix);
    IpNet::new(ip, prefix)
        .expect("the prefix is at most the family's length")
        .trunc()
}

#[cfg(test)]
mod tests;
