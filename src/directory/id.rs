//! User ids: what a valid id is, and how an id is written as one DNS label.
//!
//! Ids are opaque to meridian: any UTF-8 string of 1 to [`MAX_USER_ID_BYTES`] bytes without
//! control characters. This file checks them and maps them to and from DNS labels (for
//! `<label>.users.example.com`); it does not look them up.
//!
//! The label form is a bijection: every id with a label has exactly one, and [`label_to_id`]
//! accepts exactly the labels [`id_to_label`] produces (ignoring ASCII case, as DNS does), so one
//! user is never cached or logged under two names.

use std::sync::LazyLock;

use data_encoding::{Encoding, Specification};

use super::MAX_USER_ID_BYTES;

/// Why a string is not a valid user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// The id has no bytes.
    #[error("user id is empty")]
    Empty,
    /// The id is longer than [`MAX_USER_ID_BYTES`].
    #[error("user id is {len} bytes long, more than the {max} allowed", max = MAX_USER_ID_BYTES)]
    TooLong {
        /// The id's length in bytes.
        len: usize,
    },
    /// The id contains a control character (Unicode general category Cc).
    #[error("user id has a control character at byte {at}")]
    ControlCharacter {
        /// Byte offset of the first control character.
        at: usize,
    },
}

/// Checks that `id` is a valid user id: 1 to [`MAX_USER_ID_BYTES`] bytes of UTF-8 (which `&str`
/// guarantees) without control characters.
///
/// Control characters are refused because ids end up in logs, exports and audit lines, where a
/// newline or an escape sequence would forge or garble entries.
///
/// # Errors
///
/// The first problem found: empty, too long, or the first control character's byte offset.
pub fn check_user_id(id: &str) -> Result<(), UserIdError> {
    if id.is_empty() {
        return Err(UserIdError::Empty);
    }
    if id.len() > MAX_USER_ID_BYTES {
        return Err(UserIdError::TooLong { len: id.len() });
    }
    match id.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, _)) => Err(UserIdError::ControlCharacter { at }),
        None => Ok(()),
    }
}

/// The DNS label of `id`, for `<label>.users.example.com`, or `None` if `id` has none.
///
/// An id made only of `a-z`, `0-9`, `-` and `_`, of 1 to 63 bytes and not starting with `b32-`,
/// is its own label. Any other id is `b32-` followed by the base32hex encoding of its UTF-8 bytes
/// (RFC 4648 §7, lowercase, without padding), if that fits in a label (RFC 1035 §2.3.4: 63
/// bytes, so ids of up to 36 bytes). Longer ids, and invalid ids (see [`check_user_id`]), have
/// no DNS form.
///
/// Uppercase ids are encoded rather than used as they are, because DNS matches labels without
/// regard to ASCII case (RFC 4343 §3): `Alice` and `alice` are two users but would be one label.
pub fn id_to_label(id: &str) -> Option<String> {
    check_user_id(id).ok()?;
    if is_plain_label(id) {
        return Some(id.to_owned());
    }
    let encoded_len = BASE32HEX_LOWER.encode_len(id.len());
    if B32_PREFIX.len() + encoded_len > MAX_LABEL_BYTES {
        return None;
    }
    let mut label = String::with_capacity(B32_PREFIX.len() + encoded_len);
    label.push_str(B32_PREFIX);
    encode_base32hex(id.as_bytes(), &mut label);
    Some(label)
}

/// The user id a DNS label stands for: the inverse of [`id_to_label`].
///
/// Labels are matched without regard to ASCII case, as DNS matches them (RFC 4343 §3), so
/// `User-1` is the id `user-1` and `B32-…` decodes like `b32-…`. `None` for a label that is not
/// an encoding [`id_to_label`] produces: bad base32hex (an unknown digit, an impossible length,
/// nonzero padding bits), bytes that are not UTF-8, an id failing [`check_user_id`], or the
/// `b32-` form of an id that is its own label.
pub fn label_to_id(label: &str) -> Option<String> {
    if label.len() > MAX_LABEL_BYTES {
        return None;
    }
    let label = label.to_ascii_lowercase();
    let id = match label.strip_prefix(B32_PREFIX) {
        Some(digits) => String::from_utf8(decode_base32hex(digits)?).ok()?,
        None => label.clone(),
    };
    // Re-encoding and comparing keeps the two functions exact inverses: it refuses every
    // non-canonical spelling (such as a `b32-` label for a plain id) in one place.
    (id_to_label(&id)? == label).then_some(id)
}

