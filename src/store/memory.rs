use super::{
    AttemptStore, Attempts, KeyringStore, Loaded, PolicyStore, Replaced, Settle, Store, StoreError,
    StoredPolicy, UserStore, UserWriteError, Versioned, WizardStore, kept_for,
};
use crate::credentials::Keyring;
use crate::domain::{Email, UserId, WizardId};
use crate::lockout::{Admission, Attempt, AttemptKey, Counter, Gate};
use crate::policy::Policy;
use crate::users::User;
use crate::wizard::{Opener, Wizard};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Sweep expired wizards after this many inserts (keeps inserts O(1) amortised).
const SWEEP_EVERY: u64 = 1024;

/// Everything in one process, behind one short-held lock. For a single
/// instance (development, demos, tests); state is gone on restart. Like
/// Redis with its TTLs, it forgets records by its own (monotonic) clock,
/// after durations: the service's clock is for decisions, not for this.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    wizards: HashMap<WizardId, Entry>,
    users: HashMap<UserId, User>,
    emails: HashMap<Email, UserId>,
    keyring: Option<Keyring>,
    policy: StoredPolicy,
    /// Each counter, and when it may be forgotten.
    attempts: HashMap<AttemptKey, (Counter, Instant)>,
    last_totp_step: HashMap<UserId, u64>,
    inserts: u64,
}

struct Entry {
    version: u64,
    wizard: Wizard,
    /// Codes tried in this wizard (see `lockout`).
    codes: u32,
    purge_at: Instant,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under the lock can panic between related writes (they are
        // plain map updates), so a poisoned lock still guards consistent data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl WizardStore for MemoryStore {
    async fn insert_wizard(&self, wizard: &Wizard) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.inserts += 1;
        if inner.inserts.is_multiple_of(SWEEP_EVERY) {
            let now = Instant::now();
            inner.wizards.retain(|_, e| e.purge_at > now);
            inner.attempts.retain(|_, (_, forget_at)| *forget_at > now);
        }
        let entry = Entry {
            version: 1,
            wizard: wizard.clone(),
            codes: 0,
            purge_at: after(kept_for(wizard)),
        };
        inner.wizards.insert(wizard.id, entry);
        Ok(())
    }

    async fn load_wizard(
        &self,
        id: WizardId,
        email: Option<&Email>,
        opener: &Opener,
        gate: Option<&Gate>,
    ) -> Result<Option<Loaded>, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(entry) = inner
            .wizards
            .get_mut(&id)
            .filter(|e| e.purge_at > Instant::now() && e.wizard.opens_with(opener))
        else {
            return Ok(None);
        };
        let user_id = entry
            .wizard
            .user()
            .or_else(|| email.and_then(|e| inner.emails.get(e).copied()));
        let key = match (user_id, email) {
            (Some(user), _) => Some(AttemptKey::User(user)),
            (None, Some(email)) => Some(AttemptKey::Email(email.clone())),
            (None, None) => None,
        };
        let admission = match (gate, &key) {
            (Some(gate), Some(key))
                if entry.wizard.workflow() == gate.step
                    && gate.limits.now < entry.wizard.expires_at =>
            {
                let (counter, forget_at) = inner
                    .attempts
                    .entry(key.clone())
                    .or_insert_with(|| (Counter::default(), Instant::now()));
                let admission = counter.admit(&mut entry.codes, gate);
                *forget_at = after(counter.expires_at(&gate.limits) - gate.limits.now);
                admission
            }
            _ => Admission::Unchecked,
        };
        Ok(Some(Loaded {
            wizard: Versioned {
                version: entry.version,
                wizard: entry.wizard.clone(),
            },
            user: user_id.and_then(|u| inner.users.get(&u).cloned()),
            admission,
            attempt_key: key,
        }))
    }

    async fn replace_wizard(
        &self,
        version: u64,
        wizard: &Wizard,
        settle: &Settle,
    ) -> Result<Replaced, StoreError> {
        let mut inner = self.lock();
        let user_stands = settle.user.is_none_or(|bound| {
            inner
                .users
                .get(&bound.id)
                .is_some_and(|u| u.credentials_version == bound.version)
        });
        if !user_stands
            || inner
                .wizards
                .get(&wizard.id)
                .is_none_or(|e| e.version != version)
        {
            return Ok(Replaced::Lost);
        }
        if let Some((user, step)) = settle.totp_step {
            if inner
                .last_totp_step
                .get(&user)
                .is_some_and(|last| *last >= step)
            {
                return Ok(Replaced::TotpReplayed);
            }
            inner.last_totp_step.insert(user, step);
        }
        match &settle.attempts {
            Attempts::Keep => {}
            Attempts::Clear(key) => {
                inner.attempts.remove(key);
            }
            Attempts::Refund(key, attempt) => give_back(&mut inner, key, attempt, None),
        }
        if let Some(entry) = inner.wizards.get_mut(&wizard.id) {
            entry.version = version + 1;
            entry.wizard = wizard.clone();
        }
        Ok(Replaced::Done)
    }
}

