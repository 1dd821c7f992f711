//! Patterns: linear, unordered and graph flows, nestable, with an optional retry each.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::retry::RetryAtom;
use crate::task::TaskAtom;

/// A predicate over the results of a link's source atoms (by atom name): `false` skips the
/// target and everything after it (IGNORE).
pub type Decider = Arc<dyn Fn(&BTreeMap<String, Value>) -> bool + Send + Sync>;

/// How a flow orders its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Each child after the previous one.
    Linear,
    /// No order: children may run in parallel and cannot feed each other.
    Unordered,
    /// Order from explicit links and from requires/provides.
    Graph,
}

/// A child of a flow.
#[derive(Debug, Clone)]
pub enum Node {
    /// A task.
    Task(TaskAtom),
    /// A nested flow.
    Flow(Flow),
}

impl Node {
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Task(task) => task.name(),
            Self::Flow(flow) => &flow.name,
        }
    }
}

impl From<TaskAtom> for Node {
    fn from(task: TaskAtom) -> Self {
        Self::Task(task)
    }
}

impl From<Flow> for Node {
    fn from(flow: Flow) -> Self {
        Self::Flow(flow)
    }
}

/// An explicit link in a graph flow.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) decider: Option<Decider>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("decider", &self.decider.is_some())
            .finish()
    }
}

/// A flow: a pattern over children, with an optional retry controlling them.
#[derive(Debug, Clone)]
pub struct Flow {
    pub(crate) name: String,
    pub(crate) pattern: Pattern,
    pub(crate) nodes: Vec<Node>,
    pub(crate) links: Vec<Link>,
    pub(crate) retry: Option<RetryAtom>,
}

impl Flow {
    fn new(name: impl Into<String>, pattern: Pattern) -> Self {
        Self {
            name: name.into(),
            pattern,
            nodes: Vec::new(),
            links: Vec::new(),
            retry: None,
        }
    }

    /// A flow whose children run one after another, in the order added.
    pub fn linear(name: impl Into<String>) -> Self {
        Self::new(name, Pattern::Linear)
    }

    /// A flow whose children may run in any order, in parallel.
    pub fn unordered(name: impl Into<String>) -> Self {
        Self::new(name, Pattern::Unordered)
    }

    /// A flow ordered by explicit links and by what children require and provide.
    pub fn graph(name: impl Into<String>) -> Self {
        Self::new(name, Pattern::Graph)
    }

    /// Adds a child. (Named after TaskFlow's `Flow.add`, which users know.)
    #[must_use]
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, node: impl Into<Node>) -> Self {
        self.nodes.push(node.into());
        self
    }

    /// Adds several children.
    #[must_use]
    pub fn add_all<N: Into<Node>>(mut self, nodes: impl IntoIterator<Item = N>) -> Self {
        self.nodes.extend(nodes.into_iter().map(Into::into));
        self
    }

    /// Graph flows: `to` runs after `from` (children by name).
    #[must_use]
    pub fn link(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.links.push(Link {
            from: from.into(),
            to: to.into(),
            decider: None,
        });
        self
    }

    /// Graph flows: `to` runs after `from`, and only if `decider` holds over the results of
    /// `from`'s atoms; otherwise `to` and everything after it is ignored.
    #[must_use]
    pub fn link_if<D>(mut self, from: impl Into<String>, to: impl Into<String>, decider: D) -> Self
    where
        D: Fn(&BTreeMap<String, Value>) -> bool + Send + Sync + 'static,
    {
        self.links.push(Link {
            from: from.into(),
            to: to.into(),
            decider: Some(Arc::new(decider)),
        });
        self
    }

    /// Puts the flow's children under a retry controller.
    #[must_use]
    pub fn retry(mut self, retry: RetryAtom) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The flow's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}
