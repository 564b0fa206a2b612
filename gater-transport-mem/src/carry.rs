//! Carrying messages across the in-process link: moved as they are, or (codec
//! mode) encoded into a postcard frame and decoded back, as the wire would.

use gater_core::wire::{self, RequestEnvelope, ResponseEnvelope, FRAME_HEADER_LEN};
use gater_core::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How messages cross the link.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Codec {
    /// Round-trip every message through a frame.
    pub(crate) enabled: bool,
    /// Largest frame body.
    pub(crate) frame_bytes_max: u32,
}

impl Codec {
    /// Carries a message of any kind: the decoded frame must be the whole frame.
    pub(crate) fn carry<T: Serialize + DeserializeOwned>(&self, msg: T) -> Result<T, Error> {
        if !self.enabled {
            return Ok(msg);
        }
        let frame = wire::encode(&msg, self.frame_bytes_max)?;
        match wire::decode::<T>(&frame, self.frame_bytes_max)? {
            Some((msg, used)) if used == frame.len() => Ok(msg),
            _ => Err(Error::Protocol(
                "frame did not decode as one message".into(),
            )),
        }
    }

    /// Carries a request as a server receives it: the version is checked first.
    pub(crate) fn carry_request(
        &self,
        envelope: RequestEnvelope,
    ) -> Result<RequestEnvelope, Error> {
        if !self.enabled {
            return Ok(envelope);
        }
        let frame = wire::encode(&envelope, self.frame_bytes_max)?;
        let mut header = [0; FRAME_HEADER_LEN];
        header.copy_from_slice(&frame[..FRAME_HEADER_LEN]);
        let len = wire::body_len(header, self.frame_bytes_max)?;
        Ok(wire::decode_request(
            &frame[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len],
        )?)
    }

    /// Carries a response as a server sends it: an answer that does not fit a
    /// frame becomes the error saying so, as on the wire.
    pub(crate) fn carry_response(
        &self,
        envelope: ResponseEnvelope,
    ) -> Result<ResponseEnvelope, Error> {
        let envelope_id = envelope.id;
        match self.carry(envelope) {
            Ok(envelope) => Ok(envelope),
            Err(e @ Error::LimitExceeded { .. }) => {
                let id = envelope_id;
                let refusal = ResponseEnvelope {
                    id,
                    result: Err(e.clone()),
                };
                // A limit so small that even the refusal does not fit: hand it over as is.
                Ok(self
                    .carry(refusal)
                    .unwrap_or(ResponseEnvelope { id, result: Err(e) }))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use gater_core::wire::{Request, Response, PROTOCOL_VERSION};

    use super::*;

    #[test]
    fn codec_mode_refuses_a_request_of_another_version() {
        let codec = Codec {
            enabled: true,
            frame_bytes_max: 1024,
        };
        let mut envelope = RequestEnvelope::new(Request::ListStores, None);
        envelope.version = PROTOCOL_VERSION + 1;
        let err = codec.carry_request(envelope).unwrap_err();
        assert_eq!(err.kind(), "unsupported_version");
    }

    #[test]
    fn an_oversize_response_becomes_a_limit_error() {
        let codec = Codec {
            enabled: true,
            frame_bytes_max: 48,
        };
        let big = ResponseEnvelope {
            id: 3,
            result: Ok(Response::Snapshot(gater_core::Snapshot {
                key: gater_core::SnapshotKey {
                    source: "s".into(),
                    stream: "t".into(),
                    version: 0,
                },
                data: vec![7; 64],
                created_us: 0,
            })),
        };
        let carried = codec.carry_response(big).unwrap();
        assert!(matches!(carried.result, Err(Error::LimitExceeded { .. })));
        assert_eq!(carried.id, 3, "the refusal answers the same request");
    }
}
