//! `all`, `race`, the channel and the mutex: library code on completion pairs, ported from
//! await-generator's `AwaitTest` (all/race/safeRace), `ChannelTest` and `MutexTest`.

mod common;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use common::*;
use flowstate_rt::{all, race, Channel, Mutex, RaceError, Runtime};

type Input = Pin<Box<dyn Future<Output = Result<String, Oops>>>>;

fn later_value(later: &Deferred, value: &'static str) -> Input {
    let later = later.clone();
    Box::pin(async move {
        let (resolver, once) = flowstate_rt::pair::<String, Oops>();
        // A loser's task may be gone by then: its resolve is refused, and ignored.
        later.later(move || drop(resolver.resolve(value.to_owned())));
        once.await
    })
}

fn now_value(value: &'static str) -> Input {
    Box::pin(async move { Ok(value.to_owned()) })
}

fn later_error(later: &Deferred, error: &'static str) -> Input {
    let later = later.clone();
    Box::pin(async move {
        let (_resolver, mut once) = flowstate_rt::pair::<String, Oops>();
        let rejecter = once.rejecter();
        later.later(move || drop(rejecter.reject(Oops(error))));
        once.await
    })
}

fn now_error(error: &'static str) -> Input {
    Box::pin(async move { Err(Oops(error)) })
}

/// Waits forever; counts itself live while it waits (its cleanup runs when it is aborted).
fn forever(cleanup: &Cleanup) -> Input {
    let cleanup = cleanup.clone();
    Box::pin(async move {
        let _guard = cleanup.guard();
        let (_resolver, once) = flowstate_rt::pair::<String, Oops>();
        let kept = _resolver;
        let value = once.await;
        drop(kept);
        value
    })
}

#[test]
fn all_keeps_keys_and_finishes_after_the_flush() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let inputs = vec![
        ("a", later_value(&later, "b")),
        ("c", now_value("d")),
        ("e", later_value(&later, "")),
    ];
    let task = rt.run(all(inputs));
    assert!(!task.is_finished());
    assert_eq!(later.flush(&rt), 1);
    assert_eq!(
        outcome(&task),
        Ok(Ok(vec![
            ("a", "b".to_owned()),
            ("c", "d".to_owned()),
            ("e", String::new())
        ]))
    );
}

#[test]
fn all_of_nothing_is_empty_at_once() {
    let rt = Runtime::new();
    let task = rt.run(all(Vec::<(u8, Input)>::new()));
    assert_eq!(outcome(&task), Ok(Ok(Vec::new())));
}

#[test]
fn all_fails_fast_on_an_immediate_rejection_and_aborts_the_rest() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let cleanup = Cleanup::default();
    let inputs = vec![
        ("slow", later_value(&later, "v")),
        ("waits", forever(&cleanup)),
        ("bad", now_error("no")),
    ];
    let task = rt.run(all(inputs));
    assert!(task.is_finished(), "rejected before any flush");
    assert_eq!(outcome(&task), Ok(Err(Oops("no"))));
    assert_eq!(
        cleanup.live(),
        0,
        "the waiting input was aborted and cleaned up"
    );
    later.flush(&rt);
    assert_eq!(rt.live_tasks(), 0);
}

#[test]
fn all_reports_the_first_rejection_in_time() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let l = later.clone();
    // "second" rejects in round 2 (it waits one round first), "first" in round 1.
    let second: Input = Box::pin(async move {
        let (r, once) = flowstate_rt::pair::<(), Oops>();
        l.later(move || r.resolve(()).expect("resolve"));
        once.await?;
        later_error(&l, "second").await
    });
    let inputs = vec![("b", second), ("a", later_error(&later, "first"))];
    let task = rt.run(all(inputs));
    later.flush(&rt);
    assert_eq!(outcome(&task), Ok(Err(Oops("first"))));
}

