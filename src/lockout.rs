//! Attempt counting per account (B2Core "User Auth Settings": by default 5
//! failures a minute block sign-in for 10 minutes) and per wizard (a cap on
//! wrong codes). Attempts are *taken before* the costly check, atomically
//! with loading the wizard, so concurrent guesses can never run more checks
//! than the limit allows. The Redis store does the same in Lua
//! (`store/lua/load_wizard.lua`, and the refunds in `replace_wizard.lua` and
//! `refund_attempt.lua`); this module is the reference.

use crate::domain::{Email, ParseError, UserId};
use crate::wizard::Workflow;
use chrono::{DateTime, Duration, Utc};

/// Whose attempts a request counts against: a known account, or (so that
/// unknown emails behave exactly like known ones) the email as typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttemptKey {
    User(UserId),
    Email(Email),
}

impl AttemptKey {
    /// The key's name inside the store (`user:{id}` or `email:{email}`).
    pub fn name(&self) -> String {
        match self {
            AttemptKey::User(id) => format!("user:{id}"),
            AttemptKey::Email(email) => format!("email:{email}"),
        }
    }

    /// The inverse of [`AttemptKey::name`].
    pub fn from_name(name: &str) -> Result<Self, ParseError> {
        match name.split_once(':') {
            Some(("user", id)) => UserId::parse(id).map(AttemptKey::User),
            Some(("email", email)) => Email::parse(email).map(AttemptKey::Email),
            _ => Err(ParseError("not an attempt counter name")),
        }
    }
}

/// What a step asks of the counters, decided in the same store round trip
/// as the load, and only if the wizard is at `step` and not expired.
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    pub step: Workflow,
    /// Take one attempt (password and code checks); else only check for a block.
    pub take: bool,
    /// Refuse once the wizard used up its codes (and, if `take`, use one).
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
    /// No gate applied (no gate asked for, wizard not at that step, or no account named yet).
    Unchecked,
    /// Go ahead, holding the attempt taken for this request (none if the gate takes none).
    Admitted { attempt: Option<Attempt> },
    /// The account is blocked until then.
    Blocked { until: DateTime<Utc> },
    /// The wizard used up its codes and must be started over.
    WizardClosed,
}

/// An attempt a request took: its number within the window, and the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub number: u32,
    /// When the window it was taken in began (its counter's `since`).
    pub window: DateTime<Utc>,
}

/// One account's counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub count: u32,
    pub since: Option<DateTime<Utc>>,
    pub blocked_until: Option<DateTime<Utc>>,
}

impl Counter {
    /// Applies `gate` to this counter and the wizard's code tries. Attempts
    /// made while blocked change nothing, so they cannot extend the block.
    pub fn admit(&mut self, wizard_codes: &mut u32, gate: &Gate) -> Admission {
        let limits = &gate.limits;
        if gate.code && *wizard_codes >= limits.codes_per_wizard {
            return Admission::WizardClosed;
        }
        if let Some(until) = self.blocked_until.filter(|until| *until > limits.now) {
            return Admission::Blocked { until };
        }
        if !gate.take {
            return Admission::Admitted { attempt: None };
        }
        // A new window, or a block served: the account starts afresh.
        let window = match self.since {
            Some(since) if since + limits.window > limits.now && self.blocked_until.is_none() => {
                since
            }
            _ => {
                *self = Counter {
                    count: 0,
                    since: Some(limits.now),
                    blocked_until: None,
                };
                limits.now
            }
        };
        if self.count >= limits.max_attempts {
            // Earlier attempts of this window are still being checked: this one would exceed the limit.
            let until = limits.now + limits.block;
            self.blocked_until = Some(until);
            return Admission::Blocked { until };
        }
        self.count += 1;
        if gate.code {
            *wizard_codes += 1;
        }
        Admission::Admitted {
            attempt: Some(Attempt {
                number: self.count,
                window,
            }),
        }
    }

