//! Every `(from, to)` pair of every state machine, checked against the spec.
//!
//! `TRANSCRIPTION` below is an independent copy of the tables of
//! `docs/spec/state-machines.md` (and of the seeds it defers to), written in one uniform
//! notation. `every_pair_of_every_machine_matches_the_tables` asks the implementation about all
//! n × n pairs of each machine and expects exactly: allowed for a listed pair, ignored for a
//! listed no-op or `from == to`, `InvalidState` for everything else.
//! `transcription_matches_the_spec_documents` parses the spec documents themselves and checks
//! that they still say what the transcription says, so a change of the spec fails this test
//! until the code follows.
//!
//! `docs/spec/` is a byte-for-byte copy of the shared spec (`shared/spec/`, kept beside the
//! repository), committed so that these tests always run: they never skip.
//! `spec_copy_is_identical_to_the_shared_spec` compares the copy with `../shared/spec` when that
//! directory exists beside the repository, so a drift of either side fails; where it is absent
//! (a plain checkout) that one check has nothing to compare and passes without checking.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use flowstate_core::machine::{
    ActivationState, EngineState, FlowState, JobState, PairState, PlanState, RetryState, StepState,
    TaskState, WorkState,
};
use flowstate_core::{InvalidState, Machine, Transition};

/// machine name; states; allowed pairs; ignored cross products ("{A, B} → {C, D}").
///
/// The last two machines, `step` and `work item` (a plan's steps and their work items), are
/// not in `docs/spec/state-machines.md`, whose plan table covers the flow lifecycle only. They
/// are transcribed from the code's behaviour as it was when they moved into `machine/`
/// (`StepState` and `WorkState`, then in `plan.rs`: the pairs the plan fold accepted), so this
/// test pins them the same way: a change of either table must change this text too.
const TRANSCRIPTION: &str = "
machine flow
states PENDING, RUNNING, SUCCESS, FAILURE, REVERTED, SUSPENDING, SUSPENDED, RESUMING
allowed PENDING→RUNNING, RUNNING→SUCCESS, RUNNING→FAILURE, RUNNING→REVERTED, RUNNING→SUSPENDING,
allowed RUNNING→RESUMING, SUCCESS→RUNNING, FAILURE→RUNNING, REVERTED→PENDING, SUCCESS→PENDING,
allowed SUSPENDING→SUSPENDED, SUSPENDING→SUCCESS, SUSPENDING→FAILURE, SUSPENDING→REVERTED,
allowed SUSPENDING→RESUMING, SUSPENDED→RUNNING, RESUMING→SUSPENDED
ignored {PENDING, FAILURE, SUCCESS, SUSPENDED, REVERTED} → {SUSPENDING, SUSPENDED, RESUMING}

machine task
states PENDING, RUNNING, SUCCESS, FAILURE, REVERTING, REVERTED, REVERT_FAILURE, IGNORE
allowed PENDING→RUNNING, PENDING→IGNORE, RUNNING→SUCCESS, RUNNING→FAILURE, FAILURE→REVERTING,
allowed SUCCESS→REVERTING, REVERTING→REVERTED, REVERTING→REVERT_FAILURE, REVERTED→PENDING,
allowed IGNORE→PENDING

machine retry
states PENDING, RUNNING, SUCCESS, FAILURE, REVERTING, REVERTED, REVERT_FAILURE, IGNORE, RETRYING
allowed PENDING→RUNNING, PENDING→IGNORE, RUNNING→SUCCESS, RUNNING→FAILURE, FAILURE→REVERTING,
allowed SUCCESS→REVERTING, REVERTING→REVERTED, REVERTING→REVERT_FAILURE, REVERTED→PENDING,
allowed IGNORE→PENDING, SUCCESS→RETRYING, RETRYING→RUNNING

machine engine
states UNDEFINED, RESUMING, SCHEDULING, WAITING, ANALYZING, GAME_OVER, SUCCESS, FAILURE, REVERTED, SUSPENDED
allowed UNDEFINED→RESUMING, RESUMING→SCHEDULING, SCHEDULING→WAITING, WAITING→ANALYZING,
allowed ANALYZING→SCHEDULING, ANALYZING→WAITING, ANALYZING→GAME_OVER, GAME_OVER→SUCCESS,
allowed GAME_OVER→FAILURE, GAME_OVER→REVERTED, GAME_OVER→SUSPENDED

