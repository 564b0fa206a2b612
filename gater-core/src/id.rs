//! Validated identifiers: a value of these types is always well formed.
//!
//! Parse, don't validate: every constructor checks its input once, and
//! deserialisation goes through the same check, so a peer cannot smuggle an
//! invalid id past the type system.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::IdError;

/// Longest store id, in bytes.
pub const STORE_ID_LEN_MAX: usize = 64;
/// Longest stream id, in bytes.
pub const STREAM_ID_LEN_MAX: usize = 256;

/// The id of a store: 1 to 64 characters out of `[a-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StoreId(String);

impl StoreId {
    /// Checks `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        if id.is_empty() || id.len() > STORE_ID_LEN_MAX {
            return Err(IdError::StoreIdLength { len: id.len() });
        }
        if let Some(c) = id
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        {
            return Err(IdError::StoreIdChar { id, c });
        }
        Ok(StoreId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of a stream: 1 to 256 bytes of UTF-8 without control characters.
///
/// Ids starting with `$` are reserved for the system: [`StreamId::new`]
/// refuses them, [`StreamId::all`] names the whole log for subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

/// The reserved stream id that stands for every stream of a store.
pub const ALL_STREAM: &str = "$all";

impl StreamId {
    /// Checks a user stream id and wraps it; `$`-prefixed ids are refused.
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        Self::check_shape(&id)?;
        if id.starts_with('$') {
            return Err(IdError::StreamIdReserved { id });
        }
        Ok(StreamId(id))
    }

    /// The `$all` pseudo-stream, used by `ByStream` subscriptions over the whole log.
    pub fn all() -> Self {
        StreamId(ALL_STREAM.to_owned())
    }

    /// Whether this is the `$all` pseudo-stream.
    pub fn is_all(&self) -> bool {
        self.0 == ALL_STREAM
    }

    /// Accepts a user id or one of the system ids (`$all`).
    pub fn parse_selector(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        if id == ALL_STREAM {
            return Ok(Self::all());
        }
        Self::new(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check_shape(id: &str) -> Result<(), IdError> {
        if id.is_empty() || id.len() > STREAM_ID_LEN_MAX {
            return Err(IdError::StreamIdLength { len: id.len() });
        }
        if id.chars().any(char::is_control) {
            return Err(IdError::StreamIdControl);
        }
        Ok(())
    }
}

/// The id of an event: a UUID chosen by the writer, unique within a store.
///
/// Appends are idempotent by event id: re-sending the same ids at the same
/// place returns the original result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// Wraps a UUID.
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        EventId(id)
    }

    /// Builds an id from 16 raw bytes (callers bring their own randomness).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        EventId(uuid::Uuid::from_bytes(bytes))
    }

    /// Builds a random (version 4) id from 16 bytes of entropy supplied by the caller.
    pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
        EventId(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// The UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// The 16 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

macro_rules! text_id_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.0
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
text_id_impls!(StoreId);
text_id_impls!(StreamId);

impl TryFrom<String> for StoreId {
    type Error = IdError;
    fn try_from(id: String) -> Result<Self, IdError> {
        StoreId::new(id)
    }
}

impl FromStr for StoreId {
    type Err = IdError;
    fn from_str(id: &str) -> Result<Self, IdError> {
        StoreId::new(id)
    }
}

impl TryFrom<String> for StreamId {
    type Error = IdError;
    /// Accepts `$all` as well as user ids: a deserialised id may name the whole log.
    fn try_from(id: String) -> Result<Self, IdError> {
        StreamId::parse_selector(id)
    }
}

impl FromStr for StreamId {
    type Err = IdError;
    fn from_str(id: &str) -> Result<Self, IdError> {
        StreamId::new(id)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for EventId {
    type Err = IdError;
    fn from_str(id: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(id)
            .map(EventId)
            .map_err(|_| IdError::EventId { id: id.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_store(input: &str, ok: bool) {
        assert_eq!(StoreId::new(input).is_ok(), ok, "store id {input:?}");
    }

    #[test]
    fn store_ids_accept_only_lowercase_digits_dash_underscore() {
        check_store("orders", true);
        check_store("a-b_c-9", true);
        check_store(&"x".repeat(64), true);
        check_store(&"x".repeat(65), false);
        check_store("", false);
        check_store("Orders", false);
        check_store("a b", false);
        check_store("a.b", false);
        check_store("é", false);
    }

    #[test]
    fn stream_ids_refuse_empty_long_control_and_reserved() {
        assert!(StreamId::new("account-1").is_ok());
        assert!(StreamId::new("ünïcode/ok:1").is_ok());
        assert!(StreamId::new("x".repeat(256)).is_ok());
        assert!(StreamId::new("x".repeat(257)).is_err());
        assert!(StreamId::new("").is_err());
        assert!(StreamId::new("a\nb").is_err());
        assert!(matches!(
            StreamId::new("$all"),
            Err(IdError::StreamIdReserved { .. })
        ));
        assert!(StreamId::parse_selector("$all").unwrap().is_all());
        assert!(StreamId::parse_selector("$other").is_err());
    }

    #[test]
    fn deserialising_an_invalid_store_id_fails() {
        let bytes = postcard::to_stdvec(&"BAD ID".to_owned()).unwrap();
        assert!(postcard::from_bytes::<StoreId>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&"good".to_owned()).unwrap();
        assert_eq!(
            postcard::from_bytes::<StoreId>(&bytes).unwrap().as_str(),
            "good"
        );
    }

    #[test]
    fn event_ids_parse_uuids_and_refuse_garbage() {
        let id: EventId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        assert_eq!(id.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert!("not-a-uuid".parse::<EventId>().is_err());
        assert_eq!(
            EventId::from_random_bytes([7; 16]).uuid().get_version_num(),
            4
        );
    }
}
