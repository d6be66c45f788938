use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Holds scripted calls until the test lets them go, so that a test can act while a call is
/// certainly in flight (cancel it, shut a server down) without sleeping.
///
/// A step made with [`Step::held_by`](super::Step::held_by) signals [`arrived`](Self::arrived) when a
/// call reaches it, then waits for [`open`](Self::open).
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    arrivals: AtomicUsize,
    arrived: Notify,
    opened: Notify,
    open: std::sync::atomic::AtomicBool,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Gate::default()
    }

    /// Waits until a call has reached the gate (returns at once if one already has).
    pub async fn arrived(&self) {
        loop {
            let notified = self.inner.arrived.notified();
            if self.inner.arrivals.load(Ordering::Acquire) > 0 {
                return;
            }
            notified.await;
        }
    }

    /// Lets every held call, and every later one, through.
    pub fn open(&self) {
        self.inner.open.store(true, Ordering::Release);
        self.inner.opened.notify_waiters();
    }

    pub(crate) async fn pass(&self) {
        self.inner.arrivals.fetch_add(1, Ordering::AcqRel);
        self.inner.arrived.notify_waiters();
        loop {
            let opened = self.inner.opened.notified();
            if self.inner.open.load(Ordering::Acquire) {
                return;
            }
            opened.await;
        }
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("arrivals", &self.inner.arrivals.load(Ordering::Relaxed))
            .field("open", &self.inner.open.load(Ordering::Relaxed))
            .finish()
    }
}
