//! Building snapshots: [`Loaded`] is what a reload reads from files; a [`Snapshot`] adds the
//! live state of every datacenter to it.
//!
//! What a DNS query reads (parsed zones, prepared answer records) is owned by `dns`, which sits
//! above this module: the snapshot carries it as a type parameter implementing [`Prepare`] and
//! never looks inside, so data flows one way (dns reads state; state never names dns).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::config::{COUNTRIES_CSV, Config, ConfigError, Problem, Source};
use crate::geo::{CountryTable, GeoDb};
use crate::metrics::{AnswerCounters, ServiceCounters};
use crate::routing::{BaseTable, RoutingTable};

use super::directory::DirectoryView;
use super::live::LiveState;

/// What the module answering queries prepares from a snapshot: zones from files on every load,
/// and its own view of every routing outcome on every snapshot.
///
/// Implemented by `dns` (zones are its `Catalog`, the prepared value its `Answers`); tests may
/// use any type.
pub trait Prepare: fmt::Debug + Send + Sync + Sized + 'static {
    /// Built from the zone files with each configuration load.
    type Zones: fmt::Debug + Send + Sync + 'static;

    /// Parses the zones: `zone_texts` holds each configured zone's text and path, in
    /// configuration order; `identity` names this server (NSID, `id.server`).
    ///
    /// # Errors
    ///
    /// Every problem in every zone, with its path in the configuration.
    fn load_zones(
        config: &Config,
        zone_texts: &[(String, PathBuf)],
        identity: &str,
    ) -> Result<Self::Zones, Vec<Problem>>;

    /// Prepares what queries read for one routing table. Called on every published snapshot, so
    /// it works per distinct ranking, never per geo cell. `previous` is what was prepared for
    /// the table being replaced, under the same configuration: what it prepared for a service
    /// whose rankings did not change ([`RoutingTable::same_rankings`]) may be kept.
    fn prepare(
        zones: &Self::Zones,
        config: &Config,
        routing: &RoutingTable,
        previous: Option<(&Self, &RoutingTable)>,
    ) -> Self;

    /// Number of zones and of names with records, for the "snapshot published" log line.
    fn summary(zones: &Self::Zones) -> (usize, usize);
}

/// Everything that comes from files: configuration, zones, geo database, base rankings.
#[derive(Debug)]
pub struct Loaded<P: Prepare> {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The configuration's text, as read.
    pub config_text: Arc<str>,
    /// The zone files as read: each one's path as written in the configuration, and its text.
    pub zone_files: Vec<(String, Arc<str>)>,
    /// The version of the configuration and its zone files (see [`version_of`]).
    pub config_version: String,
    /// The geo database.
    pub geo: Arc<GeoDb>,
    /// What the geo database and country table were read from (paths, sizes, times): a reload
    /// that finds the same keeps the indexed database instead of reading it again.
    pub geo_fingerprint: Option<String>,
    /// Rankings that depend on configuration and geo database only.
    pub base: Arc<BaseTable>,
    /// Zones and identity records, as the query side parsed them.
    pub zones: Arc<P::Zones>,
    /// Metric handles for this configuration's services and datacenters.
    pub counters: Counters,
}

/// Metric handles resolved for one configuration, so the query path counts without a lookup.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Answers by service and first datacenter.
    pub answers: AnswerCounters,
    /// Decisions that failed open, by service.
    pub failed_open: ServiceCounters,
}

/// Everything one query needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot<P: Prepare> {
    /// Increases by one with every published snapshot; logged on publish.
    pub generation: u64,
    /// What came from files.
    pub loaded: Arc<Loaded<P>>,
    /// The live state it was built from.
    pub live: Arc<LiveState>,
    /// Rankings with the live state applied.
    pub routing: RoutingTable,
    /// What queries read, prepared by the query side from `routing` (the records of every
    /// ranking).
    pub prepared: P,
    /// The user directory with its datacenters judged, when configured.
    pub directory: Option<DirectoryView>,
    /// When it was built (by the control plane's clock).
    pub built_at: SystemTime,
}