#[test]
fn race_takes_an_immediate_winner_and_never_starts_the_rest() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let started = Rc::new(RefCell::new(Vec::new()));
    let mark = |name: &'static str, input: Input| -> Input {
        let started = started.clone();
        Box::pin(async move {
            started.borrow_mut().push(name);
            input.await
        })
    };
    let inputs = vec![
        ("a", mark("a", later_value(&later, "b"))),
        ("c", mark("c", now_value("d"))),
        ("e", mark("e", later_value(&later, "f"))),
    ];
    let task = rt.run(race(inputs));
    assert!(task.is_finished(), "won at once");
    assert_eq!(outcome(&task), Ok(Ok(("c", Ok("d".to_owned())))));
    assert_eq!(*started.borrow(), ["a", "c"], "e never started");
    // The loser's later resolve finds its task gone, and is ignored.
    assert_eq!(later.flush(&rt), 1);
    assert_eq!(rt.live_tasks(), 0);
}

#[test]
fn race_of_nothing_is_an_error() {
    let rt = Runtime::new();
    let task = rt.run(race(Vec::<(u8, Input)>::new()));
    assert_eq!(outcome(&task), Ok(Err(RaceError::Empty)));
}

#[test]
fn race_with_two_immediate_inputs_starts_only_the_first() {
    let rt = Runtime::new();
    let started = Rc::new(RefCell::new(0));
    let counting = |value: &'static str| -> Input {
        let started = started.clone();
        Box::pin(async move {
            *started.borrow_mut() += 1;
            Ok(value.to_owned())
        })
    };
    let task = rt.run(race(vec![("x", counting("1")), ("y", counting("2"))]));
    assert_eq!(outcome(&task), Ok(Ok(("x", Ok("1".to_owned())))));
    assert_eq!(*started.borrow(), 1);
}

#[test]
fn race_cancels_the_loser_and_its_cleanup_runs() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let cleanup = Cleanup::default();
    let inputs = vec![
        ("loser", forever(&cleanup)),
        ("winner", later_value(&later, "v")),
    ];
    let task = rt.run(race(inputs));
    assert_eq!(cleanup.live(), 1, "the loser is waiting");
    later.flush(&rt);
    assert_eq!(outcome(&task), Ok(Ok(("winner", Ok("v".to_owned())))));
    assert_eq!(cleanup.live(), 0, "the loser's cleanup ran");
}

#[test]
fn race_cleans_up_after_a_failing_winner_in_either_order() {
    for winner_first in [true, false] {
        for immediate in [true, false] {
            let rt = Runtime::new();
            let later = Deferred::default();
            let cleanup = Cleanup::default();
            let failing = if immediate {
                now_error("boom")
            } else {
                later_error(&later, "boom")
            };
            let mut inputs = vec![("waits", forever(&cleanup))];
            if winner_first {
                inputs.insert(0, ("fails", failing));
            } else {
                inputs.push(("fails", failing));
            }
            let task = rt.run(race(inputs));
            later.flush(&rt);
            assert_eq!(
                outcome(&task),
                Ok(Ok(("fails", Err(Oops("boom"))))),
                "the winner's error comes through"
            );
            assert_eq!(
                cleanup.live(),
                0,
                "first {winner_first} immediate {immediate}"
            );
        }
    }
}

#[test]
fn a_following_await_gets_its_own_value_after_a_race() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let l = later.clone();
    let task = rt.run(async move {
        let won = race(vec![("r0", now_value("r0")), ("r1", later_value(&l, "r1"))]).await;
        let own = later_value(&l, "r2").await;
        (won, own)
    });
    later.flush(&rt);
    let (won, own) = outcome(&task).expect("finished");
    assert_eq!(won, Ok(("r0", Ok("r0".to_owned()))));
    assert_eq!(own, Ok("r2".to_owned()));
}

