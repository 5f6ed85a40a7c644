//! `orderflow.v1.Event` and `orderflow.v1.EventBatch` as the servers decode
//! them: the same fields and the same bytes on the wire as
//! `orderflow_proto::proto::{Event, EventBatch}`, with two differences.
//!
//! A batch's events become domain events as they are read
//! ([`BatchEvents`]), not a list of wire events converted afterwards: a
//! batch is read once, and no wire event outlives its conversion. The
//! outcome is what the two passes gave, refusals and decode errors alike
//! (a proptest in this module holds the two together).
//!
//! The attributes map arrives as its entries, in order, not as a `HashMap`:
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
//! `orderflow_proto`'s. A batch's events in the shape clients send are read
//! by a small reader of their own (`fast`), straight from the request's
//! bytes; any other shape, and every malformed input, goes to prost's
//! derive and prost's own field decoders in [`AttributesEntry`] and
//! [`EventBatch`], so malformed input fails exactly as it does for the
//! client's types, message and field named in the error.

use bytes::{Buf, BufMut, Bytes};
use domain::ArcStr;
use prost::encoding::{self, DecodeContext, WireType};
use tonic::Status;
use transform_engine::MAX_BATCH_EVENTS;

use crate::convert;

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

/// `orderflow.v1.EventBatch`, as the servers decode it: each event becomes
/// a [`domain::Event`] as soon as it is read ([`BatchEvents`]), so a batch
/// goes from the request's bytes to the domain's events in one pass, with
/// no list of wire events between.
#[derive(Debug, Default)]
pub struct EventBatch {
    /// Field 1.
    pub producer_id: String,
    /// Field 2.
    pub sequence: u64,
    /// Field 3, converted as it arrives.
    pub events: BatchEvents,
}

/// The events of an [`EventBatch`], converted as they are decoded.
///
/// Each event is read into one reused [`Event`] (whose buffers keep their
/// room from one event to the next) and converted by
/// [`convert::event_from_wire_mut`], naming `events[i]` in an error. After
/// the first event that does not convert, or past `MAX_BATCH_EVENTS`, the
/// rest are only read: the batch is refused whole either way, and malformed
/// protobuf anywhere in it still fails the decode, as when every event was
/// read before any was converted.
#[derive(Debug, Default)]
pub struct BatchEvents {
    /// The events converted so far, in order.
    converted: Vec<domain::Event>,
    /// Events read.
    received: usize,
    /// The first event that did not convert: INVALID_ARGUMENT naming it.
    invalid: Option<Status>,
    /// Where each event is read.
    scratch: Event,
    /// The batch's attribute keys and values seen lately, shared by the
    /// events that repeat them.
    texts: RecentTexts,
}

impl BatchEvents {
    /// How many events the batch held.
    pub fn received(&self) -> usize {
        self.received
    }

    /// The events, or the error of the first that did not convert. (A
    /// batch past `MAX_BATCH_EVENTS` is refused before this is asked.)
    pub fn into_events(self) -> Result<Vec<domain::Event>, Status> {
        match self.invalid {
            Some(invalid) => Err(invalid),
            None => Ok(self.converted),
        }
    }

    /// Reads one event, length-delimited, and converts it.
    fn merge_one(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        self.scratch.reset();
        let before = buf.remaining();
        // A batch is a request's whole message, so the chunk ends where
        // the message does (`Buf::chunk` never reaches past `remaining`).
        let read = (wire_type == WireType::LengthDelimited)
            .then(|| fast::event(buf.chunk(), &mut self.scratch, &mut self.texts))
            .flatten();
        match read {
            Some(taken) => buf.advance(taken),
            None => {
                // Anything the fast reader does not take, prost reads from
                // the same bytes, and words any error.
                self.scratch.reset();
                encoding::message::merge(wire_type, &mut self.scratch, buf, ctx)?;
            }
        }
        let index = self.received;
        if index == 0 {
            // Room for as many more events as the first one's size says
            // fit in the rest of the message (within the batch limit), so
            // the list is not regrown, event by event, while it fills.
            let size = before.saturating_sub(buf.remaining()).max(1);
            self.converted
                .reserve((buf.remaining() / size + 1).min(MAX_BATCH_EVENTS));
        }
        self.received += 1;
        if self.invalid.is_none() && index < MAX_BATCH_EVENTS {
            match convert::event_from_wire_mut(&mut self.scratch, Some(index)) {
                Ok(event) => self.converted.push(event),
                Err(invalid) => {
                    self.invalid = Some(invalid);
                    self.converted = Vec::new();
                }
            }
        }
        Ok(())
    }
}

