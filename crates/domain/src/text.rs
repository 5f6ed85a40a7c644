//! Bounded-text newtypes: the one place that checks length and characters for
//! identifier-like strings, and the macro that gives each of them the same
//! parsing, display and serde behaviour.

use std::fmt;

use crate::DomainError;

/// How many characters of a rejected value an error message quotes.
pub const QUOTE_CHARS: usize = 64;

/// A rejected value as an error message shows it: debug-quoted, cut to its
/// first [`QUOTE_CHARS`] characters with the full length appended when
/// longer. Every message that echoes client input goes through this, so a
/// megabyte `currency` yields a short `grpc-message`, not a megabyte one.
pub fn quote(value: &str) -> Quoted<'_> {
    Quoted(value)
}

/// See [`quote`].
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTE_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => {
                let prefix = self.0.get(..cut).unwrap_or_default();
                write!(f, "{prefix:?}... ({} bytes)", self.0.len())
            }
        }
    }
}

/// Which characters a bounded text accepts besides its length limit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Charset {
    /// Anything but NUL, control characters included: user ids in stored
    /// events contain tabs, quotes and backslashes, and must load as they
    /// are. NUL is refused everywhere: PostgreSQL cannot store it in text.
    Any,
    /// No control characters and no surrounding whitespace.
    Printable,
    /// ASCII letters, digits, `-`, `_` and `.`.
    Code,
}

/// Checks `value` is 1..=`max_chars` characters of `charset`; the error names
/// `field`.
pub(crate) fn check(
    field: &str,
    value: &str,
    max_chars: usize,
    charset: Charset,
) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    // No more bytes than the limit means no more characters; only longer
    // text needs counting.
    if value.len() > max_chars {
        let chars = value.chars().count();
        if chars > max_chars {
            return Err(DomainError::invalid(
                field,
                format!("is {chars} characters long, at most {max_chars} are allowed"),
            ));
        }
    }
    let bad = match charset {
        Charset::Any => value.contains('\0').then_some('\0'),
        Charset::Printable => {
            if value.trim() != value {
                return Err(DomainError::invalid(
                    field,
                    format!("{} has surrounding whitespace", quote(value)),
                ));
            }
            // ASCII text (ids nearly always are) is checked byte by byte;
            // `char::is_control` agrees with `u8::is_ascii_control` there.
            if value.is_ascii() {
                value.bytes().find(u8::is_ascii_control).map(char::from)
            } else {
                value.chars().find(|c| c.is_control())
            }
        }
        Charset::Code => value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))),
    };
    match bad {
        Some(c) => Err(DomainError::invalid(
            field,
            format!("{} contains the character {c:?}", quote(value)),
        )),
        None => Ok(()),
    }
}

/// Defines a validated string newtype: `parse` is the only way in, and serde
/// goes through it too, so a stored or received value is checked once.
macro_rules! bounded_text {
    ($(#[$meta:meta])* $name:ident, field = $field:literal, max = $max:literal, charset = $charset:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
        #[serde(try_from = "String")]
        // Up to 24 bytes (ids nearly always are) held inline, with no
        // allocation: two of these are in every event.
        pub struct $name(::compact_str::CompactString);

        impl $name {
            /// Longest accepted value, in characters.
            pub const MAX_CHARS: usize = $max;

            /// Parses `value`, naming the field in the error.
            pub fn parse(value: impl Into<::compact_str::CompactString>) -> Result<Self, $crate::DomainError> {
                Self::parse_field($field, value)
            }

            /// Parses `value`, naming `field` in the error (for nested fields
            /// such as `lines[2].product_id`).
            pub fn parse_field(field: &str, value: impl Into<::compact_str::CompactString>) -> Result<Self, $crate::DomainError> {
                let value = value.into();
                $crate::text::check(field, &value, $max, $crate::text::Charset::$charset)?;
                Ok(Self(value))
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::DomainError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::DomainError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

pub(crate) use bounded_text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(quote("EU\"R").to_string(), r#""EU\"R""#);
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary_with_their_length() {
        let long = "é".repeat(1000);
        let quoted = quote(&long).to_string();
        assert_eq!(
            quoted,
            format!("{:?}... (2000 bytes)", "é".repeat(QUOTE_CHARS))
        );
    }

    /// `check` as it was before its fast paths: every character counted
    /// and examined as a `char`.
    fn check_char_by_char(
        field: &str,
        value: &str,
        max_chars: usize,
        charset: Charset,
    ) -> Result<(), DomainError> {
        if value.is_empty() {
            return Err(DomainError::invalid(field, "must not be empty"));
        }
        let chars = value.chars().count();
        if chars > max_chars {
            return Err(DomainError::invalid(
                field,
                format!("is {chars} characters long, at most {max_chars} are allowed"),
            ));
        }
        let bad = match charset {
            Charset::Any => value.chars().find(|c| *c == '\0'),
            Charset::Printable => {
                if value.trim() != value {
                    return Err(DomainError::invalid(
                        field,
                        format!("{} has surrounding whitespace", quote(value)),
                    ));
                }
                value.chars().find(|c| c.is_control())
            }
            Charset::Code => value
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))),
        };
        match bad {
            Some(c) => Err(DomainError::invalid(
                field,
                format!("{} contains the character {c:?}", quote(value)),
            )),
            None => Ok(()),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// ASCII, control characters (C0, DEL and C1), whitespace, NUL and
        /// multi-byte text, around the length limit in bytes and in
        /// characters.
        #[test]
        fn the_fast_paths_agree_with_checking_char_by_char(
            value in "[a-z0-9 ._\\-\t\u{0}\u{7f}\u{85}\u{9f}é€😀]{0,12}",
            max_chars in 1usize..12,
        ) {
            for charset in [Charset::Any, Charset::Printable, Charset::Code] {
                proptest::prop_assert_eq!(
                    check("f", &value, max_chars, charset),
                    check_char_by_char("f", &value, max_chars, charset)
                );
            }
        }
    }
}
