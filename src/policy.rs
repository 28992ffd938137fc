//! The settings an admin may change while the service runs (B2Core's "User
//! Auth Settings"). They live in the store, so every instance sharing it
//! applies a change within [`REFRESH_EVERY`].

use crate::store::{PolicyStore, StoreError};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// How often each instance re-reads the policy from the store.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

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
        fn within(
            field: &'static str,
            value: Option<u32>,
            range: std::ops::RangeInclusive<u32>,
            target: &mut u32,
        ) -> Result<(), InvalidSetting> {
            match value {
                Some(v) if !range.contains(&v) => Err(InvalidSetting {
                    field,
                    message: format!(
                        "{field} must be between {} and {}",
                        range.start(),
                        range.end()
                    ),
                }),
                Some(v) => {
                    *target = v;
                    Ok(())
                }
                None => Ok(()),
            }
        }
        within(
            "max_attempts",
            patch.max_attempts,
            1..=1000,
            &mut self.max_attempts,
        )?;
        within(
            "attempts_window_secs",
            patch.attempts_window_secs,
            1..=86_400,
            &mut self.attempts_window_secs,
        )?;
        within(
            "block_secs",
            patch.block_secs,
            1..=604_800,
            &mut self.block_secs,
        )?;
        within(
            "wizard_ttl_secs",
            patch.wizard_ttl_secs,
            30..=86_400,
            &mut self.wizard_ttl_secs,
        )?;
        within(
            "ip_limit_per_minute",
            patch.ip_limit_per_minute,
            0..=1_000_000,
            &mut self.ip_limit_per_minute,
        )?;
        if let Some(enabled) = patch.recaptcha_enabled {
            if enabled && !recaptcha_configured {
                return Err(InvalidSetting {
                    field: "recaptcha_enabled",
                    message: "recaptcha_enabled needs WIZARD_RECAPTCHA_SITE_KEY and WIZARD_RECAPTCHA_SECRET".into(),
                });
            }
            self.recaptcha_enabled = enabled;
        }
        Ok(self)
    }
}

/// A `PUT /api/v2/admin/settings` body: any subset of the fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    pub max_attempts: Option<u32>,
    pub attempts_window_secs: Option<u32>,
    pub block_secs: Option<u32>,
    pub wizard_ttl_secs: Option<u32>,
    pub ip_limit_per_minute: Option<u32>,
    pub recaptcha_enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSetting {
    pub field: &'static str,
    pub message: String,
}

/// This instance's copy of the policy, refreshed from the store.
pub struct LivePolicy {
    current: RwLock<Policy>,
    store: Arc<dyn PolicyStore>,
}

impl LivePolicy {
    /// Starts from the stored policy if there is one, else from `initial`.
    pub async fn load(store: Arc<dyn PolicyStore>, initial: Policy) -> Result<Self, StoreError> {
        let current = store.policy().await?.unwrap_or(initial);
        Ok(Self {
            current: RwLock::new(current),
            store,
        })
    }

    pub fn get(&self) -> Policy {
        *self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `policy` for every instance and applies it here at once.
    pub async fn set(&self, policy: Policy) -> Result<(), StoreError> {
        self.store.save_policy(&policy).await?;
        self.replace(policy);
        Ok(())
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
            match self.store.policy().await {
                Ok(Some(policy)) => self.replace(policy),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "could not refresh the policy"),
            }
        }
    }
}
