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
use crate::store::{Change, DirectoryChange, DrainKey, Persisted, StoredBan, StoredReport};

use super::banned::Banned;
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
    /// When each drain was last lifted, Unix milliseconds (slow start ramps from it).
    pub undrained: BTreeMap<DrainKey, u64>,
    /// When a reload added a datacenter (key without a service) or added it to an existing
    /// service's pool (key with the service), Unix milliseconds: slow start ramps from it.
    /// Kept in memory only; a datacenter's first report stores the time as its
    /// `serving_since`, so a restart after that resumes the ramp.
    pub added: BTreeMap<DrainKey, u64>,
    /// The user directory, when configured.
    pub directory: Option<Directory>,
    /// The fleet's state revision this state reflects (etcd's revision of the last change
    /// applied); 0 with the embedded store.
    pub revision: i64,
    /// Feature toggles as an operator set them.
    pub toggles: Toggles,
    /// Banned-query rules as stored, by id.
    pub banned_rules: BTreeMap<String, StoredBan>,
    /// The same, ready to match queries (their counters resolved by the state manager).
    pub banned: Banned,
}

impl LiveState {
    /// The state found in the store at startup: every restored report is unverified.
    pub fn restored(persisted: Persisted) -> LiveState {
        LiveState {
            unverified: persisted.reports.keys().cloned().collect(),
            reports: persisted.reports,
            drains: persisted.drains,
            undrained: persisted.undrained,
            added: BTreeMap::new(),
            instance_drained: persisted.instance_drained,
            directory: None,
            revision: 0,
            toggles: toggles_named(&persisted.toggles),
            banned: compiled(&persisted.banned, &Banned::default()),
            banned_rules: persisted.banned,
        }
    }

    /// `change` as it is to be stored: a report gets the time since which its datacenter has
    /// been serving without a break (see [`StoredReport::serving_since_unix_ms`]).
    pub fn stamp(&self, config: &Config, change: Change) -> Change {
        let Change::Report {
            datacenter,
            mut report,
        } = change
        else {
            return change;
        };
        let required = config
            .datacenters
            .iter()
            .find(|dc| dc.name == datacenter)
            .is_some_and(|dc| dc.require_report);
        // The longest grace any service gives: a datacenter within it was still serving.
        let grace_ms = config
            .services
            .iter()
            .map(|s| u64::try_from(s.staleness_grace.as_millis()).unwrap_or(u64::MAX))
            .max()
            .unwrap_or(0);
        let served = match self.reports.get(&datacenter) {
            // A datacenter that needs no report has served since it was configured: all along,
            // or since the reload that added it (then it is ramping).
            None => (!required).then(|| {
                self.added
                    .get(&DrainKey {
                        datacenter: datacenter.clone(),
                        service: None,
                    })
                    .copied()
            }),
            Some(before) => {
                let until = before
                    .received_unix_ms
                    .saturating_add(u64::from(before.ttl_seconds) * 1000)
                    .saturating_add(grace_ms);
                (before.healthy && report.received_unix_ms <= until)
                    .then_some(before.serving_since_unix_ms)
            }
        };
        report.serving_since_unix_ms = match served {
            _ if !report.healthy => None,
            Some(since) => since,
            None => Some(report.received_unix_ms),
        };
        Change::Report { datacenter, report }
    }

    /// Notes what a reload from `before` to `after`, at `at_ms` (Unix milliseconds), adds:
    /// datacenters, and datacenters to the pool of a service both have. Slow start ramps them
    /// from `at_ms`, as if a drain were lifted then; entries of datacenters (or pools) `after`
    /// no longer has are dropped.
    pub fn note_added(&mut self, before: &Config, after: &Config, at_ms: u64) {
        let existed = |name: &str| before.datacenters.iter().any(|dc| dc.name == name);
        for dc in after.datacenters.iter().filter(|dc| !existed(&dc.name)) {
            self.added.insert(
                DrainKey {
                    datacenter: dc.name.clone(),
                    service: None,
                },
                at_ms,
            );
        }
        for service in &after.services {
            let Some(old) = before.services.iter().find(|s| s.id == service.id) else {
                continue;
            };
            let had = |name: &str| {
                old.pools
                    .iter()
                    .any(|pool| before.datacenters[pool.datacenter].name == name)
            };
            for pool in &service.pools {
                let name = &after.datacenters[pool.datacenter].name;
                if existed(name) && !had(name) {
                    self.added.insert(
                        DrainKey {
                            datacenter: name.clone(),
                            service: Some(service.id.clone()),
                        },
                        at_ms,
                    );
                }
            }
        }
        self.added.retain(|key, _| match &key.service {
            None => after.datacenters.iter().any(|dc| dc.name == key.datacenter),
            Some(id) => after
                .services
                .iter()
                .filter(|service| service.id == *id)
                .flat_map(|service| &service.pools)
                .any(|pool| after.datacenters[pool.datacenter].name == key.datacenter),
        });
    }