/// await-generator's `ChannelTest`: eight tasks sleep until ticks 1 to 8, then send or
/// receive. After each tick the completed operations and the queues are as listed, and
/// values pair first in, first out.
fn channel_timeline(senders_first: bool) {
    let rt = Runtime::new();
    let clock = MockClock::default();
    let channel = Channel::<&'static str>::new();
    let received = Rc::new(RefCell::new(Vec::new()));
    let completed = Rc::new(RefCell::new(0));
    // Ticks 1, 2, 5, 6 send "a".."d" (or receive, when receivers go first); 3, 4, 7, 8 the
    // other side.
    let plan: [(u32, bool, &str); 8] = [
        (1, true, "a"),
        (2, true, "b"),
        (3, false, ""),
        (4, false, ""),
        (5, true, "c"),
        (6, true, "d"),
        (7, false, ""),
        (8, false, ""),
    ];
    let values = ["a", "b", "c", "d"];
    let mut next_value = 0;
    for (tick, sends, _) in plan {
        let sends = sends == senders_first;
        let value = if sends {
            next_value += 1;
            values[next_value - 1]
        } else {
            ""
        };
        let (clock, channel, received, completed) = (
            clock.clone(),
            channel.clone(),
            received.clone(),
            completed.clone(),
        );
        let _task = rt.run(async move {
            clock.sleep_until(tick).await;
            if sends {
                channel.send(value).await;
            } else {
                let value = channel.receive().await;
                received.borrow_mut().push(value);
            }
            *completed.borrow_mut() += 1;
        });
    }
    let expected_completed = [0, 0, 2, 4, 4, 4, 6, 8];
    let expected_waiting = [1, 2, 1, 0, 1, 2, 1, 0];
    for tick in 0..8 {
        clock.next_tick(&rt);
        let waiting = channel.senders_waiting() + channel.receivers_waiting();
        assert_eq!(
            *completed.borrow(),
            expected_completed[tick],
            "after tick {}",
            tick + 1
        );
        assert_eq!(waiting, expected_waiting[tick], "after tick {}", tick + 1);
    }
    // First in, first out, whichever side came first.
    assert_eq!(*received.borrow(), ["a", "b", "c", "d"]);
}

#[test]
fn channel_pairs_senders_first_in_first_out() {
    channel_timeline(true);
}

#[test]
fn channel_pairs_receivers_first_in_first_out() {
    channel_timeline(false);
}

#[test]
fn channel_try_send_try_receive_and_send_without_wait() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let channel = Channel::<u32>::new();
    assert_eq!(channel.try_send(1), Err(1), "no receiver");
    assert_eq!(channel.try_receive(), None, "no sender");
    let c = channel.clone();
    let receiver = rt.run(async move { c.receive().await });
    assert_eq!(channel.receivers_waiting(), 1);
    assert_eq!(channel.try_send(2), Ok(()));
    rt.run_until_stalled();
    assert_eq!(outcome(&receiver), Ok(2));
    let c = channel.clone();
    let sender = rt.run(async move {
        c.send_without_wait(3);
        "the sender went on"
    });
    assert_eq!(outcome(&sender), Ok("the sender went on"));
    assert_eq!(channel.try_receive(), Some(3));
    assert_eq!(later.flush(&rt), 0);
}

#[test]
fn a_receiver_that_lost_a_race_never_receives() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let channel = Channel::<&'static str>::new();
    let c = channel.clone();
    let l = later.clone();
    let task = rt.run(async move {
        let receive: Input = Box::pin(async move { Ok(c.receive().await.to_owned()) });
        race(vec![
            ("receive", receive),
            ("timeout", later_value(&l, "t")),
        ])
        .await
    });
    later.flush(&rt);
    assert_eq!(outcome(&task), Ok(Ok(("timeout", Ok("t".to_owned())))));
    assert_eq!(channel.receivers_waiting(), 0, "the loser left the queue");
    assert_eq!(channel.try_send("late"), Err("late"));
}

