//! A set of spawned tasks whose results are taken as they finish, aborted when the set is
//! dropped: what `tokio::task::JoinSet` does, built on `FuturesUnordered` of join handles so
//! that it also runs under madsim (whose tokio has no `JoinSet`). One implementation for both
//! builds, so the simulated runs exercise the same code as real ones.

use std::future::Future;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::task::{JoinError, JoinHandle};

/// Spawned tasks with outputs of type `T`.
pub(crate) struct TaskSet<T> {
    tasks: FuturesUnordered<JoinHandle<T>>,
}

impl<T: Send + 'static> TaskSet<T> {
    /// An empty set.
    pub(crate) fn new() -> TaskSet<T> {
        TaskSet {
            tasks: FuturesUnordered::new(),
        }
    }

    /// Spawns `task` into the set.
    pub(crate) fn spawn(&mut self, task: impl Future<Output = T> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// The next task to finish, or `None` when the set is empty.
    pub(crate) async fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        self.tasks.next().await
    }

    /// Whether no task is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl<T> Drop for TaskSet<T> {
    fn drop(&mut self) {
        // As JoinSet: a dropped set's tasks must not go on (a dropped producer's requests).
        for task in self.tasks.iter() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn test_results_come_as_tasks_finish_and_drop_aborts_the_rest() {
        let mut set = TaskSet::new();
        set.spawn(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            2
        });
        set.spawn(async { 1 });
        assert_eq!(set.join_next().await.expect("one").expect("no panic"), 1);
        assert_eq!(set.join_next().await.expect("two").expect("no panic"), 2);
        assert!(set.is_empty());
        assert!(set.join_next().await.is_none());
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        set.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
            3
        });
        drop(set);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!ran.load(Ordering::SeqCst), "a dropped set's task went on");
    }
}
