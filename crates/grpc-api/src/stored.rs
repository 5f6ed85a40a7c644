//! Stored events straight onto the wire: the canonical JSON the store keeps,
//! encoded as `orderflow.v1.StoredEvent` protobuf bytes without building the
//! domain event or the wire structs on the way.
//!
//! A subscription sends every stored event, so this is its hot path. The
//! JSON was validated into a domain event before it was stored, and is read
//! here borrowing its strings; only the few fields protobuf needs are
//! converted (a timestamp's text to seconds and nanos, through
//! [`domain::Timestamp`], the format's one definition). The bytes decode to
//! what `convert::event_to_wire` would have built (a test holds the two
//! together over the stored-event fixture).

mod compact;

use std::borrow::Cow;

use prost::encoding::{WireType, encode_varint, encoded_len_varint, key_len};
use serde::Deserialize;

/// The stored form of an event, borrowed from its JSON (unknown fields are
/// an error, as for `domain::Event`).
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredJson<'a> {
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow, default)]
    occurred_at: Option<Cow<'a, str>>,
    #[serde(default)]
    amount_cents: Option<i64>,
    #[serde(borrow, default)]
    attributes: Attributes<'a>,
}

/// One attribute; the stored form is a JSON object, read as its entries.
#[derive(Debug, PartialEq)]
struct Attribute<'a>(Cow<'a, str>, Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Attributes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Entries<'a> {
            type Value = Attributes<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((key, value)) = map.next_entry::<Cow<'a, str>, Cow<'a, str>>()? {
                    entries.push(Attribute(key, value));
                }
                Ok(Attributes(entries))
            }
        }
        deserializer.deserialize_map(Entries(std::marker::PhantomData))
    }
}

/// The attributes object.
#[derive(Debug, Default, PartialEq)]
struct Attributes<'a>(Vec<Attribute<'a>>);

/// A stored event read for the wire.
#[derive(Debug)]
pub(crate) struct Stored<'a> {
    json: StoredJson<'a>,
    occurred_at: Option<(i64, i32)>,
}

/// Why a stored event cannot be sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unreadable(String);

impl<'a> Stored<'a> {
    /// Reads the stored JSON `text`: the compact form by hand
    /// (`compact`), anything else through serde_json.
    pub(crate) fn parse(text: &'a str) -> Result<Self, Unreadable> {
        let json = match compact::read(text) {
            Some(json) => json,
            None => serde_json::from_str(text).map_err(|e| Unreadable(e.to_string()))?,
        };
        let occurred_at = match &json.occurred_at {
            Some(text) => {
                let at = domain::Timestamp::parse(text).map_err(|e| Unreadable(e.to_string()))?;
                let (seconds, nanos, _) = at.to_parts();
                // A leap second's nanoseconds (1,000,000,000 and up) become
                // the last nanosecond of the second, as `convert` does.
                Some((seconds, i32::try_from(nanos.min(999_999_999)).unwrap_or(0)))
            }
            None => None,
        };
        Ok(Self { json, occurred_at })
    }

    /// Its action, as stored.
    pub(crate) fn action(&self) -> &str {
        &self.json.action
    }

    /// Appends it as field 1 of an `EventPage` (a `StoredEvent` at
    /// `position`, stored at `stored_at` seconds and nanos).
    pub(crate) fn encode_into_page(
        &self,
        position: u64,
        stored_at: (i64, i32),
        page: &mut Vec<u8>,
    ) {
        let event_len = self.event_len();
        let stored_at_len = timestamp_len(stored_at);
        let len = uint64_len(1, position)
            + key_len(2)
            + encoded_len_varint(event_len as u64)
            + event_len
            + message_len(3, stored_at_len);
        key(1, WireType::LengthDelimited, page);
        varint(len as u64, page);
        encode_uint64(1, position, page);
        key(2, WireType::LengthDelimited, page);
        varint(event_len as u64, page);
        self.encode_event(page);
        encode_timestamp(3, stored_at, stored_at_len, page);
    }

