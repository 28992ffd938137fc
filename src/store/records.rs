//! Wizards, users, settings and the keyring as records built from the
//! store's primitives, the same for every store. Writes that touch two hash
//! slots are ordered so that a crash or a lost race between them fails
//! closed (see docs/decisions.md).

use super::{
    AccountReads, Key, Op, Reply, Row, Store, StoreError, TOTP_STEP_KEPT, Taken, TotpStep,
    kept_for, wizard_record,
};
use crate::credentials::Keyring;
use crate::domain::{Email, UserId, WizardId};
use crate::policy::Policy;
use crate::users::User;
use crate::wizard::{Opener, Wizard};
use async_trait::async_trait;

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

/// A wizard together with the version a compare-and-set must name, and the
/// account (the email it was bound with) whose counters its steps use.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: u64,
    pub wizard: Wizard,
    pub account: Option<Email>,
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

/// A random nonce or ticket for one write (see `Op`).
pub fn nonce() -> u64 {
    rand::random()
}

pub fn corrupt(e: impl Into<anyhow::Error>) -> StoreError {
    StoreError::Corrupt(e.into())
}

pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(corrupt)
}

/// Decodes a stored record; the error names where, never what (a record
/// may hold a password hash or a TOTP secret).
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(body).map_err(|e| {
        corrupt(anyhow::anyhow!(
            "cannot decode a stored record (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// A wizard record, as inserted (version 1) or swapped (which sets its own version).
pub fn wizard_row(wizard: &Wizard, account: Option<&Email>) -> Result<Row, StoreError> {
    Ok(Row {
        version: 1,
        account: account.map(|email| email.as_str().to_owned()),
        body: wizard_record::encode(wizard).map_err(corrupt)?,
    })
}

pub fn read_wizard(id: WizardId, row: Row) -> Result<Versioned, StoreError> {
    Ok(Versioned {
        version: row.version,
        wizard: wizard_record::decode(id, &row.body).map_err(corrupt)?,
        account: row
            .account
            .as_deref()
            .map(Email::parse)
            .transpose()
            .map_err(corrupt)?,
    })
}

/// The insert of a new wizard, kept for [`kept_for`] by the store's clock.
pub fn insert_wizard(wizard: &Wizard) -> Result<Op, StoreError> {
    Ok(Op::Insert {
        key: Key::Wizard(wizard.id),
        row: wizard_row(wizard, None)?,
        nonce: nonce(),
        ttl: Some(kept_for(wizard)),
    })
}

/// A user record; its version is the account's `credentials_version`.
pub fn read_user(row: Row) -> Result<User, StoreError> {
    let mut user: User = decode(&row.body)?;
    user.credentials_version = row.version;
    Ok(user)
}

/// `version` for an insert (a swap sets its own).
fn user_row(user: &User, version: u64) -> Result<Row, StoreError> {
    Ok(Row {
        version,
        account: None,
        body: encode(user)?,
    })
}

/// The compare-and-set that replaces a user (under the same email) still
/// at `expected_version`; its version moves on by one.
pub fn replace_user(expected_version: u64, user: &User) -> Result<Op, StoreError> {
    Ok(Op::Swap {
        key: Key::User(user.email.clone()),
        expected: expected_version,
        row: user_row(user, 0)?,
        nonce: nonce(),
    })
}

/// A reply of the wrong kind (or none) where one was due: never its
/// contents, which may hold a user record.
pub fn unexpected(reply: Option<Reply>) -> StoreError {
    corrupt(anyhow::anyhow!(
        "unexpected reply: {}",
        reply.map_or("nothing", |r| r.kind())
    ))
}

/// The reply of a read, as a row.
pub fn row(reply: Reply) -> Result<Option<Row>, StoreError> {
    match reply {
        Reply::Row(row) => Ok(row),
        other => Err(corrupt(anyhow::anyhow!(
            "expected a record, got {}",
            other.kind()
        ))),
    }
}

pub fn done(reply: Reply) -> Result<bool, StoreError> {
    match reply {
        Reply::Done(done) => Ok(done),
        other => Err(corrupt(anyhow::anyhow!(
            "expected a verdict, got {}",
            other.kind()
        ))),
    }
}

fn value(reply: Reply) -> Result<Option<String>, StoreError> {
    match reply {
        Reply::Value(value) => Ok(value),
        other => Err(corrupt(anyhow::anyhow!(
            "expected a value, got {}",
            other.kind()
        ))),
    }
}

/// The one reply of a one-op run.
async fn one<S: Store + ?Sized>(store: &S, op: Op) -> Result<Reply, StoreError> {
    store
        .run(&[&[op]])
        .await?
        .pop()
        .ok_or_else(|| corrupt(anyhow::anyhow!("no reply")))
}

#[async_trait]
pub trait Records: Store {
    async fn insert_wizard(&self, wizard: &Wizard) -> Result<(), StoreError> {
        if done(one(self, insert_wizard(wizard)?).await?)? {
            Ok(())
        } else {
            Err(corrupt(anyhow::anyhow!("a new wizard's id was taken")))
        }
    }

    /// The wizard, if the `opener` opens it.
    async fn wizard(&self, id: WizardId, opener: &Opener) -> Result<Option<Versioned>, StoreError> {
        match row(one(self, Op::Read(Key::Wizard(id))).await?)? {
            Some(row) => Ok(Some(read_wizard(id, row)?).filter(|v| v.wizard.opens_with(opener))),
            None => Ok(None),
        }
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        row(one(self, Op::Read(Key::User(email.clone()))).await?)?
            .map(read_user)
            .transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let Some(email) = value(one(self, Op::Get(Key::UserIndex(id))).await?)? else {
            return Ok(None);
        };
        let email = Email::parse(&email).map_err(corrupt)?;
        // An index left behind by an interrupted write points at nobody.
        Ok(self.user_by_email(&email).await?.filter(|u| u.id == id))
    }

    /// Index first, then the record: an interruption leaves at most an
    /// index pointing at nobody, never an account reachable by email alone.
    async fn insert_user(&self, user: &User) -> Result<(), UserWriteError> {
        let index = Key::UserIndex(user.id);
        let value = user.email.as_str().to_owned();
        one(
            self,
            Op::Put {
                key: index.clone(),
                value,
            },
        )
        .await?;
        let op = Op::Insert {
            key: Key::User(user.email.clone()),
            row: user_row(user, 1)?,
            nonce: nonce(),
            ttl: None,
        };
        if done(one(self, op).await?)? {
            return Ok(());
        }
        one(self, Op::Delete(index)).await?;
        Err(UserWriteError::EmailTaken)
    }

    /// Stores `user` over its record (its email unchanged) if the record is
    /// still at `expected_version`: one round trip, for a caller that has
    /// just read the user.
    async fn replace_user(&self, expected_version: u64, user: &User) -> Result<(), UserWriteError> {
        let op = replace_user(expected_version, user)?;
        match done(one(self, op).await?)? {
            true => Ok(()),
            false => Err(UserWriteError::Changed),
        }
    }

    /// Replaces the user if it is still at `expected_version`; its version
    /// moves on by one. A new email is claimed only after the old record is
    /// gone, so an interruption can lose the account (an operator re-adds
    /// it) but never leave it reachable by both addresses.
    async fn update_user(&self, expected_version: u64, user: &User) -> Result<(), UserWriteError> {
        let current = self.user(user.id).await?.ok_or(UserWriteError::NotFound)?;
        if current.credentials_version != expected_version {
            return Err(UserWriteError::Changed);
        }
        if current.email == user.email {
            return self.replace_user(expected_version, user).await;
        }
        if self.user_by_email(&user.email).await?.is_some() {
            return Err(UserWriteError::EmailTaken);
        }
        self.carry_over(&current.email, &user.email).await?;
        let old = Key::User(current.email.clone());
        if !done(
            one(
                self,
                Op::Remove {
                    key: old,
                    expected: expected_version,
                    nonce: nonce(),
                },
            )
            .await?,
        )? {
            return Err(UserWriteError::Changed);
        }
        let moved = Op::Insert {
            key: Key::User(user.email.clone()),
            row: user_row(user, expected_version + 1)?,
            nonce: nonce(),
            ttl: None,
        };
        let inserted = done(one(self, moved).await?)?;
        // The account lives on under the address that is free.
        let (home, outcome) = if inserted {
            (user, Ok(()))
        } else {
            (&current, Err(UserWriteError::EmailTaken))
        };
        if !inserted {
            let back = Op::Insert {
                key: Key::User(current.email.clone()),
                row: user_row(&current, expected_version)?,
                nonce: nonce(),
                ttl: None,
            };
            one(self, back).await?;
        }
        let value = home.email.as_str().to_owned();
        one(
            self,
            Op::Put {
                key: Key::UserIndex(user.id),
                value,
            },
        )
        .await?;
        outcome
    }

    /// Copies an account's block and last TOTP step to its new address
    /// before the move, so that changing an email neither lifts a block nor
    /// makes a code just used usable again.
    async fn carry_over(&self, from: &Email, to: &Email) -> Result<(), StoreError> {
        let now = chrono::Utc::now();
        let reads = AccountReads {
            now,
            window: chrono::Duration::zero(),
            count: false,
            totp: true,
        };
        let account = match one(
            self,
            Op::ReadAccount {
                account: from.clone(),
                reads,
            },
        )
        .await?
        {
            Reply::Account(account) => account,
            other => {
                return Err(corrupt(anyhow::anyhow!(
                    "expected an account, got {}",
                    other.kind()
                )));
            }
        };
        let mut ops = Vec::new();
        if let Taken::Blocked { until } = account.taken {
            ops.push(Op::Block {
                account: to.clone(),
                now,
                until,
            });
        }
        if let Some(TotpStep { step, nonce }) = account.totp_step {
            ops.push(Op::Advance {
                account: to.clone(),
                step,
                nonce,
                ttl: TOTP_STEP_KEPT,
            });
        }
        if !ops.is_empty() {
            self.run(&[&ops]).await?;
        }
        Ok(())
    }

    /// Record first, then the index (see `insert_user`).
    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        let Some(user) = self.user(id).await? else {
            return Ok(false);
        };
        let key = Key::User(user.email.clone());
        let removed = done(
            one(
                self,
                Op::Remove {
                    key,
                    expected: user.credentials_version,
                    nonce: nonce(),
                },
            )
            .await?,
        )?;
        if removed {
            // With the index go the account's used backup codes and any
            // self-service setup waiting for its code.
            let mut ops = vec![
                Op::Delete(Key::UserIndex(id)),
                Op::Delete(Key::PendingTotp(id)),
                Op::Delete(Key::PendingPhone(id)),
            ];
            if let Some(codes) = &user.backup_codes {
                ops.push(Op::Delete(Key::UsedBackupCodes(id, codes.generation)));
            }
            self.run(&[&ops]).await?;
        }
        Ok(removed)
    }

    /// Forgets an account's failures and any block (an operator's unlock).
    async fn clear_attempts(&self, account: &Email) -> Result<(), StoreError> {
        one(
            self,
            Op::Forgive {
                account: account.clone(),
            },
        )
        .await?;
        Ok(())
    }

    async fn policy(&self) -> Result<StoredPolicy, StoreError> {
        let Some(row) = row(one(self, Op::Read(Key::Policy)).await?)? else {
            return Ok(StoredPolicy::default());
        };
        let policy = match decode(&row.body) {
            Ok(policy) => Some(policy),
            Err(e) => {
                tracing::warn!(error = %e, "the stored settings cannot be read; an admin's next save replaces them");
                None
            }
        };
        Ok(StoredPolicy {
            revision: row.version,
            policy,
        })
    }

    /// Stores `policy` as revision `revision + 1` if the stored revision is
    /// still `revision`; `false`, storing nothing, if another save came first.
    async fn replace_policy(&self, revision: u64, policy: &Policy) -> Result<bool, StoreError> {
        let row = Row {
            version: 1,
            account: None,
            body: encode(policy)?,
        };
        let op = match revision {
            0 => Op::Insert {
                key: Key::Policy,
                row,
                nonce: nonce(),
                ttl: None,
            },
            _ => Op::Swap {
                key: Key::Policy,
                expected: revision,
                row,
                nonce: nonce(),
            },
        };
        done(one(self, op).await?)
    }

    /// The keyring as versions before rotation stored it (one RSA key and
    /// the pepper, in clear), to carry over into the versioned record.
    async fn keyring_before_rotation(&self) -> Result<Option<Keyring>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Old {
            signing_key_pem: String,
            code_pepper: String,
        }
        let old: Option<Old> = value(one(self, Op::Get(Key::Keyring)).await?)?
            .map(|raw| decode(raw.as_bytes()))
            .transpose()?;
        Ok(old.map(|old| {
            Keyring::from_single_rsa_key(old.signing_key_pem.into(), old.code_pepper.into())
        }))
    }

    /// Deletes the keyring as versions before rotation stored it.
    async fn forget_keyring_before_rotation(&self) -> Result<(), StoreError> {
        one(self, Op::Delete(Key::Keyring)).await?;
        Ok(())
    }

    /// The keyring's record (its body as `signing_keys` stores it).
    async fn keyring_record(&self) -> Result<Option<Row>, StoreError> {
        row(one(self, Op::Read(Key::Keys)).await?)
    }

    /// Stores the keyring's record at version 1 unless there is one; whether it did.
    async fn insert_keyring_record(&self, body: Vec<u8>) -> Result<bool, StoreError> {
        let row = Row {
            version: 1,
            account: None,
            body,
        };
        done(
            one(
                self,
                Op::Insert {
                    key: Key::Keys,
                    row,
                    nonce: nonce(),
                    ttl: None,
                },
            )
            .await?,
        )
    }

    /// Replaces the keyring's record if it is still at `version`; whether it did.
    async fn swap_keyring_record(&self, version: u64, body: Vec<u8>) -> Result<bool, StoreError> {
        let row = Row {
            version: 0,
            account: None,
            body,
        };
        done(
            one(
                self,
                Op::Swap {
                    key: Key::Keys,
                    expected: version,
                    row,
                    nonce: nonce(),
                },
            )
            .await?,
        )
    }
}

impl<S: Store + ?Sized> Records for S {}
