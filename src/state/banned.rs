//! Banned queries (a "query of death"): operator rules matched against a query's raw bytes
//! before any other work, so that a query that crashes or overloads the server can be dropped
//! or refused while a fix is built.
//!
//! A rule holds any of: an exact name, a name suffix (the name itself or any name below it), a
//! query type, and a byte pattern at an offset of the message; a query matches when every part
//! the rule holds matches. Names are compared in wire form, case-insensitively, from the first
//! question as received, without decoding the message: [`Banned::check`] reads the header's
//! question count and the question's labels and nothing else. A name that uses compression (no
//! client sends one in a question) matches no name rule.
//!
//! The rules come from the store ([`StoredBan`]); checking them is pure: it counts each match
//! on the rule's counter (an atomic) and does no I/O. With no rule, [`Banned::check`] is one
//! length test.

use std::sync::Arc;

use crate::metrics::Counter;
use crate::store::StoredBan;

/// The most rules in force: each query is checked against every one.
pub const MAX_BANNED_RULES: usize = 64;

/// What a matching query gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanAction {
    /// No reply at all.
    Drop,
    /// REFUSED, with the query's header and question.
    Refuse,
}

impl BanAction {
    /// The action's name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            BanAction::Drop => "drop",
            BanAction::Refuse => "refuse",
        }
    }

    /// The action named `name`.
    pub fn named(name: &str) -> Option<BanAction> {
        match name {
            "drop" => Some(BanAction::Drop),
            "refuse" => Some(BanAction::Refuse),
            _ => None,
        }
    }
}

/// One rule, ready to match.
#[derive(Debug, Clone)]
pub struct BanRule {
    /// Its id (derived from its content by the control plane).
    pub id: String,
    /// As stored, for listings.
    pub stored: StoredBan,
    /// The exact name, lowercase wire form.
    name: Option<Vec<u8>>,
    /// The suffix, lowercase wire form without the root label.
    suffix: Option<Vec<u8>>,
    qtype: Option<u16>,
    /// Bytes at an offset of the message.
    pattern: Option<(usize, Vec<u8>)>,
    /// What a match gets.
    pub action: BanAction,
    /// Matches counted (`meridian_dns_banned_queries_total{rule}`); resolved by the state
    /// manager, carried from one rule set to the next for rules that stay.
    pub counter: Counter,
}

/// The rules in force. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Banned {
    rules: Arc<[BanRule]>,
}

/// Why a stored rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanError {
    /// The name is not a domain name.
    #[error("{0:?} is not a domain name")]
    Name(String),
    /// The pattern is not hexadecimal octets.
    #[error("pattern {0:?} is not hexadecimal octets")]
    Pattern(String),
    /// The action is neither `drop` nor `refuse`.
    #[error("action {0:?} is neither drop nor refuse")]
    Action(String),
    /// The rule holds nothing to match.
    #[error("a rule needs a name, a suffix, a qtype or a pattern")]
    Empty,
}

impl BanRule {
    /// Compiles a stored rule.
    ///
    /// # Errors
    ///
    /// A [`BanError`] naming the part that cannot be used.
    pub fn compile(id: &str, stored: &StoredBan) -> Result<BanRule, BanError> {
        let name = stored.name.as_deref().map(wire_name).transpose()?;
        let suffix = stored.suffix.as_deref().map(wire_name).transpose()?;
        let pattern = match (&stored.offset, &stored.pattern) {
            (_, None) => None,
            (offset, Some(hex)) => Some((
                usize::from(offset.unwrap_or(0)),
                decode_hex(hex).ok_or_else(|| BanError::Pattern(hex.clone()))?,
            )),
        };
        if name.is_none() && suffix.is_none() && stored.qtype.is_none() && pattern.is_none() {
            return Err(BanError::Empty);
        }
        let action = BanAction::named(&stored.action)
            .ok_or_else(|| BanError::Action(stored.action.clone()))?;
        Ok(BanRule {
            id: id.to_owned(),
            stored: stored.clone(),
            name,
            suffix,
            qtype: stored.qtype,
            pattern,
            action,
            counter: Counter::default(),
        })
    }

    fn matches(&self, bytes: &[u8], question: &mut Option<Option<Question>>) -> bool {
        if let Some((offset, pattern)) = &self.pattern
            && bytes.get(*offset..offset + pattern.len()) != Some(pattern.as_slice())
        {
            return false;
        }
        if self.name.is_none() && self.suffix.is_none() && self.qtype.is_none() {
            return true;
        }
        let Some(question) = question.get_or_insert_with(|| Question::read(bytes)) else {
            return false;
        };
        self.qtype.is_none_or(|qtype| qtype == question.qtype)
            && self
                .name
                .as_ref()
                .is_none_or(|name| name.as_slice() == question.name())
            && self
                .suffix
                .as_ref()
                .is_none_or(|suffix| question.is_below(suffix))
    }
}

