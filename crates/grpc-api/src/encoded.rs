//! [`Encoded`]: a message the servers send already encoded.
//! [`EncodedOrder`] is the `orderflow.v1.Order` they answer with;
//! [`EncodedPage`], SubscribeEvents' `EventPage`.
//!
//! A cached order is an immutable snapshot, so its response bytes are too:
//! GetOrder asks the snapshot for them ([`storage::FoundOrder::form`]), and
//! a hit copies bytes instead of formatting ids into strings and encoding
//! them again (docs/benchmarks.md). `build.rs` makes the servers' methods
//! that answer an `Order` answer this type; clients still decode
//! `orderflow_proto::proto::Order`, and the bytes on the wire are the same.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use domain::Order;
use prost::Message;
use prost::encoding::{DecodeContext, WireType};

use crate::{convert, proto};

/// A message of type `M`, already encoded: sending it copies its bytes.
pub struct Encoded<M> {
    bytes: Bytes,
    message: PhantomData<fn() -> M>,
}

/// An `orderflow.v1.Order`, encoded once per cached snapshot.
pub type EncodedOrder = Encoded<proto::Order>;

/// An `orderflow.v1.EventPage`, encoded once and sent to every subscriber
/// that asks for the same page (`crate::subscribe`).
pub type EncodedPage = Encoded<proto::EventPage>;

impl<M> Encoded<M> {
    /// Bytes already encoded as an `M`.
    pub(crate) fn from_encoded(bytes: Bytes) -> Self {
        Self {
            bytes,
            message: PhantomData,
        }
    }

    /// The encoded message.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl<M: Message> Encoded<M> {
    /// The encoding of `message`.
    pub fn of(message: &M) -> Self {
        Self::from_encoded(message.encode_to_vec().into())
    }
}

impl EncodedOrder {
    /// The encoding of `order` on the wire.
    pub fn new(order: &Order) -> Self {
        Self::of(&convert::order_to_wire(order))
    }
}

impl storage::OrderForm for EncodedOrder {
    fn of(order: &Order) -> Self {
        Self::new(order)
    }
}

// By hand rather than derived: a derive would ask the same of `M`.
impl<M> Clone for Encoded<M> {
    fn clone(&self) -> Self {
        Self::from_encoded(self.bytes.clone())
    }
}

impl<M> Default for Encoded<M> {
    fn default() -> Self {
        Self::from_encoded(Bytes::new())
    }
}

impl<M> PartialEq for Encoded<M> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<M> Eq for Encoded<M> {}

impl<M> std::fmt::Debug for Encoded<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Encoded").field(&self.bytes).finish()
    }
}

impl<M: Message + Default> Message for Encoded<M> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    /// Decodes one field as `M` would (so malformed input fails the same
    /// way) and appends its encoding. The servers never decode these types;
    /// this keeps them faithful `Message`s all the same.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let mut field = M::default();
        field.merge_field(tag, wire_type, buf, ctx)?;
        let mut bytes = BytesMut::from(&self.bytes[..]);
        field.encode_raw(&mut bytes);
        self.bytes = bytes.freeze();
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::EncodedOrder;
    use crate::proto;

    fn order() -> proto::Order {
        proto::Order {
            order_id: "0190a6f4-5e2b-7c3d-9a1b-2c3d4e5f6a7b".to_owned(),
            user_id: "user-1".to_owned(),
            status: 2,
            lines: vec![
                proto::OrderLine {
                    product_id: "SKU-1".to_owned(),
                    quantity: 3,
                    unit_price_cents: 1250,
                },
                proto::OrderLine {
                    product_id: "SKU-2".to_owned(),
                    quantity: 1,
                    unit_price_cents: 99,
                },
            ],
            total_cents: 3849,
            currency: "EUR".to_owned(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            updated_at: None,
            version: 4,
        }
    }

    #[test]
    fn decoding_and_encoding_again_keeps_the_message() {
        let wire = order().encode_to_vec();
        let encoded = EncodedOrder::decode(wire.as_slice()).unwrap();
        assert_eq!(
            proto::Order::decode(encoded.bytes().clone()).unwrap(),
            order()
        );
        assert_eq!(encoded.encode_to_vec(), wire);
    }

    #[test]
    fn malformed_input_fails_as_for_the_message_itself() {
        // Field 2 (user_id) as a length-delimited string that is not UTF-8.
        let bad = [0x12, 0x02, 0xff, 0xfe];
        assert!(proto::Order::decode(&bad[..]).is_err());
        assert!(EncodedOrder::decode(&bad[..]).is_err());
    }
}
