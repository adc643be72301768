//! Reading the YAML text into the serde mirror, so that one mistake gives one problem.
//!
//! serde stops at the first value it cannot read, and serde_yaml reports a duplicate struct field
//! at the start of its mapping (for the top level: "line 1 column 1") while it silently keeps the
//! last of two equal map keys. So the text is read in three steps:
//!
//! 1. [`scan_keys`] walks the YAML events once (saphyr-parser, which gives every key's position)
//!    and reports each duplicate key where it is, with where it was first defined.
//! 2. The whole file is deserialized into [`RawConfig`]; for a correct file this is all.
//! 3. If that fails, each top-level section is read on its own, and each datacenter and service
//!    of a section that fails on its own, so every unreadable part is reported once and the rest
//!    is still validated. What could not be read is recorded in [`Damaged`], so that validation
//!    does not report its consequences again (a datacenter with a typo in its latitude is not
//!    also an "unknown datacenter" in every pool that names it).
//!
//! This file does no validation of values: that is `Config::from_raw`'s job.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use indexmap::IndexMap;
use saphyr_parser::{Event, Parser};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::Problem;
use super::raw::RawConfig;

/// The top-level sections, in the order they are documented.
pub(super) const SECTIONS: &[&str] = &[
    "server",
    "geo",
    "zones",
    "datacenters",
    "services",
    "control",
    "directory",
    "state",
];

/// What the file holds but could not be read; its problems are reported already.
#[derive(Debug, Default)]
pub(super) struct Damaged {
    /// Top-level sections present in the file whose value could not be read.
    pub(super) sections: Vec<&'static str>,
    /// Datacenters declared in the file whose entry could not be read.
    pub(super) datacenters: Vec<String>,
}

impl Damaged {
    /// Whether the section `name` is present but unreadable.
    pub(super) fn section(&self, name: &str) -> bool {
        self.sections.contains(&name)
    }
}

/// Reads `text` into the serde mirror, adding a problem for every part it cannot read.
/// `None` when nothing can be read: a syntax error, or a file that is not a mapping.
pub(super) fn parse(text: &str, problems: &mut Vec<Problem>) -> Option<(RawConfig, Damaged)> {
    let keys = scan_keys(text);
    let found_duplicates = !keys.duplicates.is_empty();
    problems.extend(keys.duplicates);
    // A duplicate found by the scan is reported there, with its right position; serde's report of
    // the same mistake would only add a wrong one.
    let mut push = |problems: &mut Vec<Problem>, error: &serde_yaml::Error| {
        let text = error.to_string();
        if !(found_duplicates
            && (text.contains("duplicate field") || text.contains("duplicate entry")))
        {
            problems.push(serde_problem(error));
        }
    };

    let whole_error = match serde_yaml::from_str::<RawConfig>(text) {
        Ok(raw) => return Some((raw, Damaged::default())),
        Err(error) => error,
    };
    // IgnoredAny accepts any well-formed YAML, so an error here is a syntax error.
    if let Err(error) = serde_yaml::from_str::<IgnoredAny>(text) {
        push(problems, &error);
        return None;
    }
    let top = match serde_yaml::from_str::<Option<IndexMap<String, IgnoredAny>>>(text) {
        Ok(top) => top.unwrap_or_default(),
        Err(_) => {
            problems.push(Problem::new(
                location_path(None, whole_error.location()),
                format!(
                    "the configuration must be a mapping of sections ({})",
                    SECTIONS.join(", ")
                ),
            ));
            return None;
        }
    };
    for name in top.keys().filter(|name| !SECTIONS.contains(&name.as_str())) {
        let line = keys.top_level.get(name).copied();
        problems.push(Problem::new(
            match line {
                Some(line) => format!("{name} (line {line})"),
                None => name.clone(),
            },
            format!("unknown section (expected one of {})", SECTIONS.join(", ")),
        ));
    }

    let mut damaged = Damaged::default();
    let mut raw = RawConfig::default();
    macro_rules! section {
        ($field:ident) => {
            match read_at(text, &[stringify!($field)]) {
                Ok(value) => value,
                Err(error) => {
                    push(problems, &error);
                    damaged.sections.push(stringify!($field));
                    None
                }
            }
        };
    }
    raw.server = section!(server).unwrap_or_default();
    raw.geo = section!(geo);
    raw.zones = section!(zones);
    raw.datacenters = read_entries(text, "datacenters", &mut damaged, problems, &mut push);
    raw.services =
        read_entries(text, "services", &mut damaged, problems, &mut push).unwrap_or_default();
    raw.control = section!(control).unwrap_or_default();
    raw.directory = section!(directory);
    raw.state = section!(state);
    Some((raw, damaged))
}

/// Reads a mapping section (`datacenters`, `services`) whole, or else entry by entry, so one bad
/// entry does not hide the others.
fn read_entries<T: DeserializeOwned>(
    text: &str,
    section: &'static str,
    damaged: &mut Damaged,
    problems: &mut Vec<Problem>,
    push: &mut impl FnMut(&mut Vec<Problem>, &serde_yaml::Error),
) -> Option<IndexMap<String, T>> {
    if let Ok(entries) = read_at(text, &[section]) {
        return entries;
    }
    let names: IndexMap<String, IgnoredAny> = match read_at(text, &[section]) {
        Ok(names) => names.unwrap_or_default(),
        Err(error) => {
            push(problems, &error);
            damaged.sections.push(section);
            return None;
        }
    };
    let mut entries = IndexMap::new();
    for name in names.keys() {
        match read_at::<T>(text, &[section, name]) {
            Ok(Some(entry)) => {
                entries.insert(name.clone(), entry);
            }
            Ok(None) => {}
            Err(error) => {
                push(problems, &error);
                if section == "datacenters" {
                    damaged.datacenters.push(name.clone());
                }
            }
        }
    }
    Some(entries)
}

