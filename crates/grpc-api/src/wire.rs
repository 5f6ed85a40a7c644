//! `orderflow.v1.Event` and `orderflow.v1.EventBatch` as the servers decode
//! them: the same fields and the same bytes on the wire as
//! `orderflow_proto::proto::{Event, EventBatch}`, with one difference. The
//! attributes map arrives as its entries, in order, not as a `HashMap`:
//! every event's attributes become a sorted list anyway
//! (`domain::Attributes`), and hashing each key into a map on the way
//! there was a tenth of the cost of decoding a batch (docs/benchmarks.md).
//!
//! A `map<string, string>` field is, on the wire, a repeated message whose
//! field 1 is the key and field 2 the value, so decoding it as
//! [`AttributesEntry`] messages reads exactly what a map would. As with a
//! map, an entry missing its key or value has the empty string there, and
//! a key that comes twice keeps its last value (`domain::Attributes`
//! applies that when it collects the entries). An entry's key and value are
//! decoded straight into the [`ArcStr`]s the domain keeps, not into
//! `String`s copied again.
//!
//! `build.rs` makes the generated servers take these types; clients keep
//! `orderflow_proto`'s. prost's derive, and prost's own field decoders in
//! [`AttributesEntry`], do the decoding, so malformed input fails exactly
//! as it does for the client's types, message and field named in the
//! error.

use bytes::{Buf, BufMut, Bytes};
use domain::ArcStr;
use prost::encoding::{self, DecodeContext, WireType};

/// `orderflow.v1.Event`, as the servers decode it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub event_id: String,
    /// Field 2.
    #[prost(string, tag = "2")]
    pub user_id: String,
    /// Field 3.
    #[prost(string, tag = "3")]
    pub action: String,
    /// Field 4.
    #[prost(message, optional, tag = "4")]
    pub occurred_at: Option<prost_types::Timestamp>,
    /// Field 5.
    #[prost(int64, optional, tag = "5")]
    pub amount_cents: Option<i64>,
    /// Field 6, the `attributes` map, entry by entry in arrival order.
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<AttributesEntry>,
}

/// One entry of `Event.attributes` on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributesEntry {
    /// Field 1, the key.
    pub key: ArcStr,
    /// Field 2, the value.
    pub value: ArcStr,
}

impl prost::Message for AttributesEntry {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for (tag, text) in [(1, &self.key), (2, &self.value)] {
            if !text.is_empty() {
                encoding::encode_key(tag, WireType::LengthDelimited, buf);
                encoding::encode_varint(text.len() as u64, buf);
                buf.put_slice(text.as_bytes());
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let (field, name) = match tag {
            1 => (&mut self.key, "key"),
            2 => (&mut self.value, "value"),
            _ => return encoding::skip_field(wire_type, tag, buf, ctx),
        };
        merge_text(wire_type, field, buf, ctx).map_err(|mut error| {
            error.push("AttributesEntry", name);
            error
        })
    }

    fn encoded_len(&self) -> usize {
        [&self.key, &self.value]
            .into_iter()
            .zip([1, 2])
            .filter(|(text, _)| !text.is_empty())
            .map(|(text, tag)| {
                encoding::key_len(tag)
                    + encoding::encoded_len_varint(text.len() as u64)
                    + text.len()
            })
            .sum()
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A `string` field into an [`ArcStr`], copied once, straight from the
/// request buffer into the `ArcStr`. When the field lies whole in the
/// buffer's current chunk (a gRPC message is one contiguous chunk, so
/// always, in practice) its bytes are read there; otherwise prost's `bytes`
/// decoder takes them (a reference-counted slice of the buffer, splitting
/// and releasing which cost a few percent of a batch's decoding, measured in
/// docs/benchmarks.md). Either way the buffer advances by the same field,
/// so the enclosing message's length checks see what prost's would.
fn merge_text(
    wire_type: WireType,
    value: &mut ArcStr,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), prost::DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    let mut chunk = buf.chunk();
    let whole = encoding::decode_varint(&mut chunk)
        .ok()
        .and_then(|len| usize::try_from(len).ok())
        .and_then(|len| {
            let header = buf.chunk().len() - chunk.len();
            chunk.get(..len).map(|bytes| (header + len, bytes))
        });
    if let Some((taken, bytes)) = whole
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        *value = ArcStr::from(text);
        buf.advance(taken);
        return Ok(());
    }
    // Split across chunks, truncated, or not UTF-8: prost's decoders read
    // it and word any error as for the clients' types.
    let mut bytes = Bytes::new();
    encoding::bytes::merge(wire_type, &mut bytes, buf, ctx.clone())?;
    *value = match std::str::from_utf8(&bytes) {
        Ok(text) => ArcStr::from(text),
        // Not UTF-8: prost's string decoder, given the same field, says so
        // in its own words (and would keep the text if it disagreed).
        Err(_) => {
            let mut field = Vec::with_capacity(bytes.len() + 10);
            encoding::encode_varint(bytes.len() as u64, &mut field);
            field.extend_from_slice(&bytes);
            let mut text = String::new();
            encoding::string::merge(WireType::LengthDelimited, &mut text, &mut &field[..], ctx)?;
            ArcStr::from(text)
        }
    };
    Ok(())
}

/// `orderflow.v1.EventBatch`, as the servers decode it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventBatch {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub producer_id: String,
    /// Field 2.
    #[prost(uint64, tag = "2")]
    pub sequence: u64,
    /// Field 3.
    #[prost(message, repeated, tag = "3")]
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use prost::Message;

    use super::*;
    use crate::proto;

