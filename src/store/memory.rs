use super::{
    KeyringStore, Loaded, Store, StoreError, UserStore, UserWriteError, Versioned, WizardStore,
    purge_at,
};
use crate::credentials::Keyring;
use crate::domain::{Email, UserId, WizardId};
use crate::users::User;
use crate::wizard::Wizard;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Sweep expired wizards after this many inserts (keeps inserts O(1) amortised).
const SWEEP_EVERY: u64 = 1024;

/// Everything in one process, behind one short-held lock. For a single
/// instance (development, demos, tests); state is gone on restart.
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
    inserts: u64,
}

struct Entry {
    version: u64,
    wizard: Wizard,
    purge_at: DateTime<Utc>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written
        // (every write is a single insert/remove), so a poisoned lock is safe to reuse.
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
            let now = Utc::now();
            inner.wizards.retain(|_, e| e.purge_at > now);
        }
        let entry = Entry {
            version: 1,
            wizard: wizard.clone(),
            purge_at: purge_at(wizard),
        };
        inner.wizards.insert(wizard.id, entry);
        Ok(())
    }

    async fn load_wizard(
        &self,
        id: WizardId,
        email: Option<&Email>,
    ) -> Result<Option<Loaded>, StoreError> {
        let inner = self.lock();
        let Some(entry) = inner.wizards.get(&id).filter(|e| e.purge_at > Utc::now()) else {
            return Ok(None);
        };
        let user_id = entry
            .wizard
            .user()
            .or_else(|| email.and_then(|e| inner.emails.get(e).copied()));
        Ok(Some(Loaded {
            wizard: Versioned {
                version: entry.version,
                wizard: entry.wizard.clone(),
            },
            user: user_id.and_then(|u| inner.users.get(&u).cloned()),
        }))
    }

    async fn replace_wizard(&self, version: u64, wizard: &Wizard) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.wizards.get_mut(&wizard.id) {
            Some(entry) if entry.version == version => {
                *entry = Entry {
                    version: version + 1,
                    wizard: wizard.clone(),
                    purge_at: purge_at(wizard),
                };
                Ok(true)
            }
            _ => Ok(false),
        }
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

    async fn update_user(&self, user: &User) -> Result<(), UserWriteError> {
        let mut inner = self.lock();
        let Some(old_email) = inner.users.get(&user.id).map(|u| u.email.clone()) else {
            return Err(UserWriteError::NotFound);
        };
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
