//! The web UI end to end, in a real browser: headless Chromium (Debian's `chromium`) driven
//! over WebDriver by `chromedriver` (Debian's `chromium-driver`).
//!
//! The test starts the server in-process on a fresh SQLite store with the example
//! definitions, opens the UI, starts the example plan (goal `confirmation_id`, inputs
//! `{"customer_id": 42}`) from the start form, and waits until the flow page shows the plan
//! deactivated, every diagram node completed and a `plan_state_changed` last in the timeline.
//! Then it moves the time slider back to event 2 and checks that every node is pending, and
//! that the flow list shows the flow deactivated. Last, on a task graph whose second task
//! waits until the test lets it finish, it presses Suspend (the flow stops after that task,
//! SUSPENDED), then Resume (it runs to SUCCESS), and checks that each button is shown only
//! when the flow's state allows it. The page reports any Content-Security-Policy violation
//! in its error box, which fails the test.
//!
//! Without `chromium` and `chromedriver` the test says it was skipped and passes, except with
//! `CI=true`, where it fails (`.ci/run` installs them). `FLOWSTATE_CHROMIUM` and
//! `FLOWSTATE_CHROMEDRIVER` name other binaries. On a failure the page's screenshot is saved
//! in the temporary directory (the message says where).

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use flowstate_server::{serve, ServerConfig};
use serde::Deserialize;
use serde_json::json;

/// How long the flow has to reach its final state in the UI.
const DEADLINE: Duration = Duration::from_secs(60);

/// How often the DOM is read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// The example plan's steps, as the diagram names them.
const STEPS: [&str; 3] = ["lookup_customer", "calculate_total", "process_payment"];