impl<P: Prepare> Loaded<P> {
    /// Reads and checks everything `source` names. CPU-heavy (it walks the geo database and
    /// ranks every cell): call it from `spawn_blocking` on a running server.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] listing every problem in the configuration, the zone files, the country
    /// table and the geo database.
    pub fn load(source: &Source) -> Result<Loaded<P>, ConfigError> {
        Loaded::reload(source, None)
    }

    /// As [`Loaded::load`], but keeps `previous`'s geo database when its files did not change
    /// (same path, size and modification time), so a configuration change does not read and
    /// index the database again.
    ///
    /// # Errors
    ///
    /// As [`Loaded::load`].
    pub fn reload(source: &Source, previous: Option<&Loaded<P>>) -> Result<Loaded<P>, ConfigError> {
        let text = source.read_config().map_err(|error| ConfigError {
            problems: vec![Problem::new(source.to_string(), error)],
        })?;
        let config = Config::from_yaml_str(&text)?;
        // A fleet's version runs with this instance's own instance-local sections.
        let config = match source.local() {
            Some(local) => config.with_local_sections(&local_config(local)?),
            None => config,
        };
        let mut problems = Vec::new();

        let countries = match &config.geo.countries {
            None => CountryTable::parse(COUNTRIES_CSV).map_err(|errors| (String::new(), errors)),
            Some(path) => match source.read(path) {
                Ok(bytes) => CountryTable::parse(&String::from_utf8_lossy(&bytes))
                    .map_err(|errors| (path.clone(), errors)),
                Err(error) => Err((path.clone(), vec![error.to_string()])),
            },
        }
        .unwrap_or_else(|(path, errors)| {
            for error in errors {
                problems.push(Problem::new(format!("geo.countries ({path})"), error));
            }
            CountryTable::default()
        });

        let geo_fingerprint = geo_fingerprint(source, &config);
        let kept = previous
            .filter(|p| p.geo_fingerprint.is_some() && p.geo_fingerprint == geo_fingerprint)
            .map(|p| Ok(p.geo.clone()));
        let geo = kept
            .unwrap_or_else(|| match source.read(&config.geo.database) {
                Ok(bytes) => GeoDb::build(bytes, &countries)
                    .map(Arc::new)
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            })
            .map_err(|error| {
                problems.push(Problem::new(
                    format!(
                        "geo.database ({})",
                        source.resolve(&config.geo.database).display()
                    ),
                    error,
                ));
            })
            .ok();

        let mut zone_texts = Vec::new();
        for (i, zone) in config.zones.iter().enumerate() {
            let path = source.resolve(&zone.file);
            match source.read(&zone.file) {
                Ok(bytes) => match String::from_utf8(bytes.into_owned()) {
                    Ok(text) => zone_texts.push((text, path)),
                    Err(_) => problems.push(Problem::new(
                        format!("zones[{i}].file ({})", path.display()),
                        "not UTF-8 text",
                    )),
                },
                Err(error) => problems.push(Problem::new(
                    format!("zones[{i}].file ({})", path.display()),
                    error,
                )),
            }
        }

        let Some(geo) = geo.filter(|_| problems.is_empty()) else {
            return Err(ConfigError { problems });
        };
        let identity = config.server.identity.clone().unwrap_or_else(host_name);
        let zones = P::load_zones(&config, &zone_texts, &identity)
            .map_err(|problems| ConfigError { problems })?;
        let base = BaseTable::build(&config, geo.clone());
        let zone_files: Vec<(String, Arc<str>)> = config
            .zones
            .iter()
            .zip(zone_texts)
            .map(|(zone, (text, _))| (zone.file.clone(), text.into()))
            .collect();
        Ok(Loaded {
            config_version: version_of(&text, &zone_files),
            zone_files,
            config_text: text.into(),
            config: Arc::new(config),
            geo,
            geo_fingerprint,
            base: Arc::new(base),
            zones: Arc::new(zones),
            counters: Counters::default(),
        })
    }
}

