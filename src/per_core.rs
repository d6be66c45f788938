//! Counters split per core: a thread writes the cell of its own group, so cores do not fight over
//! cache lines, and readers add the cells up.

use crate::sync::AtomicU64;
use crate::sync::Ordering::{Acquire, Release};

/// Cells per counter: the machine's parallelism, at most 64.
#[cfg(not(loom_model))]
pub(crate) fn shard_count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, 64)
    })
}

/// Under the model checker one cell: the orderings are what is checked.
#[cfg(loom_model)]
pub(crate) fn shard_count() -> usize {
    1
}

/// This thread's ordinal, taken once from a process-wide counter: threads spread over the cells.
#[cfg(not(loom_model))]
fn thread_ordinal() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static ORDINAL: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    ORDINAL.with(|ordinal| *ordinal)
}

/// This thread's cell in every per-core array (each has [`shard_count`] cells): computed once per
/// thread, so a count costs no division.
#[cfg(not(loom_model))]
#[inline]
pub(crate) fn shard_index() -> usize {
    thread_local! {
        static INDEX: usize = thread_ordinal() % shard_count();
    }
    INDEX.with(|index| *index)
}

#[cfg(loom_model)]
pub(crate) fn shard_index() -> usize {
    0
}

/// One cell, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Cell(AtomicU64);

/// A count that many cores add to and few read.
#[derive(Debug)]
pub(crate) struct PerCoreCounter {
    cells: Box<[Cell]>,
}

impl Default for PerCoreCounter {
    fn default() -> Self {
        PerCoreCounter {
            cells: (0..shard_count()).map(|_| Cell::default()).collect(),
        }
    }
}

impl PerCoreCounter {
    /// Adds one; returns this thread's cell's new value (not the total).
    #[inline]
    pub(crate) fn increment(&self) -> u64 {
        self.cells
            .get(shard_index())
            .map_or(0, |cell| cell.0.fetch_add(1, Release) + 1)
    }

    /// The total so far.
    pub(crate) fn sum(&self) -> u64 {
        self.cells.iter().map(|cell| cell.0.load(Acquire)).sum()
    }
}
