//! The sign-in wizard as a pure state machine: no I/O, no clock, no randomness.
//!
//! The shell (see `crate::signin`) asks [`Wizard::admits`] before doing any
//! expensive verification, turns what the edges found out into an [`Event`],
//! and calls [`transition`], which returns the next wizard and the side
//! effects to perform once that wizard is safely stored.

mod machine;
mod model;
#[cfg(test)]
mod properties;

pub use machine::{Context, Effect, Event, NewPasswordCheck, Transition, transition};
pub use model::{
    Account, Action, BoundUser, CodeChallenge, Factor, FreshCode, Opener, RESET_CODE_TTL,
    Rejection, SecretDigest, Step, Wizard, Workflow,
};
