//! How `ctx.all` and `ctx.race` settle: their branches are named and prepared, run as tasks
//! of their own, and the decision (which branch decided the combinator) is recorded live or
//! followed when replayed.
//!
//! **What it owns:** the settling of the combinators behind [`Ctx::all`] and [`Ctx::race`]
//! (the public methods live in `ctx.rs`).
//!
//! **What it must never do:** be reachable by user code other than through those two
//! methods, race again what the journal records as decided, or touch the store other than
//! through the activation.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use flowstate_core::{Call, Diagnostic, Failure, JournalEntry};

use crate::activation::{halted, Counted, Stop, Stopped};
use crate::branch::{At, Branch, Busy, Replayed};
use crate::ctx::Ctx;

impl Ctx {
    /// How the journal says this branch's next combinator settled (its `settled` entry's
    /// position and decision), or `None` with the busy guard when it is to settle live.
    /// `Err(Stopped)` when the run must stop.
    #[allow(clippy::type_complexity)]
    pub(crate) fn decision(
        &self,
        combinator: &'static str,
        at: &At,
    ) -> Result<(Option<(u32, Option<u32>)>, Option<Busy>), Stopped> {
        match self
            .act
            .replay(&self.branch, Call::Settled { combinator }, at)?
        {
            Replayed::Recorded {
                position,
                entry: JournalEntry::Settled { branch, .. },
            } => Ok((Some((position, branch)), None)),
            replayed => Ok((None, replayed.into_busy())),
        }
    }

    /// Names the next combinator of this branch and prepares its branches (their code is
    /// called, nothing runs yet). `None` for no branches.
    pub(crate) fn start_branches<T, F, Fut>(
        &self,
        branches: impl IntoIterator<Item = F>,
    ) -> Option<(u32, Vec<Pending<T>>)>
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = Result<T, Failure>> + 'static,
        T: 'static,
    {
        let codes: Vec<F> = branches.into_iter().collect();
        if codes.is_empty() {
            // Nothing to run and nothing journaled: it takes no index either, so that adding
            // a combinator that is empty here does not rename later branches.
            return None;
        }
        let index = self.branch.combinators.get();
        self.branch.combinators.set(index + 1);
        let pending: Vec<Pending<T>> = codes
            .into_iter()
            .enumerate()
            .map(|(number, code)| {
                let path = if self.branch.path.is_empty() {
                    format!("{index}.{number}")
                } else {
                    format!("{}/{index}.{number}", self.branch.path)
                };
                let lane = self
                    .act
                    .lanes
                    .borrow_mut()
                    .remove(&path)
                    .unwrap_or_default();
                let branch = Rc::new(Branch::new(path, lane));
                let ctx = Ctx {
                    act: self.act.clone(),
                    branch: branch.clone(),
                };
                let future: Pin<Box<dyn Future<Output = Result<T, Failure>>>> = Box::pin(code(ctx));
                Pending { branch, future }
            })
            .collect();
        Some((index, pending))
    }

