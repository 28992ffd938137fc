//! The settings an admin may change while the service runs (B2Core's "User
//! Auth Settings"). They live in the store, so every instance sharing it
//! applies a change within [`REFRESH_EVERY`].

use crate::store::{Records, Store, StoreError, StoredPolicy};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// How often each instance re-reads the policy from the store.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Compare-and-set rounds an update may lose before it gives up.
const UPDATE_TRIES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Failed password or code submissions allowed per account within the window.
    pub max_attempts: u32,
    pub attempts_window_secs: u32,
    /// How long an account stays blocked once it ran out of attempts.
    pub block_secs: u32,
    pub wizard_ttl_secs: u32,
    /// Requests per minute per client IP on `/api/v2/my/*`; 0 turns the limit off.
    pub ip_limit_per_minute: u32,
    pub recaptcha_enabled: bool,
    /// Every account must have a second factor: one without any enrols an
    /// authenticator app right after its password (settings stored before
    /// this existed read as off).
    #[serde(default)]
    pub second_factor_required: bool,
}

impl Policy {
    pub fn attempts_window(&self) -> Duration {
        Duration::seconds(self.attempts_window_secs.into())
    }

    pub fn block(&self) -> Duration {
        Duration::seconds(self.block_secs.into())
    }

    pub fn wizard_ttl(&self) -> Duration {
        Duration::seconds(self.wizard_ttl_secs.into())
    }

    /// Applies a partial update; the error names the first invalid field.
    pub fn patched(
        mut self,
        patch: PolicyPatch,
        recaptcha_configured: bool,
    ) -> Result<Self, InvalidSetting> {
        let numbers = [
            (patch.max_attempts, &mut self.max_attempts),
            (patch.attempts_window_secs, &mut self.attempts_window_secs),
            (patch.block_secs, &mut self.block_secs),
            (patch.wizard_ttl_secs, &mut self.wizard_ttl_secs),
            (patch.ip_limit_per_minute, &mut self.ip_limit_per_minute),
        ];
        for ((field, range), (value, target)) in LIMITS.iter().zip(numbers) {
            match value {
                Some(v) if !range.contains(&v) => {
                    return Err(InvalidSetting::outside(field, range));
                }
                Some(v) => *target = v,
                None => {}
            }
        }
        if let Some(enabled) = patch.recaptcha_enabled {
            if enabled && !recaptcha_configured {
                return Err(InvalidSetting {
                    field: "recaptcha_enabled",
                    message: "recaptcha_enabled needs WIZARD_RECAPTCHA_SITE_KEY and WIZARD_RECAPTCHA_SECRET".into(),
                });
            }
            self.recaptcha_enabled = enabled;
        }
        if let Some(required) = patch.second_factor_required {
            self.second_factor_required = required;
        }
        Ok(self)
    }
}

/// The numeric settings and the values each accepts, in `PolicyPatch` order.
const LIMITS: [(&str, std::ops::RangeInclusive<u32>); 5] = [
    ("max_attempts", 1..=1000),
    ("attempts_window_secs", 1..=86_400),
    ("block_secs", 1..=604_800),
    ("wizard_ttl_secs", 30..=86_400),
    ("ip_limit_per_minute", 0..=1_000_000),
];

/// A `PUT /api/v2/admin/settings` body: any subset of the fields.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    pub max_attempts: Option<u32>,
    pub attempts_window_secs: Option<u32>,
    pub block_secs: Option<u32>,
    pub wizard_ttl_secs: Option<u32>,
    pub ip_limit_per_minute: Option<u32>,
    pub recaptcha_enabled: Option<bool>,
    pub second_factor_required: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSetting {
    pub field: &'static str,
    pub message: String,
}

