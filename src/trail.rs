use std::mem;

use crate::error::FailedAttempt;

/// The attempts of one request that failed, in order. The first lives inline: a request that falls
/// back once (the common case) allocates nothing for its trail.
#[derive(Debug, Default)]
pub(crate) enum Trail {
    #[default]
    Empty,
    One([FailedAttempt; 1]),
    Many(Vec<FailedAttempt>),
}

impl Trail {
    pub(crate) fn push(&mut self, attempt: FailedAttempt) {
        *self = match mem::take(self) {
            Trail::Empty => Trail::One([attempt]),
            Trail::One([first]) => Trail::Many(vec![first, attempt]),
            Trail::Many(mut attempts) => {
                attempts.push(attempt);
                Trail::Many(attempts)
            }
        };
    }

    pub(crate) fn as_slice(&self) -> &[FailedAttempt] {
        match self {
            Trail::Empty => &[],
            Trail::One(one) => one,
            Trail::Many(attempts) => attempts,
        }
    }

    pub(crate) fn into_vec(self) -> Vec<FailedAttempt> {
        match self {
            Trail::Empty => Vec::new(),
            Trail::One(one) => one.into(),
            Trail::Many(attempts) => attempts,
        }
    }
}
