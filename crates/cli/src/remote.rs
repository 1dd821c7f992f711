//! The commands that need the running engine and so go through its server: `start`,
//! `signal`, `cancel`, `suspend`, `resume`, `steps ...` and `flows watch`.
//!
//! Every state change they ask for is made by the one engine behind the server (its
//! registry of steps, graphs and functions, its worker), never by this process. Like every
//! command, arguments are parsed before anything is sent: a typo never reaches the server.
//! `flows watch` and `start --wait` print as they go; the others return their result.

use std::collections::BTreeMap;
use std::io::Write;

use flowstate::core::machine::{ActivationState, FlowState, PlanState};
use flowstate::core::{EventBody, FlowRecord, Machine, RetryPolicy};
use flowstate::{FlowId, FlowStatus};
use flowstate_api::{
    EventPage, EventView, FlowView, ReasonRequest, Registered, RequestOutcome, SignalRequest,
    StartRequest, Started, StepList, StreamMessage,
};
use serde_json::{json, Map, Value};

use crate::client::Client;
use crate::commands::{parse_duration, parse_id};
use crate::progress::Progress;
use crate::render::{self, Output};
use crate::{
    CancelArgs, Cli, CliError, Command, ControlArgs, FlowsCommand, RegisterArgs, SignalArgs,
    StartArgs, StepMode, StepsCommand,
};

/// Events fetched per request while following a flow.
pub(crate) const WATCH_PAGE: usize = 100;

/// Whether `command` goes through the server (rather than the store or the archive).
pub(crate) fn goes_through_server(command: &Command) -> bool {
    matches!(
        command,
        Command::Start(_)
            | Command::Signal(_)
            | Command::Cancel(_)
            | Command::Suspend(_)
            | Command::Resume(_)
            | Command::Steps(_)
            | Command::Flows(FlowsCommand::Watch(_))
    )
}

/// A command with its arguments parsed.
#[derive(Debug)]
enum Request {
    Start {
        body: StartRequest,
        key: Option<String>,
        wait: bool,
    },
    Signal {
        id: FlowId,
        name: String,
        value: Value,
    },
    Cancel {
        id: FlowId,
        reason: String,
    },
    Control {
        id: FlowId,
        action: Action,
        reason: Option<String>,
    },
    Steps,
    Register {
        name: String,
        body: Value,
    },
    Remove {
        name: String,
    },
    Watch {
        id: FlowId,
    },
    WatchAll,
}

/// A change of a flow's run that the server is asked for.
#[derive(Debug, Clone, Copy)]
enum Action {
    Suspend,
    Resume,
}

impl Action {
    fn key(self) -> &'static str {
        match self {
            Self::Suspend => "suspend",
            Self::Resume => "resume",
        }
    }
}

/// Runs one command against the server named by `--server`, sending the first token.
pub(crate) async fn run(cli: Cli) -> Result<Output, CliError> {
    let request = parse(cli.command)?;
    let client = Client::new(&cli.server, cli.tokens.first().cloned())?;
    let json = cli.json;
    match request {
        Request::Start { body, key, wait } => {
            start(&client, &body, key.as_deref(), wait, json).await
        }
        Request::Signal { id, name, value } => {
            let url = client.url(&["flows", &id.to_string(), "signals"], &[]);
            let signal = SignalRequest {
                name: name.clone(),
                value,
            };
            client.post::<()>(url, &signal).await?;
            render::accepted(
                json!({ "flow": id, "signal": name }),
                render::sent(id, &name).stdout,
                json,
            )
        }
        Request::Cancel { id, reason } => {
            let url = client.url(&["flows", &id.to_string(), "cancel"], &[]);
            let answer: Option<RequestOutcome> =
                client.post(url, &ReasonRequest { reason }).await?;
            render::requested(id, "cancel", answer.map(|a| a.outcome), json)
        }
        Request::Control { id, action, reason } => {
            let url = client.url(&["flows", &id.to_string(), action.key()], &[]);
            let body = ReasonRequest {
                reason: reason.unwrap_or_default(),
            };
            let answer: Option<RequestOutcome> = client.post(url, &body).await?;
            render::requested(id, action.key(), answer.map(|a| a.outcome), json)
        }
        Request::Steps => {
            let steps: StepList = client.get(client.url(&["steps"], &[])).await?;
            render::steps(&steps, json)
        }
        Request::Register { name, body } => {
            let answer: Registered = client.post(client.url(&["steps"], &[]), &body).await?;
            let version = answer.version;
            render::accepted(
                serde_json::to_value(answer)?,
                format!("step {name:?} registered as version {version}\n"),
                json,
            )
        }
        Request::Remove { name } => {
            client.delete(client.url(&["steps", &name], &[])).await?;
            render::accepted(
                json!({ "removed": name }),
                format!("step {name:?} removed (running flows keep the version they use)\n"),
                json,
            )
        }
        Request::Watch { id } => watch(&client, id, json).await,
        Request::WatchAll => watch_all(&client, json).await,
    }
}