    /// Runs one prepared branch as a task of its own (a future for `flowstate_rt`'s
    /// combinators), checking when it returns that it replayed all it had recorded.
    fn run_branch<T: 'static>(
        &self,
        pending: Pending<T>,
    ) -> impl Future<Output = Result<T, Failure>> + 'static {
        let act = self.act.clone();
        let Pending { branch, future } = pending;
        let counted = Counted {
            inner: future,
            act: act.clone(),
        };
        async move {
            let _entered = act.enter(&branch);
            branch.task.set(flowstate_rt::current_task());
            let outcome = counted.await;
            if let Err(diagnostic) = branch.check_end(
                &act.journal,
                "returned",
                &format!("the end of branch {}", branch.path),
            ) {
                act.stop_with(Stop::Diverged(diagnostic));
                return halted().await;
            }
            outcome
        }
    }

    /// Settles `ctx.all` #`index` over `branches`: live, or as `decided` (the recorded
    /// `settled` entry's position and the branch whose error ended it, if one did). `None`
    /// when the run must stop.
    pub(crate) async fn settle_all<T: 'static>(
        &self,
        index: u32,
        branches: Vec<Pending<T>>,
        decided: Option<(u32, Option<u32>)>,
        at: &At,
    ) -> Option<Result<Vec<T>, Failure>> {
        let failed = match decided {
            Some((position, Some(failed))) => {
                return self
                    .replay_failed_all(index, branches, position, failed, at)
                    .await;
            }
            other => other,
        };
        if failed.is_some() {
            // Recorded as all succeeding: every branch finished.
            for pending in &branches {
                pending.branch.closed.set(true);
            }
        }
        let inputs: Vec<_> = branches
            .into_iter()
            .enumerate()
            .map(|(number, pending)| {
                let run = self.run_branch(pending);
                let number = u32::try_from(number).unwrap_or(u32::MAX);
                (number, async move { run.await.map_err(|e| (number, e)) })
            })
            .collect();
        let outcome = flowstate_rt::all(inputs).await;
        if let Some((position, _)) = failed {
            // Recorded as all succeeding.
            return match outcome {
                Ok(values) => Some(Ok(values.into_iter().map(|(_, v)| v).collect())),
                Err((number, _)) => self.diverged(
                    position,
                    "all over branches, every branch succeeding",
                    &format!("branch {number} of ctx.all #{index} failed"),
                    at,
                ),
            };
        }
        let decision = match &outcome {
            Ok(_) => None,
            Err((number, _)) => Some(*number),
        };
        self.record_settled("all", decision).await.ok()?;
        Some(
            outcome
                .map(|values| values.into_iter().map(|(_, v)| v).collect())
                .map_err(|(_, failure)| failure),
        )
    }

    /// Replaying a failure of `ctx.all` #`index` (recorded at `position`): only the branch
    /// that failed runs again (the others' values were never used).
    async fn replay_failed_all<T: 'static>(
        &self,
        index: u32,
        branches: Vec<Pending<T>>,
        position: u32,
        failed: u32,
        at: &At,
    ) -> Option<Result<Vec<T>, Failure>> {
        let count = branches.len();
        self.skip_all_but(&branches, failed);
        let Some(pending) = branches.into_iter().nth(failed as usize) else {
            return self.diverged(
                position,
                &format!("all over branches decided by branch {failed}'s error"),
                &format!("ran ctx.all #{index} over {count} branches"),
                at,
            );
        };
        let run = self.run_branch(pending);
        match flowstate_rt::race(vec![(failed, run)]).await {
            Ok((_, Err(failure))) => Some(Err(failure)),
            _ => self.diverged(
                position,
                &format!("all over branches ended by branch {failed}'s error"),
                &format!("branch {failed} of ctx.all #{index} succeeded"),
                at,
            ),
        }
    }

    /// Settles `ctx.race` #`index` over `branches`: live, or as `decided` (the recorded
    /// `settled` entry's position and its winner). `None` when the run must stop.
    pub(crate) async fn settle_race<T: 'static>(
        &self,
        index: u32,
        branches: Vec<Pending<T>>,
        decided: Option<(u32, Option<u32>)>,
        at: &At,
    ) -> Option<(usize, Result<T, Failure>)> {
        let count = branches.len();
        let inputs: Vec<_> = match decided {
            // Replaying: the recorded winner alone runs again.
            Some((position, winner)) => {
                self.skip_all_but(&branches, winner.unwrap_or(u32::MAX));
                let pending = winner.and_then(|w| branches.into_iter().nth(w as usize));
                let (Some(winner), Some(pending)) = (winner, pending) else {
                    return self.diverged(
                        position,
                        &format!("race over branches won by branch {winner:?}"),
                        &format!("raced {count} branches in ctx.race #{index}"),
                        at,
                    );
                };
                vec![(winner, self.run_branch(pending))]
            }
            None => branches
                .into_iter()
                .enumerate()
                .map(|(number, pending)| {
                    (
                        u32::try_from(number).unwrap_or(u32::MAX),
                        self.run_branch(pending),
                    )
                })
                .collect(),
        };
        let (winner, outcome) = flowstate_rt::race(inputs).await.ok()?;
        if decided.is_none() {
            self.record_settled("race", Some(winner)).await.ok()?;
        }
        Some((winner as usize, outcome))
    }

    /// Under a recorded decision: the branch `chosen` runs again, closed (the journal records
    /// it as finished); the lanes of the others (and of branches nested in them) are skipped.
    fn skip_all_but<T>(&self, branches: &[Pending<T>], chosen: u32) {
        for (number, pending) in branches.iter().enumerate() {
            if u32::try_from(number).ok() == Some(chosen) {
                pending.branch.closed.set(true);
            } else {
                self.act.skip_lanes(&pending.branch.path);
            }
        }
    }

    /// Records how a combinator of this branch settled.
    async fn record_settled(&self, combinator: &str, branch: Option<u32>) -> Result<(), Stopped> {
        let entry = JournalEntry::Settled {
            combinator: combinator.to_owned(),
            branch,
        };
        self.act.record_entry(&self.branch, entry).await.map(drop)
    }

    fn diverged<T>(&self, position: u32, logged: &str, attempted: &str, at: &At) -> Option<T> {
        self.act.stop_with(Stop::Diverged(Diagnostic {
            position,
            logged: logged.to_owned(),
            attempted: attempted.to_owned(),
            location: at.to_string(),
        }));
        None
    }
}

/// A branch whose code was called, not run yet.
pub(crate) struct Pending<T> {
    branch: Rc<Branch>,
    future: Pin<Box<dyn Future<Output = Result<T, Failure>>>>,
}
