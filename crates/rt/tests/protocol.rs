//! The await-rt protocol, ported from await-rt's `tests/Test.php` and await-generator's
//! `AwaitTest.php`: a queue of deferred calls is flushed in *rounds* (each round runs every
//! call queued so far, then lets the runtime poll what they woke), and each case asserts how
//! many rounds a task needs, as those suites do.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use common::*;
use flowstate_rt::{current_task, pair, spawn, ProtocolError, Runtime, SettleError, TaskFailure};

#[test]
fn bare_task_completes_inside_run_in_zero_rounds() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let task = rt.run(async { 7 });
    assert!(task.is_finished(), "finished inside run");
    assert_eq!(later.flush(&rt), 0);
    assert_eq!(outcome(&task), Ok(7));
}

#[test]
fn ok_sync_resumes_without_a_round() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let task = rt.run(ok_sync(1234));
    assert!(task.is_finished());
    assert_eq!(later.flush(&rt), 0);
    assert_eq!(outcome(&task), Ok(Ok(1234)));
}

#[test]
fn err_sync_is_the_original_error_at_the_await() {
    let rt = Runtime::new();
    let task = rt.run(err_sync("declined"));
    assert!(task.is_finished());
    assert_eq!(outcome(&task), Ok(Err(Oops("declined"))), "not wrapped");
}

#[test]
fn ok_async_finishes_after_exactly_one_round() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let task = rt.run(ok_async(later.clone(), 5));
    assert!(!task.is_finished(), "pending after run");
    assert_eq!(later.flush(&rt), 1);
    assert_eq!(outcome(&task), Ok(Ok(5)));
}

#[test]
fn err_async_fails_after_exactly_one_round() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let task = rt.run(err_async(later.clone(), "late"));
    assert!(!task.is_finished());
    assert_eq!(later.flush(&rt), 1);
    assert_eq!(outcome(&task), Ok(Err(Oops("late"))));
}

#[test]
fn later_then_later_takes_two_rounds_and_keeps_order() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let l = later.clone();
    let task = rt.run(async move {
        let a = ok_async(l.clone(), 1).await?;
        let b = ok_async(l, 2).await?;
        Ok::<_, Oops>(vec![a, b])
    });
    assert_eq!(later.flush(&rt), 2);
    assert_eq!(outcome(&task), Ok(Ok(vec![1, 2])));
}

#[test]
fn immediate_then_later_and_later_then_immediate_take_one_round() {
    for immediate_first in [true, false] {
        let rt = Runtime::new();
        let later = Deferred::default();
        let l = later.clone();
        let task = rt.run(async move {
            if immediate_first {
                Ok::<_, Oops>(vec![ok_sync(1).await?, ok_async(l, 2).await?])
            } else {
                Ok(vec![ok_async(l, 1).await?, ok_sync(2).await?])
            }
        });
        assert_eq!(later.flush(&rt), 1, "immediate first: {immediate_first}");
        assert_eq!(outcome(&task), Ok(Ok(vec![1, 2])));
    }
}

#[test]
fn resolving_with_no_value_gives_the_unit_value() {
    let rt = Runtime::new();
    let task = rt.run(async {
        let (resolver, once) = pair::<(), Oops>();
        resolver.resolve(()).expect("resolve");
        once.await
    });
    assert_eq!(outcome(&task), Ok(Ok(())));
}

#[test]
fn identity_is_stable_within_a_task_and_differs_between_tasks() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let seen = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..2 {
        let (seen, l) = (seen.clone(), later.clone());
        let _task = rt.run(async move {
            let before = current_task();
            let (resolver, once) = pair::<u32, Oops>();
            // Allowed in every state: here while scheduling.
            let scheduling = current_task();
            l.later(move || resolver.resolve(1).expect("resolve"));
            let _ = once.await;
            seen.borrow_mut().push((before, scheduling, current_task()));
        });
    }
    later.flush(&rt);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 2);
    for (before, scheduling, after) in seen.iter() {
        assert!(before.is_some());
        assert_eq!(before, scheduling);
        assert_eq!(before, after);
    }
    assert_ne!(seen[0].0, seen[1].0);
    assert_eq!(current_task(), None, "no task outside the runtime");
}

