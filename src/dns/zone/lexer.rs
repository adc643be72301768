//! Splits master-file text (RFC 1035 §5.1) into entries: one record or directive each, as
//! tokens with the line they were written on.
//!
//! The lexer knows the file's punctuation (blank space, comments, parentheses that join lines,
//! quoted strings, backslash escapes) and nothing of what the tokens mean. Escapes are kept as
//! written, because only the reader of a field knows what they do: in a name, `\.` is a dot
//! inside a label, not a label separator. [`unescape`] turns a character string's escapes into
//! octets.

/// One word of an entry, quotes removed, escapes kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    /// The bytes between the delimiters, with every `\X` and `\DDD` still in place.
    pub(super) text: Vec<u8>,
    /// Whether it was written in double quotes (then it can only be a character string).
    pub(super) quoted: bool,
    /// The line it stands on, from 1.
    pub(super) line: u32,
}

/// A record or directive: the tokens of one line, or of several joined by parentheses.
#[derive(Debug)]
pub(super) struct Entry {
    /// The line of the first token.
    pub(super) line: u32,
    /// The line started with blank space: the entry has no owner of its own and takes the
    /// previous one (RFC 1035 §5.1).
    pub(super) blank_owner: bool,
    pub(super) tokens: Vec<Token>,
}

/// A syntax error, with the line it was found on.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LexError {
    pub(super) line: u32,
    pub(super) message: String,
}

/// The entries of a master file, one at a time.
pub(super) struct Lexer<'t> {
    text: &'t [u8],
    pos: usize,
    line: u32,
}

impl<'t> Lexer<'t> {
    pub(super) fn new(text: &'t [u8]) -> Self {
        Lexer {
            text,
            pos: 0,
            line: 1,
        }
    }

    /// The next entry, `None` at the end of the text. After an error the rest of the entry is
    /// skipped, so the caller can go on and report the next problem too.
    pub(super) fn next_entry(&mut self) -> Option<Result<Entry, LexError>> {
        let mut tokens = Vec::new();
        let mut blank_owner = false;
        // The line of the innermost open parenthesis, for "not closed" errors.
        let mut open: Option<u32> = None;
        loop {
            let at_line_start = self.pos == 0 || self.text[self.pos - 1] == b'\n';
            if at_line_start && open.is_none() && tokens.is_empty() {
                blank_owner = matches!(self.text.get(self.pos), Some(b' ' | b'\t'));
            }
            let Some(&byte) = self.text.get(self.pos) else {
                if let Some(line) = open {
                    return Some(Err(LexError {
                        line,
                        message: "'(' is never closed".to_owned(),
                    }));
                }
                return (!tokens.is_empty()).then(|| Ok(entry(tokens, blank_owner)));
            };
            match byte {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    if open.is_none() && !tokens.is_empty() {
                        return Some(Ok(entry(tokens, blank_owner)));
                    }
                }
                b';' => {
                    while self.text.get(self.pos).is_some_and(|&b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                b'(' => {
                    if open.is_some() {
                        return Some(Err(self.fail("'(' inside parentheses")));
                    }
                    open = Some(self.line);
                    self.pos += 1;
                }
                b')' => {
                    if open.take().is_none() {
                        return Some(Err(self.fail("')' without '('")));
                    }
                    self.pos += 1;
                }
                b'"' => match self.quoted() {
                    Ok(token) => tokens.push(token),
                    Err(error) => return Some(Err(error)),
                },
                _ => match self.word() {
                    Ok(token) => tokens.push(token),
                    Err(error) => return Some(Err(error)),
                },
            }
        }
    }

    /// A quoted string; `self.pos` is at the opening quote.
    fn quoted(&mut self) -> Result<Token, LexError> {
        let line = self.line;
        self.pos += 1;
        let mut text = Vec::new();
        loop {
            match self.text.get(self.pos) {
                None | Some(b'\n') => {
                    return Err(self.fail(&format!(
                        "quoted string \"{}\" is not closed on its line",
                        show(&text)
                    )));
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Token {
                        text,
                        quoted: true,
                        line,
                    });
                }
                Some(b'\\') => self.escape(&mut text)?,
                Some(&byte) => {
                    text.push(byte);
                    self.pos += 1;
                }
            }
        }
    }