/// A batch's recent attribute texts: keys (and many values) repeat from
/// event to event, and a repeat costs a reference count, not an
/// allocation. Kept per batch, so the events sharing a text are the ones
/// processed, and dropped, together.
#[derive(Debug, Default)]
struct RecentTexts {
    texts: Vec<ArcStr>,
    /// Which one a new text replaces once all slots are taken.
    next: usize,
}

impl RecentTexts {
    /// How many texts are kept.
    const SLOTS: usize = 16;
    /// Longer texts are not kept (each is read once, whole).
    const LONGEST: usize = 64;

    fn get(&mut self, text: &str) -> ArcStr {
        if text.is_empty() {
            return ArcStr::new();
        }
        if text.len() > Self::LONGEST {
            return ArcStr::from(text);
        }
        if let Some(seen) = self.texts.iter().find(|seen| seen.as_str() == text) {
            return seen.clone();
        }
        let made = ArcStr::from(text);
        if self.texts.len() < Self::SLOTS {
            self.texts.push(made.clone());
        } else if let Some(slot) = self.texts.get_mut(self.next) {
            *slot = made.clone();
            self.next = (self.next + 1) % Self::SLOTS;
        }
        made
    }
}

/// One event read straight from the request's bytes, for the shape that
/// clients send: the event whole in the buffer's current chunk, its fields
/// the known ones, each with its wire type, `occurred_at` at most once and
/// holding only its two fields, attribute entries only their key and value,
/// every varint well formed and all text UTF-8. For that shape it gives
/// what prost's decoding of [`Event`] gives (a later string or number
/// replaces an earlier one, as there); for anything else it answers `None`
/// and the event is read by prost, which also words every error. A
/// proptest in this module holds the two readers to the same outcome.
mod fast {
    use super::{AttributesEntry, Event, RecentTexts};

    /// Reads the length-delimited event at the front of `chunk` into
    /// `event` (reset), returning the bytes it took.
    pub(super) fn event(chunk: &[u8], event: &mut Event, texts: &mut RecentTexts) -> Option<usize> {
        let mut rest = chunk;
        let len = usize::try_from(varint(&mut rest)?).ok()?;
        let header = chunk.len() - rest.len();
        let mut body = rest.get(..len)?;
        while !body.is_empty() {
            // Keys as (field << 3) | wire type.
            match varint(&mut body)? {
                0x0a => string(&mut body, &mut event.event_id)?,
                0x12 => string(&mut body, &mut event.user_id)?,
                0x1a => string(&mut body, &mut event.action)?,
                0x22 if event.occurred_at.is_none() => {
                    event.occurred_at = Some(timestamp(field(&mut body)?)?);
                }
                // prost reads an int64 as the varint's bits.
                0x28 => event.amount_cents = Some(varint(&mut body)?.cast_signed()),
                0x32 => event.attributes.push(entry(field(&mut body)?, texts)?),
                _ => return None,
            }
        }
        Some(header + len)
    }

    fn timestamp(mut body: &[u8]) -> Option<prost_types::Timestamp> {
        let mut at = prost_types::Timestamp::default();
        while !body.is_empty() {
            match varint(&mut body)? {
                0x08 => at.seconds = varint(&mut body)?.cast_signed(),
                // An int32 is the varint's low 32 bits, as prost reads it.
                0x10 => at.nanos = varint(&mut body)? as i32,
                _ => return None,
            }
        }
        Some(at)
    }

    fn entry(mut body: &[u8], texts: &mut RecentTexts) -> Option<AttributesEntry> {
        let (mut key, mut value) = ("", "");
        while !body.is_empty() {
            match varint(&mut body)? {
                0x0a => key = text(&mut body)?,
                0x12 => value = text(&mut body)?,
                _ => return None,
            }
        }
        Some(AttributesEntry {
            key: texts.get(key),
            value: texts.get(value),
        })
    }

    fn string(bytes: &mut &[u8], into: &mut String) -> Option<()> {
        let text = text(bytes)?;
        into.clear();
        into.push_str(text);
        Some(())
    }

