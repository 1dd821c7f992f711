//! [`Failure`]: an error as data, so that it can be stored in a log, survive a process
//! boundary, and be matched on replay by its kind (as async-flow matches errors by name).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most causes kept from an error's source chain.
pub const MAX_FAILURE_CAUSES: usize = 16;

/// Longest failure message kept, in bytes; longer ones are cut at a character boundary.
pub const MAX_FAILURE_MESSAGE_BYTES: usize = 8 * 1024;

/// A serialisable failure: a kind (the error's name), a message and a cause chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The error's name ("Timeout", "io::Error", "Woot"): what code may match on.
    pub kind: String,
    /// Human-readable detail; not for matching.
    pub message: String,
    /// The source chain, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Failure>,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: truncate(message.into()),
            causes: Vec::new(),
        }
    }

    /// `value` if a log can hold it as a result, else the `ResultTooLarge` failure that is
    /// recorded instead (see [`crate::limits::MAX_RESULT_BYTES`]).
    pub fn within_result_limit(value: serde_json::Value) -> Result<serde_json::Value, Self> {
        let limit = crate::limits::MAX_RESULT_BYTES;
        let size = serde_json::to_vec(&value).map_or(usize::MAX, |bytes| bytes.len());
        if size > limit {
            return Err(Self::new(
                "ResultTooLarge",
                format!("the result is {size} bytes; the limit is {limit} (MAX_RESULT_BYTES): keep large data elsewhere and return a reference"),
            ));
        }
        Ok(value)
    }

    /// Captures an error, its type name as the kind and its `source()` chain as causes.
    pub fn from_error<E: std::error::Error + 'static>(error: &E) -> Self {
        let kind = short_type_name(std::any::type_name::<E>());
        let mut failure = Self::new(kind, error.to_string());
        let mut source = error.source();
        while let Some(cause) = source {
            if failure.causes.len() == MAX_FAILURE_CAUSES {
                break;
            }
            failure.causes.push(Self::new("cause", cause.to_string()));
            source = cause.source();
        }
        failure
    }

    /// Whether this failure has the given kind.
    #[must_use]
    pub fn is(&self, kind: &str) -> bool {
        self.kind == kind
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_FAILURE_MESSAGE_BYTES {
        let mut end = MAX_FAILURE_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

/// `alloc::string::String` → `String`, `my_crate::errors::Woot` → `Woot`; generic
/// arguments are kept as written.
fn short_type_name(full: &str) -> String {
    let base = full.split('<').next().unwrap_or(full);
    let short = base.rsplit("::").next().unwrap_or(base);
    format!("{short}{}", &full[base.len()..])
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        for cause in &self.causes {
            write!(f, ": {}", cause.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_becomes_a_failure_with_its_name_and_causes() {
        let error = Outer(std::io::Error::other("disk on fire"));
        let failure = Failure::from_error(&error);
        assert_eq!(failure.kind, "Outer");
        assert_eq!(failure.causes.len(), 1);
        assert_eq!(failure.to_string(), "Outer: outer: disk on fire");
        let json = serde_json::to_string(&failure).expect("json");
        assert_eq!(
            serde_json::from_str::<Failure>(&json).expect("parse"),
            failure
        );
    }

    #[test]
    fn long_messages_are_cut_at_the_limit() {
        let failure = Failure::new("Big", "é".repeat(MAX_FAILURE_MESSAGE_BYTES));
        assert!(failure.message.len() <= MAX_FAILURE_MESSAGE_BYTES);
    }
}
