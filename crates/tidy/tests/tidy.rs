//! The tidy test: walks the repository (from `CARGO_MANIFEST_DIR/../..`, skipping `target`
//! and `.git`) and checks the habits that keep the code base tidy. Each check lists every
//! offender, with what to do about it, in one failure. The crate's documentation says what
//! is checked and why.

use std::fs;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The longest a function in `crates/*/src` may be, in lines from its `fn` line to its
/// closing brace.
const BUDGET: usize = 150;

/// Functions over [`BUDGET`], kept until they are split: file, name (`Type::method` for
/// methods), current length in lines, and why it is long. This list only shrinks: the test
/// fails when a listed function grows, shrinks (lower the number), fits the budget (remove
/// it) or no longer exists (remove it). Never add to it to make a new function pass.
const LONG_FUNCTIONS: &[(&str, &str, usize, &str)] = &[
    (
        "crates/bench/src/main.rs",
        "sleepers",
        219,
        "one benchmark scenario (start, measure, wait, report) read top to bottom",
    ),
    (
        "crates/engine/src/writer.rs",
        "tests::a_compaction_that_changes_the_state_or_does_not_fold_writes_nothing",
        153,
        "a table of refused compactions, each checked to write nothing",
    ),
    (
        "crates/store-postgres/src/group.rs",
        "commit_group",
        205,
        "one group-commit transaction: lock, decide, then one statement per table",
    ),
    (
        "crates/store/src/conformance.rs",
        "timers_fire_in_due_order_and_once",
        182,
        "a conformance scenario that reads like the spec",
    ),
    (
        "crates/store/src/conformance.rs",
        "invalid_input_is_refused_and_nothing_written",
        195,
        "a conformance scenario: every limit refused in turn",
    ),
    (
        "crates/store/src/conformance.rs",
        "compaction_replaces_the_log_and_keeps_the_index_row",
        181,
        "a conformance scenario that reads like the spec",
    ),
    (
        "crates/store/src/conformance.rs",
        "compacted_long_logs_read_back_in_any_range_and_after_reopen",
        226,
        "a conformance scenario that reads like the spec",
    ),
    (
        "crates/taskgraph/src/engine.rs",
        "Engine::run_loaded",
        207,
        "the task-graph engine machine, RESUMING to a final state, read top to bottom",
    ),
];

/// Phrases that speak of the project's history instead of the system as it is (docs say what
/// the system does; the history is in git). Matched case-insensitively; built from pieces so
/// that this file does not match itself. `(issue N` is checked separately. "In progress" is
/// refused only as a project's status (in parentheses, after a comma as in an issue's status,
/// or after "work"): "a run in progress" describes the running system and is fine.
const HISTORY: &[&str] = &[
    concat!("not built ", "yet"),
    concat!("(in ", "progress"),
    concat!(", in ", "progress"),
    concat!("work in ", "progress"),
];

/// Lines allowed to use a [`HISTORY`] phrase: file, a fragment of the line, and why. Only for
/// a line that cannot say it otherwise; the test fails when an entry matches no line.
const HISTORY_ALLOWED: &[(&str, &str, &str)] = &[];

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository's root")
}

/// Files under `dir` whose name ends with `extension`, recursively and sorted, skipping
/// `target` and `.git` directories.
fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {dir:?}: {e}"));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if name != "target" && name != ".git" {
                    pending.push(path);
                }
            } else if name.ends_with(extension) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `path` relative to the repository's root, with `/` separators.
fn relative(path: &Path) -> String {
    let root = root();
    let relative = path.strip_prefix(&root).unwrap_or(path);
    relative.to_string_lossy().replace('\\', "/")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"))
}

/// Fails with `what` and the offenders, one a line, unless there are none.
fn check(what: &str, offenders: &[String]) {
    assert!(
        offenders.is_empty(),
        "{what} ({} offenders):\n  {}\n",
        offenders.len(),
        offenders.join("\n  ")
    );
}

/// The crates of the workspace: directory under `crates/` and package name.
fn crates() -> Vec<(String, String)> {
    let mut crates = Vec::new();
    let dirs = fs::read_dir(root().join("crates")).expect("reading crates/");
    for entry in dirs {
        let dir = entry.expect("a directory entry").path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let name = toml_value(&read(&manifest), "package", "name")
            .unwrap_or_else(|| panic!("{manifest:?} names no package"));
        let dir = dir
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        crates.push((dir, name));
    }
    crates.sort();
    crates
}

/// The string value of `key` in `[section]` of a simple TOML file (`key = "value"` lines).
fn toml_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line.trim_start_matches('[').trim_end_matches(']').trim();
        } else if current == section {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    None
}

