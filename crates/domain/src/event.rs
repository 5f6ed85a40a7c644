//! Events and their stored format.
//!
//! The event store keeps each event as compact JSON with keys in the order
//! `event_id`, `user_id`, `action`, `occurred_at`, `amount_cents`,
//! `attributes` (sorted), absent fields omitted. Events already stored must
//! load and write back byte for byte, so this module is the one definition of
//! that format: field order is declaration order, optional fields are
//! skipped when absent, and every part keeps its written spelling (actions
//! the code does not know, timestamp precision, attribute text).

use std::fmt;

use arcstr::ArcStr;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

use crate::text::{Charset, check, quote};
use crate::{Cents, DomainError, EventId, Timestamp, UserId};

/// A line of JSON-lines text that is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct BadLine {
    /// Its number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub error: DomainError,
}

/// One thing a user did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Producer-chosen id, used for de-duplication; old events have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
    /// Who did it.
    pub user_id: UserId,
    /// What they did.
    pub action: Action,
    /// When, as the producer wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Timestamp>,
    /// Money involved, if any (refunds may be negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<Cents>,
    /// Free-form context, written sorted by key.
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    pub attributes: Attributes,
}

impl Event {
    /// An event with only the required fields.
    pub fn new(user_id: UserId, action: Action) -> Self {
        Self {
            event_id: None,
            user_id,
            action,
            occurred_at: None,
            amount_cents: None,
            attributes: Attributes::default(),
        }
    }

    /// Parses JSON lines (an import file): every non-blank line one event,
    /// `\n` or `\r\n` line ends. The first bad line fails the whole text,
    /// with its 1-based number; a line that is not UTF-8 is a bad line.
    pub fn parse_json_lines(text: &[u8]) -> Result<Vec<Self>, BadLine> {
        let mut events = Vec::new();
        for (index, line) in text.split(|b| *b == b'\n').enumerate() {
            let bad = |error| BadLine {
                line: index + 1,
                error,
            };
            let line = std::str::from_utf8(line).map_err(|e| {
                bad(DomainError::MalformedEvent(format!(
                    "not valid UTF-8 (at byte {} of the line)",
                    e.valid_up_to() + 1
                )))
            })?;
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            events.push(Self::from_json(line).map_err(bad)?);
        }
        Ok(events)
    }

    /// Parses one stored or imported JSON line. Unknown fields are an error
    /// (silently dropping them would lose data); so are duplicate keys.
    pub fn from_json(line: &str) -> Result<Self, DomainError> {
        serde_json::from_str(line).map_err(|e| DomainError::MalformedEvent(e.to_string()))
    }

    /// The canonical stored form.
    pub fn to_json(&self) -> Result<String, DomainError> {
        serde_json::to_string(self).map_err(|e| DomainError::MalformedEvent(e.to_string()))
    }

    /// Appends the canonical stored form (what [`Self::to_json`] returns)
    /// to `out`: many events into one buffer, without a `String` each.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), DomainError> {
        serde_json::to_writer(out, self).map_err(|e| DomainError::MalformedEvent(e.to_string()))
    }

    /// `events` as JSON lines, one per event, each followed by `\n` when
    /// `terminated` and separated by it otherwise.
    pub fn json_lines(events: &[Self], terminated: bool) -> Result<String, DomainError> {
        // Most stored events are under 200 bytes.
        let mut out = Vec::with_capacity(events.len() * 200);
        for (n, event) in events.iter().enumerate() {
            if n > 0 && !terminated {
                out.push(b'\n');
            }
            event.write_json(&mut out)?;
            if terminated {
                out.push(b'\n');
            }
        }
        // serde_json writes UTF-8.
        String::from_utf8(out).map_err(|e| DomainError::MalformedEvent(e.to_string()))
    }
}

/// An event the system could not process, and why. Stored for an operator to
/// inspect and replay; nothing is silently lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event as it was when it failed.
    pub event: Event,
    /// Why it failed, naming the step or policy.
    pub reason: String,
}

