//! End-to-end tests of `flowstate archive ...` and of how `flows ...` treats archived flows:
//! each test writes a store with the library, runs the real executable and checks what a
//! user or a script would see. Times come from a manual clock, except `archive run`'s own
//! (the system clock), which only ever sees flows from 2026-01-01.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use flowstate::core::machine::{FlowState, PlanState};
use flowstate::core::{EventBody, ManualClock};
use flowstate::kernel::FlowWriter;
use flowstate::sqlite::{SqliteOptions, SqliteStore};
use flowstate::{Clock, FlowId, FlowKind, Store, Timestamp};
use serde_json::Value;

/// 2026-01-01T00:00:00Z.
const START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

struct Fixture {
    dir: tempfile::TempDir,
    store: PathBuf,
    archive: PathBuf,
    /// A deactivated plan: created (1), completed (2), deactivated (3), one second apart.
    plan: FlowId,
    /// A deactivated plan marked archived in the store (4) but not yet moved: what a pass
    /// that stopped after its first step leaves.
    half_archived: FlowId,
    /// A running task graph.
    graph: FlowId,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("flows.db");
    let archive = dir.path().join("archive");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (plan, half_archived, graph) = runtime.block_on(write_flows(&store));
    Fixture {
        dir,
        store,
        archive,
        plan,
        half_archived,
        graph,
    }
}

async fn plan(store: &SqliteStore, clock: &ManualClock, n: u8, archived: bool) -> FlowId {
    let id = FlowId::from_parts(clock.now(), [n; 10]);
    let mut writer = FlowWriter::new(id);
    let mut steps = vec![
        EventBody::FlowCreated {
            kind: FlowKind::Plan,
            definition: "onboarding".to_owned(),
            input: Value::Null,
        },
        EventBody::PlanStateChanged {
            to: PlanState::Completed,
            reason: None,
        },
        EventBody::PlanStateChanged {
            to: PlanState::Deactivated,
            reason: None,
        },
    ];
    if archived {
        steps.push(EventBody::PlanStateChanged {
            to: PlanState::Archived,
            reason: None,
        });
    }
    for body in steps {
        writer
            .append(store, clock, vec![body])
            .await
            .expect("append plan");
        clock.advance(Duration::from_secs(1));
    }
    id
}

async fn write_flows(path: &Path) -> (FlowId, FlowId, FlowId) {
    let clock = Arc::new(ManualClock::new(START));
    let store =
        SqliteStore::open(path, clock.clone(), SqliteOptions::default()).expect("open store");
    let first = plan(&store, &clock, 1, false).await;
    let half = plan(&store, &clock, 2, true).await;
    let graph = FlowId::from_parts(clock.now(), [3; 10]);
    let bodies = vec![
        EventBody::FlowCreated {
            kind: FlowKind::TaskGraph,
            definition: "order".to_owned(),
            input: Value::Null,
        },
        EventBody::FlowStateChanged {
            to: FlowState::Running,
        },
    ];
    FlowWriter::new(graph)
        .append(&store, clock.as_ref(), bodies)
        .await
        .expect("append graph");
    store.close().await.expect("close");
    (first, half, graph)
}

/// Runs the binary with `--store` and `--archive`, ignoring both variables of the
/// environment.
fn flowstate(f: &Fixture, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .arg("--store")
        .arg(&f.store)
        .arg("--archive")
        .arg(&f.archive)
        .args(args)
        .env_remove("FLOWSTATE_STORE")
        .env_remove("FLOWSTATE_ARCHIVE")
        .current_dir(f.dir.path())
        .output()
        .expect("run flowstate")
}

fn succeeds(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

fn fails(output: &Output) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).expect("utf-8 stderr");
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].starts_with("error: "), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "an error must print no result");
    lines[0].to_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&succeeds(output)).expect("stdout is JSON")
}

fn field(stdout: &str, name: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let value = line.strip_prefix(name)?;
        value.starts_with(' ').then(|| value.trim().to_owned())
    })
}

