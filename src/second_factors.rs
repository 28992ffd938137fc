//! Self-service second factors: a signed-in user sets up, enables and
//! disables an authenticator app, and renews its backup codes.
//!
//! Every change proves the person again (the password to set an app up, a
//! current code to take one away), and every proof takes an attempt of the
//! account's lockout exactly like a sign-in step (see `lockout`). A change
//! is a compare-and-set on the user record that bumps its credentials
//! version: wizards begun before it start over, the session that made it
//! moves to the new version, and the user's other sessions end.

use crate::clock::Clock;
use crate::credentials::{
    HashError, OneTimeCodes, PasswordHasher, StoredBackupCodes, StoredTotp, TotpSecret, TotpVault,
};
use crate::delivery::{DeliveryError, SmsGateway};
use crate::domain::{BackupCode, OtpCode, Password, PhoneNumber};
use crate::lockout::{self, Admission, Attempt, Gate, Limits};
use crate::policy::LivePolicy;
use crate::sessions::{Session, Sessions};
use crate::store::records::{self, nonce};
use crate::store::{AccountReads, Key, Op, Reply, Row, Store, StoreError, TOTP_STEP_KEPT};
use crate::users::{AccountChange, User};
use crate::wizard::{CodeChallenge, Rejection};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How long a set-up app waits for its first code.
pub const SETUP_KEPT: Duration = Duration::minutes(10);

/// Built once in `startup`.
pub struct SecondFactors {
    pub store: Arc<dyn Store>,
    pub passwords: Arc<PasswordHasher>,
    pub codes: OneTimeCodes,
    pub totp: TotpVault,
    pub sessions: Arc<Sessions>,
    pub policy: Arc<LivePolicy>,
    pub clock: Clock,
    pub sms: SmsGateway,
    pub sms_code_ttl: Duration,
    pub resend_cooldown: Duration,
    pub max_resends: u32,
}

/// What a person shows to change a factor, already parsed.
#[derive(Debug)]
pub enum Proof {
    Password(Password),
    Totp(OtpCode),
    BackupCode(BackupCode),
}

#[derive(Debug, thiserror::Error)]
pub enum FactorError {
    #[error("the password or code is not right")]
    Refused,
    #[error("too many failed attempts; try again later")]
    TooManyAttempts { retry_after: u64 },
    #[error("the account already has an authenticator app")]
    AlreadyEnabled,
    #[error("the account has no such factor")]
    NotEnabled,
    #[error("no authenticator app is waiting for its first code; set one up first")]
    NoPendingSetup,
    #[error("the account changed meanwhile; read it again")]
    Conflict,
    #[error("the code expired; ask for a new one")]
    CodeExpired,
    #[error("this account proves changes with a code from its authenticator app or a backup code")]
    CodeRequired,
    #[error("this account must keep a second factor")]
    FactorRequired,
    #[error("a code was sent moments ago; wait before asking again")]
    ResendTooSoon { retry_after: u64 },
    #[error("no more codes can be sent to prove this number for now")]
    ResendLimit,
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("too many password checks are waiting; retry shortly")]
    Overloaded,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<HashError> for FactorError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => FactorError::Overloaded,
            HashError::Internal(e) => FactorError::Internal(e),
        }
    }
}

/// The account's second factors as its owner sees them.
#[derive(Debug)]
pub struct Status {
    pub totp: bool,
    pub phone: Option<PhoneNumber>,
    /// `None` when the account holds no backup codes.
    pub backup_codes_left: Option<usize>,
}

/// An app set up and waiting for its first code: shown once.
#[derive(Debug)]
pub struct TotpSetup {
    pub secret: TotpSecret,
    pub backup_codes: Vec<BackupCode>,
}

/// A phone number on its way to the account: the code is sent.
#[derive(Debug)]
pub struct PhoneCheck {
    pub phone: PhoneNumber,
    pub expires_at: DateTime<Utc>,
}

/// A phone number waiting for the code sent to it.
#[derive(Serialize, Deserialize)]
struct PendingPhone {
    phone: PhoneNumber,
    /// Which sending the challenge's digest is bound to.
    issue: u64,
    challenge: CodeChallenge,
}

