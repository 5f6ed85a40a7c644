//! Bounded-text newtypes: the one place that checks length and characters for
//! identifier-like strings, and the macro that gives each of them the same
//! parsing, display and serde behaviour.

use crate::DomainError;

/// Which characters a bounded text accepts besides its length limit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Charset {
    /// Anything, control characters included: user ids in stored events
    /// contain tabs, quotes and backslashes, and must load as they are.
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
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(DomainError::invalid(
            field,
            format!("is {chars} characters long, at most {max_chars} are allowed"),
        ));
    }
    let bad = match charset {
        Charset::Any => None,
        Charset::Printable => {
            if value.trim() != value {
                return Err(DomainError::invalid(
                    field,
                    format!("{value:?} has surrounding whitespace"),
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
            format!("{value:?} contains the character {c:?}"),
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
        pub struct $name(Box<str>);

        impl $name {
            /// Longest accepted value, in characters.
            pub const MAX_CHARS: usize = $max;

            /// Parses `value`, naming the field in the error.
            pub fn parse(value: impl Into<String>) -> Result<Self, $crate::DomainError> {
                Self::parse_field($field, value)
            }

            /// Parses `value`, naming `field` in the error (for nested fields
            /// such as `lines[2].product_id`).
            pub fn parse_field(field: &str, value: impl Into<String>) -> Result<Self, $crate::DomainError> {
                let value = value.into();
                $crate::text::check(field, &value, $max, $crate::text::Charset::$charset)?;
                Ok(Self(value.into_boxed_str()))
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