fn ids(page: &Value) -> Vec<String> {
    page["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn archived_flows_are_hidden_from_live_listings() {
    let f = fixture();
    let live = json(&flowstate(&f, &["--json", "flows", "ls"]));
    assert_eq!(ids(&live), vec![f.plan.to_string(), f.graph.to_string()]);
    let table = succeeds(&flowstate(&f, &["flows", "ls", "--kind", "plan"]));
    assert!(!table.contains(&f.half_archived.to_string()), "{table}");
    // Asked for by state, flows still in the store are listed.
    let limbo = json(&flowstate(
        &f,
        &["--json", "flows", "ls", "--state", "archived"],
    ));
    assert_eq!(ids(&limbo), vec![f.half_archived.to_string()]);

    // Shown by id, with a hint on stderr.
    let id = f.half_archived.to_string();
    let output = flowstate(&f, &["flows", "show", &id]);
    let shown = succeeds(&output);
    assert_eq!(field(&shown, "state").as_deref(), Some("archived"));
    let hint = String::from_utf8_lossy(&output.stderr);
    assert!(hint.contains("archive show"), "{hint}");
}

#[test]
fn archive_run_moves_deactivated_plans_and_the_archive_commands_read_them() {
    let f = fixture();
    // Nothing is old enough.
    let report = json(&flowstate(
        &f,
        &["--json", "archive", "run", "--max-age", "36500d"],
    ));
    // The flow an earlier pass left marked archived is finished whatever the age.
    assert_eq!(report["archived"], 0, "{report}");
    assert_eq!(report["recovered"], 1, "{report}");
    let report = succeeds(&flowstate(
        &f,
        &["archive", "run", "--max-age", "0", "--batch", "5"],
    ));
    assert_eq!(field(&report, "archived").as_deref(), Some("1"), "{report}");
    assert_eq!(field(&report, "events").as_deref(), Some("4"), "{report}");
    assert!(f
        .archive
        .join("flows")
        .join(format!("{}.json", f.plan))
        .is_file());

    let live = json(&flowstate(&f, &["--json", "flows", "ls"]));
    assert_eq!(ids(&live), vec![f.graph.to_string()]);

    let archived = json(&flowstate(&f, &["--json", "archive", "ls"]));
    assert_eq!(
        ids(&archived),
        vec![f.plan.to_string(), f.half_archived.to_string()]
    );
    assert!(archived["flows"][0]["bytes"].as_u64().unwrap_or(0) > 0);
    let first = flowstate(&f, &["archive", "ls", "--limit", "1"]);
    let page = succeeds(&first);
    assert!(page.starts_with("ID"), "{page}");
    assert!(page.contains(&f.plan.to_string()), "{page}");
    let hint = String::from_utf8_lossy(&first.stderr);
    assert_eq!(hint.trim(), format!("more: --after {}", f.plan));
    let plan = f.plan.to_string();
    let rest = json(&flowstate(
        &f,
        &["--json", "archive", "ls", "--after", &plan],
    ));
    assert_eq!(ids(&rest), vec![f.half_archived.to_string()]);

    // The live store no longer has it, and says where it went.
    for command in ["show", "events"] {
        let line = fails(&flowstate(&f, &["flows", command, &plan]));
        assert!(line.contains("is archived"), "{line}");
        assert!(line.contains(&format!("archive show {plan}")), "{line}");
    }

    // Show and time travel, from the archive.
    let now = succeeds(&flowstate(&f, &["archive", "show", &plan]));
    assert_eq!(field(&now, "state").as_deref(), Some("archived"));
    assert_eq!(field(&now, "kind").as_deref(), Some("plan"));
    assert_eq!(field(&now, "definition").as_deref(), Some("onboarding"));
    let early = succeeds(&flowstate(&f, &["archive", "show", &plan, "--at", "2"]));
    assert_eq!(field(&early, "state").as_deref(), Some("completed"));
    assert_eq!(field(&early, "last seq").as_deref(), Some("2 (of 4)"));
    // Event 3 was recorded at START + 2 s.
    let at = json(&flowstate(
        &f,
        &[
            "--json",
            "archive",
            "show",
            &plan,
            "--at",
            "2026-01-01T00:00:02Z",
        ],
    ));
    assert_eq!(at["status"]["state"], "deactivated");
    let line = fails(&flowstate(&f, &["archive", "show", &plan, "--at", "5"]));
    assert!(line.contains("past its last event"), "{line}");

    let events = json(&flowstate(&f, &["--json", "archive", "events", &plan]));
    let events = events.as_array().expect("events");
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["body"]["type"], "flow_created");
    assert_eq!(events[3]["body"]["to"], "archived");
    let table = succeeds(&flowstate(&f, &["archive", "events", &plan, "--at", "3"]));
    assert_eq!(table.lines().count(), 4, "{table}");

    // An id the archive does not have.
    let graph = f.graph.to_string();
    let line = fails(&flowstate(&f, &["archive", "show", &graph]));
    assert!(line.contains("not in the archive"), "{line}");
}

#[test]
fn a_missing_archive_is_an_error_and_is_not_created() {
    let f = fixture();
    for args in [
        &["archive", "ls"][..],
        &["archive", "show", &f.plan.to_string()],
    ] {
        let line = fails(&flowstate(&f, args));
        assert!(line.contains("no archive directory"), "{line}");
    }
    assert!(!f.archive.exists());
    // Without an archive, an unknown flow is just not in the store.
    let unknown = FlowId::from_parts(START, [9; 10]).to_string();
    let line = fails(&flowstate(&f, &["flows", "show", &unknown]));
    assert_eq!(line, format!("error: flow {unknown} is not in the store"));
    // A pass on a store that does not exist creates neither.
    let output = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(["--store", "typo.db", "archive", "run"])
        .current_dir(f.dir.path())
        .env_remove("FLOWSTATE_STORE")
        .env_remove("FLOWSTATE_ARCHIVE")
        .output()
        .expect("run flowstate");
    fails(&output);
    assert!(!f.dir.path().join("typo.db").exists());
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let f = fixture();
    let line = fails(&flowstate(&f, &["archive", "run", "--max-age", "soon"]));
    assert!(line.contains("not a duration"), "{line}");
    let line = fails(&flowstate(&f, &["archive", "show", "not-a-flow"]));
    assert!(line.contains("not a flow id"), "{line}");
    let output = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(["--archive", "ftp://x", "archive", "ls"])
        .output()
        .expect("run flowstate");
    let line = fails(&output);
    assert!(line.contains("unknown scheme"), "{line}");
}

#[test]
fn the_archive_can_come_from_the_environment_and_defaults_to_a_directory() {
    let f = fixture();
    let run = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(["--json", "archive", "run", "--max-age", "0"])
        .env("FLOWSTATE_STORE", &f.store)
        .env_remove("FLOWSTATE_ARCHIVE")
        .current_dir(f.dir.path())
        .output()
        .expect("run flowstate");
    assert_eq!(json(&run)["archived"], 1);
    assert!(f
        .dir
        .path()
        .join("flowstate-archive")
        .join("flows")
        .is_dir());
    let listed = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .args(["--json", "archive", "ls"])
        .env("FLOWSTATE_ARCHIVE", f.dir.path().join("flowstate-archive"))
        .output()
        .expect("run flowstate");
    assert_eq!(json(&listed)["flows"].as_array().map(Vec::len), Some(2));
}
