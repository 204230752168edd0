//! [`GlommioRuntime`]: openraft's `AsyncRuntime` on a glommio executor, so a
//! shard's Raft group runs on the shard core itself (openraft is built with
//! `single-threaded`: nothing here is `Send`).
//!
//! - `spawn` runs the future as a detached glommio task and hands its output
//!   back through a oneshot channel, so dropping a [`JoinHandle`] detaches the
//!   task (tokio's semantics, which openraft relies on) instead of cancelling
//!   it (glommio's). A panic in the task is caught and reported as
//!   [`JoinError::Panicked`].
//! - Timers are glommio timers; `Instant` is the tokio adapter's (a plain
//!   monotonic clock, no tokio runtime needed).
//! - Channels and the mutex are `openraft-rt-tokio`'s: tokio's sync primitives
//!   work on any executor.

use futures::channel::oneshot;
use futures::FutureExt;
use openraft_rt::{AsyncRuntime, Instant, OptionalSend};
use openraft_rt_tokio::{TokioInstant, TokioMpsc, TokioMutex, TokioOneshot, TokioWatch};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Each shard executor's io_uring buffer area: what the WAL's batch buffers
/// need (see `cairn_wal::DMA_IO_MEMORY_BYTES` and LINUX_REQUIREMENTS.md).
pub const IO_MEMORY_BYTES: usize = cairn_wal::DMA_IO_MEMORY_BYTES;

/// openraft's runtime on a glommio `LocalExecutor`.
pub struct GlommioRuntime {
    executor: glommio::LocalExecutor,
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlommioRuntime").finish()
    }
}

/// Why a spawned task produced no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The task panicked.
    Panicked,
    /// The task was dropped before finishing (its executor stopped).
    Cancelled,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked => write!(f, "task panicked"),
            JoinError::Cancelled => write!(f, "task was cancelled"),
        }
    }
}

/// Resolves to a spawned task's output. Dropping it detaches the task.
pub struct JoinHandle<T> {
    rx: oneshot::Receiver<Result<T, JoinError>>,
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.rx.poll_unpin(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(JoinError::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A glommio timer that resolves to `()`.
pub struct Sleep(glommio::timer::Timer);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deadline has elapsed")
    }
}

pin_project_lite::pin_project! {
    /// A future raced against a glommio timer; the future wins ties.
    pub struct Timeout<F> {
        #[pin]
        future: F,
        timer: glommio::timer::Timer,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(this.timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn until(deadline: TokioInstant) -> Duration {
    let now = TokioInstant::now();
    if deadline > now {
        deadline - now
    } else {
        Duration::ZERO
    }
}

impl AsyncRuntime for GlommioRuntime {
    type JoinError = JoinError;
    type JoinHandle<T: OptionalSend + 'static> = JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = TokioInstant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = rand::rngs::ThreadRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        let (tx, rx) = oneshot::channel();
        glommio::spawn_local(async move {
            let result = AssertUnwindSafe(future)
                .catch_unwind()
                .await
                .map_err(|_| JoinError::Panicked);
            let _ = tx.send(result);
        })
        .detach();
        JoinHandle { rx }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Sleep(glommio::timer::Timer::new(duration))
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Sleep(glommio::timer::Timer::new(until(deadline)))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout {
            future,
            timer: glommio::timer::Timer::new(duration),
        }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout {
            future,
            timer: glommio::timer::Timer::new(until(deadline)),
        }
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        *join_error == JoinError::Panicked
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        rand::rng()
    }

    type Mpsc = TokioMpsc;
    type Watch = TokioWatch;
    type Oneshot = TokioOneshot;
    type Mutex<T: OptionalSend + 'static> = TokioMutex<T>;

    /// One executor on the calling thread; `threads` does not apply (a shard
    /// core is one thread).
    fn new(_threads: usize) -> Self {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(IO_MEMORY_BYTES)
            .make()
            .expect("glommio executor (io_uring and RLIMIT_MEMLOCK: see LINUX_REQUIREMENTS.md)");
        Self { executor }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.executor.run(future)
    }
}