fn parse(command: Command) -> Result<Request, CliError> {
    Ok(match command {
        Command::Start(args) => start_request(args)?,
        Command::Signal(args) => signal_request(args)?,
        Command::Cancel(args) => cancel_request(args)?,
        Command::Suspend(args) => control_request(args, Action::Suspend)?,
        Command::Resume(args) => control_request(args, Action::Resume)?,
        Command::Steps(StepsCommand::Ls) => Request::Steps,
        Command::Steps(StepsCommand::Register(args)) => Request::Register {
            name: args.name.clone(),
            body: register_body(*args)?,
        },
        Command::Steps(StepsCommand::Rm(args)) => Request::Remove { name: args.name },
        Command::Flows(FlowsCommand::Watch(args)) => match args.id {
            Some(id) => Request::Watch { id: parse_id(&id)? },
            None => Request::WatchAll,
        },
        _ => return Err(CliError::new("this command does not go through a server")),
    })
}

fn signal_request(args: SignalArgs) -> Result<Request, CliError> {
    Ok(Request::Signal {
        id: parse_id(&args.id)?,
        value: match &args.value {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| CliError::new(format!("--value {text:?} is not JSON: {e}")))?,
            None => Value::Null,
        },
        name: args.name,
    })
}

fn cancel_request(args: CancelArgs) -> Result<Request, CliError> {
    Ok(Request::Cancel {
        id: parse_id(&args.id)?,
        reason: args.reason,
    })
}

fn control_request(args: ControlArgs, action: Action) -> Result<Request, CliError> {
    Ok(Request::Control {
        id: parse_id(&args.id)?,
        action,
        reason: args.reason,
    })
}

fn start_request(args: StartArgs) -> Result<Request, CliError> {
    let id = args
        .id
        .as_deref()
        .map(|text| parse_id(text).map_err(|error| CliError::new(format!("--id: {}", error.0))))
        .transpose()?;
    let body = if let Some(name) = args.graph {
        let inputs = inputs_object(&args.inputs)?.into_iter().collect();
        StartRequest::TaskGraph { name, inputs, id }
    } else if let Some(name) = args.function {
        let input = function_input(&args.inputs)?;
        StartRequest::Function { name, input, id }
    } else {
        StartRequest::Plan {
            goals: args.goals,
            inputs: inputs_object(&args.inputs)?,
            choices: choices(&args.choices)?,
            name: args.name,
            id,
        }
    };
    Ok(Request::Start {
        body,
        key: args.idempotency_key,
        wait: args.wait,
    })
}

/// `--input KEY=JSON` or `--input {JSON object}`, each key at most once.
fn inputs_object(inputs: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut all = Map::new();
    let mut add = |key: String, value: Value, text: &str| {
        if all.contains_key(&key) {
            return Err(CliError::new(format!(
                "--input {text:?}: input {key:?} is given twice"
            )));
        }
        all.insert(key, value);
        Ok(())
    };
    for text in inputs {
        if text.trim_start().starts_with('{') {
            let fields = match serde_json::from_str(text) {
                Ok(Value::Object(fields)) => fields,
                Ok(_) => {
                    return Err(CliError::new(format!(
                        "--input {text:?} is not a JSON object"
                    )))
                }
                Err(e) => {
                    return Err(CliError::new(format!(
                        "--input {text:?} is not a JSON object: {e}"
                    )))
                }
            };
            for (key, value) in fields {
                add(key, value, text)?;
            }
            continue;
        }
        let (key, value) = key_value(text)?;
        add(key, value, text)?;
    }
    Ok(all)
}

