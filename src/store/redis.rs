use super::{
    AttemptStore, Attempts, KeyringStore, Loaded, PolicyStore, Replaced, Settle, Store, StoreError,
    StoredPolicy, UserStore, UserWriteError, Versioned, WizardStore, kept_for,
};
use crate::config::ServiceUrl;
use crate::credentials::Keyring;
use crate::domain::{Email, UserId, WizardId};
use crate::lockout::{Admission, Attempt, AttemptKey, Gate};
use crate::policy::Policy;
use crate::users::User;
use crate::wizard::{Opener, Wizard};
use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use std::time::Duration;

/// Keys (all under the configured prefix):
/// - `wizard:{uuid}`: hash `v` (version), `body` (JSON), `step` and `exp` (for
///   the attempt gate), `user` (bound user id), `codes` (codes tried); expires
///   `kept_for` after it starts (a TTL: Redis counts it by its own clock)
/// - `user:{id}`: the user as JSON; `email:{email}`: the id owning that email
/// - `attempts:user:{id}` / `attempts:email:{email}`: hash `count`, `since`, `until`
/// - `totp-step:{user id}`: the last TOTP step accepted
/// - `keyring`: the shared signing key and code pepper; `policy`: the runtime
///   settings, `policy:revision`: how many times they were saved
///
/// The scripts touch keys they derive from stored values (a wizard's user,
/// a user's email), so this layout targets a single Redis, not Cluster.
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: Scripts,
}

struct Scripts {
    load_wizard: Script,
    replace_wizard: Script,
    insert_user: Script,
    update_user: Script,
    delete_user: Script,
    refund_attempt: Script,
    replace_policy: Script,
}

#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    pub url: ServiceUrl,
    pub prefix: String,
    /// Upper bound for one command, so a stalled Redis becomes a quick 503.
    pub timeout: Duration,
}

impl RedisStore {
    pub async fn connect(config: &RedisStoreConfig) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.url.expose().as_str())
            .context("WIZARD_REDIS_URL is not a Redis URL")?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(config.timeout);
        let conn = ConnectionManager::new_with_config(client, manager_config)
            .await
            .with_context(|| format!("cannot reach Redis at {}", config.url))?;
        Ok(Self {
            conn,
            prefix: config.prefix.clone(),
            scripts: Scripts {
                load_wizard: Script::new(include_str!("lua/load_wizard.lua")),
                replace_wizard: Script::new(include_str!("lua/replace_wizard.lua")),
                insert_user: Script::new(include_str!("lua/insert_user.lua")),
                update_user: Script::new(include_str!("lua/update_user.lua")),
                delete_user: Script::new(include_str!("lua/delete_user.lua")),
                refund_attempt: Script::new(include_str!("lua/refund_attempt.lua")),
                replace_policy: Script::new(include_str!("lua/replace_policy.lua")),
            },
        })
    }

    fn key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    fn attempts_key(&self, key: &AttemptKey) -> String {
        self.key("attempts", key.name())
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    if e.kind() == redis::ErrorKind::UnexpectedReturnType {
        StoreError::Corrupt(e.into())
    } else {
        StoreError::Unavailable(e.into())
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.into()))
}

fn from_json<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(e.into()))
}

