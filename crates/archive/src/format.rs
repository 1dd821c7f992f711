//! The archive file: one self-contained, versioned JSON document per flow holding its whole
//! log.
//!
//! ```json
//! {"format": 1, "flow": "0193…", "kind": "plan", "definition": "onboarding",
//!  "archived_at": 1767225600000000,
//!  "events": [{"seq": 1, "time": 1767225600000000, "format": 1, "body": {"type": "flow_created", …}}, …]}
//! ```
//!
//! Times are microseconds since the epoch, as everywhere in flowstate's JSON. Each event keeps
//! its own body format version and its body exactly as the live store held it (embedded as
//! JSON, not re-encoded), so a file can be read with nothing but a JSON tool and folds with
//! the core's fold like a live log. `archived_at` is the time of the log's last event (the
//! `archived` transition), so writing the same log twice gives the same bytes: a recovery
//! that writes a file again after a crash writes exactly what was there.
//!
//! **Invariant:** a file's `format` only grows. A reader refuses a format newer than
//! [`ARCHIVE_FORMAT_VERSION`] with [`ArchiveError::NewerFormat`] rather than misread it.

use flowstate_core::{fold, Event, FlowId, FlowKind, FlowRecord, RawEvent, StopAt, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ArchiveError;

/// The archive file format this build writes; files up to this one can be read.
pub const ARCHIVE_FORMAT_VERSION: u16 = 1;

/// A flow as the archive keeps it: its identity and its whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFlow {
    /// The flow.
    pub flow: FlowId,
    /// Its kind.
    pub kind: FlowKind,
    /// The definition it ran.
    pub definition: String,
    /// When it was archived: the time of its last event (the `archived` transition).
    pub archived_at: Timestamp,
    /// Its whole log, from event 1.
    pub events: Vec<RawEvent>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    format: u16,
    flow: FlowId,
    kind: FlowKind,
    definition: &'a str,
    archived_at: Timestamp,
    events: Vec<EventOut<'a>>,
}

#[derive(Serialize)]
struct EventOut<'a> {
    seq: u64,
    time: Timestamp,
    format: u16,
    body: &'a RawValue,
}

#[derive(Deserialize)]
struct Header {
    format: u16,
}

#[derive(Deserialize)]
struct FileIn {
    flow: FlowId,
    kind: FlowKind,
    definition: String,
    archived_at: Timestamp,
    events: Vec<EventIn>,
}

#[derive(Deserialize)]
struct EventIn {
    seq: u64,
    time: Timestamp,
    format: u16,
    body: Box<RawValue>,
}

impl ArchivedFlow {
    /// The archive record of a live log that ends in the plan state `archived`, or in a
    /// finished state of a task graph or function (`crate::policy::is_archived_state`): the log must
    /// fold (so nothing is archived that could not be read back), and `archived_at` is the
    /// time of its last event.
    pub fn from_log(flow: FlowId, events: Vec<RawEvent>) -> Result<Self, ArchiveError> {
        let record =
            fold(&events, StopAt::End).map_err(|source| ArchiveError::Fold { flow, source })?;
        if !crate::policy::is_archived_state(record.status) {
            return Err(ArchiveError::NotArchivable {
                flow,
                kind: record.kind.key().to_owned(),
                state: record.status.key().to_owned(),
            });
        }
        Ok(Self {
            flow,
            kind: record.kind,
            definition: record.definition,
            archived_at: record.updated_at,
            events,
        })
    }

    /// The file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, ArchiveError> {
        let flow = self.flow;
        let events = self
            .events
            .iter()
            .map(|event| {
                serde_json::from_slice::<&RawValue>(&event.body)
                    .map(|body| EventOut {
                        seq: event.seq,
                        time: event.time,
                        format: event.format,
                        body,
                    })
                    .map_err(|e| ArchiveError::Corrupt {
                        flow,
                        detail: format!("event {} has a body that is not JSON: {e}", event.seq),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        serde_json::to_vec(&FileOut {
            format: ARCHIVE_FORMAT_VERSION,
            flow,
            kind: self.kind,
            definition: &self.definition,
            archived_at: self.archived_at,
            events,
        })
        .map_err(|e| ArchiveError::Corrupt {
            flow,
            detail: format!("cannot encode the archive file: {e}"),
        })
    }

    /// Reads a file that should hold `flow`: refuses a newer format, a file of another
    /// flow, and anything that is not an archive file.
    pub fn decode(flow: FlowId, bytes: &[u8]) -> Result<Self, ArchiveError> {
        let corrupt = |detail: String| ArchiveError::Corrupt { flow, detail };
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("not an archive file: {e}")))?;
        if header.format > ARCHIVE_FORMAT_VERSION {
            return Err(ArchiveError::NewerFormat {
                flow,
                found: header.format,
                supported: ARCHIVE_FORMAT_VERSION,
            });
        }
        if header.format == 0 {
            return Err(corrupt("archive format 0 does not exist".to_owned()));
        }
        let file: FileIn = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("not an archive file: {e}")))?;
        if file.flow != flow {
            return Err(corrupt(format!("the file holds flow {}", file.flow)));
        }
        let events = file
            .events
            .into_iter()
            .map(|event| RawEvent {
                flow,
                seq: event.seq,
                time: event.time,
                format: event.format,
                body: event.body.get().as_bytes().to_vec(),
            })
            .collect();
        Ok(Self {
            flow,
            kind: file.kind,
            definition: file.definition,
            archived_at: file.archived_at,
            events,
        })
    }

    /// The log's events, decoded (a body format newer than this build's is refused).
    pub fn decoded_events(&self) -> Result<Vec<Event>, ArchiveError> {
        self.events
            .iter()
            .map(|raw| {
                Event::decode(raw).map_err(|e| ArchiveError::Fold {
                    flow: self.flow,
                    source: e.into(),
                })
            })
            .collect()
    }

    /// The flow's state up to `stop`: time travel on an archived flow.
    pub fn replay(&self, stop: StopAt) -> Result<FlowRecord, ArchiveError> {
        fold(&self.events, stop).map_err(|source| ArchiveError::Fold {
            flow: self.flow,
            source,
        })
    }
}
