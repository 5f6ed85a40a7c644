//! Event timestamps that keep their written precision.
//!
//! Stored events spell `occurred_at` as RFC 3339 in UTC with as many fraction
//! digits as their producer wrote: `…:32Z`, `…:38.250Z`. Reformatting would
//! rewrite stored data (`.250` is not `.25`), so a [`Timestamp`] remembers how
//! many fraction digits it had and writes exactly that many back.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::DomainError;
use crate::text::quote;

/// A UTC instant plus the number of fraction-of-second digits to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    at: DateTime<Utc>,
    /// 0..=9; how many digits follow the seconds' `.` when written.
    fraction_digits: u8,
}

impl Timestamp {
    /// An instant written with the fewest of 0, 3, 6 or 9 fraction digits
    /// that represent it exactly (for timestamps that arrive as numbers, such
    /// as `google.protobuf.Timestamp`).
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        let nanos = at.nanosecond() % 1_000_000_000;
        let fraction_digits = match nanos {
            0 => 0,
            n if n % 1_000_000 == 0 => 3,
            n if n % 1_000 == 0 => 6,
            _ => 9,
        };
        Self {
            at,
            fraction_digits,
        }
    }

    /// Parses RFC 3339 (`2025-01-27T12:27:38.250Z`); an offset other than `Z`
    /// is converted to UTC. More than nine fraction digits are rejected, since
    /// they could not be written back.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let at = DateTime::parse_from_rfc3339(value)
            .map_err(|e| {
                DomainError::invalid(
                    "occurred_at",
                    format!("{} is not an RFC 3339 timestamp: {e}", quote(value)),
                )
            })?
            .with_timezone(&Utc);
        // RFC 3339 fixes the prefix `YYYY-MM-DDTHH:MM:SS` at 19 bytes; the
        // fraction, if any, follows as `.` and digits.
        let fraction = value
            .get(19..)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or("");
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        let fraction_digits = u8::try_from(digits)
            .ok()
            .filter(|d| *d <= 9)
            .ok_or_else(|| {
                DomainError::invalid(
                    "occurred_at",
                    format!("{} has more than nine fraction digits", quote(value)),
                )
            })?;
        Ok(Self {
            at,
            fraction_digits,
        })
    }

    /// How many fraction digits this timestamp writes.
    pub fn fraction_digits(&self) -> u8 {
        self.fraction_digits
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Seconds first, then exactly `fraction_digits` digits, truncated.
        // Written field by field: chrono's `format` parses its pattern on
        // every call, which showed at ~6% of the event log's CPU profile
        // (docs/benchmarks.md). Years are 1..=9999 (checked on parse).
        let (date, time) = (self.at.date_naive(), self.at.time());
        // chrono keeps a leap second (`…:60Z`) as second 59 with a nanosecond
        // count of a second or more: write it back as it was read.
        let leap = u32::from(self.at.nanosecond() >= 1_000_000_000);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            date.year(),
            date.month(),
            date.day(),
            time.hour(),
            time.minute(),
            time.second() + leap
        )?;
        if self.fraction_digits > 0 {
            let digits = u32::from(self.fraction_digits);
            let nanos = self.at.nanosecond() % 1_000_000_000;
            let scaled = nanos / 10u32.pow(9 - digits);
            write!(
                f,
                ".{scaled:0width$}",
                width = usize::from(self.fraction_digits)
            )?;
        }
        f.write_str("Z")
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