impl Banned {
    /// Compiles `rules` (id and stored rule); a rule that does not compile is left out and
    /// returned with its error (the control plane checks rules before storing them, so only a
    /// rule stored by another build can fail here). Counters of rules that `previous` holds are
    /// carried over.
    pub fn compile<'a>(
        rules: impl IntoIterator<Item = (&'a String, &'a StoredBan)>,
        previous: &Banned,
    ) -> (Banned, Vec<(String, BanError)>) {
        let mut compiled = Vec::new();
        let mut failed = Vec::new();
        for (id, stored) in rules {
            match BanRule::compile(id, stored) {
                Ok(mut rule) => {
                    if let Some(before) = previous.rules.iter().find(|r| r.id == *id) {
                        rule.counter = before.counter.clone();
                    }
                    compiled.push(rule);
                }
                Err(error) => failed.push((id.clone(), error)),
            }
        }
        (
            Banned {
                rules: compiled.into(),
            },
            failed,
        )
    }

    /// These rules, with a counter from `resolve` for each rule that has none yet.
    #[must_use]
    pub fn with_counters(&self, resolve: impl Fn(&str) -> Counter) -> Banned {
        if self.rules.iter().all(|rule| rule.counter.is_resolved()) {
            return self.clone();
        }
        let rules: Vec<BanRule> = self
            .rules
            .iter()
            .map(|rule| {
                let mut rule = rule.clone();
                if !rule.counter.is_resolved() {
                    rule.counter = resolve(&rule.id);
                }
                rule
            })
            .collect();
        Banned {
            rules: rules.into(),
        }
    }

    /// The rules, in id order.
    pub fn rules(&self) -> &[BanRule] {
        &self.rules
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What the first rule that matches the message `bytes` says to do, counted on that rule;
    /// `None` when no rule matches.
    #[inline]
    pub fn check(&self, bytes: &[u8]) -> Option<BanAction> {
        if self.rules.is_empty() {
            return None;
        }
        self.check_rules(bytes)
    }

    #[cold]
    fn check_rules(&self, bytes: &[u8]) -> Option<BanAction> {
        // The question is read once, by the first rule that needs it.
        let mut question = None;
        let rule = self
            .rules
            .iter()
            .find(|rule| rule.matches(bytes, &mut question))?;
        rule.counter.inc();
        Some(rule.action)
    }
}

/// The first question of a message, its name in lowercase wire form.
struct Question {
    name: [u8; 255],
    len: usize,
    qtype: u16,
}

impl Question {
    /// Reads the first question of `bytes` (`None`: no question, a compressed or malformed
    /// name).
    fn read(bytes: &[u8]) -> Option<Question> {
        let count = u16::from_be_bytes([*bytes.get(4)?, *bytes.get(5)?]);
        if count == 0 {
            return None;
        }
        let mut name = [0u8; 255];
        let mut at = 12;
        let mut len = 0;
        loop {
            let label = usize::from(*bytes.get(at)?);
            if label == 0 {
                break;
            }
            // 0xC0: a compression pointer; 0x40, 0x80: reserved label types.
            if label > 63 || len + 1 + label > 254 {
                return None;
            }
            name[len] = label as u8;
            let text = bytes.get(at + 1..at + 1 + label)?;
            for (to, from) in name[len + 1..len + 1 + label].iter_mut().zip(text) {
                *to = from.to_ascii_lowercase();
            }
            len += 1 + label;
            at += 1 + label;
        }
        let qtype = u16::from_be_bytes([*bytes.get(at + 1)?, *bytes.get(at + 2)?]);
        Some(Question { name, len, qtype })
    }

    /// The name without its root label.
    fn name(&self) -> &[u8] {
        &self.name[..self.len]
    }

    /// Whether the name is `suffix` or below it.
    fn is_below(&self, suffix: &[u8]) -> bool {
        let name = self.name();
        let mut at = 0;
        while at <= name.len() {
            if &name[at..] == suffix {
                return true;
            }
            match name.get(at) {
                Some(&label) => at += 1 + usize::from(label),
                None => return false,
            }
        }
        false
    }
}

/// `text` (dotted, an optional final dot) in lowercase wire form without the root label.
fn wire_name(text: &str) -> Result<Vec<u8>, BanError> {
    let invalid = || BanError::Name(text.to_owned());
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(invalid());
    }
    let mut wire = Vec::with_capacity(trimmed.len() + 1);
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 || !label.is_ascii() {
            return Err(invalid());
        }
        wire.push(label.len() as u8);
        wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    Ok(wire)
}

