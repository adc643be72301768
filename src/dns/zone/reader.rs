//! Reads a master file (RFC 1035 §5) into records: directives, owners, TTLs and classes, with
//! every problem named by file, line and the offending text.
//!
//! Policy for the directives:
//! - `$ORIGIN <name>` sets the origin for the names that follow (relative to the current one
//!   unless it ends in a dot);
//! - `$TTL <ttl>` sets the TTL of records that give none (RFC 2308 §4); without it, a record
//!   without a TTL takes the last one stated (RFC 1035 §5.1), and the first record must have one;
//! - `$INCLUDE <file> [<origin>]` reads another file, relative to the including file's
//!   directory, at most [`MAX_INCLUDE_DEPTH`] deep (so a file that includes itself is an
//!   error, not a hang); the including file's origin is unchanged after it (RFC 1035 §5.1);
//! - `$GENERATE` and any other directive are errors.
//!
//! Only class IN is served. This file turns text into records and does not judge how records
//! fit together (`mod.rs` does).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_proto::rr::Name;

use super::lexer::{Entry, Lexer, Token, show};
use super::rdata::{encode, labels, to_name, ttl, type_code};

/// How deep `$INCLUDE`s may nest.
pub(super) const MAX_INCLUDE_DEPTH: usize = 8;

/// Where a record or problem was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct At {
    pub(super) file: Arc<Path>,
    pub(super) line: u32,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0 stands for the whole file (a missing SOA has no line).
        match self.line {
            0 => write!(f, "{}", self.file.display()),
            line => write!(f, "{}:{line}", self.file.display()),
        }
    }
}

/// One record as written: the owner, TTL, type and the data in wire form.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) owner: Name,
    pub(super) ttl: u32,
    pub(super) code: u16,
    pub(super) wire: Vec<u8>,
    pub(super) at: At,
}

/// What reading a file found: its records and its problems, each in file order.
#[derive(Debug, Default)]
pub(super) struct Read {
    pub(super) records: Vec<Parsed>,
    pub(super) problems: Vec<(At, String)>,
}

/// Reads `text` (the file at `path`) with `origin` as the first origin; `include` reads the
/// files that `$INCLUDE` names.
pub(super) fn read(
    text: &[u8],
    path: &Path,
    origin: &Name,
    include: &mut dyn FnMut(&Path) -> io::Result<Vec<u8>>,
) -> Read {
    let mut reader = Reader {
        include,
        default_ttl: None,
        last_ttl: None,
        last_owner: None,
        res: Read::default(),
    };
    reader.file(text, Arc::from(path), origin.clone(), 0);
    reader.res
}

struct Reader<'i> {
    include: &'i mut dyn FnMut(&Path) -> io::Result<Vec<u8>>,
    /// `$TTL`.
    default_ttl: Option<u32>,
    /// The TTL of the last record that stated one.
    last_ttl: Option<u32>,
    /// The owner a record starting with blank space takes.
    last_owner: Option<Name>,
    res: Read,
}

