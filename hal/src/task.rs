//! Small `no_std` helpers for cooperative async code.
//!
//! A guest is one cooperative task (see `docs/ARCHITECTURE.md`): it gives up
//! the CPU only at `.await` points. These helpers make such points.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

/// Future for [`yield_now`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug, Default)]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Let other work (other tasks, other domains in the simulator) run, then
/// continue. The task stays runnable.
pub fn yield_now() -> YieldNow {
    YieldNow::default()
}

/// Which of two futures finished first, with its output.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first.
    First(A),
    /// The second.
    Second(B),
}

/// Future for [`select`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Select<A, B> {
    a: A,
    b: B,
}

impl<A: Future + Unpin, B: Future + Unpin> Future for Select<A, B> {
    type Output = Either<A::Output, B::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = Pin::new(&mut self.a).poll(cx) {
            return Poll::Ready(Either::First(v));
        }
        if let Poll::Ready(v) = Pin::new(&mut self.b).poll(cx) {
            return Poll::Ready(Either::Second(v));
        }
        Poll::Pending
    }
}

/// Run two futures until the first finishes (it wins ties: `a` is polled
/// first). Both must be `Unpin`; use `core::pin::pin!` if they are not.
pub fn select<A: Future + Unpin, B: Future + Unpin>(a: A, b: B) -> Select<A, B> {
    Select { a, b }
}