#[async_trait]
impl AttemptStore for MemoryStore {
    async fn block(
        &self,
        key: &AttemptKey,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let (counter, forget_at) = inner
            .attempts
            .entry(key.clone())
            .or_insert_with(|| (Counter::default(), Instant::now()));
        counter.blocked_until = Some(until);
        *forget_at = (*forget_at).max(after(until - now));
        Ok(())
    }

    async fn clear_attempts(&self, key: &AttemptKey) -> Result<(), StoreError> {
        self.lock().attempts.remove(key);
        Ok(())
    }

    async fn refund(
        &self,
        key: &AttemptKey,
        attempt: &Attempt,
        wizard: Option<WizardId>,
    ) -> Result<(), StoreError> {
        give_back(&mut self.lock(), key, attempt, wizard);
        Ok(())
    }
}

/// `duration` from now, by this process's monotonic clock.
fn after(duration: chrono::Duration) -> Instant {
    Instant::now() + duration.to_std().unwrap_or_default()
}

fn give_back(inner: &mut Inner, key: &AttemptKey, attempt: &Attempt, wizard: Option<WizardId>) {
    if let Some((counter, _)) = inner.attempts.get_mut(key) {
        counter.refund(attempt.window);
    }
    if let Some(entry) = wizard.and_then(|id| inner.wizards.get_mut(&id)) {
        entry.codes = entry.codes.saturating_sub(1);
    }
}

#[async_trait]
impl PolicyStore for MemoryStore {
    async fn policy(&self) -> Result<StoredPolicy, StoreError> {
        Ok(self.lock().policy)
    }

    async fn replace_policy(&self, revision: u64, policy: &Policy) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.policy.revision != revision {
            return Ok(false);
        }
        inner.policy = StoredPolicy {
            revision: revision + 1,
            policy: Some(*policy),
        };
        Ok(true)
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn insert_user(&self, user: &User) -> Result<(), UserWriteError> {
        let mut inner = self.lock();
        if inner.emails.contains_key(&user.email) {
            return Err(UserWriteError::EmailTaken);
        }
        inner.emails.insert(user.email.clone(), user.id);
        inner.users.insert(user.id, user.clone());
        Ok(())
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.lock().users.get(&id).cloned())
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .emails
            .get(email)
            .and_then(|id| inner.users.get(id))
            .cloned())
    }

    async fn update_user(&self, expected_version: u64, user: &User) -> Result<(), UserWriteError> {
        let mut inner = self.lock();
        let Some(stored) = inner.users.get(&user.id) else {
            return Err(UserWriteError::NotFound);
        };
        if stored.credentials_version != expected_version {
            return Err(UserWriteError::Changed);
        }
        let old_email = stored.email.clone();
        if inner
            .emails
            .get(&user.email)
            .is_some_and(|owner| *owner != user.id)
        {
            return Err(UserWriteError::EmailTaken);
        }
        inner.emails.remove(&old_email);
        inner.emails.insert(user.email.clone(), user.id);
        inner.users.insert(user.id, user.clone());
        Ok(())
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(user) = inner.users.remove(&id) else {
            return Ok(false);
        };
        inner.emails.remove(&user.email);
        Ok(true)
    }
}

#[async_trait]
impl KeyringStore for MemoryStore {
    async fn keyring_or_insert(&self, candidate: &Keyring) -> Result<Keyring, StoreError> {
        Ok(self
            .lock()
            .keyring
            .get_or_insert_with(|| candidate.clone())
            .clone())
    }

    async fn keyring(&self) -> Result<Option<Keyring>, StoreError> {
        Ok(self.lock().keyring.clone())
    }
}

impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }
}