#[test]
fn mutex_runs_critical_sections_one_after_another_in_order() {
    let rt = Runtime::new();
    let clock = MockClock::default();
    let mutex = Rc::new(Mutex::new(Vec::new()));
    let events = Rc::new(RefCell::new(Vec::new()));
    assert!(mutex.is_idle());
    for (name, start) in [("first", 0u32), ("second", 1)] {
        let (clock, mutex, events) = (clock.clone(), mutex.clone(), events.clone());
        let _task = rt.run(async move {
            clock.sleep_until(start).await;
            events
                .borrow_mut()
                .push(format!("{name} waits at {}", clock.now()));
            let mut guard = mutex.lock().await;
            events
                .borrow_mut()
                .push(format!("{name} enters at {}", clock.now()));
            guard.push(name);
            clock.sleep_until(start + 2).await;
            events
                .borrow_mut()
                .push(format!("{name} leaves at {}", clock.now()));
        });
    }
    for _ in 0..4 {
        clock.next_tick(&rt);
    }
    assert_eq!(
        *events.borrow(),
        [
            "first waits at 1",
            "first enters at 1",
            "second waits at 1",
            "first leaves at 2",
            "second enters at 2",
            "second leaves at 3"
        ]
    );
    assert!(mutex.is_idle());
    let order = rt.run({
        let mutex = mutex.clone();
        async move { mutex.lock().await.clone() }
    });
    assert_eq!(outcome(&order), Ok(vec!["first", "second"]));
}

#[test]
fn a_failing_critical_section_still_releases_the_mutex() {
    let rt = Runtime::new();
    let mutex = Rc::new(Mutex::new(0));
    let m = mutex.clone();
    let failed = rt.run(async move {
        let _guard = m.lock().await;
        Err::<(), Oops>(Oops("inside"))
    });
    assert_eq!(outcome(&failed), Ok(Err(Oops("inside"))));
    assert!(mutex.is_idle());
    let m = mutex.clone();
    let panicked = rt.run(async move {
        let _guard = m.lock().await;
        panic!("inside the lock");
    });
    assert!(matches!(
        outcome(&panicked),
        Err(flowstate_rt::TaskFailure::Panicked { .. })
    ));
    assert!(mutex.is_idle(), "released when the task failed");
}

#[test]
fn an_aborted_combinator_aborts_its_inputs_and_their_cleanup_runs() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let cleanup = Cleanup::default();
    let l = later.clone();
    let c = cleanup.clone();
    let inner: Input = Box::pin(async move {
        all(vec![("waits", forever(&c)), ("slow", later_value(&l, "v"))])
            .await
            .map(|_| "all".to_owned())
    });
    let task = rt.run(race(vec![
        ("inner", inner),
        ("quick", later_value(&later, "q")),
    ]));
    assert_eq!(cleanup.live(), 1);
    later.flush(&rt);
    assert_eq!(outcome(&task), Ok(Ok(("quick", Ok("q".to_owned())))));
    assert_eq!(
        cleanup.live(),
        0,
        "the losing all's inputs were aborted too"
    );
    assert_eq!(rt.live_tasks(), 0);
}

#[test]
fn a_waiter_aborted_after_the_lock_was_handed_to_it_passes_it_on() {
    let rt = Runtime::new();
    let later = Deferred::default();
    let mutex = Rc::new(Mutex::new(0));
    let waiter_slot: Rc<RefCell<Option<flowstate_rt::TaskHandle<()>>>> = Rc::default();
    let (m, l, slot) = (mutex.clone(), later.clone(), waiter_slot.clone());
    let holder = rt.run(async move {
        let guard = m.lock().await;
        let (r, once) = flowstate_rt::pair::<(), Oops>();
        l.later(move || drop(r.resolve(())));
        let _ = once.await;
        // Releasing hands the lock to the waiter; it is aborted before it runs again.
        drop(guard);
        if let Some(waiter) = slot.borrow_mut().take() {
            waiter.abort();
        }
    });
    let m = mutex.clone();
    let waiter = rt.run(async move { *m.lock().await += 1 });
    *waiter_slot.borrow_mut() = Some(waiter);
    later.flush(&rt);
    assert!(holder.is_finished());
    assert!(
        mutex.is_idle(),
        "the lock was passed on, not left locked forever"
    );
    let m = mutex.clone();
    let next = rt.run(async move { *m.lock().await });
    assert_eq!(outcome(&next), Ok(0), "the aborted waiter never ran");
}