/// Every `.rs` file under `crates/` (sources, tests, examples, benches, binaries) opens with a
/// `//!` comment, on its very first line, saying what the file owns. Nothing comes before it:
/// an inner attribute such as `#![...]` goes after it.
#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let offenders: Vec<String> = files(&root().join("crates"), ".rs")
        .into_iter()
        .filter(|path| !read(path).starts_with("//!"))
        .map(|path| relative(&path))
        .collect();
    check(
        "these files do not open with a `//!` comment saying what they own (first line)",
        &offenders,
    );
}

/// No `.md` or `.rs` file speaks of the project's history ([`HISTORY`], or an issue number
/// in parentheses): docs describe the system as it is.
#[test]
fn docs_speak_of_the_system_as_it_is() {
    let root = root();
    let mut paths = files(&root, ".md");
    paths.extend(files(&root, ".rs"));
    let mut used = vec![false; HISTORY_ALLOWED.len()];
    let mut offenders = Vec::new();
    for path in paths {
        let file = relative(&path);
        for (number, line) in read(&path).lines().enumerate() {
            let lower = line.to_lowercase();
            let phrase = HISTORY
                .iter()
                .find(|phrase| lower.contains(*phrase))
                .map(|phrase| (*phrase).to_owned())
                .or_else(|| issue_reference(&lower));
            let Some(phrase) = phrase else { continue };
            let allowed = HISTORY_ALLOWED
                .iter()
                .position(|(f, fragment, _)| *f == file && line.contains(fragment));
            match allowed {
                Some(index) => used[index] = true,
                None => offenders.push(format!(
                    "{file}:{}: \"{phrase}\": {}",
                    number + 1,
                    line.trim()
                )),
            }
        }
    }
    for ((file, fragment, _), used) in HISTORY_ALLOWED.iter().zip(used) {
        if !used {
            offenders.push(format!(
                "{file}: the allowed line \"{fragment}\" is gone: remove it from HISTORY_ALLOWED"
            ));
        }
    }
    check(
        "these lines speak of the project's history: say what the system does now",
        &offenders,
    );
}

/// `(issue N` in a lowercased line, if there is one.
fn issue_reference(lower: &str) -> Option<String> {
    let opening = concat!("(issue", " ");
    lower.match_indices(opening).find_map(|(at, _)| {
        let rest = &lower[at + opening.len()..];
        rest.starts_with(|c: char| c.is_ascii_digit())
            .then(|| format!("{opening}{}", &rest[..1]))
    })
}

/// A function found in a source file: its name and length in lines.
#[derive(Debug)]
struct Function {
    name: String,
    line: usize,
    lines: usize,
}

/// Collects the length of every function with a body: free functions, methods, trait
/// methods with a default body and functions nested in those, named by their enclosing
/// types, traits, modules and functions.
#[derive(Debug, Default)]
struct Lengths {
    scope: Vec<String>,
    found: Vec<Function>,
}

impl Lengths {
    fn measure(&mut self, sig: &syn::Signature, block: &syn::Block, visit: impl FnOnce(&mut Self)) {
        let line = sig.fn_token.span.start().line;
        let end = block.brace_token.span.close().end().line;
        let mut name = self.scope.clone();
        name.push(sig.ident.to_string());
        self.found.push(Function {
            name: name.join("::"),
            line,
            lines: end + 1 - line,
        });
        self.scope.push(sig.ident.to_string());
        visit(self);
        self.scope.pop();
    }

    fn scoped(&mut self, name: String, visit: impl FnOnce(&mut Self)) {
        self.scope.push(name);
        visit(self);
        self.scope.pop();
    }
}

/// The name of an `impl` block's type (its last path segment).
fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(path) => path
            .path
            .segments
            .last()
            .map_or_else(String::new, |segment| segment.ident.to_string()),
        syn::Type::Reference(reference) => type_name(&reference.elem),
        _ => "_".to_owned(),
    }
}

impl<'ast> Visit<'ast> for Lengths {
    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.measure(&item.sig, &item.block, |v| {
            syn::visit::visit_item_fn(v, item);
        });
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.measure(&item.sig, &item.block, |v| {
            syn::visit::visit_impl_item_fn(v, item);
        });
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        match &item.default {
            Some(block) => self.measure(&item.sig, block, |v| {
                syn::visit::visit_trait_item_fn(v, item);
            }),
            None => syn::visit::visit_trait_item_fn(self, item),
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        self.scoped(type_name(&item.self_ty), |v| {
            syn::visit::visit_item_impl(v, item);
        });
    }

