//! The state backend's gauges: which revision an instance serves, whether its backend is
//! reachable, and whether its control plane is read-only. Operators compare the revision across a
//! fleet to see that it agrees.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::names::{
    STATE_BACKEND_UP, STATE_CONFIG_REJECTED, STATE_READ_ONLY, STATE_RESYNCS, STATE_REVISION,
};
use super::register;

/// Handles of the state backend's gauges.
#[derive(Clone)]
pub struct StateGauges {
    revision: IntGauge,
    backend_up: IntGauge,
    read_only: IntGauge,
    config_rejected: IntGauge,
    resynced_compacted: IntCounter,
    resynced_restored: IntCounter,
}

impl StateGauges {
    pub(super) fn register(registry: &Registry) -> StateGauges {
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid metric name");
            register(registry, &gauge);
            gauge
        };
        let resyncs = IntCounterVec::new(
            Opts::new(
                STATE_RESYNCS,
                "Times the fleet's whole state was read again while running, by reason (compacted, restored).",
            ),
            &["reason"],
        )
        .expect("valid metric name");
        register(registry, &resyncs);
        let gauges = StateGauges {
            resynced_compacted: resyncs.with_label_values(&["compacted"]),
            resynced_restored: resyncs.with_label_values(&["restored"]),
            revision: gauge(
                STATE_REVISION,
                "The state revision this instance serves (etcd's revision; 0 with the embedded store).",
            ),
            backend_up: gauge(
                STATE_BACKEND_UP,
                "1 while the state backend is reachable, else 0.",
            ),
            read_only: gauge(
                STATE_READ_ONLY,
                "1 while the control plane refuses writes because the state backend cannot write.",
            ),
            config_rejected: gauge(
                STATE_CONFIG_REJECTED,
                "1 while the fleet's published configuration could not be loaded here.",
            ),
        };
        gauges.backend_up.set(1);
        gauges
    }

    /// Sets [`STATE_REVISION`].
    pub fn set_revision(&self, revision: i64) {
        self.revision.set(revision);
    }

    /// The value of [`STATE_REVISION`].
    pub fn revision(&self) -> i64 {
        self.revision.get()
    }

    /// Sets [`STATE_BACKEND_UP`].
    pub fn set_backend_up(&self, up: bool) {
        self.backend_up.set(i64::from(up));
    }

    /// Sets [`STATE_READ_ONLY`].
    pub fn set_read_only(&self, read_only: bool) {
        self.read_only.set(i64::from(read_only));
    }

    /// Counts a whole re-read of the fleet's state ([`STATE_RESYNCS`]): after a restore of etcd
    /// when `restored`, else after a compaction.
    pub fn record_resync(&self, restored: bool) {
        if restored {
            self.resynced_restored.inc();
        } else {
            self.resynced_compacted.inc();
        }
    }

    /// Sets [`STATE_CONFIG_REJECTED`].
    pub fn set_config_rejected(&self, rejected: bool) {
        self.config_rejected.set(i64::from(rejected));
    }
}