machine job
states UNCLAIMED, CLAIMED, COMPLETE
allowed UNCLAIMED→CLAIMED, CLAIMED→UNCLAIMED, CLAIMED→COMPLETE

machine activation
states active current, sleeping, active replay, replay failure, done
allowed active current→sleeping, sleeping→active replay, active replay→active current,
allowed active replay→replay failure, replay failure→active replay, active current→done

machine plan
states active, completed, failed, deactivated, archived
allowed active→completed, active→failed, completed→deactivated, failed→deactivated,
allowed deactivated→archived

machine completion pair
states running, scheduling/single, scheduling/double, ready/single, ready/double, failed, pending
allowed running→scheduling/single, scheduling/single→scheduling/double,
allowed scheduling/single→ready/single, scheduling/double→ready/double, scheduling/double→failed,
allowed ready/single→ready/double, scheduling/single→pending, scheduling/double→pending,
allowed ready/single→running, ready/double→running, failed→running, pending→running

machine step
states pending, active, completed, skipped, failed
allowed pending→active, pending→skipped, pending→failed, active→completed, active→failed

machine work item
states pending, active, retry_waiting, succeeded, failed, abandoned, compensating, compensated,
states compensation_failed
allowed pending→active, pending→abandoned, active→succeeded, active→failed,
allowed active→retry_waiting, retry_waiting→active, retry_waiting→abandoned,
allowed succeeded→compensating, compensating→compensated, compensating→compensation_failed
";

#[derive(Debug, Default)]
struct MachineSpec {
    name: String,
    states: Vec<String>,
    allowed: BTreeSet<(String, String)>,
    ignored: BTreeSet<(String, String)>,
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn pair(text: &str) -> (String, String) {
    let (from, to) = text
        .split_once('→')
        .unwrap_or_else(|| panic!("{text:?} is not a FROM→TO pair"));
    (from.trim().to_owned(), to.trim().to_owned())
}

fn braced(text: &str) -> Vec<String> {
    list(text.trim().trim_start_matches('{').trim_end_matches('}'))
}

fn transcription() -> Vec<MachineSpec> {
    let mut machines: Vec<MachineSpec> = Vec::new();
    for line in TRANSCRIPTION
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let (keyword, rest) = line.split_once(' ').expect("keyword and text");
        if keyword == "machine" {
            machines.push(MachineSpec {
                name: rest.to_owned(),
                ..MachineSpec::default()
            });
            continue;
        }
        let machine = machines.last_mut().expect("a machine line comes first");
        match keyword {
            "states" => machine.states.extend(list(rest)),
            "allowed" => machine.allowed.extend(list(rest).iter().map(|p| pair(p))),
            "ignored" => {
                let (froms, tos) = rest.split_once('→').expect("{..} → {..}");
                for from in braced(froms) {
                    for to in braced(tos) {
                        machine.ignored.insert((from.clone(), to));
                    }
                }
            }
            other => panic!("unknown transcription keyword {other}"),
        }
    }
    machines
}

