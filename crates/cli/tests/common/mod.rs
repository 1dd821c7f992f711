//! What the tests that drive the CLI against a server share: a real `flowstate serve` on a
//! temporary store (the built binary, on a port the system chose), runs of the CLI with a
//! clean environment, the error contract, and a tiny HTTP responder for HTTP steps and for
//! stand-in servers.
//!
//! Nothing here waits for a fixed time: every wait is for a condition, and the deadlines are
//! only guards against a test that would otherwise hang.

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any one CLI run or server start may take before the test is declared hung.
pub const DEADLOCK_GUARD: Duration = Duration::from_secs(120);

/// Environment variables of the CLI that a test must not inherit from whoever runs it.
pub const ENV: [&str; 10] = [
    "RUST_LOG",
    "FLOWSTATE_LOG_FORMAT",
    "FLOWSTATE_STORE",
    "FLOWSTATE_ARCHIVE",
    "FLOWSTATE_SERVER",
    "FLOWSTATE_TOKEN",
    "FLOWSTATE_CONFIG",
    "FLOWSTATE_ADDR",
    "FLOWSTATE_STEPS_FILE",
    "AWS_ENDPOINT",
];

/// The CLI binary with a clean environment.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowstate"));
    for name in ENV {
        command.env_remove(name);
    }
    command
}

/// A running `flowstate serve` on a temporary store; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The store it serves.
    pub store: PathBuf,
    /// What it printed on stderr so far.
    stderr: Arc<Mutex<String>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// A server with the examples on a new store, listening on a port the system chose.
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// A server with extra arguments (before `serve`'s own) and environment.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("flows.db");
        let mut command = command();
        command
            .arg("--store")
            .arg(&store)
            .args(args)
            .args(["serve", "--addr", "127.0.0.1:0"]);
        Self::spawn(command, env, store, Some(dir))
    }

    /// Runs `command` (a `serve`) and waits for its "listening on" line.
    pub fn spawn(
        mut command: Command,
        env: &[(&str, &str)],
        store: PathBuf,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flowstate serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut buffer = [0_u8; 4096];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut text) = stderr.lock() {
                        text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                    }
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = sender.send(first);
            // Keep draining, so that the server never blocks on a full pipe.
            for _ in lines {}
        });
        let first = receiver.recv_timeout(DEADLOCK_GUARD).ok().flatten();
        let mut server = Self {
            child,
            url: String::new(),
            store,
            stderr,
            _dir: dir,
        };
        let Some(line) = first else {
            let status = server.child.wait().ok();
            panic!(
                "the server did not start ({status:?}): {}",
                server.stderr_text()
            );
        };
        let addr = line
            .strip_prefix("flowstate listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        server.url = addr.to_owned();
        server
    }

    /// What the server printed on stderr.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    /// Runs the CLI against this server with extra environment.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = command();
        command.arg("--server").arg(&self.url).args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        run(command)
    }

    /// Runs a store command on this server's store.
    pub fn store_cli(&self, args: &[&str]) -> Output {
        let mut command = command();
        command.arg("--store").arg(&self.store).args(args);
        run(command)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to its end (stdin closed), killing it past [`DEADLOCK_GUARD`].
pub fn run(mut command: Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flowstate");
    finish(child)
}

/// Waits for a spawned CLI (stdout and stderr piped) and collects what it printed.
pub fn finish(mut child: Child) -> Output {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(stdout.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read(stderr.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + DEADLOCK_GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the CLI did not finish within {DEADLOCK_GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Asserts success and returns stdout.
pub fn succeeds(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

/// Asserts the error contract (status 1, one `error:` line, no panic, no result) and returns
/// the line.
pub fn fails(output: &Output) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).expect("utf-8 stderr");
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {} stderr: {stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].starts_with("error: "), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "an error must print no result");
    lines[0].to_owned()
}

/// Success, and stdout as JSON.
pub fn json(output: &Output) -> Value {
    serde_json::from_str(&succeeds(output)).expect("stdout is JSON")
}

/// The value of a `name value` line of a field table.
pub fn field(stdout: &str, name: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let value = line.strip_prefix(name)?;
        value.starts_with(' ').then(|| value.trim().to_owned())
    })
}

/// An address nothing listens on (a port the system gave out and that was closed again).
pub fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

/// A request received by a [`Responder`].
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST /path HTTP/1.1`.
    pub line: String,
    /// Header lines, as sent (names lower-cased).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A tiny HTTP/1.1 server on a thread: every request is recorded and answered by a function
/// of it (status, content type, body), one request per connection.
pub struct Responder {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Every request so far.
    pub received: Arc<Mutex<Vec<Received>>>,
}

type Answer = (u16, &'static str, String);

impl Responder {
    /// Starts one answering with `answer`.
    pub fn start(answer: impl Fn(&Received) -> Answer + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let (status, content_type, body) = answer(&request);
                if let Ok(mut log) = log.lock() {
                    log.push(request);
                }
                let _ = write_response(stream, status, content_type, &body);
            }
        });
        Self { url, received }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(DEADLOCK_GUARD)).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        line: line.trim_end().to_owned(),
        headers,
        body,
    })
}

fn write_response(
    mut stream: TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Writes `text` to a new file `name` in `dir`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}
