//! How results look: borderless tables for people, and with `--json` the serde form of the
//! library's own types (or, for commands that go through a server, the server's own JSON), so
//! scripts see exactly what the library or the API means and nothing the CLI invented.
//! Followed streams (`flows watch`) print one line per event, or one JSON object per line.

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Table};
use flowstate::core::{Event, FlowRecord, JournalEntry, StepSpec};
use flowstate::store::{FlowPage, FlowSummary};
use flowstate::FlowId;
use flowstate_api::{EventView, Outcome, StepList, StreamMessage};
use flowstate_archive::{ArchivePage, ArchiveReport};
use serde::Serialize;
use serde_json::Value;

use crate::CliError;

/// Longest DETAIL cell in `flows events`, in characters; `--json` always prints the whole body.
const MAX_DETAIL_CHARS: usize = 200;

/// What a command prints: its result on stdout and, for people, a hint on stderr.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// The result.
    pub(crate) stdout: String,
    /// A hint for the next command (never in JSON mode, whose readers want data only).
    pub(crate) hint: Option<String>,
    /// A failure to report (as the one `error:` line, exit status 1) after the result: what
    /// `start --wait` says of a flow that ended without succeeding.
    pub(crate) failure: Option<String>,
}

impl Output {
    fn text(stdout: String) -> Self {
        Self {
            stdout,
            ..Self::default()
        }
    }
}

/// The answer of a command that asked the server for something: `value` as JSON for
/// scripts, `text` for people.
pub(crate) fn accepted(value: Value, text: String, json: bool) -> Result<Output, CliError> {
    if json {
        to_json(&value)
    } else {
        Ok(Output::text(text))
    }
}

/// What the server did with a request to change a flow (`cancel`, `suspend`, `resume`):
/// its answer's `outcome`, `recorded` (in the flow's log) or `ignored` (nothing to change in
/// the flow's state); an answer without one says only that it was accepted.
pub(crate) fn requested(
    flow: FlowId,
    what: &str,
    outcome: Option<Outcome>,
    json: bool,
) -> Result<Output, CliError> {
    if json {
        let mut value = serde_json::json!({ "flow": flow, "requested": what });
        if let (Some(outcome), Value::Object(fields)) = (outcome, &mut value) {
            fields.insert("outcome".to_owned(), Value::from(outcome.key()));
        }
        return to_json(&value);
    }
    Ok(Output::text(match outcome {
        Some(Outcome::Ignored) => {
            format!("{what} of flow {flow} ignored: there is nothing to {what} in its state\n")
        }
        Some(outcome) => format!("{what} of flow {flow} {}\n", outcome.key()),
        None => format!("{what} requested for flow {flow}\n"),
    }))
}

/// `steps ls`: the server's registered steps.
pub(crate) fn steps(answer: &StepList, json: bool) -> Result<Output, CliError> {
    if json {
        return to_json(&serde_json::to_value(answer)?);
    }
    let mut steps: Vec<&StepSpec> = answer.steps.iter().collect();
    steps.sort_by_key(|step| &step.name);
    let mut table = table(&[
        "NAME", "VERSION", "INPUTS", "OUTPUTS", "ATTEMPTS", "TIMEOUT",
    ]);
    align_right(&mut table, 1);
    align_right(&mut table, 4);
    for step in &steps {
        let inputs: Vec<String> = step
            .inputs
            .iter()
            .map(|input| match (input.optional, &input.default) {
                (true, Some(default)) => format!("{}?={default}", input.name),
                (true, None) => format!("{}?", input.name),
                _ => input.name.clone(),
            })
            .collect();
        let timeout = step
            .timeout_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"));
        let mut name = step.name.clone();
        if let Some(over) = &step.map_over {
            name.push_str(&format!(" (each {over})"));
        }
        table.add_row(vec![
            name,
            step.version.to_string(),
            inputs.join(", "),
            step.outputs.join(", "),
            step.retry.max_attempts.to_string(),
            timeout,
        ]);
    }
    Ok(Output {
        stdout: finish(&table),
        hint: steps
            .is_empty()
            .then(|| "no steps are registered".to_owned()),
        failure: None,
    })
}

