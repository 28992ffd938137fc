//! Signed-in sessions: what a completed sign-in opens, refresh keeps alive
//! and sign-out ends. The rules (lifetimes, rotation, reuse) are here, pure;
//! [`Sessions`] keeps the records in the store.

pub mod device;
pub mod refresh_token;
mod service;

pub use device::{Device, DeviceKind};
pub use refresh_token::RefreshKey;
pub use service::{
    AuthError, Authenticated, MAX_SESSIONS, Opening, Origin, RefreshError, Sessions, WithAccount,
};

use crate::domain::{SessionId, UserId};
use chrono::{DateTime, Duration, Utc};
use refresh_token::{Digest, Presented};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// How long sessions last.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// From sign-in, whatever happens (default 30 days).
    pub absolute: Duration,
    /// A refresh token's life: a session not refreshed within it ends.
    pub idle: Duration,
}

/// How long the refresh token a rotation replaced is still recognised as
/// a lost race rather than a reuse: requests sent together with one token
/// (two tabs, a retry) find all but one refused, and the session lives on.
/// After it, presenting a replaced token revokes the session.
pub const RACE_WINDOW: Duration = Duration::seconds(10);

/// One session, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub user: UserId,
    /// The account's credentials version at sign-in: once it moves on
    /// (a password change, any admin change), refresh refuses.
    pub user_version: u64,
    pub created_at: DateTime<Utc>,
    /// The sign-in, then each refresh.
    pub last_active_at: DateTime<Utc>,
    /// The absolute end.
    pub expires_at: DateTime<Utc>,
    /// When the current refresh token stops working.
    pub idle_until: DateTime<Utc>,
    pub ip: Option<IpAddr>,
    pub device: Device,
    pub refresh: Generation,
}

/// The refresh token a session accepts now: its place in the chain and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u32,
    pub digest: Digest,
    /// When it was issued (and the one before it replaced).
    pub issued_at: DateTime<Utc>,
}

/// What a presented refresh token means to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The token the session accepts now: rotate it.
    Current,
    /// The token replaced within [`RACE_WINDOW`]: another request with it won.
    JustReplaced,
    /// A token replaced earlier: a copy is in other hands; end the session.
    Reused,
    /// The session ended (absolute lifetime or idle timeout).
    Ended,
    /// Not a token of this session.
    Foreign,
}

