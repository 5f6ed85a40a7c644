//! Money: integer cents with checked arithmetic, and ISO-4217-shaped currency
//! codes. Floating point never touches an amount.

use std::fmt;
use std::str::FromStr;

use crate::DomainError;
use crate::text::quote;

/// An amount in the currency's minor unit. Arithmetic is checked: an overflow
/// is an error the caller reports, never a wrapped total.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Cents(i64);

impl Cents {
    /// Zero cents.
    pub const ZERO: Self = Self(0);

    /// Wraps a raw amount.
    pub const fn new(cents: i64) -> Self {
        Self(cents)
    }

    /// The raw amount.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// `self * factor`, or `None` on overflow.
    pub fn checked_mul(self, factor: u32) -> Option<Self> {
        self.0.checked_mul(i64::from(factor)).map(Self)
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cents", self.0)
    }
}

/// A currency code: exactly three upper-case ASCII letters (`EUR`, `USD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a code, naming `currency` in the error.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        match value.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(DomainError::invalid(
                "currency",
                format!("{} is not three upper-case letters", quote(value)),
            )),
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Construction admits only ASCII upper-case letters, so this is valid
        // UTF-8; the fallback is unreachable but keeps this function total.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests;
