//! The synchronisation primitives of the shared state: std's, or loom's when the crate is built
//! with `--cfg loom_model` to model-check it (see `src/loom_model.rs`).

#[cfg(loom_model)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
#[cfg(loom_model)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom_model))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
#[cfg(not(loom_model))]
pub(crate) use std::sync::{Mutex, MutexGuard};