/// Compares the implementation of `M` with the transcribed table, pair by pair.
fn check_machine<M: Machine>(spec: &MachineSpec) -> usize {
    assert_eq!(M::MACHINE, spec.name, "machine name");
    let labels: Vec<String> = M::STATES.iter().map(|s| s.label().to_owned()).collect();
    assert_eq!(labels, spec.states, "states of the {} machine", spec.name);
    for listed in spec.allowed.iter().chain(&spec.ignored) {
        assert!(
            labels.contains(&listed.0) && labels.contains(&listed.1),
            "{listed:?}"
        );
    }
    let mut checked = 0;
    for &from in M::STATES {
        for &to in M::STATES {
            let key = (from.label().to_owned(), to.label().to_owned());
            let expected = if from == to || spec.ignored.contains(&key) {
                Ok(Transition::Ignored)
            } else if spec.allowed.contains(&key) {
                Ok(Transition::Allowed)
            } else {
                Err((M::MACHINE, from.label(), to.label()))
            };
            let refusal = |e: InvalidState| (e.machine, e.from, e.to);
            assert_eq!(
                M::transition(from, to).map_err(refusal),
                expected,
                "{} machine, {} -> {}",
                spec.name,
                from.label(),
                to.label()
            );
            // `advance` moves exactly when the pair is allowed.
            let mut state = from;
            let outcome = state.advance(to);
            let moved = matches!(outcome, Ok(Transition::Allowed));
            assert_eq!(state, if moved { to } else { from });
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_pair_of_every_machine_matches_the_tables() {
    let specs = transcription();
    let names: Vec<&str> = specs.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "flow",
            "task",
            "retry",
            "engine",
            "job",
            "activation",
            "plan",
            "completion pair",
            "step",
            "work item"
        ]
    );
    let checked = check_machine::<FlowState>(&specs[0])
        + check_machine::<TaskState>(&specs[1])
        + check_machine::<RetryState>(&specs[2])
        + check_machine::<EngineState>(&specs[3])
        + check_machine::<JobState>(&specs[4])
        + check_machine::<ActivationState>(&specs[5])
        + check_machine::<PlanState>(&specs[6])
        + check_machine::<PairState>(&specs[7])
        + check_machine::<StepState>(&specs[8])
        + check_machine::<WorkState>(&specs[9]);
    // 64 + 64 + 81 + 100 + 9 + 25 + 25 + 49 pairs of the spec's machines, then 25 + 81 of the
    // plan's step and work item machines.
    assert_eq!(checked, 417 + 25 + 81);
}

#[test]
fn flow_table_has_exactly_the_documented_counts() {
    // TaskFlow's own numbers: 17 allowed pairs and 14 ignored non-identity pairs.
    let specs = transcription();
    assert_eq!(specs[0].allowed.len(), 17);
    let non_identity_ignored = specs[0].ignored.iter().filter(|(a, b)| a != b).count();
    assert_eq!(non_identity_ignored, 14);
}

#[test]
fn states_parse_from_keys_and_labels() {
    assert_eq!(FlowState::parse("running"), Some(FlowState::Running));
    assert_eq!(FlowState::parse("RUNNING"), Some(FlowState::Running));
    assert_eq!(
        ActivationState::parse("replay failure"),
        Some(ActivationState::ReplayFailure)
    );
    assert_eq!(
        ActivationState::parse("replay_failure"),
        Some(ActivationState::ReplayFailure)
    );
    assert_eq!(
        PairState::parse("scheduling/double"),
        Some(PairState::SchedulingDouble)
    );
    assert_eq!(TaskState::parse("retrying"), None);
}

// ---- The spec documents themselves ----------------------------------------------------------

/// The committed copy of the spec, `docs/spec/` at the repository root.
fn spec_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/spec");
    assert!(
        dir.join("state-machines.md").is_file(),
        "the spec documents are missing at {}",
        dir.display()
    );
    dir
}

/// The shared spec beside the repository (`../shared/spec`), where there is one.
fn shared_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec");
    dir.is_dir().then_some(dir)
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let entries = std::fs::read_dir(&next)
            .unwrap_or_else(|error| panic!("read {}: {error}", next.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
                let relative = path.strip_prefix(dir).expect("under dir").to_path_buf();
                found.insert(relative, bytes);
            }
        }
    }
    found
}

#[test]
fn spec_copy_is_identical_to_the_shared_spec() {
    let copy = files(&spec_dir());
    assert!(
        copy.keys().any(|path| path.starts_with("seeds")),
        "docs/spec/seeds is missing"
    );
    // A no-op where the shared spec is not beside the repository: nothing to compare with.
    let Some(shared) = shared_dir() else { return };
    let shared = files(&shared);
    assert_eq!(
        copy.keys().collect::<Vec<_>>(),
        shared.keys().collect::<Vec<_>>(),
        "docs/spec and ../shared/spec hold different files"
    );
    for (path, bytes) in &copy {
        assert!(
            shared.get(path) == Some(bytes),
            "docs/spec/{} differs from ../shared/spec/{}: copy the shared spec again",
            path.display(),
            path.display()
        );
    }
}

fn section<'a>(document: &'a str, heading: &str) -> &'a str {
    let start = document
        .find(heading)
        .unwrap_or_else(|| panic!("the spec has no section {heading:?}"));
    let body = &document[start + heading.len()..];
    body.find("\n## ").map_or(body, |end| &body[..end])
}

/// Every `WORD→WORD` with no spaces around the arrow (prose like "fails → FAILURE" is skipped).
fn arrow_pairs(text: &str) -> BTreeSet<(String, String)> {
    let is_state = |c: char| c.is_ascii_uppercase() || c == '_';
    let mut pairs = BTreeSet::new();
    for (at, _) in text.match_indices('→') {
        let before: String = text[..at]
            .chars()
            .rev()
            .take_while(|&c| is_state(c))
            .collect();
        let from: String = before.chars().rev().collect();
        let to: String = text[at + '→'.len_utf8()..]
            .chars()
            .take_while(|&c| is_state(c))
            .collect();
        if !from.is_empty() && !to.is_empty() {
            pairs.insert((from, to));
        }
    }
    pairs
}

