//! Where wizards, users and the keyring live: in process, or in Redis.
//!
//! Both backends give the same guarantees: a wizard step is a compare-and-set
//! on the wizard's version, so two concurrent requests can never both move
//! the same wizard; an email belongs to at most one user.

mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::{RedisStore, RedisStoreConfig};

use crate::credentials::Keyring;
use crate::domain::{Email, UserId, WizardId};
use crate::lockout::{Admission, Attempt, AttemptKey, Gate};
use crate::policy::Policy;
use crate::users::User;
use crate::wizard::{BoundUser, Opener, Wizard};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend did not answer (down, timed out, refused).
    #[error("store unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// The backend answered with something we cannot read.
    #[error("store returned a corrupt record: {0:#}")]
    Corrupt(anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum UserWriteError {
    #[error("another user has this email")]
    EmailTaken,
    #[error("no such user")]
    NotFound,
    /// Another write changed the user since it was read.
    #[error("the user changed since it was read")]
    Changed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A wizard together with the version a compare-and-set must name.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: u64,
    pub wizard: Wizard,
}

/// A wizard, the user it concerns and the verdict of its gate, all from one round trip.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub wizard: Versioned,
    pub user: Option<User>,
    pub admission: Admission,
    /// The counter the gate used: the wizard's user, else the owner of the
    /// email, else the email itself (see `lockout`).
    pub attempt_key: Option<AttemptKey>,
}

/// What a successful step does with the account's attempt counter.
#[derive(Debug, Clone, Default)]
pub enum Attempts {
    #[default]
    Keep,
    /// Forget earlier failures (a completed sign-in).
    Clear(AttemptKey),
    /// Give back the attempt this step took (it succeeded), if its window is still the current one.
    Refund(AttemptKey, Attempt),
}

/// What a successful step settles atomically with its compare-and-set.
#[derive(Debug, Clone, Default)]
pub struct Settle {
    /// The account the step was decided on: the save fails (as lost) unless
    /// that user still exists at that version.
    pub user: Option<BoundUser>,
    pub attempts: Attempts,
    /// A TOTP step accepted for this user: refused unless newer than the last one (RFC 6238 §5.2).
    pub totp_step: Option<(UserId, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    Done,
    /// Another request moved the wizard first, or the user of `Settle::user` changed.
    Lost,
    /// The TOTP step was not newer than the last one accepted for the user.
    TotpReplayed,
}

#[async_trait]
pub trait WizardStore: Send + Sync {
    async fn insert_wizard(&self, wizard: &Wizard) -> Result<(), StoreError>;

    /// The wizard and its user: the user it is bound to once the password
    /// was accepted, else the owner of `email` (if any). With a `gate`, the
    /// account's attempt counter (see `lockout`) is applied atomically.
    /// A wizard the `opener` cannot open is reported as absent, before any gate applies.
    async fn load_wizard(
        &self,
        id: WizardId,
        email: Option<&Email>,
        opener: &Opener,
        gate: Option<&Gate>,
    ) -> Result<Option<Loaded>, StoreError>;

    /// Stores `wizard` as version `version + 1` if the stored version is
    /// still `version`, together with what `settle` asks.
    async fn replace_wizard(
        &self,
        version: u64,
        wizard: &Wizard,
        settle: &Settle,
    ) -> Result<Replaced, StoreError>;
}

#[async_trait]
pub trait AttemptStore: Send + Sync {
    /// Blocks sign-in for `key` from `now` until `until` (after its last allowed attempt failed).
    async fn block(
        &self,
        key: &AttemptKey,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Forgets `key`'s failures and any block (an admin's unlock).
    async fn clear_attempts(&self, key: &AttemptKey) -> Result<(), StoreError>;
    /// Gives back an attempt taken by a request that ended without a
    /// verdict (see `Counter::refund`), and the code try of `wizard` if it was a code step.
    async fn refund(
        &self,
        key: &AttemptKey,
        attempt: &Attempt,
        wizard: Option<WizardId>,
    ) -> Result<(), StoreError>;
}

/// The runtime settings as stored, with the revision a save must name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredPolicy {
    /// 0 until settings are first saved; one more with every save.
    pub revision: u64,
    /// `None` when none were saved, or (logged) when what is stored cannot be
    /// read: the instance keeps its own settings, and the next save repairs it.
    pub policy: Option<Policy>,
}

#[async_trait]
pub trait PolicyStore: Send + Sync {
    async fn policy(&self) -> Result<StoredPolicy, StoreError>;
    /// Stores `policy` as revision `revision + 1` if the stored revision is
    /// still `revision`; `false`, storing nothing, if another save came first.
    async fn replace_policy(&self, revision: u64, policy: &Policy) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait UserStore: Send + Sync {
    async fn insert_user(&self, user: &User) -> Result<(), UserWriteError>;
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;
    /// Replaces the user with the same id, moving its email if it changed,
    /// if the stored one is still at `expected_version` (else `Changed`).
    async fn update_user(&self, expected_version: u64, user: &User) -> Result<(), UserWriteError>;
    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait KeyringStore: Send + Sync {
    /// The stored keyring, or `candidate` stored as the keyring if there is
    /// none yet. Every instance of a shared store ends up with the same one.
    async fn keyring_or_insert(&self, candidate: &Keyring) -> Result<Keyring, StoreError>;
    async fn keyring(&self) -> Result<Option<Keyring>, StoreError>;
}

pub trait Store: WizardStore + UserStore + KeyringStore + AttemptStore + PolicyStore {
    fn backend(&self) -> &'static str;
}

/// How long a wizard record is kept from its start: its lifetime, then as
/// long again, so that late requests hear "expired" rather than "not found".
/// A duration, which each store counts by its own clock: Redis's need not
/// agree with the service's, and the core never relies on records vanishing.
pub fn kept_for(wizard: &Wizard) -> chrono::Duration {
    (wizard.expires_at - wizard.created_at) * 2
}