/// What a setup keeps until its first code comes back.
#[derive(Serialize, Deserialize)]
struct Pending {
    secret: StoredTotp,
    backup_codes: StoredBackupCodes,
}

impl SecondFactors {
    pub async fn status(&self, user: &User) -> Result<Status, FactorError> {
        let backup_codes_left = match &user.backup_codes {
            Some(stored) => Some(
                stored
                    .digests
                    .len()
                    .saturating_sub(self.used(user, stored).await?),
            ),
            None => None,
        };
        Ok(Status {
            totp: user.totp_secret.is_some(),
            phone: user.phone.clone(),
            backup_codes_left,
        })
    }

    /// A new secret and backup codes, kept (sealed, and as digests) until
    /// the app's first code confirms them; nothing changes before that. A
    /// second setup replaces the first.
    pub async fn set_up_totp(&self, user: &User, proof: Proof) -> Result<TotpSetup, FactorError> {
        if user.totp_secret.is_some() {
            return Err(FactorError::AlreadyEnabled);
        }
        let now = self.clock.now();
        let attempt = self.prove(user, &proof, now).await?;
        let secret = TotpSecret::generate();
        let (backup_codes, stored) = self.codes.issue_backup_codes(user.id);
        let pending = Pending {
            secret: self.totp.seal(user.id, secret.clone())?,
            backup_codes: stored,
        };
        let key = Key::PendingTotp(user.id);
        let insert = Op::Insert {
            key: key.clone(),
            row: Row {
                version: 1,
                account: None,
                body: records::encode(&pending)?,
            },
            nonce: nonce(),
            ttl: Some(SETUP_KEPT),
        };
        let mut first: Vec<Op> = vec![Op::Delete(key)];
        first.extend(self.give_back(user, attempt));
        let inserted = self.store.run(&[&first, &[insert]]).await?.pop();
        // Another setup, at the same moment, stored its own secret instead.
        if !records::done(inserted.ok_or_else(|| records::unexpected(None))?)? {
            return Err(FactorError::Conflict);
        }
        Ok(TotpSetup {
            secret,
            backup_codes,
        })
    }

    /// The set-up app's first code: the app and its backup codes go on the account.
    pub async fn enable_totp(
        &self,
        user: &User,
        session: &Session,
        proof: Proof,
    ) -> Result<Status, FactorError> {
        let Proof::Totp(code) = proof else {
            return Err(FactorError::Refused);
        };
        if user.totp_secret.is_some() {
            return Err(FactorError::AlreadyEnabled);
        }
        let now = self.clock.now();
        let (attempt, last_step, row) = self
            .take_with_pending(user, Key::PendingTotp(user.id), true, now)
            .await?;
        let pending: Pending = records::decode(&row.body)?;
        let secret = self.totp.open(user.id, &pending.secret)?;
        let Some(step) = fresh_step(&secret, &code, now, last_step) else {
            return Err(self.refused(user, attempt, now).await);
        };
        self.claim(user, Some(advance(user, step)), attempt, now)
            .await?;
        let changed = self
            .change(
                user,
                session,
                attempt,
                AccountChange {
                    totp_secret: Some(Some(pending.secret)),
                    backup_codes: Some(Some(pending.backup_codes)),
                    ..AccountChange::default()
                },
                vec![Op::Delete(Key::PendingTotp(user.id))],
            )
            .await?;
        self.status(&changed).await
    }

    /// Takes the app off the account, proven by one of its codes or a backup code.
    pub async fn disable_totp(
        &self,
        user: &User,
        session: &Session,
        proof: Proof,
    ) -> Result<Status, FactorError> {
        if user.totp_secret.is_none() {
            return Err(FactorError::NotEnabled);
        }
        if matches!(proof, Proof::Password(_)) {
            return Err(FactorError::CodeRequired);
        }
        let change = AccountChange {
            totp_secret: Some(None),
            ..AccountChange::default()
        };
        self.take_away(user, session, proof, change, user.phone.is_some())
            .await
    }

