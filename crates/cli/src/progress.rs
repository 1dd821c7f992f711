//! Progress bars for the long operations (reading and replaying a long log, an archive pass,
//! waiting for a flow to end), drawn on stderr with indicatif.
//!
//! A bar is drawn only for people: never with `--json`, never when stderr is not a terminal,
//! and it is cleared when the operation ends, so stdout, stderr's hints and every script see
//! exactly what they would without it. Short operations get none: a log is "long" from
//! [`MIN_EVENTS`] events on.

use std::io::IsTerminal;
use std::time::Duration;

use flowstate::core::{FlowRecord, FoldError, RawEvent, StopAt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Logs shorter than this are read and replayed without a bar.
pub(crate) const MIN_EVENTS: u64 = 10_000;

/// Events replayed between two updates of a replay bar.
const FOLD_TICK_EVENTS: u64 = 1_000;

/// How often a spinner turns.
const SPIN: Duration = Duration::from_millis(120);

/// Whether bars may be drawn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    enabled: bool,
}

impl Progress {
    /// Bars for people: not with `--json`, and only on a terminal.
    pub(crate) fn for_people(json: bool) -> Self {
        Self {
            enabled: !json && std::io::stderr().is_terminal(),
        }
    }

    /// A bar counting `len` things, described by `what`.
    pub(crate) fn bar(self, len: u64, what: &'static str) -> Bar {
        let bar = ProgressBar::with_draw_target(Some(len), self.target());
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{wide_bar}] {human_pos}/{human_len} ({eta} left)")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what);
        Bar(bar)
    }

    /// A spinner for something whose size is not known, with a message that changes.
    pub(crate) fn spinner(self, message: impl Into<String>) -> Bar {
        let bar = ProgressBar::with_draw_target(None, self.target());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.into());
        if self.enabled {
            bar.enable_steady_tick(SPIN);
        }
        Bar(bar)
    }

    fn target(self) -> ProgressDrawTarget {
        if self.enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }
    }
}

/// A bar or spinner; cleared from the terminal when dropped.
#[derive(Debug)]
pub(crate) struct Bar(ProgressBar);

impl Bar {
    /// Moves it on by `n`.
    pub(crate) fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    /// Sets its message.
    pub(crate) fn message(&self, message: impl Into<String>) {
        self.0.set_message(message.into());
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// [`flowstate::core::fold()`] with a bar when the log is long (the bar ticks as the fold
/// takes events from the iterator).
pub(crate) fn fold(
    events: &[RawEvent],
    stop: StopAt,
    progress: Progress,
) -> Result<FlowRecord, FoldError> {
    let len = u64::try_from(events.len()).unwrap_or(u64::MAX);
    let bar = (len >= MIN_EVENTS).then(|| progress.bar(len, "replaying"));
    let ticking = (1_u64..).zip(events).map(|(n, raw)| {
        if let Some(bar) = bar.as_ref().filter(|_| n % FOLD_TICK_EVENTS == 0) {
            bar.inc(FOLD_TICK_EVENTS);
        }
        raw
    });
    flowstate::core::fold(ticking, stop)
}
