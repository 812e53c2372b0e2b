//! Scopes carried by async tasks (feature `async`).
//!
//! The scope state (the pin, the mode override, what reads must see) lives in a thread-local.
//! A task on a multi-threaded runtime moves between threads at its `.await` points, and
//! several tasks take turns on one thread, so a scope cannot stay in a thread between polls.
//! The futures of this module carry their scope themselves: [`scope`] gives a future a state
//! of its own, and the `*_async` scopes
//! ([`Cluster::with_token_async`](crate::Cluster::with_token_async),
//! [`Cluster::with_consistency_async`](crate::Cluster::with_consistency_async),
//! [`Cluster::run_job_async`](crate::Cluster::run_job_async),
//! [`use_primary_async`](crate::pin::use_primary_async)) apply theirs to the polling thread's
//! state for each poll of the future they wrap and take it back after it (also when the poll
//! panics). So a scope survives every `.await` and thread hop, and never reaches another task,
//! nor another future polled in turn on the same task (`join!`): a task-local would add
//! nothing to that. Everything that reads the scope state (routed connections,
//! [`Cluster::token`](crate::Cluster::token),
//! [`this_thread_is_pinned`](crate::pin::this_thread_is_pinned), the sync closure scopes) sees
//! the polled future's scope inside it.
//!
//! A task that runs outside any [`scope`] uses the state of whatever thread polls it, which
//! the other unscoped tasks of that thread share: wrap each unit of work (a request, in a
//! middleware; a job) in [`scope`] or one of the `*_async` scopes.
//!
//! A spawned task starts with nothing of its spawner: [`spawn`] (or [`carry`]) gives it a copy
//! of the spawner's state, so it must see everything its spawner must see and has written,
//! keeps its pin and mode, and reads no older data than the spawner has read. What the spawned
//! task writes stays with it: the spawner does not learn of it (take a
//! [`token`](crate::Cluster::token) in the task and hand it back if it must).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::consistency::scope::Layer;

pin_project_lite::pin_project! {
    /// A future with a scope layer applied to each of its polls; see the [module](self).
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct Scoped<F> {
        #[pin]
        inner: F,
        layer: Option<Layer>,
    }
}

impl<F> Scoped<F> {
    pub(crate) fn new(inner: F, layer: Layer) -> Self {
        Scoped {
            inner,
            layer: Some(layer),
        }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let polled = match this.layer.as_mut() {
            Some(layer) => layer.apply(|| this.inner.poll(cx)),
            None => this.inner.poll(cx),
        };
        if polled.is_ready() {
            if let Some(layer) = this.layer.take() {
                layer.finish();
            }
        }
        polled
    }
}

/// Runs `future` with a scope state of its own (a clean one: no pin, no mode override,
/// nothing it must see), carried across its `.await`s and thread hops: what a web request's
/// handler runs in (a middleware wraps each request in it).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use diesel_sharding::{pin, task};
///
/// task::scope(async {
///     pin::pin_this_thread(); // pins this task, not the worker thread
///     tokio::task::yield_now().await;
///     assert!(pin::this_thread_is_pinned());
/// })
/// .await;
/// assert!(!pin::this_thread_is_pinned());
/// # }
/// ```
pub fn scope<F: Future>(future: F) -> Scoped<F> {
    Scoped::new(future, Layer::job(Vec::new()))
}

/// Wraps `future` with a copy of the current scope state (see the [module](self)): for a
/// task that continues the current one's work on another task.
pub fn carry<F: Future>(future: F) -> Scoped<F> {
    Scoped::new(future, Layer::fork())
}

/// [`tokio::spawn`] with the current scope state carried into the new task ([`carry`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use diesel_sharding::{pin, task};
///
/// task::scope(async {
///     pin::pin_this_thread();
///     let carried = task::spawn(async { pin::this_thread_is_pinned() });
///     let bare = tokio::spawn(async { pin::this_thread_is_pinned() });
///     assert!(carried.await.unwrap(), "the spawned task carries the pin");
///     assert!(!bare.await.unwrap(), "a plain spawn starts with nothing");
/// })
/// .await;
/// # }
/// ```
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(carry(future))
}

/// Runs blocking work (sync Diesel on a [`Cluster`](crate::Cluster)'s r2d2 pool) on tokio's
/// blocking threads as part of the current scope: `f` starts with a copy of the scope's state
/// (what it must see, its pin and mode), and what `f` writes joins the scope when it returns,
/// as if it had run in place, so that a token taken afterwards
/// ([`Cluster::token`](crate::Cluster::token), the web middleware's cookie) carries it.
/// (`tokio::task::spawn_blocking` alone runs `f` on a thread with none of the scope.)
///
/// A panic in `f` is resumed in the caller.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use diesel_sharding::{pin, task};
///
/// task::scope(async {
///     pin::pin_this_thread();
///     assert!(task::spawn_blocking(pin::this_thread_is_pinned).await);
/// })
/// .await;
/// # }
/// # #[cfg(not(feature = "sqlite"))]
/// # fn main() {}
/// ```
pub async fn spawn_blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let mut layer = Layer::fork();
    let done = tokio::task::spawn_blocking(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| layer.apply(f)));
        (result, layer)
    })
    .await;
    match done {
        Ok((result, layer)) => {
            layer.join();
            match result {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        // the blocking thread was cancelled (the runtime shuts down) or panicked outside `f`
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("task::spawn_blocking: {e}"),
        },
    }
}
