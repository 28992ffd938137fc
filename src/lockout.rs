//! Attempt counting per account (B2Core "User Auth Settings": by default 5
//! failures a minute block sign-in for 10 minutes) and per wizard (a cap on
//! wrong codes). This module is the only place these rules are written;
//! the stores only count, compare and block as told (see `store::Op`).
//!
//! An account's attempt, and a code step's try in its wizard, are *taken
//! before* the check, atomically, in the round trip that loads the wizard,
//! so concurrent guesses can never run more checks than either limit
//! allows. Both are given back (once, by ticket) when a request ends
//! without a verdict.

use crate::store::Taken;
use chrono::{DateTime, Duration, Utc};

/// What a step asks of the counters.
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    /// Take one attempt (password and code checks); else only check for a block.
    pub take: bool,
    /// Refuse once the wizard used up its codes.
    pub code: bool,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub now: DateTime<Utc>,
    pub max_attempts: u32,
    pub window: Duration,
    pub block: Duration,
    pub codes_per_wizard: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead (holding the attempt the take counted, if it counted one).
    Admitted,
    /// Refused until then: the account is blocked, or every attempt of its
    /// window is taken (only a wrong verdict on the last one blocks it, so
    /// requests that were counted and then given back never start a block).
    Blocked { until: DateTime<Utc> },
    /// The wizard used up its codes and must be started over.
    WizardClosed,
}

/// An attempt a request took: its number within the window, the window,
/// and the ticket that gives it back at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub number: u32,
    /// When the window it was taken in began: a give-back names it, and
    /// buys nothing once another window began.
    pub window: DateTime<Utc>,
    pub ticket: u64,
}

impl Attempt {
    /// The attempt a take counted, if it counted one.
    pub fn from_taken(taken: Taken, ticket: u64) -> Option<Attempt> {
        match taken {
            Taken::Counted { count, since } => Some(Attempt {
                number: count,
                window: since,
                ticket,
            }),
            Taken::Open | Taken::Blocked { .. } => None,
        }
    }

    /// Whether a wrong guess with this attempt used up the window: the
    /// account is blocked from then on.
    pub fn was_last(&self, limits: &Limits) -> bool {
        self.number >= limits.max_attempts
    }
}

/// The verdict of the gate on what the account's counter and the wizard's
/// code tries say.
pub fn admit(taken: Taken, codes_tried: u32, gate: &Gate) -> Admission {
    let limits = &gate.limits;
    if gate.code && codes_tried >= limits.codes_per_wizard {
        return Admission::WizardClosed;
    }
    match taken {
        Taken::Blocked { until } => Admission::Blocked { until },
        Taken::Open => Admission::Admitted,
        // Earlier attempts of this window are taken (some may still be checked): none is left.
        Taken::Counted { count, since } if count > limits.max_attempts => Admission::Blocked {
            until: since + limits.window,
        },
        Taken::Counted { .. } => Admission::Admitted,
    }
}

/// Whole seconds until `until`, rounded up: how long a blocked client waits.
pub fn retry_after(until: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let millis = u64::try_from((until - now).num_milliseconds()).unwrap_or(0);
    millis.div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn gate(take: bool, code: bool) -> Gate {
        Gate {
            take,
            code,
            limits: Limits {
                now: t(10),
                max_attempts: 3,
                window: Duration::seconds(60),
                block: Duration::seconds(600),
                codes_per_wizard: 2,
            },
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn counted(count: u32) -> Taken {
        Taken::Counted { count, since: t(1) }
    }

    #[test]
    fn attempts_up_to_the_limit_go_ahead_holding_their_number_and_window() {
        for n in 1..=3 {
            assert_eq!(
                admit(counted(n), 0, &gate(true, false)),
                Admission::Admitted
            );
            assert_eq!(
                Attempt::from_taken(counted(n), 7),
                Some(Attempt {
                    number: n,
                    window: t(1),
                    ticket: 7
                })
            );
        }
        assert_eq!(Attempt::from_taken(Taken::Open, 7), None);
    }

    #[test]
    fn the_attempt_past_the_limit_waits_for_the_window_and_a_block_is_reported() {
        assert_eq!(
            admit(counted(4), 0, &gate(true, false)),
            Admission::Blocked { until: t(61) }
        );
        let blocked = Taken::Blocked { until: t(300) };
        for take in [true, false] {
            assert_eq!(
                admit(blocked, 0, &gate(take, false)),
                Admission::Blocked { until: t(300) }
            );
        }
    }

    #[test]
    fn the_last_attempt_of_a_window_is_known_as_such() {
        let limits = gate(true, false).limits;
        let attempt = |number| Attempt {
            number,
            window: t(1),
            ticket: 0,
        };
        assert!(!attempt(2).was_last(&limits));
        assert!(attempt(3).was_last(&limits));
    }

    #[test]
    fn a_wizard_out_of_codes_is_closed_whatever_the_account_says() {
        assert_eq!(admit(counted(1), 1, &gate(true, true)), Admission::Admitted);
        for taken in [counted(1), Taken::Open, Taken::Blocked { until: t(300) }] {
            assert_eq!(admit(taken, 2, &gate(true, true)), Admission::WizardClosed);
        }
        // Only code steps are capped.
        assert_eq!(
            admit(counted(1), 5, &gate(true, false)),
            Admission::Admitted
        );
    }
}
