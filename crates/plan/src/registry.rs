//! The step registry: every version of every step with its code, and the catalog of the
//! newest versions that new flows are planned from. A running flow keeps the versions it was
//! planned with (they are in its plan); their code must stay registered while such flows run.

use std::collections::HashMap;
use std::sync::Arc;

use flowstate_core::limits::MAX_NAME_BYTES;
use flowstate_core::plan::MAX_STEP_ATTEMPTS;
use flowstate_core::StepSpec;

use crate::planner::Catalog;
use crate::step::{Body, Compensation, Step};

/// Most inputs, and most outputs, one step may declare.
pub const MAX_STEP_ATTRIBUTES: usize = 100;

/// Why a step was refused at registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The step is not well formed.
    #[error("step {step:?}: {reason}")]
    Invalid {
        /// The step.
        step: String,
        /// What is wrong.
        reason: String,
    },
    /// The same name and version registered with another specification.
    #[error("step {step:?} version {version} is already registered with another definition; register a new version")]
    VersionConflict {
        /// The step.
        step: String,
        /// The version.
        version: u32,
    },
}

/// One registered version of a step.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) spec: StepSpec,
    pub(crate) body: Body,
    pub(crate) compensation: Option<Compensation>,
}

/// Every registered step version, and the catalog of the newest.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    pub(crate) catalog: Catalog,
    versions: HashMap<(String, u32), Arc<Registered>>,
}

impl Registry {
    pub(crate) fn register(&mut self, step: Step) -> Result<(), RegistrationError> {
        let spec = step.spec;
        let invalid = |reason: String| RegistrationError::Invalid {
            step: spec.name.clone(),
            reason,
        };
        validate(&spec).map_err(invalid)?;
        let Some(body) = step.body else {
            return Err(invalid("it has no body (Step::body)".to_owned()));
        };
        if spec.compensable && step.compensation.is_none() {
            return Err(invalid(
                "it is marked compensable but has no compensation (Step::compensate)".to_owned(),
            ));
        }
        let key = (spec.name.clone(), spec.version);
        if let Some(existing) = self.versions.get(&key) {
            if existing.spec != spec {
                return Err(RegistrationError::VersionConflict {
                    step: spec.name.clone(),
                    version: spec.version,
                });
            }
        }
        let newest = self
            .catalog
            .get(&spec.name)
            .is_none_or(|current| current.version <= spec.version);
        if newest {
            self.catalog.insert(spec.clone());
        }
        self.versions.insert(
            key,
            Arc::new(Registered {
                spec,
                body,
                compensation: step.compensation,
            }),
        );
        Ok(())
    }

    /// Removes a step from the catalog (new flows can no longer plan it); its versions stay
    /// registered, so that running flows that use them go on.
    pub(crate) fn unregister(&mut self, name: &str) -> bool {
        self.catalog.remove(name).is_some()
    }

    /// The newest registered version of `name`, if any.
    pub(crate) fn newest_version(&self, name: &str) -> Option<u32> {
        self.versions
            .keys()
            .filter(|(step, _)| step == name)
            .map(|(_, version)| *version)
            .max()
    }

    pub(crate) fn version(&self, name: &str, version: u32) -> Option<Arc<Registered>> {
        self.versions.get(&(name.to_owned(), version)).cloned()
    }
}

fn validate(spec: &StepSpec) -> Result<(), String> {
    let names = std::iter::once(&spec.name)
        .chain(spec.inputs.iter().map(|input| &input.name))
        .chain(&spec.outputs);
    for name in names {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(format!(
                "names must be 1 to {MAX_NAME_BYTES} bytes (MAX_NAME_BYTES); {name:?} is not"
            ));
        }
    }
    if spec.inputs.len() > MAX_STEP_ATTRIBUTES || spec.outputs.len() > MAX_STEP_ATTRIBUTES {
        return Err(format!(
            "{} inputs and {} outputs; the limit is {MAX_STEP_ATTRIBUTES} each (MAX_STEP_ATTRIBUTES)",
            spec.inputs.len(),
            spec.outputs.len()
        ));
    }
    if spec.outputs.is_empty() {
        return Err("it declares no outputs, so no goal could need it".to_owned());
    }
    for (index, input) in spec.inputs.iter().enumerate() {
        if spec.inputs[..index].iter().any(|i| i.name == input.name) {
            return Err(format!("input {:?} is declared twice", input.name));
        }
        if input.default.is_some() && !input.optional {
            return Err(format!(
                "input {:?} has a default but is required; make it optional",
                input.name
            ));
        }
        if spec.outputs.contains(&input.name) {
            return Err(format!(
                "{:?} is both an input and an output of the step",
                input.name
            ));
        }
    }
    for (index, output) in spec.outputs.iter().enumerate() {
        if spec.outputs[..index].contains(output) {
            return Err(format!("output {output:?} is declared twice"));
        }
    }
    if let Some(list) = &spec.map_over {
        if spec.input(list).is_none_or(|input| input.optional) {
            return Err(format!(
                "it maps over {list:?}, which must be one of its required inputs"
            ));
        }
    }
    if spec.parallelism == 0 {
        return Err("parallelism must be at least 1".to_owned());
    }
    if spec.retry.max_attempts == 0 || spec.retry.max_attempts > MAX_STEP_ATTEMPTS {
        return Err(format!(
            "max_attempts must be 1 to {MAX_STEP_ATTEMPTS} (MAX_STEP_ATTEMPTS), not {}",
            spec.retry.max_attempts
        ));
    }
    if spec.retry.initial_backoff_ms > spec.retry.max_backoff_ms {
        return Err("the initial backoff is longer than the longest backoff".to_owned());
    }
    if spec.timeout_ms == Some(0) {
        return Err("a timeout of 0 would fail every attempt".to_owned());
    }
    if let Some(predicate) = &spec.predicate {
        if let Some(unknown) = predicate
            .inputs()
            .into_iter()
            .find(|n| spec.input(n).is_none())
        {
            return Err(format!(
                "its predicate reads {unknown:?}, which is not one of its inputs"
            ));
        }
    }
    Ok(())
}
