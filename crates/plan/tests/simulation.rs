//! A seeded simulation of the sans-I/O runtime against a simple model.
//!
//! Each seed builds a random plan (a layered graph of steps with required and optional
//! inputs, predicates, retries and compensations) and a fate for every step (succeeds after
//! some retryable failures, or fails for good). The simulation plays the runtime's decisions
//! through the strict fold (so every event it decides must be one the tables allow), finishing
//! running attempts in a random order and advancing time to the next retry when nothing runs.
//!
//! Checked for every seed: the flow deactivates; it is completed exactly when the model says
//! every goal is produced; no step or attempt starts after it is terminal (the fold refuses
//! those); a failed flow compensates every succeeded compensable item, in reverse order of
//! success; no attempt runs twice; a batch the runtime calls settled is followed by nothing.
//! `FLOWSTATE_SIM_SEED=N` replays one seed.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use flowstate_core::fold::Folder;
use flowstate_core::machine::PlanState;
use flowstate_core::{
    Event, EventBody, Failure, FlowId, FlowKind, FlowRecord, FlowStatus, InputSpec, Predicate,
    RetryPolicy, StepSpec, Timestamp, WorkState,
};
use flowstate_plan::runtime::{self, AttemptResult, Launch, LaunchKind};
use flowstate_plan::Catalog;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Fate {
    /// Per work item: retryable failures before the outcome, and whether the final outcome
    /// is a success (one item unless the step is mapped over the `list` input).
    items: Vec<(u32, bool)>,
    /// The value of its gate input, if it has a predicate.
    gate: Option<bool>,
}

/// Elements of the `list` input that mapped steps map over.
const LIST: usize = 4;

struct Scenario {
    catalog: Catalog,
    fates: BTreeMap<String, Fate>,
    goals: Vec<String>,
    inputs: serde_json::Map<String, Value>,
}

fn scenario(rng: &mut StdRng) -> Scenario {
    let count = rng.random_range(2..10);
    let mut catalog = Catalog::new();
    let mut fates = BTreeMap::new();
    let mut inputs = serde_json::Map::new();
    inputs.insert("seed".into(), json!(1));
    inputs.insert("list".into(), json!((0..LIST).collect::<Vec<_>>()));
    for index in 0..count {
        let name = format!("s{index}");
        let mut step_inputs = vec![InputSpec {
            name: "seed".into(),
            optional: false,
            default: None,
        }];
        for earlier in 0..index {
            if rng.random_bool(0.35) {
                let optional = rng.random_bool(0.3);
                step_inputs.push(InputSpec {
                    name: format!("a{earlier}"),
                    optional,
                    default: optional.then(|| json!("default")),
                });
            }
        }
        let gate = rng.random_bool(0.2).then(|| rng.random_bool(0.7));
        let predicate = gate.map(|value| {
            let gate_name = format!("gate{index}");
            inputs.insert(gate_name.clone(), json!(value));
            step_inputs.push(InputSpec {
                name: gate_name.clone(),
                optional: false,
                default: None,
            });
            Predicate::Truthy { input: gate_name }
        });
        let max_attempts = rng.random_range(1..4);
        let mapped = rng.random_bool(0.3);
        if mapped {
            step_inputs.push(InputSpec {
                name: "list".into(),
                optional: false,
                default: None,
            });
        }
        let items = (0..if mapped { LIST } else { 1 })
            .map(|_| {
                (
                    rng.random_range(0..max_attempts + 1),
                    rng.random_bool(if mapped { 0.93 } else { 0.8 }),
                )
            })
            .collect();
        fates.insert(name.clone(), Fate { items, gate });
        // Some steps also produce an attribute others produce too (first wins).
        let mut outputs = vec![format!("a{index}")];
        if rng.random_bool(0.3) {
            outputs.push("shared".to_owned());
        }
        catalog.insert(StepSpec {
            name,
            version: 1,
            inputs: step_inputs,
            outputs,
            map_over: mapped.then(|| "list".to_owned()),
            parallelism: rng.random_range(1..4),
            predicate,
            retry: RetryPolicy {
                max_attempts,
                initial_backoff_ms: 10,
                max_backoff_ms: 40,
                jitter: true,
            },
            timeout_ms: None,
            compensable: rng.random_bool(0.5),
        });
    }
    let goals: BTreeSet<String> = (0..rng.random_range(1..3))
        .map(|_| format!("s{}", rng.random_range(count / 2..count)))
        .collect();
    Scenario {
        catalog,
        fates,
        goals: goals.into_iter().collect(),
        inputs,
    }
}