    fn event_len(&self) -> usize {
        let json = &self.json;
        json.event_id.as_deref().map_or(0, |id| string_len(1, id))
            + string_len(2, &json.user_id)
            + string_len(3, &json.action)
            + self
                .occurred_at
                .map_or(0, |at| message_len(4, timestamp_len(at)))
            + json
                .amount_cents
                .map_or(0, |cents| key_len(5) + encoded_len_varint(cents as u64))
            + json
                .attributes
                .0
                .iter()
                .map(|Attribute(key, value)| message_len(6, entry_len(key, value)))
                .sum::<usize>()
    }

    fn encode_event(&self, buf: &mut Vec<u8>) {
        let json = &self.json;
        if let Some(id) = json.event_id.as_deref() {
            encode_string(1, id, buf);
        }
        encode_string(2, &json.user_id, buf);
        encode_string(3, &json.action, buf);
        if let Some(at) = self.occurred_at {
            encode_timestamp(4, at, timestamp_len(at), buf);
        }
        if let Some(cents) = json.amount_cents {
            key(5, WireType::Varint, buf);
            varint(cents as u64, buf);
        }
        for Attribute(name, value) in &json.attributes.0 {
            key(6, WireType::LengthDelimited, buf);
            varint(entry_len(name, value) as u64, buf);
            encode_string(1, name, buf);
            encode_string(2, value, buf);
        }
    }
}

/// Writes `value` as a varint: one push below 128 (every key here, most
/// lengths), prost's loop above it. prost's own, generic over `BufMut`,
/// was a tenth of a catch-up's time.
#[inline]
fn varint(value: u64, buf: &mut Vec<u8>) {
    if value < 0x80 {
        buf.push(value as u8);
    } else {
        encode_varint(value, buf);
    }
}

#[inline]
fn key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | wire_type as u32), buf);
}

fn string_len(tag: u32, value: &str) -> usize {
    // proto3: an empty string is the default, and not written.
    if value.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
    }
}

fn encode_string(tag: u32, value: &str, buf: &mut Vec<u8>) {
    if !value.is_empty() {
        key(tag, WireType::LengthDelimited, buf);
        varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

fn uint64_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn encode_uint64(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        key(tag, WireType::Varint, buf);
        varint(value, buf);
    }
}

fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn entry_len(key: &str, value: &str) -> usize {
    string_len(1, key) + string_len(2, value)
}

fn timestamp_len((seconds, nanos): (i64, i32)) -> usize {
    uint64_len(1, seconds as u64) + uint64_len(2, nanos as u64)
}

fn encode_timestamp(tag: u32, (seconds, nanos): (i64, i32), len: usize, buf: &mut Vec<u8>) {
    key(tag, WireType::LengthDelimited, buf);
    varint(len as u64, buf);
    encode_uint64(1, seconds as u64, buf);
    encode_uint64(2, nanos as u64, buf);
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::Stored;
    use crate::proto;

    /// Every fixture line encodes to what the domain round trip gives.
    #[test]
    fn stored_json_encodes_as_the_wire_event_would() {
        let fixture = include_str!("../../test-support/data/legacy-events.jsonl");
        let mut direct = Vec::new();
        let mut expected = proto::EventPage::default();
        for (n, line) in fixture.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let position = n as u64 + 1;
            let stored_at = (1_700_000_000 + n as i64, 123_000);
            Stored::parse(line)
                .unwrap()
                .encode_into_page(position, stored_at, &mut direct);
            let event = domain::Event::from_json(line).unwrap();
            expected.events.push(proto::StoredEvent {
                position,
                event: Some(crate::convert::event_to_wire(&event)),
                stored_at: Some(prost_types::Timestamp {
                    seconds: stored_at.0,
                    nanos: stored_at.1,
                }),
            });
        }
        assert!(expected.events.len() > 10, "the fixture has events");
        let decoded = proto::EventPage::decode(direct.as_slice()).unwrap();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn what_is_not_a_stored_event_is_unreadable() {
        for bad in [
            "",
            "{",
            r#"{"user_id":"u"}"#,
            r#"{"user_id":"u","action":"a","extra":1}"#,
        ] {
            assert!(Stored::parse(bad).is_err(), "{bad}");
        }
    }
}
