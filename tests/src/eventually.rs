//! Waiting, with a bound, for something a cluster does on its own time.
//!
//! Every wait in the tests is "check, and if not yet, check again a moment later, until a
//! deadline": [`eventually`] (blocking) and [`eventually_async`] (inside a tokio runtime) run
//! such a loop around a check, and [`Deadline`] is the same loop's clock for waits whose check
//! borrows state mutably (a connection) and so cannot be a closure returning a future. When the
//! deadline passes they panic naming what was awaited, how long they waited and, when the check
//! says, what it saw last.
//!
//! A check returns a [`Progress`]: `bool` (done or not), `Option<T>` (done with a value) or
//! `Result<T, E>` (done with a value, or not yet with what it saw, which the panic prints).

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a wait sleeps between two checks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What one check of a wait found: done (with a value), or not yet (with what it saw, if it
/// says).
pub trait Progress {
    /// What the wait returns once the check passes.
    type Done;
    /// `Ok` when done; `Err` with a description of what was seen (if any) when not yet.
    fn into_result(self) -> Result<Self::Done, Option<String>>;
}

impl Progress for bool {
    type Done = ();
    fn into_result(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Progress for Option<T> {
    type Done = T;
    fn into_result(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Debug> Progress for Result<T, E> {
    type Done = T;
    fn into_result(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(format!("{seen:#?}")))
    }
}

/// Runs `check` every [`POLL_INTERVAL`] until it passes and returns what it returned; panics
/// naming `what` once `within` has passed. Blocks the thread between checks.
pub fn eventually<P: Progress>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> P,
) -> P::Done {
    let deadline = Deadline::new(what, within);
    loop {
        match check().into_result() {
            Ok(done) => return done,
            Err(seen) => {
                deadline.expire_if_late(seen);
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// [`eventually`] for checks that await (tokio's timer sleeps between them). A check that
/// captures references writes `move || async move { ... }`, so that each future owns copies of
/// them rather than borrowing the closure.
pub async fn eventually_async<P, F>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) -> P::Done
where
    P: Progress,
    F: Future<Output = P>,
{
    let deadline = Deadline::new(what, within);
    loop {
        match check().await.into_result() {
            Ok(done) => return done,
            Err(seen) => {
                deadline.expire_if_late(seen);
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }
}

/// The clock of one wait written as a loop: `loop { if done { break } deadline.pause(&seen).await }`.
pub struct Deadline {
    what: String,
    started: Instant,
    within: Duration,
}

impl Deadline {
    /// A wait for `what` that may last `within`, starting now.
    pub fn new(what: impl Into<String>, within: Duration) -> Deadline {
        Deadline {
            what: what.into(),
            started: Instant::now(),
            within,
        }
    }

    /// How long the wait has lasted.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Panics naming the wait and `seen` if its time is up; otherwise sleeps one
    /// [`POLL_INTERVAL`] (tokio's timer).
    pub async fn pause(&self, seen: impl Debug) {
        self.expire_if_late(Some(format!("{seen:#?}")));
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    /// [`Deadline::pause`], blocking the thread.
    pub fn pause_blocking(&self, seen: impl Debug) {
        self.expire_if_late(Some(format!("{seen:#?}")));
        std::thread::sleep(POLL_INTERVAL);
    }

    fn expire_if_late(&self, seen: Option<String>) {
        let elapsed = self.started.elapsed();
        if elapsed < self.within {
            return;
        }
        let (what, within) = (&self.what, self.within);
        match seen {
            Some(seen) => panic!(
                "{what}: not within {within:?} (gave up after {elapsed:?}); last seen: {seen}"
            ),
            None => panic!("{what}: not within {within:?} (gave up after {elapsed:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a check that passes on its third call is called three times and its value returned.
    #[test]
    fn test_eventually_returns_the_first_passing_value() {
        let mut calls = 0;
        let got = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!((got, calls), (30, 3));
    }

    // Proves a wait that never passes panics naming what it waited for and what it saw last.
    #[test]
    fn test_eventually_panics_with_what_and_last_seen() {
        let failed = std::panic::catch_unwind(|| {
            eventually("the impossible", Duration::from_millis(30), || {
                Err::<(), _>("still 7")
            })
        });
        let message = *failed.unwrap_err().downcast::<String>().unwrap();
        assert!(
            message.contains("the impossible: not within 30ms"),
            "{message}"
        );
        assert!(message.contains("last seen: \"still 7\""), "{message}");
    }

    // Proves the async form waits on tokio's timer and returns the passing value.
    #[tokio::test]
    async fn test_eventually_async_returns_the_passing_value() {
        let started = Instant::now();
        let got =
            eventually_async(
                "50 ms to pass",
                Duration::from_secs(5),
                move || async move {
                    (started.elapsed() >= Duration::from_millis(50)).then_some("done")
                },
            )
            .await;
        assert_eq!(got, "done");
    }
}