/// `KEY=JSON`.
fn key_value(text: &str) -> Result<(String, Value), CliError> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(CliError::new(format!(
            "--input {text:?} is neither KEY=JSON nor a JSON object"
        )));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(CliError::new(format!(
            "--input {text:?} has no key before ="
        )));
    }
    let value = serde_json::from_str(value).map_err(|e| {
        CliError::new(format!(
            "--input {text:?}: the value of {key:?} is not JSON ({e}); quote a string: {key}='\"{value}\"'"
        ))
    })?;
    Ok((key.to_owned(), value))
}

/// A function's input: one JSON value, or an object built from `KEY=JSON`s; none is `null`.
fn function_input(inputs: &[String]) -> Result<Value, CliError> {
    match inputs {
        [] => Ok(Value::Null),
        [one] => match serde_json::from_str(one) {
            Ok(value) => Ok(value),
            Err(_) if one.contains('=') && !one.trim_start().starts_with('{') => {
                inputs_object(inputs).map(Value::Object)
            }
            Err(e) => Err(CliError::new(format!("--input {one:?} is not JSON: {e}"))),
        },
        several => inputs_object(several).map(Value::Object),
    }
}

/// `--choose ATTR=STEP`.
fn choices(texts: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut choices = BTreeMap::new();
    for text in texts {
        let Some((attribute, step)) = text
            .split_once('=')
            .map(|(a, s)| (a.trim(), s.trim()))
            .filter(|(a, s)| !a.is_empty() && !s.is_empty())
        else {
            return Err(CliError::new(format!("--choose {text:?} is not ATTR=STEP")));
        };
        if choices
            .insert(attribute.to_owned(), step.to_owned())
            .is_some()
        {
            return Err(CliError::new(format!(
                "--choose {text:?}: {attribute:?} is chosen twice"
            )));
        }
    }
    Ok(choices)
}

/// The body of `POST /api/v1/steps` (the server's `HttpStepRequest`).
fn register_body(args: RegisterArgs) -> Result<Value, CliError> {
    let mut inputs: Vec<Value> = args
        .inputs
        .iter()
        .map(|name| json!({ "name": name }))
        .collect();
    for text in &args.optional {
        inputs.push(match text.split_once('=') {
            None => json!({ "name": text, "optional": true }),
            Some((name, default)) => {
                let default: Value = serde_json::from_str(default).map_err(|e| {
                    CliError::new(format!(
                        "--optional {text:?}: the default of {name:?} is not JSON ({e})"
                    ))
                })?;
                json!({ "name": name, "optional": true, "default": default })
            }
        });
    }
    let mut body = json!({
        "name": args.name,
        "url": args.url,
        "inputs": inputs,
        "outputs": args.outputs,
        "mode": match args.mode {
            StepMode::Sync => "sync",
            StepMode::Async => "async",
        },
    });
    let Value::Object(fields) = &mut body else {
        return Err(CliError::new("the step's request is not an object"));
    };
    let millis = |flag: &str, text: &str| -> Result<u64, CliError> {
        let duration = parse_duration(flag, text)?;
        u64::try_from(duration.as_millis())
            .map_err(|_| CliError::new(format!("--{flag} {text:?} is too long")))
    };
    if args.attempts.is_some()
        || args.backoff.is_some()
        || args.max_backoff.is_some()
        || args.no_jitter
    {
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            max_attempts: args.attempts.unwrap_or(defaults.max_attempts),
            initial_backoff_ms: args
                .backoff
                .as_deref()
                .map(|text| millis("backoff", text))
                .transpose()?
                .unwrap_or(defaults.initial_backoff_ms),
            max_backoff_ms: args
                .max_backoff
                .as_deref()
                .map(|text| millis("max-backoff", text))
                .transpose()?
                .unwrap_or(defaults.max_backoff_ms),
            jitter: !args.no_jitter && defaults.jitter,
        };
        fields.insert("retry".to_owned(), serde_json::to_value(retry)?);
    }
    if let Some(text) = &args.timeout {
        fields.insert("timeout_ms".to_owned(), json!(millis("timeout", text)?));
    }
    if let Some(map_over) = args.map_over {
        fields.insert("map_over".to_owned(), json!(map_over));
    }
    if let Some(parallelism) = args.parallelism {
        fields.insert("parallelism".to_owned(), json!(parallelism));
    }
    if let Some(text) = &args.predicate {
        let predicate: Value = serde_json::from_str(text)
            .map_err(|e| CliError::new(format!("--predicate {text:?} is not JSON: {e}")))?;
        fields.insert("predicate".to_owned(), predicate);
    }
    Ok(body)
}

