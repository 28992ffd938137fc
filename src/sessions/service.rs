//! Sessions in the store: one record per session in its user's hash slot
//! (`{i:<user>}s<sid>`), and an index of the user's sessions beside it
//! (`{i:<user>}S`), so that listing and revoking stay within one slot.

use super::refresh_token::{self, RefreshKey};
use super::{Device, Lifetimes, Session, Verdict};
use crate::allowance::Allowance;
use crate::credentials::{AccessClaims, IssuedToken, TokenIssuer, TokenPair, TokenRejection};
use crate::domain::{Email, SessionId, UserId};
use crate::store::records;
use crate::store::{AccountReads, Key, Op, Reply, Row, Store, StoreError, Taken};
use crate::users::User;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use std::net::IpAddr;
use std::sync::Arc;

/// The most sessions a user keeps: a new one beyond it ends the one closest
/// to its idle end (the least recently used), so that no client, careless
/// or hostile, can grow a user's sessions without bound.
pub const MAX_SESSIONS: u32 = 100;

pub struct Sessions {
    store: Arc<dyn Store>,
    tokens: Arc<TokenIssuer>,
    key: RefreshKey,
    lifetimes: Lifetimes,
}

/// Where a sign-in that opens a session came from.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub email: &'a Email,
    pub user_version: u64,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
}

/// A session prepared for a sign-in (see [`Sessions::prepare`]).
pub struct Opening {
    session: Session,
    refresh: SecretString,
    ops: [Op; 2],
}

impl Opening {
    /// What writes the session.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn user(&self) -> UserId {
        self.session.user
    }

    pub fn id(&self) -> SessionId {
        self.session.id
    }
}

