//! Fuzz target: every wire decoder over arbitrary bytes.
//!
//! Decoding must never panic and never allocate past the frame limit: each
//! message type is decoded as a whole frame (`wire::decode`), as a bare body
//! (`wire::decode_body`), and requests also through `wire::decode_request`
//! with its version check and `wire::split_request` (header, then the
//! request body as bytes, which must decode exactly as the whole envelope
//! does). Whatever decodes must encode again and decode to the same value.
//! A request's head (kind and store, what a proxy routes on) read from the
//! bytes alone must be the head of the request they decode to.

#![no_main]

use gater_core::wire::{
    self, EncodedRequest, Request, RequestEnvelope, RequestHead, ResponseEnvelope,
    SubscriptionDown, SubscriptionUp,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A small limit, so oversize prefixes are exercised as often as valid ones.
const FRAME_BYTES_MAX: u32 = 64 * 1024;

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(Some((msg, used))) = wire::decode::<T>(data, FRAME_BYTES_MAX) {
        assert!(used <= data.len());
        let again = wire::encode(&msg, FRAME_BYTES_MAX).expect("a decoded message encodes");
        let (back, _) = wire::decode::<T>(&again, FRAME_BYTES_MAX)
            .expect("a re-encoded message decodes")
            .expect("a re-encoded frame is whole");
        assert_eq!(back, msg);
    }
    let _ = wire::decode_body::<T>(data);
}

fuzz_target!(|data: &[u8]| {
    check::<RequestEnvelope>(data);
    check::<ResponseEnvelope>(data);
    check::<SubscriptionUp>(data);
    check::<SubscriptionDown>(data);
    let whole = wire::decode_request(data);
    if let Ok((header, body)) = wire::split_request(data) {
        assert!(body.len() <= data.len());
        match (wire::decode_body::<Request>(body), &whole) {
            (Ok(request), Ok(envelope)) => {
                assert_eq!(header, envelope.header());
                assert_eq!(&request, &envelope.request);
            }
            (Err(_), Err(_)) => {}
            (body, whole) => panic!("header + body {body:?} but whole envelope {whole:?}"),
        }
    }
    let _ = wire::peek_version(data);
    if let (Ok(head), Ok(request)) = (RequestHead::read(data), wire::decode_body::<Request>(data)) {
        assert_eq!(head, request.head());
    }
    if let Ok(encoded) = EncodedRequest::from_bytes(data.to_vec().into()) {
        if let Ok(request) = encoded.decode() {
            assert_eq!(encoded.head(), &request.head());
        }
    }
});