/// `start`: the new flow's id, or with `--wait` its final state once it ended.
async fn start(
    client: &Client,
    body: &StartRequest,
    key: Option<&str>,
    wait: bool,
    json: bool,
) -> Result<Output, CliError> {
    let headers: Vec<(&str, &str)> = key
        .map(|key| (flowstate_api::IDEMPOTENCY_KEY_HEADER, key))
        .into_iter()
        .collect();
    let Started { id, existing } = client
        .post_with(client.url(&["flows"], &[]), body, &headers)
        .await?;
    if !wait {
        let answer = if existing {
            json!({ "id": id, "existing": true })
        } else {
            json!({ "id": id })
        };
        return render::accepted(answer, format!("{id}\n"), json);
    }
    // The id first, at once: whoever stops the wait still knows which flow it was.
    if !json && !print_line(&id.to_string())? {
        return Ok(Output::default());
    }
    let spinner = Progress::for_people(json).spinner(format!("flow {id} started"));
    let followed = follow(client, id, |event| {
        spinner.message(format!("flow {id}: {} (event {})", event.kind, event.seq));
        Ok(true)
    })
    .await?;
    drop(spinner);
    let Followed::Ended(_) = followed else {
        return Ok(Output::default());
    };
    let state: Value = client
        .get(client.url(&["flows", &id.to_string()], &[]))
        .await?;
    // For scripts the server's JSON as it is; for people too, should this CLI not
    // understand it (a newer server).
    let view = serde_json::from_value::<FlowView>(state.clone()).ok();
    let failed = view.as_ref().and_then(failure);
    let mut output = match view.filter(|_| !json) {
        Some(view) => render::record(&FlowRecord::from(view), None, false)?,
        None => render::accepted(state.clone(), format!("{state:#}\n"), true)?,
    };
    output.failure = failed.map(|why| format!("flow {id} failed: {why}"));
    Ok(output)
}

/// Why a flow that ended did not succeed, if it did not, from the API's folded state: a task
/// graph that did not end SUCCESS, a plan with a failure, a function whose outcome is an
/// error.
fn failure(state: &FlowView) -> Option<String> {
    let describe =
        |failure: &flowstate::core::Failure| format!("{}: {}", failure.kind, failure.message);
    match state.status {
        FlowStatus::TaskGraph(FlowState::Success) => None,
        FlowStatus::TaskGraph(ended) => Some(format!("the task graph ended {}", ended.key())),
        FlowStatus::Plan(_) => state.plan.as_ref()?.failure.as_ref().map(describe),
        FlowStatus::Function(_) => match state.function.as_ref()?.outcome.as_ref()? {
            Err(failure) => Some(describe(failure)),
            Ok(_) => None,
        },
    }
}

/// How following a flow stopped.
#[derive(Debug)]
enum Followed {
    /// The flow reached this end state.
    Ended(String),
    /// Whoever reads the output stopped reading.
    Stopped,
}