/// `flows watch ID`: one event of the API (`{seq, time, type, body}`) as a line, its columns
/// those of `flows events`.
pub(crate) fn event_line(event: &EventView) -> String {
    let detail =
        serde_json::to_value(&event.body).map_or_else(|_| String::new(), |body| body_detail(&body));
    format!("{:>6}  {}  {}  {detail}", event.seq, event.time, event.kind)
}

/// `flows watch`: one change of the all-flows stream (`{flow, seq, type, status}`) as a line.
pub(crate) fn change_line(change: &StreamMessage) -> String {
    let status = change.status.as_deref().unwrap_or_default();
    format!("{}  {:>6}  {status}", change.flow, change.seq)
}

/// `flows ls`.
pub(crate) fn flows(page: &FlowPage, json: bool) -> Result<Output, CliError> {
    if json {
        #[derive(Serialize)]
        struct Page<'a> {
            flows: &'a [FlowSummary],
            next_after: Option<FlowId>,
        }
        return to_json(&Page {
            flows: &page.flows,
            next_after: page.next_after,
        });
    }
    let mut table = table(&[
        "ID",
        "KIND",
        "DEFINITION",
        "STATE",
        "EVENTS",
        "CREATED",
        "UPDATED",
    ]);
    align_right(&mut table, 4);
    for flow in &page.flows {
        table.add_row(vec![
            flow.id.to_string(),
            flow.kind.key().to_owned(),
            flow.definition.clone(),
            flow.status.key().to_owned(),
            flow.events().to_string(),
            flow.created_at.to_string(),
            flow.updated_at.to_string(),
        ]);
    }
    let hint = match (page.flows.is_empty(), page.next_after) {
        (true, _) => Some("no flows match".to_owned()),
        (false, Some(after)) => Some(format!("more: --after {after}")),
        (false, None) => None,
    };
    Ok(Output {
        stdout: finish(&table),
        hint,
        failure: None,
    })
}

/// `archive ls`.
pub(crate) fn archived(page: &ArchivePage, json: bool) -> Result<Output, CliError> {
    if json {
        return to_json(page);
    }
    let mut table = table(&["ID", "BYTES", "STORED"]);
    align_right(&mut table, 1);
    for flow in &page.flows {
        table.add_row(vec![
            flow.id.to_string(),
            flow.bytes.to_string(),
            flow.stored_at.to_string(),
        ]);
    }
    let hint = match (page.flows.is_empty(), page.next_after) {
        (true, _) => Some("no archived flows".to_owned()),
        (false, Some(after)) => Some(format!("more: --after {after}")),
        (false, None) => None,
    };
    Ok(Output {
        stdout: finish(&table),
        hint,
        failure: None,
    })
}

/// `archive run`.
pub(crate) fn archive_report(report: &ArchiveReport, json: bool) -> Result<Output, CliError> {
    if json {
        return to_json(report);
    }
    let mut fields = Table::new();
    fields.load_preset(NOTHING);
    for (name, value) in [
        ("archived", report.archived),
        ("recovered", report.recovered),
        ("events", report.events),
        ("bytes", report.bytes),
        ("batches", report.batches),
        ("skipped", report.skipped),
    ] {
        fields.add_row(vec![name.to_owned(), value.to_string()]);
    }
    Ok(Output::text(finish(&fields)))
}

/// `flows show`. `total` is the length of the whole log when the fold stopped early.
/// How a flow ended, in one line: `succeeded`, `failed: KIND: MESSAGE` or `cancelled: REASON`.
pub(crate) fn outcome_text(outcome: &flowstate::core::Outcome) -> String {
    use flowstate::core::Outcome;
    match outcome {
        Outcome::Failed { failure } => format!("failed: {}: {}", failure.kind, failure.message),
        Outcome::Cancelled { reason } => format!("cancelled: {reason}"),
        other => other.kind().key().to_owned(),
    }
}

