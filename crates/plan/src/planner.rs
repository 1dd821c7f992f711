//! The planner: from goals and initial inputs to the smallest plan that reaches the goals.
//!
//! Pure code over a [`Catalog`] of step specifications (no bodies, no I/O), in two passes
//! (after Argyll's `plan.go`):
//!
//! 1. **Forward:** which attributes can be produced at all from the inputs (a fixpoint over
//!    the catalog with a counter of missing inputs per step: linear in the catalog's size).
//! 2. **Backward:** from each goal, choose one provider per attribute still needed and recurse
//!    into its inputs. An initial input is never produced again. A required input with no
//!    provider that can run makes the goal unreachable, with the chain of steps that explains
//!    why; an optional input's provider joins the plan only if it can run.
//!
//! **Choosing providers.** When several steps provide an attribute, an explicit choice in the
//! request decides; otherwise, if exactly one of them can run from the inputs, it is chosen;
//! otherwise the start is refused as ambiguous. A cycle among the steps a goal needs is refused
//! with the cycle.

use std::collections::{BTreeMap, HashMap, HashSet};

use flowstate_core::{ExecutionPlan, Goal, StepSpec};

/// Most goals one start may ask for.
pub const MAX_GOALS: usize = 100;

/// Why a flow cannot start with these goals and inputs. Each says what is missing and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanningError {
    /// No goals.
    #[error("a flow needs at least one goal (a step name or an attribute name)")]
    NoGoals,
    /// Too many goals.
    #[error("{goals} goals; the limit is {limit} (MAX_GOALS)")]
    TooManyGoals {
        /// How many.
        goals: usize,
        /// The limit.
        limit: usize,
    },
    /// A goal that is neither a registered step nor an attribute any step provides.
    #[error("unknown goal {goal:?}: no step has that name and no step provides an attribute of that name")]
    UnknownGoal {
        /// The goal.
        goal: String,
    },
    /// A goal name that is a step and also an attribute other steps provide.
    #[error("goal {goal:?} is a step and also an attribute provided by {providers:?}; rename one of them")]
    AmbiguousGoal {
        /// The goal.
        goal: String,
        /// The steps that provide the attribute.
        providers: Vec<String>,
    },
    /// A goal that cannot be reached from the inputs.
    #[error("goal {goal} cannot be reached: {reason}")]
    Unreachable {
        /// The goal.
        goal: Goal,
        /// Why, as a chain ("\"receipt\" is provided by step \"charge\", which needs \"card\": no step provides it and it is not an input").
        reason: String,
        /// The attribute nobody can produce.
        missing: String,
    },
    /// Several steps provide an attribute and nothing chooses between them.
    #[error("attribute {attribute:?} is provided by {providers:?}, and {runnable} of them can run from the inputs; choose one in the request")]
    Ambiguous {
        /// The attribute.
        attribute: String,
        /// Every provider.
        providers: Vec<String>,
        /// How many of them can run.
        runnable: usize,
    },
    /// A choice that names a step that does not provide the attribute.
    #[error("the request chooses step {step:?} for attribute {attribute:?}, but that step does not provide it")]
    BadChoice {
        /// The attribute.
        attribute: String,
        /// The step.
        step: String,
    },
    /// The steps a goal needs form a cycle.
    #[error("the steps form a cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The steps of the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
}

/// Step specifications with the indexes the planner needs.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    steps: BTreeMap<String, StepSpec>,
    providers: HashMap<String, Vec<String>>,
    consumers: HashMap<String, Vec<String>>,
}

impl Catalog {
    /// An empty catalog.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a step or replaces the step of the same name (a new version).
    pub fn insert(&mut self, spec: StepSpec) {
        if let Some(old) = self.steps.remove(&spec.name) {
            self.unindex(&old);
        }
        for output in &spec.outputs {
            self.providers
                .entry(output.clone())
                .or_default()
                .push(spec.name.clone());
        }
        for input in spec.inputs.iter().filter(|input| !input.optional) {
            self.consumers
                .entry(input.name.clone())
                .or_default()
                .push(spec.name.clone());
        }
        self.steps.insert(spec.name.clone(), spec);
    }

    /// Removes a step.
    pub fn remove(&mut self, name: &str) -> Option<StepSpec> {
        let old = self.steps.remove(name)?;
        self.unindex(&old);
        Some(old)
    }