/// The prefix that marks an encoded label. Plain labels may not start with it, so no plain id
/// is ever mistaken for an encoded one.
const B32_PREFIX: &str = "b32-";

/// RFC 1035 §2.3.4: a label is at most 63 bytes.
const MAX_LABEL_BYTES: usize = 63;

/// Whether `id` is its own label.
fn is_plain_label(id: &str) -> bool {
    (1..=MAX_LABEL_BYTES).contains(&id.len())
        && !id.starts_with(B32_PREFIX)
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

/// RFC 4648 §7 "Extended Hex" in lowercase and without padding, built once.
///
/// `data-encoding`'s own `BASE32HEX_NOPAD` is uppercase; labels are lowercase, and decoding
/// only ever sees lowercased input, so one lowercase alphabet serves both ways. Trailing bits
/// are checked (the default), which refuses nonzero padding bits in the last digit.
static BASE32HEX_LOWER: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("0123456789abcdefghijklmnopqrstuv");
    spec.encoding()
        .expect("32 distinct ASCII symbols make a valid base32 specification")
});

/// Appends the unpadded lowercase base32hex encoding of `bytes` to `out`.
fn encode_base32hex(bytes: &[u8], out: &mut String) {
    BASE32HEX_LOWER.encode_append(bytes, out);
}

