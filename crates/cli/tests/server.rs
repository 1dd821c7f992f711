//! End-to-end tests of the commands that go through a server: a real `flowstate serve` (the
//! built binary, with its example definitions, on a temporary SQLite store), driven by the
//! CLI binary as a user or a script would.
//!
//! Flows are followed to their end through the server's event streams; nothing waits for a
//! fixed time (deadlines only guard against a hang).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{dead_address, fails, field, json, succeeds, Responder, Server};
use flowstate::FlowId;
use serde_json::{json, Value};

/// The id a `start` printed.
fn started(output: &std::process::Output) -> String {
    let stdout = succeeds(output);
    let id = stdout.trim().to_owned();
    assert!(id.parse::<FlowId>().is_ok(), "not a flow id: {stdout:?}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    id
}

/// The JSON lines of a `--json` watch.
fn json_lines(output: &std::process::Output) -> Vec<Value> {
    succeeds(output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect()
}

#[test]
fn a_plan_started_with_wait_ends_with_its_goal_and_provenance() {
    let server = Server::start();
    let record = json(&server.cli(&[
        "--json",
        "start",
        "--goal",
        "confirmation_id",
        "--input",
        "customer_id=42",
        "--wait",
    ]));
    assert_eq!(record["status"]["kind"], "plan");
    assert_eq!(record["status"]["state"], "deactivated");
    let attribute = &record["plan"]["attributes"]["confirmation_id"];
    assert_eq!(attribute["step"], "process_payment", "{record:#}");
    assert_eq!(
        record["plan"]["attributes"]["customer_name"]["value"],
        "Customer 42"
    );

    // For people: the id at once, then the final state as `flows show` prints it.
    let output = server.cli(&[
        "start",
        "--goal",
        "customer_name",
        "--input",
        r#"{"customer_id": 7}"#,
        "--wait",
    ]);
    let stdout = succeeds(&output);
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.parse::<FlowId>().is_ok(), "{stdout}");
    assert_eq!(field(&stdout, "id").as_deref(), Some(first));
    assert_eq!(field(&stdout, "state").as_deref(), Some("deactivated"));
    assert!(stdout.contains("\"Customer 7\""), "{stdout}");
    // The bar is for terminals only: stderr is a pipe here and stays empty.
    assert!(output.stderr.is_empty(), "{:?}", output.stderr);

    // Without --wait, the id only: text or JSON.
    let id = started(&server.cli(&["start", "--goal", "echo", "--input", r#"text="hi""#]));
    let answer = json(&server.cli(&[
        "start",
        "--json",
        "--goal",
        "echo",
        "--input",
        r#"text="hi""#,
        "--name",
        "greeting",
    ]));
    assert!(answer["id"].as_str().is_some_and(|other| other != id));
}

#[test]
fn a_task_graph_is_watched_event_by_event_to_its_end() {
    let server = Server::start();
    let id = started(&server.cli(&["start", "--graph", "greet", "--input", r#"name="ada""#]));

    let output = server.cli(&["flows", "watch", &id, "--json"]);
    let events = json_lines(&output);
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "every event, in order"
    );
    assert!(events.iter().all(|e| e["flow"] == id.as_str()));
    assert_eq!(events[0]["type"], "flow_created");
    let last = events.last().expect("events");
    assert_eq!(last["type"], "flow_state_changed");
    assert_eq!(last["body"]["to"], "success");
    assert!(output.stderr.is_empty(), "no hint with --json");
    let shouted = events.iter().any(|e| {
        e["body"]["atom"] == "shout"
            && e["body"]["result"]
                .as_str()
                .is_some_and(|r| r.starts_with("HELLO "))
    });
    assert!(shouted, "{events:#?}");

    // Watching a flow that already ended prints its whole log and ends at once.
    let output = server.cli(&["flows", "watch", &id]);
    let text = succeeds(&output);
    assert_eq!(text.lines().count(), events.len(), "{text}");
    let last: Vec<&str> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(last[0], seqs.len().to_string());
    assert_eq!(last[2], "flow_state_changed");
    assert_eq!(last[3], r#"{"to":"success"}"#);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        format!("flow {id} ended: success")
    );
}

#[test]
fn functions_take_signals_and_cancels_through_the_server() {
    let server = Server::start();

    // `start --wait` prints the id at once and waits; the signal lets the function finish.
    let mut waiting = common::command()
        .args(["--server", &server.url])
        .args(["start", "--function", "approval", "--input", "5", "--wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start --wait");
    let mut stdout = BufReader::new(waiting.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the id line");
    let id = first.trim().to_owned();
    assert!(id.parse::<FlowId>().is_ok(), "{first:?}");
    let sent = succeeds(&server.cli(&["signal", &id, "approve", "--value", "true"]));
    assert_eq!(sent.trim(), format!("signal \"approve\" sent to flow {id}"));
    waiting.stdout = Some(stdout.into_inner());
    let output = common::finish(waiting);
    let shown = succeeds(&output);
    assert_eq!(field(&shown, "state").as_deref(), Some("done"));
    assert_eq!(
        field(&shown, "returned").as_deref(),
        Some("\"approved 10\"")
    );
    assert_eq!(field(&shown, "outcome").as_deref(), Some("succeeded"));

    // A cancelled function: `start --wait` prints its final state, then reports its failure
    // as the one error line.
    let mut waiting = common::command()
        .args(["--server", &server.url])
        .args(["start", "--function", "approval", "--input", "7", "--wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start --wait");
    let mut stdout = BufReader::new(waiting.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the id line");
    let cancelled = first.trim().to_owned();
    let answer = json(&server.cli(&["--json", "cancel", &cancelled, "--reason", "not needed"]));
    assert_eq!(
        answer,
        json!({"flow": cancelled, "requested": "cancel", "outcome": "recorded"})
    );
    waiting.stdout = Some(stdout.into_inner());
    let output = common::finish(waiting);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: flow {cancelled} failed: Cancelled: ")),
        "{stderr}"
    );
    let shown = String::from_utf8_lossy(&output.stdout);
    assert_eq!(field(&shown, "state").as_deref(), Some("done"));
    assert!(
        field(&shown, "returned").is_some_and(|o| o.starts_with("error Cancelled"))
            && field(&shown, "outcome").is_some_and(|o| o.starts_with("cancelled: ")),
        "{shown}"
    );
    let record = json(&server.store_cli(&["--json", "flows", "show", &cancelled]));
    assert_eq!(record["function"]["outcome"]["Err"]["kind"], "Cancelled");

    // A signal to something that is not a function is the server's problem, in one line.
    let graph = started(&server.cli(&["start", "--graph", "greet"]));
    let line = fails(&server.cli(&["signal", &graph, "approve"]));
    assert!(line.ends_with("(invalid_state)"), "{line}");
}

#[test]
fn http_steps_are_registered_listed_run_and_removed() {
    let server = Server::start();
    // The step: upper-cases its input `text` into `shout`.
    let step = Responder::start(|request| {
        let body = request.json();
        let text = body["inputs"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_uppercase();
        (
            200,
            "application/json",
            json!({ "shout": text }).to_string(),
        )
    });
    let registered = succeeds(&server.cli(&[
        "steps",
        "register",
        "shout",
        "--url",
        &format!("{}/shout", step.url),
        "--input",
        "text",
        "--optional",
        "volume=11",
        "--output",
        "shout",
        "--attempts",
        "3",
        "--backoff",
        "10ms",
        "--timeout",
        "5s",
    ]));
    assert_eq!(registered.trim(), "step \"shout\" registered as version 1");

    let table = succeeds(&server.cli(&["steps", "ls"]));
    let row: Vec<&str> = table
        .lines()
        .find(|line| line.starts_with("shout"))
        .expect("a row for shout")
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["shout", "1", "text,", "volume?=11", "shout", "3", "5000ms"]
    );
    let steps = json(&server.cli(&["steps", "ls", "--json"]));
    let spec = steps["steps"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "shout"))
        .expect("shout is listed");
    assert_eq!(spec["retry"]["max_attempts"], 3);
    assert_eq!(spec["retry"]["initial_backoff_ms"], 10);
    assert_eq!(spec["timeout_ms"], 5000);
    assert_eq!(
        spec["inputs"][1],
        json!({"name": "volume", "optional": true, "default": 11})
    );

    let record = json(&server.cli(&[
        "--json",
        "start",
        "--goal",
        "shout",
        "--input",
        r#"text="hey""#,
        "--wait",
    ]));
    assert_eq!(record["plan"]["attributes"]["shout"]["value"], "HEY");
    let calls = step.requests();
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0].line.starts_with("POST /shout "),
        "{}",
        calls[0].line
    );
    assert!(calls[0].header("idempotency-key").is_some());

    let again = json(&server.cli(&[
        "--json", "steps", "register", "shout", "--url", &step.url, "--input", "text", "--output",
        "shout", "--mode", "async",
    ]));
    assert_eq!(again, json!({"name": "shout", "version": 2}));

    let removed = succeeds(&server.cli(&["steps", "rm", "shout"]));
    assert!(removed.starts_with("step \"shout\" removed"), "{removed}");
    let steps = json(&server.cli(&["steps", "ls", "--json"]));
    assert!(steps["steps"]
        .as_array()
        .is_some_and(|all| all.iter().all(|s| s["name"] != "shout")));
    let line = fails(&server.cli(&["steps", "rm", "shout"]));
    assert_eq!(
        line,
        "error: no step named \"shout\" is registered (not_found)"
    );
    let line = fails(&server.cli(&[
        "steps", "register", "bad", "--url", "ftp://x", "--output", "y",
    ]));
    assert!(line.ends_with("(invalid_request)"), "{line}");
}

#[test]
fn server_problems_and_bad_arguments_are_one_line_errors() {
    let server = Server::start();
    let unknown = "01970000-0000-7000-8000-000000000000";
    for args in [
        &["flows", "watch", unknown][..],
        &["signal", unknown, "approve"],
        &["cancel", unknown],
    ] {
        let line = fails(&server.cli(args));
        assert!(line.ends_with("(not_found)"), "{args:?}: {line}");
        assert!(line.contains(unknown), "{line}");
    }
    let line = fails(&server.cli(&["start", "--goal", "no_such_thing"]));
    assert!(line.ends_with("(planning_failed)"), "{line}");
    let line = fails(&server.cli(&["start", "--function", "no_such_function"]));
    assert!(line.ends_with("(unknown_definition)"), "{line}");

    // Refused before anything is sent.
    for (args, says) in [
        (
            &["start", "--graph", "greet", "--input", "name"][..],
            "neither KEY=JSON",
        ),
        (
            &["start", "--graph", "greet", "--input", "name=ada"],
            "quote a string",
        ),
        (&["start", "--goal", "x", "--choose", "amount"], "ATTR=STEP"),
        (&["signal", "not-an-id", "approve"], "not a flow id"),
        (
            &["signal", unknown, "approve", "--value", "{nope"],
            "is not JSON",
        ),
        (&["suspend", "nope"], "not a flow id"),
        (
            &[
                "steps",
                "register",
                "s",
                "--url",
                "http://x",
                "--output",
                "o",
                "--timeout",
                "soon",
            ],
            "--timeout",
        ),
    ] {
        let line = fails(&server.cli(args));
        assert!(line.contains(says), "{args:?}: {line}");
    }

    // Plans have no suspended state; a finished task graph cannot be resumed.
    let plan = started(&server.cli(&["start", "--goal", "echo", "--input", "text=1"]));
    for action in ["suspend", "resume"] {
        let line = fails(&server.cli(&[action, &plan]));
        assert!(line.ends_with("(not_suspendable)"), "{line}");
    }
    let graph = started(&server.cli(&["start", "--graph", "greet"]));
    succeeds(&server.cli(&["flows", "watch", &graph]));
    let line = fails(&server.cli(&["resume", &graph, "--reason", "test"]));
    assert!(line.ends_with("(invalid_state)"), "{line}");
}

#[test]
fn a_task_graph_is_suspended_and_resumed_through_the_server() {
    let server = Server::start();
    let graph = started(&server.cli(&["start", "--graph", "greet"]));
    let answer = json(&server.cli(&["--json", "suspend", &graph, "--reason", "test"]));
    assert_eq!(answer["flow"], graph.as_str());
    assert_eq!(answer["requested"], "suspend");
    // Whether the suspend arrived before the graph finished is up to the machine's speed;
    // both are followed to their end.
    match answer["outcome"].as_str() {
        Some("recorded") => {
            // It ends SUSPENDED once its running atom finished; then it is resumed.
            let deadline = std::time::Instant::now() + common::DEADLOCK_GUARD;
            loop {
                let shown = succeeds(&server.store_cli(&["flows", "show", &graph]));
                if field(&shown, "state").as_deref() == Some("suspended") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "never suspended: {shown}"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let resumed = succeeds(&server.cli(&["resume", &graph]));
            assert_eq!(resumed.trim(), format!("resume of flow {graph} recorded"));
        }
        Some("ignored") => {}
        other => panic!("unexpected outcome {other:?}"),
    }
    let output = server.cli(&["flows", "watch", &graph]);
    succeeds(&output);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        format!("flow {graph} ended: success")
    );
    // Now it has ended: a suspend changes nothing.
    let ignored = succeeds(&server.cli(&["suspend", &graph]));
    assert_eq!(
        ignored.trim(),
        format!("suspend of flow {graph} ignored: there is nothing to suspend in its state")
    );
}

#[test]
fn suspend_and_resume_send_what_the_api_expects_and_report_its_answer() {
    // A stand-in for the server: 202 for suspend, a 409 problem for resume.
    let api = Responder::start(|request| {
        if request.line.contains("/suspend ") {
            (202, "application/json", String::new())
        } else {
            (
                409,
                "application/problem+json",
                json!({
                    "type": "https://flowstate.invalid/problems/invalid_state",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "the flow is not suspended",
                    "code": "invalid_state",
                })
                .to_string(),
            )
        }
    });
    let id = "01970000-0000-7000-8000-000000000001";
    let token = "0123456789abcdef0123456789abcdef";
    let run = |args: &[&str]| {
        let mut command = common::command();
        command
            .args(["--server", &api.url, "--token", token])
            .args(args);
        common::run(command)
    };
    let said = succeeds(&run(&["suspend", id]));
    assert_eq!(said.trim(), format!("suspend requested for flow {id}"));
    let said = json(&run(&["--json", "suspend", id, "--reason", "maintenance"]));
    assert_eq!(said, json!({"flow": id, "requested": "suspend"}));
    let line = fails(&run(&["resume", id]));
    assert_eq!(line, "error: the flow is not suspended (invalid_state)");

    let requests = api.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0].line,
        format!("POST /api/v1/flows/{id}/suspend HTTP/1.1")
    );
    assert_eq!(requests[0].json(), json!({}));
    assert_eq!(requests[1].json(), json!({"reason": "maintenance"}));
    assert_eq!(
        requests[2].line,
        format!("POST /api/v1/flows/{id}/resume HTTP/1.1")
    );
    for request in &requests {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
    }

    // Something that is not a flowstate server: its answer, quoted, in one line.
    let other = Responder::start(|_| (502, "text/html", "<h1>bad gateway</h1>".to_owned()));
    let mut command = common::command();
    command.args(["--server", &other.url, "steps", "ls"]);
    let line = fails(&common::run(command));
    assert_eq!(
        line,
        "error: the server answered 502 Bad Gateway to GET /api/v1/steps: <h1>bad gateway</h1>"
    );
}

#[test]
fn without_a_server_the_error_says_how_to_start_one() {
    let nowhere = dead_address();
    for args in [
        &["steps", "ls"][..],
        &["start", "--goal", "x"],
        &["flows", "watch"],
    ] {
        let mut command = common::command();
        command.args(["--server", &nowhere]).args(args);
        let line = fails(&common::run(command));
        assert!(
            line.starts_with(&format!(
                "error: no flowstate server answers at {nowhere} ("
            )),
            "{line}"
        );
        assert!(line.contains("flowstate serve"), "{line}");
    }
    let mut command = common::command();
    command.args(["--server", "https://127.0.0.1:1", "steps", "ls"]);
    let line = fails(&common::run(command));
    assert!(line.contains("plain HTTP"), "{line}");
}

#[test]
fn tokens_come_from_flags_the_environment_or_the_config_file() {
    let (first, second) = (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    );
    // The server accepts every token of FLOWSTATE_TOKEN.
    let server = Server::start_with(&[], &[("FLOWSTATE_TOKEN", &format!("{first},{second}"))]);
    let line = fails(&server.cli(&["steps", "ls"]));
    assert!(line.ends_with("(unauthorized)"), "{line}");
    succeeds(&server.cli(&["--token", second, "steps", "ls"]));
    // The client sends the first token of the list.
    succeeds(&server.cli_env(
        &["steps", "ls"],
        &[("FLOWSTATE_TOKEN", &format!("{second},x"))],
    ));
    let line = fails(&server.cli_env(
        &["steps", "ls"],
        &[("FLOWSTATE_TOKEN", &format!("x,{second}"))],
    ));
    assert!(line.ends_with("(unauthorized)"), "{line}");

    let dir = tempfile::tempdir().expect("dir");
    let config = common::write_file(
        dir.path(),
        "flowstate.toml",
        &format!("tokens = [\"{first}\"]\nserver = \"{}\"\n", server.url),
    );
    let config = config.to_str().expect("utf-8 path");
    let mut command = common::command();
    command.args(["--config", config, "steps", "ls", "--json"]);
    assert!(json(&common::run(command))["steps"].is_array());
    // A flag beats the file.
    let mut command = common::command();
    command.args([
        "--config",
        config,
        "--token",
        "cccccccccccccccccccccccccccccccc",
        "steps",
        "ls",
    ]);
    let line = fails(&common::run(command));
    assert!(line.ends_with("(unauthorized)"), "{line}");
}

#[test]
fn serve_takes_its_settings_from_the_config_file_below_flags_and_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("configured.db");
    let config = common::write_file(
        dir.path(),
        "flowstate.toml",
        &format!(
            "store = \"{}\"\naddr = \"127.0.0.1:0\"\nexamples = false\n",
            store.display()
        ),
    );
    let mut command = common::command();
    command.args(["serve"]).env("FLOWSTATE_CONFIG", &config);
    let server = Server::spawn(command, &[], store.clone(), None);
    assert!(store.exists(), "the store named by the file was created");
    assert!(!server.url.ends_with(":7280"), "{}", server.url);
    let steps = json(&server.cli(&["--json", "steps", "ls"]));
    assert_eq!(steps["steps"], json!([]), "examples = false");
    let line = fails(&server.cli(&["start", "--function", "approval"]));
    assert!(line.ends_with("(unknown_definition)"), "{line}");
    drop(server);

    // The file's address is one the server refuses (not loopback, and no token): the flag,
    // or the environment, must win over it.
    let refused = common::write_file(
        dir.path(),
        "refused.toml",
        &format!("store = \"{}\"\naddr = \"192.0.2.1:80\"\n", store.display()),
    );
    let mut command = common::command();
    command.arg("--config").arg(&refused).arg("serve");
    let line = fails(&common::run(command));
    assert!(line.contains("192.0.2.1:80"), "{line}");
    let mut command = common::command();
    command
        .arg("--config")
        .arg(&refused)
        .args(["serve", "--addr", "127.0.0.1:0", "--no-examples"]);
    let server = Server::spawn(command, &[], store.clone(), None);
    let steps = json(&server.cli(&["--json", "steps", "ls"]));
    assert_eq!(steps["steps"], json!([]), "--no-examples");
    drop(server);
    let mut command = common::command();
    command.arg("--config").arg(&refused).arg("serve");
    let server = Server::spawn(command, &[("FLOWSTATE_ADDR", "127.0.0.1:0")], store, None);
    let steps = json(&server.cli(&["--json", "steps", "ls"]));
    assert!(
        steps["steps"].as_array().is_some_and(|s| !s.is_empty()),
        "the examples are registered by default"
    );
}

#[test]
fn a_start_with_a_key_or_an_id_is_made_once() {
    let server = Server::start();
    let start = |extra: &[&str]| {
        let mut args = vec!["start", "--function", "approval", "--input", "5"];
        args.extend_from_slice(extra);
        server.cli(&args)
    };
    let id = started(&start(&["--idempotency-key", "order-1234"]));
    let again = json(&start(&["--json", "--idempotency-key", "order-1234"]));
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["existing"], true);
    let error = fails(&server.cli(&[
        "start",
        "--function",
        "approval",
        "--input",
        "6",
        "--idempotency-key",
        "order-1234",
    ]));
    assert!(error.contains("(idempotency_key_reused)"), "{error}");

    let chosen = "01970000-0000-7000-8000-0000000000c1";
    assert_eq!(started(&start(&["--id", chosen])), chosen);
    assert_eq!(started(&start(&["--id", chosen])), chosen);
    let error = fails(&server.cli(&["start", "--function", "approval", "--id", chosen]));
    assert!(error.contains("(flow_exists)"), "{error}");
    let error = fails(&start(&["--id", "not-a-uuid"]));
    assert!(error.contains("--id"), "{error}");
}
