//! The servers' protobuf codec: tonic-prost's, except for who is blamed when
//! a request does not decode.
//!
//! A body that is not valid protobuf, or a string field that is not UTF-8, is
//! the client's fault, so it answers INVALID_ARGUMENT. tonic-prost maps every
//! decode error to INTERNAL (right for a client reading a server's response,
//! which is why the generated clients keep its codec). Mid-stream messages
//! pass through the same decoder, so streams get the same answer.
//! `tests/integration/layers.rs` sends such bodies to every kind of RPC.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The codec every generated server uses (`build.rs` names it).
#[derive(Debug, Clone, Copy)]
pub struct RequestCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// Decodes requests; see the module documentation.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(blame_client)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// INTERNAL from prost's decoder means the bytes did not decode: the
/// client's error. prost's message names the message and field that failed
/// and never quotes the bytes, so it is kept.
fn blame_client(status: Status) -> Status {
    if status.code() == Code::Internal {
        crate::status::error(crate::status::Reason::MalformedRequest, status.message()).status()
    } else {
        status
    }
}
