//! Where a configuration and the files it names come from: a directory on disk, the example
//! compiled into the binary, or a version a fleet published (its text and zone files from etcd,
//! every other file from this instance's own directory).
//!
//! The embedded example is what `meridian serve` runs with no `--config`, so a newcomer needs no
//! file, download or working directory to start a complete server. This file only reads bytes;
//! it does not parse them.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The shipped example configuration, as compiled into the binary.
pub const EXAMPLE_CONFIG: &str = include_str!("../../zones/example.yaml");

/// Files the embedded example refers to, by the relative path written in `zones/example.yaml`.
const EXAMPLE_FILES: &[(&str, &[u8])] = &[
    (
        "example.com.zone",
        include_bytes!("../../zones/example.com.zone"),
    ),
    (
        "../geodata/geo-whois-asn-country.mmdb",
        include_bytes!("../../geodata/geo-whois-asn-country.mmdb"),
    ),
    ("../geodata/countries.csv", COUNTRIES_CSV.as_bytes()),
];

/// The shipped country table, owned by `geo`; named here because the example embeds it.
pub use crate::geo::COUNTRIES_CSV;

/// A configuration file and the directory its relative paths are resolved against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A YAML file on disk; relative paths in it are relative to its directory.
    File(PathBuf),
    /// The example compiled into the binary (`zones/example.yaml` and the files it names).
    Example,
    /// A configuration version published to the fleet: its text and zone files as published,
    /// and this instance's own source for the rest (the geo database and country table, files a
    /// zone `$INCLUDE`s, and the instance-local sections, see [`Config::with_local_sections`]).
    ///
    /// [`Config::with_local_sections`]: super::Config::with_local_sections
    Published(Arc<Published>),
}

/// A configuration version as a fleet member received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The version it was published as (the hex SHA-256 of its text and zone files).
    pub version: String,
    /// The configuration text.
    pub text: String,
    /// The zone files, by the path written in the configuration, with their text.
    pub files: Vec<(String, String)>,
    /// This instance's own configuration, which names its local files and sections.
    pub local: Source,
}

impl Source {
    /// Reads the configuration text.
    ///
    /// # Errors
    ///
    /// The I/O error of reading the file.
    pub fn read_config(&self) -> io::Result<String> {
        match self {
            Source::File(path) => std::fs::read_to_string(path),
            Source::Example => Ok(EXAMPLE_CONFIG.to_owned()),
            Source::Published(published) => Ok(published.text.clone()),
        }
    }

    /// This instance's own source, when this is a published version: its instance-local
    /// sections come from there.
    pub fn local(&self) -> Option<&Source> {
        match self {
            Source::Published(published) => Some(&published.local),
            _ => None,
        }
    }

    /// Reads a file named in the configuration, `relative` to the configuration's directory
    /// (absolute paths are used as they are).
    ///
    /// # Errors
    ///
    /// The I/O error of reading the file, or `NotFound` for a path the embedded example lacks.
    pub fn read(&self, relative: &str) -> io::Result<Cow<'static, [u8]>> {
        match self {
            Source::File(_) => std::fs::read(self.resolve(relative)).map(Cow::Owned),
            Source::Example => EXAMPLE_FILES
                .iter()
                .find(|(name, _)| *name == relative)
                .map(|(_, bytes)| Cow::Borrowed(*bytes))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "not part of the embedded example")
                }),
            Source::Published(published) => match published.file(relative) {
                Some(text) => Ok(Cow::Owned(text.as_bytes().to_vec())),
                None => published.local.read(relative),
            },
        }
    }

    /// What identifies the current content of a file named in the configuration without
    /// reading it: path, length and modification time (the name, for the embedded example).
    /// `None` when the file cannot be examined.
    pub fn fingerprint(&self, relative: &str) -> Option<String> {
        match self {
            Source::File(_) => {
                let path = self.resolve(relative);
                let metadata = std::fs::metadata(&path).ok()?;
                let modified = metadata.modified().ok()?;
                Some(format!(
                    "{} {} {modified:?}",
                    path.display(),
                    metadata.len()
                ))
            }
            Source::Example => Some(format!("embedded {relative}")),
            Source::Published(published) => match published.file(relative) {
                Some(_) => Some(format!("published {} {relative}", published.version)),
                None => published.local.fingerprint(relative),
            },
        }
    }

    /// The path a relative file name resolves to, for messages and for `$INCLUDE` in zone files.
    pub fn resolve(&self, relative: &str) -> PathBuf {
        match self {
            Source::File(path) => path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(relative),
            Source::Example => Path::new("zones").join(relative),
            Source::Published(published) => published.local.resolve(relative),
        }
    }
}

impl Published {
    /// The published file named `relative`, if the version carries it.
    fn file(&self, relative: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(name, _)| name == relative)
            .map(|(_, text)| text.as_str())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Example => f.write_str("the embedded example (zones/example.yaml)"),
            Source::Published(published) => write!(
                f,
                "the fleet's configuration version {} (local files from {})",
                short_version(&published.version),
                published.local
            ),
        }
    }
}

/// The first 12 hex digits of a version, as logs and messages name it.
pub fn short_version(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}
