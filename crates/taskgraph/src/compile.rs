//! Compilation: a nested flow becomes one DAG of atoms, checked before anything runs.
//!
//! Refused, with the atoms and names involved: duplicate atom names, a cycle, a link to a
//! child that does not exist, a required input (of `execute` or of `revert`) that nothing
//! provides and that is not an initial input, an input provided only by atoms that do not run
//! before its consumer, and two providers of one input that run in parallel (ambiguous).
//!
//! Compilation is deterministic: atoms get indices in declaration order, so a flow compiles
//! to the same graph in every process, and the log can name atoms by name.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::flow::{Decider, Flow, Node, Pattern};
use crate::retry::RetryAtom;
use crate::task::TaskAtom;

/// Why a flow cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// Two atoms share a name.
    #[error("two atoms are named {name:?}; atom names must be unique in a flow")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// The links form a cycle.
    #[error("the flow has a cycle through atoms {atoms:?}")]
    Cycle {
        /// Atoms on or behind the cycle.
        atoms: Vec<String>,
    },
    /// A link names a child that is not in the flow.
    #[error("flow {flow:?} links {from:?} -> {to:?}, but {missing:?} is not a child of it")]
    UnknownLinkTarget {
        /// The graph flow.
        flow: String,
        /// The link's source.
        from: String,
        /// The link's target.
        to: String,
        /// The name that is missing.
        missing: String,
    },
    /// Inputs that nothing provides.
    #[error("missing inputs (atom: name): {}", describe(missing))]
    MissingInputs {
        /// `(atom, input)` pairs, including inputs needed only by `revert`.
        missing: Vec<(String, String)>,
    },
    /// An input provided only by atoms that do not run before its consumer.
    #[error(
        "atom {atom:?} requires {input:?}, but its providers {providers:?} do not run before it"
    )]
    NotBefore {
        /// The consumer.
        atom: String,
        /// The input.
        input: String,
        /// Atoms that provide it.
        providers: Vec<String>,
    },
    /// Two providers that run in parallel (or in no fixed order) for one consumer.
    #[error("atom {atom:?} requires {input:?}, which {providers:?} all provide with no order between them; link or rebind to choose one")]
    Ambiguous {
        /// The consumer.
        atom: String,
        /// The input.
        input: String,
        /// The competing providers.
        providers: Vec<String>,
    },
}