/// Why a refresh was refused.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, ended, revoked or reused, or its account changed: the same
    /// answer for each, so a token's holder learns nothing but "sign in again".
    #[error("the refresh token is not valid; sign in again")]
    Invalid,
    #[error("another request refreshed this session at the same time")]
    Conflict,
    #[error("too many failed attempts; try again later")]
    Blocked { retry_after: u64 },
    #[error("too many requests from this address; slow down")]
    RateLimited { retry_after: std::time::Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Why an access token was refused by this service's own endpoints.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a valid access token is required")]
    Invalid(Option<TokenRejection>),
    #[error("too many requests from this address; slow down")]
    RateLimited { retry_after: std::time::Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request with a valid access token of a live session.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub claims: AccessClaims,
    pub session: Session,
    /// The session's account as it is now, when asked for (`None` if it is gone).
    pub user: Option<User>,
}

/// Whether [`Sessions::authenticate`] also reads the session's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithAccount {
    No,
    /// In the same round trip on a single Redis.
    Yes,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        tokens: Arc<TokenIssuer>,
        key: RefreshKey,
        lifetimes: Lifetimes,
    ) -> Self {
        Self {
            store,
            tokens,
            key,
            lifetimes,
        }
    }

    /// A session for a sign-in about to complete: the caller writes its
    /// [`Opening::ops`] with the step's own write, then [`Sessions::finish`]es
    /// it, or [`Sessions::discard`]s it if the step does not stand.
    pub fn prepare(
        &self,
        user: UserId,
        origin: &Origin<'_>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Opening> {
        let now = whole_seconds(now);
        let id = SessionId::random();
        let (refresh, digest) = refresh_token::issue(&self.key, user, id, 0)?;
        let device = Device::from_user_agent(origin.user_agent.unwrap_or_default());
        let session = Session::open(
            id,
            (user, origin.user_version),
            now,
            self.lifetimes,
            origin.ip,
            device,
            digest,
        );
        // A random id never collides in practice; the insert cannot overwrite either way.
        let ops = [
            Op::Insert {
                key: Key::Session(user, id),
                row: session_row(&session, origin.email, 1)?,
                nonce: records::nonce(),
                ttl: Some(self.lifetimes.absolute),
            },
            enlist(&session, now),
        ];
        Ok(Opening {
            session,
            refresh,
            ops,
        })
    }

    /// The first tokens of a session whose record was written.
    pub async fn finish(&self, opening: &Opening) -> anyhow::Result<TokenPair> {
        let session = &opening.session;
        Ok(TokenPair {
            access: self.sign(session, session.created_at).await?,
            refresh: refresh_issued(opening.refresh.clone(), session),
        })
    }

    /// Ends a session whose sign-in did not stand (best effort: its tokens
    /// were never handed out).
    pub async fn discard(&self, opening: &Opening) {
        let session = &opening.session;
        if let Err(e) = self.end(session.user, session.id).await {
            tracing::warn!(error = %e, session = %session.id, "could not end a session whose sign-in failed");
        }
    }

    /// Exchanges a refresh token for a new pair (RFC 9700 §4.14.2: the
    /// token is replaced; an earlier one, presented again, ends the session).
    pub async fn refresh(
        &self,
        token: &SecretString,
        allowance: Option<&Allowance>,
        now: DateTime<Utc>,
    ) -> Result<TokenPair, RefreshError> {
        let now = whole_seconds(now);
        // A token nobody issued never reaches the store (the limiter counts it).
        let presented = refresh_token::read(&self.key, token).ok_or(RefreshError::Invalid)?;
        let key = Key::Session(presented.user, presented.session);
        // The session and its account as they are now, in one round trip
        // with the per-IP allowance (two on a Cluster: their slots differ).
        let reads = AccountReads {
            now,
            window: chrono::Duration::zero(),
            count: false,
            totp: false,
        };
        let bound = Op::ReadBound {
            record: key.clone(),
            reads,
            code: None,
        };
        let mut replies = self
            .first_trip(allowance, bound)
            .await
            .map_err(|e| match e {
                First::Refused(retry_after) => RefreshError::RateLimited { retry_after },
                First::Store(e) => e.into(),
            })?;
        let (row, account) = match replies.next() {
            Some(Reply::Bound {
                record: Some(row),
                account,
                ..
            }) => (row, account),
            Some(Reply::Bound { record: None, .. }) => return Err(RefreshError::Invalid),
            other => return Err(records::unexpected(other).into()),
        };
        let (session, email) = read_session(row.clone())?;
        match session.judge(&presented, now) {
            Verdict::Current => {}
            Verdict::JustReplaced => return Err(RefreshError::Conflict),
            Verdict::Reused => {
                tracing::warn!(session = %session.id, user = %session.user, "a replaced refresh token was presented again: ending its session");
                self.end(session.user, session.id).await?;
                return Err(RefreshError::Invalid);
            }
            Verdict::Ended | Verdict::Foreign => return Err(RefreshError::Invalid),
        }

        // The account as it is now: gone, changed or due a reset ends the session.
        let account = account.ok_or_else(|| {
            records::corrupt(anyhow::anyhow!("a session's record names no account"))
        })?;
        let user = account.user.map(records::read_user).transpose()?;
        let current = user.as_ref().is_some_and(|u| still_current(u, &session));
        if !current {
            tracing::info!(session = %session.id, "the account changed since sign-in: ending its session");
            self.end(session.user, session.id).await?;
            return Err(RefreshError::Invalid);
        }
        if let Taken::Blocked { until } = account.taken {
            return Err(RefreshError::Blocked {
                retry_after: crate::lockout::retry_after(until, now),
            });
        }

        let number = session.refresh.number + 1;
        let (refresh, digest) = refresh_token::issue(&self.key, session.user, session.id, number)?;
        let next = session.rotated(digest, now, self.lifetimes);
        let swap = [
            Op::Swap {
                key: key.clone(),
                expected: row.version,
                row: session_row(&next, &email, 0)?,
                nonce: records::nonce(),
            },
            // Its new idle end, in the index.
            enlist(&next, now),
        ];
        let stages: [&[Op]; 1] = [&swap];
        let (swapped, access) = tokio::join!(self.store.run(&stages), self.sign(&next, now));
        let mut swapped = swapped?.into_iter();
        let replaced = records::done(swapped.next().ok_or_else(missing)?)?;
        if !replaced {
            // Exactly one request replaces a token. Lost to another refresh,
            // or the session ended meanwhile (then it stays ended)?
            return match self
                .store
                .run(&[&[Op::Read(key)]])
                .await?
                .into_iter()
                .next()
            {
                Some(Reply::Row(Some(_))) => Err(RefreshError::Conflict),
                _ => {
                    self.end(next.user, next.id).await?;
                    Err(RefreshError::Invalid)
                }
            };
        }
        self.end_beyond_limit(next.user, swapped.next()).await;
        Ok(TokenPair {
            access: access?,
            refresh: refresh_issued(refresh, &next),
        })
    }

    /// The access token's claims and its live session, or why not: this
    /// service refuses the tokens of a revoked session at once.
    pub async fn authenticate(
        &self,
        bearer: &str,
        allowance: Option<&Allowance>,
        with: WithAccount,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, AuthError> {
        let claims = self
            .tokens
            .verify_access(bearer, now)
            .map_err(|e| AuthError::Invalid(Some(e)))?;
        let (Ok(user), Ok(id)) = (UserId::parse(&claims.sub), SessionId::parse(&claims.sid)) else {
            return Err(AuthError::Invalid(None));
        };
        let key = Key::Session(user, id);
        let op = match with {
            WithAccount::No => Op::Read(key),
            WithAccount::Yes => Op::ReadBound {
                record: key,
                reads: AccountReads {
                    now,
                    window: chrono::Duration::zero(),
                    count: false,
                    totp: false,
                },
                code: None,
            },
        };
        let mut replies = self.first_trip(allowance, op).await.map_err(|e| match e {
            First::Refused(retry_after) => AuthError::RateLimited { retry_after },
            First::Store(e) => e.into(),
        })?;
        let (row, account) = match replies.next() {
            Some(Reply::Row(row)) => (row, None),
            Some(Reply::Bound {
                record, account, ..
            }) => (record, account),
            other => return Err(records::unexpected(other).into()),
        };
        let session = row
            .map(read_session)
            .transpose()?
            .map(|(session, _)| session);
        let found = account
            .and_then(|account| account.user)
            .map(records::read_user)
            .transpose()?
            .filter(|found| found.id == user);
        match session {
            Some(session) if session.user == user && session.is_live(now) => Ok(Authenticated {
                claims,
                session,
                user: found,
            }),
            _ => Err(AuthError::Invalid(None)),
        }
    }

    /// The user's live sessions, newest first.
    pub async fn list(&self, user: UserId, now: DateTime<Utc>) -> Result<Vec<Session>, StoreError> {
        let ids = self.ids(user, now).await?;
        let reads: Vec<Op> = ids
            .iter()
            .map(|id| Op::Read(Key::Session(user, *id)))
            .collect();
        let mut sessions = Vec::new();
        for reply in self.store.run(&[&reads]).await? {
            if let Some(row) = records::row(reply)? {
                let (session, _) = read_session(row)?;
                if session.is_live(now) {
                    sessions.push(session);
                }
            }
        }
        sessions.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id.to_string())));
        Ok(sessions)
    }

    /// Moves `session` from its account's credentials version `from` to
    /// `version`, after a change its own user made through it (the others
    /// end); whether it did. A session still at an older version stays
    /// behind (it is refused at its next refresh). A refresh racing with
    /// it wins the record, and this tries again on what it wrote.
    pub async fn follow(
        &self,
        session: &Session,
        from: u64,
        version: u64,
    ) -> Result<bool, StoreError> {
        let key = Key::Session(session.user, session.id);
        for _ in 0..3 {
            let Some(row) = records::row(self.next(Op::Read(key.clone())).await?)? else {
                return Ok(false);
            };
            let (mut current, email) = read_session(row.clone())?;
            if current.user_version != from {
                return Ok(false);
            }
            current.user_version = version;
            let swap = Op::Swap {
                key: key.clone(),
                expected: row.version,
                row: session_row(&current, &email, 0)?,
                nonce: records::nonce(),
            };
            if records::done(self.next(swap).await?)? {
                return Ok(true);
            }
        }
        // The change is written; this session is refused at its next
        // refresh, and its client signs in again.
        tracing::warn!(session = %session.id, "a session kept changing while its account changed");
        Ok(false)
    }

    async fn next(&self, op: Op) -> Result<Reply, StoreError> {
        self.store
            .run(&[&[op]])
            .await?
            .into_iter()
            .next()
            .ok_or_else(missing)
    }

    /// Ends one of the user's sessions; whether it was there.
    pub async fn end(&self, user: UserId, id: SessionId) -> Result<bool, StoreError> {
        Ok(self.end_many(user, &[id]).await? == 1)
    }

    /// Ends all of the user's sessions but `keep`; how many ended. Every
    /// member of the index counts, idle or not: ending one too many costs
    /// nothing, missing one would leave it working.
    pub async fn end_all(
        &self,
        user: UserId,
        keep: Option<SessionId>,
    ) -> Result<usize, StoreError> {
        let ids: Vec<SessionId> = self
            .ids(user, DateTime::<Utc>::MIN_UTC)
            .await?
            .into_iter()
            .filter(|id| Some(*id) != keep)
            .collect();
        self.end_many(user, &ids).await
    }

    /// Ends the user's sessions `ids` (record, then index entry); how many were there.
    async fn end_many(&self, user: UserId, ids: &[SessionId]) -> Result<usize, StoreError> {
        let ops: Vec<Op> = ids
            .iter()
            .flat_map(|id| {
                [
                    Op::Delete(Key::Session(user, *id)),
                    Op::Delist {
                        set: Key::Sessions(user),
                        member: id.to_string(),
                    },
                ]
            })
            .collect();
        let mut ended = 0;
        for reply in self.store.run(&[&ops]).await?.into_iter().step_by(2) {
            ended += usize::from(records::done(reply)?);
        }
        Ok(ended)
    }

    async fn ids(&self, user: UserId, now: DateTime<Utc>) -> Result<Vec<SessionId>, StoreError> {
        let members = Op::Members {
            set: Key::Sessions(user),
            now,
        };
        match self.store.run(&[&[members]]).await?.into_iter().next() {
            // A member that is not a session id is skipped, not fatal.
            Some(Reply::Members(ids)) => Ok(ids
                .iter()
                .filter_map(|id| SessionId::parse(id).ok())
                .collect()),
            other => Err(records::unexpected(other)),
        }
    }

    /// `op`, with the client address's allowance in the same round trip.
    async fn first_trip(
        &self,
        allowance: Option<&Allowance>,
        op: Op,
    ) -> Result<std::vec::IntoIter<Reply>, First> {
        let ops: Vec<Op> = allowance
            .map(|a| a.op().clone())
            .into_iter()
            .chain([op])
            .collect();
        let mut replies = self
            .store
            .run(&[&ops])
            .await
            .map_err(First::Store)?
            .into_iter();
        if let Some(allowance) = allowance {
            match replies.next() {
                Some(Reply::Rate(rate)) => {
                    if let Some(wait) = allowance.settle(rate) {
                        return Err(First::Refused(wait));
                    }
                }
                other => return Err(First::Store(records::unexpected(other))),
            }
        }
        Ok(replies)
    }

    /// Ends the sessions an enlisting found beyond [`MAX_SESSIONS`] (the
    /// least recently used). Best effort: a session not ended stays in the
    /// index, where the next enlisting, a listing or an end-all finds it.
    pub async fn end_beyond_limit(&self, user: UserId, reply: Option<Reply>) {
        let ids: Vec<SessionId> = match reply {
            Some(Reply::Members(ids)) => ids
                .iter()
                .filter_map(|id| SessionId::parse(id).ok())
                .collect(),
            _ => return,
        };
        if ids.is_empty() {
            return;
        }
        tracing::info!(user = %user, count = ids.len(), "over the session limit: ending the least recently used");
        if let Err(e) = self.end_many(user, &ids).await {
            tracing::warn!(error = %e, "could not end sessions beyond the limit");
        }
    }

    /// The access token of `session`, signed on the blocking pool (CPU work).
    /// It ends with the session's refresh token at the latest.
    async fn sign(&self, session: &Session, now: DateTime<Utc>) -> anyhow::Result<IssuedToken> {
        let tokens = Arc::clone(&self.tokens);
        let (user, id, ends) = (session.user, session.id, session.idle_until);
        tokio::task::spawn_blocking(move || tokens.issue_access(user, id, now, ends)).await?
    }
}

