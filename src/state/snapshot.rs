//! Building snapshots: [`Loaded`] is what a reload reads from files; a [`Snapshot`] adds the
//! live state of every datacenter to it.

use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::config::{COUNTRIES_CSV, Config, ConfigError, Problem, Source};
use crate::dns::{Answers, Catalog};
use crate::geo::{CountryTable, GeoDb};
use crate::metrics::{AnswerCounters, ServiceCounters};
use crate::routing::{BaseTable, DcState, RoutingTable};

use super::directory::DirectoryView;
use super::live::LiveState;

/// Everything that comes from files: configuration, zones, geo database, base rankings.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The configuration's text, as read.
    pub config_text: Arc<str>,
    /// The configuration's version: the hex SHA-256 of its text.
    pub config_version: String,
    /// The geo database.
    pub geo: Arc<GeoDb>,
    /// What the geo database and country table were read from (paths, sizes, times): a reload
    /// that finds the same keeps the indexed database instead of reading it again.
    pub geo_fingerprint: Option<String>,
    /// Rankings that depend on configuration and geo database only.
    pub base: Arc<BaseTable>,
    /// Zones and identity records.
    pub catalog: Arc<Catalog>,
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
pub struct Snapshot {
    /// Increases by one with every published snapshot; logged on publish.
    pub generation: u64,
    /// What came from files.
    pub loaded: Arc<Loaded>,
    /// The live state it was built from.
    pub live: Arc<LiveState>,
    /// Routing's view of each datacenter when it was built, by `DcId`.
    pub states: Vec<DcState>,
    /// Rankings with the live state applied.
    pub routing: RoutingTable,
    /// Prepared records of every ranking.
    pub answers: Answers,
    /// The user directory with its datacenters judged, when configured.
    pub directory: Option<DirectoryView>,
    /// When it was built (by the control plane's clock).
    pub built_at: SystemTime,
}

impl Loaded {
    /// Reads and checks everything `source` names. CPU-heavy (it walks the geo database and
    /// ranks every cell): call it from `spawn_blocking` on a running server.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] listing every problem in the configuration, the zone files, the country
    /// table and the geo database.
    pub fn load(source: &Source) -> Result<Loaded, ConfigError> {
        Loaded::reload(source, None)
    }

    /// As [`Loaded::load`], but keeps `previous`'s geo database when its files did not change
    /// (same path, size and modification time), so a configuration change does not read and
    /// index the database again.
    ///
    /// # Errors
    ///
    /// As [`Loaded::load`].
    pub fn reload(source: &Source, previous: Option<&Loaded>) -> Result<Loaded, ConfigError> {
        let text = source.read_config().map_err(|error| ConfigError {
            problems: vec![Problem::new(source.to_string(), error)],
        })?;
        let config = Config::from_yaml_str(&text)?;
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

        let geo_fingerprint = source.fingerprint(&config.geo.database).map(|db| {
            let table = config.geo.countries.as_ref().map_or_else(
                || Some("shipped".to_owned()),
                |path| source.fingerprint(path),
            );
            format!("{db} / {table:?}")
        });
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
        let catalog = Catalog::build(&config, &zone_texts, &identity)
            .map_err(|problems| ConfigError { problems })?;
        let base = BaseTable::build(&config, geo.clone());
        Ok(Loaded {
            config_version: version_of(&text),
            config_text: text.into(),
            config: Arc::new(config),
            geo,
            geo_fingerprint,
            base: Arc::new(base),
            catalog: Arc::new(catalog),
            counters: Counters::default(),
        })
    }
}

impl Snapshot {
    /// Applies `live` (as of `now`) to `loaded`. `previous` is the snapshot being replaced, for
    /// the capacity watermarks' hysteresis. Cheap next to [`Loaded::load`]: it works on the
    /// distinct base rankings, not on every geo cell (except for `metric` services).
    pub fn assemble(
        loaded: Arc<Loaded>,
        live: Arc<LiveState>,
        previous: Option<&Snapshot>,
        generation: u64,
        now: SystemTime,
    ) -> Snapshot {
        let states = live.dc_states(&loaded.config, now);
        let routing = RoutingTable::build(
            loaded.base.clone(),
            &loaded.config,
            &states,
            previous.map(|p| &p.routing),
        );
        let answers = Answers::build(
            &loaded.config,
            &routing,
            previous
                .filter(|p| Arc::ptr_eq(&p.loaded, &loaded))
                .map(|p| (&p.answers, &p.routing)),
        );
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
            states,
            routing,
            answers,
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
    pub fn load(source: &Source, generation: u64) -> Result<Snapshot, ConfigError> {
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

/// The version of a configuration text: its hex SHA-256.
fn version_of(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
