//! Building a snapshot: configuration, zones and geo database, read and checked together.

use std::sync::Arc;

use crate::config::{COUNTRIES_CSV, Config, ConfigError, Problem, Source};
use crate::dns::Catalog;
use crate::geo::{CountryTable, GeoDb};
use crate::routing::RoutingTable;

/// Everything one query needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every published snapshot; logged on publish.
    pub generation: u64,
    /// The validated configuration it was built from.
    pub config: Config,
    /// The geo database.
    pub geo: Arc<GeoDb>,
    /// Every routing decision, precomputed per geo cell.
    pub routing: RoutingTable,
    /// Zones and prepared answers.
    pub catalog: Catalog,
}

impl Snapshot {
    /// Reads and checks everything `source` names and builds a snapshot. CPU-heavy (it walks the
    /// geo database and ranks every cell): call it from `spawn_blocking` on a running server.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] listing every problem in the configuration, the zone files, the country
    /// table and the geo database.
    pub fn load(source: &Source, generation: u64) -> Result<Snapshot, ConfigError> {
        let config = Config::load(source)?;
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

        let geo = match source.read(&config.geo.database) {
            Ok(bytes) => GeoDb::build(bytes, &countries).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        }
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
        let routing = RoutingTable::build(&config, geo.locations());
        let identity = config.server.identity.clone().unwrap_or_else(host_name);
        let catalog = Catalog::build(&config, &routing, &zone_texts, &identity)
            .map_err(|problems| ConfigError { problems })?;
        Ok(Snapshot {
            generation,
            config,
            geo: Arc::new(geo),
            routing,
            catalog,
        })
    }
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