    /// Takes a factor off the account (`change`), proven by `proof`;
    /// refused when it is the last one (`another_left` is false) of an
    /// account that must have one.
    async fn take_away(
        &self,
        user: &User,
        session: &Session,
        proof: Proof,
        change: AccountChange,
        another_left: bool,
    ) -> Result<Status, FactorError> {
        if !another_left && self.must_have_factor(user) {
            return Err(FactorError::FactorRequired);
        }
        let attempt = self.prove(user, &proof, self.clock.now()).await?;
        let changed = self
            .change(user, session, attempt, change, Vec::new())
            .await?;
        self.status(&changed).await
    }

    /// Ten new backup codes, shown once; the old ones stop working.
    pub async fn renew_backup_codes(
        &self,
        user: &User,
        session: &Session,
        proof: Proof,
    ) -> Result<Vec<BackupCode>, FactorError> {
        // Backup codes stand in for a factor: without one there is nothing to renew.
        if user.totp_secret.is_none() && user.phone.is_none() {
            return Err(FactorError::NotEnabled);
        }
        let attempt = self.prove(user, &proof, self.clock.now()).await?;
        let (codes, stored) = self.codes.issue_backup_codes(user.id);
        let change = AccountChange {
            backup_codes: Some(Some(stored)),
            ..AccountChange::default()
        };
        self.change(user, session, attempt, change, Vec::new())
            .await?;
        Ok(codes)
    }

    /// Sends a code to `phone` (ASVS 6.6.1: a number is the account's only
    /// once proven); a second number, or the same again, is a resend under
    /// the wizard's own resend rules, so a session cannot pump texts.
    pub async fn send_phone_code(
        &self,
        user: &User,
        phone: PhoneNumber,
        proof: Proof,
    ) -> Result<PhoneCheck, FactorError> {
        if user.phone.as_ref() == Some(&phone) {
            return Err(FactorError::AlreadyEnabled);
        }
        let now = self.clock.now();
        let key = Key::PendingPhone(user.id);
        // The resend rules first, so that a refused resend costs no attempt
        // (the swap below fails if another sending came in between).
        let earlier = records::row(self.one(Op::Read(key.clone())).await?)?;
        let resends = match &earlier {
            Some(row) => {
                let earlier: PendingPhone = records::decode(&row.body)?;
                earlier
                    .challenge
                    .resend(now, self.resend_cooldown, self.max_resends)
                    .map_err(refused_resend)?
            }
            None => 0,
        };
        let attempt = self.prove(user, &proof, now).await?;
        let issue = nonce();
        let fresh = self.codes.fresh_phone(user.id, issue);
        let expires_at = now + self.sms_code_ttl;
        let pending = PendingPhone {
            phone: phone.clone(),
            issue,
            challenge: CodeChallenge {
                digest: fresh.digest,
                sent_at: now,
                expires_at,
                resends,
            },
        };
        let row = Row {
            version: 1,
            account: None,
            body: records::encode(&pending)?,
        };
        // The window of resends is the first sending's: a swap keeps its time to live.
        let (write, undo) = match &earlier {
            Some(before) => (
                Op::Swap {
                    key: key.clone(),
                    expected: before.version,
                    row,
                    nonce: nonce(),
                },
                Op::Swap {
                    key,
                    expected: before.version + 1,
                    row: before.clone(),
                    nonce: nonce(),
                },
            ),
            None => (
                Op::Insert {
                    key: key.clone(),
                    row,
                    nonce: nonce(),
                    ttl: Some(SETUP_KEPT),
                },
                Op::Remove {
                    key,
                    expected: 1,
                    nonce: nonce(),
                },
            ),
        };
        let mut ops = vec![write];
        ops.extend(self.give_back(user, attempt));
        let written = self.store.run(&[&ops]).await?.into_iter().next();
        if !records::done(written.ok_or_else(|| records::unexpected(None))?)? {
            return Err(FactorError::Conflict);
        }
        if let Err(e) = self.sms.send_code(&phone, &fresh.code).await {
            // Left as it was: the earlier code (if any) still works.
            self.run_best_effort([undo]).await;
            return Err(e.into());
        }
        Ok(PhoneCheck { phone, expires_at })
    }

