//! Events encoded once. An `AppendRequest` is nothing but its events, each one its field 1 (a
//! tag, a length, the encoded `Event`), so the concatenation of encoded events *is* the request:
//! an event is encoded where it is recorded, and its bytes are what the batch holds, the
//! journal and the spool write, and `Append` sends, without decoding, copying field by field
//! or encoding it again.

use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::audit::v1 as pb;
use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Status};

/// One event, encoded as an `AppendRequest`'s field 1.
#[derive(Debug, Clone)]
pub(crate) struct Frame(Vec<u8>);

impl Frame {
    pub(crate) fn of(event: &pb::Event) -> Self {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        // The length once: `message::encode` would walk the event for it a second time.
        let len = event.encoded_len();
        let mut bytes = Vec::with_capacity(1 + encoded_len_varint(len as u64) + len);
        encode_key(1, WireType::LengthDelimited, &mut bytes);
        encode_varint(len as u64, &mut bytes);
        event.encode_raw(&mut bytes);
        Self(bytes)
    }
}

/// Encoded events in order: the body of one `AppendRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Events {
    bytes: Vec<u8>,
    count: usize,
}

impl Events {
    /// The events of an encoded `AppendRequest`, if it is one.
    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        let request = pb::AppendRequest::decode(body).ok()?;
        Some(Self {
            bytes: body.to_vec(),
            count: request.events.len(),
        })
    }

    pub(crate) fn push(&mut self, frame: &Frame) {
        self.bytes.extend_from_slice(&frame.0);
        self.count += 1;
    }

    /// How many events.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded `AppendRequest`.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// `AuditLog/Append` with a request already encoded.
#[derive(Debug, Clone)]
pub(crate) struct AppendClient(tonic::client::Grpc<AuthenticatedChannel>);

impl AppendClient {
    pub(crate) fn new(channel: AuthenticatedChannel) -> Self {
        Self(tonic::client::Grpc::new(channel))
    }

    pub(crate) async fn append(&mut self, events: &Events) -> Result<(), Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("audit-log: {e}")))?;
        let path = http::uri::PathAndQuery::from_static("/agentauth.audit.v1.AuditLog/Append");
        let request = Request::new(Bytes::copy_from_slice(events.bytes()));
        self.0.unary(request, path, RawCodec).await.map(drop)
    }
}

/// Sends bytes as they are; reads the `AppendResponse`.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = pb::AppendResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = pb::AppendResponse;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let answer = pb::AppendResponse::decode(buf.copy_to_bytes(buf.remaining()))
            .map_err(|e| Status::internal(format!("an unreadable AppendResponse: {e}")))?;
        Ok(Some(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> pb::Event {
        pb::Event {
            event_id: format!("id-{n}"),
            tenant: "acme".into(),
            action: "tool.executed".into(),
            details_json: format!(r#"{{"n":{n}}}"#),
            ..Default::default()
        }
    }

    #[test]
    fn concatenated_frames_are_the_append_request() {
        let sent = vec![event(1), event(2), event(3)];
        let mut events = Events::default();
        for e in &sent {
            events.push(&Frame::of(e));
        }
        assert_eq!(events.len(), 3);
        assert_eq!(
            events.bytes(),
            pb::AppendRequest {
                events: sent.clone()
            }
            .encode_to_vec()
        );
        let decoded = Events::decode(events.bytes()).expect("an AppendRequest");
        assert_eq!(decoded, events);
        assert_eq!(
            pb::AppendRequest::decode(decoded.bytes())
                .expect("decodes")
                .events,
            sent
        );
    }

    #[test]
    fn bytes_that_are_no_append_request_are_refused() {
        assert_eq!(Events::decode(&[0x0a, 0x05, 0x01]), None);
        assert_eq!(Events::decode(&[]).map(|e| e.len()), Some(0));
    }
}