    /// The state after `change`, made at `at_ms` (Unix milliseconds: when a drain is lifted).
    pub fn with(&self, change: &Change, at_ms: u64) -> LiveState {
        let mut next = self.clone();
        match change {
            Change::Report { datacenter, report } => {
                next.unverified.remove(datacenter);
                next.reports.insert(datacenter.clone(), report.clone());
            }
            Change::Drain { key, drained: true } => {
                next.drains.insert(key.clone());
                next.undrained.remove(key);
            }
            Change::Drain {
                key,
                drained: false,
            } => {
                // Only a drain in force starts a slow start when lifted.
                if next.drains.remove(key) {
                    next.undrained.insert(key.clone(), at_ms);
                }
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
            Change::Ban { id, rule } => {
                next.banned_rules.insert(id.clone(), rule.clone());
                next.banned = compiled(&next.banned_rules, &self.banned);
            }
            Change::Unban { id } => {
                next.banned_rules.remove(id);
                next.banned = compiled(&next.banned_rules, &self.banned);
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
                let age = |since: u64| Duration::from_millis(now_ms.saturating_sub(since));
                let stored = self.reports.get(&dc.name);
                // The latest lifted drain or reload that added it, for every service or one.
                let undrained = |service: Option<&str>| {
                    self.undrained
                        .iter()
                        .chain(&self.added)
                        .filter(|(key, _)| {
                            key.datacenter == dc.name && key.service.as_deref() == service
                        })
                        .map(|(_, at)| age(*at))
                        .min()
                };
                let back_for = stored
                    .and_then(|r| r.serving_since_unix_ms)
                    .map(age)
                    .into_iter()
                    .chain(undrained(None))
                    .min();
                // From the lifted drains and reloads of this datacenter for one service, not
                // from every service: this runs on every publish, for every datacenter.
                let mut back_for_services: Vec<(ServiceId, Duration)> = Vec::new();
                for (key, at) in self.undrained.iter().chain(&self.added) {
                    if key.datacenter != dc.name {
                        continue;
                    }
                    let Some(i) = key
                        .service
                        .as_deref()
                        .and_then(|name| config.services.iter().position(|s| s.id == name))
                    else {
                        continue;
                    };
                    let (id, age) = (ServiceId(i as u16), age(*at));
                    match back_for_services.iter_mut().find(|(s, _)| *s == id) {
                        Some((_, known)) => *known = (*known).min(age),
                        None => back_for_services.push((id, age)),
                    }
                }
                back_for_services.sort_by_key(|(id, _)| *id);
                let report = stored.map(|r| ReportState {
                    healthy: r.healthy,
                    capacity: r.capacity,
                    load: r.load,
                    latency_ms: r.latency_ms.clone(),
                    cost: r.cost,
                    service_latency_ms: r.service_latency_ms,
                    age: Duration::from_millis(now_ms.saturating_sub(r.received_unix_ms)),
                    ttl: Duration::from_secs(u64::from(r.ttl_seconds)),
                });
                DcState {
                    drained,
                    drained_services,
                    report,
                    unverified: self.unverified.contains(&dc.name),
                    back_for,
                    back_for_services,
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

/// `rules` ready to match, keeping the counters of the rules `previous` has; a stored rule this
/// build cannot use (written by another build) is left out, with a warning.
pub(super) fn compiled(rules: &BTreeMap<String, StoredBan>, previous: &Banned) -> Banned {
    let (banned, failed) = Banned::compile(rules, previous);
    for (id, error) in failed {
        tracing::warn!(rule = %id, %error, "a stored banned-query rule cannot be used; it is left out");
    }
    banned
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::slow_start;

    const CONFIG: &str = r#"
geo: { database: unused.mmdb }
zones: [{ origin: example.com, file: unused.zone }]
datacenters:
  eu-west: { latitude: 53.3, longitude: -6.2, country: IE, continent: EU, require_report: true }
  us-east: { latitude: 39.0, longitude: -77.4, country: US, continent: NA }
services:
  www:
    name: www.example.com
    policy: nearest
    slow_start_seconds: 100
    staleness_grace_seconds: 30
    pools: { eu-west: { a: [192.0.2.3] }, us-east: { a: [192.0.2.1] } }
"#;

    fn report(healthy: bool, at_s: u64) -> StoredReport {
        StoredReport {
            healthy,
            capacity: 10.0,
            load: 1.0,
            ttl_seconds: 10,
            latency_ms: BTreeMap::new(),
            cost: None,
            received_unix_ms: at_s * 1000,
            service_latency_ms: None,
            serving_since_unix_ms: None,
        }
    }

    /// Applies a report at `at_s` and returns the new state and its `serving_since`, seconds.
    fn reported(
        live: &LiveState,
        config: &Config,
        dc: &str,
        healthy: bool,
        at_s: u64,
    ) -> (LiveState, Option<u64>) {
        let change = live.stamp(
            config,
            Change::Report {
                datacenter: dc.to_owned(),
                report: report(healthy, at_s),
            },
        );
        let Change::Report { report, .. } = &change else {
            unreachable!("a report stays a report")
        };
        let since = report.serving_since_unix_ms.map(|ms| ms / 1000);
        (live.with(&change, at_s * 1000), since)
    }

    #[test]
    fn ramps_start_when_a_datacenter_comes_back_and_survive_a_restart() {
        let config = Config::from_yaml_str(CONFIG).unwrap();
        let live = LiveState::default();
        #[rustfmt::skip]
        let steps: &[(&str, bool, u64, Option<u64>, &str)] = &[
            ("eu-west", true, 1000, Some(1000), "first report where one is required: ramps"),
            ("eu-west", true, 1005, Some(1000), "healthy again: keeps its start"),
            ("eu-west", true, 1045, Some(1000), "within TTL + grace (40 s): still serving"),
            ("eu-west", true, 1090, Some(1090), "past TTL + grace: back from stale, ramps again"),
            ("eu-west", false, 1095, None, "down"),
            ("eu-west", true, 1100, Some(1100), "recovered: ramps"),
            ("us-east", true, 1000, None, "first report where none is required: it was serving"),
        ];
        let mut live = live;
        for &(dc, healthy, at, expected, why) in steps {
            let (next, since) = reported(&live, &config, dc, healthy, at);
            assert_eq!(since, expected, "{why}");
            live = next;
        }
        // Half way through eu-west's ramp, a restart: the stored start is restored and the ramp
        // resumes where it was.
        let persisted = Persisted {
            reports: live.reports.clone(),
            drains: live.drains.clone(),
            instance_drained: false,
            undrained: live.undrained.clone(),
            ..Persisted::default()
        };
        let restored = LiveState::restored(persisted);
        let at = UNIX_EPOCH + Duration::from_secs(1150);
        let www = &config.services[0];
        let before = slow_start(www, ServiceId(0), &live.dc_states(&config, at)[0]);
        let after = slow_start(www, ServiceId(0), &restored.dc_states(&config, at)[0]);
        assert_eq!(before, after);
        assert_eq!(after.map(|(ramp, _)| ramp.share()), Some(0.5));
        // Lifting a drain ramps from then; lifting one not in force changes nothing.
        let key = DrainKey {
            datacenter: "us-east".to_owned(),
            service: None,
        };
        let drained = live.with(
            &Change::Drain {
                key: key.clone(),
                drained: true,
            },
            1_200_000,
        );
        let undrained = drained.with(
            &Change::Drain {
                key: key.clone(),
                drained: false,
            },
            1_210_000,
        );
        let states = undrained.dc_states(&config, UNIX_EPOCH + Duration::from_secs(1235));
        assert_eq!(
            slow_start(www, ServiceId(0), &states[1]).map(|(r, _)| r.share()),
            Some(0.25)
        );
        let twice = undrained.with(
            &Change::Drain {
                key,
                drained: false,
            },
            1_220_000,
        );
        assert_eq!(twice.undrained, undrained.undrained);
    }

    #[test]
    fn a_reload_that_adds_a_datacenter_ramps_it_from_then() {
        let before = Config::from_yaml_str(CONFIG).unwrap();
        // ap-south is new and needs no report; the new service `api` adds us-east to no pool
        // that existed (only pools of services both configurations have count).
        let after = Config::from_yaml_str(
            &CONFIG
                .replace(
                    "  us-east: { latitude",
                    "  ap-south: { latitude: 1.3, longitude: 103.8, country: SG, continent: AS }\n  us-east: { latitude",
                )
                .replace(
                    "    pools: { eu-west: { a: [192.0.2.3] }, us-east: { a: [192.0.2.1] } }",
                    "    pools: { eu-west: { a: [192.0.2.3] }, us-east: { a: [192.0.2.1] }, ap-south: { a: [192.0.2.4] } }\n  api:\n    name: api.example.com\n    policy: nearest\n    slow_start_seconds: 100\n    pools: { us-east: { a: [192.0.2.1] } }",
                ),
        )
        .unwrap();
        let mut live = LiveState::default();
        live.note_added(&before, &after, 1_000_000);
        let key = |dc: &str, service: Option<&str>| DrainKey {
            datacenter: dc.to_owned(),
            service: service.map(str::to_owned),
        };
        assert_eq!(
            live.added.keys().cloned().collect::<Vec<_>>(),
            vec![key("ap-south", None)],
            "a new datacenter, not a new service's pool"
        );
        let ap_south = after
            .datacenters
            .iter()
            .position(|dc| dc.name == "ap-south")
            .unwrap();
        let www = &after.services[0];
        let share = |live: &LiveState, at_s: u64| {
            let states = live.dc_states(&after, UNIX_EPOCH + Duration::from_secs(at_s));
            slow_start(www, ServiceId(0), &states[ap_south]).map(|(ramp, _)| ramp.share())
        };
        assert_eq!(
            share(&live, 1000),
            Some(0.0),
            "eligible from the reload: ramps"
        );
        assert_eq!(share(&live, 1040), Some(0.4));
        // Its first report keeps the start, and stores it: a restart resumes the ramp.
        let (reported, since) = reported(&live, &after, "ap-south", true, 1050);
        assert_eq!(since, Some(1000));
        assert_eq!(share(&reported, 1060), Some(0.6));
        let restored = LiveState::restored(Persisted {
            reports: reported.reports.clone(),
            ..Persisted::default()
        });
        assert_eq!(share(&restored, 1060), Some(0.6), "after a restart");
        assert_eq!(share(&restored, 1100), None, "done");
        // A datacenter added to an existing service's pool ramps in that service only.
        let mut live = LiveState::default();
        live.note_added(&after, &after.clone(), 2_000_000);
        assert!(live.added.is_empty(), "the same configuration adds nothing");
        let narrower = Config::from_yaml_str(&CONFIG.replace(
            "    pools: { eu-west: { a: [192.0.2.3] }, us-east: { a: [192.0.2.1] } }",
            "    pools: { eu-west: { a: [192.0.2.3] } }",
        ))
        .unwrap();
        live.note_added(&narrower, &before, 2_000_000);
        assert_eq!(
            live.added.keys().cloned().collect::<Vec<_>>(),
            vec![key("us-east", Some("www"))]
        );
        let states = live.dc_states(&before, UNIX_EPOCH + Duration::from_secs(2050));
        assert_eq!(
            slow_start(&before.services[0], ServiceId(0), &states[1]).map(|(r, _)| r.share()),
            Some(0.5)
        );
        // A reload that takes it out of the pool forgets it.
        live.note_added(&before, &narrower, 2_100_000);
        assert!(live.added.is_empty(), "{:?}", live.added);
    }
}
