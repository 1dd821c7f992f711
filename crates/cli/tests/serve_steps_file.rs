//! Where `serve` keeps HTTP step registrations: `--steps-file` beats `FLOWSTATE_STEPS_FILE`,
//! which beats the configuration file's `steps_file`, which beats the default (next to the
//! SQLite store). Each is observed through the error of a registrations file that cannot be
//! read (it names the file in use), so no server keeps running.

mod common;

use std::path::Path;

use common::{fails, write_file};

fn serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = common::command();
    command.args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--store",
        dir.join("flows.db").to_str().expect("utf-8"),
    ]);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    fails(&common::run(command))
}

#[test]
fn the_steps_file_comes_from_the_flag_then_the_environment_then_the_file_then_the_default() {
    let dir = tempfile::tempdir().expect("dir");
    let mut paths = Vec::new();
    for name in [
        "flag.json",
        "env.json",
        "file.json",
        "flows.db.http-steps.json",
    ] {
        paths.push(write_file(dir.path(), name, "not json"));
    }
    let [flag, env, file, default] = [0, 1, 2, 3].map(|i| paths[i].to_str().expect("utf-8"));
    let config = write_file(
        dir.path(),
        "flowstate.toml",
        &format!("steps_file = \"{file}\"\n"),
    );
    let config = config.to_str().expect("utf-8");

    let line = serve(
        dir.path(),
        &["--config", config, "--steps-file", flag],
        &[("FLOWSTATE_STEPS_FILE", env)],
    );
    assert!(
        line.contains(&format!("registrations file {flag}:")),
        "{line}"
    );
    let line = serve(
        dir.path(),
        &["--config", config],
        &[("FLOWSTATE_STEPS_FILE", env)],
    );
    assert!(
        line.contains(&format!("registrations file {env}:")),
        "{line}"
    );
    let line = serve(dir.path(), &["--config", config], &[]);
    assert!(
        line.contains(&format!("registrations file {file}:")),
        "{line}"
    );
    let line = serve(dir.path(), &[], &[]);
    assert!(
        line.contains(&format!("registrations file {default}:")),
        "{line}"
    );
    assert!(line.contains("not JSON"), "{line}");
}