    fn visit_item_trait(&mut self, item: &'ast syn::ItemTrait) {
        self.scoped(item.ident.to_string(), |v| {
            syn::visit::visit_item_trait(v, item);
        });
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.scoped(item.ident.to_string(), |v| {
            syn::visit::visit_item_mod(v, item);
        });
    }
}

/// No function in `crates/*/src` is longer than [`BUDGET`] lines, except those listed in
/// [`LONG_FUNCTIONS`], and that list is true: each listed function exists, is still over the
/// budget, and is exactly as long as listed.
#[test]
fn functions_fit_the_length_budget() {
    let root = root();
    let mut offenders = Vec::new();
    let mut seen = vec![false; LONG_FUNCTIONS.len()];
    for (dir, _) in crates() {
        let src = root.join("crates").join(&dir).join("src");
        if !src.is_dir() {
            continue;
        }
        for path in files(&src, ".rs") {
            let file = relative(&path);
            let syntax = match syn::parse_file(&read(&path)) {
                Ok(syntax) => syntax,
                Err(error) => {
                    offenders.push(format!("{file}: does not parse: {error}"));
                    continue;
                }
            };
            let mut lengths = Lengths::default();
            lengths.visit_file(&syntax);
            for function in lengths.found {
                let listed = LONG_FUNCTIONS
                    .iter()
                    .position(|(f, name, _, _)| *f == file && *name == function.name);
                let at = format!("{file}:{} {}", function.line, function.name);
                let lines = function.lines;
                match listed {
                    None if lines > BUDGET => {
                        offenders.push(format!("{at} is {lines} lines (budget {BUDGET}): split it"))
                    }
                    None => {}
                    Some(index) => {
                        seen[index] = true;
                        let allowed = LONG_FUNCTIONS[index].2;
                        if lines <= BUDGET {
                            offenders.push(format!(
                                "{at} is {lines} lines, within the budget: remove it from \
                                 LONG_FUNCTIONS"
                            ));
                        } else if lines > allowed {
                            offenders.push(format!(
                                "{at} grew from {allowed} to {lines} lines (budget {BUDGET}): \
                                 split it"
                            ));
                        } else if lines < allowed {
                            offenders.push(format!(
                                "{at} shrank from {allowed} to {lines} lines: list it with \
                                 {lines} in LONG_FUNCTIONS"
                            ));
                        }
                    }
                }
            }
        }
    }
    for ((file, name, _, _), seen) in LONG_FUNCTIONS.iter().zip(seen) {
        if !seen {
            offenders.push(format!(
                "{file} {name} is listed in LONG_FUNCTIONS but no longer exists: remove it"
            ));
        }
    }
    check(
        "these functions break the length budget or its allow list",
        &offenders,
    );
}

/// `ARCHITECTURE.md` names every crate of `crates/`, as `crates/DIR` or as its package name
/// in backquotes.
#[test]
fn the_architecture_names_every_crate() {
    let architecture = read(&root().join("ARCHITECTURE.md"));
    let offenders: Vec<String> = crates()
        .into_iter()
        .filter(|(dir, name)| {
            !architecture.contains(&format!("crates/{dir}"))
                && !architecture.contains(&format!("`{name}`"))
        })
        .map(|(dir, name)| format!("crates/{dir} ({name})"))
        .collect();
    check(
        "ARCHITECTURE.md does not describe these crates: add a section saying what each owns",
        &offenders,
    );
}

/// The workspace's `rust-version` is the toolchain pinned in `rust-toolchain.toml`, and every
/// crate inherits it: the only toolchain CI has is the pinned one, so that is the minimum
/// supported version actually built and tested.
#[test]
fn the_declared_rust_version_is_the_pinned_toolchain() {
    let root = root();
    let declared = toml_value(
        &read(&root.join("Cargo.toml")),
        "workspace.package",
        "rust-version",
    );
    let pinned = toml_value(
        &read(&root.join("rust-toolchain.toml")),
        "toolchain",
        "channel",
    );
    assert!(pinned.is_some(), "rust-toolchain.toml pins no channel");
    assert_eq!(
        declared, pinned,
        "Cargo.toml's rust-version must be the channel of rust-toolchain.toml"
    );
    let offenders: Vec<String> = crates()
        .into_iter()
        .filter(|(dir, _)| {
            let manifest = read(&root.join("crates").join(dir).join("Cargo.toml"));
            !manifest.contains("rust-version.workspace = true")
        })
        .map(|(dir, _)| format!("crates/{dir}/Cargo.toml"))
        .collect();
    check(
        "these crates do not inherit the workspace's rust-version (`rust-version.workspace = true`)",
        &offenders,
    );
}
