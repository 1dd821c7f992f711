//! [`ArchiveError`]: why archiving, or reading the archive, failed.

use flowstate_core::{FlowId, FoldError};
use flowstate_engine::WriteError;
use flowstate_store::StoreError;

/// Why archiving a flow, or reading one back from the archive, failed. Every variant about
/// one flow names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The archive location cannot be used (unknown scheme, missing directory, bad S3 URL).
    #[error("archive location {url:?}: {reason}")]
    Location {
        /// The location as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store failed.
    #[error("archive storage failed to {operation} {key}: {message}")]
    Storage {
        /// What was being done ("write", "read", "list").
        operation: &'static str,
        /// The object's key (or the prefix listed).
        key: String,
        /// The object store's message.
        message: String,
    },
    /// The archive has no such flow.
    #[error("flow {flow} is not in the archive")]
    NotArchived {
        /// The flow.
        flow: FlowId,
    },
    /// The file was written by a newer flowstate.
    #[error("archived flow {flow} has archive format {found}, newer than the {supported} this build reads; upgrade flowstate")]
    NewerFormat {
        /// The flow.
        flow: FlowId,
        /// The file's format version.
        found: u16,
        /// The newest format this build reads.
        supported: u16,
    },
    /// The file is not an archive file this build wrote (or it was damaged).
    #[error("archived flow {flow} is damaged: {detail}")]
    Corrupt {
        /// The flow.
        flow: FlowId,
        /// What is wrong.
        detail: String,
    },
    /// The log (live or archived) does not fold.
    #[error("flow {flow}: {source}")]
    Fold {
        /// The flow.
        flow: FlowId,
        /// Why the fold refused it.
        source: FoldError,
    },
    /// The live store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Recording the `archived` transition in the live log failed.
    #[error("flow {flow}: {source}")]
    Write {
        /// The flow.
        flow: FlowId,
        /// Why.
        source: WriteError,
    },
    /// The archive copy read back is not the live log; the live flow is kept.
    #[error("flow {flow}: the archive copy does not match the live log ({detail}); the live flow is kept")]
    VerifyFailed {
        /// The flow.
        flow: FlowId,
        /// What differs.
        detail: String,
    },
    /// Only deactivated plan flows are archived.
    #[error(
        "flow {flow} is a {kind} flow in state {state}: only deactivated plan flows are archived"
    )]
    NotArchivable {
        /// The flow.
        flow: FlowId,
        /// Its kind.
        kind: String,
        /// Its state.
        state: String,
    },
    /// The live log grew after the archive copy was made; the live flow is kept.
    #[error("flow {flow} changed after it was archived (the live log has {live} events, the archive copy {archived}); the live flow is kept")]
    ChangedAfterArchive {
        /// The flow.
        flow: FlowId,
        /// Events in the live log.
        live: u64,
        /// Events in the archive copy.
        archived: u64,
    },
    /// Other writers kept appending to the flow while it was being marked archived.
    #[error("flow {flow}: its live log kept changing while it was being marked archived; tried again next pass")]
    Contended {
        /// The flow.
        flow: FlowId,
    },
    /// The policy breaks a limit.
    #[error("archive policy: {detail}")]
    Policy {
        /// What is wrong.
        detail: String,
    },
}