/// Decodes unpadded lowercase base32hex; `None` for an unknown digit, a length no byte string
/// encodes to (1, 3 or 6 digits past a multiple of 8), or nonzero bits in the last digit's
/// padding.
fn decode_base32hex(digits: &str) -> Option<Vec<u8>> {
    BASE32HEX_LOWER.decode(digits.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_user_id_accepts_opaque_utf8() {
        for id in [
            "a",
            "123",
            "user@example.com",
            "Alice Smith",
            "ユーザー42",
            "with.dots/and\\slashes",
            &"x".repeat(MAX_USER_ID_BYTES),
            // 85 three-byte characters: 255 bytes, under the limit.
            &"ユ".repeat(85),
        ] {
            assert_eq!(check_user_id(id), Ok(()), "{id:?}");
        }
    }

    #[test]
    fn check_user_id_rejects() {
        let cases = [
            ("", UserIdError::Empty),
            (&*"x".repeat(257), UserIdError::TooLong { len: 257 }),
            (&*"ユ".repeat(86), UserIdError::TooLong { len: 258 }),
            ("a\nb", UserIdError::ControlCharacter { at: 1 }),
            ("\0", UserIdError::ControlCharacter { at: 0 }),
            ("tab\t", UserIdError::ControlCharacter { at: 3 }),
            ("del\u{7f}", UserIdError::ControlCharacter { at: 3 }),
            // U+0085 NEXT LINE is a C1 control, two bytes in UTF-8, after a 3-byte character.
            ("ユ\u{85}", UserIdError::ControlCharacter { at: 3 }),
        ];
        for (id, expected) in cases {
            assert_eq!(check_user_id(id), Err(expected), "{id:?}");
        }
    }

    #[test]
    fn error_messages_name_the_value() {
        assert_eq!(UserIdError::Empty.to_string(), "user id is empty");
        assert_eq!(
            UserIdError::TooLong { len: 300 }.to_string(),
            "user id is 300 bytes long, more than the 256 allowed"
        );
        assert_eq!(
            UserIdError::ControlCharacter { at: 4 }.to_string(),
            "user id has a control character at byte 4"
        );
    }

    #[test]
    fn base32hex_matches_rfc_4648_test_vectors() {
        // RFC 4648 §10, BASE32-HEX, lowercased and without padding.
        let vectors = [
            ("", ""),
            ("f", "co"),
            ("fo", "cpng"),
            ("foo", "cpnmu"),
            ("foob", "cpnmuog"),
            ("fooba", "cpnmuoj1"),
            ("foobar", "cpnmuoj1e8"),
        ];
        for (plain, encoded) in vectors {
            let mut out = String::new();
            encode_base32hex(plain.as_bytes(), &mut out);
            assert_eq!(out, encoded, "{plain:?}");
            assert_eq!(decode_base32hex(encoded).as_deref(), Some(plain.as_bytes()));
        }
    }

    #[test]
    fn plain_ids_are_their_own_label() {
        for id in [
            "alice", "user-42", "123", "a_b", "-", "_dmarc", "b32", "b32x-1",
        ] {
            assert_eq!(id_to_label(id).as_deref(), Some(id), "{id:?}");
            assert_eq!(label_to_id(id).as_deref(), Some(id), "{id:?}");
        }
        let longest = "a".repeat(63);
        assert_eq!(id_to_label(&longest), Some(longest.clone()));
        assert_eq!(label_to_id(&longest), Some(longest));
    }

    #[test]
    fn other_ids_round_trip_through_base32hex() {
        // Expected labels checked against Python's `base64.b32hexencode`.
        let cases = [
            ("Alice", "b32-85m6ior5"),
            ("user@example.com", "b32-elpmasi0cls62rbgdhiisorfdk"),
            ("a.b", "b32-c4n64"),
            ("two words", "b32-ehrmu83ndtp68so"),
            ("ユーザー42", "b32-se1qdos3njho5dn3geu38cg"),
            // Plain-looking, but the prefix is reserved for encoded labels.
            ("b32-abc", "b32-c8pj4bb1c9hg"),
            // The longest ids that fit: only the prefix is checked.
            (&"X".repeat(36), "b32-"),
            (&format!("{}.", "x".repeat(35)), "b32-"),
        ];
        for (id, expected) in cases {
            let label = id_to_label(id).unwrap_or_else(|| panic!("{id:?} has a label"));
            if expected == B32_PREFIX {
                assert!(label.starts_with(expected), "{id:?} -> {label}");
            } else {
                assert_eq!(label, expected, "{id:?}");
            }
            assert!(label.len() <= 63, "{id:?} -> {label}");
            assert!(
                label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{label}"
            );
            assert_eq!(label_to_id(&label).as_deref(), Some(id), "{label}");
        }
    }

    #[test]
    fn labels_decode_without_regard_to_case() {
        assert_eq!(label_to_id("User-42").as_deref(), Some("user-42"));
        let label = id_to_label("Alice").expect("short id");
        assert_eq!(
            label_to_id(&label.to_ascii_uppercase()).as_deref(),
            Some("Alice")
        );
        assert_eq!(label_to_id("B32-85M6iOR5").as_deref(), Some("Alice"));
    }

    #[test]
    fn ids_too_long_for_a_label_have_none() {
        // 37 bytes need 60 base32hex digits: 64 bytes with the prefix.
        assert_eq!(id_to_label(&"X".repeat(37)), None);
        assert_eq!(id_to_label(&"X".repeat(36)).map(|l| l.len()), Some(62));
        assert_eq!(id_to_label("ユ".repeat(13).as_str()), None);
        // Too long to be its own label, and too long to encode.
        assert_eq!(id_to_label(&"a".repeat(64)), None);
        assert_eq!(id_to_label(&"a".repeat(MAX_USER_ID_BYTES)), None);
    }

    #[test]
    fn invalid_ids_have_no_label() {
        assert_eq!(id_to_label(""), None);
        assert_eq!(id_to_label("a\nb"), None);
    }

    #[test]
    fn bad_labels_are_rejected() {
        let plain_as_b32 = {
            let mut label = B32_PREFIX.to_owned();
            encode_base32hex(b"alice", &mut label);
            label
        };
        for label in [
            "",
            "b32-",                // the empty id
            "b32-w0",              // 'w' is not a base32hex digit
            "b32-c",               // one digit cannot encode a byte
            "b32-cpn",             // neither can three
            "b32-cp",              // "f" is "co": nonzero padding bits
            "b32-00",              // decodes to NUL, a control character
            "b32-vs",              // decodes to 0xff, not UTF-8
            "b32-1g",              // decodes to 0x0c, a control character
            plain_as_b32.as_str(), // a plain id spelled in base32hex
            "user.42",             // a dot is not in the plain alphabet
            "b32-dots.",           // nor is it a digit
            "caf\u{e9}",           // non-ASCII labels are never produced
            &"a".repeat(64),       // longer than a label
        ] {
            assert_eq!(label_to_id(label), None, "{label:?}");
        }
    }
}