/// Follows flow `id`'s events from its first one until it ends, handing each (as the API's
/// `{seq, time, type, body}`) to `each`, which returns false to stop.
///
/// The flow's stream says which sequence numbers were recorded; the events themselves are
/// read in pages, so a burst costs a request per page and not one per event.
async fn follow(
    client: &Client,
    id: FlowId,
    mut each: impl FnMut(&EventView) -> Result<bool, CliError>,
) -> Result<Followed, CliError> {
    let flow = id.to_string();
    let mut stream = client
        .stream(client.url(&["flows", &flow, "stream"], &[]))
        .await?;
    let mut last = 0_u64;
    while let Some(message) = stream.next().await? {
        let data: StreamMessage = serde_json::from_str(&message.data).map_err(|e| {
            CliError::new(format!(
                "the stream of flow {id} sent an event that is not a stream message: {e}"
            ))
        })?;
        while data.seq > last {
            let page: EventPage = client
                .get(client.url(
                    &["flows", &flow, "events"],
                    &[
                        ("after", last.to_string()),
                        ("limit", WATCH_PAGE.to_string()),
                    ],
                ))
                .await?;
            let mut moved = false;
            for event in &page.events {
                if event.seq <= last {
                    continue;
                }
                last = event.seq;
                moved = true;
                if !each(event)? {
                    return Ok(Followed::Stopped);
                }
                if let Some(state) = end_state(event) {
                    return Ok(Followed::Ended(state));
                }
            }
            if !moved {
                break; // the stream ran ahead of what reads see; its next message catches up
            }
        }
    }
    Err(CliError::new(format!(
        "the server closed the stream of flow {id} before the flow ended (is it shutting down?)"
    )))
}

/// The state a flow ended in, if `event` is the event that ended it: a task graph's success,
/// failure or reverted, a plan's deactivation (all its work recorded), a function done.
fn end_state(event: &EventView) -> Option<String> {
    let status = match EventBody::from(event.body.clone()) {
        EventBody::FlowStateChanged { to } => FlowStatus::TaskGraph(to),
        EventBody::PlanStateChanged { to, .. } => FlowStatus::Plan(to),
        EventBody::ActivationStateChanged { to, .. } => FlowStatus::Function(to),
        _ => return None,
    };
    let ended = matches!(
        status,
        FlowStatus::TaskGraph(FlowState::Success | FlowState::Failure | FlowState::Reverted)
            | FlowStatus::Plan(PlanState::Deactivated | PlanState::Archived)
            | FlowStatus::Function(ActivationState::Done)
    );
    ended.then(|| status.key().to_owned())
}

/// `flows watch ID`: a line per event until the flow ends.
async fn watch(client: &Client, id: FlowId, json: bool) -> Result<Output, CliError> {
    let followed = follow(client, id, |event| {
        let line = if json {
            let mut event = serde_json::to_value(event)?;
            if let Value::Object(fields) = &mut event {
                fields.insert("flow".to_owned(), json!(id));
            }
            event.to_string()
        } else {
            render::event_line(event)
        };
        print_line(&line)
    })
    .await?;
    Ok(match followed {
        Followed::Ended(state) if !json => Output {
            hint: Some(format!("flow {id} ended: {state}")),
            ..Output::default()
        },
        _ => Output::default(),
    })
}

/// `flows watch`: a line per change of any flow, until the server stops.
async fn watch_all(client: &Client, json: bool) -> Result<Output, CliError> {
    let mut stream = client
        .stream(client.url(&["events", "stream"], &[]))
        .await?;
    while let Some(message) = stream.next().await? {
        let data: StreamMessage = serde_json::from_str(&message.data).map_err(|e| {
            CliError::new(format!(
                "the stream of all flows sent an event that is not a stream message: {e}"
            ))
        })?;
        let line = if json {
            serde_json::to_value(&data)?.to_string()
        } else {
            render::change_line(&data)
        };
        if !print_line(&line)? {
            return Ok(Output::default());
        }
    }
    Err(CliError::new(
        "the server closed the stream of all flows (is it shutting down?)",
    ))
}

