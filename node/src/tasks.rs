//! The node's long-running tasks, watched: [`crate::run`] returns the first task's error (or
//! panic) instead of dropping it, and a task that fails while the node serves stops the node.

use std::future::Future;

use tokio::task::{JoinError, JoinSet};

/// Named tasks. See the module docs.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Tasks {
    /// Runs `fut` as task `name`.
    pub fn spawn<F>(&mut self, name: &'static str, fut: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.set.spawn(async move { (name, fut.await) });
    }

    /// Runs `fut` (which cannot fail) as task `name`.
    pub fn spawn_infallible<F>(&mut self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, async move {
            fut.await;
            Ok(())
        });
    }

    /// Watches an already spawned task as `name`.
    pub fn watch<T: Send + 'static>(
        &mut self,
        name: &'static str,
        handle: tokio::task::JoinHandle<T>,
    ) {
        self.spawn(name, async move {
            handle.await.map(drop).map_err(|e| joined(name, e))
        });
    }

    /// The next task to fail (a task that ends with `Ok` is not a failure); pending for ever
    /// when none is left.
    pub async fn next_failure(&mut self) -> anyhow::Error {
        loop {
            match self.set.join_next().await {
                None => std::future::pending::<()>().await,
                Some(done) => {
                    if let Some(e) = failure(done) {
                        return e;
                    }
                }
            }
        }
    }

    /// Waits for every task; the first failure, if any.
    pub async fn join_all(mut self) -> Option<anyhow::Error> {
        let mut first = None;
        while let Some(done) = self.set.join_next().await {
            if let Some(e) = failure(done) {
                tracing::error!(error = %format!("{e:#}"), "a task failed");
                first.get_or_insert(e);
            }
        }
        first
    }
}

fn joined(name: &str, e: JoinError) -> anyhow::Error {
    if e.is_panic() {
        anyhow::anyhow!("task {name} panicked")
    } else {
        anyhow::anyhow!("task {name} was cancelled")
    }
}

fn failure(done: Result<(&'static str, anyhow::Result<()>), JoinError>) -> Option<anyhow::Error> {
    match done {
        Ok((_, Ok(()))) => None,
        Ok((name, Err(e))) => Some(e.context(format!("task {name}"))),
        Err(e) => Some(joined("(unnamed)", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_or_panic_is_reported() {
        let mut t = Tasks::default();
        t.spawn("fine", async { Ok(()) });
        t.spawn("broken", async { Err(anyhow::anyhow!("disk on fire")) });
        let e = t.next_failure().await;
        assert!(
            format!("{e:#}").contains("task broken: disk on fire"),
            "{e:#}"
        );
        let mut t = Tasks::default();
        t.spawn_infallible("boom", async { panic!("boom") });
        t.spawn_infallible("quiet", async {});
        let e = t.join_all().await.expect("a panic is a failure");
        assert!(e.to_string().contains("panicked"), "{e}");
        assert!(Tasks::default().join_all().await.is_none());
    }
}