    fn client_event() -> proto::Event {
        proto::Event {
            event_id: "evt-1".into(),
            user_id: "u-1".into(),
            action: "purchase".into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 250_000_000,
            }),
            amount_cents: Some(-1_299),
            attributes: [("country", "DE"), ("device", "ios"), ("", "empty key")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_clients_batch_decodes_to_the_same_fields() {
        let sent = proto::EventBatch {
            producer_id: "p-1".into(),
            sequence: 7,
            events: vec![client_event(), proto::Event::default()],
        };
        let got = EventBatch::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(got.producer_id, "p-1");
        assert_eq!(got.sequence, 7);
        assert_eq!(got.events.len(), 2);
        let (event, client) = (&got.events[0], &sent.events[0]);
        assert_eq!(event.event_id, client.event_id);
        assert_eq!(event.user_id, client.user_id);
        assert_eq!(event.action, client.action);
        assert_eq!(event.occurred_at, client.occurred_at);
        assert_eq!(event.amount_cents, client.amount_cents);
        let mut entries: Vec<(String, String)> = event
            .attributes
            .iter()
            .map(|e| (e.key.to_string(), e.value.to_string()))
            .collect();
        entries.sort();
        let mut expected: Vec<(String, String)> = client.attributes.clone().into_iter().collect();
        expected.sort();
        assert_eq!(entries, expected);
        assert_eq!(got.events[1], Event::default());
        // And back: what the servers decode encodes to what a client reads.
        let again = proto::EventBatch::decode(got.encode_to_vec().as_slice()).unwrap();
        assert_eq!(again, sent);
    }

    #[test]
    fn a_batch_split_across_buffer_chunks_decodes_the_same() {
        // Attribute text read from one chunk, or (split) by prost's decoder.
        let bytes = proto::EventBatch {
            producer_id: "p-1".into(),
            sequence: 1,
            events: vec![client_event(), client_event()],
        }
        .encode_to_vec();
        let whole = EventBatch::decode(bytes.as_slice()).unwrap();
        for at in 0..bytes.len() {
            let (first, second) = bytes.split_at(at);
            let split = EventBatch::decode(first.chain(second)).unwrap();
            assert_eq!(split, whole, "split at byte {at}");
        }
        // Truncated anywhere, whole or split: an error, as prost's own types.
        for len in 0..bytes.len() {
            let truncated = &bytes[..len];
            let theirs = proto::EventBatch::decode(truncated).map(drop);
            assert_eq!(EventBatch::decode(truncated).map(drop), theirs, "{len}");
            let (first, second) = truncated.split_at(len / 2);
            assert_eq!(EventBatch::decode(first.chain(second)).map(drop), theirs);
        }
    }

    #[test]
    fn a_key_sent_twice_arrives_twice_in_order() {
        // Two map entries for one key, as a client could send them.
        let mut bytes = Vec::new();
        for value in ["first", "last"] {
            let entry = AttributesEntry {
                key: "k".into(),
                value: value.into(),
            };
            encoding::message::encode(6, &entry, &mut bytes);
        }
        let event = Event::decode(bytes.as_slice()).unwrap();
        let values: Vec<&str> = event.attributes.iter().map(|e| &*e.value).collect();
        assert_eq!(values, ["first", "last"]);
        // A client's map keeps the last, as the conversion does.
        let map = proto::Event::decode(bytes.as_slice()).unwrap().attributes;
        assert_eq!(map.get("k").map(String::as_str), Some("last"));
    }

    #[test]
    fn malformed_input_fails_as_for_the_clients_type_naming_the_field() {
        // Field 1 (event_id) as two bytes that are not UTF-8.
        let not_utf8: &[u8] = &[0x0a, 0x02, 0xff, 0xfe];
        let ours = Event::decode(not_utf8).unwrap_err().to_string();
        let theirs = proto::Event::decode(not_utf8).unwrap_err().to_string();
        assert_eq!(ours, theirs);
        assert!(ours.contains("Event.event_id"), "{ours}");
        // An attribute value that is not UTF-8, inside an entry.
        let entry: &[u8] = &[0x32, 0x05, 0x0a, 0x01, b'k', 0x12, 0x00];
        assert!(Event::decode(entry).is_ok());
        let bad_entry: &[u8] = &[0x32, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, 0xff];
        let ours = Event::decode(bad_entry).unwrap_err().to_string();
        assert!(proto::Event::decode(bad_entry).is_err());
        assert!(ours.contains("Event.attributes"), "{ours}");
        assert!(ours.contains("AttributesEntry.value"), "{ours}");
        assert!(ours.contains("not UTF-8"), "{ours}");
        // The wrong wire type for a key, and a length past the end.
        let varint_key: &[u8] = &[0x32, 0x02, 0x08, 0x01];
        assert!(Event::decode(varint_key).is_err());
        assert!(proto::Event::decode(varint_key).is_err());
        let overlong: &[u8] = &[0x32, 0x03, 0x0a, 0x05, b'k'];
        assert!(Event::decode(overlong).is_err());
        assert!(proto::Event::decode(overlong).is_err());
        // An unknown field inside an entry is skipped, as in a map entry.
        let unknown: &[u8] = &[0x32, 0x05, 0x18, 0x07, 0x0a, 0x01, b'k'];
        let event = Event::decode(unknown).unwrap();
        assert_eq!(&*event.attributes[0].key, "k");
        assert_eq!(proto::Event::decode(unknown).unwrap().attributes["k"], "");
        // Truncated input.
        let truncated = &client_event().encode_to_vec()[..10];
        assert!(Event::decode(truncated).is_err());
        assert!(proto::Event::decode(truncated).is_err());
    }
}
