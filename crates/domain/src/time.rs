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

    /// The timestamp as numbers: seconds since the Unix epoch, nanoseconds
    /// into the second (1,000,000,000 or more within a leap second), and
    /// the fraction digits to write. [`Self::from_parts`] takes them back.
    pub fn to_parts(&self) -> (i64, u32, u8) {
        (
            self.at.timestamp(),
            self.at.timestamp_subsec_nanos(),
            self.fraction_digits,
        )
    }

    /// The timestamp [`Self::to_parts`] returned; numbers no timestamp has
    /// (a year outside the four digits RFC 3339 spells, an impossible
    /// nanosecond count, more than nine fraction digits, or nanoseconds
    /// finer than the fraction digits write) are an error.
    pub fn from_parts(seconds: i64, nanos: u32, fraction_digits: u8) -> Result<Self, DomainError> {
        let invalid = |what: &str| {
            DomainError::invalid(
                "occurred_at",
                format!("{what} ({seconds} s, {nanos} ns, {fraction_digits} fraction digits)"),
            )
        };
        if fraction_digits > 9 {
            return Err(invalid("has more than nine fraction digits"));
        }
        // Written text truncates to the digits, so finer nanoseconds would
        // not survive a write and a read.
        if !nanos.is_multiple_of(10u32.pow(9 - u32::from(fraction_digits))) {
            return Err(invalid("has nanoseconds finer than its fraction digits"));
        }
        let at = DateTime::from_timestamp(seconds, nanos)
            .ok_or_else(|| invalid("is not a valid instant"))?;
        if !(0..=9999).contains(&at.year()) {
            return Err(invalid("is outside the years 0000 to 9999"));
        }
        Ok(Self {
            at,
            fraction_digits,
        })
    }
}

/// A stored timestamp's text, built without formatting machinery.
struct Text {
    bytes: [u8; Text::MAX],
    len: usize,
}

impl Text {
    /// The longest stored form: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
    const MAX: usize = 30;

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// `value`'s last `width` decimal digits, zero-padded.
    fn digits(&mut self, value: u32, width: u32) {
        for power in (0..width).rev() {
            // A digit: the remainder is below 10.
            self.push(b'0' + (value / 10u32.pow(power) % 10) as u8);
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever pushed.
        self.bytes
            .get(..self.len)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or_default()
    }
}

impl Timestamp {
    /// The stored form: the seconds, then exactly `fraction_digits` digits,
    /// truncated. Digit by digit: every event written to the log or the
    /// store goes through here (chrono's `format` parsed its pattern on
    /// every call and showed at ~6% of the event log's CPU profile,
    /// docs/benchmarks.md).
    fn text(&self) -> Text {
        let mut text = Text {
            bytes: [0; Text::MAX],
            len: 0,
        };
        let (date, time) = (self.at.date_naive(), self.at.time());
        // chrono keeps a leap second (`…:60Z`) as second 59 with a nanosecond
        // count of a second or more: write it back as it was read.
        let leap = u32::from(self.at.nanosecond() >= 1_000_000_000);
        // Years are 1..=9999 (checked on parse and on conversion).
        text.digits(u32::try_from(date.year()).unwrap_or(0), 4);
        text.push(b'-');
        text.digits(date.month(), 2);
        text.push(b'-');
        text.digits(date.day(), 2);
        text.push(b'T');
        text.digits(time.hour(), 2);
        text.push(b':');
        text.digits(time.minute(), 2);
        text.push(b':');
        text.digits(time.second() + leap, 2);
        if self.fraction_digits > 0 {
            let digits = u32::from(self.fraction_digits.min(9));
            text.push(b'.');
            text.digits(
                self.at.nanosecond() % 1_000_000_000 / 10u32.pow(9 - digits),
                digits,
            );
        }
        text.push(b'Z');
        text
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.text().as_str())
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