impl Session {
    /// A session for a sign-in completed at `now`.
    pub fn open(
        id: SessionId,
        user: (UserId, u64),
        now: DateTime<Utc>,
        lifetimes: Lifetimes,
        ip: Option<IpAddr>,
        device: Device,
        digest: Digest,
    ) -> Session {
        let expires_at = now + lifetimes.absolute;
        Session {
            id,
            user: user.0,
            user_version: user.1,
            created_at: now,
            last_active_at: now,
            expires_at,
            idle_until: (now + lifetimes.idle).min(expires_at),
            ip,
            device,
            refresh: Generation {
                number: 0,
                digest,
                issued_at: now,
            },
        }
    }

    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at && now < self.idle_until
    }

    /// The verdict on a refresh token this service issued for this session.
    pub fn judge(&self, presented: &Presented, now: DateTime<Utc>) -> Verdict {
        let current = &self.refresh;
        if presented.user != self.user || presented.session != self.id {
            return Verdict::Foreign;
        }
        if !self.is_live(now) {
            return Verdict::Ended;
        }
        match presented.generation {
            n if n == current.number && presented.digest.matches(&current.digest) => {
                Verdict::Current
            }
            n if n.checked_add(1) == Some(current.number)
                && now < current.issued_at + RACE_WINDOW =>
            {
                Verdict::JustReplaced
            }
            n if n < current.number => Verdict::Reused,
            // The current generation with another secret, or one not issued yet:
            // only a holder of the MAC key could present it.
            _ => Verdict::Foreign,
        }
    }

    /// The session after its refresh token was replaced by one with `digest` at `now`.
    pub fn rotated(&self, digest: Digest, now: DateTime<Utc>, lifetimes: Lifetimes) -> Session {
        Session {
            last_active_at: now,
            idle_until: (now + lifetimes.idle).min(self.expires_at),
            refresh: Generation {
                number: self.refresh.number + 1,
                digest,
                issued_at: now,
            },
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const LIFETIMES: Lifetimes = Lifetimes {
        absolute: Duration::days(30),
        idle: Duration::hours(1),
    };

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn key() -> RefreshKey {
        RefreshKey::new(&[9; 32])
    }

    /// A session opened at t(0), and its first refresh token as presented.
    fn opened() -> (Session, Presented) {
        let (user, id) = (UserId::random(), SessionId::random());
        let (token, digest) = refresh_token::issue(&key(), user, id, 0).unwrap();
        let session = Session::open(
            id,
            (user, 3),
            t(0),
            LIFETIMES,
            None,
            Device::from_user_agent(""),
            digest,
        );
        (session, refresh_token::read(&key(), &token).unwrap())
    }

    /// `session` rotated at `at`, and the new token as presented.
    fn rotate(session: &Session, at: DateTime<Utc>) -> (Session, Presented) {
        let number = session.refresh.number + 1;
        let (token, digest) =
            refresh_token::issue(&key(), session.user, session.id, number).unwrap();
        (
            session.rotated(digest, at, LIFETIMES),
            refresh_token::read(&key(), &token).unwrap(),
        )
    }

    #[test]
    fn each_token_works_once_and_a_replaced_one_is_a_reuse_after_the_race_window() {
        let (session, first) = opened();
        assert_eq!(session.judge(&first, t(5)), Verdict::Current);
        let (session, second) = rotate(&session, t(5));
        assert_eq!(session.judge(&second, t(6)), Verdict::Current);
        assert_eq!(session.judge(&first, t(6)), Verdict::JustReplaced);
        assert_eq!(session.judge(&first, t(5) + RACE_WINDOW), Verdict::Reused);
        let (session, _third) = rotate(&session, t(20));
        assert_eq!(session.judge(&first, t(21)), Verdict::Reused, "two back");
        assert_eq!(session.judge(&second, t(21)), Verdict::JustReplaced);
    }

    #[test]
    fn sessions_end_when_idle_or_at_their_absolute_end() {
        let (session, first) = opened();
        assert_eq!(session.judge(&first, t(3599)), Verdict::Current);
        assert_eq!(session.judge(&first, t(3600)), Verdict::Ended, "idle");
        // Refreshed every 50 minutes, it still ends 30 days after sign-in.
        let mut session = session;
        let mut at = t(0);
        let mut token = first;
        while session.is_live(at) {
            assert_eq!(session.judge(&token, at), Verdict::Current);
            (session, token) = rotate(&session, at);
            at += Duration::minutes(50);
        }
        assert!(at >= t(0) + LIFETIMES.absolute);
        assert_eq!(session.idle_until, session.expires_at);
        assert_eq!(
            session.judge(&token, t(0) + LIFETIMES.absolute),
            Verdict::Ended
        );
    }

    #[test]
    fn another_sessions_token_or_an_unissued_generation_is_foreign() {
        let (session, first) = opened();
        let (other, theirs) = opened();
        assert_eq!(session.judge(&theirs, t(1)), Verdict::Foreign);
        assert_eq!(other.judge(&first, t(1)), Verdict::Foreign);
        let (_, ahead) = rotate(&session, t(1));
        assert_eq!(
            session.judge(&ahead, t(2)),
            Verdict::Foreign,
            "not issued yet"
        );
        let (again, _) = refresh_token::issue(&key(), session.user, session.id, 0).unwrap();
        let again = refresh_token::read(&key(), &again).unwrap();
        assert_eq!(
            session.judge(&again, t(2)),
            Verdict::Foreign,
            "same generation, other secret"
        );
    }
}
