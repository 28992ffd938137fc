//! One request's draw on its client address's allowance (see
//! `http::rate_limit`), handed to the sign-in shell so that it travels in
//! the request's first store round trip instead of a round trip of its own.

use crate::store::{Op, Rate};
use std::sync::OnceLock;

#[derive(Debug)]
pub struct Allowance {
    op: Op,
    verdict: OnceLock<Rate>,
}

impl Allowance {
    pub fn new(op: Op) -> Self {
        Self {
            op,
            verdict: OnceLock::new(),
        }
    }

    /// The op to send with the first round trip.
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// Records what the store answered; how long to wait if it refused.
    pub fn settle(&self, rate: Rate) -> Option<std::time::Duration> {
        let _ = self.verdict.set(rate);
        match rate {
            Rate::Allowed { .. } => None,
            Rate::Refused { retry_in } => Some(retry_in),
        }
    }

    /// What the store answered, if the op was sent.
    pub fn verdict(&self) -> Option<Rate> {
        self.verdict.get().copied()
    }
}
