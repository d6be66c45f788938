use std::mem;

use crate::error::FailedAttempt;

/// The attempts of one request that failed, in order. The first two live inline: a request served by
/// its second or third model (the common fallbacks) allocates nothing for its trail, only the failed
/// attempts' boxed errors.
#[derive(Debug, Default)]
pub(crate) enum Trail {
    #[default]
    Empty,
    One([FailedAttempt; 1]),
    Two([FailedAttempt; 2]),
    Many(Vec<FailedAttempt>),
}

impl Trail {
    pub(crate) fn push(&mut self, attempt: FailedAttempt) {
        *self = match mem::take(self) {
            Trail::Empty => Trail::One([attempt]),
            Trail::One([first]) => Trail::Two([first, attempt]),
            Trail::Two([first, second]) => Trail::Many(vec![first, second, attempt]),
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
            Trail::Two(two) => two,
            Trail::Many(attempts) => attempts,
        }
    }

    pub(crate) fn into_vec(self) -> Vec<FailedAttempt> {
        match self {
            Trail::Empty => Vec::new(),
            Trail::One(one) => one.into(),
            Trail::Two(two) => two.into(),
            Trail::Many(attempts) => attempts,
        }
    }
}