enum First {
    Refused(std::time::Duration),
    Store(StoreError),
}

impl Authenticated {
    /// Whether the session's account (read with it) is still the one it
    /// signed in: a session an account change left behind changes nothing.
    pub fn is_current(&self) -> bool {
        self.user
            .as_ref()
            .is_some_and(|user| still_current(user, &self.session))
    }
}

/// Whether the account is still the one the session signed in: same id,
/// same credentials version, and no reset due.
fn still_current(user: &User, session: &Session) -> bool {
    user.id == session.user
        && user.credentials_version == session.user_version
        && !user.force_password_reset
}

/// Files `session` in its user's index until its refresh token ends (its
/// idle end): the index holds only sessions that can still be used, at most
/// [`MAX_SESSIONS`] of them.
fn enlist(session: &Session, now: DateTime<Utc>) -> Op {
    Op::Enlist {
        set: Key::Sessions(session.user),
        member: session.id.to_string(),
        until: session.idle_until,
        now,
        keep: MAX_SESSIONS,
    }
}

fn session_row(session: &Session, email: &Email, version: u64) -> Result<Row, StoreError> {
    Ok(Row {
        version,
        account: Some(email.as_str().to_owned()),
        body: records::encode(session)?,
    })
}

/// A stored session and the account (email) its record names.
fn read_session(row: Row) -> Result<(Session, Email), StoreError> {
    let session: Session = records::decode(&row.body)?;
    let email = row
        .account
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(records::corrupt)?
        .ok_or_else(|| records::corrupt(anyhow::anyhow!("a session names no account")))?;
    Ok((session, email))
}

fn refresh_issued(token: SecretString, session: &Session) -> IssuedToken {
    IssuedToken {
        token,
        created_at: session.refresh.issued_at,
        expires_at: session.idle_until,
    }
}

/// Tokens name whole seconds, so the envelope's times equal their claims.
fn whole_seconds(now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

fn missing() -> StoreError {
    records::corrupt(anyhow::anyhow!("a reply is missing"))
}
