//! Flow ids: UUIDv7, so that ids sort by creation time (keyset paging and time-ordered
//! listings need no extra column), and so that an id from anywhere else is refused early.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Timestamp;

/// The id of one flow: a version-7 UUID whose first 48 bits are its creation time in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Uuid", into = "Uuid")]
pub struct FlowId(Uuid);

/// Why a text or a UUID is not a flow id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The text is not a UUID at all.
    #[error(
        "{text:?} is not a flow id: expected a UUID such as 0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"
    )]
    Malformed {
        /// The text that was given (truncated to 64 characters).
        text: String,
    },
    /// A UUID, but not version 7 (flow ids are time-ordered UUIDv7).
    #[error("{uuid} is a version-{version} UUID; flow ids are version-7 UUIDs")]
    WrongVersion {
        /// The UUID.
        uuid: Uuid,
        /// Its version number.
        version: usize,
    },
}

impl FlowId {
    /// Builds the id of a flow created at `time`, with caller-supplied randomness (the core
    /// draws none itself). Ids made in the same millisecond order by `random`.
    #[must_use]
    pub fn from_parts(time: Timestamp, random: [u8; 10]) -> Self {
        let millis = u64::try_from(time.as_millis()).unwrap_or(0);
        Self(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }

    /// The UUID.
    #[must_use]
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The 16 bytes, big-endian, which sort like the ids.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The creation time encoded in the id (millisecond precision).
    #[must_use]
    pub fn created_at(&self) -> Timestamp {
        let (secs, nanos) = self.0.get_timestamp().map_or((0, 0), |ts| ts.to_unix());
        let micros = i64::try_from(secs)
            .unwrap_or(i64::MAX / 1_000_000)
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(nanos / 1000));
        Timestamp::from_micros(micros)
    }

    /// Reads an id from its 16 bytes (as stored by the stores).
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, IdError> {
        Self::try_from(Uuid::from_bytes(bytes))
    }
}

impl TryFrom<Uuid> for FlowId {
    type Error = IdError;

    fn try_from(uuid: Uuid) -> Result<Self, IdError> {
        match uuid.get_version_num() {
            7 => Ok(Self(uuid)),
            version => Err(IdError::WrongVersion { uuid, version }),
        }
    }
}

impl From<FlowId> for Uuid {
    fn from(id: FlowId) -> Self {
        id.0
    }
}

impl FromStr for FlowId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, IdError> {
        let uuid = Uuid::try_parse(text.trim()).map_err(|_| IdError::Malformed {
            text: text.chars().take(64).collect(),
        })?;
        Self::try_from(uuid)
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time_and_round_trip() {
        let early = FlowId::from_parts(Timestamp::from_micros(1_000_000), [0xff; 10]);
        let late = FlowId::from_parts(Timestamp::from_micros(2_000_000), [0; 10]);
        assert!(early < late);
        assert_eq!(early.created_at(), Timestamp::from_micros(1_000_000));
        assert_eq!(early.to_string().parse::<FlowId>(), Ok(early));
        assert_eq!(FlowId::from_bytes(*late.as_bytes()), Ok(late));
    }

    #[test]
    fn foreign_text_and_other_uuid_versions_are_refused() {
        assert!(matches!(
            "not-an-id".parse::<FlowId>(),
            Err(IdError::Malformed { .. })
        ));
        let v4 = "9b2f6c1e-4f7a-4c1b-9a4e-2f0d7c3b1a55";
        assert!(matches!(
            v4.parse::<FlowId>(),
            Err(IdError::WrongVersion { version: 4, .. })
        ));
    }
}