/// The engine line: `A -event→ B -event→ C; D -event→ E / F`.
fn engine_pairs(text: &str) -> BTreeSet<(String, String)> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let clean = |t: &str| t.trim_matches(|c: char| ",;.".contains(c)).to_owned();
    let mut pairs = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        if token.starts_with('-') && token.ends_with('→') && i > 0 {
            let from = clean(tokens[i - 1]);
            let mut j = i + 1;
            loop {
                pairs.insert((from.clone(), clean(tokens[j])));
                if tokens.get(j + 1) == Some(&"/") {
                    j += 2;
                } else {
                    break;
                }
            }
        }
    }
    pairs
}

#[test]
fn transcription_matches_the_spec_documents() {
    let dir = spec_dir();
    let spec = std::fs::read_to_string(dir.join("state-machines.md")).expect("read the spec");
    let machines = transcription();
    let by_name = |name: &str| machines.iter().find(|m| m.name == name).expect(name);

    let flow = section(&spec, "## Flow (task graphs)");
    let (allowed, ignored) = flow
        .split_once("Ignored")
        .expect("flow has an Ignored paragraph");
    assert_eq!(
        arrow_pairs(allowed),
        by_name("flow").allowed,
        "flow allowed pairs"
    );
    let paragraph = ignored.split("\n\n").next().expect("ignored paragraph");
    let ignored_line = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
    let (froms, tos) = ignored_line
        .split_once("from any of")
        .and_then(|(_, rest)| rest.split_once(" to any of "))
        .expect("'from any of .. to any of ..'");
    let tos = tos.split('(').next().expect("list");
    let mut documented = BTreeSet::new();
    for from in list(froms) {
        for to in list(tos) {
            documented.insert((from.clone(), to));
        }
    }
    assert_eq!(documented, by_name("flow").ignored, "flow ignored pairs");

    let task = arrow_pairs(section(&spec, "## Task (atom)"));
    assert_eq!(task, by_name("task").allowed, "task pairs");
    let retry_section = section(&spec, "## Retry (controller atom)");
    assert!(retry_section.contains("Everything a task allows"));
    let retry: BTreeSet<_> = task.union(&arrow_pairs(retry_section)).cloned().collect();
    assert_eq!(retry, by_name("retry").allowed, "retry pairs");

    let engine = engine_pairs(section(&spec, "## Engine (one run of a task-graph flow)"));
    assert_eq!(engine, by_name("engine").allowed, "engine pairs");

    let job = arrow_pairs(section(&spec, "## Job (a flow offered to many workers)"));
    assert_eq!(job, by_name("job").allowed, "job pairs");

    let activation = section(&spec, "## Durable async function activation");
    let rows: BTreeSet<(String, String)> = activation
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| line.split('|').map(str::trim).collect::<Vec<_>>())
        .filter(|cells| cells.len() >= 4 && cells[1] != "from" && !cells[1].starts_with('-'))
        .filter(|cells| cells[1] != "(none)")
        .map(|cells| {
            let to = cells[3].split(" (").next().expect("state");
            (cells[1].to_owned(), to.to_owned())
        })
        .collect();
    assert_eq!(rows, by_name("activation").allowed, "activation pairs");

    // The await runtime: the mermaid diagram of seed 003, plus its rule 7 ("When a generator is
    // in scheduling/double state and the reject closure is invoked, the generator state changes
    // to failed"), which the diagram leaves out.
    let seed = std::fs::read_to_string(dir.join("seeds/003_3237f405835fc428.txt")).expect("seed");
    assert!(seed.contains("*scheduling/double* state and the reject closure is invoked"));
    let mut mermaid: BTreeSet<(String, String)> = seed
        .lines()
        .filter_map(|line| line.trim().split_once("-->"))
        .map(|(from, rest)| {
            let to = rest.split(':').next().expect("target");
            (from.trim().to_owned(), to.trim().to_owned())
        })
        .filter(|(from, to)| from != "[*]" && to != "[*]" && from != to)
        .collect();
    mermaid.insert(("scheduling/double".into(), "failed".into()));
    assert_eq!(
        mermaid,
        by_name("completion pair").allowed,
        "await-rt pairs"
    );
}