    fn unindex(&mut self, old: &StepSpec) {
        for list in self.providers.values_mut() {
            list.retain(|step| *step != old.name);
        }
        for list in self.consumers.values_mut() {
            list.retain(|step| *step != old.name);
        }
    }

    /// The step named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&StepSpec> {
        self.steps.get(name)
    }

    /// Every step, by name.
    pub fn steps(&self) -> impl Iterator<Item = &StepSpec> {
        self.steps.values()
    }

    /// How many steps.
    #[must_use]
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    fn providers(&self, attribute: &str) -> &[String] {
        self.providers.get(attribute).map_or(&[], Vec::as_slice)
    }

    /// Resolves a goal name: a step first, else an attribute some step provides or an input
    /// holds.
    fn goal(&self, name: &str, inputs: &HashSet<&str>) -> Result<Goal, PlanningError> {
        if let Some(step) = self.steps.get(name) {
            // A step named like an attribute it does not produce, while other steps do: the
            // caller could mean either.
            let others = self.providers(name);
            if !step.outputs.iter().any(|output| output == name) && !others.is_empty() {
                return Err(PlanningError::AmbiguousGoal {
                    goal: name.to_owned(),
                    providers: others.to_vec(),
                });
            }
            Ok(Goal::Step(name.to_owned()))
        } else if !self.providers(name).is_empty() || inputs.contains(name) {
            Ok(Goal::Attribute(name.to_owned()))
        } else {
            Err(PlanningError::UnknownGoal {
                goal: name.to_owned(),
            })
        }
    }

    /// The attributes the inputs make producible (pass 1).
    fn producible<'a>(&'a self, inputs: &HashSet<&'a str>) -> HashSet<&'a str> {
        let mut available: HashSet<&str> = inputs.clone();
        let mut missing: HashMap<&str, usize> = HashMap::with_capacity(self.steps.len());
        let mut ready: Vec<&StepSpec> = Vec::new();
        for spec in self.steps.values() {
            let count = spec
                .inputs
                .iter()
                .filter(|input| !input.optional && !available.contains(input.name.as_str()))
                .count();
            if count == 0 {
                ready.push(spec);
            } else {
                missing.insert(&spec.name, count);
            }
        }
        while let Some(spec) = ready.pop() {
            for output in &spec.outputs {
                if !available.insert(output.as_str()) {
                    continue;
                }
                for consumer in self.consumers.get(output).into_iter().flatten() {
                    if let Some(count) = missing.get_mut(consumer.as_str()) {
                        *count -= 1;
                        if *count == 0 {
                            missing.remove(consumer.as_str());
                            if let Some(spec) = self.steps.get(consumer) {
                                ready.push(spec);
                            }
                        }
                    }
                }
            }
        }
        available
    }

    /// Computes the plan for `goals` from `inputs`, with explicit provider `choices`
    /// (attribute → step).
    pub fn plan(
        &self,
        goals: &[String],
        inputs: &serde_json::Map<String, serde_json::Value>,
        choices: &BTreeMap<String, String>,
    ) -> Result<ExecutionPlan, PlanningError> {
        if goals.is_empty() {
            return Err(PlanningError::NoGoals);
        }
        if goals.len() > MAX_GOALS {
            return Err(PlanningError::TooManyGoals {
                goals: goals.len(),
                limit: MAX_GOALS,
            });
        }
        let input_names: HashSet<&str> = inputs.keys().map(String::as_str).collect();
        let goals = goals
            .iter()
            .map(|name| self.goal(name, &input_names))
            .collect::<Result<Vec<_>, _>>()?;
        for (attribute, step) in choices {
            if !self.providers(attribute).contains(step) {
                return Err(PlanningError::BadChoice {
                    attribute: attribute.clone(),
                    step: step.clone(),
                });
            }
        }
        let mut walk = Walk {
            catalog: self,
            inputs: &input_names,
            producible: self.producible(&input_names),
            choices,
            plan: ExecutionPlan {
                goals: goals.clone(),
                steps: BTreeMap::new(),
                providers: BTreeMap::new(),
                inputs: Vec::new(),
            },
            stack: Vec::new(),
            used_inputs: HashSet::new(),
        };
        for goal in &goals {
            let result = match goal {
                Goal::Step(step) => walk.include(step),
                Goal::Attribute(attribute) => walk.need(attribute),
            };
            result.map_err(|failure| failure.into_error(goal))?;
        }
        let mut used: Vec<String> = walk.used_inputs.into_iter().map(str::to_owned).collect();
        used.sort();
        walk.plan.inputs = used;
        Ok(walk.plan)
    }
}