#[async_trait]
impl WizardStore for RedisStore {
    async fn insert_wizard(&self, wizard: &Wizard) -> Result<(), StoreError> {
        let key = self.key("wizard", wizard.id);
        let fields = [
            ("v", "1".to_owned()),
            ("body", to_json(wizard)?),
            ("step", wizard.workflow().as_str().to_owned()),
            ("exp", wizard.expires_at.timestamp_millis().to_string()),
            ("kd", String::from(wizard.key_digest.clone())),
        ];
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            // Relative: Redis expires keys by its own clock, which may differ from ours.
            .pexpire(&key, kept_for(wizard).num_milliseconds())
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn load_wizard(
        &self,
        id: WizardId,
        email: Option<&Email>,
        opener: &Opener,
        gate: Option<&Gate>,
    ) -> Result<Option<Loaded>, StoreError> {
        let mut invocation = self.scripts.load_wizard.key(self.key("wizard", id));
        invocation
            .arg(&self.prefix)
            .arg(email.map_or("", Email::as_str))
            .arg(opener.key.clone().map(String::from).unwrap_or_default())
            .arg(u8::from(opener.strict));
        match gate {
            Some(gate) => {
                let limits = &gate.limits;
                invocation
                    .arg(gate.step.as_str())
                    .arg(u8::from(gate.take))
                    .arg(u8::from(gate.code))
                    .arg(limits.now.timestamp_millis())
                    .arg(limits.max_attempts)
                    .arg(limits.window.num_milliseconds())
                    .arg(limits.block.num_milliseconds())
                    .arg(limits.codes_per_wizard)
            }
            None => invocation
                .arg("")
                .arg(0)
                .arg(0)
                .arg(0)
                .arg(0)
                .arg(0)
                .arg(0)
                .arg(0),
        };
        type Row = (
            u64,
            String,
            Option<String>,
            String,
            i64,
            Option<String>,
            i64,
        );
        let row: Option<Row> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let Some((version, body, user, verdict, value, counter, window)) = row else {
            return Ok(None);
        };
        let admission = match verdict.as_str() {
            "admitted" if value > 0 => Admission::Admitted {
                attempt: Some(Attempt {
                    number: u32::try_from(value).unwrap_or(u32::MAX),
                    window: from_millis(window)?,
                }),
            },
            "admitted" => Admission::Admitted { attempt: None },
            "blocked" => Admission::Blocked {
                until: from_millis(value)?,
            },
            "closed" => Admission::WizardClosed,
            _ => Admission::Unchecked,
        };
        Ok(Some(Loaded {
            wizard: Versioned {
                version,
                wizard: from_json(&body)?,
            },
            user: user.as_deref().map(from_json).transpose()?,
            admission,
            attempt_key: counter
                .as_deref()
                .map(AttemptKey::from_name)
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.into()))?,
        }))
    }

    async fn replace_wizard(
        &self,
        version: u64,
        wizard: &Wizard,
        settle: &Settle,
    ) -> Result<Replaced, StoreError> {
        let (attempts_mode, attempts_key, window) = match &settle.attempts {
            Attempts::Keep => ("", String::new(), 0),
            Attempts::Clear(key) => ("clear", key.name(), 0),
            Attempts::Refund(key, attempt) => {
                ("refund", key.name(), attempt.window.timestamp_millis())
            }
        };
        let (totp_user, totp_step) = match settle.totp_step {
            Some((user, step)) => (user.to_string(), step),
            None => (String::new(), 0),
        };
        let (user, user_version) = match settle.user {
            Some(bound) => (bound.id.to_string(), bound.version),
            None => (String::new(), 0),
        };
        let outcome: String = self
            .scripts
            .replace_wizard
            .key(self.key("wizard", wizard.id))
            .arg(version)
            .arg(to_json(wizard)?)
            .arg(wizard.user().map(|u| u.to_string()).unwrap_or_default())
            .arg(wizard.workflow().as_str())
            .arg(wizard.expires_at.timestamp_millis())
            .arg(&self.prefix)
            .arg(attempts_mode)
            .arg(attempts_key)
            .arg(totp_user)
            .arg(totp_step)
            .arg(window)
            .arg(user)
            .arg(user_version)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(match outcome.as_str() {
            "done" => Replaced::Done,
            "replayed" => Replaced::TotpReplayed,
            _ => Replaced::Lost,
        })
    }
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(anyhow::anyhow!("timestamp {ms} out of range")))
}