#[test]
fn awaiting_a_pair_of_another_task_fails_the_awaiting_task() {
    let rt = Runtime::new();
    let stash = Rc::new(RefCell::new(None));
    let s = stash.clone();
    let _creator = rt.run(async move {
        let (resolver, once) = pair::<u32, Oops>();
        *s.borrow_mut() = Some((resolver, once));
        // Never awaits: this task fails for returning with its pair outstanding.
    });
    let (_resolver, once) = stash.borrow_mut().take().expect("stashed");
    let thief = rt.run(once);
    assert!(matches!(
        outcome(&thief),
        Err(TaskFailure::Protocol(ProtocolError::ForeignPair { .. }))
    ));
}

#[test]
fn a_second_resolve_while_scheduling_is_an_error_naming_the_first() {
    let rt = Runtime::new();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let e = errors.clone();
    let task = rt.run(async move {
        let (resolver, once) = pair::<u32, Oops>();
        resolver.resolve(1).expect("first");
        e.borrow_mut().push(resolver.resolve(2));
        once.await
    });
    assert_eq!(outcome(&task), Ok(Ok(1)), "the first value stands");
    let errors = errors.borrow();
    match &errors[0] {
        Err(SettleError::AlreadySettled { first }) => {
            assert_eq!(first.file(), file!(), "the first call's location");
        }
        other => panic!("expected AlreadySettled, got {other:?}"),
    }
}

#[test]
fn a_reject_after_a_resolve_of_the_same_pair_is_an_error() {
    let rt = Runtime::new();
    let refused = Rc::new(Cell::new(false));
    let r = refused.clone();
    let task = rt.run(async move {
        let (resolver, mut once) = pair::<u32, Oops>();
        resolver.resolve(1).expect("resolve");
        // Settled, then asking for the rejecter is legal (ready/single → ready/double)...
        let rejecter = once.rejecter();
        // ...but rejecting is not.
        r.set(matches!(
            rejecter.reject(Oops("x")),
            Err(SettleError::AlreadySettled { .. })
        ));
        once.await
    });
    assert!(refused.get());
    assert_eq!(
        outcome(&task),
        Ok(Ok(1)),
        "settled, then rejecter: still the value"
    );
}

#[test]
fn a_stale_resolve_after_the_task_resumed_errors_and_leaves_the_task_alone() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let stale = Rc::new(RefCell::new(None));
    let (l, s) = (later.clone(), stale.clone());
    let task = rt.run(async move {
        let (resolver, once) = pair::<u32, Oops>();
        let again = resolver.clone();
        l.later(move || resolver.resolve(1).expect("resolve"));
        let value = once.await;
        let (r2, once2) = pair::<u32, Oops>();
        let s2 = s.clone();
        l.later(move || {
            *s2.borrow_mut() = Some(again.resolve(99));
            r2.resolve(2).expect("second pair");
        });
        Ok::<_, Oops>((value?, once2.await?))
    });
    assert_eq!(later.flush(&rt), 2);
    assert_eq!(outcome(&task), Ok(Ok((1, 2))));
    assert!(matches!(
        stale.borrow_mut().take(),
        Some(Err(SettleError::AlreadyResumed { .. }))
    ));
}

#[test]
fn taking_the_rejecter_twice_fails_the_task() {
    let rt = Runtime::new();
    let task = rt.run(async {
        let (_resolver, mut once) = pair::<u32, Oops>();
        let _first = once.rejecter();
        let _second = once.rejecter();
        once.await
    });
    assert!(matches!(
        outcome(&task),
        Err(TaskFailure::Protocol(ProtocolError::Repeated { .. }))
    ));
}