/// Prints one line on stdout at once; false when the reader went away (its choice, not a
/// failure).
fn print_line(line: &str) -> Result<bool, CliError> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(CliError::new(format!("cannot write the output: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn inputs_are_key_json_pairs_or_objects() {
        let inputs =
            inputs_object(&texts(&["a=1", r#"b="x""#, r#"{"c": [1], "d": null}"#])).expect("ok");
        assert_eq!(
            Value::Object(inputs),
            json!({"a": 1, "b": "x", "c": [1], "d": null})
        );
        for bad in [
            &["a"][..],
            &["=1"],
            &["a=x"],
            &["a=1", "a=2"],
            &["{nope"],
            &["a=1", r#"{"a":2}"#],
        ] {
            assert!(inputs_object(&texts(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_function_takes_one_value_or_pairs() {
        assert_eq!(function_input(&[]).ok(), Some(Value::Null));
        assert_eq!(function_input(&texts(&["5"])).ok(), Some(json!(5)));
        assert_eq!(
            function_input(&texts(&[r#""a=b""#])).ok(),
            Some(json!("a=b"))
        );
        assert_eq!(
            function_input(&texts(&["a=1", "b=true"])).ok(),
            Some(json!({"a": 1, "b": true}))
        );
        assert!(function_input(&texts(&["nope"])).is_err());
    }

    #[test]
    fn choices_are_attr_step_pairs() {
        let chosen = choices(&texts(&["amount=quote"])).expect("ok");
        assert_eq!(chosen.get("amount").map(String::as_str), Some("quote"));
        assert!(choices(&texts(&["amount"])).is_err());
        assert!(choices(&texts(&["a=x", "a=y"])).is_err());
    }

    /// The API's state of a flow with `status`, and `extra` fields (`plan`, `function`).
    fn view(status: Value, extra: Value) -> FlowView {
        let mut state = json!({
            "id": "018bcfe5-6800-7505-8505-050505050505", "kind": status["kind"],
            "definition": "d", "input": null, "status": status,
            "created_at": "2023-11-14T22:13:20.000000Z", "updated_at": "2023-11-14T22:13:20.000000Z",
            "last_seq": 1, "atoms": {}, "diagnostic": null, "total_seq": 1
        });
        if let (Value::Object(fields), Value::Object(extra)) = (&mut state, extra) {
            fields.extend(extra);
        }
        serde_json::from_value(state).expect("a flow view")
    }

    #[test]
    fn failures_are_read_from_the_api_state() {
        let graph = |state: &str| view(json!({"kind": "task_graph", "state": state}), json!({}));
        assert_eq!(failure(&graph("success")), None);
        assert_eq!(
            failure(&graph("reverted")).as_deref(),
            Some("the task graph ended reverted")
        );
        let deactivated = json!({"kind": "plan", "state": "deactivated"});
        let plan = view(
            deactivated.clone(),
            json!({"plan": {"attributes": {}, "steps": {},
                "failure": {"kind": "GoalFailed", "message": "no"}}}),
        );
        assert_eq!(failure(&plan).as_deref(), Some("GoalFailed: no"));
        let plan = view(
            deactivated,
            json!({"plan": {"attributes": {}, "steps": {}}}),
        );
        assert_eq!(failure(&plan), None);
        let function = |outcome: Value| {
            view(
                json!({"kind": "function", "state": "done"}),
                json!({"function": {"journal": [], "sleeps_ended": [], "inbox": {},
                    "outcome": outcome, "run": 1, "incarnations": []}}),
            )
        };
        assert_eq!(failure(&function(json!({"Ok": 1}))), None);
        assert_eq!(
            failure(&function(
                json!({"Err": {"kind": "Cancelled", "message": "stop"}})
            ))
            .as_deref(),
            Some("Cancelled: stop")
        );
    }

    #[test]
    fn ends_are_recognised_by_kind() {
        let event = |body: Value| -> EventView {
            let kind = body["type"].clone();
            serde_json::from_value(json!({"seq": 1, "time": "2023-11-14T22:13:20.000000Z",
                "type": kind, "body": body}))
            .expect("an event")
        };
        let changed = |kind: &str, to: &str| event(json!({"type": kind, "to": to}));
        assert_eq!(
            end_state(&changed("plan_state_changed", "deactivated")).as_deref(),
            Some("deactivated")
        );
        assert_eq!(end_state(&changed("plan_state_changed", "failed")), None);
        assert_eq!(
            end_state(&changed("flow_state_changed", "reverted")).as_deref(),
            Some("reverted")
        );
        assert_eq!(end_state(&changed("flow_state_changed", "suspended")), None);
        assert_eq!(
            end_state(&changed("activation_state_changed", "done")).as_deref(),
            Some("done")
        );
        assert_eq!(
            end_state(&changed("activation_state_changed", "sleeping")),
            None
        );
        let started = event(json!({"type": "step_started", "step": "a", "inputs": {}, "items": 1}));
        assert_eq!(end_state(&started), None);
    }
}
