//! The event log's binary form of a batch: what the durable log stores
//! between the acknowledgement and the pipeline. It never leaves the
//! service (exports and the events table keep the JSON format), but a log
//! row written by one release is read by the next, so this form is fixed
//! like the JSON one: golden bytes pin it, and a new layout takes a new
//! version byte, with the old one still read.
//!
//! Version 1, every integer an unsigned LEB128 varint unless noted:
//!
//! ```text
//! batch     = 0x01 count event{count}
//! event     = flags [event_id] user_id action [occurred_at] [amount] attributes
//! flags     = one byte: 1 event_id present, 2 occurred_at, 4 amount_cents
//! action    = one byte: 0 login, 1 logout, 2 purchase, 3 refund,
//!             4 followed by the action's text
//! occurred_at = zigzag(seconds since 1970) nanoseconds fraction_digits(one byte)
//! amount    = zigzag(cents)
//! attributes = count (key value){count}, keys in ascending byte order
//! text      = length bytes (UTF-8)
//! ```
//!
//! Decoding checks every rule the types hold (lengths, characters, sorted
//! unique keys), so a damaged row is an error naming its byte offset, never
//! an event no client could have sent.

use arcstr::ArcStr;
use smallvec::SmallVec;

use super::{Action, Attributes, Event};
use crate::{Cents, DomainError, EventId, Timestamp, UserId};

/// The layout this module writes.
const VERSION: u8 = 1;

const HAS_EVENT_ID: u8 = 1;
const HAS_OCCURRED_AT: u8 = 2;
const HAS_AMOUNT: u8 = 4;

const OTHER_ACTION: u8 = 4;

