//! The server's logs: `flowstate serve --log-format json` with `RUST_LOG=info` writes one
//! JSON object per line on stderr, with an event (and the flow's id) for every flow that
//! starts and finishes, and never a signal's value or the bearer token.

mod common;

use std::time::{Duration, Instant};

use common::{succeeds, Server};
use serde_json::Value;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A value no log may hold (sent as a signal the function cannot use: it fails).
const SECRET: &str = "zebra-signal-value-7731";

/// The JSON log lines the server wrote so far (every line must be one).
fn log_lines(server: &Server) -> Vec<Value> {
    server
        .stderr_text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// The `flow finished` event of `flow`, once written.
fn finished(lines: &[Value], flow: &str) -> Option<Value> {
    lines
        .iter()
        .find(|line| line["message"] == "flow finished" && line["flow"] == flow)
        .cloned()
}

#[test]
fn json_logs_tell_each_flow_once_and_never_a_payload_or_the_token() {
    let server = Server::start_with(
        &["--log-format", "json", "--token", TOKEN],
        &[("RUST_LOG", "info")],
    );
    let cli = |args: &[&str]| server.cli(&[&["--token", TOKEN], args].concat());
    let graph = succeeds(&cli(&[
        "start",
        "--graph",
        "greet",
        "--input",
        r#"name="ada""#,
        "--wait",
    ]));
    let graph = graph.lines().next().unwrap_or_default().to_owned();
    let function = succeeds(&cli(&["start", "--function", "approval", "--input", "5"]));
    let function = function.trim().to_owned();
    let value = format!("\"{SECRET}\"");
    succeeds(&cli(&["signal", &function, "approve", "--value", &value]));
    succeeds(&cli(&["flows", "watch", &function]));

    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let lines = log_lines(&server);
        if finished(&lines, &graph).is_some() && finished(&lines, &function).is_some() {
            break lines;
        }
        assert!(Instant::now() < deadline, "{}", server.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    let succeeded = finished(&lines, &graph).unwrap_or_default();
    assert_eq!(succeeded["outcome"], "succeeded", "{succeeded}");
    assert_eq!(succeeded["kind"], "task_graph");
    assert_eq!(succeeded["definition"], "greet");
    assert_eq!(succeeded["level"], "INFO");
    let failed = finished(&lines, &function).unwrap_or_default();
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert_eq!(failed["kind"], "function");
    assert_eq!(failed["definition"], "approval");
    for flow in [&graph, &function] {
        let starts = lines
            .iter()
            .filter(|line| line["message"] == "flow started" && line["flow"] == flow.as_str())
            .count();
        assert_eq!(starts, 1, "one start event for {flow}");
    }
    let text = server.stderr_text();
    assert!(
        !text.contains(SECRET),
        "a signal's value was logged:\n{text}"
    );
    assert!(!text.contains(TOKEN), "the token was logged:\n{text}");
    assert!(!text.contains("ada"), "an input was logged:\n{text}");
}