impl InvalidSetting {
    /// `field` got a value it does not accept (out of range, or of the wrong
    /// type: the answer is the same); `None` when there is no such setting.
    pub fn for_field(field: &str) -> Option<Self> {
        for flag in ["recaptcha_enabled", "second_factor_required"] {
            if field == flag {
                return Some(Self {
                    field: flag,
                    message: format!("{flag} must be true or false"),
                });
            }
        }
        LIMITS
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(name, range)| Self::outside(name, range))
    }

    fn outside(field: &'static str, range: &std::ops::RangeInclusive<u32>) -> Self {
        Self {
            field,
            message: format!(
                "{field} must be a whole number between {} and {}",
                range.start(),
                range.end()
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the settings kept changing during this update; retry")]
    Contended,
}

/// This instance's copy of the policy, refreshed from the store.
pub struct LivePolicy {
    current: RwLock<Policy>,
    store: Arc<dyn Store>,
    /// Held by whoever reads the store to replace `current` (the refresher,
    /// an update), so that an older read never lands after a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

impl LivePolicy {
    /// Starts from the stored policy if there is one, else from `initial`.
    pub async fn load(store: Arc<dyn Store>, initial: Policy) -> Result<Self, StoreError> {
        let current = store.policy().await?.policy.unwrap_or(initial);
        Ok(Self {
            current: RwLock::new(current),
            store,
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn get(&self) -> Policy {
        *self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `change` to the stored settings (this instance's, if none
    /// are stored yet) and stores the result for every instance, applying it
    /// here at once. A compare-and-set on the stored revision: the cached
    /// copy may be seconds old and another admin may be saving at the same
    /// moment, so `change` is applied to what is stored now, again if that
    /// moved meanwhile, and no concurrent change is lost.
    pub async fn update(
        &self,
        change: impl Fn(Policy) -> Result<Policy, InvalidSetting>,
    ) -> Result<Policy, UpdateError> {
        let _refreshing = self.refreshing.lock().await;
        for _ in 0..UPDATE_TRIES {
            let stored = self.store.policy().await?;
            let next = change(stored.policy.unwrap_or_else(|| self.get()))?;
            if self.store.replace_policy(stored.revision, &next).await? {
                self.replace(next);
                return Ok(next);
            }
        }
        Err(UpdateError::Contended)
    }

    fn replace(&self, policy: Policy) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = policy;
    }

    /// Re-reads the stored policy every [`REFRESH_EVERY`] until the process ends.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(REFRESH_EVERY);
        loop {
            ticks.tick().await;
            let _refreshing = self.refreshing.lock().await;
            match self.store.policy().await {
                Ok(StoredPolicy {
                    policy: Some(policy),
                    ..
                }) => self.replace(policy),
                Ok(StoredPolicy { policy: None, .. }) => {}
                // Every 2 s while the store is down: the requests say so already.
                Err(e @ StoreError::Unavailable(_)) => {
                    tracing::debug!(error = %e, "could not refresh the settings")
                }
                Err(e) => tracing::warn!(error = %e, "could not refresh the settings"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn initial() -> Policy {
        Policy {
            max_attempts: 5,
            attempts_window_secs: 60,
            block_secs: 600,
            wizard_ttl_secs: 600,
            ip_limit_per_minute: 120,
            recaptcha_enabled: false,
            second_factor_required: false,
        }
    }

    fn set(
        field: fn(&mut Policy) -> &mut u32,
        value: u32,
    ) -> impl Fn(Policy) -> Result<Policy, InvalidSetting> {
        move |mut policy| {
            *field(&mut policy) = value;
            Ok(policy)
        }
    }

    #[tokio::test]
    async fn an_update_applies_to_what_is_stored_not_to_a_stale_copy() {
        let store = Arc::new(MemoryStore::new());
        let first = LivePolicy::load(store.clone(), initial()).await.unwrap();
        let second = LivePolicy::load(store.clone(), initial()).await.unwrap();
        first.update(set(|p| &mut p.max_attempts, 3)).await.unwrap();
        // `second` has not refreshed: its copy still says 5.
        let saved = second
            .update(set(|p| &mut p.block_secs, 1200))
            .await
            .unwrap();
        assert_eq!((saved.max_attempts, saved.block_secs), (3, 1200));
        let stored = store.policy().await.unwrap();
        assert_eq!((stored.revision, stored.policy), (2, Some(saved)));
    }

    #[tokio::test]
    async fn an_update_that_keeps_losing_gives_up_and_stores_nothing_of_its_own() {
        let store = Arc::new(MemoryStore::new());
        let live = LivePolicy::load(store.clone(), initial()).await.unwrap();
        let rival = store.clone();
        // Another save lands between every read and compare-and-set of ours.
        let outcome = live
            .update(|policy| {
                futures::executor::block_on(async {
                    let revision = rival.policy().await.unwrap().revision;
                    rival.replace_policy(revision, &initial()).await.unwrap()
                });
                set(|p| &mut p.max_attempts, 9)(policy)
            })
            .await;
        assert!(
            matches!(outcome, Err(UpdateError::Contended)),
            "{outcome:?}"
        );
        let stored = store.policy().await.unwrap();
        assert_eq!(stored.revision, UPDATE_TRIES as u64);
        assert_eq!(stored.policy.map(|p| p.max_attempts), Some(5));
        assert_eq!(live.get().max_attempts, 5);
    }
}