/// What an event records. Known actions get their own variant; any other
/// action is carried as written (newer producers emit actions this code has
/// never seen, and the store must keep them unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// `login`
    Login,
    /// `logout`
    Logout,
    /// `purchase`
    Purchase,
    /// `refund`
    Refund,
    /// Anything else, kept verbatim.
    Other(UnknownAction),
}

/// An action string that is not one of the known [`Action`]s. Only
/// [`Action::parse`] builds one, so `Other("login")` cannot exist and every
/// action has exactly one representation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnknownAction(Box<str>);

impl UnknownAction {
    /// The action as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Action {
    /// Longest accepted action, in characters.
    pub const MAX_CHARS: usize = 64;

    /// Parses an action: a known name or any other 1..=64 printable
    /// characters, carried unchanged.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        Ok(match value {
            "login" => Self::Login,
            "logout" => Self::Logout,
            "purchase" => Self::Purchase,
            "refund" => Self::Refund,
            other => {
                check("action", other, Self::MAX_CHARS, Charset::Printable)?;
                Self::Other(UnknownAction(other.into()))
            }
        })
    }

    /// The known actions, in declaration order: [`Self::known_index`]
    /// indexes it.
    pub const KNOWN: [Self; 4] = [Self::Login, Self::Logout, Self::Purchase, Self::Refund];

    /// Where this action sits in [`Self::KNOWN`], or `None` for any other:
    /// lets a hot path keep a table per known action in a small array
    /// instead of hashing the name.
    #[inline]
    pub fn known_index(&self) -> Option<usize> {
        match self {
            Self::Login => Some(0),
            Self::Logout => Some(1),
            Self::Purchase => Some(2),
            Self::Refund => Some(3),
            Self::Other(_) => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Login => "login",
            Self::Logout => "logout",
            Self::Purchase => "purchase",
            Self::Refund => "refund",
            Self::Other(other) => other.as_str(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ActionVisitor;
        impl Visitor<'_> for ActionVisitor {
            type Value = Action;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an action string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Action, E> {
                Action::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(ActionVisitor)
    }
}

/// How many attributes an event holds without a heap allocation. Stored
/// events carry up to three; pipelines typically add one or two.
const INLINE_ATTRIBUTES: usize = 4;

/// An event's attributes, kept sorted by key (the stored format writes them
/// in that order). Keys and values are [`ArcStr`]s (one pointer each, to a
/// shared string), and the first few entries live inline in the event, so
/// the pipeline adds a configured attribute by copying two pointers: no
/// allocation, no tree node, and, for a static [`ArcStr`] (configured
/// names and values are), no atomic reference count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Attributes(SmallVec<[(ArcStr, ArcStr); INLINE_ATTRIBUTES]>);

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Where `key` is (or would go). A linear scan with an inlined byte
    /// comparison: attribute lists are a handful of short keys, where this
    /// beats a binary search that calls `memcmp` per probe (measured in the
    /// pipeline benchmark, docs/benchmarks.md).
    #[inline]
    fn position(&self, key: &str) -> Result<usize, usize> {
        let key = key.as_bytes();
        for (index, (k, _)) in self.0.iter().enumerate() {
            match compare_bytes(k.as_bytes(), key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(index),
                std::cmp::Ordering::Greater => return Err(index),
            }
        }
        Err(self.0.len())
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&ArcStr> {
        let index = self.position(key).ok()?;
        self.0.get(index).map(|(_, v)| v)
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<ArcStr>, value: impl Into<ArcStr>) -> Option<ArcStr> {
        let key = key.into();
        match self.position(&key) {
            Ok(index) => self
                .0
                .get_mut(index)
                .map(|(_, v)| std::mem::replace(v, value.into())),
            Err(index) => {
                self.0.insert(index, (key, value.into()));
                None
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<ArcStr> {
        let index = self.position(key).ok()?;
        Some(self.0.remove(index).1)
    }

    /// The attributes in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ArcStr, &ArcStr)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// Byte-wise lexicographic order (the same order as `str`'s `Ord`), as a
/// plain loop the compiler inlines for short keys.
#[inline]
fn compare_bytes(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

impl<K: Into<ArcStr>, V: Into<ArcStr>> FromIterator<(K, V)> for Attributes {
    /// Later entries for a key replace earlier ones. Sorts once, so building
    /// from `n` entries is O(n log n), not one shifting insert per entry.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_entries(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl Attributes {
    /// `entries` sorted by key, in place; of entries with the same key the
    /// last one's value is kept.
    fn from_entries(mut entries: SmallVec<[(ArcStr, ArcStr); INLINE_ATTRIBUTES]>) -> Self {
        // Stable, so equal keys keep their input order.
        entries.sort_by(|(a, _), (b, _)| a.cmp(b));
        // `later` goes; its value moves to the entry that stays.
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        Self(entries)
    }
}

impl Attributes {
    /// Most attributes an event may carry when it arrives from a client.
    pub const MAX_ENTRIES: usize = 256;
    /// Most bytes an event's attribute keys and values may hold in all when
    /// it arrives from a client.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// Attributes from a client, checked against [`Self::MAX_ENTRIES`] and
    /// [`Self::MAX_BYTES`] before anything is built, and for NUL (which
    /// PostgreSQL cannot store); the error names `field`. `entries` are a
    /// protobuf map's entries as they arrived: a key that comes more than
    /// once keeps its last value, as a map would (each occurrence counts
    /// against the bounds, which bound the work done on what was sent).
    pub fn from_client<I, T>(field: &str, entries: I) -> Result<Self, DomainError>
    where
        I: IntoIterator<Item = (T, T)>,
        I::IntoIter: ExactSizeIterator,
        T: AsRef<str> + Into<ArcStr>,
    {
        let entries = entries.into_iter();
        let count = entries.len();
        if count > Self::MAX_ENTRIES {
            return Err(DomainError::invalid(
                field,
                format!(
                    "has {count} entries, at most {} are allowed",
                    Self::MAX_ENTRIES
                ),
            ));
        }
        let mut bytes = 0;
        let mut checked = SmallVec::with_capacity(count);
        for (key, value) in entries {
            let (key_text, value_text) = (key.as_ref(), value.as_ref());
            bytes += key_text.len() + value_text.len();
            if bytes > Self::MAX_BYTES {
                return Err(DomainError::invalid(
                    field,
                    format!(
                        "hold more than {} bytes of keys and values",
                        Self::MAX_BYTES
                    ),
                ));
            }
            if key_text.contains('\0') || value_text.contains('\0') {
                return Err(DomainError::invalid(
                    field,
                    format!("entry {} contains the character '\\0'", quote(key_text)),
                ));
            }
            checked.push((key.into(), value.into()));
        }
        Ok(Self::from_entries(checked))
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (&**k, &**v)))
    }
}

impl<'de> Deserialize<'de> for Attributes {
    /// A repeated key is an error: keeping either value would silently lose
    /// the other.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttributesVisitor;
        impl<'de> Visitor<'de> for AttributesVisitor {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                // Collected, then sorted once: O(n log n) however many there
                // are (stored data is not capped; clients are, at the edge).
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<ArcStr, ArcStr>()? {
                    if key.contains('\0') || value.contains('\0') {
                        return Err(serde::de::Error::custom(format_args!(
                            "attributes entry {} contains the character '\\0'",
                            quote(&key)
                        )));
                    }
                    entries.push((key, value));
                }
                entries.sort_by(|(a, _), (b, _)| a.cmp(b));
                let repeated = entries.windows(2).find_map(|pair| match pair {
                    [(a, _), (b, _)] if a == b => Some(a),
                    _ => None,
                });
                if let Some(key) = repeated {
                    return Err(serde::de::Error::custom(format_args!(
                        "attributes has the key {} twice",
                        quote(key)
                    )));
                }
                Ok(Attributes(SmallVec::from_vec(entries)))
            }
        }
        deserializer.deserialize_map(AttributesVisitor)
    }
}

mod binary;

#[cfg(test)]
mod tests;
