use super::{
    KeyringStore, Loaded, Store, StoreError, UserStore, UserWriteError, Versioned, WizardStore,
    purge_at,
};
use crate::credentials::Keyring;
use crate::domain::{Email, UserId, WizardId};
use crate::users::User;
use crate::wizard::Wizard;
use anyhow::Context as _;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use std::time::Duration;

/// Keys (all under the configured prefix):
/// - `wizard:{uuid}`: hash `v` (version), `body` (JSON), `user` (bound user id), expiring via PEXPIREAT
/// - `user:{id}`: the user as JSON; `email:{email}`: the id owning that email
/// - `keyring`: the shared signing key and code pepper
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
}

#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    pub url: String,
    pub prefix: String,
    /// Upper bound for one command, so a stalled Redis becomes a quick 503.
    pub timeout: Duration,
}

impl RedisStore {
    pub async fn connect(config: &RedisStoreConfig) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.url.as_str())
            .context("WIZARD_REDIS_URL is not a Redis URL")?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(config.timeout);
        let conn = ConnectionManager::new_with_config(client, manager_config)
            .await
            .with_context(|| format!("cannot reach Redis at {}", redacted(&config.url)))?;
        Ok(Self {
            conn,
            prefix: config.prefix.clone(),
            scripts: Scripts {
                load_wizard: Script::new(include_str!("lua/load_wizard.lua")),
                replace_wizard: Script::new(include_str!("lua/replace_wizard.lua")),
                insert_user: Script::new(include_str!("lua/insert_user.lua")),
                update_user: Script::new(include_str!("lua/update_user.lua")),
                delete_user: Script::new(include_str!("lua/delete_user.lua")),
            },
        })
    }

    fn key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }
}

/// Never print a password that may sit in the URL.
fn redacted(url: &str) -> String {
    match url.split_once('@') {
        Some((_, host)) => format!("redis://***@{host}"),
        None => url.to_owned(),
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
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &[("v", "1"), ("body", &to_json(wizard)?)])
            .ignore()
            .pexpire_at(&key, purge_at(wizard).timestamp_millis())
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn load_wizard(
        &self,
        id: WizardId,
        email: Option<&Email>,
    ) -> Result<Option<Loaded>, StoreError> {
        let row: Option<(u64, String, Option<String>)> = self
            .scripts
            .load_wizard
            .key(self.key("wizard", id))
            .arg(&self.prefix)
            .arg(email.map_or("", Email::as_str))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let Some((version, body, user)) = row else {
            return Ok(None);
        };
        Ok(Some(Loaded {
            wizard: Versioned {
                version,
                wizard: from_json(&body)?,
            },
            user: user.as_deref().map(from_json).transpose()?,
        }))
    }

    async fn replace_wizard(&self, version: u64, wizard: &Wizard) -> Result<bool, StoreError> {
        let replaced: i64 = self
            .scripts
            .replace_wizard
            .key(self.key("wizard", wizard.id))
            .arg(version)
            .arg(to_json(wizard)?)
            .arg(wizard.user().map(|u| u.to_string()).unwrap_or_default())
            .arg(purge_at(wizard).timestamp_millis())
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

    async fn update_user(&self, user: &User) -> Result<(), UserWriteError> {
        let outcome: String = self
            .scripts
            .update_user
            .key(self.key("user", user.id))
            .key(self.key("email", &user.email))
            .arg(user.id.to_string())
            .arg(to_json(user)?)
            .arg(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "taken" => Err(UserWriteError::EmailTaken),
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
