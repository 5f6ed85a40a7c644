//! The fast path for reading a stored event: the compact JSON this server
//! writes (`domain::Event` through serde_json: no whitespace, strings
//! mostly without escapes), read by hand in one pass, borrowing every
//! string.
//!
//! It takes a subset of what serde_json takes, and for that subset gives
//! what serde_json gives. Anything outside it answers `None`: whitespace, an
//! escape or control character in a string, `null`, a repeated or unknown
//! field, any number that is not a plain integer. The caller then reads the
//! text with serde_json, which has the last word (its value, or its error).
//! `tests::agrees_with_serde_json` holds the two together over generated
//! and damaged texts.
//!
//! Why by hand: a subscriber catching up spends most of the server's time
//! here, and serde_json's general reader (any field order, escapes, the
//! visitor layers and the moves of the struct through them) was a third of
//! it.

use std::borrow::Cow;

use super::{Attribute, Attributes, StoredJson};

/// `text` read, if it is in the compact form; `None` to ask serde_json.
pub(super) fn read(text: &str) -> Option<StoredJson<'_>> {
    // One look at the whole text: then a string ends at the next quote.
    if needs_serde(text.as_bytes()) {
        return None;
    }
    let mut reader = Reader { text, at: 0 };
    let mut fields = Fields::default();
    reader.eat(b'{')?;
    loop {
        let key = reader.string()?;
        reader.eat(b':')?;
        match key {
            "event_id" => once(&mut fields.event_id, reader.string()?)?,
            "user_id" => once(&mut fields.user_id, reader.string()?)?,
            "action" => once(&mut fields.action, reader.string()?)?,
            "occurred_at" => once(&mut fields.occurred_at, reader.string()?)?,
            "amount_cents" => once(&mut fields.amount_cents, reader.integer()?)?,
            "attributes" => once(&mut fields.attributes, reader.attributes()?)?,
            _ => return None,
        }
        if reader.eat(b',').is_none() {
            break;
        }
    }
    reader.eat(b'}')?;
    if reader.at != text.len() {
        return None;
    }
    Some(StoredJson {
        event_id: fields.event_id.map(Cow::Borrowed),
        user_id: Cow::Borrowed(fields.user_id?),
        action: Cow::Borrowed(fields.action?),
        occurred_at: fields.occurred_at.map(Cow::Borrowed),
        amount_cents: fields.amount_cents,
        attributes: fields.attributes.unwrap_or_default(),
    })
}

/// Whether `bytes` hold a backslash or a control character. In chunks
/// folded without an early exit, which the compiler turns into vector
/// compares (a byte-at-a-time `any` was half of [`read`]'s time).
fn needs_serde(bytes: &[u8]) -> bool {
    bytes.chunks(32).any(|chunk| {
        chunk
            .iter()
            .fold(false, |found, &b| found | (b == b'\\') | (b < 0x20))
    })
}

/// The fields seen so far.
#[derive(Default)]
struct Fields<'a> {
    event_id: Option<&'a str>,
    user_id: Option<&'a str>,
    action: Option<&'a str>,
    occurred_at: Option<&'a str>,
    amount_cents: Option<i64>,
    attributes: Option<Attributes<'a>>,
}

/// Sets `slot` to `value` if it is empty: a repeated field is serde's to
/// refuse.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

