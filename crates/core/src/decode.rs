//! A fast path for decoding the event bodies long logs are made of: journal entries.
//!
//! [`EventBody`] and [`JournalEntry`] are internally tagged (`"type"`, `"effect"`), which
//! serde decodes by first buffering every field of the object into an intermediate tree and
//! then decoding that tree: most of the cost of folding a durable function's log. flowstate
//! writes the tag first, so this path reads the tag, then the fields straight into the
//! variant. It accepts only what the derived decoding accepts, and builds the same value;
//! on anything else (another key first, an escaped tag, a tag given twice, a variant it does
//! not cover, any error) it gives up, and the derived decoding runs instead and has the last
//! word, errors included.
//!
//! **Invariant:** each helper below has exactly the fields (names, types and serde
//! attributes) of its variant; the tests compare both paths on every variant.

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::event::{EventBody, FlowKind};
use crate::id::FlowId;
use crate::journal::{JournalEntry, StepOutcome};
use crate::time::Timestamp;

/// The body encoded in `bytes`, if it has a shape the fast path covers.
pub(crate) fn body(bytes: &[u8]) -> Option<EventBody> {
    // Checking the text once is cheaper than checking each string in it.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    // Decoded in place: an event body is large, and each layer of results would copy it.
    let mut body = None;
    de.deserialize_map(BodyVisitor(&mut body)).ok()?;
    de.end().ok()?;
    body
}

/// Decodes a body into its slot (left `None` if the fast path does not cover it).
struct BodyVisitor<'a>(&'a mut Option<EventBody>);

impl<'de> Visitor<'de> for BodyVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event body")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if map.next_key::<&str>()? != Some("type") {
            return Ok(());
        }
        *self.0 = match map.next_value::<&str>()? {
            "journal_entry_recorded" => {
                #[derive(Deserialize)]
                struct Fields {
                    #[serde(rename = "type")]
                    tag: Option<IgnoredAny>,
                    position: u32,
                    entry: Entry,
                }
                let Fields {
                    tag,
                    position,
                    entry: Entry(entry),
                } = Fields::deserialize(MapAccessDeserializer::new(map))?;
                entry
                    .filter(|_| tag.is_none())
                    .map(|entry| EventBody::JournalEntryRecorded { position, entry })
            }
            "branch_entry_recorded" => {
                #[derive(Deserialize)]
                struct Fields {
                    #[serde(rename = "type")]
                    tag: Option<IgnoredAny>,
                    branch: String,
                    position: u32,
                    entry: Entry,
                }
                let Fields {
                    tag,
                    branch,
                    position,
                    entry: Entry(entry),
                } = Fields::deserialize(MapAccessDeserializer::new(map))?;
                entry
                    .filter(|_| tag.is_none())
                    .map(|entry| EventBody::BranchEntryRecorded {
                        branch,
                        position,
                        entry,
                    })
            }
            _ => None,
        };
        Ok(())
    }
}

/// A journal entry, if it has a shape the fast path covers.
struct Entry(Option<JournalEntry>);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntryVisitor).map(Entry)
    }
}

struct EntryVisitor;