    /// The code sent to the new number: it becomes the account's phone.
    pub async fn confirm_phone(
        &self,
        user: &User,
        session: &Session,
        proof: Proof,
    ) -> Result<Status, FactorError> {
        let Proof::Totp(code) = proof else {
            return Err(FactorError::Refused);
        };
        let now = self.clock.now();
        let key = Key::PendingPhone(user.id);
        let (attempt, _, row) = self
            .take_with_pending(user, key.clone(), false, now)
            .await?;
        let pending: PendingPhone = records::decode(&row.body)?;
        let digest = self.codes.phone_digest(user.id, pending.issue, &code);
        match pending.challenge.check(&digest, now) {
            Ok(()) => {}
            Err(Rejection::CodeExpired) => {
                return Err(self
                    .no_verdict(user, attempt, FactorError::CodeExpired)
                    .await);
            }
            Err(_) => return Err(self.refused(user, attempt, now).await),
        }
        // Single-use: of requests racing with the code, one removes it.
        let claim = Op::Remove {
            key,
            expected: row.version,
            nonce: nonce(),
        };
        self.claim(user, Some(claim), attempt, now).await?;
        let change = AccountChange {
            phone: Some(Some(pending.phone)),
            ..AccountChange::default()
        };
        let changed = self
            .change(user, session, attempt, change, Vec::new())
            .await?;
        self.status(&changed).await
    }

    /// Takes the phone off the account.
    pub async fn remove_phone(
        &self,
        user: &User,
        session: &Session,
        proof: Proof,
    ) -> Result<Status, FactorError> {
        if user.phone.is_none() {
            return Err(FactorError::NotEnabled);
        }
        let change = AccountChange {
            phone: Some(None),
            ..AccountChange::default()
        };
        self.take_away(user, session, proof, change, user.totp_secret.is_some())
            .await
    }

    async fn one(&self, op: Op) -> Result<Reply, FactorError> {
        let reply = self.store.run(&[&[op]]).await?.into_iter().next();
        Ok(reply.ok_or_else(|| records::unexpected(None))?)
    }

    /// Checks `proof` against `user` under the account's lockout, and wins
    /// the single-use code it is (a TOTP step, a backup code).
    async fn prove(
        &self,
        user: &User,
        proof: &Proof,
        now: DateTime<Utc>,
    ) -> Result<Option<Attempt>, FactorError> {
        // An account with an app or backup codes proves changes with one of
        // them: its password alone (with a stolen token) changes nothing.
        if matches!(proof, Proof::Password(_))
            && (user.totp_secret.is_some() || user.backup_codes.is_some())
        {
            return Err(FactorError::CodeRequired);
        }
        let is_totp = matches!(proof, Proof::Totp(_));
        let (attempt, last_step, _) = self.take_attempt(user, is_totp, None, now).await?;
        let claim = match self.check(user, proof, last_step, now).await {
            Ok(claim) => claim,
            // A check that could not be made (the password queue full, the
            // store down) is no verdict: the attempt goes back.
            Err(error) => return Err(self.no_verdict(user, attempt, error).await),
        };
        match claim {
            Some(claim) => {
                self.claim(user, claim, attempt, now).await?;
                Ok(attempt)
            }
            None => Err(self.refused(user, attempt, now).await),
        }
    }

