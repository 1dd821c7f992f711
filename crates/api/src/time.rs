//! [`Time`]: the one serde adapter of the API's times. Every time in a JSON body of the API
//! is an RFC 3339 string in UTC with microseconds (`2026-11-25T04:20:00.000000Z`); the log
//! keeps µs since the epoch, and only this type turns one into the other.
//!
//! It must never be used for the log's own serialization (the core's `Timestamp` is).

use std::borrow::Cow;
use std::fmt;

use flowstate_core::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;

/// A time of the API: a [`Timestamp`] written as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub Timestamp);

impl From<Timestamp> for Time {
    fn from(time: Timestamp) -> Self {
        Self(time)
    }
}

impl From<Time> for Timestamp {
    fn from(time: Time) -> Self {
        time.0
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map(Self).map_err(|error| {
            serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {error}"))
        })
    }
}

impl utoipa::PartialSchema for Time {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("RFC 3339, UTC, microseconds"))
            .into()
    }
}

impl utoipa::ToSchema for Time {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_both_ways() {
        let time = Time(Timestamp::from_micros(1_700_000_000_123_456));
        let text = serde_json::to_string(&time).expect("serialize");
        assert_eq!(text, "\"2023-11-14T22:13:20.123456Z\"");
        let back: Time = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, time);
        assert!(serde_json::from_str::<Time>("1700000000123456").is_err());
    }
}
