//! The one place the service reads the time, so tests can move it.
//!
//! The service's time has whole milliseconds: Redis keeps instants as
//! integer milliseconds, so every instant the core compares must already be
//! one. Otherwise a request in the last sub-millisecond before a deadline
//! would look expired to one side and alive to the other.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Wall-clock time plus an offset, or (tests only) a stopped clock.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    offset_ns: AtomicI64,
    /// Nanoseconds since the epoch while the clock is stopped, else [`RUNNING`].
    stopped_at_ns: AtomicI64,
}

const RUNNING: i64 = i64::MIN;

impl Default for State {
    fn default() -> Self {
        Self {
            offset_ns: AtomicI64::new(0),
            stopped_at_ns: AtomicI64::new(RUNNING),
        }
    }
}

impl Clock {
    /// Now, in whole milliseconds.
    pub fn now(&self) -> DateTime<Utc> {
        let stopped = self.state.stopped_at_ns.load(Ordering::SeqCst);
        let raw = if stopped == RUNNING {
            Utc::now() + Duration::nanoseconds(self.state.offset_ns.load(Ordering::SeqCst))
        } else {
            DateTime::from_timestamp_nanos(stopped)
        };
        whole_millis(raw)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        let by = by.num_nanoseconds().unwrap_or(i64::MAX);
        let stopped = &self.state.stopped_at_ns;
        let moved = stopped.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |at| {
            (at != RUNNING).then(|| at.saturating_add(by))
        });
        if moved.is_err() {
            self.state.offset_ns.fetch_add(by, Ordering::SeqCst);
        }
    }

    /// Stops the clock at `at` (any precision; `now` still answers whole
    /// milliseconds). For tests that must land on an exact instant.
    pub fn stop_at(&self, at: DateTime<Utc>) {
        let ns = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
        self.state.stopped_at_ns.store(ns, Ordering::SeqCst);
    }
}

/// `at` without its sub-millisecond part.
pub fn whole_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

/// RFC 3339 in whole seconds with an explicit `+00:00` offset, as B2Core writes it.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_clock_answers_whole_milliseconds() {
        let clock = Clock::default();
        assert_eq!(clock.now().timestamp_subsec_nanos() % 1_000_000, 0);
        let at = Utc.timestamp_opt(1_800_000_000, 123_456_789).unwrap();
        clock.stop_at(at);
        assert_eq!(
            clock.now(),
            Utc.timestamp_opt(1_800_000_000, 123_000_000).unwrap()
        );
        clock.advance(Duration::microseconds(900));
        assert_eq!(
            clock.now(),
            Utc.timestamp_opt(1_800_000_000, 124_000_000).unwrap()
        );
    }
}