    /// Whether `proof` is right: if so, with the single-use code to claim.
    async fn check(
        &self,
        user: &User,
        proof: &Proof,
        last_step: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<Option<Option<Op>>, FactorError> {
        Ok(match proof {
            Proof::Password(password) => self
                .passwords
                .verify(password, Some(&user.password_hash))
                .await?
                .then_some(None),
            Proof::Totp(code) => {
                let secret = user
                    .totp_secret
                    .as_ref()
                    .map(|stored| self.totp.open(user.id, stored))
                    .transpose()?;
                secret
                    .and_then(|s| fresh_step(&s, code, now, last_step))
                    .map(|step| Some(advance(user, step)))
            }
            Proof::BackupCode(code) => user.backup_codes.as_ref().and_then(|stored| {
                let index = self.codes.find_backup_code(user.id, stored, code)?;
                Some(Some(Op::Claim {
                    key: Key::UsedBackupCodes(user.id, stored.generation),
                    member: index.to_string(),
                    nonce: nonce(),
                }))
            }),
        })
    }

    /// The account's attempt taken with the record waiting at `key`
    /// (its last TOTP step too, with `totp`); nothing waiting is no verdict.
    async fn take_with_pending(
        &self,
        user: &User,
        key: Key,
        totp: bool,
        now: DateTime<Utc>,
    ) -> Result<(Option<Attempt>, Option<u64>, Row), FactorError> {
        let (attempt, last_step, reply) = self
            .take_attempt(user, totp, Some(Op::Read(key)), now)
            .await?;
        match reply.map(records::row).transpose()?.flatten() {
            Some(row) => Ok((attempt, last_step, row)),
            None => Err(self
                .no_verdict(user, attempt, FactorError::NoPendingSetup)
                .await),
        }
    }

    /// A request that ends without a verdict on its proof gives its attempt back.
    async fn no_verdict(
        &self,
        user: &User,
        attempt: Option<Attempt>,
        error: FactorError,
    ) -> FactorError {
        self.run_best_effort(self.give_back(user, attempt)).await;
        error
    }

    /// The account's attempt, taken before any check (see `lockout`), with
    /// its last accepted TOTP step and, in the same round trip, `also`.
    async fn take_attempt(
        &self,
        user: &User,
        totp: bool,
        also: Option<Op>,
        now: DateTime<Utc>,
    ) -> Result<(Option<Attempt>, Option<u64>, Option<Reply>), FactorError> {
        let gate = self.gate(now);
        let read = Op::ReadAccount {
            account: user.email.clone(),
            reads: AccountReads {
                now,
                window: gate.limits.window,
                count: true,
                totp,
            },
        };
        let ops: Vec<Op> = std::iter::once(read).chain(also).collect();
        let mut replies = self.store.run(&[&ops]).await?.into_iter();
        let account = match replies.next() {
            Some(Reply::Account(account)) => account,
            other => return Err(records::unexpected(other).into()),
        };
        // (No wizard's codes are counted here: only a block refuses.)
        if let Admission::Blocked { until } = lockout::admit(account.taken, 0, &gate) {
            return Err(blocked(until, now));
        }
        let attempt = Attempt::from_taken(account.taken, nonce());
        Ok((
            attempt,
            account.totp_step.map(|last| last.step),
            replies.next(),
        ))
    }

    /// Wins `claim` (if any); lost to another request, the proof was a
    /// replay and is refused like a wrong one.
    async fn claim(
        &self,
        user: &User,
        claim: Option<Op>,
        attempt: Option<Attempt>,
        now: DateTime<Utc>,
    ) -> Result<(), FactorError> {
        let Some(claim) = claim else { return Ok(()) };
        let won = match self.store.run(&[&[claim]]).await?.into_iter().next() {
            Some(Reply::Done(done)) => done,
            Some(Reply::Claim { held, .. }) => held,
            other => return Err(records::unexpected(other).into()),
        };
        if !won {
            return Err(self.refused(user, attempt, now).await);
        }
        Ok(())
    }

    /// A wrong proof: its attempt stays counted, and the last of a window
    /// blocks the account.
    async fn refused(
        &self,
        user: &User,
        attempt: Option<Attempt>,
        now: DateTime<Utc>,
    ) -> FactorError {
        let limits = self.gate(now).limits;
        if attempt.is_some_and(|a| a.was_last(&limits)) {
            let until = now + limits.block;
            self.run_best_effort(vec![Op::Block {
                account: user.email.clone(),
                now,
                until,
            }])
            .await;
        }
        FactorError::Refused
    }

    /// Writes `change` to the account (compare-and-set on the version the
    /// request read), gives the proof's attempt back, then moves the
    /// session to the new version and ends the user's other sessions.
    async fn change(
        &self,
        user: &User,
        session: &Session,
        attempt: Option<Attempt>,
        change: AccountChange,
        mut tidy: Vec<Op>,
    ) -> Result<User, FactorError> {
        let changed = user.clone().changed(change);
        let mut write = vec![records::replace_user(user.credentials_version, &changed)?];
        write.extend(self.give_back(user, attempt));
        let replies = self.store.run(&[&write]).await?;
        let written = replies
            .into_iter()
            .next()
            .map(records::done)
            .transpose()?
            .unwrap_or(false);
        if !written {
            return Err(FactorError::Conflict);
        }
        let version = changed.credentials_version;
        tracing::info!(user = %user.id, "second factors changed");
        // The used codes of a generation that is gone are of no more use.
        if let Some(old) = &user.backup_codes
            && changed.backup_codes.as_ref().map(|c| c.generation) != Some(old.generation)
        {
            tidy.push(Op::Delete(Key::UsedBackupCodes(user.id, old.generation)));
        }
        self.run_best_effort(tidy).await;
        // The change stands whatever follows: failures here are logged (a
        // session left behind is refused at its next refresh anyway).
        match self
            .sessions
            .follow(session, user.credentials_version, version)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(session = %session.id, "the session did not follow its account's change")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not move a session to its account's change")
            }
        }
        if let Err(e) = self.sessions.end_all(user.id, Some(session.id)).await {
            tracing::warn!(error = %e, user = %user.id, "could not end the sessions after a change of factor");
        }
        Ok(changed)
    }

    /// How many of `stored`'s codes were used.
    async fn used(&self, user: &User, stored: &StoredBackupCodes) -> Result<usize, FactorError> {
        let op = Op::Claimed(Key::UsedBackupCodes(user.id, stored.generation));
        match self.store.run(&[&[op]]).await?.into_iter().next() {
            Some(Reply::Members(used)) => Ok(used.len()),
            other => Err(records::unexpected(other).into()),
        }
    }

    /// The settings or an admin require a second factor of this account.
    fn must_have_factor(&self, user: &User) -> bool {
        user.second_factor_required || self.policy.get().second_factor_required
    }

    fn gate(&self, now: DateTime<Utc>) -> Gate {
        let policy = self.policy.get();
        Gate {
            take: true,
            code: false,
            limits: Limits {
                now,
                max_attempts: policy.max_attempts,
                window: policy.attempts_window(),
                block: policy.block(),
                codes_per_wizard: 0,
            },
        }
    }

    fn give_back(&self, user: &User, attempt: Option<Attempt>) -> Option<Op> {
        let window = self.gate(self.clock.now()).limits.window;
        attempt.map(|attempt| Op::GiveBack {
            account: user.email.clone(),
            since: attempt.window,
            ticket: attempt.ticket,
            window,
        })
    }

    /// Writes whose failure changes no verdict (they are logged).
    async fn run_best_effort(&self, ops: impl IntoIterator<Item = Op>) {
        let ops: Vec<Op> = ops.into_iter().collect();
        if ops.is_empty() {
            return;
        }
        if let Err(e) = self.store.run(&[&ops]).await {
            tracing::warn!(error = %e, "a best-effort write failed");
        }
    }
}

/// The TOTP step `step` taken for the account: no code of it (or of an
/// earlier step) works again.
fn advance(user: &User, step: u64) -> Op {
    Op::Advance {
        account: user.email.clone(),
        step,
        nonce: nonce(),
        ttl: TOTP_STEP_KEPT,
    }
}

/// The TOTP step `code` proves with `secret` at `now`, unless the account
/// accepted that step (or a later one) already.
fn fresh_step(
    secret: &TotpSecret,
    code: &OtpCode,
    now: DateTime<Utc>,
    last: Option<u64>,
) -> Option<u64> {
    secret
        .verify(code, now)
        .filter(|step| last.is_none_or(|last| *step > last))
}

fn refused_resend(rejection: Rejection) -> FactorError {
    match rejection {
        Rejection::ResendTooSoon { retry_after_secs } => FactorError::ResendTooSoon {
            retry_after: retry_after_secs,
        },
        _ => FactorError::ResendLimit,
    }
}

fn blocked(until: DateTime<Utc>, now: DateTime<Utc>) -> FactorError {
    FactorError::TooManyAttempts {
        retry_after: lockout::retry_after(until, now),
    }
}