    /// An unquoted word; `self.pos` is at its first byte.
    fn word(&mut self) -> Result<Token, LexError> {
        let line = self.line;
        let mut text = Vec::new();
        while let Some(&byte) = self.text.get(self.pos) {
            match byte {
                b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')' | b'"' => break,
                b'\\' => self.escape(&mut text)?,
                _ => {
                    text.push(byte);
                    self.pos += 1;
                }
            }
        }
        Ok(Token {
            text,
            quoted: false,
            line,
        })
    }

    /// Copies a backslash and the byte it escapes (a line end cannot be escaped).
    fn escape(&mut self, text: &mut Vec<u8>) -> Result<(), LexError> {
        match self.text.get(self.pos + 1) {
            None | Some(b'\n' | b'\r') => Err(self.fail(&format!(
                "\"{}\\\" ends its line with a backslash",
                show(text)
            ))),
            Some(&byte) => {
                text.extend_from_slice(&[b'\\', byte]);
                self.pos += 2;
                Ok(())
            }
        }
    }

    /// An error on the current line; skips the rest of the entry (to the next line that is
    /// not inside parentheses) so that lexing can go on.
    fn fail(&mut self, message: &str) -> LexError {
        let error = LexError {
            line: self.line,
            message: message.to_owned(),
        };
        let mut depth = 0_u32;
        while let Some(&byte) = self.text.get(self.pos) {
            match byte {
                b'\n' if depth == 0 => break,
                b'\n' => self.line += 1,
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            self.pos += 1;
        }
        error
    }
}

fn entry(tokens: Vec<Token>, blank_owner: bool) -> Entry {
    Entry {
        line: tokens[0].line,
        blank_owner,
        tokens,
    }
}

/// The octets a character string stands for: `\DDD` is the octet with that decimal value and
/// `\X` is X itself (RFC 1035 §5.1).
///
/// # Errors
///
/// A `\DDD` above 255 or with fewer than three digits.
pub(super) fn unescape(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut octets = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            octets.push(text[i]);
            i += 1;
            continue;
        }
        let (octet, len) = escaped(&text[i..])?;
        octets.push(octet);
        i += len;
    }
    Ok(octets)
}

/// The octet of the escape at the start of `text` (which begins with a backslash) and how many
/// bytes the escape takes.
///
/// # Errors
///
/// A `\DDD` above 255 or with fewer than three digits.
pub(super) fn escaped(text: &[u8]) -> Result<(u8, usize), String> {
    let rest = &text[1..];
    let Some(&first) = rest.first() else {
        return Err("a backslash escapes nothing".to_owned());
    };
    if !first.is_ascii_digit() {
        return Ok((first, 2));
    }
    let digits: Vec<u8> = rest.iter().take(3).copied().collect();
    if digits.len() < 3 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "\"\\{}\" is not an escape: \\DDD takes exactly three decimal digits",
            show(&digits)
        ));
    }
    let value = digits
        .iter()
        .fold(0_u32, |value, digit| value * 10 + u32::from(digit - b'0'));
    u8::try_from(value).map(|octet| (octet, 4)).map_err(|_| {
        format!(
            "\"\\{}\" is not an octet: \\DDD is a decimal value from 000 to 255",
            show(&digits)
        )
    })
}