fn describe(missing: &[(String, String)]) -> String {
    missing
        .iter()
        .map(|(atom, input)| format!("{atom}: {input}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where an input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The flow's initial inputs, under this name.
    Initial(String),
    /// Another atom's result, under this provided name.
    Atom {
        /// The providing atom.
        atom: usize,
        /// The provided name.
        name: String,
    },
}

/// A task or a retry.
#[derive(Debug, Clone)]
pub enum AtomKind {
    /// A task.
    Task(TaskAtom),
    /// A retry controller.
    Retry(RetryAtom),
}

/// One atom of the compiled graph.
#[derive(Clone)]
pub struct CompiledAtom {
    /// Its name.
    pub name: String,
    /// Task or retry.
    pub kind: AtomKind,
    /// Atoms that must finish first.
    pub preds: Vec<usize>,
    /// Atoms that wait for it.
    pub succs: Vec<usize>,
    /// Its nearest enclosing retry.
    pub retry: Option<usize>,
    /// For a retry: every atom it controls (nested retries and their scopes included).
    pub scope: Vec<usize>,
    /// Execute inputs: argument → source.
    pub inputs: Vec<(String, Source)>,
    /// Revert-only inputs: argument → source.
    pub revert_inputs: Vec<(String, Source)>,
    /// Deciders on incoming links: (source atom, decider).
    pub deciders: Vec<(usize, Decider)>,
}

impl std::fmt::Debug for CompiledAtom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledAtom")
            .field("name", &self.name)
            .field("preds", &self.preds)
            .field("succs", &self.succs)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl CompiledAtom {
    /// Whether this is a retry controller.
    #[must_use]
    pub fn is_retry(&self) -> bool {
        matches!(self.kind, AtomKind::Retry(_))
    }

    /// The names it provides.
    #[must_use]
    pub fn provides(&self) -> Vec<String> {
        match &self.kind {
            AtomKind::Task(task) => task.provides.names(),
            AtomKind::Retry(retry) => retry.provides.iter().cloned().collect(),
        }
    }
}

/// A compiled flow.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The flow's name.
    pub name: String,
    /// Atoms in declaration order.
    pub atoms: Vec<CompiledAtom>,
    /// Atom index by name.
    pub by_name: HashMap<String, usize>,
    /// A topological order.
    pub order: Vec<usize>,
}

struct Sub {
    atoms: Vec<usize>,
    entries: Vec<usize>,
    exits: Vec<usize>,
}

struct Builder {
    atoms: Vec<CompiledAtom>,
    by_name: HashMap<String, usize>,
}

impl Builder {
    fn push(
        &mut self,
        name: &str,
        kind: AtomKind,
        retry: Option<usize>,
    ) -> Result<usize, CompileError> {
        if self.by_name.contains_key(name) {
            return Err(CompileError::Duplicate {
                name: name.to_owned(),
            });
        }
        let index = self.atoms.len();
        self.atoms.push(CompiledAtom {
            name: name.to_owned(),
            kind,
            preds: Vec::new(),
            succs: Vec::new(),
            retry,
            scope: Vec::new(),
            inputs: Vec::new(),
            revert_inputs: Vec::new(),
            deciders: Vec::new(),
        });
        self.by_name.insert(name.to_owned(), index);
        Ok(index)
    }

    fn edge(&mut self, from: usize, to: usize, decider: Option<&Decider>) {
        if !self.atoms[from].succs.contains(&to) {
            self.atoms[from].succs.push(to);
            self.atoms[to].preds.push(from);
        }
        if let Some(decider) = decider {
            self.atoms[to].deciders.push((from, decider.clone()));
        }
    }

    /// Names provided by any atom of `atoms`.
    fn provided(&self, atoms: &[usize]) -> BTreeSet<String> {
        atoms
            .iter()
            .flat_map(|&a| self.atoms[a].provides())
            .collect()
    }

    /// Stored names required by atoms of `atoms` and not provided among them.
    fn required(&self, atoms: &[usize]) -> BTreeSet<String> {
        let provided = self.provided(atoms);
        atoms
            .iter()
            .flat_map(|&a| {
                lookups(&self.atoms[a].kind)
                    .into_iter()
                    .map(|(_, stored)| stored)
            })
            .filter(|name| !provided.contains(name))
            .collect()
    }

    fn compile(&mut self, flow: &Flow, parent_retry: Option<usize>) -> Result<Sub, CompileError> {
        let retry = match &flow.retry {
            Some(retry) => {
                Some(self.push(&retry.name, AtomKind::Retry(retry.clone()), parent_retry)?)
            }
            None => None,
        };
        let inner = retry.or(parent_retry);
        let mut children = Vec::with_capacity(flow.nodes.len());
        for node in &flow.nodes {
            children.push(match node {
                Node::Task(task) => {
                    let index = self.push(&task.name, AtomKind::Task(task.clone()), inner)?;
                    Sub {
                        atoms: vec![index],
                        entries: vec![index],
                        exits: vec![index],
                    }
                }
                Node::Flow(child) => self.compile(child, inner)?,
            });
        }
        // Sibling edges, by pattern: (from child, to child, decider).
        let mut links: Vec<(usize, usize, Option<Decider>)> = Vec::new();
        match flow.pattern {
            Pattern::Linear => {
                let non_empty: Vec<usize> = (0..children.len())
                    .filter(|&c| !children[c].atoms.is_empty())
                    .collect();
                links.extend(non_empty.windows(2).map(|pair| (pair[0], pair[1], None)));
            }
            Pattern::Unordered => {}
            Pattern::Graph => {
                let position = |name: &str| flow.nodes.iter().position(|n| n.name() == name);
                for link in &flow.links {
                    let missing = |missing: &str| CompileError::UnknownLinkTarget {
                        flow: flow.name.clone(),
                        from: link.from.clone(),
                        to: link.to.clone(),
                        missing: missing.to_owned(),
                    };
                    let from = position(&link.from).ok_or_else(|| missing(&link.from))?;
                    let to = position(&link.to).ok_or_else(|| missing(&link.to))?;
                    links.push((from, to, link.decider.clone()));
                }
                // Inferred links: a child that requires what another child provides runs after
                // it. Two providers of one name for one consumer are ambiguous unless an
                // explicit link picks one.
                let provides: Vec<BTreeSet<String>> =
                    children.iter().map(|c| self.provided(&c.atoms)).collect();
                for (consumer, child) in children.iter().enumerate() {
                    for name in self.required(&child.atoms) {
                        let providers: Vec<usize> = (0..children.len())
                            .filter(|&p| p != consumer && provides[p].contains(&name))
                            .collect();
                        let chosen: Vec<usize> = providers
                            .iter()
                            .copied()
                            .filter(|&p| links.iter().any(|(f, t, _)| *f == p && *t == consumer))
                            .collect();
                        match (providers.len(), chosen.len()) {
                            (0, _) => {}
                            (1, _) => links.push((providers[0], consumer, None)),
                            (_, 1) => {}
                            _ => {
                                return Err(CompileError::Ambiguous {
                                    atom: flow.nodes[consumer].name().to_owned(),
                                    input: name,
                                    providers: providers
                                        .iter()
                                        .map(|&p| flow.nodes[p].name().to_owned())
                                        .collect(),
                                })
                            }
                        }
                    }
                }
            }
        }
        let mut has_pred = vec![false; children.len()];
        let mut has_succ = vec![false; children.len()];
        for (from, to, decider) in &links {
            has_succ[*from] = true;
            has_pred[*to] = true;
            let (exits, entries) = (children[*from].exits.clone(), children[*to].entries.clone());
            for &exit in &exits {
                for &entry in &entries {
                    self.edge(exit, entry, decider.as_ref());
                }
            }
        }
        let mut atoms: Vec<usize> = children
            .iter()
            .flat_map(|c| c.atoms.iter().copied())
            .collect();
        let mut entries: Vec<usize> = (0..children.len())
            .filter(|&c| !has_pred[c])
            .flat_map(|c| children[c].entries.iter().copied())
            .collect();
        let mut exits: Vec<usize> = (0..children.len())
            .filter(|&c| !has_succ[c])
            .flat_map(|c| children[c].exits.iter().copied())
            .collect();
        if let Some(retry) = retry {
            for &entry in &entries {
                self.edge(retry, entry, None);
            }
            self.atoms[retry].scope.clone_from(&atoms);
            if exits.is_empty() {
                exits = vec![retry];
            }
            entries = vec![retry];
            atoms.insert(0, retry);
        }
        Ok(Sub {
            atoms,
            entries,
            exits,
        })
    }
}

/// `(argument, stored name)` for every input an atom's execute and revert read.
fn lookups(kind: &AtomKind) -> Vec<(String, String)> {
    match kind {
        AtomKind::Task(task) => task.lookups(true),
        AtomKind::Retry(retry) => retry.lookups(),
    }
}

/// Compiles `flow`, resolving every input against earlier atoms and the names in `initial`.
pub fn compile(flow: &Flow, initial: &BTreeSet<String>) -> Result<Graph, CompileError> {
    let mut builder = Builder {
        atoms: Vec::new(),
        by_name: HashMap::new(),
    };
    builder.compile(flow, None)?;
    let order = topological_order(&builder.atoms)?;
    let ancestors = ancestor_sets(&builder.atoms, &order);
    let mut providers: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, atom) in builder.atoms.iter().enumerate() {
        for name in atom.provides() {
            providers.entry(name).or_default().push(index);
        }
    }
    let mut missing = Vec::new();
    for index in 0..builder.atoms.len() {
        let (execute, revert_only) = match &builder.atoms[index].kind {
            AtomKind::Task(task) => {
                let execute = task.lookups(false);
                let all = task.lookups(true);
                let revert_only: Vec<_> =
                    all.into_iter().filter(|l| !execute.contains(l)).collect();
                (execute, revert_only)
            }
            AtomKind::Retry(retry) => (retry.lookups(), Vec::new()),
        };
        let mut resolve =
            |lookups: Vec<(String, String)>| -> Result<Vec<(String, Source)>, CompileError> {
                let mut resolved = Vec::new();
                for (argument, stored) in lookups {
                    let atom = &builder.atoms[index];
                    let candidates: Vec<usize> = providers
                        .get(&stored)
                        .map(|p| p.iter().copied().filter(|&p| p != index).collect())
                        .unwrap_or_default();
                    let visible: Vec<usize> = candidates
                        .iter()
                        .copied()
                        .filter(|&p| ancestors[index].contains(&p))
                        .collect();
                    let nearest = visible
                        .iter()
                        .copied()
                        .find(|&p| visible.iter().all(|&q| q == p || ancestors[p].contains(&q)));
                    let source = match (visible.len(), nearest) {
                        (0, _) if initial.contains(&stored) => Source::Initial(stored.clone()),
                        (0, _) if !candidates.is_empty() => {
                            return Err(CompileError::NotBefore {
                                atom: atom.name.clone(),
                                input: stored,
                                providers: candidates
                                    .iter()
                                    .map(|&p| builder.atoms[p].name.clone())
                                    .collect(),
                            })
                        }
                        (0, _) => {
                            missing.push((atom.name.clone(), stored.clone()));
                            continue;
                        }
                        (_, Some(nearest)) => Source::Atom {
                            atom: nearest,
                            name: stored.clone(),
                        },
                        (_, None) => {
                            return Err(CompileError::Ambiguous {
                                atom: atom.name.clone(),
                                input: stored,
                                providers: visible
                                    .iter()
                                    .map(|&p| builder.atoms[p].name.clone())
                                    .collect(),
                            })
                        }
                    };
                    resolved.push((argument, source));
                }
                Ok(resolved)
            };
        let inputs = resolve(execute)?;
        let revert_inputs = resolve(revert_only)?;
        builder.atoms[index].inputs = inputs;
        builder.atoms[index].revert_inputs = revert_inputs;
    }
    if !missing.is_empty() {
        return Err(CompileError::MissingInputs { missing });
    }
    Ok(Graph {
        name: flow.name.clone(),
        atoms: builder.atoms,
        by_name: builder.by_name,
        order,
    })
}