    fn text<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(field(bytes)?).ok()
    }

    /// A length-delimited field's bytes.
    fn field<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = usize::try_from(varint(bytes)?).ok()?;
        let taken = bytes.get(..len)?;
        *bytes = bytes.get(len..)?;
        Some(taken)
    }

    /// A varint of at most ten bytes whose tenth is 0 or 1 (what prost
    /// accepts). Not `prost::encoding::decode_varint`: through its `Buf`
    /// interface the blackhole ingest path measured 0.92-0.95 of this loop
    /// (docs/benchmarks.md, session 19).
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut value = 0;
        for (i, &byte) in bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == 9 && byte > 1 {
                    return None;
                }
                *bytes = bytes.get(i + 1..)?;
                return Some(value);
            }
        }
        None
    }
}

impl Event {
    /// Empty, as decoded from no bytes, keeping the buffers' room.
    fn reset(&mut self) {
        self.event_id.clear();
        self.user_id.clear();
        self.action.clear();
        self.occurred_at = None;
        self.amount_cents = None;
        self.attributes.clear();
    }
}

impl prost::Message for EventBatch {
    /// The servers never send a batch; this writes the events converted
    /// (all of them, for a valid batch) as a client would send them.
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.producer_id.is_empty() {
            encoding::string::encode(1, &self.producer_id, buf);
        }
        if self.sequence != 0 {
            encoding::uint64::encode(2, &self.sequence, buf);
        }
        for event in &self.events.converted {
            encoding::message::encode(3, &convert::event_to_wire(event), buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Errors name the field as prost's derive does.
        let named = |name: &'static str| {
            move |mut error: prost::DecodeError| {
                error.push("EventBatch", name);
                error
            }
        };
        match tag {
            1 => encoding::string::merge(wire_type, &mut self.producer_id, buf, ctx)
                .map_err(named("producer_id")),
            2 => encoding::uint64::merge(wire_type, &mut self.sequence, buf, ctx)
                .map_err(named("sequence")),
            3 => self
                .events
                .merge_one(wire_type, buf, ctx)
                .map_err(named("events")),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let producer = if self.producer_id.is_empty() {
            0
        } else {
            encoding::string::encoded_len(1, &self.producer_id)
        };
        let sequence = if self.sequence == 0 {
            0
        } else {
            encoding::uint64::encoded_len(2, &self.sequence)
        };
        let events: usize = self
            .events
            .converted
            .iter()
            .map(|event| encoding::message::encoded_len(3, &convert::event_to_wire(event)))
            .sum();
        producer + sequence + events
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use proptest::prelude::*;
    use prost::Message;
    use transform_engine::LogBatch;

    use super::*;
    use crate::{proto, status};

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

    /// What the servers make of a batch's bytes: the decode error, or the
    /// batch's fields and its conversion (events, or the refusal's code,
    /// message and details).
    type Outcome = Result<(String, u64, Result<LogBatch, (tonic::Code, String, Bytes)>), String>;

    fn refusal(status: &Status) -> (tonic::Code, String, Bytes) {
        (
            status.code(),
            status.message().to_owned(),
            status.details().to_vec().into(),
        )
    }

    /// Decoded as one pass, converted (this module).
    fn one_pass(bytes: impl Buf) -> Outcome {
        let batch = EventBatch::decode(bytes).map_err(|e| e.to_string())?;
        let (producer, sequence) = (batch.producer_id.clone(), batch.sequence);
        let converted = convert::event_batch_from_wire(batch).map_err(|s| refusal(&s));
        Ok((producer, sequence, converted))
    }

    /// The batch as the servers decoded it before: every event into a list
    /// of wire events first, then each converted, in order.
    #[derive(Clone, PartialEq, prost::Message)]
    struct WholeBatch {
        #[prost(string, tag = "1")]
        producer_id: String,
        #[prost(uint64, tag = "2")]
        sequence: u64,
        #[prost(message, repeated, tag = "3")]
        events: Vec<Event>,
    }

    fn two_passes(bytes: impl Buf) -> Outcome {
        // prost names the message in its errors; the name is the servers'.
        let batch = WholeBatch::decode(bytes)
            .map_err(|e| e.to_string().replace("WholeBatch", "EventBatch"))?;
        let convert = |batch: WholeBatch| {
            let invalid = |field: &str, reason: String| Err(status::invalid_field(field, reason));
            let chars = batch.producer_id.chars().count();
            if chars > 128 {
                return invalid("producer_id", format!("{chars} characters, at most 128"));
            }
            if batch.sequence == 0 {
                return invalid("sequence", "must be at least 1".to_owned());
            }
            match batch.events.len() {
                0 => return invalid("events", "a batch needs at least one event".to_owned()),
                n if n > MAX_BATCH_EVENTS => {
                    return invalid(
                        "events",
                        format!("{n} events, at most {MAX_BATCH_EVENTS} per batch"),
                    );
                }
                _ => {}
            }
            let mut events = Vec::new();
            for (i, event) in batch.events.into_iter().enumerate() {
                events.push(convert::event_from_wire(event, Some(i))?);
            }
            let producer =
                (!batch.producer_id.is_empty()).then_some((batch.producer_id, batch.sequence));
            Ok(LogBatch { producer, events })
        };
        let (producer, sequence) = (batch.producer_id.clone(), batch.sequence);
        Ok((producer, sequence, convert(batch).map_err(|s| refusal(&s))))
    }

    #[test]
    fn a_clients_batch_decodes_to_the_domains_events() {
        let sent = proto::EventBatch {
            producer_id: "p-1".into(),
            sequence: 7,
            events: vec![client_event(), {
                let mut second = client_event();
                second.event_id = String::new();
                second.occurred_at = None;
                second.amount_cents = None;
                second.attributes.clear();
                second
            }],
        };
        let bytes = sent.encode_to_vec();
        let batch = EventBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(batch.events.received(), 2);
        let got = convert::event_batch_from_wire(batch).unwrap();
        assert_eq!(got.producer, Some(("p-1".to_owned(), 7)));
        let event = &got.events[0];
        assert_eq!(event.event_id.as_ref().unwrap().as_str(), "evt-1");
        assert_eq!(event.user_id.as_str(), "u-1");
        assert_eq!(event.action, domain::Action::Purchase);
        assert_eq!(event.amount_cents, Some(domain::Cents::new(-1_299)));
        assert_eq!(event.attributes.get("country").map(|v| &**v), Some("DE"));
        assert_eq!(event.attributes.get("").map(|v| &**v), Some("empty key"));
        assert!(got.events[1].event_id.is_none() && got.events[1].attributes.is_empty());
        // The same as reading every event first and converting them after.
        let Ok((_, _, Ok(before))) = two_passes(bytes.as_slice()) else {
            panic!("the batch is valid")
        };
        assert_eq!(got, before);
        // And back: a valid batch encodes to what its client sent.
        let decoded = EventBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            proto::EventBatch::decode(decoded.encode_to_vec().as_slice()).unwrap(),
            sent
        );
    }

    #[test]
    fn the_first_invalid_event_is_named_and_later_malformed_bytes_still_fail() {
        let mut bad = client_event();
        bad.user_id = String::new();
        let mut batch = proto::EventBatch {
            producer_id: "p-1".into(),
            sequence: 1,
            events: vec![client_event(), bad.clone(), bad],
        };
        let refused = one_pass(batch.encode_to_vec().as_slice())
            .unwrap()
            .2
            .unwrap_err();
        assert_eq!(refused.0, tonic::Code::InvalidArgument);
        assert!(refused.1.contains("events[1].user_id"), "{}", refused.1);
        // Bytes that do not decode after the invalid event: a decode error,
        // as when every event was read first.
        batch.events.truncate(2);
        let mut bytes = batch.encode_to_vec();
        bytes.extend_from_slice(&[0x1a, 0x05, 0x0a]);
        let error = one_pass(bytes.as_slice()).unwrap_err();
        assert_eq!(Err(error.clone()), two_passes(bytes.as_slice()));
        assert!(error.contains("EventBatch.events"), "{error}");
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
        let whole = one_pass(bytes.as_slice());
        assert!(matches!(whole, Ok((_, _, Ok(_)))), "{whole:?}");
        for at in 0..bytes.len() {
            let (first, second) = bytes.split_at(at);
            assert_eq!(one_pass(first.chain(second)), whole, "split at byte {at}");
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

    /// Text for a field: valid, empty, too long, with NUL or control
    /// characters, or one of a few known values.
    fn text(known: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop_oneof![
            4 => proptest::sample::select(known).prop_map(str::to_owned),
            2 => "[a-z0-9-]{1,12}",
            1 => Just(String::new()),
            1 => "[a-z]{129,140}",
            1 => "[a-z]{0,3}\\x00[a-z]{0,3}",
            1 => "[ -~\\t\\n]{0,8}",
        ]
    }

    fn event() -> impl Strategy<Value = proto::Event> {
        (
            text(&["evt-1", "evt-2"]),
            text(&["u-1", "u-2"]),
            text(&["purchase", "login", "logout", "refund", "view"]),
            proptest::option::of((any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| {
                prost_types::Timestamp {
                    seconds: seconds % 400_000_000_000,
                    nanos,
                }
            })),
            proptest::option::of(any::<i64>()),
            proptest::collection::hash_map(
                text(&["country", "device", ""]),
                text(&["DE", ""]),
                0..4,
            ),
        )
            .prop_map(
                |(event_id, user_id, action, occurred_at, amount_cents, attributes)| proto::Event {
                    event_id,
                    user_id,
                    action,
                    occurred_at,
                    amount_cents,
                    attributes,
                },
            )
    }

    fn batch_bytes() -> impl Strategy<Value = Vec<u8>> {
        (
            text(&["p-1", ""]),
            prop_oneof![Just(0u64), 1..5u64, Just(u64::MAX)],
            proptest::collection::vec(event(), 0..6),
        )
            .prop_map(|(producer_id, sequence, events)| {
                proto::EventBatch {
                    producer_id,
                    sequence,
                    events,
                }
                .encode_to_vec()
            })
    }

    /// One field of an event as a client's encoder might write it, or not:
    /// any order, repeated, unknown, the timestamp or an entry with an
    /// extra field, a key spelled with a redundant varint byte.
    #[derive(Debug, Clone)]
    enum Field {
        Text(u32, String),
        Time {
            seconds: Option<i64>,
            nanos: Option<i32>,
            extra: bool,
        },
        Amount(i64),
        Entry {
            key: String,
            value: String,
            extra: bool,
        },
        Unknown(u32, u64),
        LongKey(u32, String),
    }

    fn field() -> impl Strategy<Value = Field> {
        let texts = || text(&["evt-1", "u-1", "purchase", "country", "DE"]);
        prop_oneof![
            6 => (1..4u32, texts()).prop_map(|(tag, text)| Field::Text(tag, text)),
            2 => (
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<i32>()),
                proptest::bool::weighted(0.2)
            )
                .prop_map(|(seconds, nanos, extra)| Field::Time { seconds, nanos, extra }),
            2 => any::<i64>().prop_map(Field::Amount),
            4 => (texts(), texts(), proptest::bool::weighted(0.1))
                .prop_map(|(key, value, extra)| Field::Entry { key, value, extra }),
            1 => (7..20u32, any::<u64>()).prop_map(|(tag, value)| Field::Unknown(tag, value)),
            1 => (1..4u32, texts()).prop_map(|(tag, text)| Field::LongKey(tag, text)),
        ]
    }

    fn raw_event(fields: &[Field]) -> Vec<u8> {
        let mut out = Vec::new();
        for field in fields {
            match field {
                Field::Text(tag, text) => encoding::string::encode(*tag, text, &mut out),
                Field::Time {
                    seconds,
                    nanos,
                    extra,
                } => {
                    // Either part may be left out, as an encoder leaves out
                    // a zero.
                    let mut at = Vec::new();
                    if let Some(seconds) = seconds {
                        encoding::int64::encode(1, seconds, &mut at);
                    }
                    if let Some(nanos) = nanos {
                        encoding::int32::encode(2, nanos, &mut at);
                    }
                    if *extra {
                        encoding::uint32::encode(3, &1, &mut at);
                    }
                    encoding::bytes::encode(4, &at, &mut out);
                }
                Field::Amount(cents) => encoding::int64::encode(5, cents, &mut out),
                Field::Entry { key, value, extra } => {
                    let mut entry = Vec::new();
                    encoding::string::encode(1, key, &mut entry);
                    encoding::string::encode(2, value, &mut entry);
                    if *extra {
                        encoding::uint32::encode(3, &1, &mut entry);
                    }
                    encoding::bytes::encode(6, &entry, &mut out);
                }
                Field::Unknown(tag, value) => encoding::uint64::encode(*tag, value, &mut out),
                Field::LongKey(tag, text) => {
                    // The key's varint with a redundant continuation byte.
                    out.extend_from_slice(&[(((tag << 3) | 2) as u8) | 0x80, 0x00]);
                    encoding::encode_varint(text.len() as u64, &mut out);
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        out
    }

    fn raw_batch_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::collection::vec(field(), 0..10), 1..5).prop_map(
            |events| {
                let mut out = Vec::new();
                encoding::string::encode(1, &"p-1".to_owned(), &mut out);
                encoding::uint64::encode(2, &1, &mut out);
                for fields in &events {
                    encoding::bytes::encode(3, &raw_event(fields), &mut out);
                }
                out
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// What a client's encoder writes is read by the fast reader, which
        /// gives what prost's decoding gives.
        #[test]
        fn a_clients_events_take_the_fast_reader(event in event()) {
            let mut bytes = Vec::new();
            encoding::message::encode(3, &event, &mut bytes);
            let field = bytes.get(1..).unwrap();
            let mut fast = Event::default();
            let taken = fast::event(field, &mut fast, &mut RecentTexts::default());
            prop_assert_eq!(taken, Some(field.len()));
            prop_assert_eq!(fast, Event::decode_length_delimited(field).unwrap());
        }

        /// Events in any field order, with repeated, unknown or extra fields
        /// and redundant varint bytes, whole or damaged: one pass (the fast
        /// reader where it applies) agrees with prost reading every event
        /// first.
        #[test]
        fn one_pass_agrees_with_two_on_events_in_any_shape(
            bytes in raw_batch_bytes(),
            at in any::<proptest::sample::Index>(),
            value in any::<u8>(),
            how in 0..4u8,
        ) {
            let mut bytes = bytes;
            let at = at.index(bytes.len());
            match how {
                0 => bytes[at] = value,
                1 => { bytes.remove(at); }
                2 => bytes.truncate(at),
                _ => {}
            }
            prop_assert_eq!(one_pass(bytes.as_slice()), two_passes(bytes.as_slice()));
        }

        /// Decoding and converting in one pass gives what decoding every
        /// event first and converting after gave: the same events, the same
        /// refusal (code, message, details), the same decode error.
        #[test]
        fn one_pass_agrees_with_two(bytes in batch_bytes()) {
            prop_assert_eq!(one_pass(bytes.as_slice()), two_passes(bytes.as_slice()));
        }

        /// The same for damaged bytes: one changed, dropped or cut off.
        #[test]
        fn one_pass_agrees_with_two_on_damaged_bytes(
            bytes in batch_bytes(),
            at in any::<proptest::sample::Index>(),
            value in any::<u8>(),
            how in 0..3u8,
        ) {
            let mut bytes = bytes;
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                match how {
                    0 => bytes[at] = value,
                    1 => { bytes.remove(at); }
                    _ => bytes.truncate(at),
                }
            }
            prop_assert_eq!(one_pass(bytes.as_slice()), two_passes(bytes.as_slice()));
        }
    }

    #[test]
    fn a_ten_byte_varint_is_read_as_prost_reads_it() {
        // amount_cents as ten bytes: a tenth byte of 1 (a negative int64)
        // is read; 2 overflows 64 bits and fails, whoever reads it.
        for (last, readable) in [(0x01, true), (0x02, false)] {
            let mut event = vec![0x12, 0x01, b'u', 0x1a, 0x01, b'v', 0x28];
            event.extend_from_slice(&[0xff; 9]);
            event.push(last);
            let mut bytes = vec![0x10, 0x01];
            encoding::bytes::encode(3, &event, &mut bytes);
            let mut taken = Event::default();
            let fast = fast::event(
                bytes.get(3..).unwrap(),
                &mut taken,
                &mut RecentTexts::default(),
            );
            assert_eq!(fast.is_some(), readable);
            let outcome = one_pass(bytes.as_slice());
            assert_eq!(outcome, two_passes(bytes.as_slice()));
            assert_eq!(outcome.is_ok(), readable, "{outcome:?}");
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
