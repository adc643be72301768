//! The user directory as a snapshot sees it: the placements, and which datacenters can serve.

use std::time::Duration;

use crate::config::Config;
use crate::directory::{Directory, Entry, Placement, Reason, Source, serve_from};
use crate::metrics::{LookupReason, LookupSource};
use crate::routing::{DcState, Standing};
use crate::store::StoredPlacement;

/// The directory and each of its datacenters' eligibility when the snapshot was built.
#[derive(Clone)]
pub struct DirectoryView {
    /// Bucket map and pins.
    pub directory: Directory,
    /// By the directory's datacenter index: eligible to serve (configured, not drained, not
    /// reported down, not stale past the directory's grace period).
    eligible: Vec<bool>,
    /// By the directory's datacenter index: the index in `Config::datacenters`, if configured.
    configured: Vec<Option<usize>>,
}

impl std::fmt::Debug for DirectoryView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryView")
            .field("buckets", &self.directory.n_buckets())
            .field("pins", &self.directory.n_pins())
            .finish_non_exhaustive()
    }
}

/// Everything a frontend needs to know about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFacts {
    /// The user's hash bucket.
    pub bucket: u32,
    /// Home datacenter name.
    pub home: String,
    /// Replica datacenter name.
    pub replica: String,
    /// The datacenter to use now.
    pub serve_from: String,
    /// Its index in `Config::datacenters`, if configured.
    pub serve_from_index: Option<usize>,
    /// Why: `home`, `replica` (home ineligible) or `fallback` (neither eligible; home anyway).
    pub reason: Reason,
    /// `bucket` or `pin`.
    pub source: Source,
}

impl UserFacts {
    /// The labels of this lookup in `meridian_directory_lookups_total`.
    pub fn metric_labels(&self) -> (LookupSource, LookupReason) {
        let source = match self.source {
            Source::Bucket => LookupSource::Bucket,
            Source::Pin => LookupSource::Pin,
        };
        let reason = match self.reason {
            Reason::Home => LookupReason::Home,
            Reason::Replica => LookupReason::Replica,
            Reason::Fallback => LookupReason::Fallback,
        };
        (source, reason)
    }
}

impl DirectoryView {
    /// Judges every directory datacenter from `states` (indexed like `config.datacenters`).
    pub fn new(directory: Directory, config: &Config, states: &[DcState], grace: Duration) -> Self {
        let configured: Vec<Option<usize>> = directory
            .dc_names()
            .iter()
            .map(|name| config.datacenter_index(name))
            .collect();
        let eligible = configured
            .iter()
            .map(|index| {
                index.is_some_and(|i| {
                    Standing::of_datacenter(&config.datacenters[i], &states[i], grace).is_eligible()
                })
            })
            .collect();
        DirectoryView {
            directory,
            eligible,
            configured,
        }
    }

    /// Where `user` lives and where to serve it from now. No lock, no allocation beyond the
    /// returned names.
    pub fn facts(&self, user: &str) -> UserFacts {
        let Entry {
            bucket,
            placement,
            source,
        } = self.directory.lookup(user);
        let (serving, reason) = serve_from(placement, |dc| self.eligible[usize::from(dc)]);
        let name = |dc: u16| self.directory.dc_names()[usize::from(dc)].clone();
        UserFacts {
            bucket,
            home: name(placement.home),
            replica: name(placement.replica),
            serve_from: name(serving),
            serve_from_index: self.configured[usize::from(serving)],
            reason,
            source,
        }
    }
}

/// A stored placement as directory indexes, extending `names` with unknown datacenters.
pub fn placement_of(names: &mut Vec<String>, stored: &StoredPlacement) -> Placement {
    placement_named(names, &stored.home, &stored.replica)
}

/// A placement by datacenter names as directory indexes, extending `names` with unknown ones.
pub(super) fn placement_named(names: &mut Vec<String>, home: &str, replica: &str) -> Placement {
    Placement {
        home: index_of(names, home),
        replica: index_of(names, replica),
    }
}

fn index_of(names: &mut Vec<String>, name: &str) -> u16 {
    match names.iter().position(|n| n == name) {
        Some(i) => i as u16,
        None => {
            names.push(name.to_owned());
            (names.len() - 1) as u16
        }
    }
}

/// The label of a reason, as the API and DNS show it.
pub fn reason_label(reason: Reason) -> &'static str {
    match reason {
        Reason::Home => "home",
        Reason::Replica => "replica",
        Reason::Fallback => "fallback",
    }
}

/// The label of a source.
pub fn source_label(source: Source) -> &'static str {
    match source {
        Source::Bucket => "bucket",
        Source::Pin => "pin",
    }
}