/// What the page shows, read in one script call.
#[derive(Debug, Deserialize)]
struct Snapshot {
    hash: String,
    state: Option<String>,
    /// The outcome badge of a finished flow.
    outcome: Option<String>,
    nodes: Vec<(String, String)>,
    events: Vec<(u64, String)>,
    attributes: Vec<(String, String)>,
    slider: Option<Slider>,
    error: Option<String>,
    rows: Vec<(String, String)>,
    /// The action buttons shown (their test ids).
    #[serde(default)]
    actions: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Slider {
    value: u64,
    min: u64,
    max: u64,
}

const SNAPSHOT: &str = r#"
const all = (selector) => Array.from(document.querySelectorAll(selector));
const state = document.querySelector('[data-testid=flow-state]');
const outcome = document.querySelector('[data-testid=flow-outcome]');
const error = document.querySelector('[data-testid=error]');
const slider = document.querySelector('[data-testid=slider]');
return {
  hash: location.hash,
  state: state ? state.textContent.trim() : null,
  outcome: outcome ? outcome.getAttribute('data-outcome') : null,
  nodes: all('[data-testid=diagram] [data-testid=node]')
    .map((node) => [node.getAttribute('data-name'), node.getAttribute('data-state')]),
  events: all('[data-testid=timeline] [data-testid=event]')
    .map((event) => [Number(event.getAttribute('data-seq')), event.getAttribute('data-type')]),
  attributes: all('[data-testid=attributes] [data-testid=attribute]')
    .map((row) => [row.getAttribute('data-name'), row.getAttribute('data-step') || '']),
  slider: slider ? { value: Number(slider.value), min: Number(slider.min), max: Number(slider.max) } : null,
  error: error && !error.hidden ? error.textContent : null,
  rows: all('[data-testid=flow-list] [data-testid=flow-row]')
    .map((row) => [row.getAttribute('data-id'), row.getAttribute('data-state')]),
  actions: all('[data-testid=actions] button')
    .filter((button) => button.offsetParent !== null)
    .map((button) => button.getAttribute('data-testid') || button.textContent.trim()),
};
"#;

/// A binary from the environment variable `var`, else the first of `names` on the PATH.
fn find_binary(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// `chromedriver`, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

async fn start_driver(binary: &Path, log: &Path) -> Driver {
    let port = free_port();
    let log_file = std::fs::File::create(log).expect("the chromedriver log file");
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .ok()
            .filter(|response| response.status().is_success());
        if ready.is_some() {
            return driver;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not answer on {} within 20 s (log: {})",
            driver.url,
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".to_owned(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--no-first-run",
                "--window-size=1400,1200",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|error| panic!("no WebDriver session from chromedriver: {error}"))
}

async fn snapshot(client: &Client) -> Result<Snapshot, String> {
    let value = client
        .execute(SNAPSHOT, Vec::new())
        .await
        .map_err(|error| format!("reading the page: {error}"))?;
    serde_json::from_value(value).map_err(|error| format!("the page's snapshot: {error}"))
}

/// Reads the page until `done` accepts it, or fails with the last snapshot after the
/// deadline (or at once when the page shows an API error).
async fn wait_for(
    client: &Client,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> Result<Snapshot, String> {
    let started = Instant::now();
    loop {
        let page = snapshot(client).await?;
        if done(&page) {
            return Ok(page);
        }
        if let Some(error) = &page.error {
            return Err(format!(
                "while waiting for {what}, the page shows an error: {error}\n{page:#?}"
            ));
        }
        if started.elapsed() > DEADLINE {
            return Err(format!(
                "{what}: not reached within {DEADLINE:?}; the page shows\n{page:#?}"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn find(client: &Client, testid: &str) -> Result<fantoccini::elements::Element, String> {
    let selector = format!("[data-testid={testid}]");
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&selector))
        .await
        .map_err(|error| format!("no element {selector}: {error}"))
}

/// The scenario; an `Err` says what the page showed instead. `gate` lets the second task
/// of the task graph `held` finish.
async fn scenario(
    client: &Client,
    base: &str,
    gate: &tokio::sync::watch::Sender<bool>,
) -> Result<(), String> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |error: fantoccini::error::CmdError| format!("{what}: {error}")
    };
    client
        .goto(&format!("{base}/#/"))
        .await
        .map_err(fail("opening the UI"))?;
    find(client, "flow-list").await?;

    // Start the example plan from the form.
    find(client, "start-kind")
        .await?
        .select_by_value("plan")
        .await
        .map_err(fail("choosing the kind"))?;
    let goals = find(client, "start-goals").await?;
    goals.clear().await.map_err(fail("clearing the goals"))?;
    goals
        .send_keys("confirmation_id")
        .await
        .map_err(fail("typing the goals"))?;
    let inputs = find(client, "start-inputs").await?;
    inputs.clear().await.map_err(fail("clearing the inputs"))?;
    inputs
        .send_keys(r#"{"customer_id": 42}"#)
        .await
        .map_err(fail("typing the inputs"))?;
    find(client, "start-submit")
        .await?
        .click()
        .await
        .map_err(fail("submitting"))?;

    // The UI goes to the new flow's page.
    let page = wait_for(client, "the new flow's page", |page| {
        page.hash.starts_with("#/flows/")
    })
    .await?;
    let id = page
        .hash
        .trim_start_matches("#/flows/")
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();

    // It runs live to its end.
    let done = wait_for(
        client,
        "the plan deactivated, every node completed",
        |page| {
            page.state.as_deref() == Some("deactivated")
                && page.outcome.as_deref() == Some("succeeded")
                && page.nodes.len() == STEPS.len()
                && page.nodes.iter().all(|(_, state)| state == "completed")
                && page
                    .events
                    .last()
                    .is_some_and(|(_, kind)| kind == "plan_state_changed")
        },
    )
    .await?;
    let mut names: Vec<&str> = done.nodes.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    let mut expected = STEPS.to_vec();
    expected.sort_unstable();
    if names != expected {
        return Err(format!(
            "the diagram's nodes are {names:?}, not {expected:?}"
        ));
    }
    let seqs: Vec<u64> = done.events.iter().map(|(seq, _)| *seq).collect();
    if seqs.first() != Some(&1) || seqs.windows(2).any(|pair| pair[1] != pair[0] + 1) {
        return Err(format!(
            "the timeline is not every event in order: {seqs:?}"
        ));
    }
    let provenance = done
        .attributes
        .iter()
        .find(|(name, _)| name == "confirmation_id")
        .map(|(_, step)| step.as_str());
    if provenance != Some("process_payment") {
        return Err(format!(
            "the attributes do not show confirmation_id set by process_payment: {:?}",
            done.attributes
        ));
    }
    let last = *seqs.last().unwrap_or(&0);
    match &done.slider {
        Some(slider) if slider.min == 1 && slider.max == last && slider.value == last => {}
        other => {
            return Err(format!(
                "the slider is {other:?}, not at event {last} of {last}"
            ))
        }
    }

    // Back in time: as of event 2 (the plan was recorded, nothing ran), every step is
    // pending. Keys move the slider as a person would: Home to event 1, then one right.
    let slider = find(client, "slider").await?;
    slider
        .send_keys(&format!("{}{}", Key::Home, Key::Right))
        .await
        .map_err(fail("moving the slider"))?;
    let past = wait_for(
        client,
        "the state as of event 2, every node pending",
        |page| {
            page.slider.as_ref().is_some_and(|slider| slider.value == 2)
                && page.events.last().is_some_and(|(seq, _)| *seq == 2)
                && page.nodes.len() == STEPS.len()
                && page.nodes.iter().all(|(_, state)| state == "pending")
        },
    )
    .await?;
    if past.state.as_deref() != Some("active") {
        return Err(format!(
            "as of event 2 the plan should be active: {past:#?}"
        ));
    }
    if !past.hash.contains("at=2") {
        return Err(format!(
            "the address does not keep the event shown: {}",
            past.hash
        ));
    }

    // The list shows the flow in its final state.
    client
        .goto(&format!("{base}/#/"))
        .await
        .map_err(fail("opening the list"))?;
    wait_for(client, "the flow in the list, deactivated", |page| {
        page.rows
            .iter()
            .any(|(row, state)| *row == id && state == "deactivated")
    })
    .await?;

    // A task graph, suspended and resumed with the flow page's buttons.
    let started: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/flows"))
        .json(&json!({"kind": "task_graph", "name": "held"}))
        .send()
        .await
        .map_err(|error| format!("starting the task graph: {error}"))?
        .json()
        .await
        .map_err(|error| format!("starting the task graph: {error}"))?;
    let graph = started["id"].as_str().unwrap_or_default().to_owned();
    client
        .goto(&format!("{base}/#/flows/{graph}"))
        .await
        .map_err(fail("opening the task graph"))?;
    let running = wait_for(client, "the task graph running, Suspend shown", |page| {
        page.state.as_deref() == Some("running")
            && page.actions.iter().any(|a| a == "suspend-button")
    })
    .await?;
    if running.actions.iter().any(|a| a == "resume-button") {
        return Err(format!("Resume shown for a running flow: {running:#?}"));
    }
    find(client, "suspend-button")
        .await?
        .click()
        .await
        .map_err(fail("pressing Suspend"))?;
    wait_for(client, "the task graph suspending", |page| {
        page.state.as_deref() == Some("suspending")
    })
    .await?;
    gate.send_replace(true);
    let suspended = wait_for(client, "the task graph suspended, Resume shown", |page| {
        page.state.as_deref() == Some("suspended")
            && page.actions.iter().any(|a| a == "resume-button")
    })
    .await?;
    if suspended.actions.iter().any(|a| a == "suspend-button") {
        return Err(format!(
            "Suspend shown for a suspended flow: {suspended:#?}"
        ));
    }
    find(client, "resume-button")
        .await?
        .click()
        .await
        .map_err(fail("pressing Resume"))?;
    let finished = wait_for(client, "the task graph resumed to success", |page| {
        page.state.as_deref() == Some("success")
    })
    .await?;
    if !finished.actions.is_empty() {
        return Err(format!(
            "actions shown for a finished task graph: {finished:#?}"
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_starts_a_plan_and_shows_it_run_and_travel_back() {
    let ci = std::env::var("CI").is_ok_and(|value| value == "true");
    let chromium = find_binary("FLOWSTATE_CHROMIUM", &["chromium", "chromium-browser"]);
    let chromedriver = find_binary("FLOWSTATE_CHROMEDRIVER", &["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        assert!(
            !ci,
            "CI=true but chromium or chromedriver is missing: apt-get install -y chromium chromium-driver"
        );
        // Straight to stderr, past the test harness's capture, so that the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the browser test: chromium or chromedriver is not installed \
             (apt-get install -y chromium chromium-driver)"
        );
        return;
    };

    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = serve(ServerConfig {
        examples: true,
        ..ServerConfig::new(dir.path().join("store.db").display().to_string())
    })
    .await
    .expect("the server starts");
    let base = format!("http://{}", server.addr());
    // `held`: `first`; `second`, which finishes only once the gate opens; `third`.
    let (gate, open) = tokio::sync::watch::channel(false);
    server.engine().task_graphs().register(
        flowstate::taskgraph::Flow::linear("held")
            .add(flowstate::taskgraph::task_fn(
                "first",
                |_ctx, _inputs| async { Ok(json!(1)) },
            ))
            .add(flowstate::taskgraph::task_fn(
                "second",
                move |_ctx, _inputs| {
                    let mut open = open.clone();
                    async move {
                        let _ = open.wait_for(|open| *open).await;
                        Ok(json!(2))
                    }
                },
            ))
            .add(flowstate::taskgraph::task_fn(
                "third",
                |_ctx, _inputs| async { Ok(json!(3)) },
            )),
    );

    let driver = start_driver(&chromedriver, &dir.path().join("chromedriver.log")).await;
    let client = connect(&driver, &chromium, &dir.path().join("profile")).await;
    let outcome = tokio::time::timeout(Duration::from_secs(180), scenario(&client, &base, &gate))
        .await
        .unwrap_or_else(|_| Err("the scenario took over 180 s".to_owned()));
    let screenshot = if outcome.is_err() {
        let path = std::env::temp_dir().join("flowstate-browser-failure.png");
        let png = client.screenshot().await.ok();
        png.filter(|png| std::fs::write(&path, png).is_ok())
            .map(|_| path)
    } else {
        None
    };
    let _ = client.close().await;
    drop(driver);
    server.shutdown().await;
    if let Err(message) = outcome {
        let shot = screenshot.map_or_else(String::new, |path| {
            format!("\n(screenshot: {})", path.display())
        });
        panic!("{message}{shot}");
    }
}