impl Event {
    /// Appends `events` to `out` in the log's binary form (see the module
    /// docs); [`Self::decode_batch`] reads them back.
    pub fn encode_batch(events: &[Self], out: &mut Vec<u8>) {
        // Most events take well under 128 bytes in this form.
        out.reserve(events.len() * 128 + 8);
        out.push(VERSION);
        put_varint(out, events.len() as u64);
        for event in events {
            event.encode(out);
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.event_id.is_some() {
            flags |= HAS_EVENT_ID;
        }
        if self.occurred_at.is_some() {
            flags |= HAS_OCCURRED_AT;
        }
        if self.amount_cents.is_some() {
            flags |= HAS_AMOUNT;
        }
        out.push(flags);
        if let Some(id) = &self.event_id {
            put_text(out, id.as_str());
        }
        put_text(out, self.user_id.as_str());
        match &self.action {
            Action::Other(other) => {
                out.push(OTHER_ACTION);
                put_text(out, other.as_str());
            }
            known => out.push(known.known_index().map_or(OTHER_ACTION, |i| i as u8)),
        }
        if let Some(at) = &self.occurred_at {
            let (seconds, nanos, digits) = at.to_parts();
            put_varint(out, zigzag(seconds));
            put_varint(out, u64::from(nanos));
            out.push(digits);
        }
        if let Some(cents) = self.amount_cents {
            put_varint(out, zigzag(cents.get()));
        }
        put_varint(out, self.attributes.len() as u64);
        for (key, value) in self.attributes.iter() {
            put_text(out, key);
            put_text(out, value);
        }
    }

    /// Reads a batch [`Self::encode_batch`] wrote. Anything else (another
    /// version, a truncated or damaged body, trailing bytes, a value that
    /// breaks its type's rules) is [`DomainError::MalformedEvent`] naming
    /// the byte offset.
    pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Self>, DomainError> {
        let mut reader = Reader {
            bytes,
            offset: 0,
            keys: Vec::new(),
        };
        let version = reader.byte()?;
        if version != VERSION {
            return Err(reader.error_at(0, format!("unknown layout version {version}")));
        }
        let count = reader.varint()?;
        // Each event takes at least four bytes, so a count the rest cannot
        // hold is damage, found before reserving for it.
        if count > (reader.remaining() / 4) as u64 {
            return Err(reader.error(format!("claims {count} events, too many for its length")));
        }
        let mut events = Vec::with_capacity(count as usize);
        for _ in 0..count {
            events.push(reader.event()?);
        }
        if reader.remaining() > 0 {
            return Err(reader.error(format!("{} bytes after the last event", reader.remaining())));
        }
        Ok(events)
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// A cursor over a batch being decoded.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
    /// The attribute keys met so far: a batch repeats a handful of keys, so
    /// each later event shares the first one's string instead of allocating.
    keys: Vec<ArcStr>,
}

/// Most distinct keys remembered for sharing; past it keys are allocated.
const SHARED_KEYS: usize = 16;

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    fn error_at(&self, offset: usize, what: impl std::fmt::Display) -> DomainError {
        DomainError::MalformedEvent(format!("log batch byte {offset}: {what}"))
    }

    fn error(&self, what: impl std::fmt::Display) -> DomainError {
        self.error_at(self.offset, what)
    }

    fn byte(&mut self) -> Result<u8, DomainError> {
        let byte = *self
            .bytes
            .get(self.offset)
            .ok_or_else(|| self.error("ends early"))?;
        self.offset += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64, DomainError> {
        let start = self.offset;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error_at(start, "a number longer than 64 bits"))
    }

    fn text(&mut self) -> Result<&'a str, DomainError> {
        let start = self.offset;
        let len = self.varint()?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| self.offset.checked_add(len))
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                self.error_at(start, format!("text of {len} bytes runs past the end"))
            })?;
        let bytes: &'a [u8] = self.bytes.get(self.offset..end).unwrap_or_default();
        let text = std::str::from_utf8(bytes)
            .map_err(|e| self.error_at(start, format!("text is not UTF-8: {e}")))?;
        self.offset = end;
        Ok(text)
    }

    /// A field's value through its type's parser, the error placed here.
    fn field<T>(
        &mut self,
        parse: impl FnOnce(&str) -> Result<T, DomainError>,
    ) -> Result<T, DomainError> {
        let start = self.offset;
        let text = self.text()?;
        parse(text).map_err(|e| self.error_at(start, e))
    }

    fn event(&mut self) -> Result<Event, DomainError> {
        let start = self.offset;
        let flags = self.byte()?;
        if flags & !(HAS_EVENT_ID | HAS_OCCURRED_AT | HAS_AMOUNT) != 0 {
            return Err(self.error_at(start, format!("unknown event flags {flags:#04x}")));
        }
        let event_id = if flags & HAS_EVENT_ID != 0 {
            Some(self.field(|text| EventId::parse(text))?)
        } else {
            None
        };
        let user_id = self.field(|text| UserId::parse(text))?;
        let tag_at = self.offset;
        let action = match self.byte()? {
            OTHER_ACTION => self.field(|text| match Action::parse(text)? {
                Action::Other(other) => Ok(Action::Other(other)),
                known => Err(DomainError::invalid(
                    "action",
                    format!("the known action {known} is written as another"),
                )),
            })?,
            tag => Action::KNOWN
                .get(usize::from(tag))
                .cloned()
                .ok_or_else(|| self.error_at(tag_at, format!("unknown action tag {tag}")))?,
        };
        let occurred_at = if flags & HAS_OCCURRED_AT != 0 {
            let at = self.offset;
            let seconds = unzigzag(self.varint()?);
            let nanos = u32::try_from(self.varint()?)
                .map_err(|_| self.error_at(at, "nanoseconds out of range"))?;
            let digits = self.byte()?;
            Some(Timestamp::from_parts(seconds, nanos, digits).map_err(|e| self.error_at(at, e))?)
        } else {
            None
        };
        let amount_cents = if flags & HAS_AMOUNT != 0 {
            Some(Cents::new(unzigzag(self.varint()?)))
        } else {
            None
        };
        let attributes = self.attributes()?;
        Ok(Event {
            event_id,
            user_id,
            action,
            occurred_at,
            amount_cents,
            attributes,
        })
    }

    fn attributes(&mut self) -> Result<Attributes, DomainError> {
        let start = self.offset;
        let count = self.varint()?;
        // Each entry takes at least two bytes.
        if count > (self.remaining() / 2) as u64 {
            return Err(self.error_at(start, format!("claims {count} attributes, too many")));
        }
        let mut entries: SmallVec<[(ArcStr, ArcStr); super::INLINE_ATTRIBUTES]> =
            SmallVec::with_capacity(count as usize);
        for _ in 0..count {
            let at = self.offset;
            let key = self.key()?;
            if entries
                .last()
                .is_some_and(|(previous, _)| previous.as_bytes() >= key.as_bytes())
            {
                return Err(self.error_at(at, "attribute keys out of order or repeated"));
            }
            let value_at = self.offset;
            let value = self.text()?;
            if value.contains('\0') {
                return Err(self.error_at(value_at, "attribute value contains '\\0'"));
            }
            entries.push((key, ArcStr::from(value)));
        }
        Ok(Attributes(entries))
    }

    fn key(&mut self) -> Result<ArcStr, DomainError> {
        let at = self.offset;
        let text = self.text()?;
        if text.contains('\0') {
            return Err(self.error_at(at, "attribute key contains '\\0'"));
        }
        if let Some(shared) = self.keys.iter().find(|k| k.as_str() == text) {
            return Ok(shared.clone());
        }
        let key = ArcStr::from(text);
        if self.keys.len() < SHARED_KEYS {
            self.keys.push(key.clone());
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests;
