//! The shared keyring in the store: created by the first instance (or
//! carried over from the layout before rotation), sealed with the
//! operator's key-encryption key when there is one, rotated by an admin or
//! `signin-wizard keys rotate`, and reloaded by every instance within
//! seconds of a change.

use crate::clock::Clock;
use crate::credentials::{Kek, Keyring, Sealed, SigningAlgorithm, TokenIssuer};
use crate::store::{Records, Row, Store, StoreError};
use anyhow::Context as _;
use chrono::Duration;
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How long a rotated-in key is published before it signs: longer than the
/// JWKS may be cached (`max-age` is 30 s less), so that verifiers' cached
/// copies know it by then, and far longer than instances take to reload (2 s).
pub const PUBLISH_AHEAD: Duration = Duration::minutes(5);

/// How often instances look for a changed keyring.
const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How the keyring's record body reads: sealed, or (without a KEK) in clear.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    Sealed { sealed: Sealed },
    Clear(Keyring),
}

pub struct SigningKeys {
    store: Arc<dyn Store>,
    kek: Option<Kek>,
    /// The algorithm of keys made from now on.
    algorithm: SigningAlgorithm,
    /// `WIZARD_JWT_PRIVATE_KEY_FILE`: this key alone signs, and nothing rotates.
    operator_key: Option<SecretString>,
    clock: Clock,
    /// The record version this instance runs on.
    loaded: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("the signing key is the operator's (WIZARD_JWT_PRIVATE_KEY_FILE): rotate it there")]
    Pinned,
    #[error("other changes to the keyring kept landing first; retry")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl SigningKeys {
    pub fn new(
        store: Arc<dyn Store>,
        kek: Option<Kek>,
        algorithm: SigningAlgorithm,
        operator_key: Option<SecretString>,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            kek,
            algorithm,
            operator_key,
            clock,
            loaded: AtomicU64::new(0),
        }
    }

    /// The keyring: the stored one, or a new one stored now. With a KEK,
    /// a keyring found in clear (or in the layout before rotation) is
    /// refused: anyone who can write the store could have put it there, so
    /// sealing it is an operator's act (`signin-wizard keys seal`).
    pub async fn load(&self) -> anyhow::Result<Keyring> {
        for _ in 0..5 {
            if let Some(row) = self.store.keyring_record().await? {
                let keyring = self.open_sealed(&row)?;
                self.loaded.store(row.version, Ordering::Relaxed);
                return Ok(self.as_configured(keyring));
            }
            let candidate = match self.store.keyring_before_rotation().await? {
                Some(_) if self.kek.is_some() => anyhow::bail!(
                    "the keyring is stored in clear (as versions before rotation kept it): \
                     run `signin-wizard keys seal` once to seal it with the KEK"
                ),
                Some(old) => old,
                None => {
                    let (algorithm, now) = (self.algorithm, self.clock.now());
                    tokio::task::spawn_blocking(move || Keyring::generate(algorithm, now)).await??
                }
            };
            // The first instance's keyring wins; the others read it back.
            self.store
                .insert_keyring_record(self.seal(&candidate)?)
                .await?;
        }
        anyhow::bail!("the keyring could not be read back after it was stored")
    }

    /// Seals a keyring stored in clear with the KEK (the versioned record,
    /// or the layout before rotation, whose copy in clear is then deleted).
    /// Run once, when a KEK comes to a store, after every instance runs a
    /// version that reads the versioned record. Whether there was one to seal.
    pub async fn seal_stored(&self) -> anyhow::Result<bool> {
        anyhow::ensure!(
            self.kek.is_some(),
            "set WIZARD_KEK or WIZARD_KEK_FILE to seal with"
        );
        let sealed = match self.store.keyring_record().await? {
            Some(row) => match self.open(&row)? {
                (_, true) => false,
                (keyring, false) => {
                    anyhow::ensure!(
                        self.store
                            .swap_keyring_record(row.version, self.seal(&keyring)?)
                            .await?,
                        "the keyring changed while it was being sealed; run it again"
                    );
                    true
                }
            },
            None => match self.store.keyring_before_rotation().await? {
                Some(old) => self.store.insert_keyring_record(self.seal(&old)?).await?,
                None => false,
            },
        };
        self.store.forget_keyring_before_rotation().await?;
        Ok(sealed)
    }

    /// Adds a key of `algorithm` (the configured one if `None`) that signs
    /// after [`PUBLISH_AHEAD`], dropping keys no token can need any more
    /// (`keep_for`: the longest a token lives). Every instance picks it up.
    pub async fn rotate(
        &self,
        algorithm: Option<SigningAlgorithm>,
        keep_for: Duration,
    ) -> Result<Keyring, RotateError> {
        if self.operator_key.is_some() {
            return Err(RotateError::Pinned);
        }
        let algorithm = algorithm.unwrap_or(self.algorithm);
        for _ in 0..5 {
            let row = self
                .store
                .keyring_record()
                .await?
                .context("there is no keyring to rotate yet")?;
            let keyring = self.open_sealed(&row)?;
            // Whole seconds, like the tokens' times: a token signed at the
            // second a key starts signing names that key.
            let now = self.clock.now();
            let now = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
            // Making an RSA key is a fraction of a second of CPU.
            let next = tokio::task::spawn_blocking(move || {
                keyring.rotated(algorithm, now, PUBLISH_AHEAD, keep_for)
            })
            .await
            .map_err(anyhow::Error::from)??;
            if self
                .store
                .swap_keyring_record(row.version, self.seal(&next)?)
                .await?
            {
                tracing::info!(%algorithm, "signing key rotated");
                return Ok(next);
            }
        }
        Err(RotateError::Busy)
    }

    /// Reloads `tokens`' keyring whenever the stored one changes.
    pub async fn keep_fresh(self: Arc<Self>, tokens: Arc<TokenIssuer>) {
        let mut ticks = tokio::time::interval(RELOAD_EVERY);
        loop {
            ticks.tick().await;
            if let Err(e) = self.reload(&tokens).await {
                tracing::warn!(error = %e, "could not reload the keyring");
            }
        }
    }

    /// Loads the stored keyring into `tokens` if it changed since it was last loaded.
    pub async fn reload(&self, tokens: &TokenIssuer) -> anyhow::Result<()> {
        let Some(row) = self.store.keyring_record().await? else {
            return Ok(());
        };
        if row.version == self.loaded.load(Ordering::Relaxed) {
            return Ok(());
        }
        let keyring = self.open_sealed(&row)?;
        tokens.replace(self.as_configured(keyring))?;
        self.loaded.store(row.version, Ordering::Relaxed);
        tracing::info!(version = row.version, "keyring reloaded");
        Ok(())
    }

    /// Whether the keyring is stored in clear (no KEK).
    pub fn in_clear(&self) -> bool {
        self.kek.is_none()
    }

    /// The keyring in a record, which must be sealed if this instance has a
    /// KEK (with one, instances never write it in clear).
    fn open_sealed(&self, row: &Row) -> anyhow::Result<Keyring> {
        match self.open(row)? {
            (_, false) if self.kek.is_some() => anyhow::bail!(
                "the stored keyring is in clear although a KEK is set: not used; \
                 run `signin-wizard keys seal` once if it is yours"
            ),
            (keyring, _) => Ok(keyring),
        }
    }

    /// The keyring in a record, and whether it was sealed.
    fn open(&self, row: &Row) -> anyhow::Result<(Keyring, bool)> {
        let stored: Stored =
            serde_json::from_slice(&row.body).context("the stored keyring does not read")?;
        match (stored, &self.kek) {
            (Stored::Clear(keyring), _) => Ok((keyring, false)),
            (Stored::Sealed { sealed }, Some(kek)) => {
                let plain = kek.open(&sealed)?;
                let keyring =
                    serde_json::from_slice(&plain).context("the opened keyring does not read")?;
                Ok((keyring, true))
            }
            (Stored::Sealed { .. }, None) => anyhow::bail!(
                "the stored keyring is sealed with a key-encryption key: set WIZARD_KEK or WIZARD_KEK_FILE"
            ),
        }
    }

    /// A record body for `keyring`: sealed if there is a KEK.
    fn seal(&self, keyring: &Keyring) -> anyhow::Result<Vec<u8>> {
        let stored = match &self.kek {
            Some(kek) => Stored::Sealed {
                sealed: kek.seal(&Zeroizing::new(serde_json::to_vec(keyring)?))?,
            },
            None => Stored::Clear(keyring.clone()),
        };
        Ok(serde_json::to_vec(&stored)?)
    }

    /// The keyring as this instance uses it: with the operator's key alone, if given.
    fn as_configured(&self, keyring: Keyring) -> Keyring {
        match &self.operator_key {
            Some(pem) => keyring.with_signing_key(pem.clone()),
            None => keyring,
        }
    }
}
