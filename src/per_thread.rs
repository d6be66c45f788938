//! State that each thread writes alone and readers add up: a thread counts in its own cells with a
//! plain load and store (no locked instruction, no cache line another core writes), and a snapshot
//! sums the cells of every thread that ever counted.

#[cfg(not(loom_model))]
use thread_local::ThreadLocal;

use crate::sync::AtomicU64;
use crate::sync::Ordering::{self, Acquire, Relaxed};

/// One `T` per thread, made on the thread's first use; `iter` visits all of them.
#[derive(Debug)]
pub(crate) struct PerThread<T: Send> {
    #[cfg(not(loom_model))]
    cells: ThreadLocal<T>,
    /// Under the model checker one cell that every thread shares, written with `fetch_add`: what is
    /// checked are the orderings between counts.
    #[cfg(loom_model)]
    cell: T,
}

impl<T: Send> PerThread<T> {
    /// Cells are made on first use with what `local_or` is given; the model checker's single cell
    /// is made at once with `create`.
    #[cfg_attr(not(loom_model), allow(unused_variables))]
    pub(crate) fn new(create: impl FnOnce() -> T) -> Self {
        PerThread {
            #[cfg(not(loom_model))]
            cells: ThreadLocal::new(),
            #[cfg(loom_model)]
            cell: create(),
        }
    }

    /// This thread's cell, made by `create` on the thread's first use.
    #[cfg_attr(loom_model, allow(unused_variables))]
    #[inline]
    pub(crate) fn local_or(&self, create: impl FnOnce() -> T) -> &T {
        #[cfg(not(loom_model))]
        return self.cells.get_or(create);
        #[cfg(loom_model)]
        return &self.cell;
    }

    /// Every thread's cell.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T>
    where
        T: Sync,
    {
        #[cfg(not(loom_model))]
        return self.cells.iter();
        #[cfg(loom_model)]
        return std::iter::once(&self.cell);
    }
}

/// Adds one to a counter of this thread's cell and returns its new value. Only the owning thread
/// writes the cell, so a load and a store cannot lose a count; `order` is the store's (a `Release`
/// store pairs with a snapshot's `Acquire` load).
#[cfg(not(loom_model))]
#[inline]
pub(crate) fn bump(counter: &AtomicU64, order: Ordering) -> u64 {
    let next = counter.load(Relaxed).wrapping_add(1);
    counter.store(next, order);
    next
}

/// The model checker's cell is shared by its threads.
#[cfg(loom_model)]
pub(crate) fn bump(counter: &AtomicU64, order: Ordering) -> u64 {
    counter.fetch_add(1, order).wrapping_add(1)
}

/// A count that many threads add to and few read.
#[derive(Debug)]
pub(crate) struct PerThreadCounter {
    cells: PerThread<Cell>,
}

/// One thread's count, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Cell(AtomicU64);

impl Default for PerThreadCounter {
    fn default() -> Self {
        PerThreadCounter {
            cells: PerThread::new(Cell::default),
        }
    }
}

impl PerThreadCounter {
    /// Adds one; returns this thread's count (not the total).
    #[inline]
    pub(crate) fn increment(&self) -> u64 {
        bump(&self.cells.local_or(Cell::default).0, Relaxed)
    }

    /// The total so far.
    pub(crate) fn sum(&self) -> u64 {
        self.cells.iter().map(|cell| cell.0.load(Acquire)).sum()
    }
}

#[cfg(all(test, not(loom_model)))]
mod tests {
    use super::PerThreadCounter;

    #[test]
    fn counts_from_many_threads_add_up_even_when_threads_come_and_go() {
        let counter = PerThreadCounter::default();
        for round in 1..=3 {
            // Threads that ended leave their counts behind; new threads may take over their cells.
            std::thread::scope(|scope| {
                for _ in 0..8 {
                    scope.spawn(|| {
                        for _ in 0..1_000 {
                            counter.increment();
                        }
                    });
                }
            });
            assert_eq!(counter.sum(), round * 8_000);
        }
    }
}
