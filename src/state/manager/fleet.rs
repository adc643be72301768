//! The manager's side of a fleet (the etcd backend): writes go to etcd as one transaction each,
//! and every change the watch delivers, this instance's own included, is applied here in etcd's
//! order. A write is answered once this instance's state has reached its revision, so a 2xx still
//! means "stored, and this instance answers by it". The local store keeps a copy of what was
//! applied (with every audit entry), read at the next start until etcd is reached.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::directory::Directory;
use crate::fleet::{Fleet, FleetError, FleetEvent, FleetState, Record};
use crate::store::{AuditEntry, Change, DirectoryChange, StoredPlacement};

use super::super::directory::placement_of;
use super::super::live::{LiveState, compiled, toggles_named, unix_ms};
use super::super::snapshot::{Prepare, Snapshot};
use super::{
    Applied, ApplyError, Manager, Pending, default_layout, refuse_last_drain, refuse_too_many_bans,
};

/// How many fleet events may wait for the manager.
const EVENT_QUEUE: usize = 1024;

impl<P: Prepare> Manager<P> {
    /// Makes `fleet` (etcd) this manager's state backend; the store becomes the local copy.
    pub fn with_fleet(mut self, fleet: Fleet) -> Manager<P> {
        info!(
            instance = fleet.instance(),
            prefix = fleet.prefix(),
            "state backend: etcd"
        );
        self.metrics.state().set_backend_up(false);
        self.fleet = Some(fleet);
        self
    }

