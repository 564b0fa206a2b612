//! Request ids that follow one request across hops.
//!
//! A transport's server runs each request it answers inside [`scope`] with
//! the id the request arrived with (or a fresh one); while that future runs,
//! [`current`] returns the id, and every [`RequestEnvelope`](crate::wire::RequestEnvelope)
//! built meanwhile (a proxy calling its worker) carries it on the wire. So a
//! request keeps one id from the first server it reaches to the store that
//! answers it, and `RUST_LOG` output of every hop can be joined on it.
//!
//! The id is kept in a thread-local that the [`Scoped`] future sets around
//! each poll of the future it wraps, so it follows that future across
//! threads and awaits without an async runtime (the core has none).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

/// The request id of the request being answered on this task, if any.
pub fn current() -> Option<u64> {
    let id = CURRENT.with(Cell::get);
    (id != 0).then_some(id)
}

/// Runs `future` as the answer to the request with id `id` (0: none).
///
/// The future must be `Unpin` (a boxed future, as `Gater` methods return),
/// so wrapping it costs no allocation.
pub fn scope<F: Future + Unpin>(id: u64, future: F) -> Scoped<F> {
    Scoped { id, future }
}

/// A future that runs with a request id; see [`scope`].
pub struct Scoped<F> {
    id: u64,
    future: F,
}

impl<F> std::fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped").field("id", &self.id).finish()
    }
}

impl<F: Future + Unpin> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let outer = CURRENT.with(|c| c.replace(this.id));
        // Restores the outer id even if the inner future panics.
        struct Restore(u64);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(outer);
        Pin::new(&mut this.future).poll(cx)
    }
}

/// The id as logs show it: 16 hex digits (formatted only when a log is written).
pub fn display(id: u64) -> impl std::fmt::Display {
    struct Hex(u64);
    impl std::fmt::Display for Hex {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:016x}", self.0)
        }
    }
    Hex(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn run<F: Future>(future: F) -> F::Output {
        let mut future = Box::pin(future);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }

    #[test]
    fn the_id_is_current_only_inside_its_scope() {
        assert_eq!(current(), None);
        assert_eq!(run(scope(7, Box::pin(async { current() }))), Some(7));
        assert_eq!(current(), None);
    }

    #[test]
    fn ids_show_as_sixteen_hex_digits() {
        assert_eq!(display(0x42).to_string(), "0000000000000042");
    }

    #[test]
    fn an_inner_scope_restores_the_outer_id() {
        let seen = run(scope(
            1,
            Box::pin(async {
                let inner = scope(2, Box::pin(async { current() })).await;
                (inner, current())
            }),
        ));
        assert_eq!(seen, (Some(2), Some(1)));
    }
}