/// The model: a step produces its output iff its gate is open, its fate is success within
/// its attempts, and every required input is produced (or given).
fn model_completes(scenario: &Scenario, plan: &flowstate_core::ExecutionPlan) -> bool {
    let mut produced: BTreeMap<&str, bool> = BTreeMap::new();
    // Steps are named s0..sN and only read earlier ones, so name order by index is a
    // topological order.
    let mut names: Vec<&String> = plan.steps.keys().collect();
    names.sort_by_key(|name| name[1..].parse::<u32>().unwrap_or(0));
    for name in names {
        let spec = &plan.steps[name];
        let fate = &scenario.fates[name];
        let max = spec.retry.max_attempts;
        let fate_ok = fate
            .items
            .iter()
            .all(|(transient, succeeds)| *succeeds && *transient < max);
        let inputs_ok = spec.inputs.iter().filter(|i| !i.optional).all(|input| {
            scenario.inputs.contains_key(&input.name)
                || produced.get(&input.name[..]).copied().unwrap_or(false)
        });
        let ok = fate.gate.unwrap_or(true) && fate_ok && inputs_ok;
        produced.insert(spec.outputs[0].as_str(), ok);
    }
    scenario.goals.iter().all(|goal| {
        produced
            .get(&format!("a{}", &goal[1..])[..])
            .copied()
            .unwrap_or(false)
    })
}

fn apply(folder: &mut Folder, flow: FlowId, now: Timestamp, body: EventBody) {
    let seq = folder.next_seq();
    let event = Event {
        flow,
        seq,
        time: now,
        body,
    };
    if let Err(error) = folder.apply(&event) {
        panic!("the fold refused {:?}: {error}", event.body);
    }
}

fn record(folder: &Folder) -> &FlowRecord {
    folder.record().expect("created")
}