#[async_trait]
impl AttemptStore for RedisStore {
    async fn block(
        &self,
        key: &AttemptKey,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let key = self.attempts_key(key);
        redis::pipe()
            .atomic()
            .hset(&key, "until", until.timestamp_millis())
            .ignore()
            // Relative: Redis expires keys by its own clock, which may differ from ours.
            .pexpire(&key, (until - now).num_milliseconds().max(1))
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn refund(
        &self,
        key: &AttemptKey,
        attempt: &Attempt,
        wizard: Option<WizardId>,
    ) -> Result<(), StoreError> {
        let wizard_key = wizard.map(|id| self.key("wizard", id)).unwrap_or_default();
        self.scripts
            .refund_attempt
            .key(self.attempts_key(key))
            .key(wizard_key)
            .arg(attempt.window.timestamp_millis())
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn clear_attempts(&self, key: &AttemptKey) -> Result<(), StoreError> {
        let key = self.attempts_key(key);
        self.conn
            .clone()
            .del::<_, ()>(key)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl PolicyStore for RedisStore {
    async fn policy(&self) -> Result<StoredPolicy, StoreError> {
        let (raw, revision): (Option<String>, Option<u64>) = redis::pipe()
            .get(format!("{}policy", self.prefix))
            .get(format!("{}policy:revision", self.prefix))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let policy = match raw.as_deref().map(from_json) {
            Some(Ok(policy)) => Some(policy),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the stored settings cannot be read; an admin's next save replaces them");
                None
            }
            None => None,
        };
        Ok(StoredPolicy {
            revision: revision.unwrap_or(0),
            policy,
        })
    }

    async fn replace_policy(&self, revision: u64, policy: &Policy) -> Result<bool, StoreError> {
        let replaced: i64 = self
            .scripts
            .replace_policy
            .key(format!("{}policy", self.prefix))
            .key(format!("{}policy:revision", self.prefix))
            .arg(revision)
            .arg(to_json(policy)?)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(replaced == 1)
    }
}

#[async_trait]
impl UserStore for RedisStore {
    async fn insert_user(&self, user: &User) -> Result<(), UserWriteError> {
        let inserted: i64 = self
            .scripts
            .insert_user
            .key(self.key("user", user.id))
            .key(self.key("email", &user.email))
            .arg(user.id.to_string())
            .arg(to_json(user)?)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if inserted == 1 {
            Ok(())
        } else {
            Err(UserWriteError::EmailTaken)
        }
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let raw: Option<String> = self
            .conn
            .clone()
            .get(self.key("user", id))
            .await
            .map_err(unavailable)?;
        raw.as_deref().map(from_json).transpose()
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let id: Option<String> = self
            .conn
            .clone()
            .get(self.key("email", email))
            .await
            .map_err(unavailable)?;
        match id.as_deref().map(UserId::parse) {
            Some(Ok(id)) => self.user(id).await,
            Some(Err(e)) => Err(StoreError::Corrupt(e.into())),
            None => Ok(None),
        }
    }

    async fn update_user(&self, expected_version: u64, user: &User) -> Result<(), UserWriteError> {
        let outcome: String = self
            .scripts
            .update_user
            .key(self.key("user", user.id))
            .key(self.key("email", &user.email))
            .arg(user.id.to_string())
            .arg(to_json(user)?)
            .arg(&self.prefix)
            .arg(expected_version)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "taken" => Err(UserWriteError::EmailTaken),
            "changed" => Err(UserWriteError::Changed),
            _ => Err(UserWriteError::NotFound),
        }
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        let deleted: i64 = self
            .scripts
            .delete_user
            .key(self.key("user", id))
            .arg(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }
}

#[async_trait]
impl KeyringStore for RedisStore {
    async fn keyring_or_insert(&self, candidate: &Keyring) -> Result<Keyring, StoreError> {
        let key = format!("{}keyring", self.prefix);
        let mut conn = self.conn.clone();
        let _: bool = conn
            .set_nx(&key, to_json(candidate)?)
            .await
            .map_err(unavailable)?;
        let stored: Option<String> = conn.get(&key).await.map_err(unavailable)?;
        let stored = stored
            .context("the keyring vanished right after it was written")
            .map_err(StoreError::Unavailable)?;
        from_json(&stored)
    }

    async fn keyring(&self) -> Result<Option<Keyring>, StoreError> {
        let raw: Option<String> = self
            .conn
            .clone()
            .get(format!("{}keyring", self.prefix))
            .await
            .map_err(unavailable)?;
        raw.as_deref().map(from_json).transpose()
    }
}

impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }
}