pub(crate) fn record(
    record: &FlowRecord,
    total: Option<usize>,
    json: bool,
) -> Result<Output, CliError> {
    if json {
        return to_json(record);
    }
    let mut fields = Table::new();
    fields.load_preset(NOTHING);
    let mut field = |name: &str, value: String| {
        fields.add_row(vec![name.to_owned(), value]);
    };
    field("id", record.id.to_string());
    field("kind", record.kind.key().to_owned());
    field("definition", record.definition.clone());
    field("state", record.status.key().to_owned());
    if let Some(outcome) = record.outcome() {
        field("outcome", outcome_text(&outcome));
    }
    field("created", record.created_at.to_string());
    field("updated", record.updated_at.to_string());
    match total {
        Some(total) => field("last seq", format!("{} (of {total})", record.last_seq)),
        None => field("last seq", record.last_seq.to_string()),
    }
    field("input", record.input.to_string());
    if let Some(diagnostic) = &record.diagnostic {
        field("diagnostic", diagnostic.clone());
    }
    if let Some(function) = &record.function {
        if let Some(outcome) = &function.outcome {
            field(
                "returned",
                match outcome {
                    Ok(value) => value.to_string(),
                    Err(failure) => format!("error {}: {}", failure.kind, failure.message),
                },
            );
        }
        for name in &function.awaiting {
            field("awaiting", format!("signal {name:?}"));
        }
        for position in &function.awaiting_timers {
            field("awaiting", format!("the sleep at position {position}"));
        }
        if let Some(reason) = &function.cancel_requested {
            field("cancel requested", format!("{reason:?}"));
        }
        for (name, values) in &function.inbox {
            field("inbox", format!("{name}: {} waiting", values.len()));
        }
        field("run", function.run.to_string());
        if let Some(dropped) = &function.journal_dropped {
            field(
                "journal",
                format!(
                    "dropped when done ({} entries, {} events)",
                    dropped.entries, dropped.events
                ),
            );
        }
    }
    if let Some(plan) = &record.plan {
        if let Some(execution) = &plan.plan {
            let goals: Vec<String> = execution.goals.iter().map(ToString::to_string).collect();
            field("goals", goals.join(", "));
        }
        if let Some(failure) = &plan.failure {
            field("failure", format!("{}: {}", failure.kind, failure.message));
        }
    }
    let mut out = finish(&fields);
    if let Some(plan) = &record.plan {
        out.push_str(&plan_tables(plan));
    }
    if !record.atoms.is_empty() {
        let mut atoms = table(&["ATOM", "STATE", "INTENTION", "LAST SEQ"]);
        align_right(&mut atoms, 3);
        for (name, atom) in &record.atoms {
            atoms.add_row(vec![
                name.clone(),
                atom.state.key().to_owned(),
                serde_key(&atom.intention),
                atom.last_seq.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&finish(&atoms));
    }
    if let Some(function) = record.function.as_ref().filter(|f| !f.journal.is_empty()) {
        let mut journal = table(&["POS", "EFFECT", "OUTCOME"]);
        align_right(&mut journal, 0);
        for (position, entry) in function.journal.iter().enumerate() {
            let outcome = match entry {
                JournalEntry::Step {
                    outcome: Ok(value), ..
                } => value.to_string(),
                JournalEntry::Step {
                    outcome: Err(failure),
                    ..
                } => format!("error {}", failure.kind),
                JournalEntry::Now { time } => time.to_string(),
                JournalEntry::Random { value } => value.to_string(),
                JournalEntry::Uuid { value } => value.clone(),
                JournalEntry::Sleep { until } => {
                    let ended = function
                        .sleeps_ended
                        .contains(&u32::try_from(position).unwrap_or(u32::MAX));
                    format!("until {until}{}", if ended { " (ended)" } else { "" })
                }
                JournalEntry::Signal { value, .. } => value.to_string(),
                JournalEntry::Patched { .. } => String::new(),
                _ => String::new(),
            };
            journal.add_row(vec![
                position.to_string(),
                entry.call().to_string(),
                outcome,
            ]);
        }
        out.push('\n');
        out.push_str(&finish(&journal));
    }
    Ok(Output::text(out))
}

/// A plan's steps (state, work items, why) and attributes with their provenance.
fn plan_tables(plan: &flowstate::core::PlanRecord) -> String {
    use flowstate::core::Machine;
    let mut out = String::new();
    if !plan.steps.is_empty() {
        let mut steps = table(&["STEP", "VERSION", "STATE", "WORK", "NOTE"]);
        for (name, step) in &plan.steps {
            let version = plan
                .plan
                .as_ref()
                .and_then(|p| p.steps.get(name))
                .map_or_else(String::new, |spec| spec.version.to_string());
            let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
            for item in &step.items {
                *counts.entry(item.state.key()).or_default() += 1;
            }
            let work: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let note = step
                .failure
                .as_ref()
                .map(|f| format!("{}: {}", f.kind, f.message))
                .or_else(|| step.reason.clone())
                .unwrap_or_default();
            steps.add_row(vec![
                name.clone(),
                version,
                step.state.key().to_owned(),
                work.join(", "),
                note,
            ]);
        }
        out.push('\n');
        out.push_str(&finish(&steps));
    }
    if !plan.attributes.is_empty() {
        let mut attributes = table(&["ATTRIBUTE", "VALUE", "FROM", "ATTEMPT", "SEQ", "TIME"]);
        align_right(&mut attributes, 4);
        for (name, attribute) in &plan.attributes {
            let mut value = attribute.value.to_string();
            if value.len() > 60 {
                let cut = (0..=57)
                    .rev()
                    .find(|i| value.is_char_boundary(*i))
                    .unwrap_or(0);
                value.truncate(cut);
                value.push_str("...");
            }
            attributes.add_row(vec![
                name.clone(),
                value,
                attribute.step.clone().unwrap_or_else(|| "input".to_owned()),
                attribute.attempt.to_string(),
                attribute.seq.to_string(),
                attribute.time.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&finish(&attributes));
    }
    out
}

/// `flows signal`.
pub(crate) fn sent(flow: FlowId, name: &str) -> Output {
    Output::text(format!("signal {name:?} sent to flow {flow}\n"))
}

/// `flows cancel`.
pub(crate) fn cancel_requested(flow: FlowId, transition: flowstate::core::Transition) -> Output {
    Output::text(match transition {
        flowstate::core::Transition::Allowed => format!(
            "cancellation requested: flow {flow} stops at its next step boundary, and its engine undoes or compensates what its kind undoes\n"
        ),
        flowstate::core::Transition::Ignored => format!(
            "cancellation ignored: flow {flow} is cancelled already (nothing recorded)\n"
        ),
    })
}

/// `flows events`.
pub(crate) fn events(events: &[Event], json: bool) -> Result<Output, CliError> {
    if json {
        return to_json(events);
    }
    let mut table = table(&["SEQ", "TIME", "TYPE", "DETAIL"]);
    align_right(&mut table, 0);
    for event in events {
        table.add_row(vec![
            event.seq.to_string(),
            event.time.to_string(),
            event.body.type_name().to_owned(),
            detail(event)?,
        ]);
    }
    Ok(Output::text(finish(&table)))
}

/// The body as compact JSON without its type tag (the TYPE column already says it).
fn detail(event: &Event) -> Result<String, CliError> {
    let body = serde_json::to_value(&event.body)
        .map_err(|e| CliError::new(format!("event {}: {e}", event.seq)))?;
    Ok(body_detail(&body))
}

/// An event body as compact JSON without its type tag, cut at [`MAX_DETAIL_CHARS`].
fn body_detail(body: &Value) -> String {
    let mut body = body.clone();
    if let Some(fields) = body.as_object_mut() {
        fields.remove("type");
    }
    let text = body.to_string();
    if text.chars().count() <= MAX_DETAIL_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_DETAIL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A unit enum's serde name ("execute", "revert", ...), which is how logs and JSON spell it.
fn serde_key(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(key)) => key,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

fn to_json(value: &(impl Serialize + ?Sized)) -> Result<Output, CliError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(format!("cannot encode the output as JSON: {e}")))?;
    text.push('\n');
    Ok(Output::text(text))
}

/// A borderless table, like `ps` or `kubectl get`: easy to read and to `grep`/`awk`.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(header.to_vec());
    table
}

fn align_right(table: &mut Table, column: usize) {
    if let Some(column) = table.column_mut(column) {
        column.set_cell_alignment(CellAlignment::Right);
    }
}

/// The table's text, without the padding comfy-table leaves at the ends of lines.
fn finish(table: &Table) -> String {
    let mut out = String::new();
    for line in table.to_string().lines() {
        let line = line.trim_end();
        // The padding also leaves one leading space on every line; drop it evenly.
        out.push_str(line.strip_prefix(' ').unwrap_or(line));
        out.push('\n');
    }
    out
}