    /// Gives back an attempt taken in `window`. Once that window is over (or a
    /// block was served and the count started afresh) there is nothing to give
    /// back: a refund never buys an attempt in a later window.
    pub fn refund(&mut self, window: DateTime<Utc>) {
        if self.since == Some(window) {
            self.count = self.count.saturating_sub(1);
        }
    }

    /// When a stored counter may be forgotten.
    pub fn expires_at(&self, limits: &Limits) -> DateTime<Utc> {
        let window_end = self.since.map_or(limits.now, |since| since + limits.window);
        self.blocked_until
            .map_or(window_end, |until| until.max(window_end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn gate(now: DateTime<Utc>, take: bool, code: bool) -> Gate {
        Gate {
            step: Workflow::Login,
            take,
            code,
            limits: Limits {
                now,
                max_attempts: 3,
                window: Duration::seconds(60),
                block: Duration::seconds(600),
                codes_per_wizard: 2,
            },
        }
    }

    fn taken(number: u32, window: DateTime<Utc>) -> Admission {
        Admission::Admitted {
            attempt: Some(Attempt { number, window }),
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn the_attempt_past_the_limit_starts_a_block_that_later_attempts_do_not_extend() {
        let mut counter = Counter::default();
        let mut codes = 0;
        for n in 1..=3 {
            assert_eq!(
                counter.admit(&mut codes, &gate(t(n), true, false)),
                taken(n as u32, t(1))
            );
        }
        let blocked = counter.admit(&mut codes, &gate(t(10), true, false));
        assert_eq!(blocked, Admission::Blocked { until: t(610) });
        assert_eq!(
            counter.admit(&mut codes, &gate(t(300), true, false)),
            Admission::Blocked { until: t(610) }
        );
        assert_eq!(
            counter.admit(&mut codes, &gate(t(300), false, false)),
            Admission::Blocked { until: t(610) }
        );
        assert_eq!(
            counter.admit(&mut codes, &gate(t(610), true, false)),
            taken(1, t(610))
        );
    }

    #[test]
    fn a_served_block_starts_the_account_afresh_even_inside_a_long_window() {
        let mut counter = Counter::default();
        let mut codes = 0;
        let long = |at| {
            let mut gate = gate(at, true, false);
            gate.limits.window = Duration::seconds(3600);
            gate
        };
        for n in 0..4 {
            counter.admit(&mut codes, &long(t(n)));
        }
        assert_eq!(counter.admit(&mut codes, &long(t(700))), taken(1, t(700)));
    }

    #[test]
    fn the_window_slides_on() {
        let mut counter = Counter::default();
        let mut codes = 0;
        for n in 0..3 {
            counter.admit(&mut codes, &gate(t(n), true, false));
        }
        assert_eq!(
            counter.admit(&mut codes, &gate(t(61), true, false)),
            taken(1, t(61))
        );
    }

    #[test]
    fn a_refund_gives_back_only_within_the_window_that_took_the_attempt() {
        let mut counter = Counter::default();
        let mut codes = 0;
        let Admission::Admitted {
            attempt: Some(early),
        } = counter.admit(&mut codes, &gate(t(0), true, false))
        else {
            panic!("admitted")
        };
        counter.admit(&mut codes, &gate(t(1), true, false));
        counter.refund(early.window);
        assert_eq!(counter.count, 1, "same window: given back");

        // Kept in flight across the boundary: the next window owes it nothing.
        assert_eq!(
            counter.admit(&mut codes, &gate(t(60), true, false)),
            taken(1, t(60))
        );
        counter.refund(early.window);
        assert_eq!(counter.count, 1, "another window: nothing given back");
    }

    #[test]
    fn a_wizard_runs_out_of_codes() {
        let mut counter = Counter::default();
        let mut codes = 0;
        assert!(matches!(
            counter.admit(&mut codes, &gate(t(0), true, true)),
            Admission::Admitted { .. }
        ));
        assert!(matches!(
            counter.admit(&mut codes, &gate(t(1), true, true)),
            Admission::Admitted { .. }
        ));
        assert_eq!(
            counter.admit(&mut codes, &gate(t(2), true, true)),
            Admission::WizardClosed
        );
        assert_eq!(codes, 2);
    }
}