/// Decodes the rest of `$map` as the fields of `$variant` (after its tag).
macro_rules! entry {
    ($map:expr, $variant:ident { $($field:ident: $ty:ty),* $(,)? }) => {{
        #[derive(Deserialize)]
        struct Fields {
            #[serde(rename = "effect")]
            tag: Option<IgnoredAny>,
            $($field: $ty,)*
        }
        let fields = Fields::deserialize(MapAccessDeserializer::new($map))?;
        Ok(fields
            .tag
            .is_none()
            .then(|| JournalEntry::$variant { $($field: fields.$field),* }))
    }};
}

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = Option<JournalEntry>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a journal entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if map.next_key::<&str>()? != Some("effect") {
            return Ok(None);
        }
        match map.next_value::<&str>()? {
            "step" => entry!(
                map,
                Step {
                    name: String,
                    outcome: StepOutcome
                }
            ),
            "now" => entry!(map, Now { time: Timestamp }),
            "random" => entry!(map, Random { value: u64 }),
            "uuid" => entry!(map, Uuid { value: String }),
            "sleep" => entry!(map, Sleep { until: Timestamp }),
            "signal" => entry!(
                map,
                Signal {
                    name: String,
                    value: serde_json::Value
                }
            ),
            "patched" => entry!(map, Patched { change: String }),
            "child_started" => entry!(
                map,
                ChildStarted {
                    kind: FlowKind,
                    definition: String,
                    child: FlowId,
                }
            ),
            "child_joined" => entry!(
                map,
                ChildJoined {
                    child: FlowId,
                    outcome: StepOutcome,
                }
            ),
            "settled" => entry!(
                map,
                Settled {
                    combinator: String,
                    branch: Option<u32>,
                }
            ),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;

    fn id() -> FlowId {
        FlowId::from_parts(Timestamp::from_micros(1_700_000_000_000_000), [7; 10])
    }

    fn entries() -> Vec<JournalEntry> {
        vec![
            JournalEntry::Step {
                name: "charge \"card\"".into(),
                outcome: Ok(serde_json::json!({"a": [1, -2, 3.5, null, "x\ny"], "b": {}})),
            },
            JournalEntry::Step {
                name: "s".into(),
                outcome: Err(Failure::new("Timeout", "too slow")),
            },
            JournalEntry::Now {
                time: Timestamp::from_micros(-5),
            },
            JournalEntry::Random { value: u64::MAX },
            JournalEntry::Uuid {
                value: "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b".into(),
            },
            JournalEntry::Sleep {
                until: Timestamp::from_micros(1_700_000_000_000_000),
            },
            JournalEntry::Signal {
                name: "go".into(),
                value: serde_json::json!(true),
            },
            JournalEntry::Patched {
                change: "v2".into(),
            },
            JournalEntry::ChildStarted {
                kind: FlowKind::TaskGraph,
                definition: "child".into(),
                child: id(),
            },
            JournalEntry::ChildJoined {
                child: id(),
                outcome: Ok(serde_json::json!(3)),
            },
            JournalEntry::Settled {
                combinator: "race".into(),
                branch: Some(2),
            },
            JournalEntry::Settled {
                combinator: "all".into(),
                branch: None,
            },
        ]
    }

    fn derived(bytes: &[u8]) -> Option<EventBody> {
        serde_json::from_slice(bytes).ok()
    }

    #[test]
    fn the_fast_path_decodes_every_entry_as_the_derived_decoding_does() {
        for (position, entry) in entries().into_iter().enumerate() {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            for body in [
                EventBody::JournalEntryRecorded {
                    position,
                    entry: entry.clone(),
                },
                EventBody::BranchEntryRecorded {
                    branch: "0.1/2.0".into(),
                    position,
                    entry: entry.clone(),
                },
            ] {
                let bytes = body.encode().expect("encode");
                assert_eq!(super::body(&bytes), Some(body.clone()), "{body:?}");
                assert_eq!(derived(&bytes), Some(body));
            }
        }
    }

    #[test]
    fn the_fast_path_gives_up_on_what_it_does_not_cover_and_accepts_nothing_more() {
        let both = [
            // Unknown fields and whitespace are ignored by both.
            r#"{"type":"journal_entry_recorded","position":0,"entry":{"effect":"random","value":1,"x":[]},"y":{}}"#,
            r#" { "type" : "branch_entry_recorded" , "branch":"0.0","position":0,"entry":{"effect":"now","time":5} } "#,
        ];
        let derived_only = [
            // Another key first, or an escaped tag.
            r#"{"position":0,"type":"journal_entry_recorded","entry":{"effect":"random","value":1}}"#,
            r#"{"type":"journal_entry_recorded","position":0,"entry":{"value":1,"effect":"random"}}"#,
            r#"{"type":"journal\u005fentry_recorded","position":0,"entry":{"effect":"random","value":1}}"#,
            // Other bodies.
            r#"{"type":"timer_awaited","position":3}"#,
            r#"{"type":"run_started","run":1,"incarnation":"a"}"#,
        ];
        let neither = [
            // A tag given twice, a missing or mistyped field, trailing bytes.
            r#"{"type":"journal_entry_recorded","position":0,"type":"journal_entry_recorded","entry":{"effect":"random","value":1}}"#,
            r#"{"type":"journal_entry_recorded","position":0,"entry":{"effect":"random","effect":"random","value":1}}"#,
            r#"{"type":"journal_entry_recorded","entry":{"effect":"random","value":1}}"#,
            r#"{"type":"journal_entry_recorded","position":-1,"entry":{"effect":"random","value":1}}"#,
            r#"{"type":"journal_entry_recorded","position":0,"entry":{"effect":"random","value":1}} x"#,
        ];
        for text in both {
            let decoded = super::body(text.as_bytes());
            assert!(decoded.is_some(), "{text}");
            assert_eq!(derived(text.as_bytes()), decoded, "{text}");
        }
        for text in derived_only {
            assert_eq!(super::body(text.as_bytes()), None, "{text}");
            assert!(derived(text.as_bytes()).is_some(), "{text}");
        }
        for text in neither {
            assert_eq!(super::body(text.as_bytes()), None, "{text}");
            assert_eq!(derived(text.as_bytes()), None, "{text}");
        }
    }
}