fn simulate(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let scenario = scenario(&mut rng);
    let plan = match scenario
        .catalog
        .plan(&scenario.goals, &scenario.inputs, &BTreeMap::new())
    {
        Ok(plan) => plan,
        Err(error) => panic!("seed {seed}: every generated goal is reachable: {error}"),
    };
    let expected_complete = model_completes(&scenario, &plan);
    let mut random = [0_u8; 10];
    random[..8].copy_from_slice(&seed.to_le_bytes());
    let flow = FlowId::from_parts(Timestamp::from_micros(1), random);
    let mut now = Timestamp::from_micros(1_000_000);
    let mut folder = Folder::new();
    apply(
        &mut folder,
        flow,
        now,
        EventBody::FlowCreated {
            kind: FlowKind::Plan,
            definition: "sim".into(),
            input: Value::Object(scenario.inputs.clone()),
        },
    );
    apply(
        &mut folder,
        flow,
        now,
        EventBody::PlanStarted { plan: plan.clone() },
    );
    let mut running: Vec<Launch> = Vec::new();
    let mut ran: HashSet<(String, u32, u32, bool)> = HashSet::new();
    let mut terminal_seen = false;
    let mut compensations: Vec<(u64, String)> = Vec::new();
    for _round in 0..10_000 {
        let mut settled = false;
        loop {
            let decision = runtime::decide(record(&folder), now);
            if settled {
                // The batch before said nothing would follow it.
                assert!(
                    decision.events.is_empty(),
                    "seed {seed}: a settled batch was followed by {:?}",
                    decision.events
                );
            }
            settled = decision.settled;
            let events = decision.events;
            if events.is_empty() {
                break;
            }
            for event in events {
                if let EventBody::CompensationStarted {
                    step,
                    item,
                    attempt: 1,
                } = &event
                {
                    let succeeded = record(&folder).plan.as_ref().expect("plan").steps[step].items
                        [*item as usize]
                        .succeeded_seq;
                    compensations.push((succeeded, step.clone()));
                }
                apply(&mut folder, flow, now, event);
            }
        }
        let state = match record(&folder).status {
            FlowStatus::Plan(state) => state,
            other => panic!("{other:?}"),
        };
        terminal_seen |= state != PlanState::Active;
        if state == PlanState::Deactivated {
            break;
        }
        for launch in runtime::launches(record(&folder)) {
            if !running.contains(&launch) {
                let key = (
                    launch.step.clone(),
                    launch.attempt,
                    launch.item,
                    launch.kind == LaunchKind::Compensate,
                );
                assert!(ran.insert(key), "seed {seed}: {launch:?} launched twice");
                running.push(launch);
            }
        }
        if running.is_empty() {
            let due = runtime::next_due(record(&folder)).unwrap_or_else(|| {
                panic!("seed {seed}: stuck in {state:?}: {:#?}", record(&folder))
            });
            assert!(due > now, "seed {seed}: a due retry was not started");
            now = due;
            continue;
        }
        // Finish one to three running attempts, chosen at random (late results included),
        // before the runtime decides again: an engine drains every result that is ready.
        let finishing = rng.random_range(1..=running.len().min(3));
        for _ in 0..finishing {
            let launch = running.swap_remove(rng.random_range(0..running.len()));
            let (transient, succeeds) = scenario.fates[&launch.step].items[launch.item as usize];
            let result = match launch.kind {
                LaunchKind::Compensate => AttemptResult::Succeeded(Value::Null),
                LaunchKind::Execute if launch.attempt <= transient => AttemptResult::Failed {
                    failure: Failure::new("Busy", "try again"),
                    retryable: true,
                },
                LaunchKind::Execute if succeeds => {
                    let outputs: serde_json::Map<String, Value> = plan.steps[&launch.step]
                        .outputs
                        .iter()
                        .map(|output| (output.clone(), json!(launch.step.clone())))
                        .collect();
                    AttemptResult::Succeeded(Value::Object(outputs))
                }
                LaunchKind::Execute => AttemptResult::Failed {
                    failure: Failure::new("Broken", "for good"),
                    retryable: false,
                },
            };
            now = Timestamp::from_micros(now.as_micros() + rng.random_range(1..5_000));
            let event =
                runtime::attempt_finished(record(&folder), &launch, result, now, rng.random());
            apply(&mut folder, flow, now, event);
        }
    }
    let end = record(&folder);
    let plan_record = end.plan.as_ref().expect("plan");
    assert_eq!(
        end.status,
        FlowStatus::Plan(PlanState::Deactivated),
        "seed {seed}: did not deactivate: {end:#?}"
    );
    assert!(terminal_seen);
    let completed = plan_record.failure.is_none();
    assert_eq!(
        completed, expected_complete,
        "seed {seed}: completed {completed}, the model says {expected_complete}: {end:#?}"
    );
    if completed {
        for goal in &scenario.goals {
            assert!(plan_record
                .attributes
                .contains_key(&format!("a{}", &goal[1..])));
        }
    } else {
        // Every succeeded compensable item was compensated, latest success first.
        for (name, step) in &plan_record.steps {
            if plan.steps[name].compensable {
                for item in &step.items {
                    assert_ne!(
                        item.state,
                        WorkState::Succeeded,
                        "seed {seed}: {name} not compensated"
                    );
                }
            }
        }
        let order: Vec<u64> = compensations.iter().map(|(seq, _)| *seq).collect();
        let mut sorted = order.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(
            order, sorted,
            "seed {seed}: compensations {compensations:?}"
        );
    }
}

#[test]
fn random_plans_deactivate_and_agree_with_the_model() {
    if let Some(seed) = std::env::var("FLOWSTATE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        simulate(seed);
        return;
    }
    for seed in 0..2_000 {
        simulate(seed);
    }
}
