//! `all` and `race`: library code on the runtime, as in await-generator. Each input runs as
//! a task of its own (so each keeps the one-pair-at-a-time rule), and the combinator awaits
//! their completions through completion pairs like any task.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use crate::error::TaskFailure;
use crate::executor::{spawn, violate, TaskHandle};
use crate::pair::{pair, Resolver};

/// Why a race could not be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaceError {
    /// There was nothing to race.
    #[error("cannot race an empty list")]
    Empty,
}

/// Completions in the order they happened, and the resolver of the combinator's current
/// wait, if it is waiting.
#[derive(Default)]
struct Finishes {
    order: Vec<usize>,
    waiting: Option<Resolver<()>>,
}

fn watch<O: 'static>(index: usize, handle: &TaskHandle<O>, finishes: &Rc<RefCell<Finishes>>) {
    let finishes = finishes.clone();
    handle.on_complete(move || {
        let waiting = {
            let mut finishes = finishes.borrow_mut();
            finishes.order.push(index);
            finishes.waiting.take()
        };
        if let Some(resolver) = waiting {
            // The combinator's task may have been aborted meanwhile: then nobody waits.
            let _ = resolver.resolve(());
        }
    });
}

/// The inputs' tasks, aborted when the combinator ends in any way (returns, fails, or is
/// itself aborted: a race it lost), so that no input outlives it and every cleanup runs.
struct Inputs<O: 'static>(Vec<TaskHandle<O>>);

impl<O: 'static> Drop for Inputs<O> {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// Waits until another input finished.
async fn next_finish(finishes: &Rc<RefCell<Finishes>>, seen: usize) {
    if finishes.borrow().order.len() > seen {
        return;
    }
    let (resolver, once) = pair::<(), std::convert::Infallible>();
    finishes.borrow_mut().waiting = Some(resolver);
    let _ = once.await;
}

/// Re-raises a child's failure in the task that awaited it.
fn raise(failure: TaskFailure) -> ! {
    match failure {
        TaskFailure::Protocol(error) => violate(error),
        TaskFailure::Panicked { message } => std::panic::resume_unwind(Box::new(message)),
        other => std::panic::resume_unwind(Box::new(other.to_string())),
    }
}

/// Runs every input; returns their values with their keys, in the inputs' order, or the
/// first error in the order the inputs failed, as soon as it happens (the inputs still
/// running are aborted, and their cleanup runs). `all` of nothing is an empty list, at once.
pub async fn all<K, T, E, F>(inputs: Vec<(K, F)>) -> Result<Vec<(K, T)>, E>
where
    F: Future<Output = Result<T, E>> + 'static,
    K: 'static,
    T: 'static,
    E: 'static,
{
    let finishes = Rc::new(RefCell::new(Finishes::default()));
    let mut keys = Vec::with_capacity(inputs.len());
    let mut handles = Inputs(Vec::with_capacity(inputs.len()));
    for (index, (key, input)) in inputs.into_iter().enumerate() {
        keys.push(key);
        let handle = spawn(input);
        watch(index, &handle, &finishes);
        handles.0.push(handle);
    }
    let handles = handles;
    let mut values: Vec<Option<T>> = (0..handles.0.len()).map(|_| None).collect();
    let mut seen = 0;
    loop {
        let order = finishes.borrow().order.clone();
        for &index in &order[seen..] {
            match handles.0[index].take_outcome() {
                Some(Ok(Ok(value))) => values[index] = Some(value),
                // Returning drops `handles`, which aborts the inputs still running.
                Some(Ok(Err(error))) => return Err(error),
                Some(Err(failure)) => {
                    drop(handles);
                    raise(failure);
                }
                None => {}
            }
        }
        seen = order.len();
        if seen == handles.0.len() {
            return Ok(keys.into_iter().zip(values.into_iter().flatten()).collect());
        }
        next_finish(&finishes, seen).await;
    }
}

/// Runs the inputs one after another until one finishes: each starts only after the one
/// before it suspended, so an input that finishes at once means the later ones never start.
/// Returns the first to finish, with its key; the others are aborted (their cleanup runs).
pub async fn race<K, F>(inputs: Vec<(K, F)>) -> Result<(K, F::Output), RaceError>
where
    F: Future + 'static,
    F::Output: 'static,
    K: 'static,
{
    if inputs.is_empty() {
        return Err(RaceError::Empty);
    }
    let finishes = Rc::new(RefCell::new(Finishes::default()));
    let mut keys = Vec::with_capacity(inputs.len());
    let mut handles = Inputs(Vec::with_capacity(inputs.len()));
    for (index, (key, input)) in inputs.into_iter().enumerate() {
        keys.push(Some(key));
        let handle = spawn(input);
        watch(index, &handle, &finishes);
        handles.0.push(handle);
        if !finishes.borrow().order.is_empty() {
            break;
        }
    }
    next_finish(&finishes, 0).await;
    let winner = finishes.borrow().order[0];
    let outcome = handles.0[winner].take_outcome();
    // The losers are aborted (and cleaned up) before the winner's outcome is used.
    drop(handles);
    let key = keys[winner].take();
    match (key, outcome) {
        (Some(key), Some(Ok(value))) => Ok((key, value)),
        (_, Some(Err(failure))) => raise(failure),
        _ => raise(TaskFailure::Aborted),
    }
}