/// Why the backward walk stopped, before it is tied to a goal.
enum WalkFailure {
    Missing { attribute: String, chain: String },
    Error(PlanningError),
}

impl WalkFailure {
    fn into_error(self, goal: &Goal) -> PlanningError {
        match self {
            Self::Missing { attribute, chain } => PlanningError::Unreachable {
                goal: goal.clone(),
                reason: chain,
                missing: attribute,
            },
            Self::Error(error) => error,
        }
    }
}

struct Walk<'a> {
    catalog: &'a Catalog,
    inputs: &'a HashSet<&'a str>,
    producible: HashSet<&'a str>,
    choices: &'a BTreeMap<String, String>,
    plan: ExecutionPlan,
    stack: Vec<&'a str>,
    used_inputs: HashSet<&'a str>,
}

impl<'a> Walk<'a> {
    /// Makes sure `attribute` is an input or has a provider in the plan.
    fn need(&mut self, attribute: &'a str) -> Result<(), WalkFailure> {
        if self.inputs.contains(attribute) {
            self.used_inputs.insert(attribute);
            return Ok(());
        }
        if self.plan.providers.contains_key(attribute) {
            return Ok(());
        }
        let provider = self.provider(attribute)?;
        self.include(provider).map_err(|failure| match failure {
            WalkFailure::Missing {
                attribute: missing,
                chain,
            } => WalkFailure::Missing {
                attribute: missing,
                chain: format!(
                    "{attribute:?} is provided by step {provider:?}, which needs {chain}"
                ),
            },
            error @ WalkFailure::Error(_) => error,
        })?;
        self.plan
            .providers
            .insert(attribute.to_owned(), provider.to_owned());
        Ok(())
    }