/// Deserializes the value at `path` (mapping keys from the top), ignoring everything else;
/// `None` when it is absent or null. serde_yaml still reports the full path and position.
fn read_at<T: DeserializeOwned>(text: &str, path: &[&str]) -> Result<Option<T>, serde_yaml::Error> {
    At::<T> {
        path,
        value: PhantomData,
    }
    .deserialize(serde_yaml::Deserializer::from_str(text))
}

/// A seed that walks down `path` and deserializes what it finds there as `T`.
struct At<'p, T> {
    path: &'p [&'p str],
    value: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for At<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        if self.path.is_empty() {
            <Option<T> as serde::Deserialize>::deserialize(deserializer)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for At<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Ok(None);
        };
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == *first {
                found = map.next_value_seed(At::<T> {
                    path: rest,
                    value: PhantomData,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// What [`scan_keys`] finds.
#[derive(Debug, Default)]
pub(super) struct Keys {
    /// Every key defined twice in one mapping, at its second definition.
    pub(super) duplicates: Vec<Problem>,
    /// The line of each top-level key.
    pub(super) top_level: HashMap<String, usize>,
}

/// One open mapping or sequence while scanning.
enum Frame {
    Map {
        path: String,
        /// Keys seen so far, with their line.
        seen: HashMap<String, usize>,
        /// `None` while a key is expected; `Some(key)` while its value is (`Some(None)` after a
        /// key that is not a plain scalar).
        key: Option<Option<String>>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

/// Walks the YAML events of `text` and finds every duplicate key (YAML 1.2 §3.2.1.1: keys of a
/// mapping are unique), with its path and position. Stops quietly at a syntax error, which the
/// deserializer reports.
pub(super) fn scan_keys(text: &str) -> Keys {
    let mut keys = Keys::default();
    let mut stack: Vec<Frame> = Vec::new();
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        let (line, column) = (span.start.line(), span.start.col() + 1);
        match event {
            Event::Scalar(value, ..) => {
                let is_top = stack.len() == 1;
                if let Some(Frame::Map { path, seen, key }) = stack.last_mut()
                    && key.is_none()
                {
                    let value = value.into_owned();
                    if let Some(first) = seen.get(&value) {
                        keys.duplicates.push(Problem::new(
                            format!("{} (line {line} column {column})", join(path, &value)),
                            format!("duplicate key, first defined on line {first}"),
                        ));
                    } else {
                        seen.insert(value.clone(), line);
                    }
                    if is_top {
                        keys.top_level.entry(value.clone()).or_insert(line);
                    }
                    *key = Some(Some(value));
                } else {
                    child_path(&mut stack);
                }
            }
            Event::Alias(_) => {
                child_path(&mut stack);
            }
            Event::MappingStart(..) => {
                let path = child_path(&mut stack);
                stack.push(Frame::Map {
                    path,
                    seen: HashMap::new(),
                    key: None,
                });
            }
            Event::SequenceStart(..) => {
                let path = child_path(&mut stack);
                stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    keys
}

/// The path of the node that starts now, advancing its parent past it.
fn child_path(stack: &mut [Frame]) -> String {
    match stack.last_mut() {
        None => String::new(),
        Some(Frame::Seq { path, next }) => {
            *next += 1;
            format!("{path}[{}]", *next - 1)
        }
        Some(Frame::Map { path, key, .. }) => match key.take() {
            // A value: the next node is a key again.
            Some(name) => join(path, name.as_deref().unwrap_or("?")),
            // A key that is itself a collection; the node after it is its value.
            None => {
                *key = Some(None);
                join(path, "?")
            }
        },
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Turns a serde_yaml error into a problem that names the path and the position once:
/// `datacenters.us-east.latitude (line 23 column 25): invalid type: string "north", expected a
/// number`.
pub(super) fn serde_problem(error: &serde_yaml::Error) -> Problem {
    let mut message = error.to_string();
    if let Some(location) = error.location() {
        message = message.replace(
            &format!(" at line {} column {}", location.line(), location.column()),
            "",
        );
    }
    // serde_yaml writes `path: message`; a path has no spaces, a message's first words do.
    let (path, message) = match message.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            (Some(path.to_owned()), rest.to_owned())
        }
        _ => (None, message),
    };
    Problem::new(
        location_path(path.as_deref(), error.location()),
        plain_types(&message),
    )
}

fn location_path(path: Option<&str>, location: Option<serde_yaml::Location>) -> String {
    match (path, location) {
        (Some(path), Some(at)) => format!("{path} (line {} column {})", at.line(), at.column()),
        (Some(path), None) => path.to_owned(),
        (None, Some(at)) => format!("line {} column {}", at.line(), at.column()),
        (None, None) => "configuration".to_owned(),
    }
}

/// Replaces Rust type names in serde's messages with what a reader of YAML expects.
fn plain_types(message: &str) -> String {
    const TYPES: &[(&str, &str)] = &[
        ("expected f64", "expected a number"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of at least 0"),
        ("expected usize", "expected a whole number of at least 0"),
    ];
    let mut message = message.to_owned();
    for (rust, plain) in TYPES {
        if message.ends_with(rust) {
            message = format!("{}{plain}", &message[..message.len() - rust.len()]);
        }
    }
    message
}