fn topological_order(atoms: &[CompiledAtom]) -> Result<Vec<usize>, CompileError> {
    let mut waiting: Vec<usize> = atoms.iter().map(|a| a.preds.len()).collect();
    let mut ready: Vec<usize> = (0..atoms.len())
        .rev()
        .filter(|&a| waiting[a] == 0)
        .collect();
    let mut order = Vec::with_capacity(atoms.len());
    while let Some(atom) = ready.pop() {
        order.push(atom);
        for &succ in atoms[atom].succs.iter().rev() {
            waiting[succ] -= 1;
            if waiting[succ] == 0 {
                ready.push(succ);
            }
        }
    }
    if order.len() < atoms.len() {
        let stuck = (0..atoms.len())
            .filter(|&a| waiting[a] > 0)
            .map(|a| atoms[a].name.clone())
            .collect();
        return Err(CompileError::Cycle { atoms: stuck });
    }
    Ok(order)
}

/// For each atom, the set of atoms that run before it.
fn ancestor_sets(atoms: &[CompiledAtom], order: &[usize]) -> Vec<BTreeSet<usize>> {
    let mut ancestors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); atoms.len()];
    for &atom in order {
        let mut mine = BTreeSet::new();
        for &pred in &atoms[atom].preds {
            mine.insert(pred);
            mine.extend(ancestors[pred].iter().copied());
        }
        ancestors[atom] = mine;
    }
    ancestors
}