impl<P: Prepare> Loaded<P> {
    /// Whether `source` still holds exactly what this was read from: the same configuration
    /// text, the same zone file texts, and the same geo database and country table files. A
    /// reload then has nothing to build. Reads the files, parses nothing.
    pub fn unchanged(&self, source: &Source) -> bool {
        let same_text = source
            .read_config()
            .is_ok_and(|text| *text == *self.config_text);
        same_text
            && self.zone_files.iter().all(|(name, text)| {
                source
                    .read(name)
                    .is_ok_and(|bytes| *bytes == *text.as_bytes())
            })
            && self.geo_fingerprint.is_some()
            && self.geo_fingerprint == geo_fingerprint(source, &self.config)
    }
}

impl<P: Prepare> Snapshot<P> {
    /// Applies `live` (as of `now`) to `loaded`. `previous` is the snapshot being replaced, for
    /// the capacity watermarks' hysteresis. Cheap next to [`Loaded::load`]: it works on the
    /// distinct base rankings, not on every geo cell (except for `metric` services).
    pub fn assemble(
        loaded: Arc<Loaded<P>>,
        live: Arc<LiveState>,
        previous: Option<&Snapshot<P>>,
        generation: u64,
        now: SystemTime,
    ) -> Snapshot<P> {
        let states = live.dc_states(&loaded.config, now);
        let routing = RoutingTable::build_toggled(
            loaded.base.clone(),
            &loaded.config,
            &states,
            live.toggles,
            previous.map(|p| &p.routing),
        );
        // What was prepared for rankings that did not change is kept (same configuration only).
        let kept = previous
            .filter(|p| Arc::ptr_eq(&p.loaded, &loaded))
            .map(|p| (&p.prepared, &p.routing));
        let prepared = P::prepare(&loaded.zones, &loaded.config, &routing, kept);
        let directory = match (&live.directory, &loaded.config.directory) {
            (Some(directory), Some(settings)) => Some(DirectoryView::new(
                directory.clone(),
                &loaded.config,
                &states,
                settings.staleness_grace,
            )),
            _ => None,
        };
        Snapshot {
            generation,
            loaded,
            live,
            routing,
            prepared,
            directory,
            built_at: now,
        }
    }

    /// Loads `source` and assembles it with no live state (nothing reported, nothing drained):
    /// for `check-config`, tests and benchmarks.
    ///
    /// # Errors
    ///
    /// As [`Loaded::load`].
    pub fn load(source: &Source, generation: u64) -> Result<Snapshot<P>, ConfigError> {
        let loaded = Loaded::load(source)?;
        Ok(Snapshot::assemble(
            Arc::new(loaded),
            Arc::new(LiveState::default()),
            None,
            generation,
            SystemTime::now(),
        ))
    }
}

/// This instance's own configuration, read for its instance-local sections; its problems are
/// reported under its path, apart from the version's.
fn local_config(local: &Source) -> Result<Config, ConfigError> {
    let in_local = |problem: Problem| {
        Problem::new(
            format!("this instance's configuration {local}: {}", problem.path),
            problem.message,
        )
    };
    let text = local.read_config().map_err(|error| ConfigError {
        problems: vec![Problem::new(local.to_string(), error)],
    })?;
    Config::from_yaml_str(&text).map_err(|error| ConfigError {
        problems: error.problems.into_iter().map(in_local).collect(),
    })
}

/// What the geo database and country table of `config` are read from (paths, sizes, times).
fn geo_fingerprint(source: &Source, config: &Config) -> Option<String> {
    source.fingerprint(&config.geo.database).map(|db| {
        let table = config.geo.countries.as_ref().map_or_else(
            || Some("shipped".to_owned()),
            |path| source.fingerprint(path),
        );
        format!("{db} / {table:?}")
    })
}

/// The version of a configuration and its zone files: the hex SHA-256 of the configuration
/// text followed, for each zone file in configuration order, by a NUL, its path as written, a
/// NUL and its text. A zone edit therefore makes a new version, as a configuration edit does.
fn version_of(text: &str, zone_files: &[(String, Arc<str>)]) -> String {
    let mut hash = Sha256::new();
    hash.update(text.as_bytes());
    for (name, text) in zone_files {
        hash.update(b"\0");
        hash.update(name.as_bytes());
        hash.update(b"\0");
        hash.update(text.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The host's name, for the default NSID / `id.server` identity.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "meridian".to_owned())
}
