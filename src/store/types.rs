//! The values the store persists: reports, drains, audit entries, configuration versions and the
//! user directory.
//!
//! These are plain data with serde derives: most are stored as JSON (see the module doc of
//! [`crate::store`]), and every [`Change`], directory changes included, is serialisable so a
//! caller can log or forward it. The directory's pins and buckets are the exception on disk: they
//! use a compact two-name encoding instead of JSON, because there can be millions of them. These
//! types carry no rules: the control plane decides what a valid report, drain or placement is,
//! and the store keeps whatever it is given.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A datacenter's latest health and capacity report, as accepted by the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReport {
    /// Whether the datacenter says it can serve.
    pub healthy: bool,
    /// How much it can serve, in the datacenter's own units.
    pub capacity: f64,
    /// How much it serves now, in the same units as `capacity`.
    pub load: f64,
    /// How long the report stays fresh, in seconds.
    pub ttl_seconds: u32,
    /// Measured latency to other places (for example other datacenters), in milliseconds.
    #[serde(default)]
    pub latency_ms: BTreeMap<String, f64>,
    /// The datacenter's relative cost of serving, if it reports one.
    #[serde(default)]
    pub cost: Option<f64>,
    /// When the report was accepted, Unix milliseconds (wall clock, so ages survive restarts).
    pub received_unix_ms: u64,
    /// The datacenter's own service latency (p99), milliseconds, if it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_latency_ms: Option<f64>,
    /// Since when the datacenter has been reporting healthy without a break (set by the state
    /// manager when a healthy report follows a down one, one past its grace, or none where one
    /// is required); `None` when it has served since before anyone counted. Slow start ramps
    /// from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_since_unix_ms: Option<u64>,
}

/// What a drain applies to: one service in a datacenter, or the whole datacenter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DrainKey {
    /// The drained datacenter.
    pub datacenter: String,
    /// The drained service; `None` means every service in the datacenter.
    pub service: Option<String>,
}

/// One state change, applied atomically together with its [`AuditEntry`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// A datacenter's latest report replaces its previous one.
    Report {
        /// The reporting datacenter.
        datacenter: String,
        /// Its report.
        report: StoredReport,
    },
    /// Drain (true) or undrain (false) a datacenter, for one service or all.
    Drain {
        /// What to drain or undrain.
        key: DrainKey,
        /// `true` to drain, `false` to lift the drain.
        drained: bool,
    },
    /// Drain or undrain this whole instance (its /readyz).
    InstanceDrain {
        /// `true` to drain, `false` to lift the drain.
        drained: bool,
    },
    /// Switch a feature toggle on (true) or off (false), by its name.
    Toggle {
        /// The toggle's name, e.g. `capacity_spill`.
        name: String,
        /// `true` for on.
        on: bool,
    },
    /// A write that changes no stored state but must be audited (e.g. a reload).
    AuditOnly,
    /// A change to the user directory: pins, buckets, or the whole directory at once.
    ///
    /// However many rows it holds, it is applied in one write transaction with one audit entry.
    /// For a bulk import the caller puts a summary in the audit entry's `detail`, not the rows.
    Directory(DirectoryChange),
}

/// A home and a replica datacenter, by name.
///
/// Neither name may contain a NUL byte: the store separates the two names with one (see
/// [`crate::store`]), and refuses a name holding one rather than store a value that would not
/// load back the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPlacement {
    /// The datacenter that serves the user or bucket.
    pub home: String,
    /// The datacenter that holds the replica.
    pub replica: String,
}

/// A change to the user directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DirectoryChange {
    /// Pin (Some) or unpin (None) users; any number, applied together.
    ///
    /// A user listed more than once gets what their last row says. Unpinning a user who is not
    /// pinned changes nothing and is not an error.
    Pins(Vec<(String, Option<StoredPlacement>)>),
    /// Place buckets.
    ///
    /// Every bucket number must be below the stored bucket count, or nothing of the change is
    /// stored.
    Buckets(Vec<(u32, StoredPlacement)>),
    /// Replace the whole directory (restore): the bucket count, every bucket, every pin.
    ///
    /// `buckets[i]` is bucket `i`, so `buckets` must hold exactly `n_buckets` placements.
    Replace {
        /// The new bucket count.
        n_buckets: u32,
        /// Every bucket's placement, in bucket order.
        buckets: Vec<StoredPlacement>,
        /// Every pin; all pins not listed are removed.
        pins: Vec<(String, StoredPlacement)>,
    },
}

/// One accepted write, as recorded in the append-only audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the write was accepted, Unix milliseconds.
    pub unix_ms: u64,
    /// The token's configured name, e.g. "example-operator".
    pub actor: String,
    /// The token's role, e.g. "operator" or "datacenter:eu-west".
    pub role: String,
    /// What was done, e.g. "report", "drain", "undrain", "reload".
    pub action: String,
    /// What it was done to, e.g. "eu-west" or "eu-west/www".
    pub target: String,
    /// Request details (the report body, force flag, ...).
    pub detail: serde_json::Value,
}

/// Everything needed to rebuild live state at startup, read in one consistent snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Persisted {
    /// Each datacenter's latest report, by datacenter name.
    pub reports: BTreeMap<String, StoredReport>,
    /// Drains in force.
    pub drains: BTreeSet<DrainKey>,
    /// Whether this instance is drained (its /readyz fails).
    pub instance_drained: bool,
    /// When each drain was last lifted, Unix milliseconds.
    pub undrained: BTreeMap<DrainKey, u64>,
    /// Feature toggles an operator set, by name (absent: never set, so on).
    pub toggles: BTreeMap<String, bool>,
}

/// A configuration the server has run, with its full text and the zone files it named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    /// The content hash that identifies this version (computed by the caller).
    pub hash: String,
    /// When this version was first recorded, Unix milliseconds.
    pub first_seen_unix_ms: u64,
    /// The configuration text.
    pub text: String,
    /// The zone files, in configuration order; empty in versions recorded before zone files
    /// were part of a version.
    #[serde(default)]
    pub files: Vec<VersionFile>,
}

/// One file a configuration version names, as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionFile {
    /// The path as written in the configuration (`zones[].file`).
    pub name: String,
    /// The file's text.
    pub text: String,
}

/// A configuration version without its text, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersionMeta {
    /// The content hash that identifies this version.
    pub hash: String,
    /// When this version was first recorded, Unix milliseconds.
    pub first_seen_unix_ms: u64,
}
