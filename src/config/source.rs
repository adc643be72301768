//! Where a configuration and the files it names come from: a directory on disk, or the example
//! compiled into the binary.
//!
//! The embedded example is what `meridian serve` runs with no `--config`, so a newcomer needs no
//! file, download or working directory to start a complete server. This file only reads bytes;
//! it does not parse them.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

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
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Example => f.write_str("the embedded example (zones/example.yaml)"),
        }
    }
}
