//! A flow's events as `GET /flows/{id}/events` answers them ([`EventPage`] of
//! [`EventView`]s), and the messages of the event streams ([`StreamMessage`]).
//!
//! An event body is the log's JSON except for its times: the bodies that hold one are
//! mirrored in [`TimedBody`] (their times [`Time`]s), every other body is the core's
//! `EventBody` as it is. It must never give a body a time in µs.

use flowstate_core::{Event, EventBody, Failure, FlowId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{AdditionalProperties, AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::record::JournalEntryView;
use crate::time::Time;

/// Query parameters of `GET /flows/{id}/events` and `GET /flows/{id}/stream`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Events after this sequence number (default 0: from the first).
    #[serde(default)]
    pub after: u64,
    /// Most events to answer (1 to 1000; default 1000). Not read by the stream.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A page of a flow's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<EventView>,
    /// Read from the archive (the flow is no longer in the live store).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub archived: bool,
}

/// One event of a flow's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Its position in the log, dense from 1.
    pub seq: u64,
    /// When it was recorded.
    pub time: Time,
    /// Its type (the body's `type`).
    #[serde(rename = "type")]
    pub kind: String,
    /// What happened.
    pub body: EventBodyView,
}

impl From<&Event> for EventView {
    fn from(event: &Event) -> Self {
        Self {
            seq: event.seq,
            time: event.time.into(),
            kind: event.body.type_name().to_owned(),
            body: EventBodyView::from(&event.body),
        }
    }
}

/// An event body: one of the bodies that hold a time, or any other as the log has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventBodyView {
    /// A body with a time.
    Timed(TimedBody),
    /// A body without one: the log's JSON.
    Other(EventBody),
}

impl From<&EventBody> for EventBodyView {
    fn from(body: &EventBody) -> Self {
        match body.clone() {
            EventBody::RetryScheduled {
                step,
                item,
                attempt,
                failure,
                due,
            } => Self::Timed(TimedBody::RetryScheduled {
                step,
                item,
                attempt,
                failure,
                due: due.into(),
            }),
            EventBody::CompensationFailed {
                step,
                item,
                failure,
                retry_due,
            } => Self::Timed(TimedBody::CompensationFailed {
                step,
                item,
                failure,
                retry_due: retry_due.map(Time::from),
            }),
            EventBody::JournalEntryRecorded { position, entry } => {
                Self::Timed(TimedBody::JournalEntryRecorded {
                    position,
                    entry: JournalEntryView::from(&entry),
                })
            }
            EventBody::BranchEntryRecorded {
                branch,
                position,
                entry,
            } => Self::Timed(TimedBody::BranchEntryRecorded {
                branch,
                position,
                entry: JournalEntryView::from(&entry),
            }),
            other => Self::Other(other),
        }
    }
}

impl From<EventBodyView> for EventBody {
    fn from(view: EventBodyView) -> Self {
        match view {
            EventBodyView::Other(body) => body,
            EventBodyView::Timed(TimedBody::RetryScheduled {
                step,
                item,
                attempt,
                failure,
                due,
            }) => Self::RetryScheduled {
                step,
                item,
                attempt,
                failure,
                due: due.into(),
            },
            EventBodyView::Timed(TimedBody::CompensationFailed {
                step,
                item,
                failure,
                retry_due,
            }) => Self::CompensationFailed {
                step,
                item,
                failure,
                retry_due: retry_due.map(Into::into),
            },
            EventBodyView::Timed(TimedBody::JournalEntryRecorded { position, entry }) => {
                Self::JournalEntryRecorded {
                    position,
                    entry: entry.into(),
                }
            }
            EventBodyView::Timed(TimedBody::BranchEntryRecorded {
                branch,
                position,
                entry,
            }) => Self::BranchEntryRecorded {
                branch,
                position,
                entry: entry.into(),
            },
        }
    }
}

/// The event bodies that hold a time (`type` names them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimedBody {
    /// An attempt failed and another is scheduled.
    RetryScheduled {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// The attempt that failed.
        attempt: u32,
        /// Why it failed.
        #[schema(value_type = crate::schema::Failure)]
        failure: Failure,
        /// When the next attempt is due.
        due: Time,
    },
    /// A compensation attempt failed; retried at `retry_due`, or failed for good.
    CompensationFailed {
        /// The step.
        step: String,
        /// The item.
        item: u32,
        /// Why.
        #[schema(value_type = crate::schema::Failure)]
        failure: Failure,
        /// When the next attempt is due; absent: no more attempts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_due: Option<Time>,
    },
    /// A durable function recorded an effect.
    JournalEntryRecorded {
        /// The position.
        position: u32,
        /// The effect and its outcome.
        entry: JournalEntryView,
    },
    /// A concurrent branch of a durable function recorded an effect.
    BranchEntryRecorded {
        /// The branch's path.
        branch: String,
        /// The position, shared with the rest of the journal.
        position: u32,
        /// The effect and its outcome.
        entry: JournalEntryView,
    },
}

impl PartialSchema for EventBodyView {
    /// A [`TimedBody`], or any object whose `type` is not one of its types (so that a body
    /// with a time matches the timed schema only).
    fn schema() -> RefOr<Schema> {
        // utoipa's schema model has no `not`: it is written as an extension (a plain key).
        let not_timed = Extensions::from_iter([("not", json!({ "enum": timed_types() }))]);
        let other = ObjectBuilder::new()
            .description(Some("An event body without a time, as the log has it"))
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .extensions(Some(not_timed)),
            )
            .required("type")
            // Open: the other bodies' fields are the log's.
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(true)));
        AnyOfBuilder::new()
            .item(RefOr::Ref(Ref::from_schema_name(TimedBody::name())))
            .item(other)
            .into()
    }
}

/// The `type`s of [`TimedBody`], read from its schema (one variant each).
fn timed_types() -> Vec<Value> {
    let RefOr::T(Schema::OneOf(variants)) = TimedBody::schema() else {
        return Vec::new();
    };
    variants
        .items
        .iter()
        .filter_map(|variant| match variant {
            RefOr::T(Schema::Object(object)) => match object.properties.get("type") {
                Some(RefOr::T(Schema::Object(tag))) => tag.enum_values.clone(),
                _ => None,
            },
            _ => None,
        })
        .flatten()
        .collect()
}

impl ToSchema for EventBodyView {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((TimedBody::name().into_owned(), TimedBody::schema()));
        TimedBody::schemas(schemas);
    }
}

/// A message of an event stream (`event: flow_event`): a flow's stream says which event was
/// recorded (`type` its type); the all-flows stream says a flow changed (`type` `changed`,
/// with its `status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamMessage {
    /// The flow.
    #[schema(value_type = String, format = Uuid)]
    pub flow: FlowId,
    /// Its event's (or last event's) sequence number.
    pub seq: u64,
    /// The all-flows stream: the flow's status key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The event's type, or `changed`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timed_types_are_read_from_the_schema() {
        assert_eq!(
            timed_types(),
            [
                "retry_scheduled",
                "compensation_failed",
                "journal_entry_recorded",
                "branch_entry_recorded"
            ]
        );
    }
}