/// Octets written as hexadecimal digits, two per octet (at least one octet).
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.is_empty() || !digits.len().is_multiple_of(2) || digits.len() > 512 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of type `qtype` with id 0x1234, in wire form.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut bytes = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            bytes.push(label.len() as u8);
            bytes.extend(label.as_bytes());
        }
        bytes.push(0);
        bytes.extend(qtype.to_be_bytes());
        bytes.extend(1u16.to_be_bytes());
        bytes
    }

    fn rule(edit: impl FnOnce(&mut StoredBan)) -> StoredBan {
        let mut stored = StoredBan {
            name: None,
            suffix: None,
            qtype: None,
            offset: None,
            pattern: None,
            action: "refuse".to_owned(),
        };
        edit(&mut stored);
        stored
    }

    fn banned(rules: &[(&str, StoredBan)]) -> Banned {
        let rules: Vec<(String, StoredBan)> = rules
            .iter()
            .map(|(id, stored)| ((*id).to_owned(), stored.clone()))
            .collect();
        let (banned, failed) =
            Banned::compile(rules.iter().map(|(i, s)| (i, s)), &Banned::default());
        assert!(failed.is_empty(), "{failed:?}");
        banned
    }

    fn name(text: &str) -> StoredBan {
        rule(|r| r.name = Some(text.into()))
    }

    fn suffix(text: &str) -> StoredBan {
        rule(|r| r.suffix = Some(text.into()))
    }

    fn at(offset: u16, hex: &str) -> StoredBan {
        rule(|r| {
            r.offset = Some(offset);
            r.pattern = Some(hex.into());
        })
    }

    #[test]
    fn each_part_matches_as_documented() {
        let txt_below = StoredBan {
            qtype: Some(16),
            ..suffix("example.com")
        };
        let cases: &[(StoredBan, &str, u16, bool)] = &[
            (name("x.example.com"), "x.example.com", 1, true),
            (name("X.Example.COM."), "x.EXAMPLE.com", 28, true),
            (name("x.example.com"), "y.x.example.com", 1, false),
            (name("x.example.com"), "example.com", 1, false),
            (suffix("example.net"), "example.net", 1, true),
            (suffix("example.net"), "a.b.example.net", 1, true),
            (suffix("example.net"), "badexample.net", 1, false),
            (suffix("example.net"), "example.com", 1, false),
            (rule(|r| r.qtype = Some(255)), "www.example.com", 255, true),
            (rule(|r| r.qtype = Some(255)), "www.example.com", 1, false),
            (txt_below.clone(), "w.example.com", 1, false),
            (txt_below, "w.example.com", 16, true),
            // The id (0x1234) at offset 0, then the flags.
            (at(0, "1234"), "a.b", 1, true),
            (at(2, "0100"), "a.b", 1, true),
            (at(2, "0000"), "a.b", 1, false),
            // Past the end of the message.
            (at(500, "00"), "a.b", 1, false),
        ];
        for (stored, name, qtype, expected) in cases {
            let banned = banned(&[("r", stored.clone())]);
            let got = banned.check(&query(name, *qtype)).is_some();
            assert_eq!(got, *expected, "{stored:?} {name} {qtype}");
        }
    }

    #[test]
    fn malformed_and_short_messages_match_no_name_rule() {
        let banned = banned(&[
            ("n", rule(|r| r.suffix = Some("com".into()))),
            ("q", rule(|r| r.qtype = Some(1))),
        ]);
        let mut compressed = query("a.com", 1)[..12].to_vec();
        compressed.extend([0xc0, 0x0c, 0, 1, 0, 1]);
        for bytes in [
            &[][..],
            &[1, 2, 3][..],
            &query("a.com", 1)[..15],
            &compressed[..],
        ] {
            assert_eq!(banned.check(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn the_first_matching_rule_decides_and_counts() {
        let banned = banned(&[
            (
                "a",
                rule(|r| {
                    r.name = Some("drop.example.com".into());
                    r.action = "drop".into();
                }),
            ),
            ("b", rule(|r| r.suffix = Some("example.com".into()))),
        ]);
        assert_eq!(
            banned.check(&query("drop.example.com", 1)),
            Some(BanAction::Drop)
        );
        assert_eq!(
            banned.check(&query("www.example.com", 1)),
            Some(BanAction::Refuse)
        );
        assert_eq!(banned.check(&query("www.example.org", 1)), None);
        assert_eq!(Banned::default().check(&query("www.example.com", 1)), None);
    }

    #[test]
    fn bad_rules_are_refused_with_the_part_named() {
        let cases = [
            (rule(|_| {}), BanError::Empty),
            (
                rule(|r| r.name = Some("a..b".into())),
                BanError::Name("a..b".into()),
            ),
            (
                rule(|r| r.suffix = Some(".".into())),
                BanError::Name(".".into()),
            ),
            (
                rule(|r| r.pattern = Some("abc".into())),
                BanError::Pattern("abc".into()),
            ),
            (
                rule(|r| r.pattern = Some("zz".into())),
                BanError::Pattern("zz".into()),
            ),
            (
                rule(|r| {
                    r.qtype = Some(1);
                    r.action = "ignore".into();
                }),
                BanError::Action("ignore".into()),
            ),
        ];
        for (stored, error) in cases {
            assert_eq!(
                BanRule::compile("x", &stored).unwrap_err(),
                error,
                "{stored:?}"
            );
        }
    }
}