impl Reader<'_> {
    fn file(&mut self, text: &[u8], file: Arc<Path>, mut origin: Name, depth: usize) {
        let mut lexer = Lexer::new(text);
        while let Some(entry) = lexer.next_entry() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    let at = At {
                        file: file.clone(),
                        line: error.line,
                    };
                    self.res.problems.push((at, error.message));
                    continue;
                }
            };
            let at = At {
                file: file.clone(),
                line: entry.line,
            };
            let directive = entry.tokens[0].text.first() == Some(&b'$') && !entry.blank_owner;
            let outcome = if directive {
                self.directive(&entry, &file, &mut origin, depth)
            } else {
                self.record(&entry, &origin, &at)
            };
            if let Err((line, message)) = outcome {
                let at = At {
                    file: file.clone(),
                    line: line.unwrap_or(entry.line),
                };
                self.res.problems.push((at, message));
            }
        }
    }

    fn directive(
        &mut self,
        entry: &Entry,
        file: &Arc<Path>,
        origin: &mut Name,
        depth: usize,
    ) -> Result<(), (Option<u32>, String)> {
        let tokens = &entry.tokens;
        let name = String::from_utf8_lossy(&tokens[0].text).to_ascii_uppercase();
        let args = &tokens[1..];
        let here = |message: String| (None, message);
        match name.as_str() {
            "$ORIGIN" => {
                let [arg] = args else {
                    return Err(here("$ORIGIN takes one domain name".to_owned()));
                };
                *origin = to_name(&labels(arg, origin).map_err(here)?);
            }
            "$TTL" => {
                let [arg] = args else {
                    return Err(here("$TTL takes one TTL".to_owned()));
                };
                self.default_ttl = Some(ttl(&String::from_utf8_lossy(&arg.text)).map_err(here)?);
            }
            "$INCLUDE" => {
                let (target, include_origin) = match args {
                    [target] => (target, origin.clone()),
                    [target, name] => (target, to_name(&labels(name, origin).map_err(here)?)),
                    _ => {
                        return Err(here(
                            "$INCLUDE takes a file name and an optional origin".to_owned(),
                        ));
                    }
                };
                let relative = PathBuf::from(String::from_utf8_lossy(&target.text).into_owned());
                let path = file.parent().unwrap_or(Path::new(".")).join(relative);
                if depth + 1 > MAX_INCLUDE_DEPTH {
                    return Err(here(format!(
                        "$INCLUDE {} nests more than {MAX_INCLUDE_DEPTH} files deep (does a file include itself?)",
                        path.display()
                    )));
                }
                let text = (self.include)(&path)
                    .map_err(|error| here(format!("$INCLUDE {}: {error}", path.display())))?;
                // RFC 1035 §5.1: the included file starts with the given origin, and ours is
                // unchanged after it (`origin` is not passed down by reference).
                self.file(&text, Arc::from(path.as_path()), include_origin, depth + 1);
            }
            _ => {
                return Err(here(format!(
                    "unknown directive \"{}\" (meridian reads $ORIGIN, $TTL and $INCLUDE)",
                    show(&tokens[0].text)
                )));
            }
        }
        Ok(())
    }

    fn record(
        &mut self,
        entry: &Entry,
        origin: &Name,
        at: &At,
    ) -> Result<(), (Option<u32>, String)> {
        let here = |message: String| (None, message);
        let mut tokens: &[Token] = &entry.tokens;
        let owner = if entry.blank_owner {
            self.last_owner.clone().ok_or_else(|| {
                here("the first record has no owner name (the line starts with a space)".to_owned())
            })?
        } else {
            let owner = to_name(&labels(&tokens[0], origin).map_err(here)?);
            tokens = &tokens[1..];
            owner
        };
        self.last_owner = Some(owner.clone());
        // RFC 1035 §5.1: the TTL and the class are optional and come in either order.
        let mut record_ttl = None;
        let mut class_seen = false;
        while let Some(token) = tokens.first().filter(|t| !t.quoted) {
            let text = String::from_utf8_lossy(&token.text);
            if !class_seen && is_class(&text) {
                if !text.eq_ignore_ascii_case("IN") && !text.eq_ignore_ascii_case("CLASS1") {
                    return Err(here(format!(
                        "class \"{text}\": meridian serves class IN only"
                    )));
                }
                class_seen = true;
            } else if record_ttl.is_none() && token.text.first().is_some_and(u8::is_ascii_digit) {
                record_ttl = Some(ttl(&text).map_err(here)?);
            } else {
                break;
            }
            tokens = &tokens[1..];
        }
        let Some(type_token) = tokens.first() else {
            return Err(here("missing record type".to_owned()));
        };
        let code = type_code(&type_token.text).filter(|_| !type_token.quoted).ok_or_else(|| {
            here(format!(
                "\"{}\" is not a record type meridian knows (write an unknown type as TYPE<number> with \\# data, RFC 3597 §5)",
                show(&type_token.text)
            ))
        })?;
        let wire = encode(code, &tokens[1..], origin)?;
        let ttl = match record_ttl {
            Some(ttl) => {
                self.last_ttl = Some(ttl);
                ttl
            }
            None => self.default_ttl.or(self.last_ttl).ok_or_else(|| {
                here("no TTL: give the record one, or put $TTL before it".to_owned())
            })?,
        };
        self.res.records.push(Parsed {
            owner,
            ttl,
            code,
            wire,
            at: at.clone(),
        });
        Ok(())
    }
}