/// Master-file text for messages: printable ASCII as it is, anything else as `\DDD`.
pub(super) fn show(bytes: &[u8]) -> String {
    let mut shown = String::with_capacity(bytes.len());
    for &byte in bytes {
        if (0x20..0x7f).contains(&byte) {
            shown.push(char::from(byte));
        } else {
            shown.push_str(&format!("\\{byte:03}"));
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as (line, blank owner, tokens written back with quotes).
    type Lexed = Result<(u32, bool, Vec<String>), LexError>;

    fn lex(text: &str) -> Vec<Lexed> {
        let mut lexer = Lexer::new(text.as_bytes());
        std::iter::from_fn(|| lexer.next_entry())
            .map(|entry| {
                entry.map(|entry| {
                    let tokens = entry
                        .tokens
                        .iter()
                        .map(|t| {
                            let text = String::from_utf8_lossy(&t.text).into_owned();
                            if t.quoted {
                                format!("\"{text}\"")
                            } else {
                                text
                            }
                        })
                        .collect();
                    (entry.line, entry.blank_owner, tokens)
                })
            })
            .collect()
    }

    fn ok(line: u32, blank: bool, tokens: &[&str]) -> Lexed {
        Ok((
            line,
            blank,
            tokens.iter().map(|t| (*t).to_owned()).collect(),
        ))
    }

    fn err(line: u32, message: &str) -> Lexed {
        Err(LexError {
            line,
            message: message.to_owned(),
        })
    }

    #[test]
    fn entries_lines_and_owners() {
        let text = "; comment\n\n@ IN SOA a. b. ( 1 ; serial\n  2 3\n 4 5 )\n  IN NS a.\nwww A 192.0.2.1 ; x\n\t\"q s\" x\\ y\n";
        assert_eq!(
            lex(text),
            [
                ok(
                    3,
                    false,
                    &["@", "IN", "SOA", "a.", "b.", "1", "2", "3", "4", "5"]
                ),
                ok(6, true, &["IN", "NS", "a."]),
                ok(7, false, &["www", "A", "192.0.2.1"]),
                ok(8, true, &["\"q s\"", "x\\ y"]),
            ]
        );
    }

    #[test]
    fn escapes_are_kept_for_the_field_reader() {
        assert_eq!(
            lex(r#"a\.b TXT "say \"hi\"" a\;b"#),
            [ok(
                1,
                false,
                &["a\\.b", "TXT", "\"say \\\"hi\\\"\"", "a\\;b"]
            )]
        );
    }

    #[test]
    fn syntax_errors_name_their_line_and_lexing_goes_on() {
        assert_eq!(
            lex("a TXT \"open\nb A 1.2.3.4\nc ) x\nd (\n"),
            [
                err(1, "quoted string \"open\" is not closed on its line"),
                ok(2, false, &["b", "A", "1.2.3.4"]),
                err(3, "')' without '('"),
                err(4, "'(' is never closed"),
            ]
        );
        assert_eq!(
            lex("a TXT x\\\nb A 1.2.3.4\n"),
            [
                err(1, "\"x\\\" ends its line with a backslash"),
                ok(2, false, &["b", "A", "1.2.3.4"]),
            ]
        );
    }

    #[test]
    fn unescape_reads_decimal_octets() {
        assert_eq!(unescape(br"\010").unwrap(), [10]);
        assert_eq!(unescape(br"a\065b").unwrap(), b"aAb");
        assert_eq!(unescape(br"abc\032def").unwrap(), b"abc def");
        assert_eq!(unescape(br"\255\000").unwrap(), [255, 0]);
        assert_eq!(unescape(br#"\"\\\a"#).unwrap(), b"\"\\a");
        assert_eq!(
            unescape(br"\256").unwrap_err(),
            "\"\\256\" is not an octet: \\DDD is a decimal value from 000 to 255"
        );
        assert_eq!(
            unescape(br"\06x").unwrap_err(),
            "\"\\06x\" is not an escape: \\DDD takes exactly three decimal digits"
        );
        assert_eq!(
            unescape(br"\1").unwrap_err(),
            "\"\\1\" is not an escape: \\DDD takes exactly three decimal digits"
        );
    }
}