#[test]
fn a_second_pair_while_one_is_outstanding_fails_the_task() {
    let rt = Runtime::new();
    let task = rt.run(async {
        let (_r1, _once1) = pair::<u32, Oops>();
        let (_r2, once2) = pair::<u32, Oops>();
        once2.await
    });
    match outcome(&task) {
        Err(TaskFailure::Protocol(ProtocolError::PairOutstanding { at, outstanding })) => {
            assert!(at.line() > outstanding.line(), "names both places");
        }
        other => panic!("expected PairOutstanding, got {other:?}"),
    }
}

#[test]
fn returning_while_a_pair_is_outstanding_fails_the_task() {
    let rt = Runtime::new();
    let task = rt.run(async {
        let (resolver, once) = pair::<u32, Oops>();
        drop((resolver, once));
        5
    });
    assert!(matches!(
        outcome(&task),
        Err(TaskFailure::Protocol(
            ProtocolError::ReturnedWithOutstandingPair { .. }
        ))
    ));
}

#[test]
fn awaiting_a_pair_again_after_it_resumed_fails_the_task() {
    let rt = Runtime::new();
    let task = rt.run(async {
        let (resolver, mut once) = pair::<u32, Oops>();
        resolver.resolve(1).expect("resolve");
        let first = (&mut once).await;
        let second = (&mut once).await;
        (first, second)
    });
    assert!(matches!(
        outcome(&task),
        Err(TaskFailure::Protocol(ProtocolError::AwaitedTwice { .. }))
    ));
}

#[test]
fn an_uncaught_failure_reaches_whoever_drove_the_task() {
    // Synchronously: run's caller sees it at once. Later: after the round that caused it.
    let rt = Runtime::new();
    let later = Deferred::default();
    let sync = rt.run(async {
        let (_a, _b) = pair::<u32, Oops>();
        let (_c, _d) = pair::<u32, Oops>();
    });
    assert!(matches!(outcome(&sync), Err(TaskFailure::Protocol(_))));
    let l = later.clone();
    let asynchronous = rt.run(async move {
        let _ = ok_async(l, 1).await;
        panic!("after the await");
    });
    assert!(!asynchronous.is_finished());
    later.flush(&rt);
    assert_eq!(
        outcome(&asynchronous),
        Err(TaskFailure::Panicked {
            message: "after the await".into()
        })
    );
}

#[test]
fn a_dropped_resolver_fails_the_waiting_task_instead_of_leaving_it_pending() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let l = later.clone();
    let task = rt.run(async move {
        let (resolver, once) = pair::<u32, Oops>();
        l.later(move || drop(resolver));
        once.await
    });
    assert!(!task.is_finished());
    assert_eq!(later.flush(&rt), 1);
    assert!(matches!(
        outcome(&task),
        Err(TaskFailure::Protocol(ProtocolError::Abandoned { .. }))
    ));
    assert_eq!(rt.live_tasks(), 0);
}

#[test]
fn a_resolve_for_a_task_that_is_gone_is_refused() {
    let rt = Runtime::new();
    let stash = Rc::new(RefCell::new(None));
    let s = stash.clone();
    let task = rt.run(async move {
        let (resolver, once) = pair::<u32, Oops>();
        *s.borrow_mut() = Some(resolver.clone());
        once.await
    });
    task.abort();
    assert_eq!(outcome(&task), Err(TaskFailure::Aborted));
    let resolver = stash.borrow_mut().take().expect("stashed");
    assert_eq!(resolver.resolve(1), Err(SettleError::TaskGone));
}

#[test]
fn spawned_children_run_at_once_and_can_be_joined() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let l = later.clone();
    let task = rt.run(async move {
        let quick = spawn(async { 1 });
        assert!(
            quick.is_finished(),
            "a child that never suspends finished in spawn"
        );
        let slow = spawn(ok_async(l, 2));
        assert!(!slow.is_finished());
        let slow = slow.join().await;
        (quick.join().await, slow)
    });
    assert_eq!(later.flush(&rt), 1);
    assert_eq!(outcome(&task), Ok((Ok(1), Ok(Ok(2)))));
}