/// Whether `text` is a class mnemonic (RFC 1035 §3.2.4) or `CLASS<number>` (RFC 3597 §5).
fn is_class(text: &str) -> bool {
    ["IN", "CS", "CH", "HS", "NONE", "ANY"]
        .iter()
        .any(|class| class.eq_ignore_ascii_case(text))
        || text
            .get(..5)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("CLASS"))
            && text[5..].bytes().all(|b| b.is_ascii_digit())
            && text.len() > 5
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Reads `files["main.zone"]` for example.com, with the other entries includable.
    fn read_files(files: &[(&str, &str)]) -> Read {
        let files: HashMap<PathBuf, Vec<u8>> = files
            .iter()
            .map(|(name, text)| (Path::new("/z").join(name), text.as_bytes().to_vec()))
            .collect();
        let mut include = |path: &Path| {
            files
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
        };
        let origin = Name::from_ascii("example.com.").unwrap();
        read(
            &files[Path::new("/z/main.zone")],
            Path::new("/z/main.zone"),
            &origin,
            &mut include,
        )
    }

    /// Records as `owner ttl type-code line`, problems as `file:line: message`.
    fn summary(read: &Read) -> (Vec<String>, Vec<String>) {
        (
            read.records
                .iter()
                .map(|r| format!("{} {} {} {}", r.owner, r.ttl, r.code, r.at))
                .collect(),
            read.problems
                .iter()
                .map(|(at, message)| format!("{at}: {message}"))
                .collect(),
        )
    }

    #[test]
    fn owners_ttls_and_classes_are_inherited() {
        let read = read_files(&[(
            "main.zone",
            "@ 300 IN SOA ns hm 1 2 3 4 5\n  NS ns\nns IN 60 A 192.0.2.1\n  AAAA ::1\n$TTL 90\nx TXT a\n$ORIGIN sub\ny A 192.0.2.2\n",
        )]);
        let (records, problems) = summary(&read);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            records,
            [
                "example.com. 300 6 /z/main.zone:1",
                "example.com. 300 2 /z/main.zone:2",
                "ns.example.com. 60 1 /z/main.zone:3",
                "ns.example.com. 60 28 /z/main.zone:4",
                "x.example.com. 90 16 /z/main.zone:6",
                "y.sub.example.com. 90 1 /z/main.zone:8",
            ]
        );
    }

    #[test]
    fn includes_keep_the_parent_origin_and_name_their_file() {
        let read = read_files(&[
            (
                "main.zone",
                "$TTL 60\n$INCLUDE inc.zone sub\na A 192.0.2.1\n$INCLUDE self.zone\n$INCLUDE missing.zone\n",
            ),
            ("inc.zone", "b A 192.0.2.2\nc A 192.0.2\n"),
            ("self.zone", "$INCLUDE self.zone\n"),
        ]);
        let (records, problems) = summary(&read);
        assert_eq!(
            records,
            [
                "b.sub.example.com. 60 1 /z/inc.zone:1",
                "a.example.com. 60 1 /z/main.zone:3",
            ]
        );
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert_eq!(
            problems[0],
            "/z/inc.zone:2: \"192.0.2\" is not an IPv4 address"
        );
        assert!(
            problems[1].starts_with("/z/self.zone:1: $INCLUDE /z/self.zone nests more than 8"),
            "{problems:#?}"
        );
        assert!(
            problems[2].starts_with("/z/main.zone:5: $INCLUDE /z/missing.zone: "),
            "{problems:#?}"
        );
    }

    #[test]
    fn problems_name_the_line_and_text() {
        let read = read_files(&[(
            "main.zone",
            "a A 192.0.2.1\n$TTL 60\nb CH TXT x\nc BOGUS x\nd TXT \"\\300\"\ne MX ( 10\n  bad..name. )\n$GENERATE 1-2 x A 1.2.3.$\n",
        )]);
        let (records, problems) = summary(&read);
        assert!(records.is_empty(), "{records:?}");
        assert_eq!(
            problems,
            [
                "/z/main.zone:1: no TTL: give the record one, or put $TTL before it",
                "/z/main.zone:3: class \"CH\": meridian serves class IN only",
                "/z/main.zone:4: \"BOGUS\" is not a record type meridian knows (write an unknown type as TYPE<number> with \\# data, RFC 3597 §5)",
                "/z/main.zone:5: \"\\300\" is not an octet: \\DDD is a decimal value from 000 to 255",
                "/z/main.zone:7: \"bad..name.\" is not a domain name: empty label",
                "/z/main.zone:8: unknown directive \"$GENERATE\" (meridian reads $ORIGIN, $TTL and $INCLUDE)",
            ]
        );
    }

    #[test]
    fn escaped_owners_keep_their_octets() {
        let read = read_files(&[(
            "main.zone",
            "$TTL 1\na\\065b A 192.0.2.1\na\\.b\\032c TXT x\n",
        )]);
        assert!(read.problems.is_empty(), "{:?}", read.problems);
        let first: Vec<&[u8]> = read.records[0].owner.iter().collect();
        assert_eq!(first, [&b"aAb"[..], b"example", b"com"]);
        let second: Vec<&[u8]> = read.records[1].owner.iter().collect();
        assert_eq!(second, [&b"a.b c"[..], b"example", b"com"]);
    }
}