    /// The provider to use for `attribute`, or why there is none.
    fn provider(&self, attribute: &'a str) -> Result<&'a str, WalkFailure> {
        let providers = self.catalog.providers(attribute);
        if let Some(step) = self.choices.get(attribute) {
            return Ok(step.as_str());
        }
        let runnable: Vec<&String> = providers.iter().filter(|step| self.can_run(step)).collect();
        match (providers.len(), runnable.as_slice()) {
            (0, _) => Err(WalkFailure::Missing {
                attribute: attribute.to_owned(),
                chain: format!("{attribute:?}: no step provides it and it is not an input"),
            }),
            (_, [only]) => Ok(only.as_str()),
            // Exactly one provider that cannot run: walk into it to say why.
            (1, []) => Ok(providers[0].as_str()),
            (_, []) => Err(WalkFailure::Missing {
                attribute: attribute.to_owned(),
                chain: format!(
                    "{attribute:?}: none of its providers {providers:?} can run from the inputs"
                ),
            }),
            (_, several) => Err(WalkFailure::Error(PlanningError::Ambiguous {
                attribute: attribute.to_owned(),
                providers: providers.to_vec(),
                runnable: several.len(),
            })),
        }
    }

    fn can_run(&self, step: &str) -> bool {
        self.catalog.get(step).is_some_and(|spec| {
            spec.inputs
                .iter()
                .all(|input| input.optional || self.producible.contains(input.name.as_str()))
        })
    }

    /// Puts `step` and what it needs into the plan.
    fn include(&mut self, step: &'a str) -> Result<(), WalkFailure> {
        if self.plan.steps.contains_key(step) {
            return Ok(());
        }
        if let Some(start) = self.stack.iter().position(|s| *s == step) {
            let mut cycle: Vec<String> = self.stack[start..]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            cycle.push(step.to_owned());
            return Err(WalkFailure::Error(PlanningError::Cycle { cycle }));
        }
        let Some(spec) = self.catalog.get(step) else {
            return Err(WalkFailure::Error(PlanningError::UnknownGoal {
                goal: step.to_owned(),
            }));
        };
        self.stack.push(step);
        for input in &spec.inputs {
            let name = input.name.as_str();
            if !input.optional {
                self.need(name)?;
            } else if self.inputs.contains(name) {
                self.used_inputs.insert(name);
            } else if self.producible.contains(name) && !self.plan.providers.contains_key(name) {
                // An optional input joins the plan only through a provider that can run and
                // whose own needs plan cleanly; otherwise (ambiguous, unreachable, a cycle)
                // it is left out and the default applies, with the plan as it was.
                if let Ok(provider) = self.provider(name) {
                    if self.can_run(provider) {
                        let before = (
                            self.plan.clone(),
                            self.used_inputs.clone(),
                            self.stack.len(),
                        );
                        if self.need(name).is_err() {
                            self.plan = before.0;
                            self.used_inputs = before.1;
                            self.stack.truncate(before.2);
                        }
                    }
                }
            }
        }
        self.stack.pop();
        self.plan.steps.insert(step.to_owned(), spec.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowstate_core::{InputSpec, RetryPolicy};

    pub(crate) fn spec(name: &str, inputs: &[&str], outputs: &[&str]) -> StepSpec {
        StepSpec {
            name: name.to_owned(),
            version: 1,
            inputs: inputs
                .iter()
                .map(|input| {
                    let (name, optional) = match input.strip_suffix('?') {
                        Some(name) => (name, true),
                        None => (*input, false),
                    };
                    InputSpec {
                        name: name.to_owned(),
                        optional,
                        default: None,
                    }
                })
                .collect(),
            outputs: outputs.iter().map(|o| (*o).to_owned()).collect(),
            map_over: None,
            parallelism: 1,
            predicate: None,
            retry: RetryPolicy::default(),
            timeout_ms: None,
            compensable: false,
        }
    }

    fn catalog(steps: &[StepSpec]) -> Catalog {
        let mut catalog = Catalog::new();
        steps.iter().cloned().for_each(|s| catalog.insert(s));
        catalog
    }

    fn inputs(names: &[&str]) -> serde_json::Map<String, serde_json::Value> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), serde_json::json!(1)))
            .collect()
    }

    fn plan_of(
        catalog: &Catalog,
        goals: &[&str],
        given: &[&str],
    ) -> Result<ExecutionPlan, PlanningError> {
        let goals: Vec<String> = goals.iter().map(|g| (*g).to_owned()).collect();
        catalog.plan(&goals, &inputs(given), &BTreeMap::new())
    }

    fn steps(plan: &ExecutionPlan) -> Vec<&str> {
        plan.steps.keys().map(String::as_str).collect()
    }

    #[test]
    fn only_the_steps_on_the_path_to_the_goal_are_planned() {
        let mut all = vec![
            spec("a", &["seed"], &["x"]),
            spec("b", &["x"], &["y"]),
            spec("c", &["y"], &["z"]),
        ];
        all.extend((0..7).map(|n| spec(&format!("other{n}"), &["seed"], &[&format!("o{n}")])));
        let plan = plan_of(&catalog(&all), &["c"], &["seed"]).expect("plans");
        assert_eq!(steps(&plan), ["a", "b", "c"]);
        assert_eq!(plan.inputs, ["seed"]);
        assert_eq!(plan.providers.get("y").map(String::as_str), Some("b"));
    }

    #[test]
    fn an_input_given_at_start_excludes_its_provider() {
        let all = [spec("a", &["seed"], &["x"]), spec("b", &["x"], &["y"])];
        let plan = plan_of(&catalog(&all), &["y"], &["x"]).expect("plans");
        assert_eq!(steps(&plan), ["b"]);
        assert_eq!(plan.goals, [Goal::Attribute("y".into())]);
    }

    #[test]
    fn unknown_and_unreachable_goals_say_what_is_missing() {
        let all = [
            spec("charge", &["card"], &["receipt"]),
            spec("ship", &["receipt"], &["label"]),
        ];
        let catalog = catalog(&all);
        assert_eq!(
            plan_of(&catalog, &["refund"], &[]),
            Err(PlanningError::UnknownGoal {
                goal: "refund".into()
            })
        );
        let error = plan_of(&catalog, &["ship"], &[]).expect_err("card is missing");
        let PlanningError::Unreachable {
            missing, reason, ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(missing, "card");
        assert!(
            reason.contains("\"receipt\" is provided by step \"charge\", which needs \"card\""),
            "{reason}"
        );
        assert!(error.to_string().contains("not an input"), "{error}");
    }

    #[test]
    fn two_runnable_providers_need_a_choice() {
        let all = [
            spec("card", &["order"], &["payment"]),
            spec("invoice", &["order"], &["payment"]),
            spec("ship", &["payment"], &["label"]),
        ];
        let catalog = catalog(&all);
        let error = plan_of(&catalog, &["ship"], &["order"]).expect_err("ambiguous");
        assert!(
            matches!(error, PlanningError::Ambiguous { runnable: 2, .. }),
            "{error:?}"
        );
        let choices = [("payment".to_owned(), "invoice".to_owned())]
            .into_iter()
            .collect();
        let plan = catalog
            .plan(&["ship".into()], &inputs(&["order"]), &choices)
            .expect("chosen");
        assert_eq!(steps(&plan), ["invoice", "ship"]);
        // Only one provider can run from these inputs: it is chosen.
        let all = [
            spec("card", &["order", "card_number"], &["payment"]),
            spec("invoice", &["order"], &["payment"]),
            spec("ship", &["payment"], &["label"]),
        ];
        let plan = plan_of(&catalog_of(&all), &["ship"], &["order"]).expect("one runnable");
        assert_eq!(steps(&plan), ["invoice", "ship"]);
    }

    fn catalog_of(steps: &[StepSpec]) -> Catalog {
        catalog(steps)
    }

    #[test]
    fn cycles_are_refused_with_the_cycle() {
        let all = [
            spec("a", &["y"], &["x"]),
            spec("b", &["x"], &["y"]),
            spec("c", &["x"], &["z"]),
        ];
        let error = plan_of(&catalog(&all), &["c"], &[]).expect_err("cycle");
        assert_eq!(
            error,
            PlanningError::Cycle {
                cycle: vec!["a".into(), "b".into(), "a".into()]
            }
        );
    }

    #[test]
    fn optional_inputs_join_only_through_runnable_providers() {
        let all = [
            spec("discount", &["coupon"], &["rebate"]),
            spec("total", &["items", "rebate?"], &["amount"]),
        ];
        let catalog = catalog(&all);
        assert_eq!(
            steps(&plan_of(&catalog, &["amount"], &["items"]).expect("plans")),
            ["total"]
        );
        assert_eq!(
            steps(&plan_of(&catalog, &["amount"], &["items", "coupon"]).expect("plans")),
            ["discount", "total"]
        );
    }

    #[test]
    fn an_optional_input_that_cannot_be_planned_cleanly_is_left_to_its_default() {
        // Two runnable providers of the optional "rebate": ambiguous, so it is left out
        // rather than failing the plan; the plan is as if it were not there.
        let all = [
            spec("coupon_rebate", &["items"], &["rebate"]),
            spec("loyalty_rebate", &["items"], &["rebate"]),
            spec("total", &["items", "rebate?"], &["amount"]),
        ];
        let plan = plan_of(&catalog(&all), &["amount"], &["items"]).expect("plans");
        assert_eq!(steps(&plan), ["total"]);
        assert!(!plan.providers.contains_key("rebate"));
    }

    #[test]
    fn a_goal_that_is_a_step_and_another_steps_attribute_is_refused() {
        let all = [
            spec("report", &["x"], &["summary"]),
            spec("writer", &["x"], &["report"]),
        ];
        let error = plan_of(&catalog(&all), &["report"], &["x"]).expect_err("ambiguous");
        assert!(
            matches!(error, PlanningError::AmbiguousGoal { .. }),
            "{error:?}"
        );
        // A step that produces the attribute of its own name is not ambiguous.
        let all = [spec("report", &["x"], &["report"])];
        assert!(plan_of(&catalog(&all), &["report"], &["x"]).is_ok());
    }

    #[test]
    fn a_diamond_plans_each_step_once() {
        let all = [
            spec("root", &["seed"], &["r"]),
            spec("left", &["r"], &["l"]),
            spec("right", &["r"], &["q"]),
            spec("join", &["l", "q"], &["done"]),
        ];
        let plan = plan_of(&catalog(&all), &["join"], &["seed"]).expect("plans");
        assert_eq!(steps(&plan), ["join", "left", "right", "root"]);
    }
}
