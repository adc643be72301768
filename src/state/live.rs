//! The control plane's live state (reports, drains, feature toggles), and the clock it is judged
//! by.
//!
//! Kept by names, not indexes, so that it survives reloads that add or remove datacenters and
//! services; [`LiveState::dc_states`] turns it into routing's per-datacenter view at an instant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::directory::{Directory, Placement};
use crate::routing::{DcState, ReportState, ServiceId, Toggle, Toggles};
use crate::store::{Change, DirectoryChange, DrainKey, Persisted, StoredReport};

use super::directory::placement_of;

/// Reports, drains and the user directory in force.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    /// Each datacenter's latest report, by name.
    pub reports: BTreeMap<String, StoredReport>,
    /// Drains in force.
    pub drains: BTreeSet<DrainKey>,
    /// Whether the whole instance is drained (`/readyz` fails).
    pub instance_drained: bool,
    /// Datacenters whose report was restored after a restart and not confirmed since.
    pub unverified: BTreeSet<String>,
    /// The user directory, when configured.
    pub directory: Option<Directory>,
    /// The fleet's state revision this state reflects (etcd's revision of the last change
    /// applied); 0 with the embedded store.
    pub revision: i64,
    /// Feature toggles as an operator set them.
    pub toggles: Toggles,
}

impl LiveState {
    /// The state found in the store at startup: every restored report is unverified.
    pub fn restored(persisted: Persisted) -> LiveState {
        LiveState {
            unverified: persisted.reports.keys().cloned().collect(),
            reports: persisted.reports,
            drains: persisted.drains,
            instance_drained: persisted.instance_drained,
            directory: None,
            revision: 0,
            toggles: toggles_named(&persisted.toggles),
        }
    }

    /// The state after `change`.
    pub fn with(&self, change: &Change) -> LiveState {
        let mut next = self.clone();
        match change {
            Change::Report { datacenter, report } => {
                next.unverified.remove(datacenter);
                next.reports.insert(datacenter.clone(), report.clone());
            }
            Change::Drain { key, drained: true } => {
                next.drains.insert(key.clone());
            }
            Change::Drain {
                key,
                drained: false,
            } => {
                next.drains.remove(key);
            }
            Change::InstanceDrain { drained } => next.instance_drained = *drained,
            Change::Directory(change) => {
                next.directory = next.directory.map(|d| apply_directory(&d, change));
            }
            Change::Toggle { name, on } => {
                if let Some(toggle) = Toggle::named(name) {
                    next.toggles = next.toggles.with(toggle, *on);
                }
            }
            Change::AuditOnly => {}
        }
        next
    }

    /// Routing's view of every configured datacenter at `now`, indexed by `DcId`.
    pub fn dc_states(&self, config: &Config, now: SystemTime) -> Vec<DcState> {
        let now_ms = unix_ms(now);
        config
            .datacenters
            .iter()
            .map(|dc| {
                let drained = self.drains.contains(&DrainKey {
                    datacenter: dc.name.clone(),
                    service: None,
                });
                let drained_services = self
                    .drains
                    .iter()
                    .filter(|key| key.datacenter == dc.name)
                    .filter_map(|key| key.service.as_deref())
                    .filter_map(|name| config.services.iter().position(|s| s.id == name))
                    .map(|i| ServiceId(i as u16))
                    .collect();
                let report = self.reports.get(&dc.name).map(|r| ReportState {
                    healthy: r.healthy,
                    capacity: r.capacity,
                    load: r.load,
                    latency_ms: r.latency_ms.clone(),
                    cost: r.cost,
                    age: Duration::from_millis(now_ms.saturating_sub(r.received_unix_ms)),
                    ttl: Duration::from_secs(u64::from(r.ttl_seconds)),
                });
                DcState {
                    drained,
                    drained_services,
                    report,
                    unverified: self.unverified.contains(&dc.name),
                }
            })
            .collect()
    }
}

/// The directory after `change`. Datacenter names it has not seen are added to its table (which
/// rebuilds it: rare, only after a reload adds a datacenter).
pub fn apply_directory(directory: &Directory, change: &DirectoryChange) -> Directory {
    let mut names = directory.dc_names().to_vec();
    let known = names.len();
    match change {
        DirectoryChange::Pins(pins) => {
            let changes: Vec<(String, Option<Placement>)> = pins
                .iter()
                .map(|(user, placement)| {
                    let placement = placement.as_ref().map(|p| placement_of(&mut names, p));
                    (user.clone(), placement)
                })
                .collect();
            let base = widened(directory, names, known);
            base.with_pins(changes)
        }
        DirectoryChange::Buckets(buckets) => {
            let changes: Vec<(u32, Placement)> = buckets
                .iter()
                .map(|(bucket, placement)| (*bucket, placement_of(&mut names, placement)))
                .collect();
            widened(directory, names, known).with_buckets(changes)
        }
        DirectoryChange::Replace { buckets, pins, .. } => {
            let buckets: Vec<Placement> = buckets
                .iter()
                .map(|p| placement_of(&mut names, p))
                .collect();
            let pins: Vec<(String, Placement)> = pins
                .iter()
                .map(|(user, p)| (user.clone(), placement_of(&mut names, p)))
                .collect();
            Directory::new(names, buckets, pins)
        }
    }
}

/// `directory` with datacenter table `names`, rebuilt only if names were added.
fn widened(directory: &Directory, names: Vec<String>, known: usize) -> Directory {
    if names.len() == known {
        return directory.clone();
    }
    let buckets = (0..directory.n_buckets())
        .map(|b| directory.bucket(b))
        .collect();
    let pins: Vec<(String, Placement)> = directory
        .pins()
        .map(|(user, placement)| (user.to_owned(), placement))
        .collect();
    Directory::new(names, buckets, pins)
}

/// The toggles set by name; a name this build does not know (a toggle since removed) is ignored.
pub(super) fn toggles_named(named: &BTreeMap<String, bool>) -> Toggles {
    named
        .iter()
        .filter_map(|(name, on)| Toggle::named(name).map(|t| (t, *on)))
        .fold(Toggles::default(), |toggles, (t, on)| toggles.with(t, on))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where the control plane reads the time: the wall clock, or a hand-moved one in tests.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// `SystemTime::now()`.
    #[default]
    System,
    /// A clock that only moves when told, in Unix milliseconds.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at `start`.
    pub fn manual(start: SystemTime) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(unix_ms(start))))
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Manual(ms) => UNIX_EPOCH + Duration::from_millis(ms.load(Ordering::Acquire)),
        }
    }

    /// Moves a manual clock forward (does nothing to the system clock).
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(ms) = self {
            let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
            ms.fetch_add(by, Ordering::AcqRel);
        }
    }
}
