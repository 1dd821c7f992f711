//! Where settings come from: a flag beats the environment, which beats the configuration file
//! (`--config PATH` or `FLOWSTATE_CONFIG`), which beats the default; a bad file is a one-line
//! error naming the file and the key.
//!
//! Each setting is observed through an error that names the value in use (a store or a
//! server that does not exist), so no store or server is needed.

mod common;

use std::path::Path;

use common::{dead_address, fails, write_file};

/// Runs the CLI with `args` and extra environment.
fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    // In an empty directory: the default store (`flowstate.db`, relative) must not exist.
    let cwd = tempfile::tempdir().expect("dir");
    let mut command = common::command();
    command.current_dir(cwd.path()).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    common::run(command)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn the_store_comes_from_the_flag_then_the_environment_then_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let file_store = dir.path().join("from-file.db");
    let env_store = dir.path().join("from-env.db");
    let flag_store = dir.path().join("from-flag.db");
    let config = write_file(
        dir.path(),
        "flowstate.toml",
        &format!("store = \"{}\"\n", file_store.display()),
    );
    let config = path(&config);

    let line = fails(&run(&["--config", config, "flows", "ls"], &[]));
    assert!(line.contains("from-file.db"), "{line}");
    let line = fails(&run(
        &["flows", "ls"],
        &[
            ("FLOWSTATE_CONFIG", config),
            ("FLOWSTATE_STORE", path(&env_store)),
        ],
    ));
    assert!(line.contains("from-env.db"), "{line}");
    let line = fails(&run(
        &[
            "--config",
            config,
            "flows",
            "ls",
            "--store",
            path(&flag_store),
        ],
        &[("FLOWSTATE_STORE", path(&env_store))],
    ));
    assert!(line.contains("from-flag.db"), "{line}");
    // Without a file, the default.
    let line = fails(&run(&["flows", "ls"], &[]));
    assert!(line.contains("flowstate.db"), "{line}");
    // Inspecting never creates any of them.
    for store in [&file_store, &env_store, &flag_store] {
        assert!(!store.exists(), "{}", store.display());
    }
}

#[test]
fn the_server_and_archive_come_from_the_flag_then_the_environment_then_the_file() {
    let (file_server, env_server, flag_server) = (dead_address(), dead_address(), dead_address());
    let dir = tempfile::tempdir().expect("dir");
    let archive = dir.path().join("configured-archive");
    let config = write_file(
        dir.path(),
        "flowstate.toml",
        &format!(
            "server = \"{file_server}\"\narchive = \"{}\"\n",
            archive.display()
        ),
    );
    let config = path(&config);
    let answers_at = |line: &str, url: &str| {
        line.starts_with(&format!("error: no flowstate server answers at {url} ("))
    };

    let line = fails(&run(&["--config", config, "steps", "ls"], &[]));
    assert!(answers_at(&line, &file_server), "{line}");
    let line = fails(&run(
        &["--config", config, "steps", "ls"],
        &[("FLOWSTATE_SERVER", &env_server)],
    ));
    assert!(answers_at(&line, &env_server), "{line}");
    let line = fails(&run(
        &["steps", "ls", "--server", &flag_server],
        &[
            ("FLOWSTATE_SERVER", &env_server),
            ("FLOWSTATE_CONFIG", config),
        ],
    ));
    assert!(answers_at(&line, &flag_server), "{line}");

    let line = fails(&run(&["--config", config, "archive", "ls"], &[]));
    assert!(line.contains("configured-archive"), "{line}");
}

#[test]
fn a_bad_config_file_is_one_line_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let typo = write_file(dir.path(), "typo.toml", "stroe = \"x.db\"\n");
    let line = fails(&run(&["--config", path(&typo), "flows", "ls"], &[]));
    assert!(line.contains("typo.toml"), "{line}");
    assert!(line.contains("unknown key \"stroe\""), "{line}");
    assert!(
        line.contains("known keys: store, archive, server"),
        "{line}"
    );

    let wrong = write_file(dir.path(), "wrong.toml", "examples = \"no\"\n");
    let line = fails(&run(&["--config", path(&wrong), "flows", "ls"], &[]));
    assert!(line.contains("key \"examples\" is a string"), "{line}");

    let broken = write_file(dir.path(), "broken.toml", "store = \"unterminated\n");
    let line = fails(&run(
        &["flows", "ls"],
        &[("FLOWSTATE_CONFIG", path(&broken))],
    ));
    assert!(line.contains("broken.toml"), "{line}");

    let address = write_file(dir.path(), "addr.toml", "addr = \"localhost\"\n");
    let line = fails(&run(&["--config", path(&address), "serve"], &[]));
    assert!(line.contains("addr \"localhost\""), "{line}");

    let missing = dir.path().join("missing.toml");
    let line = fails(&run(&["--config", path(&missing), "flows", "ls"], &[]));
    assert!(line.contains("missing.toml"), "{line}");
}

#[test]
fn no_config_file_is_read_unless_one_is_named() {
    // A flowstate.toml in the working directory is not picked up.
    let dir = tempfile::tempdir().expect("dir");
    write_file(dir.path(), "flowstate.toml", "nonsense = true\n");
    let mut command = common::command();
    command
        .current_dir(dir.path())
        .args(["flows", "ls", "--store", "missing.db"]);
    let line = fails(&common::run(command));
    assert!(line.contains("missing.db"), "{line}");
    assert!(!line.contains("nonsense"), "{line}");
}