struct Reader<'a> {
    text: &'a str,
    /// Bytes read; always at a character boundary (every byte it steps
    /// over one at a time is ASCII).
    at: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a [u8] {
        self.text.as_bytes().get(self.at..).unwrap_or_default()
    }

    /// Steps over `byte` if it is next.
    fn eat(&mut self, byte: u8) -> Option<()> {
        if self.rest().first() == Some(&byte) {
            self.at += 1;
            Some(())
        } else {
            None
        }
    }

    /// A string, borrowed ([`read`] has made sure the text holds no
    /// escapes or control characters).
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let len = memchr::memchr(b'"', self.rest())?;
        let start = self.at;
        self.at += len + 1;
        self.text.get(start..start + len)
    }

    /// An integer as JSON writes one (`-`, then `0` or digits not starting
    /// with `0`), within `i64`, and not followed by a fraction or exponent.
    fn integer(&mut self) -> Option<i64> {
        let rest = self.rest();
        let sign = usize::from(rest.first() == Some(&b'-'));
        let digits = rest.get(sign..)?;
        let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        let leading_zero = digits.first() == Some(&b'0') && (len > 1 || sign == 1);
        let fraction = matches!(digits.get(len), Some(b'.' | b'e' | b'E'));
        if len == 0 || leading_zero || fraction {
            return None;
        }
        let text = self.text.get(self.at..self.at + sign + len)?;
        let value = text.parse().ok()?;
        self.at += text.len();
        Some(value)
    }

    /// An object of strings, entries in order (a repeated key is kept
    /// twice, as the serde reader keeps it).
    fn attributes(&mut self) -> Option<Attributes<'a>> {
        self.eat(b'{')?;
        let mut entries = Vec::new();
        if self.eat(b'}').is_some() {
            return Some(Attributes(entries));
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            let value = self.string()?;
            entries.push(Attribute(Cow::Borrowed(key), Cow::Borrowed(value)));
            if self.eat(b',').is_none() {
                break;
            }
        }
        self.eat(b'}')?;
        Some(Attributes(entries))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::read;
    use crate::stored::StoredJson;

    /// What serde_json reads from `text`, if anything.
    fn serde(text: &str) -> Option<StoredJson<'_>> {
        serde_json::from_str(text).ok()
    }

    /// A JSON string literal: plain, or with characters JSON must escape.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z0-9._:-]{0,12}",
            1 => "[a-z\"\\\\\u{1}\u{e9}\u{1F600} ]{0,6}",
        ]
    }

    /// A stored event's JSON: the fields in any order, some missing, some
    /// of unexpected types, written compact or pretty.
    fn document() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            4 => text().prop_map(serde_json::Value::from),
            2 => any::<i64>().prop_map(serde_json::Value::from),
            1 => any::<u64>().prop_map(serde_json::Value::from),
            1 => Just(serde_json::Value::Null),
            1 => (-1e6f64..1e6).prop_map(serde_json::Value::from),
            2 => prop::collection::vec((text(), text()), 0..4).prop_map(|entries| {
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, v.into())).collect(),
                )
            }),
        ];
        let key = prop_oneof![
            Just("event_id"),
            Just("user_id"),
            Just("action"),
            Just("occurred_at"),
            Just("amount_cents"),
            Just("attributes"),
            Just("extra"),
        ];
        (prop::collection::vec((key, value), 0..8), any::<bool>()).prop_map(|(fields, pretty)| {
            // Built by hand so that a key can repeat.
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(key, value)| format!("\"{key}\":{value}"))
                .collect();
            if pretty {
                format!("{{ {} }}\n", fields.join(", "))
            } else {
                format!("{{{}}}", fields.join(","))
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Whatever the fast path reads, serde_json reads the same.
        #[test]
        fn agrees_with_serde_json(text in document()) {
            if let Some(fast) = read(&text) {
                prop_assert_eq!(Some(fast), serde(&text));
            }
        }

        /// ... also on damaged text: a byte changed, dropped or cut off.
        #[test]
        fn agrees_on_damaged_text(
            text in document(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"{}[]\",:-0.e1\\ n".to_vec()),
            how in 0..3u8,
        ) {
            let mut bytes = text.into_bytes();
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                match how {
                    0 => bytes[at] = byte,
                    1 => { bytes.remove(at); }
                    _ => bytes.truncate(at),
                }
            }
            if let Ok(text) = String::from_utf8(bytes)
                && let Some(fast) = read(&text)
            {
                prop_assert_eq!(Some(fast), serde(&text));
            }
        }

        /// What this server stores takes the fast path whenever its
        /// strings need no escapes.
        #[test]
        fn the_stored_form_takes_the_fast_path(
            event_id in prop::option::of("[a-z0-9-]{1,12}"),
            user_id in "[a-z0-9-]{1,12}",
            action in "[a-z]{1,10}",
            at_millis in prop::option::of(0i64..4_000_000_000_000),
            amount_cents in prop::option::of(any::<i64>()),
            attributes in prop::collection::btree_map("[a-z]{1,8}", "[a-z0-9 ]{0,8}", 0..4),
        ) {
            let mut fields = serde_json::Map::new();
            if let Some(id) = event_id {
                fields.insert("event_id".into(), id.into());
            }
            fields.insert("user_id".into(), user_id.into());
            fields.insert("action".into(), action.into());
            if let Some(at) = at_millis.and_then(chrono::DateTime::from_timestamp_millis) {
                fields.insert("occurred_at".into(), at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into());
            }
            if let Some(cents) = amount_cents {
                fields.insert("amount_cents".into(), cents.into());
            }
            if !attributes.is_empty() {
                fields.insert(
                    "attributes".into(),
                    attributes.into_iter().map(|(k, v)| (k, v.into())).collect::<serde_json::Map<_, _>>().into(),
                );
            }
            let input = serde_json::Value::Object(fields).to_string();
            let event = domain::Event::from_json(&input).map_err(|e| TestCaseError::fail(format!("{input}: {e}")))?;
            // What the store keeps: the domain's canonical form.
            let text = event.to_json().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let fast = read(&text);
            prop_assert!(fast.is_some(), "{}", text);
            prop_assert_eq!(fast, serde(&text));
        }
    }

    #[test]
    fn escapes_and_whitespace_go_to_serde_json() {
        for text in [
            r#"{"user_id":"a\"b","action":"x"}"#,
            r#"{"user_id":"u", "action":"x"}"#,
            r#"{"user_id":"u","action":"x"} "#,
            r#"{"event_id":null,"user_id":"u","action":"x"}"#,
            r#"{"user_id":"u","action":"x","amount_cents":-0}"#,
            r#"{"user_id":"u","action":"x","amount_cents":1.0}"#,
            r#"{"user_id":"u","action":"x","amount_cents":9223372036854775808}"#,
            r#"{"user_id":"u","user_id":"v","action":"x"}"#,
        ] {
            assert!(read(text).is_none(), "{text}");
        }
        let plain =
            r#"{"user_id":"u","action":"x","amount_cents":-12,"attributes":{"k":"v","k":"w"}}"#;
        assert_eq!(read(plain), serde(plain));
        assert!(read(plain).is_some());
    }
}