    /// Starts following the fleet's state; `None` with the embedded store.
    pub(super) fn follow_fleet(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<mpsc::Receiver<FleetEvent>> {
        let fleet = self.fleet.clone()?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(fleet.clone().follow(tx, shutdown.clone()));
        let identity = self
            .publisher
            .current()
            .loaded
            .config
            .server
            .identity
            .clone();
        let (metrics, clock) = (self.metrics.clone(), self.clock.clone());
        let now = move || (metrics.state().revision(), unix_ms(clock.now()));
        tokio::spawn(fleet.register(identity.unwrap_or_default(), now, shutdown.clone()));
        Some(rx)
    }

    /// Stores `change` in etcd after the same safety rails as [`Manager::apply`]; the requester
    /// waits for the returned revision.
    pub(super) async fn apply_fleet(
        &self,
        fleet: &Fleet,
        change: Change,
        audit: AuditEntry,
        force: bool,
    ) -> Result<Applied, ApplyError> {
        if self.readiness.store_failing() {
            return Err(ApplyError::Unreachable(
                "the last attempt failed; waiting for it to return".to_owned(),
            ));
        }
        let current = self.publisher.current();
        let change = current.live.stamp(&current.loaded.config, change);
        let next = current.live.with(&change, audit.unix_ms);
        // The rail judged the drains of this revision: the transaction fails if any instance
        // stored a drain since, so two drains of the last datacenters cannot both pass it.
        let mut drains_at = None;
        if !force && let Change::Drain { key, drained: true } = &change {
            refuse_last_drain(&current, &next, key, &self.clock)?;
            drains_at = Some(current.live.revision);
        }
        refuse_too_many_bans(&change, &next)?;
        let buckets = match &change {
            // The whole map goes with a bucket move, and with a switch to a new pin generation.
            Change::Directory(_) => next.directory.as_ref().map(|d| {
                (0..d.n_buckets())
                    .map(|b| {
                        let p = d.bucket(b);
                        StoredPlacement {
                            home: d.dc_names()[usize::from(p.home)].clone(),
                            replica: d.dc_names()[usize::from(p.replica)].clone(),
                        }
                    })
                    .collect::<Vec<_>>()
            }),
            _ => None,
        };
        match fleet
            .commit(&change, &audit, buckets.as_deref(), drains_at)
            .await
        {
            Ok(revision) => Ok(Applied::At(revision)),
            Err(FleetError::Unavailable(why)) => {
                self.metrics.record_store_failure();
                self.metrics.state().set_backend_up(false);
                self.enter_read_only(&why, "apply", &audit.action, &audit.target);
                Err(ApplyError::Unreachable(why))
            }
            Err(
                error @ (FleetError::TooLarge { .. } | FleetError::Conflict | FleetError::Raced),
            ) => Err(ApplyError::Refused(error.to_string())),
            Err(error) => {
                warn!(%error, action = audit.action, target = audit.target, "etcd refused a write");
                Err(ApplyError::Fleet(error.to_string()))
            }
        }
    }

    /// Answers the writes whose revision this instance now serves; when etcd was just lost
    /// (`lost`), answers the others with the reason (they are stored, and applied when it returns).
    pub(super) fn answer_pending(&self, pending: &mut Vec<Pending>, lost: Option<&str>) {
        if pending.is_empty() {
            return;
        }
        let current = self.publisher.current();
        let revision = current.live.revision;
        let mut waiting = Vec::new();
        for (at, reply) in pending.drain(..) {
            if at <= revision {
                let _ = reply.send(Ok(current.generation));
            } else if let Some(why) = lost {
                let _ = reply.send(Err(ApplyError::Unreachable(format!(
                    "{why}; the write was stored at revision {at}, and this instance applies it when etcd returns"
                ))));
            } else {
                waiting.push((at, reply));
            }
        }
        *pending = waiting;
    }

    /// Applies one event of the fleet's follower.
    pub(super) async fn on_fleet_event(&self, event: FleetEvent) {
        match event {
            FleetEvent::Down(why) => {
                self.metrics.state().set_backend_up(false);
                // The follower retries often; the outage is announced once.
                if !self.readiness.store_failing() {
                    self.metrics.record_store_failure();
                    self.enter_read_only(&why, "watch", "follow", "etcd");
                }
            }
            FleetEvent::Up => {
                self.metrics.state().set_backend_up(true);
                self.store_writes();
            }
            FleetEvent::Synced(state) => {
                self.synced(state).await;
                self.metrics.state().set_backend_up(true);
                self.store_writes();
            }
            FleetEvent::Changed { revision, records } => self.changed(revision, records).await,
            FleetEvent::Resync { restored } => self.metrics.state().record_resync(restored),
        }
    }

    /// Applies the records of one watch response, then copies them to the local store.
    async fn changed(&self, revision: i64, records: Vec<Record>) {
        let current = self.publisher.current();
        let own = self.fleet.as_ref().map(Fleet::instance);
        let mut live = (*current.live).clone();
        let mut local = Vec::with_capacity(records.len());
        for record in records {
            let change = match record.change {
                // Another instance's drain of itself is only audited here.
                Change::InstanceDrain { .. } if Some(record.origin.as_str()) != own => {
                    Change::AuditOnly
                }
                change => change,
            };
            live = live.with(&change, record.audit.unix_ms);
            local.push((change, record.audit));
        }
        live.revision = revision;
        self.publish_live(live);
        let store = self.store.clone();
        let copied = tokio::task::spawn_blocking(move || {
            local
                .iter()
                .try_for_each(|(change, audit)| store.apply(change, audit).map(drop))
        })
        .await
        .expect("store writes do not panic");
        if let Err(error) = copied {
            warn!(%error, revision, "could not copy the fleet's change to the local store");
        }
    }

    /// Replaces the shared part of the live state (reports, drains, directory) with the fleet's
    /// whole state; lays out the directory in etcd when no instance has yet.
    async fn synced(&self, state: FleetState) {
        let current = self.publisher.current();
        let config = &current.loaded.config;
        let mut live = (*current.live).clone();
        // A restored report stays unverified only while the fleet holds the same one.
        live.unverified
            .retain(|dc| state.reports.get(dc) == current.live.reports.get(dc));
        live.reports = state.reports.clone();
        live.drains = state.drains.clone();
        live.toggles = toggles_named(&state.toggles);
        live.banned = compiled(&state.banned, &live.banned);
        live.banned_rules = state.banned;
        live.revision = state.changed;
        let mut layout_needed = None;
        let mut directory_copy = None;
        if let Some(settings) = &config.directory {
            let buckets = match &state.buckets {
                Some(buckets) => buckets.clone(),
                None => {
                    let layout = default_layout(config, settings);
                    layout_needed = Some(layout.clone());
                    layout
                }
            };
            live.directory = Some(fleet_directory(config, &buckets, &state.pins));
            directory_copy = Some(DirectoryChange::Replace {
                n_buckets: buckets.len() as u32,
                buckets,
                pins: state.pins,
            });
        }
        self.publish_live(live);
        let store = self.store.clone();
        let (reports, drains) = (state.reports, state.drains);
        let copied = tokio::task::spawn_blocking(move || {
            store.mirror(&reports, &drains, directory_copy.as_ref())
        })
        .await
        .expect("store writes do not panic");
        if let Err(error) = copied {
            warn!(%error, "could not copy the fleet's state to the local store");
        }
        if let (Some(layout), Some(fleet)) = (layout_needed, &self.fleet) {
            let audit = AuditEntry {
                unix_ms: unix_ms(self.clock.now()),
                actor: "meridian".to_owned(),
                role: "fleet".to_owned(),
                action: "directory-layout".to_owned(),
                target: "directory".to_owned(),
                detail: serde_json::json!({ "buckets": layout.len(), "instance": fleet.instance() }),
            };
            match fleet.init_buckets(&layout, &audit).await {
                Ok(true) => info!(
                    buckets = layout.len(),
                    "laid out the fleet's user directory"
                ),
                Ok(false) => {}
                Err(error) => warn!(%error, "could not lay out the fleet's user directory"),
            }
        }
    }

    /// Publishes `live` with the serving configuration; returns its generation.
    pub(super) fn publish_live(&self, mut live: LiveState) -> u64 {
        let current = self.publisher.current();
        // Banned-query rules count on metrics resolved here; a removed rule's count goes.
        live.banned = live
            .banned
            .with_counters(|id| self.metrics.banned_counter(id));
        for id in current.live.banned_rules.keys() {
            if !live.banned_rules.contains_key(id) {
                self.metrics.forget_banned(id);
            }
        }
        let revision = live.revision;
        let snapshot = Snapshot::assemble(
            current.loaded.clone(),
            Arc::new(live),
            Some(&current),
            current.generation + 1,
            self.judge_time(),
        );
        if let Some(directory) = &snapshot.live.directory {
            self.metrics.set_pins(directory.n_pins() as u64);
        }
        let generation = snapshot.generation;
        self.publisher.publish(snapshot);
        self.metrics.state().set_revision(revision);
        self.after_publish(None);
        generation
    }
}

/// The next fleet event, or never with the embedded store.
pub(super) async fn next_event(
    events: &mut Option<mpsc::Receiver<FleetEvent>>,
) -> Option<FleetEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// The directory of the fleet's bucket map and pins.
fn fleet_directory(
    config: &Config,
    buckets: &[StoredPlacement],
    pins: &[(String, StoredPlacement)],
) -> Directory {
    let mut names: Vec<String> = config
        .datacenters
        .iter()
        .map(|dc| dc.name.clone())
        .collect();
    let buckets: Vec<_> = buckets
        .iter()
        .map(|p| placement_of(&mut names, p))
        .collect();
    let pins: Vec<_> = pins
        .iter()
        .map(|(user, p)| (user.clone(), placement_of(&mut names, p)))
        .collect();
    Directory::new(names, buckets, pins)
}
